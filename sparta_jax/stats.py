"""Small statistics for judge audits and demonstrations: an exact paired test and a bootstrap.

Pure NumPy / SciPy-free: the binomial tail is summed exactly (in log space for large n).
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np


def binomial_tail(k: int, n: int) -> float:
    """P(X <= k) for X ~ Binomial(n, 1/2)."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    logs = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2.0) for i in range(k + 1)]
    top = max(logs)
    return float(min(1.0, math.exp(top) * sum(math.exp(x - top) for x in logs)))


def mcnemar_exact(before: Sequence[int], after: Sequence[int]) -> dict:
    """McNemar's exact test on paired 0/1 outcomes of the same items (two-sided): the sign test
    on them. b ("lost"): items right before and wrong after; c ("gained"): the reverse. Under no
    change b ~ Binomial(b + c, 1/2); p = min(1, 2 P(X <= min(b, c)))."""
    x, y = np.asarray(before, np.int64), np.asarray(after, np.int64)
    if not np.isin(x, (0, 1)).all() or not np.isin(y, (0, 1)).all():
        raise ValueError("outcomes must be 0 or 1")
    t = sign_test(x, y)
    return {"n": t["n"], "right_before": int(x.sum()), "right_after": int(y.sum()), "lost": t["down"],
            "gained": t["up"], "p_value": t["p_value"]}


def sign_test(before: Sequence[float], after: Sequence[float]) -> dict:
    """Exact two-sided sign test on paired values of the same items: under no change an item that
    moves is as likely to go up as down. On 0/1 outcomes it is McNemar's exact test; on a
    member-mean per item (0, 1/4, ..., 1) it counts the items whose mean rose or fell."""
    x, y = np.asarray(before, np.float64), np.asarray(after, np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"paired outcomes need equal 1-D shapes, got {x.shape} and {y.shape}")
    down, up = int(np.sum(y < x)), int(np.sum(y > x))
    p = 1.0 if up + down == 0 else min(1.0, 2.0 * binomial_tail(min(up, down), up + down))
    return {"n": int(x.size), "down": down, "up": up, "p_value": p}


def bootstrap_interval(statistic: Callable[[np.ndarray], float | None], n: int, *, seed: int = 0,
                       resamples: int = 2000, level: float = 0.95) -> list[float] | None:
    """Percentile bootstrap interval of statistic(indices) over n units resampled with replacement.

    Resamples where the statistic is undefined (None) are skipped; None when all are."""
    if n == 0:
        return None
    rng = np.random.default_rng(seed)
    values = [statistic(rng.integers(0, n, size=n)) for _ in range(resamples)]
    values = np.asarray([v for v in values if v is not None], np.float64)
    if not values.size:
        return None
    tail = (1.0 - level) / 2 * 100
    return [float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))]


def pearson_r(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson's correlation of paired values; nan with fewer than 3 pairs or a constant side."""
    a, b = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if a.shape != b.shape or a.size < 3:
        return float("nan")
    a, b = a - a.mean(), b - b.mean()
    denominator = math.sqrt(float(np.sum(a * a) * np.sum(b * b)))
    return float(np.sum(a * b) / denominator) if denominator > 0 else float("nan")
