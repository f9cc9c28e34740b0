"""The predicted time of one Sparta iteration, phase by phase, from the time of each compiled
program and the config's own counts. Pure arithmetic: `sparta_jax.aot --iteration` feeds it
roofline times of programs compiled for a TPU topology; tests feed it made-up ones.

What one iteration runs (docs/algorithm.md §2; sparta_jax/train.py):

- answers: both duelists answer each of `instructions_per_iteration` instructions, in batches of
  `generation.batch_size` rows: a prefill per batch, then decode steps until the batch's longest
  answer ends (a static batch decodes every row until then);
- judging: every other member scores both answers of every duel. `logits` mode: one scoring
  forward per `judge.batch_size` judge prompts; `sampled`: each judge writes up to
  `judge.max_new_tokens` tokens (a prefill and decode steps per batch); `verifier`: no model;
- reference log-probs: DPO's reference pass, once per DPO step's batch, and once more over each
  pair for the after-training figures;
- DPO: ceil(pairs x epochs / pairs_per_step) train steps;
- evaluation: every member on `evaluation.dev` items and the best one (or all) on
  `evaluation.test`, greedy, at the evaluation's own lengths and batch (the judging of
  open-ended evaluation answers is not counted).

Pairs are an upper bound: one per duel (no ties or margin drops), plus the replayed ones.
An answer-length distribution sets the decode steps: the expected longest of a batch's rows.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class ProgramTimes:
    """Seconds per call of each program, at the config's shapes (one chip's roofline time)."""
    answer_prefill: float
    answer_decode_step: float
    judge_call: float  # `logits`: one scoring forward of a judge batch; `sampled`: its prefill
    judge_decode_step: float  # `sampled` only (0 otherwise)
    reference_call: float
    dpo_step: float
    eval_prefill: float
    eval_decode_step: float


def expected_longest(lengths: Sequence[int] | None, rows: int, cap: int) -> float:
    """E[max of `rows` answer lengths drawn from `lengths`], each capped at `cap`; the cap itself
    when no lengths are given (every answer runs to max_new_tokens)."""
    if not lengths:
        return float(cap)
    values = np.minimum(np.asarray(lengths, np.int64), cap)
    # E[max] = sum_k P(max >= k) = sum_k (1 - F(k - 1) ** rows), F the empirical CDF
    below = np.array([(values < k).mean() for k in range(1, cap + 1)])
    return float(np.sum(1.0 - below ** rows))


def _batches(items: int, batch: int) -> int:
    return math.ceil(items / batch) if items > 0 else 0


def iteration_phases(config, times: ProgramTimes, *, members: int, answer_lengths: Sequence[int] | None = None,
                     eval_lengths: Sequence[int] | None = None,
                     eval_items: tuple[int, int] | None = None, share: float = 1.0) -> list[dict]:
    """[{phase, program, calls, seconds_per_call, seconds}] for one iteration of `config`.
    `eval_items`: the (dev, test) items evaluated, where the splits hold fewer than
    evaluation.dev / test ask for (the evaluation takes the first n).
    `share`: for one group of a mixed tribe, its share of the `members`: it writes that share of
    the answers, judgments and test answers (duelists and judges are drawn from all members, so
    in expectation), answers the dev items with its own members, and trains on every pair."""
    gen, judge, dpo, ev = config.generation, config.judge, config.dpo, config.evaluation
    duels = int(config.instructions_per_iteration)
    rows = []

    def add(phase, program, calls, per_call):
        rows.append(dict(phase=phase, program=program, calls=float(calls), seconds_per_call=float(per_call),
                         seconds=float(calls) * float(per_call)))

    answers = round(2 * duels * share)
    batches = _batches(answers, int(gen.batch_size))
    steps = expected_longest(answer_lengths, int(gen.batch_size), int(gen.max_new_tokens))
    add("answers", f"prefill ({batches} batches)", batches, times.answer_prefill)
    add("answers", f"decode step ({steps:.0f} per batch)", batches * steps, times.answer_decode_step)

    judgments = round(2 * duels * max(members - 2, 0) * share)
    judge_batches = _batches(judgments, int(judge.batch_size))
    if judge.mode == "logits":
        add("judging", f"score ({judgments} judgments)", judge_batches, times.judge_call)
    elif judge.mode == "sampled":
        judge_steps = float(judge.max_new_tokens)  # judgments run to their cap (no measured lengths)
        add("judging", f"prefill ({judgments} judgments)", judge_batches, times.judge_call)
        add("judging", f"decode step ({judge_steps:.0f} per batch)", judge_batches * judge_steps,
            times.judge_decode_step)

    pairs = duels * (1 + int(dpo.get("replay_iterations", 0)))  # upper bound: every duel a pair
    per_step = int(dpo.pairs_per_step)
    train_steps = _batches(pairs * int(dpo.epochs), per_step)
    add("reference log-probs", f"reference ({train_steps} + {_batches(pairs, per_step)} batches)",
        train_steps + _batches(pairs, per_step), times.reference_call)
    add("DPO", f"train step ({pairs} pairs x {int(dpo.epochs)} epochs)", train_steps, times.dpo_step)

    if ev.enabled:
        dev_items, test_items = eval_items or (int(ev.dev), int(ev.test))
        test_answers = test_items * (members if ev.get("test_all_members", False) else 1)
        eval_answers = round(share * (members * dev_items + test_answers))
        eval_batches = _batches(eval_answers, int(ev.batch_size))
        eval_steps = expected_longest(eval_lengths, int(ev.batch_size), int(ev.max_new_tokens))
        add("evaluation", f"prefill ({eval_answers} answers)", eval_batches, times.eval_prefill)
        add("evaluation", f"decode step ({eval_steps:.0f} per batch)", eval_batches * eval_steps,
            times.eval_decode_step)
    return rows


def phase_totals(rows: Sequence[dict]) -> dict[str, float]:
    """Seconds per phase, in the order the phases run."""
    totals: dict[str, float] = {}
    for r in rows:
        totals[r["phase"]] = totals.get(r["phase"], 0.0) + r["seconds"]
    return totals


def format_iteration(rows: Sequence[dict], header: str = "") -> str:
    """The per-program table, then each phase's share and the total."""
    lines = [header] if header else []
    lines.append(f"{'phase':<20} {'program':<44} {'calls':>10} {'s/call':>10} {'seconds':>10}")
    for r in rows:
        lines.append(f"{r['phase']:<20} {r['program']:<44} {r['calls']:>10.0f} {r['seconds_per_call']:>10.3g} "
                     f"{r['seconds']:>10.4g}")
    totals = phase_totals(rows)
    total = sum(totals.values())
    lines.append("")
    for phase, seconds in totals.items():
        lines.append(f"{phase:<20} {seconds:>10.4g} s  {100 * seconds / total if total else 0:5.1f}%")
    lines.append(f"{'one iteration':<20} {total:>10.4g} s  ({total / 60:.3g} min)")
    return "\n".join(lines)
