"""Replays a duel log into reputations, per-duel history and preference pairs.

    python -m sparta_jax.rate --duels DUELS.jsonl --tribe a,b,c [--reputations IN.json]
        [--scheme normal|static|dynamic|uniform] [--weights W.json] [--mode faithful|fixed]
        --out OUT.json

IN.json: {name: {"R": float, "sigma": float}} at the start of the log's first iteration
(default: the fair start, R=100, sigma=0.5). W.json: {name: w}, used instead of the
scheme's weights in every iteration (the scheme still sets c). OUT.json:
{"reputations": {...}, "history": [{"iteration", "index", "reputations"} per duel],
 "preferences": [...]}. On any error: one line on stderr, exit status 1, nothing written.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Optional, Sequence

from sparta_jax.sparta.duel_log import DuelLogError, iter_duel_log, write_text_atomic
from sparta_jax.sparta.judging import MODES
from sparta_jax.sparta.rating import replay
from sparta_jax.sparta.reputation import TribeReputation
from sparta_jax.sparta.weighting import SCHEMES, needed_iterations
from sparta_jax.errors import CliError, OneLineParser

PROG = "python -m sparta_jax.rate"


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog=PROG, description="Replay a Sparta duel log into reputations and preferences.")
    p.add_argument("--duels", required=True, help="duel log, one JSON object per line")
    p.add_argument("--tribe", required=True, help="comma-separated model names, in tribe order")
    p.add_argument("--reputations", help="start reputations {name: {R, sigma}} (default: fair start)")
    p.add_argument("--scheme", choices=SCHEMES, default="static", help="weighting scheme (default: static)")
    p.add_argument("--weights", help="per-model weights {name: w} to use instead of the scheme's")
    p.add_argument("--mode", choices=MODES, default="faithful", help="unparseable-score rule (default: faithful)")
    p.add_argument("--out", required=True, help="where to write the result JSON")
    return p


def parse_tribe(text: str) -> tuple:
    names = tuple(n.strip() for n in text.split(","))
    if any(not n for n in names):
        raise CliError(f"--tribe: empty model name in {text!r}")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise CliError(f"--tribe: repeated model name(s) {', '.join(duplicates)}")
    if len(names) < 2:
        raise CliError("--tribe: a tribe needs at least two models")
    return names


def _load_json(path: str, flag: str):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except OSError as e:
        raise CliError(f"{flag}: cannot read {path} ({e.strerror})") from None
    except (ValueError, RecursionError) as e:
        raise CliError(f"{flag}: {path} is not valid JSON ({e})") from None


def _finite_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def load_reputations(path: str, names: Sequence[str]) -> TribeReputation:
    table = _load_json(path, "--reputations")
    if not isinstance(table, dict):
        raise CliError(f"--reputations: {path} must hold an object {{name: {{\"R\": ..., \"sigma\": ...}}}}")
    for name, entry in table.items():
        if name not in names:
            raise CliError(f"--reputations: unknown model {name!r}")
        if not isinstance(entry, dict) or not {"R", "sigma"} <= set(entry):
            raise CliError(f"--reputations: {name!r} needs an object with 'R' and 'sigma'")
        if not _finite_number(entry["R"]):
            raise CliError(f"--reputations: {name!r}: R must be a finite number")
        if not _finite_number(entry["sigma"]) or entry["sigma"] <= 0:
            raise CliError(f"--reputations: {name!r}: sigma must be a positive number")
    missing = [n for n in names if n not in table]
    if missing:
        raise CliError(f"--reputations: no entry for {', '.join(map(repr, missing))}")
    return TribeReputation.from_dict(table, names)


def load_weights(path: str, names: Sequence[str]) -> dict:
    table = _load_json(path, "--weights")
    if not isinstance(table, dict):
        raise CliError(f"--weights: {path} must hold an object {{name: w}}")
    for name, value in table.items():
        if name not in names:
            raise CliError(f"--weights: unknown model {name!r}")
        if not _finite_number(value):
            raise CliError(f"--weights: {name!r}: w must be a finite number")
    return {n: float(v) for n, v in table.items()}


def read_log(path: str, names: Sequence[str]) -> list:
    """Validated records; also checks that iterations are consecutive (error names a line)."""
    records = []
    first_line = {}
    for line_no, record in iter_duel_log(path, tribe=names):
        records.append(record)
        first_line.setdefault(record.iteration, line_no)
    iterations = sorted(first_line)
    for before, after in zip(iterations, iterations[1:]):
        if after != before + 1:
            raise DuelLogError(
                f"iteration {after} follows iteration {before} (iterations must be consecutive)",
                first_line[after],
                path,
            )
    return records


def run(args: argparse.Namespace) -> dict:
    names = parse_tribe(args.tribe)
    start = load_reputations(args.reputations, names) if args.reputations else None
    weights = load_weights(args.weights, names) if args.weights else None
    records = read_log(args.duels, names)
    if weights is None and records:
        first = min(r.iteration for r in records)
        lacking = [u for u in needed_iterations(args.scheme, first) if u < first - 1 or (u == first - 1 and start is None)]
        if lacking:
            raise CliError(
                f"--scheme {args.scheme}: iteration {first} needs the end-of-iteration reputations of "
                f"iteration(s) {', '.join(map(str, lacking))}; pass --weights"
                + ("" if start is not None else " or --reputations")
            )
    result = replay(records, names, start=start, scheme=args.scheme, weights=weights, mode=args.mode)
    return result.to_json()


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        out = run(args)
        text = json.dumps(out, ensure_ascii=False, allow_nan=False) + "\n"
        try:
            write_text_atomic(args.out, text)
        except OSError as e:
            raise CliError(f"--out: cannot write {args.out} ({e.strerror})") from None
    except (CliError, DuelLogError, ValueError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
