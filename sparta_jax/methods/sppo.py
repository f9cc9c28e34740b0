"""SPPO (Wu et al., 2024): K answers per instruction; a preference oracle gives pairwise win
probabilities P(y_i > y_j); each answer's win rate against the policy is its mean over all K
answers, itself included (P(y_i > y_i) = 1/2, as the authors' compute_prob does); the loss
regresses each response's log-ratio onto (win rate - 1/2) / beta and averages the two squared
terms as SPPO's own trainer does (dpo_loss "sppo"), on the pair (highest win rate, lowest win
rate) as the SPPO code builds its data.

The oracle is the model itself through the Sparta judge prompt (Wu et al. use PairRM; name a
model folder in `methods.sppo.oracle` to use one), its scores turned into Bradley-Terry
probabilities P(y_i > y_j) = sigmoid((s_i - s_j) / temperature). Wu et al.'s defaults: K = 5,
beta = 1/eta = 1e-3.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from sparta_jax.methods.common import json_scores, sample_and_score

DEFAULTS = dict(samples=5, beta=1e-3, temperature=1.0, oracle="self")


def jobs_per_instruction(cfg) -> int:
    return 2 * cfg.samples  # answers, then their scores


def win_probabilities(scores: Sequence[float], temperature: float) -> np.ndarray:
    """[K, K] P(y_i beats y_j) from scores (Bradley-Terry); nan rows/columns for unparsed scores."""
    s = np.asarray(scores, np.float64)
    return 1.0 / (1.0 + np.exp(-(s[:, None] - s[None, :]) / temperature))


def win_rates(scores: Sequence[float], temperature: float) -> np.ndarray:
    """Each answer's mean win probability against every parsed answer, itself included at 1/2
    (nan if unparsed, or when it is the only parsed answer: nothing to compare it with)."""
    p = win_probabilities(scores, temperature)
    valid = ~np.isnan(np.asarray(scores, np.float64))
    out = np.full(len(scores), np.nan)
    if valid.sum() >= 2:
        out[valid] = p[np.ix_(valid, valid)].mean(axis=1)
    return out


def pair_from_scores(instruction: str, answers: Sequence[str], scores: Sequence[float], temperature: float):
    """The record (highest win rate chosen, lowest rejected) with both win rates; None on ties."""
    rates = win_rates(scores, temperature)
    valid = [i for i in range(len(answers)) if not np.isnan(rates[i])]
    if len(valid) < 2:
        return None
    hi = max(valid, key=lambda i: rates[i])
    lo = min(valid, key=lambda i: rates[i])
    if rates[hi] == rates[lo] or answers[hi] == answers[lo]:
        return None
    return {"instruction": instruction, "chosen": answers[hi], "rejected": answers[lo],
            "chosen_win_rate": float(rates[hi]), "rejected_win_rate": float(rates[lo]), "kind": "answer"}


def make_pairs(config, tribe, instructions: Sequence[dict], *, rng, judge=None, progress=lambda n: None):
    cfg = config.methods.sppo
    texts, answers, scores = sample_and_score(config, tribe, instructions, cfg.samples, rng=rng, judge=judge,
                                              progress=progress)
    records = [p for p in (pair_from_scores(t, a, s, cfg.temperature) for t, a, s in zip(texts, answers, scores)) if p]
    rows = [{"instruction": t, "answers": a, "scores": json_scores(s),
             "win_rates": json_scores(win_rates(s, cfg.temperature))} for t, a, s in zip(texts, answers, scores)]
    return records, rows, {"unparsed_scores": int(sum(np.isnan(x) for row in scores for x in row))}
