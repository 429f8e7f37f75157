#!/usr/bin/env bash
# Install the CUDA 13.0 toolkit from PyPI wheels into .cuda/ (git-ignored) so that
# `cargo build --release --features cuda` works on any machine, GPU or not. Idempotent.
# Prints the environment to source:   eval "$(scripts/setup-cuda.sh)"
#
# Facts this relies on (see the CUDA issue): the un-suffixed nvidia-* 13.0 wheels land in
# site-packages/nvidia/cu13/{bin,include,lib,nvvm}; they ship only versioned libraries, so we add
# lib*.so links; no wheel has libcuda.so (the driver), so a link-time stub is generated in
# .cuda/stubs — it is only for the linker and must never be on a GPU machine's library path.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dest=${CATBERT_CUDA_DIR:-$root/.cuda}
packages=(
  nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88
  nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85
  nvidia-cublas==13.1.0.3 nvidia-curand==10.4.0.35 nvidia-cuda-nvrtc==13.0.88
)
cuda=$dest/site/nvidia/cu13
stamp=$dest/.stamp
py=$(command -v python3.11 || command -v python3)

if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "${packages[*]}" ]; then
  echo "installing the CUDA 13.0 toolkit wheels into $dest" >&2
  rm -rf "$dest"
  mkdir -p "$dest"
  "$py" -m pip install --quiet --no-deps --target "$dest/site" "${packages[@]}" >&2
  # Unversioned names for the linker.
  for lib in "$cuda"/lib/lib*.so.*; do
    base=${lib%%.so.*}.so
    [ -e "$base" ] || ln -s "$(basename "$lib")" "$base"
  done
  chmod +x "$cuda"/bin/* 2>/dev/null || true
  # Link-time stub of the driver API: every cu* entry point cudarc and candle may reference.
  mkdir -p "$dest/stubs"
  grep -rhoE '\bcu[A-Z][A-Za-z0-9_]+' "$cuda/include/cuda.h" | sort -u |
    awk '{print "void " $1 "(void) {}"}' >"$dest/stubs/cuda_stub.c"
  cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$dest/stubs/libcuda.so" "$dest/stubs/cuda_stub.c"
  printf '%s' "${packages[*]}" >"$stamp"
fi

cat <<ENV
export CUDA_ROOT="$cuda"
export CUDA_HOME="$cuda"
export CUDA_PATH="$cuda"
export CUDA_COMPUTE_CAP=\${CUDA_COMPUTE_CAP:-90}
export PATH="$cuda/bin:\$PATH"
export LIBRARY_PATH="$cuda/lib:$dest/stubs\${LIBRARY_PATH:+:\$LIBRARY_PATH}"
export RUSTFLAGS="\${RUSTFLAGS:-} -L $cuda/lib -L $dest/stubs"
ENV
