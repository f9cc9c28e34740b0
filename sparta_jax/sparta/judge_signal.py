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
    if not len(right_scores) or not len(wrong_scores):
        return None
    # Through average ranks (O(n log n), as the audit's bootstrap needs): the rank sum of the right
    # scores, less its minimum, counts the (right, wrong) pairs won, ties 1/2.
    r, w = np.asarray(right_scores, np.float64), np.asarray(wrong_scores, np.float64)
    _, inverse, counts = np.unique(np.concatenate([r, w]), return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    ranks = ((ends - counts + 1 + ends) / 2.0)[inverse]
    won = ranks[: r.size].sum() - r.size * (r.size + 1) / 2.0
    return float(won / (r.size * w.size))


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


def pooled_matched(signals: Sequence[Mapping]) -> tuple[float, int]:
    """(right-scored-higher count, verdicts) of several iterations' judge_signal results together."""
    matched = [s["matched"] for s in signals if isinstance(s.get("matched"), dict) and s["matched"].get("n")]
    return sum(m["accuracy"] * m["n"] for m in matched), sum(m["n"] for m in matched)


def audit_statistics(right: np.ndarray, wrong: np.ndarray, judges: Sequence[str], *, seed: int = 0,
                     resamples: int = 1000) -> dict:
    """A judge audit's figures from scores of a right and a wrong answer to the same items.

    right, wrong: [judges, items] scores (nan where a judge's output had no score). Per judge and
    pooled over judges: matched accuracy (right scored above wrong on the same item, ties 1/2,
    over items both scored) with a 95% interval; AUC of all right scores against all wrong ones
    with a bootstrap 95% interval over items; mean scores of right and wrong answers. A single
    judge's matched interval is Wilson's; the pooled one is a bootstrap over items, since several
    judges' verdicts on one item are not independent (four copies of one judge are one judge).
    """
    from sparta_jax.stats import bootstrap_interval

    right, wrong = np.asarray(right, np.float64), np.asarray(wrong, np.float64)
    if right.shape != wrong.shape or right.ndim != 2 or right.shape[0] != len(judges):
        raise ValueError(f"right and wrong must be [judges, items] for {len(judges)} judges, "
                         f"got {right.shape} and {wrong.shape}")
    items = right.shape[1]

    def auc(rows: np.ndarray, cols: np.ndarray) -> float | None:
        r, w = right[np.ix_(rows, cols)].ravel(), wrong[np.ix_(rows, cols)].ravel()
        return pooled_auc(r[~np.isnan(r)], w[~np.isnan(w)])

    def matched_of(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        r, w = right[np.ix_(rows, cols)], wrong[np.ix_(rows, cols)]
        return ((r > w) + 0.5 * (r == w))[~np.isnan(r) & ~np.isnan(w)]

    def figures(rows: np.ndarray, salt: int) -> dict:
        r, w = right[rows], wrong[rows]
        matched = matched_of(rows, np.arange(items))
        n = int(matched.size)
        if len(rows) == 1:
            interval = _interval(float(matched.sum()), n)
        else:
            interval = bootstrap_interval(lambda idx: float(m.mean()) if (m := matched_of(rows, idx)).size else None,
                                          items, seed=seed + 1000 + salt, resamples=resamples) or [0.0, 1.0]
        return {
            "matched": {"accuracy": float(matched.mean()) if n else None, "n": n, "ci95": interval},
            "auc": auc(rows, np.arange(items)),
            "auc_ci95": bootstrap_interval(lambda idx: auc(rows, idx), items, seed=seed + salt, resamples=resamples),
            "mean_score_right": float(np.nanmean(r)) if (~np.isnan(r)).any() else None,
            "mean_score_wrong": float(np.nanmean(w)) if (~np.isnan(w)).any() else None,
            "unscored": int(np.isnan(r).sum() + np.isnan(w).sum()),
        }

    return {"items": items, "per_judge": {name: figures(np.array([j]), j + 1) for j, name in enumerate(judges)},
            "pooled": figures(np.arange(len(judges)), 0)}
