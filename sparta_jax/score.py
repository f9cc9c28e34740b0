"""Scores answers made anywhere (another implementation, a saved run) on a config's split.

    python -m sparta_jax.score --config=configs/x.py[:arg] --split=test --answers=answers.jsonl
        [--out scores.json] [--config.data.root=/data ...]
    python -m sparta_jax.score --config=configs/x.py --split=test --dump=items.jsonl

The split's records come from the config's data source (`config.data`, through
`sparta_jax.data.load_instructions`), each scored with the evaluator it names: the one the
loop's evaluation uses. The whole split is scored (the loop evaluates its first
`evaluation.dev` / `evaluation.test` items).

--dump writes the split's items instead, one JSON object per line, {"id", "prompt",
"reference"} (for TruthfulQA's MC items the reference is {"mc1_targets", "mc2_targets"},
each {"choices", "labels"}), so that answers can be produced elsewhere and brought back.

An answers line is {"id": ..., "answer": "..."}; for a log-likelihood split (TruthfulQA MC)
{"id": ..., "logprobs": {"mc1": [...], "mc2": [...]}}, each option's summed log-probability in
the order of its choices. The id joins answers to items: a missing, extra or repeated id is
an error. Items whose reference answer is missing or unreadable stay in the count, as wrong,
and are named on stderr.

Prints the accuracy with its Wilson 95% interval (MC1, plus MC2 for TruthfulQA). --out writes
{"config", "split", "evaluators", "n", "n_correct", "accuracy", "ci95", "n_unparsed",
"n_no_reference", "scores": {id: 0/1}} (plus "by_task"; MC2: "mc2", "mc2_ci95", "mc2_scores").
`--config.KEY=VALUE` overrides one config value (e.g. --config.data.root=/data). An error a
user can cause prints one line on stderr and exits with status 2.
"""
from __future__ import annotations

import argparse
import ast
import json
import sys
from collections.abc import Sequence
from typing import Any

from sparta_jax import data as data_lib
from sparta_jax import evaluation
from sparta_jax.errors import CliError, OneLineParser

PROG = "python -m sparta_jax.score"
OVERRIDE_PREFIX = "--config."


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog=PROG, description="Score answers on a config's data split with the task's evaluator.")
    p.add_argument("--config", required=True, help="run config (a file with get_config(); path:arg for a parameter)")
    p.add_argument("--split", default="test", help="the split to score or dump (default: test)")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--answers", help="answers to score, JSON lines {\"id\", \"answer\"}")
    what.add_argument("--dump", help="write the split's items {\"id\", \"prompt\", \"reference\"} here instead")
    p.add_argument("--out", help="also write the scores as JSON here")
    return p


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The flags, with `--config.KEY=VALUE` overrides set aside in `.overrides`."""
    overrides = [a for a in argv if a.startswith(OVERRIDE_PREFIX)]
    args = build_parser().parse_args([a for a in argv if not a.startswith(OVERRIDE_PREFIX)])
    args.overrides = overrides
    return args


# ---------------------------------------------------------------------------------------
# config


def _override_value(raw: str, current: Any) -> Any:
    """`raw` in the type of the value it replaces (a Python literal for new keys and tuples)."""
    if isinstance(current, bool):
        if raw.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"expected true or false, got {raw!r}")
        return raw.lower() in ("true", "1")
    if isinstance(current, (int, float)) and not isinstance(current, bool):
        return type(current)(raw)
    if isinstance(current, str):
        return raw
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw  # a bare word: a string


def apply_override(config, flag: str) -> None:
    key, sep, raw = flag[len(OVERRIDE_PREFIX):].partition("=")
    if not sep or not key:
        raise CliError(f"{flag}: write overrides as --config.KEY=VALUE")
    *parents, leaf = key.split(".")
    node = config
    try:
        for part in parents:
            node = node[part]
        node[leaf] = _override_value(raw, node.get(leaf))
    except (KeyError, AttributeError, TypeError, ValueError) as e:
        raise CliError(f"{flag}: cannot set {key} ({type(e).__name__}: {e})") from None


def load_config(path: str, overrides: Sequence[str] = ()):
    from sparta_jax.config_files import load_config as load_file

    try:
        config = load_file(path)
    except FileNotFoundError:
        raise CliError(f"--config: {path} not found") from None
    except Exception as e:  # noqa: BLE001 (a config file is user code: any error in it is the user's to fix)
        raise CliError(f"--config: cannot load {path} ({type(e).__name__}: {e})") from None
    for flag in overrides:
        apply_override(config, flag)
    return config


def split_records(config, split: str) -> list[dict]:
    """The records of `split` of the config's data source; ids must be unique."""
    spec = config.get("data") if hasattr(config, "get") else None
    if spec is None:
        raise CliError("--config: the config has no 'data' section (the data source)")
    try:
        splits = data_lib.load_instructions(spec)
    except data_lib.DataError as e:
        raise CliError(str(e)) from None
    if split not in splits:
        raise CliError(f"--split: the data source has no split {split!r} (it has {', '.join(sorted(splits))})")
    records = splits[split]
    seen = set()
    for r in records:
        if r["id"] in seen:
            raise CliError(f"split {split!r} has the id {r['id']!r} twice, so answers cannot be joined to it")
        seen.add(r["id"])
    return records


