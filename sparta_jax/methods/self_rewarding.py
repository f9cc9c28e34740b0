"""Self-Rewarding (Yuan et al., 2024): the model answers each instruction `samples` times,
scores each answer itself with the Sparta judge prompt, and trains on (highest, lowest).

Yuan et al. sample 4 answers and average 3 judgments per answer; here one judgment per answer
in the configured judge mode (`logits` scores are an expectation already).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from sparta_jax.methods.common import best_and_worst, json_scores, sample_and_score

DEFAULTS = dict(samples=4)


def jobs_per_instruction(cfg) -> int:
    return 2 * cfg.samples  # answers, then their scores


def pair_from_scores(instruction: str, answers: Sequence[str], scores: Sequence[float]) -> dict | None:
    """The preference record of one instruction: its best-scored answer over its worst; None on
    ties (all equal, or fewer than two parseable scores) and on identical texts."""
    picked = best_and_worst(scores)
    if picked is None or answers[picked[0]] == answers[picked[1]]:
        return None
    hi, lo = picked
    return {"instruction": instruction, "chosen": answers[hi], "rejected": answers[lo],
            "chosen_score": scores[hi], "rejected_score": scores[lo], "kind": "answer"}


def make_pairs(config, tribe, instructions: Sequence[dict], *, rng, judge=None, progress=lambda n: None):
    """(preference records, candidate rows for candidates.jsonl)."""
    texts, answers, scores = sample_and_score(config, tribe, instructions, config.methods.self_rewarding.samples,
                                              rng=rng, judge=judge, progress=progress)
    records = [p for p in (pair_from_scores(t, a, s) for t, a, s in zip(texts, answers, scores)) if p]
    rows = [{"instruction": t, "answers": a, "scores": json_scores(s)} for t, a, s in zip(texts, answers, scores)]
    return records, rows, {"unparsed_scores": int(sum(np.isnan(x) for row in scores for x in row))}
