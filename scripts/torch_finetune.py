#!/usr/bin/env python3
"""PyTorch + transformers baseline for `catbert finetune`: fine-tune a BERT-family encoder
(all-MiniLM-L6-v2 by default) as a single-label text classifier on a CSV, on CPU, and write
per-epoch quality and speed to a JSON file.

The recipe, which catbert's defaults follow (configs/products.toml):
  labels      sorted distinct labels of --train, surrounding whitespace stripped; rows with
              an empty label are left out
  split       10% stratified hold-out (sklearn train_test_split, random_state --seed); the
              training part is permuted with numpy RandomState(--seed) and --limit N keeps
              its first N rows (the hold-out stays whole)
  model       BertForSequenceClassification from --model-dir: encoder and pooler from the
              checkpoint, a new classifier head drawn after torch.manual_seed(--seed)
  loss        cross-entropy with class weights n / (K * count_c), counted on the rows trained on
  optimizer   AdamW lr 5e-5, betas (0.9, 0.999), eps 1e-8, weight decay 0.01 except on biases
              and LayerNorm weights (--decay-all: everywhere); global-norm clipping at 1.0
  schedule    linear warm-up over int(0.1 * total steps), then linear decay to 0, stepped after
              every optimizer step
  batches     32 rows, order from torch.randperm with a generator seeded by --seed (one draw
              per epoch), at most 128 tokens, padded to the longest row of each batch
  scoring     after every epoch, on the hold-out and on the labelled rows of --eval: accuracy,
              weighted / macro F1, per-class precision / recall / F1, f1_min, confusion matrix;
              the best epoch by --metric on --select-on is kept (and saved to --save-dir)
  speed       training samples/s over the optimizer steps only; evaluation rows/s separately

Example:
  "$(scripts/py-oracle.sh)" scripts/torch_finetune.py --train datasets/products/Training_Data.csv \\
      --eval datasets/products/Query_and_Validation_Data.csv --model-dir models/all-MiniLM-L6-v2 \\
      --epochs 2 --out target/torch/products.json
"""
import argparse
import json
import math
import os
import platform
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_common import fail, import_torch, need_model_dir, open_csv, pad_batch  # noqa: E402

METRICS = ("accuracy", "f1_weighted", "f1_macro", "f1_min")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--train", required=True, help="training CSV")
    a("--text-col", default="product_description")
    a("--label-col", default="Category")
    a("--eval", help="second CSV to score after each epoch (rows without a label are skipped)")
    a("--eval-text-col", help="text column of --eval (default: --text-col)")
    a("--eval-label-col", default="HUMAN_VERIFIED_Category")
    a("--model-dir", required=True, help="Hugging Face folder: config.json, model.safetensors, tokenizer.json")
    a("--epochs", type=int, default=2)
    a("--batch-size", type=int, default=32)
    a("--eval-batch-size", type=int, default=64)
    a("--lr", type=float, default=5e-5)
    a("--weight-decay", type=float, default=0.01)
    a("--decay-all", action="store_true", help="decay biases and LayerNorm weights as well")
    a("--warmup-ratio", type=float, default=0.1)
    a("--max-grad-norm", type=float, default=1.0, help="0 turns clipping off")
    a("--max-length", type=int, default=128)
    a("--holdout", type=float, default=0.1)
    a("--seed", type=int, default=42)
    a("--limit", type=int, default=0, help="train on the first N rows of the shuffled training part")
    a("--metric", default="f1_min", choices=list(METRICS))
    a("--select-on", default="holdout", choices=["holdout", "eval"])
    a("--threads", type=int, default=2)
    a("--log-every", type=int, default=50, help="optimizer steps between progress lines")
    a("--save-dir", help="write the kept epoch's model and tokenizer here")
    a("--out", required=True, help="results JSON")
    args = p.parse_args()
    if args.select_on == "eval" and not args.eval:
        fail("--select-on eval needs --eval")
    return args


def labelled(path, text_col, label_col):
    """(texts, labels, rows without a label) of a CSV; labels are whitespace-stripped."""
    texts, labels, skipped = [], [], 0
    for row in open_csv(path, (text_col, label_col)):
        label = (row[label_col] or "").strip()
        if label:
            texts.append(row[text_col] or "")
            labels.append(label)
        else:
            skipped += 1
    return texts, labels, skipped


def scores(y_true, y_pred, names):
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    ks = list(range(len(names)))
    prec, rec, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=ks, zero_division=0)
    return {
        "n": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "f1_weighted": float(f1_score(y_true, y_pred, labels=ks, average="weighted", zero_division=0)),
        "f1_macro": float(f1_score(y_true, y_pred, labels=ks, average="macro", zero_division=0)),
        "f1_min": float(f1.min()),
        "per_class": {names[k]: {"precision": float(prec[k]), "recall": float(rec[k]), "f1": float(f1[k]),
                                 "support": int(support[k])} for k in ks},
        # rows: true label, columns: predicted label
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=ks).tolist(),
    }


