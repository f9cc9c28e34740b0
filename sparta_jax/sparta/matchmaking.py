"""Match-making (docs/algorithm.md §2.1): who fights whom on which instruction.

Reputations are the frozen start-of-iteration values (end of the previous iteration), so a
whole iteration's duels are assembled up front. Deterministic from a seed (or a
numpy.random.Generator); the draws per instruction are, in order: the block's leader
permutation (once per block), u ~ U[0, 1), then one integer for the opponent.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping, Optional, Sequence, Union

import numpy as np

DEFAULT_ALPHA = 0.6  # released script (code default 0.2)
DEFAULT_K = 5  # released script (code default 3)

SeedOrRng = Union[int, np.random.Generator, None]


@dataclasses.dataclass(frozen=True)
class Matchup:
    """One duel to be: instruction `index`, models [leader, opponent] (pair order)."""

    index: int
    leader: str
    opponent: str

    @property
    def models(self) -> tuple:
        return (self.leader, self.opponent)


def as_rng(seed: SeedOrRng) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


def assign_leaders(num_instructions: int, num_models: int, rng: SeedOrRng) -> list:
    """Leader index per instruction: each full block of `num_models` instructions is a
    random permutation of the models; a final partial block of r instructions takes the
    first r of a fresh permutation (uniform leaders, none twice within the block)."""
    if num_models < 1:
        raise ValueError("need at least one model")
    if num_instructions < 0:
        raise ValueError("num_instructions must be >= 0")
    rng = as_rng(rng)
    leaders = []
    for start in range(0, num_instructions, num_models):
        perm = rng.permutation(num_models)
        leaders.extend(int(i) for i in perm[: min(num_models, num_instructions - start)])
    return leaders


def closest_opponents(leader: int, reputations: Sequence[float], k: int) -> list:
    """The k other models closest in reputation to `leader` (|R_j - R_i| ascending; a stable
    sort, so ties keep tribe order). Fewer when the tribe has fewer than k other models."""
    r_i = reputations[leader]
    others = [j for j in range(len(reputations)) if j != leader]
    others.sort(key=lambda j: abs(reputations[j] - r_i))  # list.sort is stable
    return others[:k]


def pick_opponent(leader: int, reputations: Sequence[float], alpha: float, k: int, rng: np.random.Generator) -> int:
    """With probability alpha a uniformly random other model; otherwise uniform among the
    k closest in reputation."""
    m = len(reputations)
    if m < 2:
        raise ValueError("a duel needs at least two models")
    if rng.random() < alpha:
        others = [j for j in range(m) if j != leader]
        return others[int(rng.integers(len(others)))]
    pool = closest_opponents(leader, reputations, k)
    return pool[int(rng.integers(len(pool)))]


def make_matchups(
    tribe: Sequence[str],
    num_instructions: int,
    reputations: Optional[Union[Mapping[str, float], Sequence[float]]] = None,
    *,
    alpha: float = DEFAULT_ALPHA,
    k: int = DEFAULT_K,
    seed: SeedOrRng = 0,
) -> list:
    """One Matchup per instruction 0..num_instructions-1 (docs/algorithm.md §2.1).

    `reputations`: the frozen start-of-iteration R, by name (mapping) or in tribe order
    (sequence); None means the fair start (all equal).
    """
    names = list(tribe)
    if len(set(names)) != len(names):
        raise ValueError("tribe names must be unique")
    if len(names) < 2:
        raise ValueError("a tribe needs at least two models")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if reputations is None:
        r = [0.0] * len(names)
    elif isinstance(reputations, Mapping):
        missing = [n for n in names if n not in reputations]
        if missing:
            raise ValueError(f"no reputation for {missing}")
        r = [float(reputations[n]) for n in names]
    else:
        r = [float(x) for x in reputations]
        if len(r) != len(names):
            raise ValueError("reputations must have one entry per tribe member")
    rng = as_rng(seed)
    leaders = assign_leaders(num_instructions, len(names), rng)
    out = []
    for index, leader in enumerate(leaders):
        opponent = pick_opponent(leader, r, alpha, k, rng)
        out.append(Matchup(index, names[leader], names[opponent]))
    return out


def opponent_probabilities(leader: int, reputations: Sequence[float], alpha: float, k: int) -> np.ndarray:
    """Exact P(opponent = j | leader) under make_matchups' rule (for tests and reports)."""
    m = len(reputations)
    p = np.zeros(m)
    for j in range(m):
        if j != leader:
            p[j] += alpha / (m - 1)
    pool = closest_opponents(leader, reputations, k)
    for j in pool:
        p[j] += (1.0 - alpha) / len(pool)
    return p


__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_K",
    "Matchup",
    "as_rng",
    "assign_leaders",
    "closest_opponents",
    "pick_opponent",
    "make_matchups",
    "opponent_probabilities",
]