# ---------------------------------------------------------------------------------------
# dump


def item_line(record: dict) -> dict:
    """What --dump writes for one record."""
    if record.get("evaluator") == evaluation.LIKELIHOOD:
        reference = {k: record.get(k) for k in evaluation.MC_TARGETS}
    else:
        reference = record.get("answer")
    return {"id": record["id"], "prompt": record["instruction"], "reference": reference}


def write_lines(path: str, rows: Sequence[dict], flag: str) -> None:
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as e:
        raise CliError(f"{flag}: cannot write {path} ({e.strerror})") from None


# ---------------------------------------------------------------------------------------
# answers


def read_answers(path: str) -> dict[str, tuple[int, dict]]:
    """{id: (line number, answer object)} of an answers file (ids as strings)."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise CliError(f"--answers: cannot read {path} ({e.strerror})") from None
    except UnicodeDecodeError as e:
        raise CliError(f"--answers: {path} is not UTF-8 text ({e.reason})") from None
    out: dict[str, tuple[int, dict]] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as e:
            raise CliError(f"--answers: {path} line {number} is not valid JSON ({e})") from None
        if not isinstance(obj, dict) or "id" not in obj:
            raise CliError(f"--answers: {path} line {number}: expected an object with an \"id\"")
        if isinstance(obj["id"], bool) or not isinstance(obj["id"], (str, int)):
            raise CliError(f"--answers: {path} line {number}: \"id\" must be a string or an integer")
        key = str(obj["id"])
        if key in out:
            raise CliError(f"--answers: {path} line {number}: id {key!r} already answered on line {out[key][0]}")
        out[key] = (number, obj)
    return out


def _examples(ids: Sequence[str]) -> str:
    return ", ".join(map(repr, ids[:3])) + (", ..." if len(ids) > 3 else "")


def join_answers(records: Sequence[dict], answers: dict[str, tuple[int, dict]], split: str) -> list[tuple[int, dict]]:
    """The answers in the records' order; every item answered once, nothing else."""
    ids = [r["id"] for r in records]
    known = set(ids)
    missing = [i for i in ids if i not in answers]
    if missing:
        raise CliError(f"--answers: {len(missing)} of the {len(ids)} items of split {split!r} have no answer "
                       f"(ids {_examples(missing)})")
    extra = [k for k in answers if k not in known]
    if extra:
        raise CliError(f"--answers: {len(extra)} answer ids are not items of split {split!r} (ids {_examples(extra)})")
    return [answers[i] for i in ids]


def split_kind(records: Sequence[dict]) -> str:
    """"text" or "likelihood"; CliError for open-ended or mixed splits."""
    evaluators = {r.get("evaluator") for r in records}
    if evaluation.JUDGED in evaluators:
        raise CliError("the split holds open-ended items (evaluator 'judged'): they are scored 1-10 by a judge "
                       "model, which this command does not run")
    if evaluation.LIKELIHOOD in evaluators:
        if evaluators != {evaluation.LIKELIHOOD}:
            raise CliError("the split mixes log-likelihood items with text-answer items")
        return "likelihood"
    return "text"