def summary(m):
    per_class = " ".join(f"{name[:12]}={v['f1']:.3f}" for name, v in m["per_class"].items())
    return " ".join(f"{k}={m[k]:.4f}" for k in METRICS) + " | " + per_class


class Trainer:
    def __init__(self, args, torch, np, model, pad_id, class_weights, steps_per_epoch):
        self.args, self.torch, self.np = args, torch, np
        self.model, self.pad_id = model, pad_id
        self.steps_per_epoch = steps_per_epoch
        total = steps_per_epoch * args.epochs
        self.warmup = int(args.warmup_ratio * total)
        warmup = self.warmup

        def factor(step):  # transformers.get_linear_schedule_with_warmup
            if step < warmup:
                return step / max(1, warmup)
            return max(0.0, (total - step) / max(1, total - warmup))

        if args.decay_all:
            groups = [{"params": list(model.parameters()), "weight_decay": args.weight_decay}]
        else:
            exempt = ("bias", "LayerNorm.weight")
            named = list(model.named_parameters())
            groups = [
                {"params": [p for n, p in named if not any(e in n for e in exempt)], "weight_decay": args.weight_decay},
                {"params": [p for n, p in named if any(e in n for e in exempt)], "weight_decay": 0.0},
            ]
        self.opt = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.999), eps=1e-8)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, factor)
        self.loss_fn = torch.nn.CrossEntropyLoss(weight=torch.tensor(class_weights, dtype=torch.float32))
        self.order_gen = torch.Generator().manual_seed(args.seed)
        self.step = 0

    def epoch(self, number, ids, y):
        torch, args = self.torch, self.args
        self.model.train()
        order = torch.randperm(len(ids), generator=self.order_gen).tolist()
        busy = loss_total = 0.0
        seen = tokens = 0
        window_s, window_n = 0.0, 0
        for b in range(self.steps_per_epoch):
            pick = order[b * args.batch_size : (b + 1) * args.batch_size]
            start = time.perf_counter()
            input_ids, mask = pad_batch(torch, [ids[i] for i in pick], self.pad_id)
            logits = self.model(input_ids=input_ids, attention_mask=mask).logits
            loss = self.loss_fn(logits, torch.from_numpy(y[pick]))
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            if args.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), args.max_grad_norm)
            self.opt.step()
            self.sched.step()
            spent = time.perf_counter() - start
            self.step += 1
            busy += spent
            window_s += spent
            window_n += len(pick)
            seen += len(pick)
            tokens += input_ids.numel()
            loss_total += loss.item() * len(pick)
            if self.step % args.log_every == 0 or b == self.steps_per_epoch - 1:
                print(f"epoch {number} step {b + 1}/{self.steps_per_epoch}: loss {loss_total / seen:.4f}, "
                      f"lr {self.sched.get_last_lr()[0]:.2e}, {window_n / window_s:.1f} samples/s (window), "
                      f"{seen / busy:.1f} samples/s (epoch), {busy:.0f}s", flush=True)
                window_s, window_n = 0.0, 0
        return {"epoch": number, "train_loss": loss_total / seen, "train_seconds": busy,
                "train_samples_per_s": seen / busy, "train_padded_tokens_per_s": tokens / busy,
                "train_samples": seen}

    def predict(self, ids):
        """Argmax class of every row, batch --eval-batch-size, in order; also the seconds taken."""
        torch, np = self.torch, self.np
        self.model.eval()
        out = []
        start = time.perf_counter()
        with torch.no_grad():
            for s in range(0, len(ids), self.args.eval_batch_size):
                input_ids, mask = pad_batch(torch, ids[s : s + self.args.eval_batch_size], self.pad_id)
                out.append(self.model(input_ids=input_ids, attention_mask=mask).logits.argmax(-1).numpy())
        seconds = time.perf_counter() - start
        return (np.concatenate(out) if out else np.zeros(0, dtype=np.int64)), seconds


