"""Preference pairs (docs/algorithm.md §2.4): each duel scored again with the END-of-iteration
reputations as judge weights (w = 1 in every scheme)."""
from __future__ import annotations

import dataclasses
from typing import Iterable, Mapping, Optional, Sequence, Tuple

from sparta_jax.sparta.duel_log import DuelRecord
from sparta_jax.sparta.judging import effective_judgements


@dataclasses.dataclass(frozen=True)
class Preference:
    iteration: int
    index: int
    instruction: str
    chosen: str  # the chosen response text
    rejected: str
    chosen_model: str
    rejected_model: str
    margin: float  # |S_a - S_b| > 0
    weighted_scores: Tuple[float, float]  # (S_chosen, S_rejected)

    def to_json(self) -> dict:
        return {
            "iteration": self.iteration,
            "index": self.index,
            "instruction": self.instruction,
            "chosen": self.chosen,
            "rejected": self.rejected,
            "chosen_model": self.chosen_model,
            "rejected_model": self.rejected_model,
            "margin": self.margin,
            "weighted_scores": list(self.weighted_scores),
        }


def weighted_scores(
    judge_reputations: Sequence[float], scores_a: Sequence[float], scores_b: Sequence[float]
) -> Tuple[float, float]:
    """(S_a, S_b) with S = sum_j R_j s_j / sum_j R_j."""
    if not judge_reputations:
        raise ValueError("no judge")
    num_a = num_b = den = 0.0
    for r, x, y in zip(judge_reputations, scores_a, scores_b):
        num_a += r * x
        num_b += r * y
        den += r
    return num_a / den, num_b / den


def choose(s_a: float, s_b: float) -> Optional[int]:
    """0 (a chosen) when S_a > S_b, 1 (b chosen) when S_a < S_b, None on an exact tie."""
    if s_a == s_b:
        return None
    return 0 if s_a > s_b else 1


def duel_preference(record: DuelRecord, reputations: Mapping[str, float], mode: str) -> Optional[Preference]:
    """The preference pair of one duel, or None (exact tie, or no judge left in `fixed`)."""
    judged = effective_judgements(record.judge_scores(), mode)
    if not judged:
        return None
    names = list(judged)
    s_a, s_b = weighted_scores(
        [reputations[n] for n in names], [judged[n][0] for n in names], [judged[n][1] for n in names]
    )
    winner = choose(s_a, s_b)
    if winner is None:
        return None
    loser = 1 - winner
    scores = (s_a, s_b)
    return Preference(
        iteration=record.iteration,
        index=record.index,
        instruction=record.instruction,
        chosen=record.responses[winner],
        rejected=record.responses[loser],
        chosen_model=record.models[winner],
        rejected_model=record.models[loser],
        margin=abs(s_a - s_b),
        weighted_scores=(scores[winner], scores[loser]),
    )


def make_preferences(records: Iterable[DuelRecord], reputations: Mapping[str, float], mode: str) -> list:
    """Preference pairs of an iteration's duels, in duel order, ties and empty duels dropped.
    `reputations` are the end-of-iteration R ({name: R})."""
    out = []
    for record in records:
        pref = duel_preference(record, reputations, mode)
        if pref is not None:
            out.append(pref)
    return out


def separated(rows: Iterable[dict], min_margin: float) -> list:
    """The preference records (`Preference.to_json()`, as preferences.jsonl holds them) whose judges
    separated the answers by at least `min_margin` (weighted score points). Not in the released
    code (docs/algorithm.md §2.4 drops exact ties only, `min_margin=0`): a gap filter as self-rewarding setups
    use, so near-ties, often two wrong answers, are not trained."""
    return [r for r in rows if r["margin"] >= min_margin]


__all__ = ["Preference", "weighted_scores", "choose", "duel_preference", "make_preferences", "separated"]
