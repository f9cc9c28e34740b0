#!/usr/bin/env bash
# The embedded default on a laptop CPU: a tribe of SmolLM2-135M-Instruct members, 2 iterations.
#
#   launch/cpu.sh [WORKDIR] [extra --config.* flags...]
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
cd "$HERE"
WORKDIR=${1:-workdir}; shift || true
exec python -m sparta_jax.main --config=configs/default.py --workdir="$WORKDIR" "$@"
