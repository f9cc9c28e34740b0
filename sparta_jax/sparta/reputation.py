"""Reputation (docs/algorithm.md §2.4): the per-duel update of R and sigma.

The formulas are given twice: as small pure functions (readable, used by tests and
reports) and fused in `rate_compiled`, a tight pure-Python loop over precompiled duels
(about 2-3 microseconds per duel with 8 judges; see benchmarks/reputation.py).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Iterable, Mapping, Optional, Sequence, Tuple

_INV_SQRT2 = 1.0 / math.sqrt(2.0)


@dataclasses.dataclass(frozen=True)
class ReputationConstants:
    """Every constant of docs/algorithm.md §2.4 / §2.5; the defaults are the released code's values."""

    K0: float = 10.0  # initial learning rate
    K_min: float = 5.0  # learning-rate floor
    gamma: float = 0.9  # decay base
    T: float = 10.0  # decay period in duels
    eps: float = 0.01  # floor of |Phi(z) - Phi(-z)|
    c: float = 20.0  # divisor (normal / static schemes)
    c_dynamic: float = 10.0  # divisor (dynamic scheme)
    R0: float = 100.0  # fair-start reputation
    sigma0: float = 0.5  # fair-start deviation
    R_floor: float = 10.0  # reputation clamp
    history: int = 10  # realised changes kept per model
    sigma_floor: float = 0.1  # deviation floor

    def __post_init__(self):
        if self.history < 2:
            raise ValueError("history must keep at least 2 changes")
        if self.T <= 0 or self.c <= 0 or self.c_dynamic <= 0:
            raise ValueError("T, c and c_dynamic must be positive")


DEFAULT_CONSTANTS = ReputationConstants()


# --------------------------------------------------------------------------------------
# The formulas, one by one
# --------------------------------------------------------------------------------------
def learning_rate(n: int, constants: ReputationConstants = DEFAULT_CONSTANTS) -> float:
    """K_n = max(K_min, K0 * gamma ** (n / T)); n counts duels in the iteration from 1."""
    return max(constants.K_min, constants.K0 * constants.gamma ** (n / constants.T))


def normal_cdf(z: float) -> float:
    """Phi(z), the standard normal CDF."""
    return 0.5 * (1.0 + math.erf(z * _INV_SQRT2))


def confidence(z: float, eps: float = DEFAULT_CONSTANTS.eps) -> float:
    """max(|Phi(z) - Phi(-z)|, eps). Note Phi(z) - Phi(-z) = erf(z / sqrt 2)."""
    return max(abs(math.erf(z * _INV_SQRT2)), eps)


def weighted_difference(
    judge_reputations: Sequence[float],
    scores_a: Sequence[float],
    scores_b: Sequence[float],
    w_a: float = 1.0,
    w_b: float = 1.0,
) -> float:
    """Delta = sum_j R_j (w_a s_ja - w_b s_jb) / sum_j R_j."""
    if not judge_reputations:
        raise ValueError("a duel needs at least one judge")
    num = 0.0
    den = 0.0
    for r, x, y in zip(judge_reputations, scores_a, scores_b):
        num += r * (w_a * x - w_b * y)
        den += r
    return num / den


def rating_change(
    r_self: float,
    r_other: float,
    sigma_self: float,
    sigma_other: float,
    signed_delta: float,
    k: float,
    c: float,
    eps: float = DEFAULT_CONSTANTS.eps,
) -> float:
    """delta_i = K (+-Delta) tanh(sigma_i) max(|Phi(z) - Phi(-z)|, eps) / c, before the clamp,
    with z = (R_i - R_o) / sqrt(sigma_i^2 + sigma_o^2)."""
    z = (r_self - r_other) / math.sqrt(sigma_self * sigma_self + sigma_other * sigma_other)
    return k * signed_delta * math.tanh(sigma_self) * confidence(z, eps) / c


def update_pair(
    r_a: float,
    r_b: float,
    sigma_a: float,
    sigma_b: float,
    delta: float,
    k: float,
    c: float,
    constants: ReputationConstants = DEFAULT_CONSTANTS,
) -> Tuple[float, float]:
    """New (R_a, R_b) after one duel: a first (+Delta), then b (-Delta) against a's NEW
    reputation; each clamped below at R_floor. Deviations are not touched here."""
    new_a = max(constants.R_floor, r_a + rating_change(r_a, r_b, sigma_a, sigma_b, delta, k, c, constants.eps))
    new_b = max(constants.R_floor, r_b + rating_change(r_b, new_a, sigma_b, sigma_a, -delta, k, c, constants.eps))
    return new_a, new_b


def deviation(changes: Sequence[float], current: float, constants: ReputationConstants = DEFAULT_CONSTANTS) -> float:
    """sigma from the realised-change history: max(std(last `history` changes, ddof=0),
    sigma_floor) when at least 2 are kept, else `current` unchanged."""
    kept = list(changes)[-constants.history:]
    if len(kept) < 2:
        return current
    mean = sum(kept) / len(kept)
    var = sum((x - mean) * (x - mean) for x in kept) / len(kept)
    return max(math.sqrt(var), constants.sigma_floor)


