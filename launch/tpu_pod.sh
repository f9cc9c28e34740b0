#!/usr/bin/env bash
# Create a Cloud TPU VM / pod slice, install sparta_jax on every worker, and run the same
# command on all of them (each worker is one JAX process; jax.distributed finds its peers).
#
#   launch/tpu_pod.sh NAME ZONE ACCELERATOR WORKDIR [extra --config.* flags...]
#   e.g. launch/tpu_pod.sh sparta-v4 us-central2-b v4-32 gs://my-bucket/run1 \
#          --config.tribe.base=/mnt/models/Qwen2.5-7B-Instruct
#
# Environment: CONFIG (default configs/tpu_v4.py), RUNTIME (TPU software version, default
# tpu-ubuntu2204-base), REPO_URL (where workers clone the code from; default: copy this
# checkout with scp), CREATE=0 to reuse an existing TPU. The workdir must be reachable from
# every worker (a gs:// bucket or a shared filesystem): checkpoints are written collectively.
set -euo pipefail

if [[ $# -lt 4 ]]; then
  sed -n '2,14p' "$0"; exit 2
fi
NAME=$1; ZONE=$2; ACCEL=$3; WORKDIR=$4; shift 4
CONFIG=${CONFIG:-configs/tpu_v4.py}
RUNTIME=${RUNTIME:-tpu-ubuntu2204-base}
HERE=$(cd "$(dirname "$0")/.." && pwd)

if [[ "${CREATE:-1}" == "1" ]]; then
  gcloud compute tpus tpu-vm create "$NAME" --zone="$ZONE" --accelerator-type="$ACCEL" --version="$RUNTIME"
fi

ssh_all() { gcloud compute tpus tpu-vm ssh "$NAME" --zone="$ZONE" --worker=all --command="$1"; }

if [[ -n "${REPO_URL:-}" ]]; then
  ssh_all "rm -rf ~/sparta_jax && git clone --depth 1 '$REPO_URL' ~/sparta_jax"
else
  tarball=$(mktemp --suffix=.tar.gz)
  git -C "$HERE" archive --format=tar.gz -o "$tarball" HEAD
  gcloud compute tpus tpu-vm scp "$tarball" "$NAME":~/sparta_jax.tar.gz --zone="$ZONE" --worker=all
  ssh_all "rm -rf ~/sparta_jax && mkdir ~/sparta_jax && tar -xzf ~/sparta_jax.tar.gz -C ~/sparta_jax"
fi
ssh_all "cd ~/sparta_jax && pip install -q -e '.[tpu]'"

flags=""
for f in "$@"; do flags+=" $(printf '%q' "$f")"; done
ssh_all "cd ~/sparta_jax && python -m sparta_jax.main --config=$CONFIG --workdir=$WORKDIR$flags 2>&1 | tee -a ~/sparta_run.log"
