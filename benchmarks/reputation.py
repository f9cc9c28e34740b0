"""Benchmark: reputation updates per second on one CPU core (docs/algorithm.md §2.4, the fast path).

    python benchmarks/reputation.py [--duels 1000000] [--members 10] [--judges 8]
        [--per-iteration 1000] [--append BENCHMARKS.md]

Rows: `rate_compiled` (the fused per-duel loop over precompiled duels, what the main loop
and the replay run) and `rate_iteration` (from DuelRecords: compiling, per-duel history
snapshots and preferences included, on up to 100,000 duels). Prints a Markdown table;
appends it to a file only with --append.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from sparta_jax.sparta.duel_log import DuelRecord, JudgeRecord  # noqa: E402
from sparta_jax.sparta.rating import rate_iteration  # noqa: E402
from sparta_jax.sparta.reputation import DEFAULT_CONSTANTS, TribeReputation, rate_compiled  # noqa: E402
from common import cpu_model  # noqa: E402

POOL = 100_000  # distinct random duels; longer runs cycle through them


def random_duels(n: int, members: int, judges: int, seed: int) -> list:
    """n compiled duels: random distinct pair, `judges` random other members, scores 1..10."""
    if judges > members - 2:
        raise SystemExit(f"--judges must be at most members - 2 = {members - 2}")
    rng = np.random.default_rng(seed)
    out = []
    pairs = rng.random((n, members)).argsort(axis=1)  # a random permutation per duel
    scores = rng.integers(1, 11, size=(n, 2, judges)).tolist()
    for row, (xa, xb) in zip(pairs.tolist(), scores):
        out.append((row[0], row[1], tuple(row[2 : 2 + judges]), tuple(xa), tuple(xb)))
    return out


def bench_compiled(duels: list, total: int, per_iteration: int, members: int) -> float:
    state = TribeReputation.fair([f"m{i}" for i in range(members)])
    weights = [1.0] * members
    done = 0
    start = time.perf_counter()
    while done < total:
        size = min(per_iteration, total - done)
        lo = done % len(duels)
        chunk = duels[lo : lo + size]
        if len(chunk) < size:
            chunk = chunk + duels[: size - len(chunk)]
        state, _ = rate_compiled(state, chunk, weights, DEFAULT_CONSTANTS.c)
        done += size
    return time.perf_counter() - start


def bench_records(duels: list, per_iteration: int, members: int) -> float:
    names = [f"m{i}" for i in range(members)]
    records = []
    for i, (a, b, js, xa, xb) in enumerate(duels):
        judges = {names[j]: JudgeRecord((x, y)) for j, x, y in zip(js, xa, xb)}
        records.append(DuelRecord(1, i, "instruction", (names[a], names[b]), ("ra", "rb"), judges))
    state = TribeReputation.fair(names)
    start = time.perf_counter()
    for lo in range(0, len(records), per_iteration):
        state = rate_iteration(records[lo : lo + per_iteration], state, iteration=1).end
    return time.perf_counter() - start


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--duels", type=int, default=1_000_000, help="duel updates to time")
    p.add_argument("--members", type=int, default=10)
    p.add_argument("--judges", type=int, default=8, help="judges per duel")
    p.add_argument("--per-iteration", type=int, default=1000, help="duels per iteration (n and histories restart)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--append", metavar="BENCHMARKS.md", help="append the table to this Markdown file")
    args = p.parse_args(argv)
    if args.duels < 1 or args.per_iteration < 1:
        raise SystemExit("--duels and --per-iteration must be positive")

    duels = random_duels(min(args.duels, POOL), args.members, args.judges, args.seed)
    rows = []
    seconds = bench_compiled(duels, args.duels, args.per_iteration, args.members)
    rows.append(("rate_compiled (fused loop)", args.duels, seconds))
    n_records = min(args.duels, POOL)
    seconds = bench_records(duels[:n_records], args.per_iteration, args.members)
    rows.append(("rate_iteration (records, history, preferences)", n_records, seconds))

    machine = f"{cpu_model()}, 1 core, Python {platform.python_version()}"
    date = datetime.date.today().isoformat()
    lines = [
        "| benchmark | duels | members | judges/duel | seconds | duel updates/s | machine | date |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for name, n, s in rows:
        lines.append(
            f"| {name} | {n:,} | {args.members} | {args.judges} | {s:.2f} | {n / s:,.0f} | {machine} | {date} |"
        )
    table = "\n".join(lines)
    print(table)
    if args.append:
        with open(args.append, "a", encoding="utf-8") as f:
            command = "python benchmarks/reputation.py " + " ".join(sys.argv[1:])
            f.write(f"\n### Reputation updates\n\nCommand: `{command.strip()}`\n\n{table}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
