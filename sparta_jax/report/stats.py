"""The statistics the report's panels need: pure functions over a loaded run (no matplotlib,
no HTML)."""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, List, Tuple

import numpy as np

from sparta_jax.report.load import RunData


# --------------------------------------------------------------------------------- helpers
def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


def _acc(entry: Any) -> Tuple[float, float, float]:
    """(accuracy, lower error, upper error) of an evaluation entry; nan when missing."""
    if not isinstance(entry, dict) or not _is_num(entry.get("accuracy")):
        return np.nan, 0.0, 0.0
    a = float(entry["accuracy"])
    ci = entry.get("ci95")
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(_is_num(c) for c in ci):
        return a, max(0.0, a - float(ci[0])), max(0.0, float(ci[1]) - a)
    return a, 0.0, 0.0


# --------------------------------------------------------------------------- 2. win matrix
@dataclasses.dataclass
class WinCounts:
    names: List[str]
    wins: np.ndarray  # wins[i, j]: duels between i and j won by i
    ties: np.ndarray  # ties[i, j] = ties[j, i]: duels between i and j without a preference
    notes: List[str]

    def duels(self) -> np.ndarray:
        return self.wins + self.wins.T + self.ties


def win_counts(run: RunData) -> WinCounts:
    names = list(run.names)
    idx = {n: i for i, n in enumerate(names)}
    m = len(names)
    wins = np.zeros((m, m), dtype=int)
    ties = np.zeros((m, m), dtype=int)
    notes = []
    self_duels = 0
    for it in run.trained:
        if it.preferences is None:
            if it.duels is not None:
                notes.append(f"iteration {it.t}: judged but no preferences.jsonl yet; left out.")
            elif it.answers is not None:
                notes.append(f"iteration {it.t}: answered but not judged yet; left out.")
            continue
        decided = set()
        for p in it.preferences:
            c, r = p.get("chosen_model"), p.get("rejected_model")
            if c not in idx or r not in idx:
                continue
            decided.add(p.get("index"))
            if c == r:
                self_duels += 1
                continue
            wins[idx[c], idx[r]] += 1
        models = it.duel_models()
        if not models:
            notes.append(f"iteration {it.t}: preferences but no duels.jsonl or answers.jsonl: ties unknown.")
            continue
        for index, (a, b) in models.items():
            if index in decided or a not in idx or b not in idx:
                continue
            if a == b:
                self_duels += 1
                continue
            ties[idx[a], idx[b]] += 1
            ties[idx[b], idx[a]] += 1
    if self_duels:
        notes.append(f"{self_duels} duel(s) of a member against itself left out.")
    return WinCounts(names, wins, ties, notes)


# ---------------------------------------------------------------------- 3. judge agreement
def _judge_verdicts(duel: dict) -> Tuple[Dict[str, int], int]:
    """({judge: sign(s_a - s_b)} for judges with both scores parsed, number of judges)."""
    judges = duel.get("judges")
    if not isinstance(judges, dict):
        return {}, 0
    out = {}
    for name, rec in judges.items():
        scores = (rec or {}).get("scores") if isinstance(rec, dict) else None
        if isinstance(scores, list) and len(scores) == 2 and all(_is_num(s) for s in scores):
            out[name] = _sign(float(scores[0]) - float(scores[1]))
    return out, len(judges)


def judge_agreement(run: RunData) -> dict:
    """Pairwise agreement counts, per-judge agreement with the reputation-weighted majority
    vote (including and excluding the judge itself) and with the duel's preference."""
    names = list(run.names)
    pair = {}  # (j1, j2) sorted by tribe order -> [agree, n]
    maj = {}  # judge -> [agree, n] vs weighted majority of all judges
    loo = {}  # judge -> [agree, n] vs weighted majority of the other judges
    pref = {}  # judge -> [agree, n] vs the preference's chosen side
    order = {n: i for i, n in enumerate(names)}
    max_judges = 0
    duels_seen = 0
    for it in run.trained:
        if not it.duels:
            continue
        end = (it.reputations or {}).get("end") or {}
        weight = {n: float(v["R"]) for n, v in end.items() if isinstance(v, dict) and _is_num(v.get("R"))}
        chosen = {}
        for p in it.preferences or []:
            chosen[p.get("index")] = p
        for duel in it.duels:
            verdicts, n_judges = _judge_verdicts(duel)
            max_judges = max(max_judges, n_judges)
            duels_seen += 1
            js = sorted(verdicts, key=lambda n: (order.get(n, len(order)), n))
            for a in range(len(js)):
                for b in range(a + 1, len(js)):
                    cell = pair.setdefault((js[a], js[b]), [0, 0])
                    cell[0] += verdicts[js[a]] == verdicts[js[b]]
                    cell[1] += 1
            vote = sum(weight.get(j, 1.0) * v for j, v in verdicts.items())
            for j, v in verdicts.items():
                if _sign(vote) != 0:
                    cell = maj.setdefault(j, [0, 0])
                    cell[0] += v == _sign(vote)
                    cell[1] += 1
                others = vote - weight.get(j, 1.0) * v
                if len(verdicts) >= 2 and _sign(others) != 0:
                    cell = loo.setdefault(j, [0, 0])
                    cell[0] += v == _sign(others)
                    cell[1] += 1
            p = chosen.get(duel.get("index"))
            models = duel.get("models") or [None, None]
            if p is not None and len(models) == 2:
                if models[0] != models[1]:
                    side = 1 if p.get("chosen_model") == models[0] else -1
                else:
                    side = 1 if p.get("chosen") == (duel.get("responses") or [None])[0] else -1
                for j, v in verdicts.items():
                    cell = pref.setdefault(j, [0, 0])
                    cell[0] += v == side
                    cell[1] += 1
    return {"pair": pair, "majority": maj, "leave_one_out": loo, "preference": pref,
            "max_judges": max_judges, "duels": duels_seen}


# -------------------------------------------------------------------------- 5. unparseable
def unparseable_counts(run: RunData) -> List[Tuple[int, Dict[str, Tuple[int, int]]]]:
    """[(iteration, {judge: (unparseable scores, scores)})] for iterations with duels.jsonl.
    A null score pair counts as two unparseable scores."""
    out = []
    for it in run.trained:
        if it.duels is None:
            continue
        per = {}
        for duel in it.duels:
            judges = duel.get("judges")
            if not isinstance(judges, dict):
                continue
            for name, rec in judges.items():
                scores = rec.get("scores") if isinstance(rec, dict) else None
                bad = 2 if not isinstance(scores, list) else sum(1 for s in scores[:2] if not _is_num(s))
                if isinstance(scores, list) and len(scores) < 2:
                    bad += 2 - len(scores)
                u, n = per.get(name, (0, 0))
                per[name] = (u + bad, n + 2)
        out.append((it.t, per))
    return out


# --------------------------------------------------------------------------- 6. evaluation
def reputation_and_accuracy(run: RunData) -> Dict[str, Tuple[float, float]]:
    """{member: (mean end-of-iteration reputation R, mean dev accuracy after training)} over the
    trained iterations that have both; members missing either are left out."""
    out = {}
    for n in run.names:
        reps = [float(((it.reputations or {}).get("end") or {}).get(n, {}).get("R", np.nan)) for it in run.trained]
        accs = [_acc(((it.evaluation or {}).get("dev") or {}).get(n))[0] for it in run.trained]
        reps, accs = [r for r in reps if np.isfinite(r)], [a for a in accs if np.isfinite(a)]
        if reps and accs:
            out[n] = (float(np.mean(reps)), float(np.mean(accs)))
    return out