# --------------------------------------------------------------------------------------
# State
# --------------------------------------------------------------------------------------
@dataclasses.dataclass
class TribeReputation:
    """Reputation R and deviation sigma of every tribe member, in tribe order."""

    names: Tuple[str, ...]
    R: list
    sigma: list

    def __post_init__(self):
        self.names = tuple(self.names)
        self.R = [float(x) for x in self.R]
        self.sigma = [float(x) for x in self.sigma]
        if len(set(self.names)) != len(self.names):
            raise ValueError("tribe names must be unique")
        if not (len(self.R) == len(self.sigma) == len(self.names)):
            raise ValueError("R and sigma need one entry per tribe member")

    @classmethod
    def fair(cls, names: Iterable[str], constants: ReputationConstants = DEFAULT_CONSTANTS) -> "TribeReputation":
        names = tuple(names)
        return cls(names, [constants.R0] * len(names), [constants.sigma0] * len(names))

    @classmethod
    def from_dict(cls, table: Mapping[str, Mapping[str, float]], names: Optional[Iterable[str]] = None) -> "TribeReputation":
        """From {name: {"R": float, "sigma": float}}; `names` fixes the tribe order."""
        names = tuple(table) if names is None else tuple(names)
        missing = [n for n in names if n not in table]
        if missing:
            raise ValueError(f"no reputation for {', '.join(map(repr, missing))}")
        return cls(names, [table[n]["R"] for n in names], [table[n]["sigma"] for n in names])

    def to_dict(self) -> dict:
        return {n: {"R": r, "sigma": s} for n, r, s in zip(self.names, self.R, self.sigma)}

    def reputations(self) -> dict:
        """{name: R}."""
        return dict(zip(self.names, self.R))

    def index(self, name: str) -> int:
        return self.names.index(name)

    def copy(self) -> "TribeReputation":
        return TribeReputation(self.names, list(self.R), list(self.sigma))


# A duel ready for the fast loop: (a, b, judge indices, judge scores of a, of b), indices
# into the tribe. An empty judge tuple marks a duel that moves nothing (no judge counted).
CompiledDuel = Tuple[int, int, Tuple[int, ...], Tuple[float, ...], Tuple[float, ...]]


def rate_compiled(
    state: TribeReputation,
    duels: Sequence[CompiledDuel],
    weights: Sequence[float],
    c: float,
    constants: ReputationConstants = DEFAULT_CONSTANTS,
    snapshots: bool = False,
    judges_weighted: bool = True,
) -> Tuple[TribeReputation, list]:
    """Rates one iteration's duels in order (docs/algorithm.md §2.4) and returns (new state, snapshots).

    n and the change histories restart here (one call = one iteration); R and sigma carry
    over from `state` (not modified). `weights` are the per-model w of the scheme (index =
    tribe order). A duel with no judge still counts in n but changes nothing. With
    `snapshots`, the second result holds (R tuple, sigma tuple) after every duel. Judges count
    with their live R inside Delta, or 1 each when not `judges_weighted` (the `uniform` ablation).
    """
    R = list(state.R)
    S = list(state.sigma)
    w = [float(x) for x in weights]
    if len(w) != len(R):
        raise ValueError("weights need one entry per tribe member")
    erf, tanh, sqrt = math.erf, math.tanh, math.sqrt
    inv_sqrt2 = _INV_SQRT2
    K0, K_min, gamma, T = constants.K0, constants.K_min, constants.gamma, constants.T
    eps, floor, keep, sig_floor = constants.eps, constants.R_floor, constants.history, constants.sigma_floor
    c = float(c)
    hist = [[] for _ in R]
    snaps = []
    n = 0
    for a, b, js, xa, xb in duels:
        n += 1
        if not js:
            if snapshots:
                snaps.append((tuple(R), tuple(S)))
            continue
        wa = w[a]
        wb = w[b]
        num = 0.0
        den = 0.0
        for j, x, y in zip(js, xa, xb):
            r = R[j] if judges_weighted else 1.0
            num += r * (wa * x - wb * y)
            den += r
        d = num / den
        k = K0 * gamma ** (n / T)
        if k < K_min:
            k = K_min
        ra = R[a]
        rb = R[b]
        sa = S[a]
        sb = S[b]
        scale = inv_sqrt2 / sqrt(sa * sa + sb * sb)
        f = abs(erf((ra - rb) * scale))
        if f < eps:
            f = eps
        na = ra + k * d * tanh(sa) * f / c
        if na < floor:
            na = floor
        R[a] = na
        f = abs(erf((rb - na) * scale))
        if f < eps:
            f = eps
        nb = rb + k * (-d) * tanh(sb) * f / c
        if nb < floor:
            nb = floor
        R[b] = nb
        # Deviation of a, then b, from their realised-change histories.
        for i, change in ((a, na - ra), (b, nb - rb)):
            h = hist[i]
            h.append(change)
            if len(h) > keep:
                del h[0]
            size = len(h)
            if size >= 2:
                mean = sum(h) / size
                var = 0.0
                for x in h:
                    e = x - mean
                    var += e * e
                s = sqrt(var / size)
                S[i] = s if s > sig_floor else sig_floor
        if snapshots:
            snaps.append((tuple(R), tuple(S)))
    return TribeReputation(state.names, R, S), snaps


__all__ = [
    "ReputationConstants",
    "DEFAULT_CONSTANTS",
    "learning_rate",
    "normal_cdf",
    "confidence",
    "weighted_difference",
    "rating_change",
    "update_pair",
    "deviation",
    "TribeReputation",
    "CompiledDuel",
    "rate_compiled",
]
