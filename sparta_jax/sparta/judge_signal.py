"""How well the judges separate right answers from wrong ones, on a verifiable task.

Sparta has no reward model: its only training signal is the judges' scores. When the
instructions have reference answers, each duel where exactly one response is right is a test
of that signal. For each judge score pair (s_right, s_wrong):

- matched accuracy: 1 when s_right > s_wrong, 1/2 on a tie, 0 otherwise, averaged over the
  judge's parsed verdicts on such duels (the area under the ROC curve restricted to the pairs
  that share an instruction);
- pooled AUC: the Mann-Whitney AUC of all scores given to right responses against all scores
  given to wrong ones (ties count 1/2), over every duel, informative or not;
- preference accuracy: of the kept preference pairs with exactly one right response, the
  fraction whose "chosen" is the right one (the reputation-weighted verdict).

0.5 is chance for all three. With references from several tasks (the bundled `mixed`), the
same figures also come per task ("by_task"). Pure functions on the run's JSON records; no model.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from sparta_jax import evaluation


def _interval(wins: float, n: int) -> list[float]:
    """Wilson 95% interval; half-credit ties are rounded to the nearest whole count."""
    return list(evaluation.wilson_interval(int(round(wins)), n)) if n else [0.0, 1.0]


def _compare(right: float, wrong: float) -> float:
    return 1.0 if right > wrong else 0.5 if right == wrong else 0.0


def pooled_auc(right_scores: Sequence[float], wrong_scores: Sequence[float]) -> float | None:
    """P(score of a right response > score of a wrong one), ties 1/2 (Mann-Whitney U / n1 n2)."""
    if not right_scores or not wrong_scores:
        return None
    r = np.asarray(right_scores, np.float64)[:, None]
    w = np.asarray(wrong_scores, np.float64)[None, :]
    return float(np.mean((r > w) + 0.5 * (r == w)))


def judge_signal(duels: Sequence[Mapping], references: Mapping[str, Mapping],
                 preferences: Sequence[Mapping] = ()) -> dict | None:
    """Judge signal of one iteration.

    duels: duel-log rows (`duel_to_json`); references: {instruction text: record with "answer"
    and "evaluator"}; preferences: preference rows with "instruction", "chosen", "rejected".
    None when no duel's instruction has a reference.
    """
    def correct(instruction: str, response: str) -> bool | None:
        ref = references.get(instruction)
        if ref is None or ref.get("answer") is None or ref.get("evaluator") is None:
            return None
        return evaluation.score(response, ref["answer"], ref["evaluator"]) == 1.0

    per_judge: dict[str, list[float]] = {}
    right_scores, wrong_scores = [], []
    n_scored = n_informative = n_both_right = n_both_wrong = unparsed = 0
    for d in duels:
        ok = [correct(d["instruction"], r) for r in d["responses"]]
        if None in ok:
            continue
        n_scored += 1
        for judge, verdict in d["judges"].items():
            scores = verdict.get("scores")
            if scores is None or None in scores:
                unparsed += ok[0] != ok[1]
                continue
            for s, good in zip(scores, ok):
                (right_scores if good else wrong_scores).append(float(s))
            if ok[0] != ok[1]:
                right, wrong = (scores[0], scores[1]) if ok[0] else (scores[1], scores[0])
                per_judge.setdefault(judge, []).append(_compare(right, wrong))
        n_informative += ok[0] != ok[1]
        n_both_right += ok[0] and ok[1]
        n_both_wrong += not ok[0] and not ok[1]
    if not n_scored:
        return None

    def summary(values: list[float]) -> dict:
        n = len(values)
        return {"accuracy": float(np.mean(values)) if n else None, "n": n, "ci95": _interval(sum(values), n)}

    everyone = [v for vs in per_judge.values() for v in vs]
    pref = [correct(p["instruction"], p["chosen"]) for p in preferences
            if correct(p["instruction"], p["chosen"]) != correct(p["instruction"], p["rejected"])]
    pref = [float(x) for x in pref if x is not None]
    out = {
        "duels_scored": n_scored, "duels_one_right": n_informative, "duels_both_right": n_both_right,
        "duels_both_wrong": n_both_wrong, "unparseable_verdicts_one_right": unparsed,
        "matched": summary(everyone),
        "per_judge": {j: summary(v) for j, v in sorted(per_judge.items())},
        "pooled_auc": pooled_auc(right_scores, wrong_scores),
        "mean_score_right": float(np.mean(right_scores)) if right_scores else None,
        "mean_score_wrong": float(np.mean(wrong_scores)) if wrong_scores else None,
        "preference": summary(pref),
    }
    tasks = sorted({str(r["task"]) for r in references.values() if r.get("task") is not None})
    if len(tasks) > 1:  # a mixed task: where do the judges carry signal?
        out["by_task"] = {}
        for task in tasks:
            refs = {k: r for k, r in references.items() if str(r.get("task")) == task}
            part = judge_signal(duels, refs, preferences)
            if part is not None:
                out["by_task"][task] = {k: part[k] for k in ("duels_scored", "duels_one_right", "matched",
                                                             "pooled_auc", "preference")}
    return out
