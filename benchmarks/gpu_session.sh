#!/usr/bin/env bash
# The GPU figures of BENCHMARKS.md in one go, for a lent H100/H200 (the device tool runs it in
# the repo root and sets $OUT). Prepare on the CPU machine first:
#   mkdir -p .gpu/wheels .gpu/tokenizer && echo /.gpu/ >> .git/info/exclude
#   pip download --no-deps -d .gpu/wheels ml_collections tensorboardX   # the device image lacks these two
#   cp $SPARTA_JAX_CACHE/smollm2-135m-instruct/{tokenizer.json,tokenizer_config.json,special_tokens_map.json} .gpu/tokenizer
# then run `bash benchmarks/gpu_session.sh` with carry [".gpu"]. Each table lands in $OUT/*.md,
# each log in $OUT/*.log; a step that fails or runs out of time leaves its log and the rest go on
# (the iteration logs each phase's seconds as it ends). `--smoke` runs of the first two scripts
# are in the tests (tests/test_gpu_benchmarks_smoke.py), so no line here is untried.
set -uo pipefail
OUT=${OUT:-/tmp/gpu_session}
mkdir -p "$OUT"
pip install -q --no-deps --no-index --find-links .gpu/wheels ml_collections tensorboardX >"$OUT/install.log" 2>&1
pip install -q --no-deps -e . >>"$OUT/install.log" 2>&1
export XLA_FLAGS="--xla_gpu_enable_triton_gemm=false"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$OUT/gpu.txt" 2>&1
python -c "import jax, flax; print(jax.__version__, flax.__version__, jax.devices())" >>"$OUT/gpu.txt" 2>&1

step() {  # step NAME SECONDS COMMAND...
  local name=$1 limit=$2; shift 2
  timeout "$limit" "$@" >"$OUT/$name.md" 2>"$OUT/$name.log"
  echo "$name: exit $? after ${SECONDS}s" >>"$OUT/steps.txt"
}
step sampler 170 python benchmarks/sampler.py --case gpu
step dpo 150 python benchmarks/dpo.py --case gpu
# One iteration of configs/gpu_h100.py: ten LoRA r64 members on random Qwen2.5-7B weights, 100
# duels; logits judges (random weights never write a parseable score, so sampled judging would
# leave DPO without pairs).
step iteration 230 python benchmarks/iteration.py --config=configs/gpu_h100.py --workdir=/tmp/bench_iteration \
  --config.tribe.base=random:qwen2.5-7b --config.tribe.tokenizer=.gpu/tokenizer --config.iterations=1 \
  --config.instructions_per_iteration=100 --config.judge.mode=logits --config.evaluation.enabled=False \
  --config.distributed.initialize=False --bundled_task=mixed
