#!/usr/bin/env bash
# Run Sparta on one GPU host (e.g. an H100): install the CUDA build of JAX and start the loop.
#
#   launch/gpu_host.sh WORKDIR [extra --config.* flags...]
#   e.g. launch/gpu_host.sh /scratch/run1 --config.tribe.base=/models/Qwen2.5-7B-Instruct \
#          "--config.tribe.adapters=('/experts/code_alpaca', '/experts/lima', ...)"
#
# Environment: CONFIG (default configs/gpu_h100.py), INSTALL=0 to skip the pip install.
# Re-running the same command after a crash or kill resumes the run.
set -euo pipefail

if [[ $# -lt 1 ]]; then
  sed -n '2,9p' "$0"; exit 2
fi
WORKDIR=$1; shift
HERE=$(cd "$(dirname "$0")/.." && pwd)
cd "$HERE"
if [[ "${INSTALL:-1}" == "1" ]]; then
  pip install -q -e ".[cuda]"
fi
# XLA's Triton GEMMs are slow for decode's skinny matmuls; cuBLAS halves the step time (H100).
export XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_enable_triton_gemm=false"
exec python -m sparta_jax.main --config="${CONFIG:-configs/gpu_h100.py}" --workdir="$WORKDIR" "$@"
