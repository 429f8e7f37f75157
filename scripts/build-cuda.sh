#!/usr/bin/env bash
# Build the GPU variant of catbert on any machine (no GPU needed): installs the CUDA 13.0
# toolkit wheels (scripts/setup-cuda.sh), builds with --features cuda in target/cuda, and
# installs the binary as target/release/catbert-cuda, beside the CPU build, where `catbert`
# hands GPU runs over to it. A clean build takes about 20 minutes on 2 cores (candle's kernels).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
eval "$(scripts/setup-cuda.sh)"
CARGO_TARGET_DIR=target/cuda cargo build --release --locked --features cuda "$@"
mkdir -p target/release
cp target/cuda/release/catbert target/release/catbert-cuda
echo "GPU build: target/release/catbert-cuda"
