#!/usr/bin/env bash
# Build the Python-side test oracles (reference checkpoints + expected outputs)
# that the Rust tests compare against. See scripts/make-oracle.py for contents.
#
# Idempotent: $OUT/STAMP holds a hash of make-oracle.py; when it matches, the
# oracles are already current and nothing is regenerated.
# Reads models/all-MiniLM-L6-v2 (fetched here if missing) and the first 200 rows of
# datasets/products/Query_and_Validation_Data.csv (in the repository).
# Env: CATBERT_ORACLE_DIR (default <repo>/target/oracle),
#      CATBERT_ORACLE_VENV (see py-oracle.sh).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${CATBERT_ORACLE_DIR:-$root/target/oracle}

# Both are cheap no-ops once done, and the Rust tests also use models/ directly,
# so run them even when the oracles themselves are current.
py=$("$root/scripts/py-oracle.sh")
"$root/scripts/fetch-model.sh" >&2

want=$(sha256sum "$root/scripts/make-oracle.py" | cut -d' ' -f1)
if [ -f "$out/STAMP" ] && [ "$(cat "$out/STAMP")" = "$want" ]; then
  echo "oracles up to date in $out"
  exit 0
fi

# Build into a side directory and swap it in at the end, so an interrupted run
# never leaves a half-written oracle set that looks complete.
partial="$out.partial"
rm -rf "$partial"
mkdir -p "$partial"
start=$(date +%s)
# CPU only: oracle numbers must not depend on whether a GPU happens to exist.
CUDA_VISIBLE_DEVICES="" "$py" "$root/scripts/make-oracle.py" \
  --repo "$root" --out "$partial"
printf '%s' "$want" >"$partial/STAMP"
rm -rf "$out"
mv "$partial" "$out"
echo "oracles written to $out in $(( $(date +%s) - start ))s"
