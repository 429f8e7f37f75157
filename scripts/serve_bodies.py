"""Request bodies for scripts/bench-serve.sh and scripts/soak-serve.sh, from the 4,688 product
queries: OUT/single.jsonl (one TEI /predict body per text) and OUT/batch32.jsonl (32 texts per
body, [["a"], ["b"], ...]).

Usage: python scripts/serve_bodies.py OUT
"""

import csv
import json
import sys

out = sys.argv[1]
with open("datasets/products/Query_and_Validation_Data.csv", newline="") as f:
    texts = [r["product_description"] for r in csv.DictReader(f)]
with open(f"{out}/single.jsonl", "w") as f:
    for t in texts:
        f.write(json.dumps({"inputs": t}) + "\n")
with open(f"{out}/batch32.jsonl", "w") as f:
    for i in range(0, len(texts) - 31, 32):
        f.write(json.dumps({"inputs": [[t] for t in texts[i:i + 32]]}) + "\n")
print(f"{len(texts)} queries", file=sys.stderr)
