#!/usr/bin/env bash
# The GPU figures of BENCHMARKS.md in one go, for a lent H100/H200 (the device tool runs it in
# the repo root and sets $OUT). Prepare on the CPU machine first:
#   mkdir -p .gpu/wheels .gpu/tokenizer && echo /.gpu/ >> .git/info/exclude
#   pip download --no-deps -d .gpu/wheels ml_collections tensorboardX
#   cp $SPARTA_JAX_CACHE/smollm2-135m-instruct/{tokenizer.json,tokenizer_config.json,special_tokens_map.json} .gpu/tokenizer
# then run `bash benchmarks/gpu_session.sh` with carry [".gpu"] and timeout_s 600. The device image
# has its own jax, flax, optax and orbax (a flax carried from here need not match its jax: flax
# 0.12.8 failed to import on jax 0.11.2) but no ml_collections or tensorboardX, and nothing can be
# fetched there, so those two go to /tmp/site (no build step) and the repo is on PYTHONPATH.
# First a correctness check on the GPU (our logits, KV cache and LoRA against transformers and
# PEFT, f32 at highest matmul precision), then the benchmarks. Each table lands in $OUT/*.md,
# versions and step times in $OUT/session.txt, the logs in $OUT/logs.tgz; a step that fails or
# runs out of time leaves its log and the rest go on (the iteration logs each phase's seconds as
# it ends). `--smoke` runs of the first two scripts are in the tests
# (tests/test_gpu_benchmarks_smoke.py), so no line here is untried.
set -uo pipefail
OUT=${OUT:-/tmp/gpu_session}
LOGS=/tmp/gpu_session_logs  # the device tool brings back 8 files at most: logs travel as one archive
rm -rf /tmp/site "$LOGS"  # a warm machine keeps the last call's files
mkdir -p "$OUT" "$LOGS"
PY=$(command -v python3 || command -v python)
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/wheels/*.whl \
  >"$LOGS/install.log" 2>&1
export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export XLA_FLAGS="--xla_gpu_enable_triton_gemm=false"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$OUT/session.txt" 2>&1
"$PY" -c "import jax, flax, optax, orbax.checkpoint as ocp, torch, transformers; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, 'orbax', ocp.__version__, 'torch', torch.__version__, 'transformers', transformers.__version__, jax.devices())" >>"$OUT/session.txt" 2>&1
echo "host: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2), $(nproc) cores, avx512f: $(grep -c -m1 avx512f /proc/cpuinfo)" >>"$OUT/session.txt"

step() {  # step NAME SECONDS COMMAND...
  local name=$1 limit=$2; shift 2
  timeout "$limit" "$@" >"$OUT/$name.md" 2>"$LOGS/$name.log"
  echo "$name: exit $? after ${SECONDS}s" >>"$OUT/session.txt"
  tar czf "$OUT/logs.tgz" -C "$(dirname "$LOGS")" "$(basename "$LOGS")"
}
# Limits from the H200 run of 2026-12-04 (correctness 85 s before the refill tests joined it,
# sampler 136 s before its per-step-slicing row joined it, dpo 65 s, iteration about 210 s),
# 580 s in all for the device tool's 600 s call.
# Correctness on the GPU before any speed: the parity tests, with jax on the GPU (the reference side
# runs in torch on the CPU); 8 host devices would be the CPU's, so the mesh tests are left out.
# The refilled rows' tests (answers equal one static batch) run on the GPU too: gpu_h100.py refills.
JAX_PLATFORMS=cuda JAX_DEFAULT_MATMUL_PRECISION=highest step correctness 125 "$PY" -m pytest -q -p no:cacheprovider \
  tests/test_models.py tests/test_sampling.py -k "logits_match or kv_cache_incremental or lora_stack_matches_peft \
  or mixed_adapter or refilled_rows_equal_one_static_batch or buckets_queue_apart or sliced_in_each_step"
step sampler 165 "$PY" benchmarks/sampler.py --case gpu
step dpo 80 "$PY" benchmarks/dpo.py --case gpu
# One iteration of configs/gpu_h100.py: ten LoRA r64 members on random Qwen2.5-7B weights, 100
# duels; logits judges (random weights never write a parseable score, so sampled judging would
# leave DPO without pairs).
step iteration 210 "$PY" benchmarks/iteration.py --config=configs/gpu_h100.py --workdir=/tmp/bench_iteration \
  --config.tribe.base=random:qwen2.5-7b --config.tribe.tokenizer=.gpu/tokenizer --config.iterations=1 \
  --config.instructions_per_iteration=100 --config.judge.mode=logits --config.evaluation.enabled=False \
  --config.distributed.initialize=False --bundled_task=mixed
