"""Helpers shared by the PyTorch comparison scripts (torch_finetune.py, torch_infer.py,
torch_train_step.py): one-line errors instead of tracebacks for what is missing, CSV
reading and per-batch padding.

These scripts are the yardstick catbert is compared against, so they follow the plain
PyTorch + transformers recipe described in scripts/torch_finetune.py and nothing here is
specific to catbert. Run them with the oracle venv:  "$(scripts/py-oracle.sh)" scripts/...
"""
import csv
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def fail(message):
    """Stop with a single line on stderr (exit status 1), never a traceback."""
    sys.exit(f"error: {message}")


def import_torch(*extra):
    """Check that torch, transformers (and the extra modules named) import, or say which python to use."""
    import importlib

    for name in ("torch", "transformers", "numpy") + extra:
        try:
            importlib.import_module(name)
        except ImportError as e:
            fail(f"{e} in {sys.executable}: run with the oracle venv, "
                 f"\"$(scripts/py-oracle.sh)\" scripts/{Path(sys.argv[0]).name} ...")


def _hint_for(path):
    p = Path(path).resolve()
    if p == (REPO / "models" / "all-MiniLM-L6-v2").resolve():
        return "run scripts/fetch-model.sh"
    if REPO / "target" / "oracle" in p.parents:
        return "run scripts/make-oracle.sh"
    if REPO / "datasets" / "products" in p.parents:
        return "it ships with the repository: restore datasets/products/ from git"
    return None


def need_file(path, what):
    if not Path(path).is_file():
        hint = _hint_for(path)
        fail(f"{what} {path} missing" + (f": {hint}" if hint else ""))


def need_model_dir(path, weights=True):
    """A Hugging Face folder: config.json and tokenizer.json, plus the weights if asked."""
    wanted = ["config.json", "tokenizer.json"] + (["model.safetensors"] if weights else [])
    missing = [f for f in wanted if not (Path(path) / f).is_file()]
    if missing:
        hint = _hint_for(path) or "expected a Hugging Face model folder"
        if Path(path).is_dir():
            fail(f"model folder {path} has no {', '.join(missing)}: {hint}")
        fail(f"model folder {path} missing: {hint}")


def open_csv(path, columns):
    """All rows of a CSV as dicts, after checking that the named columns exist."""
    need_file(path, "CSV")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        for col in columns:
            if col and col not in header:
                fail(f"{path}: no column {col!r} (have {header})")
        return list(reader)


def pad_batch(torch, sequences, pad_id):
    """Pad token-id lists to the longest one in the batch: (input_ids, attention_mask)."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    return ids, mask
