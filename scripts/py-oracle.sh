#!/usr/bin/env bash
# Create (or reuse) the Python virtualenv that produces the test oracles.
#
# The venv lives outside the repository so that fresh clones on the same machine
# share one multi-GB torch install. Versions are pinned because the oracle
# numbers (logits, token ids) must not drift with upstream releases.
# Idempotent: a stamp file inside the venv records the installed package list;
# when it matches, nothing is done.
#
# Progress goes to stderr; the venv's python path is the only thing on stdout,
# so callers can do: py=$(scripts/py-oracle.sh)
set -euo pipefail

venv=${CATBERT_ORACLE_VENV:-$HOME/.cache/catbert/oracle-venv}
packages=(
  torch==2.15.0
  transformers==5.23.0
  safetensors==0.8.0
  tokenizers==0.23.3
  numpy==2.4.6
  scikit-learn==1.9.1
  pandas==3.1.1
  pyarrow==25.0.1
  mlflow[auth]==3.17.2
  onnx==1.23.2
  onnxruntime==1.32.0
)
stamp="$venv/.catbert-oracle-stamp"
want="${packages[*]}"
py="$venv/bin/python"

if [ -x "$py" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "$py"
  exit 0
fi

base_py=$(command -v python3.11 || true)
if [ -z "$base_py" ]; then
  echo "error: python3.11 not found on PATH" >&2
  exit 1
fi

# A venv whose interpreter no longer runs (e.g. the base python was upgraded)
# cannot be repaired by pip; rebuild it from scratch.
if [ -d "$venv" ] && ! "$py" -c 'import sys' >/dev/null 2>&1; then
  echo "oracle venv at $venv is broken; recreating" >&2
  rm -rf "$venv"
fi
if [ ! -x "$py" ]; then
  echo "creating oracle venv at $venv" >&2
  mkdir -p "$(dirname "$venv")"
  "$base_py" -m venv "$venv"
fi

echo "installing pinned oracle packages into $venv" >&2
# Remove the stamp first so an interrupted install is retried next time.
rm -f "$stamp"
"$py" -m pip install --quiet "${packages[@]}" >&2
printf '%s' "$want" >"$stamp"

echo "$py"
