"""Rating an iteration's duel log: reputations (docs/algorithm.md §2.4) with the scheme's weights (§2.5),
then preferences with the end-of-iteration reputations. Used by the main loop (one
iteration at a time, through TribeRater) and by the replay CLI (`replay`)."""
from __future__ import annotations

import dataclasses
from typing import Iterable, Mapping, Optional, Sequence

from sparta_jax.sparta.duel_log import DuelRecord
from sparta_jax.sparta.judging import check_mode, effective_judgements
from sparta_jax.sparta.preferences import make_preferences
from sparta_jax.sparta.reputation import (
    DEFAULT_CONSTANTS,
    CompiledDuel,
    ReputationConstants,
    TribeReputation,
    rate_compiled,
)
from sparta_jax.sparta.weighting import check_scheme, judges_weighted, scheme_c, scheme_weights


def compile_duel(record: DuelRecord, index_of: Mapping[str, int], mode: str) -> CompiledDuel:
    """A record -> the fast loop's tuple, after the unparseable rule of `mode`."""
    judged = effective_judgements(record.judge_scores(), mode)
    try:
        a, b = index_of[record.models[0]], index_of[record.models[1]]
        js = tuple(index_of[n] for n in judged)
    except KeyError as e:
        raise ValueError(f"duel {record.index} of iteration {record.iteration}: unknown model {e.args[0]!r}") from None
    if a in js or b in js:
        raise ValueError(f"duel {record.index} of iteration {record.iteration}: a judge is also a duelist")
    return (
        a,
        b,
        js,
        tuple(float(judged[n][0]) for n in judged),
        tuple(float(judged[n][1]) for n in judged),
    )


@dataclasses.dataclass
class IterationResult:
    iteration: int
    start: TribeReputation
    end: TribeReputation
    weights: dict  # the w used inside Delta, {name: w}
    c: float
    history: list  # per duel: {"iteration", "index", "reputations": {name: {"R", "sigma"}}}
    preferences: list  # Preference objects


def rate_iteration(
    records: Sequence[DuelRecord],
    state: TribeReputation,
    *,
    iteration: int,
    weights: Optional[Mapping[str, float]] = None,
    c: float = DEFAULT_CONSTANTS.c,
    mode: str = "faithful",
    constants: ReputationConstants = DEFAULT_CONSTANTS,
    history: bool = True,
    judges_weighted: bool = True,
) -> IterationResult:
    """Rates one iteration's duels in the given order, then makes its preferences.

    `weights` {name: w} default to 1 (absent names: 1). `state` is not modified. Without
    `judges_weighted` (the `uniform` scheme) every judge counts 1, in Delta and in the
    preferences, instead of its reputation."""
    check_mode(mode)
    names = state.names
    index_of = {n: i for i, n in enumerate(names)}
    w = dict.fromkeys(names, 1.0)
    for name, value in (weights or {}).items():
        if name not in index_of:
            raise ValueError(f"weight for unknown model {name!r}")
        w[name] = float(value)
    compiled = [compile_duel(r, index_of, mode) for r in records]
    end, snaps = rate_compiled(state, compiled, [w[n] for n in names], c, constants, snapshots=history,
                               judges_weighted=judges_weighted)
    hist = []
    if history:
        for record, (r, s) in zip(records, snaps):
            hist.append(
                {
                    "iteration": record.iteration,
                    "index": record.index,
                    "reputations": {n: {"R": r[i], "sigma": s[i]} for i, n in enumerate(names)},
                }
            )
    prefs = make_preferences(records, end.reputations() if judges_weighted else dict.fromkeys(names, 1.0), mode)
    return IterationResult(iteration, state.copy(), end, w, float(c), hist, prefs)


