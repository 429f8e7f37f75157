#!/usr/bin/env bash
# Pack what scripts/gpu-check.sh and scripts/bench-gpu.sh need on the GPU machine into
# gpu-bundle/ (git-ignored, under the 64 MiB a device call carries): the stripped,
# xz-compressed catbert-cuda, the GPU kernel tests, and all-MiniLM-L6-v2 in half precision.
# Run scripts/build-cuda.sh first.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bin=target/release/catbert-cuda
[ -x "$bin" ] || { echo "error: $bin missing: run scripts/build-cuda.sh" >&2; exit 1; }
scripts/fetch-model.sh >/dev/null
py=$(scripts/py-oracle.sh)
rm -rf gpu-bundle && mkdir -p gpu-bundle/minilm-fp16
strip -o gpu-bundle/catbert-cuda "$bin"
xz -9 -T2 gpu-bundle/catbert-cuda
# The GPU kernel tests (tests/gpu_kernels.rs) as a binary, for scripts/gpu-check.sh; built in
# target/cuda beside catbert-cuda. CATBERT_PACK_KERNEL_TESTS=0 leaves them out.
if [ "${CATBERT_PACK_KERNEL_TESTS:-1}" != 0 ]; then
  eval "$(scripts/setup-cuda.sh)"
  tests=$(CARGO_TARGET_DIR=target/cuda cargo test --release --locked --features cuda --test gpu_kernels --no-run \
    --message-format=json 2>/dev/null | "$py" -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "gpu_kernels" and m.get("executable"):
        print(m["executable"])')
  [ -x "$tests" ] || { echo "error: building the gpu_kernels test binary failed" >&2; exit 1; }
  strip -o gpu-bundle/gpu_kernels "$tests"
  xz -9 -T2 gpu-bundle/gpu_kernels
fi
for f in config.json tokenizer.json tokenizer_config.json special_tokens_map.json vocab.txt; do
  cp models/all-MiniLM-L6-v2/$f gpu-bundle/minilm-fp16/
done
"$py" - <<'PY'
from safetensors.torch import load_file, save_file
t = load_file("models/all-MiniLM-L6-v2/model.safetensors")
save_file({k: (v.half() if v.is_floating_point() else v) for k, v in t.items()},
          "gpu-bundle/minilm-fp16/model.safetensors", metadata={"format": "pt"})
PY
du -sh gpu-bundle gpu-bundle/*
