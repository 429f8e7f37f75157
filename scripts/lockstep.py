#!/usr/bin/env python3
"""Lockstep: catbert and PyTorch + transformers train one epoch from the same start, step by step.

Both tools start from the *same* weights (the base model with a classification head initialised
once here, seeded, and saved for both to load), with dropout off (the base config's dropout
probabilities set to 0), on the *same* batches in the same order (catbert writes its batches to
a step log, CATBERT_STEP_LOG; PyTorch replays them). Per step the loss and the global gradient
norm (before clipping) of both are compared; they must agree within --tol relative.

PyTorch runs the reference's recipe (scripts/torch_finetune.py): AdamW (0.9, 0.999, 1e-8), weight
decay except on biases and LayerNorm weights, linear warm-up/decay, clipping at max_grad_norm,
cross-entropy weighted by the balanced class weights of the training rows. Where a setting of
catbert's differs from that recipe (class weights, decay mask, schedule) it is printed. catbert's
options beyond the recipe are replayed as PyTorch has them: --label-smoothing as
CrossEntropyLoss(label_smoothing=), --layer-lr-decay as parameter groups with their own lr (the
factors from the step log), --sampler balanced through the logged batches.

Usage (oracle venv: "$(scripts/py-oracle.sh)" scripts/lockstep.py ...):
  lockstep.py --model models/all-MiniLM-L6-v2 --train datasets/products/Training_Data.csv \
      [--text-col product_description --label-col Category] [--rows N] [--batch-size 32] \
      [--lr 5e-5] [--seed 42] [--threads 2] [--tol 1e-3] [--work DIR] [--catbert BIN] [--json F]
      [--catbert-arg=FLAG ...]
Exit status 0 when every step agrees, 1 when one does not, 2 on bad input.
"""
import argparse
import csv
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from torch_common import fail, import_torch, need_model_dir  # noqa: E402
from torch_finetune import labelled  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    a = p.add_argument
    a("--model", required=True, help="base model folder (transformers layout)")
    a("--train", required=True, help="labelled CSV")
    a("--text-col", default="product_description")
    a("--label-col", default="Category")
    a("--rows", type=int, default=0, help="first N rows of --train only (0: all)")
    a("--batch-size", type=int, default=32)
    a("--lr", type=float, default=5e-5)
    a("--seed", type=int, default=42)
    a("--threads", type=int, default=2)
    a("--tol", type=float, default=1e-3, help="largest relative difference allowed per step")
    a("--work", help="working folder (default: a temporary one)")
    a("--catbert", default=str(ROOT / "target/release/catbert"))
    a("--json", help="write the per-step figures here")
    a("--catbert-arg", action="append", default=[],
      help="an extra flag for catbert finetune only (to see a difference caught: --catbert-arg=--class-weights=none)")
    return p.parse_args()


