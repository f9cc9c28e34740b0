#!/usr/bin/env bash
# The specialists demonstration (configs/specialists.py): build the experts, audit their judges,
# then every arm on the same tribe, data, seeds and answer budget: Sparta, Sparta with uniform
# votes, the verifier control, the four baselines, and no training (the iteration-0 evaluation
# every arm shares); `compare` prints the paper's table and the mechanism tables.
# Every step resumes when re-run after a kill (the experts' SFT, each run; the audit is skipped
# once written).
#
#   launch/specialists.sh [OUTDIR] [extra --config.* flags for every run...]
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
OUT=$(mkdir -p "${1:-spec}" && cd "${1:-spec}" && pwd); shift || true
CONFIG="$HERE/configs/specialists.py"
cd "$HERE"
python -m sparta_jax.experts --config="$CONFIG" "$@"
mkdir -p "$OUT/sparta"
[ -f "$OUT/sparta/audit.json" ] || python -m sparta_jax.audit --config="$CONFIG" --split=test --items=100 \
  --out="$OUT/sparta/audit.json" "$@"
python -m sparta_jax.main --config="$CONFIG" --workdir="$OUT/sparta" "$@"
ARMS="uniform verifier self_rewarding meta_rewarding spin sppo"
# The initial tribe's evaluation is the same in every arm (same tribe, items and seed; greedy
# answers), so the other arms take the Sparta arm's instead of answering every item again.
for arm in $ARMS; do
  mkdir -p "$OUT/$arm/iteration_000"
  [ -f "$OUT/$arm/iteration_000/evaluation.json" ] || cp "$OUT/sparta/iteration_000/evaluation.json" "$OUT/$arm/iteration_000/"
done
python -m sparta_jax.main --config="$CONFIG" --workdir="$OUT/uniform" --config.reputation.scheme=uniform "$@"
python -m sparta_jax.main --config="$CONFIG" --workdir="$OUT/verifier" --config.judge.mode=verifier "$@"
for m in self_rewarding meta_rewarding spin sppo; do
  python -m sparta_jax.main --config="$CONFIG:$m" --workdir="$OUT/$m" "$@"
done
python -m sparta_jax.compare "$OUT"/{sparta,uniform,verifier,self_rewarding,meta_rewarding,spin,sppo} \
  --markdown "$OUT/table.md" | tee "$OUT/compare.md"