def score_split(records: Sequence[dict], answers: dict[str, tuple[int, dict]], split: str) -> dict:
    """evaluation.evaluate (text answers) or evaluation.evaluate_likelihood, on joined answers."""
    joined = join_answers(records, answers, split)
    if split_kind(records) == "likelihood":
        logprobs = []
        for number, obj in joined:
            if not isinstance(obj.get("logprobs"), dict):
                raise CliError(f"--answers: line {number}: a log-likelihood item needs "
                               "\"logprobs\": {\"mc1\": [...], \"mc2\": [...]}")
            logprobs.append(obj["logprobs"])
        try:
            return evaluation.evaluate_likelihood(logprobs, records)
        except ValueError as e:
            raise CliError(f"--answers: {e}") from None
    texts = []
    for number, obj in joined:
        if not isinstance(obj.get("answer"), str):
            raise CliError(f"--answers: line {number}: \"answer\" must be a string")
        texts.append(obj["answer"])
    try:
        return evaluation.evaluate(texts, records, missing_reference="wrong")
    except ValueError as e:  # a record naming an unknown evaluator: the data source's fault
        raise CliError(str(e)) from None


def summary_line(split: str, result: dict) -> str:
    lo, hi = result["ci95"]
    name = "MC1" if "mc2" in result else "accuracy"
    line = (f"{split}: {name} {result['accuracy']:.4f} ({result['n_correct']}/{result['n']}), "
            f"95% Wilson interval [{lo:.4f}, {hi:.4f}]")
    if "mc2" in result:
        line += f"; MC2 {result['mc2']:.4f}, 95% interval [{result['mc2_ci95'][0]:.4f}, {result['mc2_ci95'][1]:.4f}]"
    if result.get("n_unparsed"):
        line += f"; {result['n_unparsed']} answers unreadable (wrong)"
    if result.get("n_no_reference"):
        line += f"; {result['n_no_reference']} items without a usable reference (wrong)"
    return line


def scores_json(config_path: str, split: str, records: Sequence[dict], result: dict) -> dict:
    ids = [r["id"] for r in records]
    out = {"config": config_path, "split": split,
           "evaluators": sorted({str(r.get("evaluator")) for r in records}),
           **{k: result[k] for k in ("n", "n_correct", "accuracy") if k in result},
           "ci95": list(result["ci95"]),
           "n_unparsed": result.get("n_unparsed", 0), "n_no_reference": result.get("n_no_reference", 0),
           "scores": dict(zip(ids, (int(s) for s in result["scores"])))}
    if "by_task" in result:
        out["by_task"] = result["by_task"]
    if "mc2" in result:
        out.update(mc2=result["mc2"], mc2_ci95=list(result["mc2_ci95"]),
                   mc2_scores=dict(zip(ids, result["mc2_scores"])))
    return out


# ---------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> None:
    config = load_config(args.config, args.overrides)
    records = split_records(config, args.split)
    if args.dump:
        write_lines(args.dump, [item_line(r) for r in records], "--dump")
        print(f"wrote the {len(records)} items of split {args.split!r} to {args.dump}")
        return
    answers = read_answers(args.answers)
    result = score_split(records, answers, args.split)
    note = data_lib.describe_reference_problems(args.split, records)
    if note and split_kind(records) == "text":
        print(f"{PROG}: warning: {note}", file=sys.stderr)
    print(summary_line(args.split, result))
    if args.out:
        text = json.dumps(scores_json(args.config, args.split, records, result), indent=1) + "\n"
        try:
            with open(args.out, "w", encoding="utf-8") as f:
                f.write(text)
        except OSError as e:
            raise CliError(f"--out: cannot write {args.out} ({e.strerror})") from None


def main(argv: Sequence[str] | None = None) -> int:
    try:
        run(parse_args(sys.argv[1:] if argv is None else list(argv)))
    except CliError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
