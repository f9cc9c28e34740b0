"""How far the judges' reputation weights can move a duel's preference.

Reputation reaches the preferences only through the judge weights v_j in
S = sum_j v_j s_j / sum_j v_j (docs/algorithm.md §2.4). Against equal weights (the `uniform`
scheme's) it can change a duel's pair in two ways: choose the other answer, or move the margin
|S_a - S_b| across `dpo.min_margin`, so that the pair is trained under one weighting and not the
other. Choosing the other answer needs a judge that disagrees with the others.

For one duel, with d_j = s_{j,a} - s_{j,b} over its counted judges, P the sum of the d_j on the
side of the equal-weights verdict and N the sum on the other side:

- the equal-weights verdict is sign(P + N) (no pair on an exact tie);
- weights between 1 and rho can turn it only when rho > P / |N| (every dissenting judge at rho,
  every other at 1, is the strongest turn such weights allow). `flip_ratio` is that P / |N|:
  1 for a tie that a dissent can break, infinite when no judge dissents;
- the run's own reach is max R / min R over the duel's judges (`weight_ratio`).

At the fair start every R is 100, and R moves by at most a few points a duel: reputations 12
points apart (94 and 106) weigh 1.13 to 1. Pure functions on the duel log's records.
"""
from __future__ import annotations

import math
from typing import Iterable, Mapping

from sparta_jax.sparta.duel_log import DuelRecord
from sparta_jax.sparta.judging import effective_judgements
from sparta_jax.sparta.preferences import choose, weighted_scores

# Weight ratios at which the table counts the duels a weighting could turn.
RATIO_STEPS = (1.1, 1.5, 2.0, 4.0)


def flip_ratio(differences: Iterable[float]) -> float:
    """The smallest max/min weight ratio that turns the equal-weights verdict of judges whose
    score differences (s_a - s_b) are `differences`; inf when no judge dissents."""
    d = [float(x) for x in differences]
    pos = sum(x for x in d if x > 0)
    neg = -sum(x for x in d if x < 0)
    if pos == 0.0 or neg == 0.0:  # every judge on one side (or indifferent): no weights turn it
        return math.inf
    return max(pos, neg) / min(pos, neg)


def duel_reach(record: DuelRecord, reputations: Mapping[str, float], mode: str, min_margin: float) -> dict | None:
    """One duel under equal weights and under `reputations` (end-of-iteration R): the winner
    (0 = a, 1 = b, None on a tie) and margin of each, whether the pair is trained under each at
    `min_margin`, the flip ratio and the weight ratio. None when no judge counts."""
    judged = effective_judgements(record.judge_scores(), mode)
    if not judged:
        return None
    names = list(judged)
    a = [judged[n][0] for n in names]
    b = [judged[n][1] for n in names]
    r = [float(reputations[n]) for n in names]
    verdicts = {}
    for label, v in (("equal", [1.0] * len(names)), ("reputation", r)):
        s_a, s_b = weighted_scores(v, a, b)
        winner = choose(s_a, s_b)
        verdicts[label] = {"winner": winner, "margin": abs(s_a - s_b),
                           "trained": winner is not None and abs(s_a - s_b) >= min_margin}
    return {"judges": len(names), "flip_ratio": flip_ratio(x - y for x, y in zip(a, b)),
            "weight_ratio": max(r) / min(r), **verdicts}


def iteration_reach(records: Iterable[DuelRecord], reputations: Mapping[str, float], mode: str,
                    min_margin: float) -> dict:
    """An iteration's duels summed: how many have a dissenting judge, how many a weighting with
    ratio up to each of RATIO_STEPS could turn, the largest weight ratio the run's reputations
    gave a duel, and what those reputations changed against equal weights: winners turned, pairs
    trained only under one weighting."""
    rows = [r for r in (duel_reach(d, reputations, mode, min_margin) for d in records) if r is not None]
    turned = [r for r in rows if r["equal"]["winner"] != r["reputation"]["winner"]]
    return {
        "duels": len(rows),
        "dissent": sum(math.isfinite(r["flip_ratio"]) for r in rows),
        "turnable_at": {str(k): sum(r["flip_ratio"] < k for r in rows) for k in RATIO_STEPS},
        "max_weight_ratio": max((r["weight_ratio"] for r in rows), default=1.0),
        "winners_turned": len(turned),
        "trained_only_equal": sum(r["equal"]["trained"] and not r["reputation"]["trained"] for r in rows),
        "trained_only_reputation": sum(r["reputation"]["trained"] and not r["equal"]["trained"] for r in rows),
    }


__all__ = ["RATIO_STEPS", "flip_ratio", "duel_reach", "iteration_reach"]
