#!/usr/bin/env bash
# The competent-judges demonstration (#17, docs/results.md "Measured demonstration: competent judges"):
# build the experts, audit their judges, then four arms on the same tribe, data and seeds:
# Sparta (static reputation), the same with uniform votes, the verifier control, and no
# training (the iteration-0 evaluation all three share); `compare` prints the tables.
# Every step resumes when re-run after a kill (the experts' SFT, each run, the audit is skipped
# once written).
#
#   launch/competent_judges.sh [OUTDIR] [extra --config.* flags for every run...]
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
OUT=$(mkdir -p "${1:-cj}" && cd "${1:-cj}" && pwd); shift || true
CONFIG="$HERE/configs/competent_judges.py"
cd "$HERE"
python -m sparta_jax.experts --config="$CONFIG" "$@"
mkdir -p "$OUT/sparta" "$OUT/uniform"
[ -f "$OUT/sparta/audit.json" ] || python -m sparta_jax.audit --config="$CONFIG" --split=test --items=100 \
  --out="$OUT/sparta/audit.json" "$@"
cp "$OUT/sparta/audit.json" "$OUT/uniform/audit.json"  # the same tribe before training: one audit
python -m sparta_jax.main --config="$CONFIG" --workdir="$OUT/sparta" "$@"
# The initial tribe's evaluation is the same in every arm (same tribe, items and seed; greedy
# answers), so the other arms take the Sparta arm's instead of answering 960 items again.
for arm in uniform verifier; do
  mkdir -p "$OUT/$arm/iteration_000"
  [ -f "$OUT/$arm/iteration_000/evaluation.json" ] || cp "$OUT/sparta/iteration_000/evaluation.json" "$OUT/$arm/iteration_000/"
done
python -m sparta_jax.main --config="$CONFIG" --workdir="$OUT/uniform" --config.reputation.scheme=uniform "$@"
python -m sparta_jax.main --config="$CONFIG" --workdir="$OUT/verifier" --config.judge.mode=verifier "$@"
python -m sparta_jax.compare "$OUT/sparta" "$OUT/uniform" "$OUT/verifier" --markdown "$OUT/table.md" | tee "$OUT/compare.md"
