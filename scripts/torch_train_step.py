#!/usr/bin/env python3
"""PyTorch + transformers baseline for the cost of one training step on CPU: a BERT-shaped
classifier (5 labels) at batch 32 on real text, padded per batch, at most 128 tokens.

  --arch minilm     BertForSequenceClassification loaded from --model-dir (6 layers, hidden 384)
  --arch bert-base  the BERT-base shape with random weights (12 layers, hidden 768, 12 heads,
                    FFN 3072, vocab 30522); only the tokenizer comes from --model-dir

The text column of --data is shuffled with random.Random(42) and consumed in consecutive
batches; labels are random (torch.manual_seed(42)). Every step is timed in four parts:
forward (with the loss), backward, gradient clipping to norm 1.0 and the AdamW step (lr 5e-5,
weight decay 0.01 on every parameter). The first --warmup steps are run but not timed. Prints
one line per step and a JSON summary (also written to --json): samples/s for forward alone,
forward + backward, and the full step.

Example:
  "$(scripts/py-oracle.sh)" scripts/torch_train_step.py --arch minilm --model-dir models/all-MiniLM-L6-v2 \\
      --data datasets/products/Training_Data.csv --steps 10 --warmup 2
"""
import argparse
import json
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_common import fail, import_torch, need_model_dir, open_csv  # noqa: E402

PHASES = ("fwd", "bwd", "clip", "opt")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--arch", choices=["minilm", "bert-base"], default="minilm")
    a("--model-dir", required=True, help="all-MiniLM-L6-v2 folder: the tokenizer, and the weights for --arch minilm")
    a("--data", required=True, help="CSV with the text column")
    a("--text-col", default="product_description")
    a("--batch-size", type=int, default=32)
    a("--max-length", type=int, default=128)
    a("--steps", type=int, default=8, help="timed steps")
    a("--warmup", type=int, default=2, help="untimed steps first")
    a("--threads", type=int, default=2)
    a("--fused-adamw", action="store_true")
    a("--json", help="also write the summary here")
    args = p.parse_args()
    if args.steps < 1:
        fail("--steps must be at least 1")
    return args


def build_model(args, transformers):
    if args.arch == "minilm":
        return transformers.BertForSequenceClassification.from_pretrained(args.model_dir, num_labels=5)
    shape = transformers.BertConfig(vocab_size=30522, hidden_size=768, num_hidden_layers=12,
                                    num_attention_heads=12, intermediate_size=3072,
                                    max_position_embeddings=512, num_labels=5)
    return transformers.BertForSequenceClassification(shape)


def main():
    args = parse_args()
    import_torch()
    need_model_dir(args.model_dir, weights=args.arch == "minilm")
    texts = [row[args.text_col] or "" for row in open_csv(args.data, (args.text_col,))]
    need = (args.warmup + args.steps) * args.batch_size
    if len(texts) < need:
        fail(f"{args.data} has {len(texts)} rows; {args.warmup} + {args.steps} steps of {args.batch_size} need {need}")

    import torch
    import transformers

    torch.set_num_threads(args.threads)
    torch.manual_seed(42)  # the head (or the whole bert-base model), then the random labels
    random.Random(42).shuffle(texts)
    tokenizer = transformers.AutoTokenizer.from_pretrained(args.model_dir)
    model = build_model(args, transformers)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.01, fused=args.fused_adamw or None)
    loss_fn = torch.nn.CrossEntropyLoss()

    spent = dict.fromkeys(PHASES, 0.0)
    samples = padded_tokens = 0
    for step in range(args.warmup + args.steps):
        batch = texts[step * args.batch_size : (step + 1) * args.batch_size]
        enc = tokenizer(batch, truncation=True, max_length=args.max_length, padding=True,
                        return_tensors="pt", return_token_type_ids=False)
        labels = torch.randint(0, 5, (len(batch),))
        marks = [time.perf_counter()]
        logits = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
        loss = loss_fn(logits, labels)
        marks.append(time.perf_counter())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        marks.append(time.perf_counter())
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        marks.append(time.perf_counter())
        opt.step()
        marks.append(time.perf_counter())
        took = {ph: marks[i + 1] - marks[i] for i, ph in enumerate(PHASES)}
        timed = step >= args.warmup
        if timed:
            for ph in PHASES:
                spent[ph] += took[ph]
            samples += len(batch)
            padded_tokens += enc["input_ids"].numel()
        print(f"step {step}{'' if timed else ' (warm-up)'}: seq {enc['input_ids'].shape[1]} "
              + " ".join(f"{ph} {took[ph]:.3f}s" for ph in PHASES), flush=True)

    fwd_bwd = spent["fwd"] + spent["bwd"]
    full = fwd_bwd + spent["clip"] + spent["opt"]
    result = {"arch": args.arch, "params": n_params, "batch_size": args.batch_size,
              "threads": torch.get_num_threads(), "timed_steps": args.steps,
              "mean_padded_len": padded_tokens / samples, "seconds": spent,
              "fwd_bwd_samples_per_s": samples / fwd_bwd, "full_step_samples_per_s": samples / full,
              "fwd_only_samples_per_s": samples / spent["fwd"], "torch": torch.__version__,
              "fused_adamw": args.fused_adamw}
    print(json.dumps(result, indent=1))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
