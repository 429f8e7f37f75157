#!/usr/bin/env python3
"""PyTorch + transformers side of scripts/bench-gpu.sh (runs on the GPU machine).

  bench_gpu_torch.py make-bert-base --tokenizer DIR --out DIR
      a BERT-base-shaped BertModel (12 layers, hidden 768, 12 heads, FFN 3072, vocab 30522)
      with random weights, saved in Hugging Face layout with the tokenizer of DIR.
  bench_gpu_torch.py train --model DIR --data CSV --text-col C --label-col C [--batch-size 32] [--epochs 1]
      eager BertForSequenceClassification, bf16 autocast, class-weighted CE, AdamW, clipping,
      dynamic padding (the reference recipe); prints JSON {samples_per_s, peak_mib}.
  bench_gpu_torch.py infer --model DIR --data CSV --text-col C [--batch-size 64]
      eager, bf16 autocast, no_grad, dynamic padding; prints JSON {rows_per_s, peak_mib}.
Peak memory is torch.cuda.max_memory_reserved (the caching allocator's high-water mark).
"""
import argparse, json, math, time

import numpy as np
import pandas as pd
import torch
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification, BertModel


def make_bert_base(a):
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                     intermediate_size=3072, max_position_embeddings=512)
    BertModel(cfg).save_pretrained(a.out)
    AutoTokenizer.from_pretrained(a.tokenizer).save_pretrained(a.out)


def batches(ids, size):
    for s in range(0, len(ids), size):
        chunk = ids[s:s + size]
        L = max(len(x) for x in chunk)
        t = torch.zeros((len(chunk), L), dtype=torch.long)
        m = torch.zeros((len(chunk), L), dtype=torch.long)
        for i, x in enumerate(chunk):
            t[i, :len(x)] = torch.tensor(x)
            m[i, :len(x)] = 1
        yield s, t.cuda(non_blocking=True), m.cuda(non_blocking=True)


def train(a):
    df = pd.read_csv(a.data, keep_default_na=False)
    labels = sorted(set(df[a.label_col]))
    y = np.array([labels.index(v) for v in df[a.label_col]])
    tok = AutoTokenizer.from_pretrained(a.model)
    ids = tok(list(df[a.text_col]), truncation=True, max_length=128)["input_ids"]
    model = BertForSequenceClassification.from_pretrained(a.model, num_labels=len(labels)).cuda().train()
    counts = np.bincount(y, minlength=len(labels))
    w = torch.tensor(len(y) / (len(labels) * counts), dtype=torch.float32).cuda()
    nd = ("bias", "LayerNorm.weight")
    opt = torch.optim.AdamW([
        {"params": [p for n, p in model.named_parameters() if not any(s in n for s in nd)], "weight_decay": 0.01},
        {"params": [p for n, p in model.named_parameters() if any(s in n for s in nd)], "weight_decay": 0.0}],
        lr=5e-5)
    order = np.random.RandomState(42).permutation(len(ids))
    ids = [ids[i] for i in order]
    y = torch.tensor(y[order]).cuda()
    loss_fn = torch.nn.CrossEntropyLoss(weight=w)
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
    seen, t0 = 0, None
    for epoch in range(a.epochs):
        for step, (s, t, m) in enumerate(batches(ids, a.batch_size)):
            if t0 is None and step == 5:  # warm-up steps excluded
                torch.cuda.synchronize(); t0 = time.perf_counter(); seen = 0
            with torch.autocast("cuda", dtype=torch.bfloat16):
                logits = model(input_ids=t, attention_mask=m).logits
            loss = loss_fn(logits.float(), y[s:s + len(t)])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            seen += len(t)
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    print(json.dumps({"samples_per_s": seen / dt, "peak_mib": torch.cuda.max_memory_reserved() / 2**20}))


@torch.no_grad()
def infer(a):
    df = pd.read_csv(a.data, keep_default_na=False)
    tok = AutoTokenizer.from_pretrained(a.model)
    model = BertForSequenceClassification.from_pretrained(a.model).cuda().eval()
    texts = list(df[a.text_col])
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    ids = tok(texts, truncation=True, max_length=128)["input_ids"]
    out = []
    for _, t, m in batches(ids, a.batch_size):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(input_ids=t, attention_mask=m).logits
        out.append(torch.softmax(logits.float(), -1).topk(min(5, logits.shape[-1]), -1)[1].cpu())
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    print(json.dumps({"rows_per_s": len(texts) / dt, "peak_mib": torch.cuda.max_memory_reserved() / 2**20}))


ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("cmd", choices=["make-bert-base", "train", "infer"])
ap.add_argument("--tokenizer"); ap.add_argument("--out"); ap.add_argument("--model"); ap.add_argument("--data")
ap.add_argument("--text-col", default="product_description"); ap.add_argument("--label-col", default="Category")
ap.add_argument("--batch-size", type=int, default=32); ap.add_argument("--epochs", type=int, default=1)
a = ap.parse_args()
{"make-bert-base": make_bert_base, "train": train, "infer": infer}[a.cmd](a)
