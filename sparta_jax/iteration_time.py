"""The predicted time of one Sparta iteration, phase by phase, from the time of each compiled
program and the config's own counts. Pure arithmetic: `sparta_jax.aot --iteration` feeds it
roofline times of programs compiled for a TPU topology; tests feed it made-up ones.

What one iteration runs (docs/algorithm.md §2; sparta_jax/train.py):

- answers: both duelists answer each of `instructions_per_iteration` instructions, in batches of
  `generation.batch_size` rows: a prefill per batch, then decode steps until the batch's longest
  answer ends (a static batch decodes every row until then); with `sampler.refill_rows` > 0,
  the rows take waiting prompts as answers end: the steps and refill prefills of that schedule
  (`queue_schedule`);
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
    # With sampler.refill_rows > 0: one prefill of that many prompts into finished rows.
    refill_prefill: float = 0.0
    eval_refill_prefill: float = 0.0


def expected_longest(lengths: Sequence[int] | None, rows: int, cap: int) -> float:
    """E[max of `rows` answer lengths drawn from `lengths`], each capped at `cap`; the cap itself
    when no lengths are given (every answer runs to max_new_tokens)."""
    if not lengths:
        return float(cap)
    values = np.minimum(np.asarray(lengths, np.int64), cap)
    # E[max] = sum_k P(max >= k) = sum_k (1 - F(k - 1) ** rows), F the empirical CDF
    below = np.array([(values < k).mean() for k in range(1, cap + 1)])
    return float(np.sum(1.0 - below ** rows))


def queue_schedule(lengths: Sequence[int], rows: int, refill_rows: int) -> tuple[int, int]:
    """(decode steps, refills) of the sampler's refilled rows (`Sampler.generate(rows=...)` with
    SamplerConfig.refill_rows) over answers of these lengths, in queue order: the jitted loop's own
    schedule, step for step. Each step first refills while at least min(refill_rows, waiting)
    rows are free (each refill one prefill of up to refill_rows prompts), then decodes one token
    per live row."""
    lengths = np.asarray(lengths, np.int64)
    n, refill = len(lengths), min(int(refill_rows), int(rows))
    if refill < 1:
        raise ValueError("refill_rows must be >= 1")
    left = np.zeros(rows, np.int64)  # tokens each row still has to write; 0: free
    first = min(n, rows)
    left[:first] = lengths[:first]
    next_prompt, steps, refills = first, 0, 0
    while (left > 0).any() or next_prompt < n:
        while next_prompt < n and (free := np.flatnonzero(left == 0)).size >= min(refill, n - next_prompt):
            take = free[: min(refill, n - next_prompt)]
            left[take] = lengths[next_prompt: next_prompt + len(take)]
            next_prompt += len(take)
            refills += 1
        left = np.maximum(left - 1, 0)
        steps += 1
    return steps, refills


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

    refill = int(config.sampler.get("refill_rows", 0))
    queue_batches = int(config.sampler.get("queue_batches", 8))

    def generation(phase, answers, section, lengths, prefill, decode_step, refill_prefill):
        batch, cap = int(section.batch_size), int(section.max_new_tokens)
        if not refill:
            batches = _batches(answers, batch)
            steps = expected_longest(lengths, batch, cap)
            add(phase, f"prefill ({answers} answers, {batches} batches)", batches, prefill)
            add(phase, f"decode step ({steps:.0f} per batch)", batches * steps, decode_step)
            return
        # Refilled rows: the loop's own schedule over the lengths in turn (all at the cap without
        # measured ones), one call per queue_batches x batch answers, as inference makes them.
        sizes = np.minimum(np.resize(np.asarray(lengths or [cap], np.int64), answers), cap)
        per_call = batch * queue_batches
        calls = [queue_schedule(sizes[i: i + per_call], batch, refill) for i in range(0, answers, per_call)]
        steps, refills = sum(c[0] for c in calls), sum(c[1] for c in calls)
        add(phase, f"prefill ({answers} answers, {len(calls)} calls' first rows)", len(calls), prefill)
        add(phase, f"refill prefill ({refill} rows)", refills, refill_prefill)
        add(phase, f"decode step ({steps} in {len(calls)} calls)", steps, decode_step)

    generation("answers", round(2 * duels * share), gen, answer_lengths, times.answer_prefill,
               times.answer_decode_step, times.refill_prefill)

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
        generation("evaluation", eval_answers, ev, eval_lengths, times.eval_prefill, times.eval_decode_step,
                   times.eval_refill_prefill)
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