def main():
    args = parse_args()
    import_torch("sklearn")
    need_model_dir(args.model_dir)
    began = time.perf_counter()

    import numpy as np
    import torch
    import transformers
    from sklearn.model_selection import train_test_split
    from transformers import AutoTokenizer, BertForSequenceClassification

    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)  # the new classifier head is drawn from this

    # data: labels, stratified hold-out, seeded shuffle, optional limit, class weights
    texts, labels, no_label = labelled(args.train, args.text_col, args.label_col)
    if not texts:
        fail(f"{args.train}: no row has a label in column {args.label_col!r}")
    names = sorted(set(labels))
    index_of = {name: k for k, name in enumerate(names)}
    K = len(names)
    y = np.array([index_of[l] for l in labels])
    train_rows, holdout_rows = train_test_split(np.arange(len(texts)), test_size=args.holdout,
                                                random_state=args.seed, stratify=y)
    train_rows = train_rows[np.random.RandomState(args.seed).permutation(len(train_rows))]
    if args.limit:
        train_rows = train_rows[: args.limit]
    counts = np.bincount(y[train_rows], minlength=K)
    class_weights = len(train_rows) / (K * np.maximum(counts, 1))
    print(f"{args.train}: {len(texts)} labelled rows, {no_label} without a label; labels {names}", flush=True)
    print(f"train {len(train_rows)} rows (per label {counts.tolist()}), hold-out {len(holdout_rows)}; "
          f"class weights {np.round(class_weights, 4).tolist()}", flush=True)

    ev = None
    if args.eval:
        ev_texts, ev_labels, ev_no_label = labelled(args.eval, args.eval_text_col or args.text_col,
                                                    args.eval_label_col)
        kept = [i for i, l in enumerate(ev_labels) if l in index_of]
        ev = {"texts": [ev_texts[i] for i in kept], "y": np.array([index_of[ev_labels[i]] for i in kept]),
              "unlabelled_skipped": ev_no_label, "unknown_label_rows": len(ev_labels) - len(kept),
              "unknown_labels": sorted(set(ev_labels) - set(names))}
        print(f"{args.eval}: scoring {len(kept)} labelled rows; {ev_no_label} without a label and "
              f"{ev['unknown_label_rows']} with a label not seen in training {ev['unknown_labels']} skipped",
              flush=True)

    # model: pretrained encoder + pooler, new head
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    model = BertForSequenceClassification.from_pretrained(
        args.model_dir, num_labels=K, id2label=dict(enumerate(names)), label2id=index_of)
    n_params = sum(p.numel() for p in model.parameters())

    def tokenize(batch):
        return tokenizer(batch, truncation=True, max_length=args.max_length, padding=False,
                         return_attention_mask=False, return_token_type_ids=False)["input_ids"]

    start = time.perf_counter()
    all_ids = tokenize(texts)
    ids_train = [all_ids[i] for i in train_rows]
    ids_holdout = [all_ids[i] for i in holdout_rows]
    ids_eval = tokenize(ev["texts"]) if ev else None
    tokenise_seconds = time.perf_counter() - start
    lengths = np.array([len(x) for x in ids_train])
    print(f"tokenised in {tokenise_seconds:.1f}s; training rows have {lengths.mean():.1f} tokens on average "
          f"(median {np.median(lengths):.0f}, p99 {np.percentile(lengths, 99):.0f}, max {lengths.max()}; "
          f"{(lengths >= args.max_length).sum()} at the {args.max_length} limit)", flush=True)

    steps_per_epoch = math.ceil(len(ids_train) / args.batch_size)
    trainer = Trainer(args, torch, np, model, tokenizer.pad_token_id, class_weights, steps_per_epoch)
    print(f"{n_params:,} parameters; {steps_per_epoch} steps per epoch, {steps_per_epoch * args.epochs} in all, "
          f"{trainer.warmup} warm-up; {torch.get_num_threads()} threads", flush=True)

    parts = [("holdout", ids_holdout, y[holdout_rows])] + ([("eval", ids_eval, ev["y"])] if ev else [])
    history, best = [], None
    for number in range(1, args.epochs + 1):
        rec = trainer.epoch(number, ids_train, y[train_rows])
        print(f"== epoch {number}: {rec['train_samples']} samples in {rec['train_seconds']:.1f}s = "
              f"{rec['train_samples_per_s']:.1f} samples/s, loss {rec['train_loss']:.4f}", flush=True)
        for part, ids, gold in parts:
            pred, seconds = trainer.predict(ids)
            m = scores(gold, pred, names)
            m["seconds"] = seconds
            m["rows_per_s"] = len(ids) / seconds if seconds > 0 else 0.0
            rec[part] = m
            print(f"   {part:<8} {len(ids)} rows at {m['rows_per_s']:.0f} rows/s: {summary(m)}", flush=True)
        history.append(rec)
        score = rec[args.select_on][args.metric]
        if best is None or score > best["score"]:
            best = {"epoch": number, "score": score}
            if args.save_dir:
                model.save_pretrained(args.save_dir)
                tokenizer.save_pretrained(args.save_dir)
                print(f"   kept epoch {number} in {args.save_dir}", flush=True)

    import sklearn
    import tokenizers

    result = {
        "script": "torch_finetune.py",
        "args": vars(args),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
                     "numpy": np.__version__, "sklearn": sklearn.__version__},
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                    "torch_threads": torch.get_num_threads()},
        "labels": names,
        "class_weights": class_weights.tolist(),
        "train_counts": counts.tolist(),
        "n_train": len(ids_train),
        "n_holdout": len(ids_holdout),
        "n_eval": len(ids_eval) if ev else 0,
        "eval_skipped": ({k: ev[k] for k in ("unlabelled_skipped", "unknown_label_rows", "unknown_labels")}
                         if ev else None),
        "n_params": n_params,
        "steps_per_epoch": steps_per_epoch,
        "warmup_steps": trainer.warmup,
        "tokenise_seconds": tokenise_seconds,
        "epochs": history,
        "best": {**best, "metric": args.metric, "select_on": args.select_on},
        "wall_seconds": time.perf_counter() - began,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"kept epoch {best['epoch']} ({args.select_on} {args.metric} {best['score']:.4f}); "
          f"{result['wall_seconds']:.0f}s in all; wrote {args.out}", flush=True)


if __name__ == "__main__":
    main()
