#!/usr/bin/env python3
"""PyTorch + transformers baseline for `catbert infer`: top-k labels of every row of a CSV from a
fine-tuned checkpoint (a --save-dir of torch_finetune.py, or any BertForSequenceClassification
folder such as target/oracle/minilm-cls), on CPU.

Rows are read in file order and never sorted by length; batches of --batch-size (64) are
tokenised (at most --max-length 128 tokens) and padded to their longest row, run under
torch.no_grad(), and softmax + top-k are taken per row. The output CSV has the text column and
label_1, prob_1, ..., label_k, prob_k (probabilities with 6 decimals). Speed is printed end to
end (tokenising, forward, softmax / top-k) and for the forward pass alone; --json writes it with,
given --label-col, the top-1 accuracy and top-k hit rate over the rows that carry a label.

Example:
  "$(scripts/py-oracle.sh)" scripts/torch_infer.py --model-dir target/oracle/minilm-cls \\
      --input datasets/products/Query_and_Validation_Data.csv --label-col HUMAN_VERIFIED_Category \\
      --out target/torch/pred.csv --json target/torch/infer.json
"""
import argparse
import csv
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_common import import_torch, need_model_dir, open_csv  # noqa: E402


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--model-dir", required=True, help="fine-tuned checkpoint folder")
    a("--input", required=True, help="CSV to classify")
    a("--text-col", default="product_description")
    a("--label-col", help="optional column of true labels, to score the rows that have one")
    a("--out", required=True, help="predictions CSV")
    a("--batch-size", type=int, default=64)
    a("--max-length", type=int, default=128)
    a("--top-k", type=int, default=5)
    a("--threads", type=int, default=2)
    a("--json", help="also write the speed (and score) summary here")
    return p.parse_args()


def main():
    args = parse_args()
    import_torch()
    need_model_dir(args.model_dir)
    rows = open_csv(args.input, (args.text_col, args.label_col))

    import numpy as np
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    torch.set_num_threads(args.threads)
    texts = [row[args.text_col] or "" for row in rows]
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    model = BertForSequenceClassification.from_pretrained(args.model_dir)
    model.eval()
    names = {int(k): v for k, v in model.config.id2label.items()}
    k = min(args.top_k, len(names))

    best_ids, best_probs = [], []
    forward_seconds = 0.0
    start = time.perf_counter()
    with torch.no_grad():
        for s in range(0, len(texts), args.batch_size):
            enc = tokenizer(texts[s : s + args.batch_size], truncation=True, max_length=args.max_length,
                            padding=True, return_tensors="pt", return_token_type_ids=False)
            t = time.perf_counter()
            logits = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
            forward_seconds += time.perf_counter() - t
            probs, ids = torch.softmax(logits.float(), dim=-1).topk(k, dim=-1)
            best_ids.append(ids.numpy())
            best_probs.append(probs.numpy())
    seconds = time.perf_counter() - start
    n = len(texts)
    best_ids = np.concatenate(best_ids) if best_ids else np.zeros((0, k), dtype=np.int64)
    best_probs = np.concatenate(best_probs) if best_probs else np.zeros((0, k), dtype=np.float32)
    rate = n / seconds if seconds > 0 else 0.0
    fwd_rate = n / forward_seconds if forward_seconds > 0 else 0.0
    print(f"{n} rows in {seconds:.2f}s = {rate:.1f} rows/s end to end (forward only {fwd_rate:.1f} rows/s; "
          f"batch {args.batch_size}, threads {torch.get_num_threads()})", flush=True)

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow([args.text_col] + [h for j in range(1, k + 1) for h in (f"label_{j}", f"prob_{j}")])
        for r in range(n):
            w.writerow([texts[r]] + [c for j in range(k)
                                     for c in (names[int(best_ids[r, j])], f"{best_probs[r, j]:.6f}")])

    result = {"rows": n, "seconds": seconds, "rows_per_s": rate, "forward_seconds": forward_seconds,
              "forward_rows_per_s": fwd_rate, "batch_size": args.batch_size,
              "threads": torch.get_num_threads(), "torch": torch.__version__}
    if args.label_col:
        gold = [(r, (rows[r].get(args.label_col) or "").strip()) for r in range(n)]
        gold = [(r, g) for r, g in gold if g]
        if gold:
            top1 = float(np.mean([names[int(best_ids[r, 0])] == g for r, g in gold]))
            hit = float(np.mean([g in {names[int(i)] for i in best_ids[r]} for r, g in gold]))
            result.update({"labelled_rows": len(gold), "top1_accuracy": top1, f"top{k}_hit": hit})
            print(f"{len(gold)} labelled rows: top-1 accuracy {top1:.4f}, top-{k} hit {hit:.4f}", flush=True)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
