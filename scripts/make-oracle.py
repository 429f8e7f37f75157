"""Build the reference artefacts ("oracles") the Rust tests of catbert compare against.

Run through scripts/make-oracle.sh, which provides the pinned venv, the fetched
MiniLM model and idempotence. Everything here is CPU / fp32 / seeded so that two
runs produce byte-identical numbers.

Artefacts (under --out):
  tiny/, tiny-gelu-new/     small random BertForSequenceClassification + expected.json
  minilm-cls/               real MiniLM encoder + random 5-way head + expected.json, rows200.csv
  minilm-cls-vocab/         same weights, tokenizer given only as vocab.txt (no tokenizer.json)
  tokenizer_cases.json      tokenizer edge cases (fast tokenizer.json vs vocab.txt-only path)
  base-minilm-expected.json encoder + pooler outputs of the bare (un-prefixed) MiniLM checkpoint
  hub-cache/                Hugging Face hub cache layout holding tiny/ as catbert-test/tiny-classifier
  train-step/               3 optimiser steps on a dropout-free tiny classifier, for the Rust trainer:
    initial/                  the starting checkpoint (save_pretrained + tokenizer files)
    expected.json             batch, hyper-parameters, per-step losses / pre-clip grad norms / lrs
    grads0.safetensors        every parameter's gradient at step 1, before clipping
    final.safetensors         every parameter after step 3 (fp32, state_dict names, bert.-prefixed)
"""

import argparse
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import tokenizers
import torch
import transformers
from safetensors.torch import save_file
from transformers import (
    AutoModel,
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    BertTokenizer,
    BertTokenizerLegacy,
)

LABELS = [
    "Beverages",
    "Dry Goods & Pantry Staples",
    "Fresh & Perishable Items",
    "Household & Personal Care",
    "Specialty & Miscellaneous",
]

# Files that make up a vocab.txt-only ("slow") BERT tokenizer, as older checkpoints ship it.
VOCAB_ONLY_FILES = ["vocab.txt", "tokenizer_config.json", "special_tokens_map.json"]

# Texts for the tiny models: varied lengths, including empty, single character and
# one long enough to be cut at max_length=64 (the tiny models' position table).
TINY_TEXTS = [
    "",
    "a",
    "Organic Balsamic Vinegar Of Modena",
    "White Multifold Towels",
    "Cheesecake, Chocolate Truffle",
    "Crème brûlée Façade naïve",
    "500ml 2x12oz sparkling water, 12-pack",
    "deodorants Men Sport Anti-Perspirant & Deodorant",
    "🍕 pizza 🎉 party size",
    "Fair Trade 100% Pure Organic Honey from the mountains of somewhere far away",
    "日本語のテキスト 中文 green tea",
    " ".join(
        ["Extra virgin olive oil, cold pressed, unfiltered, imported from Italy;"] * 8
    ),
]

# Texts for the bare base model check (encoder + pooler only).
BASE_TEXTS = [
    "a",
    "Organic Balsamic Vinegar Of Modena",
    "Chocolate Chip Ice Cream",
    "Non Acetone Nail Polish Remover",
    "Crème brûlée Façade naïve",
    "500ml 2x12oz",
    "white wines Pinot Gris from the Willamette Valley, Oregon, vintage 2019, 750 ml bottle",
    "",
]


def log(name, msg):
    print(f"{name:28s} {msg}", flush=True)


def setup_determinism():
    torch.manual_seed(0)
    np.random.seed(0)
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


def fresh_dir(path):
    # Each artefact owns its folder outright, so a direct re-run never mixes old and new files.
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def write_json(path, obj):
    # ensure_ascii keeps NULs, control and zero-width characters visible and unambiguous.
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=True)
        f.write("\n")


def save_tokenizer(model_dir, dest):
    """Save the MiniLM tokenizer the way transformers does, then add the legacy files.

    transformers 5 writes only tokenizer.json + tokenizer_config.json; a typical Hub
    checkpoint also carries vocab.txt and special_tokens_map.json, so copy those
    too, which keeps every oracle folder a complete, realistic checkpoint.
    """
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(dest)
    for name in ["vocab.txt", "special_tokens_map.json"]:
        if not (dest / name).exists():
            shutil.copy(model_dir / name, dest / name)


def load_classifier(path):
    # Eager attention is the textbook computation; reloading from disk also checks
    # that what we saved is what we measured.
    model = BertForSequenceClassification.from_pretrained(
        path, dtype=torch.float32, attn_implementation="eager"
    )
    return model.eval()