class TribeRater:
    """Carries R and sigma across iterations and computes each iteration's weights from the
    end-of-iteration reputations (docs/algorithm.md §2.5). The main loop calls `rate` once per iteration.

    `start` is the state at the start of `first_iteration` (default: fair). When
    `first_iteration` > 1, `start` also counts as the end of iteration first_iteration-1;
    earlier ends can be given in `end_reputations` ({iteration: {name: R}}).
    `weights` overrides the scheme's weights in every iteration (c still follows `scheme`).
    """

    def __init__(
        self,
        names: Iterable[str],
        *,
        scheme: str = "static",
        mode: str = "faithful",
        constants: ReputationConstants = DEFAULT_CONSTANTS,
        start: Optional[TribeReputation] = None,
        first_iteration: int = 1,
        end_reputations: Optional[Mapping[int, Mapping[str, float]]] = None,
        weights: Optional[Mapping[str, float]] = None,
    ):
        self.names = tuple(names)
        self.scheme = check_scheme(scheme)
        self.mode = check_mode(mode)
        self.constants = constants
        if start is None:
            start = TribeReputation.fair(self.names, constants)
        elif tuple(start.names) != self.names:
            start = TribeReputation.from_dict(start.to_dict(), self.names)
        self.state = start.copy()
        self.end_reputations = dict(end_reputations or {})
        if first_iteration > 1:
            self.end_reputations.setdefault(first_iteration - 1, self.state.reputations())
        self.next_iteration = first_iteration
        self.weights_override = None if weights is None else dict(weights)

    def weights_for(self, iteration: int) -> dict:
        if self.weights_override is not None:
            w = dict.fromkeys(self.names, 1.0)
            w.update(self.weights_override)
            return w
        return scheme_weights(self.scheme, self.names, self.end_reputations, iteration)

    def rate(self, records: Sequence[DuelRecord], iteration: Optional[int] = None, history: bool = True) -> IterationResult:
        t = self.next_iteration if iteration is None else iteration
        if t != self.next_iteration:
            raise ValueError(f"expected iteration {self.next_iteration}, got {t}")
        result = rate_iteration(
            records,
            self.state,
            iteration=t,
            weights=self.weights_for(t),
            c=scheme_c(self.scheme, self.constants),
            mode=self.mode,
            constants=self.constants,
            history=history,
            judges_weighted=judges_weighted(self.scheme),
        )
        self.state = result.end
        self.end_reputations[t] = result.end.reputations()
        self.next_iteration = t + 1
        return result


@dataclasses.dataclass
class ReplayResult:
    reputations: TribeReputation
    iterations: list  # IterationResult per iteration

    @property
    def history(self) -> list:
        return [h for it in self.iterations for h in it.history]

    @property
    def preferences(self) -> list:
        return [p for it in self.iterations for p in it.preferences]

    def to_json(self) -> dict:
        """The replay CLI's OUT.json."""
        return {
            "reputations": self.reputations.to_dict(),
            "history": self.history,
            "preferences": [p.to_json() for p in self.preferences],
        }


def group_iterations(records: Iterable[DuelRecord]) -> list:
    """[(iteration, records sorted by index)] in iteration order; iterations must be
    consecutive and (iteration, index) unique."""
    groups = {}
    for r in records:
        groups.setdefault(r.iteration, []).append(r)
    out = []
    previous = None
    for t in sorted(groups):
        if previous is not None and t != previous + 1:
            raise ValueError(f"the duel log jumps from iteration {previous} to {t}")
        rs = sorted(groups[t], key=lambda r: r.index)
        for x, y in zip(rs, rs[1:]):
            if x.index == y.index:
                raise ValueError(f"duel {x.index} of iteration {t} appears twice")
        out.append((t, rs))
        previous = t
    return out


def replay(
    records: Iterable[DuelRecord],
    names: Iterable[str],
    *,
    start: Optional[TribeReputation] = None,
    scheme: str = "static",
    weights: Optional[Mapping[str, float]] = None,
    mode: str = "faithful",
    constants: ReputationConstants = DEFAULT_CONSTANTS,
    end_reputations: Optional[Mapping[int, Mapping[str, float]]] = None,
) -> ReplayResult:
    """Replays a duel log of one or more consecutive iterations (duels in index order; R and
    sigma carry over; n, histories and scheme weights are per iteration)."""
    names = tuple(names)
    groups = group_iterations(records)
    first = groups[0][0] if groups else 1
    rater = TribeRater(
        names,
        scheme=scheme,
        mode=mode,
        constants=constants,
        start=start,
        first_iteration=first,
        end_reputations=end_reputations,
        weights=weights,
    )
    results = [rater.rate(rs, t) for t, rs in groups]
    return ReplayResult(rater.state, results)


__all__ = [
    "compile_duel",
    "IterationResult",
    "rate_iteration",
    "TribeRater",
    "ReplayResult",
    "group_iterations",
    "replay",
]
