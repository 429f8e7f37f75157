#!/usr/bin/env python3
"""Make the bundled product sample in datasets/products-sample/ from the full files in
datasets/products/ (stdlib only, seeded, so it is reproducible):

  train.csv    3,000 rows of Training_Data.csv, stratified by Category (same class mix)
  queries.csv  600 rows of Query_and_Validation_Data.csv, drawn at random: some carry a
               HUMAN_VERIFIED_Category, the rest are unlabelled queries, as in the full file

Usage: python3 scripts/make-sample.py [SOURCE_DIR]   (default datasets/products; a folder
holding datasets/products/, such as the old ../shared, works too)
"""
import csv
import random
import sys
from collections import defaultdict
from pathlib import Path

root = Path(__file__).resolve().parent.parent
src = Path(sys.argv[1]) if len(sys.argv) > 1 else root / "datasets" / "products"
if not (src / "Training_Data.csv").is_file() and (src / "datasets" / "products").is_dir():
    src = src / "datasets" / "products"
for name in ("Training_Data.csv", "Query_and_Validation_Data.csv"):
    if not (src / name).is_file():
        hint = "" if len(sys.argv) > 1 else ": datasets/products/ ships with the repository, restore it from git"
        sys.exit(f"error: {src / name} missing{hint}")
dst = root / "datasets" / "products-sample"
dst.mkdir(parents=True, exist_ok=True)
rng = random.Random(42)


def read(path):
    with open(path, newline="", encoding="utf-8") as f:
        r = csv.DictReader(f)
        return r.fieldnames, list(r)


def write(path, fields, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)


fields, rows = read(src / "Training_Data.csv")
by_class = defaultdict(list)
for row in rows:
    by_class[row["Category"]].append(row)
n_train = 3000
train = []
for label in sorted(by_class):
    members = by_class[label]
    take = round(n_train * len(members) / len(rows))
    train.extend(rng.sample(members, take))
rng.shuffle(train)
write(dst / "train.csv", fields, train)

fields, rows = read(src / "Query_and_Validation_Data.csv")
queries = rng.sample(rows, 600)
write(dst / "queries.csv", fields, queries)
labelled = sum(1 for r in queries if r["HUMAN_VERIFIED_Category"].strip())
print(f"train.csv: {len(train)} rows; queries.csv: {len(queries)} rows ({labelled} labelled)")
