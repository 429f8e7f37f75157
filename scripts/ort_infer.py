#!/usr/bin/env python3
"""ONNX Runtime (and PyTorch on the same batches) baseline for `catbert infer` on the CPU.

The checkpoint (a BertForSequenceClassification folder) is exported once with
torch.onnx.export (dynamic batch and sequence axes) into --work; int8 variants are made with
onnxruntime.quantization.quantize_dynamic (per tensor, and --per-channel). Every engine sees
the same batches as catbert: texts tokenised (at most --max-length tokens), sorted by length,
cut into batches of --batch-size, each padded to its own longest row. Timing covers
tokenising, the forward passes and softmax, not model loading; --json writes rows/s and the
top-1 classes and probabilities, so int8 can be compared with fp32 row by row.

Engines: ort-fp32, ort-int8, ort-int8-pc (per channel), torch (eager, same sorted batches).

  "$(scripts/py-oracle.sh)" scripts/ort_infer.py --model-dir target/oracle/minilm-cls \\
      --input datasets/products/Query_and_Validation_Data.csv --engine ort-fp32 --threads 2 \\
      --work target/ort --json target/ort/fp32.json
"""
import argparse
import csv
import json
import os
import sys
import time


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--model-dir", required=True)
    a("--input", required=True)
    a("--text-col", default="product_description")
    a("--engine", required=True, choices=["ort-fp32", "ort-int8", "ort-int8-pc", "torch"])
    a("--work", required=True, help="folder for the exported and quantised models (reused)")
    a("--batch-size", type=int, default=64)
    a("--max-length", type=int, default=128)
    a("--threads", type=int, default=2)
    a("--json", required=True)
    return p.parse_args()


def export(model_dir, work):
    """model.onnx in `work`, exported from the checkpoint once."""
    path = os.path.join(work, "model.onnx")
    if os.path.exists(path):
        return path
    import torch
    from transformers import BertForSequenceClassification

    model = BertForSequenceClassification.from_pretrained(model_dir).eval()
    ids = torch.ones((2, 8), dtype=torch.long)
    mask = torch.ones((2, 8), dtype=torch.long)
    axes = {0: "batch", 1: "sequence"}
    tmp = path + ".tmp"
    try:
        torch.onnx.export(model, (ids, mask), tmp, input_names=["input_ids", "attention_mask"],
                          output_names=["logits"], dynamic_axes={"input_ids": axes, "attention_mask": axes,
                                                                 "logits": {0: "batch"}},
                          opset_version=17, dynamo=False)
    except TypeError:  # an exporter without the `dynamo` switch
        torch.onnx.export(model, (ids, mask), tmp, input_names=["input_ids", "attention_mask"],
                          output_names=["logits"], dynamic_axes={"input_ids": axes, "attention_mask": axes,
                                                                 "logits": {0: "batch"}},
                          opset_version=17)
    os.replace(tmp, path)
    return path


def quantised(fp32, work, per_channel):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    path = os.path.join(work, "model-int8-pc.onnx" if per_channel else "model-int8.onnx")
    if not os.path.exists(path):
        quantize_dynamic(fp32, path + ".tmp.onnx", weight_type=QuantType.QInt8, per_channel=per_channel)
        os.replace(path + ".tmp.onnx", path)
    return path


def main():
    args = parse_args()
    os.makedirs(args.work, exist_ok=True)
    import numpy as np
    from transformers import AutoTokenizer

    with open(args.input, newline="", encoding="utf-8") as f:
        texts = [r[args.text_col] or "" for r in csv.DictReader(f)]
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)

    if args.engine == "torch":
        import torch
        from transformers import BertForSequenceClassification

        torch.set_num_threads(args.threads)
        model = BertForSequenceClassification.from_pretrained(args.model_dir).eval()

        def run(ids, mask):
            with torch.no_grad():
                return model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits.numpy()
        providers = "torch eager"
    else:
        import onnxruntime as ort

        path = export(args.model_dir, args.work)
        if args.engine != "ort-fp32":
            path = quantised(path, args.work, per_channel=args.engine == "ort-int8-pc")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = args.threads
        opts.inter_op_num_threads = 1
        session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])

        def run(ids, mask):
            return session.run(["logits"], {"input_ids": ids, "attention_mask": mask})[0]
        providers = f"onnxruntime {ort.__version__}"

    start = time.perf_counter()
    encoded = tokenizer(texts, truncation=True, max_length=args.max_length)["input_ids"]
    order = sorted(range(len(texts)), key=lambda i: len(encoded[i]))
    top_class = np.zeros(len(texts), dtype=np.int64)
    top_prob = np.zeros(len(texts), dtype=np.float32)
    for s in range(0, len(order), args.batch_size):
        rows = order[s : s + args.batch_size]
        width = max(len(encoded[i]) for i in rows)
        ids = np.zeros((len(rows), width), dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for r, i in enumerate(rows):
            ids[r, : len(encoded[i])] = encoded[i]
            mask[r, : len(encoded[i])] = 1
        logits = run(ids, mask).astype(np.float32)
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs = e / e.sum(axis=1, keepdims=True)
        top_class[rows] = probs.argmax(axis=1)
        top_prob[rows] = probs.max(axis=1)
    seconds = time.perf_counter() - start
    summary = {
        "engine": args.engine,
        "runtime": providers,
        "threads": args.threads,
        "rows": len(texts),
        "seconds": seconds,
        "rows_per_s": len(texts) / seconds,
        "top1": top_class.tolist(),
        "prob1": top_prob.tolist(),
    }
    with open(args.json, "w") as f:
        json.dump(summary, f)
    print(f"{args.engine}: {len(texts)} rows in {seconds:.2f} s ({len(texts) / seconds:.1f} rows/s)", file=sys.stderr)


if __name__ == "__main__":
    main()