def unpadded_ids(enc):
    """Per-row input ids with the padding removed, using the attention mask."""
    return [
        [int(i) for i, m in zip(ids, mask) if m]
        for ids, mask in zip(enc["input_ids"].tolist(), enc["attention_mask"].tolist())
    ]


@torch.no_grad()
def classify(model, tok, texts, max_length):
    enc = tok(texts, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
    # No token_type_ids on purpose: the Rust side must default them to zeros.
    logits = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
    return enc, logits


def randomise(model, seed):
    """Give every parameter non-trivial random values.

    Default init leaves LayerNorm at (1, 0) and biases at 0, which would hide a
    Rust loader that skips or swaps them. Here each one is visibly different.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm.weight" in name:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))


def make_tiny(out, model_dir, name, hidden_act, seed):
    dest = fresh_dir(out / name)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=64,
        type_vocab_size=2,
        hidden_act=hidden_act,
        num_labels=7,
        id2label={i: f"class_{i}" for i in range(7)},
        label2id={f"class_{i}": i for i in range(7)},
    )
    model = BertForSequenceClassification(config)
    randomise(model, seed)
    model.save_pretrained(dest, safe_serialization=True)
    save_tokenizer(model_dir, dest)

    model = load_classifier(dest)
    tok = AutoTokenizer.from_pretrained(dest)
    enc, logits = classify(model, tok, TINY_TEXTS, max_length=64)
    ids = unpadded_ids(enc)
    assert max(len(r) for r in ids) == 64, "one tiny text must hit the 64-token truncation"
    write_json(dest / "expected.json", {"texts": TINY_TEXTS, "input_ids": ids, "logits": logits.tolist()})
    log(name, f"{hidden_act}, seed {seed}: {len(TINY_TEXTS)} texts, row lengths {[len(r) for r in ids]}")


def read_rows200(data):
    csv = data / "Query_and_Validation_Data.csv"
    if not csv.is_file():
        raise SystemExit(f"error: {csv} missing: it ships with the repository, restore datasets/products/ from git")
    # keep_default_na=False: product names such as "NA" or "null" must stay text.
    df = pd.read_csv(csv, keep_default_na=False)
    return [str(t) for t in df["product_description"].iloc[:200]]


def make_minilm_cls(out, model_dir, texts):
    dest = fresh_dir(out / "minilm-cls")
    torch.manual_seed(42)
    model = BertForSequenceClassification.from_pretrained(
        model_dir,
        num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)),
        label2id={l: i for i, l in enumerate(LABELS)},
        dtype=torch.float32,
    )
    # The default head init (std 0.02) gives probabilities of ~0.2 everywhere, which
    # would make top-k ordering fragile; a wide head separates the classes.
    gen = torch.Generator().manual_seed(42)
    with torch.no_grad():
        model.classifier.weight.copy_(0.5 * torch.randn(model.classifier.weight.shape, generator=gen))
        model.classifier.bias.copy_(0.5 * torch.randn(model.classifier.bias.shape, generator=gen))
    model.save_pretrained(dest, safe_serialization=True)
    save_tokenizer(model_dir, dest)

    model = load_classifier(dest)
    tok = AutoTokenizer.from_pretrained(dest)
    enc, logits = classify(model, tok, texts, max_length=128)
    probs = torch.softmax(logits.double(), dim=-1).numpy()
    # Stable sort on -prob: ties go to the lower label index, as the Rust side must do.
    top5 = np.argsort(-probs, axis=1, kind="stable")
    ids = unpadded_ids(enc)
    write_json(
        dest / "expected.json",
        {
            "texts": texts,
            "input_ids": ids,
            "logits": logits.tolist(),
            "probs": probs.tolist(),
            "top5": top5.tolist(),
        },
    )
    pd.DataFrame({"product_description": texts}).to_csv(dest / "rows200.csv", index=False)
    log(
        "minilm-cls",
        f"{len(texts)} rows, max {max(len(r) for r in ids)} tokens, "
        f"max prob range {probs.max(1).min():.3f}..{probs.max(1).max():.3f}, "
        f"top1 counts {np.bincount(top5[:, 0], minlength=len(LABELS)).tolist()}",
    )
    return ids


def make_minilm_cls_vocab(out, model_dir, texts, fast_ids):
    src = out / "minilm-cls"
    dest = fresh_dir(out / "minilm-cls-vocab")
    for name in ["config.json", "model.safetensors"]:
        shutil.copy(src / name, dest / name)
    # The original checkpoint's own vocab-era files, verbatim: this is the shape of
    # an older Hub checkpoint that predates tokenizer.json.
    for name in VOCAB_ONLY_FILES:
        shutil.copy(model_dir / name, dest / name)

    # In transformers 5, BertTokenizer is tokenizers-backed; BertTokenizerLegacy is
    # the pure-Python WordPiece, i.e. the real "slow" reference.
    slow = BertTokenizerLegacy.from_pretrained(dest)
    enc = slow(texts, truncation=True, max_length=128)
    assert enc["input_ids"] == fast_ids, "slow vocab.txt tokenizer disagrees with tokenizer.json"
    log("minilm-cls-vocab", f"files {sorted(p.name for p in dest.iterdir())}; slow ids == fast ids for {len(texts)} rows")


def tokenizer_cases(long_source):
    """Odd inputs that stress normalisation, pre-tokenisation and truncation."""
    long_text = " ".join([long_source] * (10_000 // (len(long_source) + 1) + 1))[:10_000]
    return [
        ("single_char", "a"),
        ("plain", "Organic Balsamic Vinegar Of Modena"),
        ("accents", "Crème brûlée Façade naïve"),
        ("accents_upper", "ÉCLAIR À LA CRÈME Straße Größe İstanbul"),
        ("mixed_case", "McCormick GOURMET Vanilla eXtract iPhone"),
        ("emoji", "🍕 pizza 🎉"),
        ("emoji_zwj", "family 👨‍👩‍👧 flag 🇫🇷 thumbs 👍🏽"),
        ("cjk", "日本語のテキスト 中文"),
        ("cjk_mixed", "Green茶Tea抹茶latte"),
        ("combining", "Cre\u0300me bru\u0302le\u0301e n\u0303o"),
        ("nbsp_double_space", "Pure\u00a0Honey  100%\u00a0\u00a0Natural   "),
        ("control_zero_width", "Choco\u200blate\tbar\r\nwith\x00nuts\u200d\ufeff end\x7f\x1b"),
        ("empty_after_norm_zw", "\u200b\u200b"),
        ("empty_after_norm_ctrl", "\x00\x01\x1f\x7f"),
        ("empty", ""),
        ("spaces_only", "   \t\n "),
        ("punctuation_runs", "!!!???...---***((()))&&&@@##$$%%^^~~``||\\\\//"),
        ("punctuation_quotes", "Ben & Jerry's \"Half-Baked\" (16 oz.) — 2/$5 «promo» …"),
        ("digits_units", "500ml 2x12oz 1.5L 3/4 lb 12-pack 100% 0.99$ 1,000g"),
        ("arabic", "زيت زيتون بكر ممتاز"),
        ("cyrillic", "Молоко пастеризованное 3,2% ЁЖИК"),
        ("greek", "Ελληνικό γιαούρτι στραγγιστό ΣΟΦΊΑ"),
        ("compat_ligature_fullwidth", "ﬁne ﬂour Ｆｕｌｌｗｉｄｔｈ ①②"),
        ("long_word", "x" * 150 + " ok"),
        ("long_10k", long_text),
    ]


def make_tokenizer_cases(out, model_dir, long_source):
    fast = tokenizers.Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    # tokenizer.json ships with padding to 128; the cases are unpadded.
    fast.no_padding()
    slow = BertTokenizerLegacy(vocab_file=str(model_dir / "vocab.txt"), do_lower_case=True)
    # transformers 5's BertTokenizer built from vocab.txt (note: the keyword is `vocab`;
    # `vocab_file=` is silently ignored and yields a 5-token vocabulary).
    from_vocab = BertTokenizer(vocab=str(model_dir / "vocab.txt"), do_lower_case=True)

    cases, differ, differ_v5 = [], [], []
    for max_length in (128, 512):
        fast.enable_truncation(max_length)
        for name, text in tokenizer_cases(long_source):
            ids = fast.encode(text).ids
            ids_vocab = slow(text, truncation=True, max_length=max_length)["input_ids"]
            ids_v5 = from_vocab(text, truncation=True, max_length=max_length)["input_ids"]
            if ids != ids_vocab:
                differ.append(f"{name}@{max_length}")
            if ids != ids_v5:
                differ_v5.append(f"{name}@{max_length}")
            cases.append(
                {"name": name, "text": text, "max_length": max_length, "ids": ids, "ids_vocab": ids_vocab}
            )
    write_json(out / "tokenizer_cases.json", {"cases": cases})
    log(
        "tokenizer_cases.json",
        f"{len(cases)} cases; fast vs legacy vocab.txt differ: {differ or 'none'}; "
        f"fast vs BertTokenizer(vocab) differ: {differ_v5 or 'none'}",
    )


@torch.no_grad()
def make_base_expected(out, model_dir):
    model = AutoModel.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager").eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    enc = tok(BASE_TEXTS, truncation=True, max_length=128, padding=True, return_tensors="pt")
    res = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
    write_json(
        out / "base-minilm-expected.json",
        {
            "texts": BASE_TEXTS,
            "input_ids": unpadded_ids(enc),
            "pooler_output": res.pooler_output.tolist(),
            "cls_hidden": res.last_hidden_state[:, 0, :].tolist(),
        },
    )
    log("base-minilm-expected.json", f"{len(BASE_TEXTS)} texts, hidden {res.pooler_output.shape[1]}")


def make_hub_cache(out):
    """Lay out tiny/ as a Hugging Face hub cache entry, the way huggingface_hub does.

    Files live once in blobs/ (named by content hash); snapshots/<commit>/ holds
    relative symlinks to them; refs/<name> holds the commit id (no newline).
    """
    repo_id = "catbert-test/tiny-classifier"
    repo = fresh_dir(out / "hub-cache") / ("models--" + repo_id.replace("/", "--"))
    # A fixed fake commit id, so tests can hard-code it.
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    blobs, snap = repo / "blobs", repo / "snapshots" / commit
    blobs.mkdir(parents=True)
    snap.mkdir(parents=True)
    files = sorted(p for p in (out / "tiny").iterdir() if p.is_file())
    for f in files:
        digest = hashlib.sha256(f.read_bytes()).hexdigest()
        shutil.copy(f, blobs / digest)
        os.symlink(Path("..") / ".." / "blobs" / digest, snap / f.name)
    (repo / "refs").mkdir()
    for ref in ("main", "v1"):
        (repo / "refs" / ref).write_text(commit)
    log("hub-cache", f"{repo_id} @ {commit} (refs main, v1): {len(files)} files")


# A fixed training batch: product-like texts of clearly different lengths, so the
# batch has real padding and the attention mask matters in the backward pass too.
TRAIN_TEXTS = [
    "Sparkling Mineral Water",
    "Organic Rolled Oats, Gluten Free, 32 oz",
    "Fresh Atlantic Salmon Fillet",
    "Lavender Scented Laundry Detergent Pods, 42 count, high efficiency",
    "Gift Card",
    "Whole Bean Coffee Dark Roast Colombian Supremo 2 lb bag, fair trade certified",
]
TRAIN_LABELS = [0, 1, 2, 3, 4, 1]
TRAIN_CLASS_WEIGHTS = [1.5, 0.5, 1.0, 2.0, 3.0]
# lr is far above fine-tuning practice and max_grad_norm far below it, on purpose:
# parameter changes must be large relative to fp32 noise, and clipping must be
# active on every step so the Rust clipping path is exercised, not bypassed.
TRAIN_HP = {
    "lr": 1e-3,
    "warmup": 2,
    "total_steps": 10,
    "max_grad_norm": 0.05,
    "weight_decay": 0.01,
    "steps": 3,
}


def lr_lambda(step, warmup, total):
    """transformers.get_linear_schedule_with_warmup, as in scripts/torch_finetune.py.

    Note lambda(0) == 0: the first optimiser step runs at lr 0, so it leaves the
    weights untouched but still feeds Adam's moment estimates (and the bias
    correction step count). The Rust trainer must reproduce that too.
    """
    if step < warmup:
        return step / max(1, warmup)
    return max(0.0, (total - step) / max(1, total - warmup))


def param_groups(model, weight_decay):
    """The HF Trainer convention: no weight decay on biases and LayerNorm weights."""
    nd = ("bias", "LayerNorm.weight")
    named = list(model.named_parameters())
    return [
        {"params": [p for n, p in named if not any(s in n for s in nd)], "weight_decay": weight_decay},
        {"params": [p for n, p in named if any(s in n for s in nd)], "weight_decay": 0.0},
    ]


def save_tensors(path, tensors):
    # safetensors needs contiguous, independent storage; clone detaches from autograd.
    save_file({k: v.detach().clone().contiguous() for k, v in tensors.items()}, str(path))


def make_train_step(out, model_dir, seed=2):
    """A few deterministic training steps the Rust trainer must reproduce exactly.

    All dropouts are 0, so train mode is deterministic and equals eval mode
    numerically; everything else (weighted loss, AdamW groups, warm-up schedule,
    clipping) follows the reference fine-tuning recipe.

    Caveat for comparisons: attention key biases have an exactly zero true
    gradient (softmax is shift-invariant), so their gradients here are fp32
    rounding noise (~1e-9), which Adam's normalisation amplifies into ~1e-5
    updates. Compare those tensors loosely; everything else is stable to ~1e-7.
    """
    dest = fresh_dir(out / "train-step")
    initial = dest / "initial"
    initial.mkdir()
    n_labels = len(TRAIN_CLASS_WEIGHTS)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=64,
        type_vocab_size=2,
        hidden_act="gelu",
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        classifier_dropout=0.0,
        num_labels=n_labels,
        id2label={i: f"class_{i}" for i in range(n_labels)},
        label2id={f"class_{i}": i for i in range(n_labels)},
    )
    model = BertForSequenceClassification(config)
    randomise(model, seed)
    model.save_pretrained(initial, safe_serialization=True)
    save_tokenizer(model_dir, initial)

    # Train what was saved, not the in-memory object, so initial/ is the true start.
    model = load_classifier(initial)
    tok = AutoTokenizer.from_pretrained(initial)
    enc = tok(TRAIN_TEXTS, truncation=True, max_length=64, padding=True, return_tensors="pt")
    input_ids, attention_mask = enc["input_ids"], enc["attention_mask"]
    labels = torch.tensor(TRAIN_LABELS)

    # Output names must be the checkpoint's own (bert.-prefixed) state_dict keys.
    names = [n for n, _ in model.named_parameters()]
    assert set(names) <= set(model.state_dict()), "parameter names must be state_dict keys"

    hp = TRAIN_HP
    loss_fn = torch.nn.CrossEntropyLoss(weight=torch.tensor(TRAIN_CLASS_WEIGHTS, dtype=torch.float32))
    opt = torch.optim.AdamW(param_groups(model, hp["weight_decay"]), lr=hp["lr"], betas=(0.9, 0.999), eps=1e-8)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_lambda(s, hp["warmup"], hp["total_steps"]))

    losses, grad_norms, lrs = [], [], []
    for step in range(hp["steps"]):
        model.train()
        lrs.append(sched.get_last_lr()[0])  # the lr opt.step() is about to use
        opt.zero_grad(set_to_none=True)
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
        loss = loss_fn(logits, labels)
        loss.backward()
        if step == 0:
            # Raw gradients, before clipping rescales them in place.
            save_tensors(dest / "grads0.safetensors", {n: p.grad for n, p in model.named_parameters()})
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), hp["max_grad_norm"])
        assert norm.item() > hp["max_grad_norm"], f"step {step + 1}: clipping inactive (norm {norm.item()})"
        opt.step()
        sched.step()
        losses.append(loss.item())
        grad_norms.append(norm.item())

    save_tensors(dest / "final.safetensors", dict(model.named_parameters()))
    write_json(
        dest / "expected.json",
        {
            "texts": TRAIN_TEXTS,
            "labels": TRAIN_LABELS,
            "class_weights": TRAIN_CLASS_WEIGHTS,
            "input_ids": unpadded_ids(enc),
            **hp,
            "losses": losses,
            "grad_norms": grad_norms,
            "lrs": lrs,
        },
    )
    log(
        "train-step",
        f"seed {seed}: {len(TRAIN_TEXTS)} texts, row lengths {[len(r) for r in unpadded_ids(enc)]}; "
        f"losses {[round(x, 5) for x in losses]}, grad norms {[round(x, 4) for x in grad_norms]}, lrs {lrs}",
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repo", type=Path, default=Path(__file__).resolve().parent.parent)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    repo = args.repo.resolve()
    out = (args.out or Path(os.environ.get("CATBERT_ORACLE_DIR", repo / "target" / "oracle"))).resolve()
    data = repo / "datasets" / "products"
    model_dir = repo / "models" / "all-MiniLM-L6-v2"
    out.mkdir(parents=True, exist_ok=True)

    setup_determinism()
    make_tiny(out, model_dir, "tiny", "gelu", seed=0)
    make_tiny(out, model_dir, "tiny-gelu-new", "gelu_new", seed=1)
    texts = read_rows200(data)
    fast_ids = make_minilm_cls(out, model_dir, texts)
    make_minilm_cls_vocab(out, model_dir, texts, fast_ids)
    make_tokenizer_cases(out, model_dir, long_source=texts[0])
    make_base_expected(out, model_dir)
    make_hub_cache(out)
    make_train_step(out, model_dir)


if __name__ == "__main__":
    main()