def prepare(args, work, torch):
    """The shared start: the base model, dropout off, a seeded head; the rows; labels sorted."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    # The reference's reading: labels stripped, unlabelled rows skipped (as catbert does).
    texts, row_labels, _ = labelled(args.train, args.text_col, args.label_col)
    rows = list(zip(texts, row_labels))
    if args.rows:
        rows = rows[: args.rows]
    labels = sorted({label for _, label in rows})  # catbert's label order
    subset = work / "train.csv"
    with open(subset, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow([args.text_col, args.label_col])
        w.writerows(rows)
    config = AutoConfig.from_pretrained(args.model)
    config.hidden_dropout_prob = 0.0
    config.attention_probs_dropout_prob = 0.0
    config.classifier_dropout = 0.0
    config.num_labels = len(labels)
    config.id2label = dict(enumerate(labels))
    config.label2id = {l: i for i, l in enumerate(labels)}
    torch.manual_seed(args.seed)
    model = AutoModelForSequenceClassification.from_pretrained(args.model, config=config, ignore_mismatched_sizes=True)
    base = work / "base"
    model.save_pretrained(base)
    AutoTokenizer.from_pretrained(args.model).save_pretrained(base)
    return subset, base, labels


def run_catbert(args, work, subset, base):
    log = work / "steps.jsonl"
    cmd = [args.catbert, "finetune", "--model", str(base), "--train", str(subset),
           "--text-col", args.text_col, "--label-col", args.label_col, "--epochs", "1",
           "--batch-size", str(args.batch_size), "--lr", str(args.lr), "--seed", str(args.seed),
           "--threads", str(args.threads), "--device", "cpu", "--out", str(work / "catbert"),
           "--overwrite", "--quiet", *args.catbert_arg]
    env = dict(os.environ, CATBERT_STEP_LOG=str(log))
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        fail(f"catbert finetune failed ({done.returncode}): {done.stderr.strip()}")
    lines = [json.loads(l) for l in open(log, encoding="utf-8")]
    return lines[0], lines[1:]


def replay(args, torch, np, base, head, steps):
    """PyTorch + transformers on catbert's batches, the reference's recipe."""
    from transformers import AutoModelForSequenceClassification

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = AutoModelForSequenceClassification.from_pretrained(base, dtype=torch.float32)
    model.train()
    ids, y = head["train_ids"], head["train_labels"]
    k = model.config.num_labels
    counts = np.bincount(np.array(y), minlength=k)
    weights = len(y) / (k * np.maximum(counts, 1))
    named = list(model.named_parameters())
    exempt = ("bias", "LayerNorm.weight")
    decayed = [n for n, _ in named if not any(e in n for e in exempt)]
    # One group per (decay, lr factor): catbert's layer-wise learning-rate factors (all 1 in
    # the reference's recipe) replayed as PyTorch parameter groups with their own lr.
    scales = head.get("lr_scales") or {}
    groups = {}
    for n, p in named:
        decay = head["weight_decay"] if n in decayed else 0.0
        scale = scales.get(n, 1.0)
        groups.setdefault((decay, scale), []).append(p)
    groups = [{"params": ps, "weight_decay": d, "lr": args.lr * s} for (d, s), ps in groups.items()]
    opt = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.999), eps=1e-8)
    warmup, total = head["warmup_steps"], head["total_steps"]

    def factor(step):  # transformers.get_linear_schedule_with_warmup
        if step < warmup:
            return step / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    loss_fn = torch.nn.CrossEntropyLoss(weight=torch.tensor(weights, dtype=torch.float32),
                                        label_smoothing=head.get("label_smoothing", 0.0))
    pad = model.config.pad_token_id or 0
    out = []
    for s in steps:
        batch = [ids[i] for i in s["rows"]]
        width = max(len(b) for b in batch)
        input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for r, b in enumerate(batch):
            input_ids[r, : len(b)] = torch.tensor(b)
            mask[r, : len(b)] = 1
        labels = torch.tensor([y[i] for i in s["rows"]])
        lr = args.lr * factor(sched.last_epoch)
        loss = loss_fn(model(input_ids=input_ids, attention_mask=mask).logits, labels)
        loss.backward()
        # The norm before clipping; max_grad_norm 0 means no clipping (the reference skips it).
        limit = head["max_grad_norm"] if head["max_grad_norm"] > 0 else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), limit)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        out.append({"loss": loss.item(), "grad_norm": norm.item(), "lr": lr})
    notes = []
    if not np.allclose(weights, head["class_weights"], rtol=1e-5):
        notes.append(f"class weights differ: catbert {head['class_weights']} vs {weights.tolist()}")
    if sorted(decayed) != sorted(head["decayed"]):
        only_cb = sorted(set(head["decayed"]) - set(decayed))
        only_pt = sorted(set(decayed) - set(head["decayed"]))
        notes.append(f"weight-decay mask differs: only catbert {only_cb}, only PyTorch {only_pt}")
    return out, notes


def main():
    args = parse_args()
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import_torch()
    import numpy as np
    import torch

    need_model_dir(args.model)
    if not Path(args.catbert).exists():
        fail(f"{args.catbert} missing: cargo build --release first")
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="lockstep-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        subset, base, labels = prepare(args, work, torch)
        head, steps = run_catbert(args, work, subset, base)
        if not steps:
            fail("catbert logged no steps")
        theirs, notes = replay(args, torch, np, base, head, steps)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    rel = lambda a, b: abs(a - b) / max(abs(b), 1e-12)
    worst = {"loss": 0.0, "grad_norm": 0.0, "lr": 0.0}
    first_bad = None
    table = []
    for s, t in zip(steps, theirs):
        row = {"step": s["step"], "rows": len(s["rows"])}
        for key in worst:
            d = rel(s[key], t[key])
            worst[key] = max(worst[key], d)
            row[key] = (s[key], t[key], d)
            if d > args.tol and first_bad is None:
                first_bad = (s["step"], key, s[key], t[key], d)
        table.append(row)
    print(f"lockstep: {len(steps)} steps, {len(head['train_ids'])} training rows, {len(labels)} classes, "
          f"batch {args.batch_size}, lr {args.lr}, seed {args.seed}, dropout off")
    print("| step | rows | loss catbert | loss PyTorch | rel | grad norm catbert | grad norm PyTorch | rel |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    shown = table if len(table) <= 12 else table[:6] + table[-6:]
    for r in shown:
        (lc, lt, ld), (gc, gt, gd) = r["loss"], r["grad_norm"]
        print(f"| {r['step']} | {r['rows']} | {lc:.6f} | {lt:.6f} | {ld:.1e} | {gc:.6f} | {gt:.6f} | {gd:.1e} |")
    print(f"largest relative difference: loss {worst['loss']:.2e}, grad norm {worst['grad_norm']:.2e}, "
          f"lr {worst['lr']:.2e} (tolerance {args.tol:g})")
    for n in notes:
        print(f"note: {n}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"steps": table, "worst": worst, "notes": notes}, f)
    if first_bad:
        step, key, a, b, d = first_bad
        print(f"error: step {step}: {key} catbert {a:.6g} vs PyTorch {b:.6g} ({d:.2e} relative, over {args.tol:g})",
              file=sys.stderr)
        sys.exit(1)
    print("ok: every step within tolerance")


if __name__ == "__main__":
    main()
