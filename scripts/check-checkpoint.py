"""Check that a catbert checkpoint folder is a clean Hugging Face classifier, and print its outputs.

Usage (with the oracle venv's python, see scripts/py-oracle.sh):
  check-checkpoint.py CKPT_DIR ROWS_FILE --text-col C [--max-length 128] [--batch-size 64]

The checkpoint must load through the generic Auto* classes exactly as a user of
transformers would load it, with no missing, unexpected, size-mismatched or
newly-initialised weights (a silently re-initialised head would still "work" but
give random predictions). Its config must declare BertForSequenceClassification,
problem_type "single_label_classification" and one id2label entry per classifier row.

Then the text column of ROWS_FILE (CSV) is classified in eval mode and one JSON
object is printed to stdout:
  {"id2label": [name of label 0, name of label 1, ...],
   "logits":   [[float, ...] per row],          # fp32 model outputs
   "probs":    [[float, ...] per row]}          # softmax computed in float64

Any failure: a message on stderr and exit status 1.
"""

import argparse
import json
import logging
import re
import sys
import warnings

import pandas as pd
import torch
import transformers
from transformers import AutoModelForSequenceClassification, AutoTokenizer

# Log lines transformers emits when weights do not line up with the architecture.
# (transformers 5 prints a "LOAD REPORT" table; older versions wrote sentences.)
WEIGHT_WARNING_MARKERS = (
    "load report",
    "newly initialized",
    "not initialized from",
    "were not used",
    "missing from the checkpoint",
    "unexpected",
    "mismatch",
)


class Fail(Exception):
    pass


class Capture(logging.Handler):
    """Collects transformers' warning-level log records while loading."""

    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def load(ckpt):
    capture = Capture()
    tf_logger = logging.getLogger("transformers")
    tf_logger.addHandler(capture)
    try:
        with warnings.catch_warnings(record=True) as py_warnings:
            warnings.simplefilter("always")
            model, info = AutoModelForSequenceClassification.from_pretrained(
                ckpt, dtype=torch.float32, output_loading_info=True
            )
            tok = AutoTokenizer.from_pretrained(ckpt)
    finally:
        tf_logger.removeHandler(capture)

    problems = [f"{k}: {sorted(info.get(k) or [])}" for k in ("missing_keys", "unexpected_keys", "mismatched_keys")
                if info.get(k)]
    problems += [f"load error: {m}" for m in info.get("error_msgs") or []]
    messages = capture.messages + [str(w.message) for w in py_warnings]
    for msg in messages:
        if any(m in msg.lower() for m in WEIGHT_WARNING_MARKERS):
            # transformers has already printed the full table; its first line is enough here.
            problems.append("load warning: " + re.sub(r"\x1b\[[0-9;]*m", "", msg).splitlines()[0])
        else:
            # Not about weights: worth seeing, but not a reason to reject the checkpoint.
            print(f"note: {msg}", file=sys.stderr)
    if problems:
        raise Fail("checkpoint does not load cleanly:\n  " + "\n  ".join(problems))
    return model, tok


def check_config(model):
    cfg = model.config
    if cfg.architectures != ["BertForSequenceClassification"]:
        raise Fail(f"config.architectures is {cfg.architectures!r}, want ['BertForSequenceClassification']")
    if cfg.problem_type != "single_label_classification":
        raise Fail(f"config.problem_type is {cfg.problem_type!r}, want 'single_label_classification'")
    rows = model.classifier.weight.shape[0]
    id2label = {int(k): v for k, v in cfg.id2label.items()}
    if sorted(id2label) != list(range(rows)):
        raise Fail(f"config.id2label has ids {sorted(id2label)}, want 0..{rows - 1} (classifier has {rows} rows)")
    return [id2label[i] for i in range(rows)]


def read_texts(path, col):
    # keep_default_na=False and dtype=str: product names such as "NA", "null" or
    # "1234" must reach the tokenizer as the exact text in the file.
    df = pd.read_csv(path, keep_default_na=False, dtype=str)
    if col not in df.columns:
        raise Fail(f"{path}: no column {col!r} (have {list(df.columns)})")
    return df[col].tolist()


@torch.no_grad()
def classify(model, tok, texts, max_length, batch_size):
    model.eval()
    logits = []
    for s in range(0, len(texts), batch_size):
        enc = tok(
            texts[s : s + batch_size],
            truncation=True,
            max_length=max_length,
            padding=True,
            return_attention_mask=True,
            return_token_type_ids=False,  # the model must default them to zeros
            return_tensors="pt",
        )
        logits.append(model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits)
    if not logits:
        return [], []
    logits = torch.cat(logits)
    probs = torch.softmax(logits.double(), dim=-1)
    return logits.tolist(), probs.tolist()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("ckpt_dir")
    ap.add_argument("rows_file")
    ap.add_argument("--text-col", required=True)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=64, help="rows per forward pass (padding is per batch)")
    args = ap.parse_args()

    torch.set_num_threads(2)
    transformers.logging.set_verbosity_warning()
    transformers.logging.disable_progress_bar()
    try:
        model, tok = load(args.ckpt_dir)
        id2label = check_config(model)
        texts = read_texts(args.rows_file, args.text_col)
        logits, probs = classify(model, tok, texts, args.max_length, args.batch_size)
    except Fail as e:
        print(f"check-checkpoint: {e}", file=sys.stderr)
        sys.exit(1)
    except Exception as e:  # any loader / IO error is a failed check, not a crash with a traceback
        print(f"check-checkpoint: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
    json.dump({"id2label": id2label, "logits": logits, "probs": probs}, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
