"""Weighting schemes (docs/algorithm.md §2.5): the per-model w inside Delta of the reputation update.

Pure functions of the end-of-iteration reputations. `end_reputations` maps an iteration
number u (1-based) to {name: R at the end of iteration u}; a sequence is read as
iterations 1, 2, ... in order. Ties for "lowest" go to the model earlier in tribe order.
"""
from __future__ import annotations

from typing import Mapping, Sequence, Union

from sparta_jax.sparta.reputation import DEFAULT_CONSTANTS, ReputationConstants

SCHEMES = ("normal", "static", "dynamic", "uniform")
# `uniform` is the paper's ablation without reputation weighting: every judge counts 1 (inside
# Delta and in the preferences) instead of its R, and w = 1; reputations still move (match-making
# reads them). `judges_weighted(scheme)` tells the rating code which.
STATIC_FREEZE_ITERATION = 7  # from iteration 8 on, the static weights of iteration 7 hold
WEIGHT_STEP = 0.1  # the k-th weighted model (from 0) gets k * 0.1

EndReputations = Union[Mapping[int, Mapping[str, float]], Sequence[Mapping[str, float]]]


def check_scheme(scheme: str) -> str:
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
    return scheme


def _by_iteration(end_reputations: EndReputations) -> Mapping[int, Mapping[str, float]]:
    if isinstance(end_reputations, Mapping):
        return end_reputations
    return {u + 1: r for u, r in enumerate(end_reputations)}


def _end_of(table: Mapping[int, Mapping[str, float]], u: int, names: Sequence[str], scheme: str, t: int):
    if u not in table:
        raise ValueError(
            f"{scheme} weights for iteration {t} need the end-of-iteration reputations of iteration {u}"
        )
    r = table[u]
    missing = [n for n in names if n not in r]
    if missing:
        raise ValueError(f"end-of-iteration-{u} reputations lack {missing}")
    return r


def _step(rank: int) -> float:
    return rank * WEIGHT_STEP


def normal_weights(names: Sequence[str]) -> dict:
    """w = 1 for every model."""
    return {n: 1.0 for n in names}


def static_weights(names: Sequence[str], end_reputations: EndReputations, iteration: int) -> dict:
    """`static`: at iteration t, for u = 2..min(t, 7), the lowest-R model at the end of
    iteration u-1 not weighted yet gets w = 0.0, the next 0.1, 0.2, ...; others w = 1.
    Once every model is weighted, later u add nothing."""
    if iteration < 1:
        raise ValueError("iterations count from 1")
    table = _by_iteration(end_reputations)
    w = normal_weights(names)
    taken = []
    for u in range(2, min(iteration, STATIC_FREEZE_ITERATION) + 1):
        r = _end_of(table, u - 1, names, "static", iteration)
        candidates = [n for n in names if n not in taken]
        if not candidates:
            break
        lowest = min(candidates, key=lambda n: r[n])  # min keeps the first of equals
        w[lowest] = _step(len(taken))
        taken.append(lowest)
    return w


def dynamic_weights(names: Sequence[str], end_reputations: EndReputations, iteration: int) -> dict:
    """`dynamic`: at iteration t >= 2, the t-1 lowest-R models at the end of iteration t-1
    get w = 0.0, 0.1, 0.2, ... (lowest first); others w = 1. Iteration 1: w = 1."""
    if iteration < 1:
        raise ValueError("iterations count from 1")
    w = normal_weights(names)
    if iteration == 1:
        return w
    r = _end_of(_by_iteration(end_reputations), iteration - 1, names, "dynamic", iteration)
    order = sorted(names, key=lambda n: r[n])  # stable: tribe order among equals
    for rank, name in enumerate(order[: iteration - 1]):
        w[name] = _step(rank)
    return w


def scheme_weights(scheme: str, names: Sequence[str], end_reputations: EndReputations, iteration: int) -> dict:
    """The w of `scheme` at `iteration`, {name: w}."""
    check_scheme(scheme)
    if scheme in ("normal", "uniform"):
        return normal_weights(names)
    if scheme == "static":
        return static_weights(names, end_reputations, iteration)
    return dynamic_weights(names, end_reputations, iteration)


def needed_iterations(scheme: str, iteration: int) -> list:
    """The iterations u whose end-of-iteration reputations `scheme` needs at `iteration`."""
    check_scheme(scheme)
    if scheme == "static":
        return list(range(1, min(iteration, STATIC_FREEZE_ITERATION)))
    if scheme == "dynamic":
        return [iteration - 1] if iteration >= 2 else []
    return []


def judges_weighted(scheme: str) -> bool:
    """Whether judges count with their reputation R (every scheme of the paper) or 1 (`uniform`)."""
    return check_scheme(scheme) != "uniform"


def scheme_c(scheme: str, constants: ReputationConstants = DEFAULT_CONSTANTS) -> float:
    """The divisor c of the update: c_dynamic for `dynamic`, c otherwise."""
    check_scheme(scheme)
    return constants.c_dynamic if scheme == "dynamic" else constants.c


__all__ = [
    "SCHEMES",
    "STATIC_FREEZE_ITERATION",
    "check_scheme",
    "normal_weights",
    "static_weights",
    "dynamic_weights",
    "scheme_weights",
    "needed_iterations",
    "judges_weighted",
    "scheme_c",
]
