"""An HTML report of a run's workdir: reputations, duels, judges, preferences, evaluation, DPO.

    python -m sparta_jax.report --workdir DIR             # prints DIR/report/report.html
    python -m sparta_jax.report --workdir DIR --markdown  # the dev/test table, as Markdown

`write_report(workdir)` reads only what the main loop writes (config.json, metrics.jsonl and
the iteration_NNN/ folders) and regenerates `<workdir>/report/report.html`: one
self-contained file with every figure embedded as a base64 PNG. The same PNGs are also
saved next to it in `<workdir>/report/`. Nothing needs a model, JAX or an accelerator.

The report is built for partial runs too (a run still going, or one killed mid-iteration):
whatever file is missing or unreadable is skipped and the panel says so.

Panels (in this order, after a headline table):
  1. Reputation trajectories   R (and sigma) of every member after every duel
  2. Win matrix                who beat whom (winner = chosen_model of the preference)
  3. Judge agreement           pairwise judge agreement and agreement with the majority
  4. Judge signal              on verifiable tasks: do judges prefer the right answer
                               (iteration_NNN/judge_signal.json)
     Judge audit               when the workdir holds audit.json (`python -m sparta_jax.audit`):
                               each judge on right and near-miss wrong answers, before training
  5. Preference margins        histogram of |S_a - S_b| per iteration
  6. Unparseable judge scores  per iteration, overall and per judge
  7. Dev and test accuracy     per member per iteration (iteration_NNN/evaluation.json)
  8. DPO training              loss and reward margin per step per member
  9. Config                    the resolved config.json
"""
from __future__ import annotations

import argparse
import base64
import dataclasses
import html
import io
import json
import math
import os
import re
import sys
import time
import traceback
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from sparta_jax.evaluation import wilson_interval
from sparta_jax.selection import pick
from sparta_jax.sparta.duel_log import write_bytes_atomic
from sparta_jax.sparta.judge_signal import pooled_matched

REPORT_DIR = "report"
REPORT_FILE = "report.html"
_ITERATION_DIR = re.compile(r"^iteration_(\d+)$")

# Panel ids and titles, in report order. The PNG of a panel is saved as <id>.png.
PANELS = (
    ("reputation", "Reputation trajectories"),
    ("win_matrix", "Win matrix"),
    ("judge_agreement", "Judge agreement"),
    ("judge_signal", "Judge signal"),
    ("audit", "Judge audit"),
    ("margins", "Preference margins"),
    ("unparseable", "Unparseable judge scores"),
    ("evaluation", "Dev and test accuracy"),
    ("reputation_accuracy", "Reputation against dev accuracy"),
    ("dpo", "DPO training"),
    ("config", "Config"),
)
PANEL_TITLES = dict(PANELS)


# --------------------------------------------------------------------------------- reading
@dataclasses.dataclass
class IterationData:
    """What one iteration_NNN/ folder holds; None where a file is absent or unreadable."""

    t: int
    folder: str
    answers: Optional[list] = None
    duels: Optional[list] = None
    reputations: Optional[dict] = None
    preferences: Optional[list] = None
    summary: Optional[dict] = None
    evaluation: Optional[dict] = None
    judge_signal: Optional[Any] = None
    problems: List[str] = dataclasses.field(default_factory=list)

    def duel_models(self) -> Dict[int, Tuple[str, str]]:
        """{duel index: (a, b)} from duels.jsonl, else from answers.jsonl."""
        rows = self.duels if self.duels is not None else self.answers
        out = {}
        for row in rows or []:
            models = row.get("models")
            if isinstance(row.get("index"), int) and isinstance(models, list) and len(models) == 2:
                out[row["index"]] = (str(models[0]), str(models[1]))
        return out


@dataclasses.dataclass
class RunData:
    workdir: str
    config: Optional[dict]
    metrics: list
    iterations: List[IterationData]  # sorted by t; t = 0 holds only the initial evaluation
    names: List[str]  # tribe order
    problems: List[str]
    audit: Optional[dict] = None  # audit.json (python -m sparta_jax.audit), when present
    bases: Optional[dict] = None  # member -> its base model (tribe.json), when known

    @property
    def trained(self) -> List[IterationData]:
        return [it for it in self.iterations if it.t >= 1]


def _read_json(path: str, problems: List[str], label: str) -> Optional[Any]:
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        problems.append(f"{label}: unreadable ({type(e).__name__}: {e})")
        return None


def _read_jsonl(path: str, problems: List[str], label: str) -> Optional[list]:
    if not os.path.exists(path):
        return None
    rows, bad = [], 0
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except ValueError:
                    bad += 1
                    continue
                if isinstance(obj, dict):
                    rows.append(obj)
                else:
                    bad += 1
    except OSError as e:
        problems.append(f"{label}: unreadable ({type(e).__name__}: {e})")
        return None
    if bad:
        problems.append(f"{label}: skipped {bad} malformed line(s)")
    return rows


def _natural_key(name: str):
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def load_run(workdir: str) -> RunData:
    """Reads everything the report needs; never raises on missing or malformed files."""
    problems: List[str] = []
    config = _read_json(os.path.join(workdir, "config.json"), problems, "config.json")
    if config is not None and not isinstance(config, dict):
        problems.append("config.json: not a JSON object")
        config = None
    metrics = _read_jsonl(os.path.join(workdir, "metrics.jsonl"), problems, "metrics.jsonl") or []
    iterations = []
    try:
        entries = sorted(os.listdir(workdir))
    except OSError as e:
        entries = []
        problems.append(f"workdir unreadable: {e}")
    for entry in entries:
        m = _ITERATION_DIR.match(entry)
        folder = os.path.join(workdir, entry)
        if not m or not os.path.isdir(folder):
            continue
        it = IterationData(int(m.group(1)), folder)
        p = it.problems
        j = lambda name: os.path.join(folder, name)  # noqa: E731
        it.answers = _read_jsonl(j("answers.jsonl"), p, f"{entry}/answers.jsonl")
        it.duels = _read_jsonl(j("duels.jsonl"), p, f"{entry}/duels.jsonl")
        it.preferences = _read_jsonl(j("preferences.jsonl"), p, f"{entry}/preferences.jsonl")
        for attr, name in (("reputations", "reputations.json"), ("summary", "summary.json"),
                           ("evaluation", "evaluation.json")):
            value = _read_json(j(name), p, f"{entry}/{name}")
            if value is not None and not isinstance(value, dict):
                p.append(f"{entry}/{name}: not a JSON object")
                value = None
            setattr(it, attr, value)
        it.judge_signal = _read_json(j("judge_signal.json"), p, f"{entry}/judge_signal.json")
        iterations.append(it)
    iterations.sort(key=lambda it: it.t)
    audit = _read_json(os.path.join(workdir, "audit.json"), problems, "audit.json")
    if audit is not None and not isinstance(audit, dict):
        problems.append("audit.json: not a JSON object")
        audit = None
    return RunData(workdir, config, metrics, iterations, _tribe_names(config, iterations), problems, audit,
                   _member_bases(workdir, problems))


def _member_bases(workdir: str, problems: List[str]) -> Optional[dict]:
    """tribe.json's member -> base (a mixed tribe's groups), or its one base for every member."""
    info = _read_json(os.path.join(workdir, "tribe.json"), problems, "tribe.json")
    if not isinstance(info, dict):
        return None
    if isinstance(info.get("bases"), dict):
        return {str(k): str(v) for k, v in info["bases"].items()}
    if isinstance(info.get("names"), list) and isinstance(info.get("base"), str):
        return {str(n): info["base"] for n in info["names"]}
    return None


def _tribe_names(config: Optional[dict], iterations: Sequence[IterationData]) -> List[str]:
    """Tribe order: reputations.json's order, else config tribe.names, else natural sort;
    every name seen anywhere is included."""
    names: List[str] = []
    for it in iterations:
        rep = it.reputations or {}
        for key in ("start", "end"):
            if isinstance(rep.get(key), dict):
                names = list(rep[key])
                break
        if names:
            break
    if not names and config:
        configured = ((config.get("tribe") or {}).get("names")) or []
        names = [str(n) for n in configured]
    seen = set()
    for it in iterations:
        for row in (it.answers or []) + (it.duels or []):
            seen.update(str(m) for m in row.get("models") or [])
            if isinstance(row.get("judges"), dict):
                seen.update(row["judges"])
        for row in it.preferences or []:
            seen.update(str(row.get(k)) for k in ("chosen_model", "rejected_model") if row.get(k) is not None)
        ev = it.evaluation or {}
        for split in ("dev", "test"):
            if isinstance(ev.get(split), dict):
                seen.update(ev[split])
    extra = sorted((n for n in seen if n not in names), key=_natural_key)
    return names + extra


# --------------------------------------------------------------------------------- helpers
def _esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _fmt(x: Any, digits: int = 4) -> str:
    if x is None:
        return "–"
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        if math.isnan(x):
            return "nan"
        return f"{x:.{digits}f}"
    return str(x)


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _colors(names: Sequence[str]) -> Dict[str, Any]:
    from matplotlib import colormaps

    n = len(names)
    if n <= 10:
        cmap = colormaps["tab10"]
        return {name: cmap(i) for i, name in enumerate(names)}
    if n <= 20:
        cmap = colormaps["tab20"]
        return {name: cmap(i) for i, name in enumerate(names)}
    cmap = colormaps["hsv"]
    return {name: cmap(i / n) for i, name in enumerate(names)}


def _new_figure(width: float, height: float, **kwargs):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained", **kwargs)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", facecolor="white")
    return buf.getvalue()


def _atomic_write(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_bytes_atomic(path, data)


def _mark_iterations(ax, boundaries: Sequence[Tuple[float, int]], label: bool = True) -> None:
    """Dashed vertical lines at iteration starts (not the first), labels at the top."""
    for k, (x, t) in enumerate(boundaries):
        if k > 0:
            ax.axvline(x, color="0.5", linestyle="--", linewidth=0.8)
        if label:
            ax.text(x, 1.0, f" it {t}", transform=ax.get_xaxis_transform(), va="top", ha="left",
                    fontsize=8, color="0.35")


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


@dataclasses.dataclass
class Panel:
    id: str
    title: str
    notes: List[str] = dataclasses.field(default_factory=list)  # plain text, escaped on output
    image: Optional[bytes] = None
    alt: str = ""
    html: List[str] = dataclasses.field(default_factory=list)  # trusted HTML fragments
    error: Optional[str] = None


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], attrs: str = "") -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table {attrs}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


# ------------------------------------------------------------------------------ 1. reputation
def panel_reputation(run: RunData, colors) -> Panel:
    panel = Panel("reputation", PANEL_TITLES["reputation"])
    xs: List[float] = []
    R = {n: [] for n in run.names}
    S = {n: [] for n in run.names}
    boundaries = []
    offset = 0
    end_rows = []

    def add(x, table):
        xs.append(x)
        for n in run.names:
            entry = (table or {}).get(n) or {}
            R[n].append(float(entry["R"]) if _is_num(entry.get("R")) else np.nan)
            S[n].append(float(entry["sigma"]) if _is_num(entry.get("sigma")) else np.nan)

    for it in run.trained:
        rep = it.reputations
        if rep is None:
            why = "not rated yet" if it.duels is not None or it.answers is not None else "empty folder"
            panel.notes.append(f"iteration {it.t}: no reputations.json ({why}); skipped.")
            continue
        history = [h for h in rep.get("history") or [] if isinstance(h, dict)]
        boundaries.append((offset, it.t))
        if isinstance(rep.get("start"), dict):
            add(offset, rep["start"])
        if history:
            for k, h in enumerate(history):
                add(offset + k + 1, h.get("reputations"))
            offset += len(history)
        else:
            n = len(it.duels or []) or 1
            panel.notes.append(f"iteration {it.t}: reputations.json has no per-duel history; start and end only.")
            if isinstance(rep.get("end"), dict):
                add(offset + n, rep["end"])
            offset += n
        if isinstance(rep.get("end"), dict):
            end_rows.append((it.t, rep["end"]))
    if not xs:
        panel.notes.append("No reputations.json in this run yet: nothing to plot.")
        return panel

    fig = _new_figure(10, 6)
    ax_r, ax_s = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    for n in run.names:
        ax_r.plot(xs, R[n], color=colors[n], label=n, linewidth=1.4)
        ax_s.plot(xs, S[n], color=colors[n], linewidth=1.0)
    _mark_iterations(ax_r, boundaries)
    _mark_iterations(ax_s, boundaries, label=False)
    ax_r.set_ylabel("reputation R")
    ax_r.ticklabel_format(axis="y", useOffset=False)
    ax_r.set_title("R after every duel (dashed: iteration boundaries)")
    ax_r.legend(fontsize=8, ncol=max(1, min(5, len(run.names))), loc="best")
    ax_r.grid(alpha=0.3)
    ax_s.set_ylabel("sigma")
    ax_s.set_xlabel("duel (cumulative over iterations)")
    ax_s.grid(alpha=0.3)
    panel.image = _png(fig)
    panel.alt = "reputation trajectories"
    if end_rows:
        header = ["iteration"] + [f"{n} R (sigma)" for n in run.names]
        rows = []
        for t, end in end_rows:
            row = [f"end of {t}"]
            for n in run.names:
                e = end.get(n) or {}
                row.append(f"{_fmt(e.get('R'))} ({_fmt(e.get('sigma'), 3)})")
            rows.append(row)
        panel.html.append(_table(header, rows, 'class="data"'))
    return panel


# ------------------------------------------------------------------------------ 2. win matrix
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


def panel_win_matrix(run: RunData, colors) -> Panel:
    panel = Panel("win_matrix", PANEL_TITLES["win_matrix"])
    wc = win_counts(run)
    panel.notes.extend(wc.notes)
    n_pairs = int(wc.wins.sum())
    n_ties = int(np.triu(wc.ties).sum())
    if n_pairs + n_ties == 0:
        panel.notes.append("No rated duels (preferences.jsonl) in this run yet.")
        return panel
    panel.notes.append(
        "Over all iterations. Cell (row i, column j): the fraction of all duels between i and j that i won "
        "(winner = chosen_model of the duel's preference), annotated wins/duels. Duels without a preference "
        f"(exact ties, or no valid judge) count in the denominator and are shown on the right: {n_ties} in all.")
    m = len(wc.names)
    total = wc.duels()
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(total > 0, wc.wins / np.maximum(total, 1), np.nan)
    np.fill_diagonal(frac, np.nan)
    size = max(4.5, 0.9 * m + 2.5)
    fig = _new_figure(2 * size + 1, size)
    ax, ax_t = fig.subplots(1, 2, width_ratios=[1.15, 1])
    cmap = _cmap_with_bad("RdYlGn")
    im = ax.imshow(frac, cmap=cmap, vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, shrink=0.8, label="fraction won by row")
    for i in range(m):
        for j in range(m):
            if i != j and total[i, j] > 0:
                ax.text(j, i, f"{wc.wins[i, j]}/{total[i, j]}", ha="center", va="center", fontsize=9)
    _label_square(ax, wc.names, "winner (row)", "opponent (column)")
    ax.set_title("duels won by row against column")
    tie_shown = np.where(np.eye(m, dtype=bool), np.nan, wc.ties.astype(float))
    im2 = ax_t.imshow(tie_shown, cmap=_cmap_with_bad("Greys"), vmin=0, vmax=max(1, int(wc.ties.max())))
    fig.colorbar(im2, ax=ax_t, shrink=0.8, label="duels without a preference")
    for i in range(m):
        for j in range(m):
            if i != j:
                ax_t.text(j, i, str(wc.ties[i, j]), ha="center", va="center", fontsize=9,
                          color="white" if wc.ties[i, j] > 0.6 * max(1, wc.ties.max()) else "black")
    _label_square(ax_t, wc.names, "", "")
    ax_t.set_title("ties (no preference), per pair")
    panel.image = _png(fig)
    panel.alt = "win matrix"
    # The numbers, also as a table (machine-readable through data- attributes).
    head = "<th>winner \\ opponent</th>" + "".join(f"<th>{_esc(n)}</th>" for n in wc.names) + "<th>total</th>"
    rows = []
    for i, a in enumerate(wc.names):
        cells = []
        for j, b in enumerate(wc.names):
            if i == j:
                cells.append("<td>–</td>")
                continue
            w, n = int(wc.wins[i, j]), int(total[i, j])
            text = f"{w}/{n}" + (f" ({w / n:.0%})" if n else "")
            cells.append(f'<td data-winner="{_esc(a)}" data-loser="{_esc(b)}" data-wins="{w}" '
                         f'data-duels="{n}" data-ties="{int(wc.ties[i, j])}">{_esc(text)}</td>')
        tw, tn = int(wc.wins[i].sum()), int(total[i].sum())
        cells.append(f'<td data-member="{_esc(a)}" data-total-wins="{tw}" data-total-duels="{tn}">'
                     f"{tw}/{tn}" + (f" ({tw / tn:.0%})" if tn else "") + "</td>")
        rows.append(f"<tr><th>{_esc(a)}</th>{''.join(cells)}</tr>")
    panel.html.append(f'<table class="data" id="win-matrix"><thead><tr>{head}</tr></thead>'
                      f"<tbody>{''.join(rows)}</tbody></table>")
    tie_rows = []
    for i in range(m):
        for j in range(i + 1, m):
            if wc.ties[i, j]:
                tie_rows.append(f'<tr><td>{_esc(wc.names[i])}</td><td>{_esc(wc.names[j])}</td>'
                                f'<td data-pair="{_esc(wc.names[i])}|{_esc(wc.names[j])}" '
                                f'data-ties="{int(wc.ties[i, j])}">{int(wc.ties[i, j])}</td></tr>')
    if tie_rows:
        panel.html.append('<table class="data" id="win-ties"><thead><tr><th>member</th><th>member</th>'
                          f"<th>duels without a preference</th></tr></thead><tbody>{''.join(tie_rows)}</tbody></table>")
    return panel


def _cmap_with_bad(name: str):
    from matplotlib import colormaps

    return colormaps[name].with_extremes(bad="0.92")


def _label_square(ax, names, ylabel, xlabel):
    m = len(names)
    ax.set_xticks(range(m), names, rotation=45 if m > 3 else 0, ha="right" if m > 3 else "center", fontsize=9)
    ax.set_yticks(range(m), names, fontsize=9)
    if xlabel:
        ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel(ylabel)


# -------------------------------------------------------------------------- 3. judge agreement
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


def panel_judge_agreement(run: RunData, colors) -> Panel:
    panel = Panel("judge_agreement", PANEL_TITLES["judge_agreement"])
    if not any(it.duels for it in run.trained):
        panel.notes.insert(0, "No duels.jsonl in this run yet: nothing to compare.")
        return panel
    ag = judge_agreement(run)
    if ag["max_judges"] < 2:
        panel.notes.insert(0, f"Judge agreement needs >= 4 members: with {len(run.names)} members each duel has "
                              f"only {ag['max_judges']} judge (m - 2), so no two judges ever see the same duel.")
        return panel
    if not ag["pair"]:
        panel.notes.insert(0, "No duel has two judges with parsed scores: nothing to compare.")
        return panel
    panel.notes.insert(0, (
        "Two judges agree on a duel when sign(s_a - s_b) is the same for both (a tie agrees only with a tie); "
        "judges with an unparseable score are left out of that duel. Right: per judge, agreement with the "
        "majority vote weighted by end-of-iteration reputation (with and without the judge's own vote; weighted "
        "ties left out) and with the side the duel's preference chose."))
    judges = [n for n in run.names if any(n in k for k in ag["pair"]) or n in ag["majority"]]
    m = len(judges)
    mat = np.full((m, m), np.nan)
    counts = {}
    for (a, b), (k, n) in ag["pair"].items():
        if a in judges and b in judges:
            i, j = judges.index(a), judges.index(b)
            mat[i, j] = mat[j, i] = k / n
            counts[(i, j)] = counts[(j, i)] = (k, n)
    size = max(4.5, 0.9 * m + 2.5)
    fig = _new_figure(2 * size + 1, size)
    ax, ax_b = fig.subplots(1, 2)
    im = ax.imshow(mat, cmap=_cmap_with_bad("viridis"), vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, shrink=0.8, label="agreement rate")
    for (i, j), (k, n) in counts.items():
        ax.text(j, i, f"{k}/{n}", ha="center", va="center", fontsize=9,
                color="black" if k / n > 0.6 else "white")
    _label_square(ax, judges, "judge", "judge")
    ax.set_title("pairwise judge agreement (duels judged by both)")
    kinds = (("majority", "weighted majority (incl. self)"), ("leave_one_out", "weighted majority of others"),
             ("preference", "preference's chosen side"))
    width = 0.8 / len(kinds)
    x = np.arange(m)
    for k, (key, label) in enumerate(kinds):
        vals = [ag[key][j][0] / ag[key][j][1] if ag[key].get(j, [0, 0])[1] else np.nan for j in judges]
        ax_b.bar(x + (k - (len(kinds) - 1) / 2) * width, vals, width, label=label)
    ax_b.set_xticks(x, judges, rotation=45 if m > 3 else 0, ha="right" if m > 3 else "center", fontsize=9)
    ax_b.set_ylim(0, 1.32)  # headroom for the legend above the bars
    ax_b.set_yticks(np.linspace(0, 1, 6))
    ax_b.set_ylabel("agreement rate")
    ax_b.set_title("per judge")
    ax_b.legend(fontsize=8, loc="upper center", ncol=2)
    ax_b.grid(axis="y", alpha=0.3)
    panel.image = _png(fig)
    panel.alt = "judge agreement"
    rows = []
    for j in judges:
        row = [j]
        for key, _ in kinds:
            k, n = ag[key].get(j, [0, 0])
            row.append(f"{k}/{n} ({k / n:.0%})" if n else "–")
        rows.append(row)
    panel.html.append(_table(["judge"] + [label for _, label in kinds], rows, 'class="data" id="judge-majority"'))
    return panel


def panel_judge_signal(run: RunData, colors) -> Panel:
    panel = Panel("judge_signal", PANEL_TITLES["judge_signal"])
    signals = [(it.t, it.judge_signal) for it in run.trained if isinstance(it.judge_signal, dict)]
    if not signals:
        panel.notes.append("No judge_signal.json in this run: it is written only when the instructions have "
                           "reference answers (a verifiable task).")
        return panel
    panel.notes.append(
        "Duels where exactly one answer is right test the judges. Matched accuracy: how often a judge scored the "
        "right answer above the wrong one (ties 1/2); preference accuracy: how often the kept pair's chosen answer "
        "is the right one; pooled AUC: all scores of right answers against all scores of wrong ones. 0.5 is chance. "
        "Bars: Wilson 95% intervals.")
    ts = [t for t, _ in signals]
    fig = _new_figure(11, 4.2)
    ax, ax_j = fig.subplots(1, 2)
    for k, (key, label) in enumerate((("matched", "matched accuracy (all judges)"),
                                      ("preference", "preference accuracy"))):
        acc = [_acc(s.get(key)) for _, s in signals]
        ax.errorbar(np.array(ts) + (k - 0.5) * 0.08, [a[0] for a in acc],
                    yerr=[[a[1] for a in acc], [a[2] for a in acc]], marker="o", capsize=4, label=label)
    auc = [s.get("pooled_auc") if _is_num(s.get("pooled_auc")) else np.nan for _, s in signals]
    ax.plot(ts, auc, "s--", color="gray", label="pooled AUC")
    ax.axhline(0.5, color="black", lw=0.8, ls=":")
    ax.set_ylim(0, 1.3)  # headroom for the legend
    ax.set_xlim(min(ts) - 0.5, max(ts) + 0.5)
    ax.set_xticks(ts)
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_xlabel("iteration")
    ax.set_title("judges vs. the reference answers")
    ax.legend(fontsize=8, loc="upper center", ncol=3)
    ax.grid(alpha=0.3)
    judges = [n for n in run.names if any(n in s.get("per_judge", {}) for _, s in signals)]
    width = 0.8 / max(1, len(signals))
    x = np.arange(len(judges))
    for k, (t, s) in enumerate(signals):
        acc = [_acc(s.get("per_judge", {}).get(j)) for j in judges]
        ax_j.bar(x + (k - (len(signals) - 1) / 2) * width, [a[0] for a in acc], width,
                 yerr=[[a[1] for a in acc], [a[2] for a in acc]], capsize=2, label=f"iteration {t}")
    ax_j.axhline(0.5, color="black", lw=0.8, ls=":")
    ax_j.set_xticks(x, judges, rotation=45 if len(judges) > 3 else 0, fontsize=9,
                    ha="right" if len(judges) > 3 else "center")
    ax_j.set_ylim(0, 1.3)
    ax_j.set_yticks(np.linspace(0, 1, 6))
    ax_j.set_title("matched accuracy per judge")
    ax_j.legend(fontsize=8, loc="upper center", ncol=min(4, len(signals)))
    panel.image = _png(fig)
    panel.alt = "judge signal"
    rows = [[t, s.get("duels_scored"), s.get("duels_one_right"), s.get("duels_both_right"),
             s.get("duels_both_wrong"), _acc_text(s.get("matched")), _acc_text(s.get("preference")),
             _fmt(s.get("pooled_auc"), 3), _fmt(s.get("mean_score_right"), 2), _fmt(s.get("mean_score_wrong"), 2)]
            for t, s in signals]
    panel.html.append(_table(["iteration", "duels", "one right", "both right", "both wrong", "matched accuracy",
                              "preference accuracy", "pooled AUC", "mean score right", "mean score wrong"],
                             rows, 'class="data" id="judge-signal"'))
    per_task = [[t, task, v.get("duels_scored"), v.get("duels_one_right"), _acc_text(v.get("matched")),
                 _fmt(v.get("pooled_auc"), 3)]
                for t, s in signals for task, v in sorted((s.get("by_task") or {}).items()) if isinstance(v, dict)]
    if per_task:
        panel.html.append("<h4>per task</h4>" + _table(
            ["iteration", "task", "duels", "one right", "matched accuracy", "pooled AUC"], per_task,
            'class="data" id="judge-signal-by-task"'))
    return panel


def panel_audit(run: RunData, colors) -> Panel:
    panel = Panel("audit", PANEL_TITLES["audit"])
    audit = run.audit
    if audit is None:
        panel.notes.append("No audit.json in this workdir. `python -m sparta_jax.audit --config=... "
                           "--out=WORKDIR/audit.json` measures, before any training, whether each judge scores a "
                           "right answer above a near-miss wrong one.")
        return panel
    scored_by = ("scored by every member's own log-likelihood of it (--scorer=likelihood, a diagnostic: do the "
                 "members hold what it takes to tell them apart?)" if audit.get("scorer") == "likelihood" else
                 f"judged by every member ({audit.get('judge_mode')} judges)")
    panel.notes.append(
        f"Before training: {audit.get('items')} {audit.get('split', 'train')}-split instructions, each with a right "
        "and a near-miss "
        f"wrong answer written as {audit.get('template')!r}, {scored_by}. Matched accuracy: the right answer scored higher on the same instruction (ties 1/2; 95% "
        "interval: Wilson's per judge, a bootstrap over instructions pooled); AUC: all right scores against all "
        "wrong ones (bootstrap 95% interval over instructions). 0.5 is chance.")
    rows = list((audit.get("per_judge") or {}).items()) + [("pooled", audit.get("pooled") or {})]
    names = [n for n, _ in rows]
    fig = _new_figure(max(6, 1.2 * len(rows) + 2), 3.8)
    ax = fig.subplots()
    x = np.arange(len(rows))
    for k, key in enumerate(("matched", "auc")):
        values, low, high = [], [], []
        for _, f in rows:
            if key == "matched":
                v, ci = (f.get("matched") or {}).get("accuracy"), (f.get("matched") or {}).get("ci95")
            else:
                v, ci = f.get("auc"), f.get("auc_ci95")
            v = v if _is_num(v) else np.nan
            values.append(v)
            low.append(v - ci[0] if ci and _is_num(v) else 0)
            high.append(ci[1] - v if ci and _is_num(v) else 0)
        ax.bar(x + (k - 0.5) * 0.38, values, 0.38, yerr=[low, high], capsize=3,
               label="matched accuracy" if key == "matched" else "AUC")
    ax.axhline(0.5, color="black", lw=0.8, ls=":")
    ax.set_xticks(x, names, rotation=45 if len(names) > 4 else 0, fontsize=9, ha="right" if len(names) > 4 else "center")
    ax.set_ylim(0, 1.15)
    ax.set_title("judges on right vs near-miss wrong answers (before training)")
    ax.legend(fontsize=8, loc="upper center", ncol=2)
    panel.image = _png(fig)
    panel.alt = "judge audit"

    def ci_text(ci):
        return f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "–"

    table = [[n, _fmt((f.get("matched") or {}).get("accuracy"), 3), ci_text((f.get("matched") or {}).get("ci95")),
              _fmt(f.get("auc"), 3), ci_text(f.get("auc_ci95")), _fmt(f.get("mean_score_right"), 2),
              _fmt(f.get("mean_score_wrong"), 2), f.get("unscored")] for n, f in rows]
    panel.html.append(_table(["judge", "matched accuracy", "95% CI", "AUC", "95% CI", "mean score right",
                              "mean score wrong", "unscored"], table, 'class="data" id="judge-audit"'))
    return panel


# ---------------------------------------------------------------------------- 4. margins
def panel_margins(run: RunData, colors) -> Panel:
    panel = Panel("margins", PANEL_TITLES["margins"])
    per_it = []
    for it in run.trained:
        if it.preferences is None:
            panel.notes.append(f"iteration {it.t}: no preferences.jsonl; skipped.")
            continue
        margins = [float(p["margin"]) for p in it.preferences if _is_num(p.get("margin"))]
        if margins:
            per_it.append((it.t, np.asarray(margins)))
        else:
            panel.notes.append(f"iteration {it.t}: no preference pairs.")
    if not per_it:
        panel.notes.append("No preference margins in this run yet.")
        return panel
    everything = np.concatenate([m for _, m in per_it])
    bins = np.histogram_bin_edges(everything, bins=min(40, max(5, int(np.sqrt(everything.size)) + 1)))
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    fig = _new_figure(9, 4.2)
    ax = fig.subplots()
    for k, (t, margins) in enumerate(per_it):
        color = cmap(k / max(1, len(per_it) - 1) * 0.8)
        ax.hist(margins, bins=bins, histtype="stepfilled", alpha=0.25, color=color)
        ax.hist(margins, bins=bins, histtype="step", linewidth=1.6, color=color,
                label=f"iteration {t} (n={margins.size}, median {np.median(margins):.3g})")
    ax.set_xlabel("preference margin |S_a - S_b|")
    ax.set_ylabel("pairs")
    ax.set_title("preference margins per iteration")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    panel.image = _png(fig)
    panel.alt = "preference margin histogram"
    rows = [[t, m.size, _fmt(float(m.min())), _fmt(float(np.median(m))), _fmt(float(m.mean())), _fmt(float(m.max()))]
            for t, m in per_it]
    panel.html.append(_table(["iteration", "pairs", "min", "median", "mean", "max"], rows, 'class="data"'))
    return panel


# ------------------------------------------------------------------------- 5. unparseable
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


def panel_unparseable(run: RunData, colors) -> Panel:
    panel = Panel("unparseable", PANEL_TITLES["unparseable"])
    counts = unparseable_counts(run)
    for it in run.trained:
        if it.duels is None:
            panel.notes.append(f"iteration {it.t}: no duels.jsonl; skipped.")
    if not counts:
        panel.notes.append("No duels.jsonl in this run yet.")
        return panel
    mode = ((run.config or {}).get("judge") or {}).get("mode")
    total_bad = sum(u for _, per in counts for u, _ in per.values())
    panel.notes.insert(0, "Share of judge scores that could not be parsed (a null pair counts twice)."
                       + (f" Judge mode: {mode}." if mode else "")
                       + (" None unparseable." if total_bad == 0 else ""))
    ts = [t for t, _ in counts]
    judges = [n for n in run.names if any(n in per for _, per in counts)]
    fig = _new_figure(9, 4.2)
    ax = fig.subplots()
    overall = []
    for t, per in counts:
        u = sum(x for x, _ in per.values())
        n = sum(y for _, y in per.values())
        overall.append(u / n if n else np.nan)
    top = 0.0
    for j in judges:
        vals = [per[j][0] / per[j][1] if j in per and per[j][1] else np.nan for _, per in counts]
        ax.plot(ts, vals, marker="o", color=colors.get(j), label=j, linewidth=1.2, alpha=0.85)
        top = max(top, np.nanmax(vals) if np.any(np.isfinite(vals)) else 0.0)
    ax.plot(ts, overall, marker="s", color="black", linewidth=2.2, label="all judges")
    top = max(top, np.nanmax(overall) if np.any(np.isfinite(overall)) else 0.0)
    ax.set_ylim(-0.02, max(0.1, 1.1 * top))
    ax.set_xticks(ts)
    ax.set_xlabel("iteration")
    ax.set_ylabel("unparseable share of scores")
    ax.set_title("unparseable judge scores per iteration")
    ax.legend(fontsize=8, ncol=2)
    ax.grid(alpha=0.3)
    panel.image = _png(fig)
    panel.alt = "unparseable judge scores"
    header = ["iteration", "all judges"] + judges
    rows = []
    for (t, per), rate in zip(counts, overall):
        u = sum(x for x, _ in per.values())
        n = sum(y for _, y in per.values())
        row = [t, f"{u}/{n}" + (f" ({rate:.1%})" if n else "")]
        for j in judges:
            row.append(f"{per[j][0]}/{per[j][1]}" if j in per else "–")
        rows.append(row)
    panel.html.append(_table(header, rows, 'class="data" id="unparseable-table"'))
    return panel


# --------------------------------------------------------------------------- 6. evaluation
def _acc(entry: Any) -> Tuple[float, float, float]:
    """(accuracy, lower error, upper error) of an evaluation entry; nan when missing."""
    if not isinstance(entry, dict) or not _is_num(entry.get("accuracy")):
        return np.nan, 0.0, 0.0
    a = float(entry["accuracy"])
    ci = entry.get("ci95")
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(_is_num(c) for c in ci):
        return a, max(0.0, a - float(ci[0])), max(0.0, float(ci[1]) - a)
    return a, 0.0, 0.0


def _acc_text(entry: Any) -> str:
    if not isinstance(entry, dict) or not _is_num(entry.get("accuracy")):
        return "–"
    text = f"{float(entry['accuracy']):.3f}"
    ci = entry.get("ci95")
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(_is_num(c) for c in ci):
        text += f" [{float(ci[0]):.3f}, {float(ci[1]):.3f}]"
    if _is_num(entry.get("n_correct")) and _is_num(entry.get("n")):
        text += f" ({entry['n_correct']}/{entry['n']})"
    elif _is_num(entry.get("n")):
        text += f" (n={entry['n']})"
    return text


def panel_evaluation(run: RunData, colors) -> Panel:
    panel = Panel("evaluation", PANEL_TITLES["evaluation"])
    evals = [(it.t, it.evaluation) for it in run.iterations if it.evaluation is not None]
    if not evals:
        panel.notes.append("No evaluation in this run (no iteration_NNN/evaluation.json).")
        return panel
    missing = [it.t for it in run.trained if it.evaluation is None and it.summary is not None]
    if missing:
        panel.notes.append(f"No evaluation.json for iteration(s) {', '.join(map(str, missing))}.")
    panel.notes.append("Iteration 0 = the initial members before any training. Error bars: 95% interval (ci95). "
                       "Dev accuracy picks the best member; its test accuracy is the black line.")
    ts = [t for t, _ in evals]
    fig = _new_figure(11, 4.5)
    axes = fig.subplots(1, 2, sharey=True)
    m = len(run.names)
    for ax, split in zip(axes, ("dev", "test")):
        any_point = False
        for k, n in enumerate(run.names):
            pts = [_acc((ev.get(split) or {}).get(n)) for _, ev in evals]
            ys = np.array([p[0] for p in pts])
            if not np.any(np.isfinite(ys)):
                continue
            any_point = True
            jitter = (k - (m - 1) / 2) * 0.03
            err = np.array([[p[1] for p in pts], [p[2] for p in pts]])
            ax.errorbar(np.array(ts) + jitter, ys, yerr=err, marker="o", markersize=4, capsize=3,
                        color=colors.get(n), label=n, linewidth=1.2)
        if split == "test":
            best = [_acc(ev.get("best_test")) for _, ev in evals]
            ys = np.array([b[0] for b in best])
            if np.any(np.isfinite(ys)):
                any_point = True
                err = np.array([[b[1] for b in best], [b[2] for b in best]])
                ax.errorbar(ts, ys, yerr=err, color="black", marker="*", markersize=10, linewidth=2.2,
                            linestyle="--", capsize=4, label="best member (by dev)")
                for (t, ev), y in zip(evals, ys):
                    if np.isfinite(y) and ev.get("best_member"):
                        ax.annotate(str(ev["best_member"]), (t, y), textcoords="offset points", xytext=(4, 6),
                                    fontsize=8)
        if not any_point:
            ax.text(0.5, 0.5, f"no {split} accuracy", transform=ax.transAxes, ha="center", va="center")
        ax.set_title(f"{split} accuracy")
        ax.set_xlabel("iteration")
        ax.set_xticks(ts)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("accuracy")
    panel.image = _png(fig)
    panel.alt = "dev and test accuracy"
    rows = []
    for t, ev in evals:
        best = ev.get("best_member")
        dev_best = (ev.get("dev") or {}).get(best) if best else None
        rows.append([t, best or "–", _acc_text(dev_best), _acc_text(ev.get("best_test"))])
    panel.html.append(_table(["iteration", "best member (dev)", "its dev accuracy", "its test accuracy"],
                             rows, 'class="data" id="evaluation-table"'))
    return panel


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


def panel_reputation_accuracy(run: RunData, colors) -> Panel:
    """The paper's Figure 5: does a member's reputation track its task performance?"""
    from sparta_jax.stats import pearson_r

    panel = Panel("reputation_accuracy", PANEL_TITLES["reputation_accuracy"])
    points = reputation_and_accuracy(run)
    if len(points) < 2:
        panel.notes.append("Needs reputations.json and a dev evaluation for at least two members after training "
                           "(a baseline run has no reputations).")
        return panel
    names = list(points)
    x, y = np.array([points[n][0] for n in names]), np.array([points[n][1] for n in names])
    r = pearson_r(x, y)
    task = ((run.config or {}).get("data") or {}).get("task") or ((run.config or {}).get("data") or {}).get("name")
    panel.notes.append(
        "Each member's mean end-of-iteration reputation R against its mean dev accuracy over the evaluated "
        f"iterations after training (the paper's Figure 5){f', task {task}' if task else ''}. Pearson r = "
        f"{_fmt(r, 3)} over {len(names)} members" + (" (undefined: fewer than 3 members or a constant side)"
                                                    if not np.isfinite(r) else "") + ".")
    fig = _new_figure(6, 4.2)
    ax = fig.subplots()
    for n in names:
        ax.scatter(points[n][0], points[n][1], color=colors.get(n), s=40, label=n)
        ax.annotate(n, points[n], textcoords="offset points", xytext=(4, 4), fontsize=8)
    if np.isfinite(r) and np.ptp(x) > 0:
        slope, intercept = np.polyfit(x, y, 1)
        xs = np.linspace(x.min(), x.max(), 2)
        ax.plot(xs, slope * xs + intercept, color="gray", ls="--", lw=1)
    ax.set_xlabel("mean reputation R")
    ax.set_ylabel("mean dev accuracy")
    ax.set_title(f"reputation vs dev accuracy (Pearson r = {_fmt(r, 3)})")
    ax.grid(alpha=0.3)
    panel.image = _png(fig)
    panel.alt = "reputation against dev accuracy"
    panel.html.append(_table(["member", "mean reputation R", "mean dev accuracy"],
                             [[n, _fmt(points[n][0], 4), _fmt(points[n][1], 3)] for n in names],
                             'class="data" id="reputation-accuracy"'))
    return panel


# ---------------------------------------------------------------------------------- 7. DPO
def panel_dpo(run: RunData, colors) -> Panel:
    from matplotlib.ticker import MaxNLocator

    panel = Panel("dpo", PANEL_TITLES["dpo"])
    metrics = (("loss", "DPO loss"), ("rewards/margins", "reward margin (chosen - rejected)"))
    series = {key: {n: ([], []) for n in run.names} for key, _ in metrics}
    boundaries = []
    step = 0
    for it in run.trained:
        if it.summary is None:
            panel.notes.append(f"iteration {it.t}: no summary.json (not trained yet); skipped.")
            continue
        train = it.summary.get("train") or {}
        history = [h for h in train.get("dpo_history") or [] if isinstance(h, dict)]
        per_member = train.get("dpo_per_member") or {}
        if not history and not per_member:
            panel.notes.append(f"iteration {it.t}: no DPO steps (pairs trained: {train.get('pairs_trained', 0)}).")
            continue
        boundaries.append((step, it.t))
        if not history:
            history = [per_member]
            panel.notes.append(f"iteration {it.t}: no per-step history; the iteration's mean is shown.")
        for h in history:
            step += 1
            for key, _ in metrics:
                vals = h.get(key)
                if not isinstance(vals, list):
                    continue
                for n, v in zip(run.names, vals):
                    if _is_num(v):
                        series[key][n][0].append(step)
                        series[key][n][1].append(float(v))
    if not boundaries:
        panel.notes.append("No DPO metrics in this run yet.")
        return panel
    panel.notes.insert(0, "Per optimizer step, per member (x: steps cumulative over iterations; dashed: "
                          "iteration boundaries). The table lists each iteration's mean per member.")
    fig = _new_figure(10, 6)
    axes = fig.subplots(2, 1, sharex=True)
    for ax, (key, label) in zip(axes, metrics):
        for n in run.names:
            xs, ys = series[key][n]
            if xs:
                ax.plot(xs, ys, marker="o" if step <= 60 else None, markersize=3, color=colors.get(n),
                        label=n, linewidth=1.2)
        _mark_iterations(ax, [(b + 0.5, t) for b, t in boundaries], label=ax is axes[0])
        if key == "loss":
            ax.axhline(math.log(2), color="0.6", linewidth=0.8, linestyle=":")
        else:
            ax.axhline(0.0, color="0.6", linewidth=0.8, linestyle=":")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.set_xlim(0.5, step + 0.5)  # keeps the boundary labels inside, even for a single step
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].legend(fontsize=8, ncol=max(1, min(5, len(run.names))))
    axes[0].set_title("DPO per step (dotted: log 2 loss / zero margin)")
    axes[1].set_xlabel("DPO step (cumulative over iterations)")
    panel.image = _png(fig)
    panel.alt = "DPO loss and reward margin"
    rows = []
    for it in run.trained:
        per_member = ((it.summary or {}).get("train") or {}).get("dpo_per_member") or {}
        if not per_member:
            continue
        for n_i, n in enumerate(run.names):
            row = [it.t, n]
            for key, _ in metrics:
                vals = per_member.get(key)
                row.append(_fmt(vals[n_i]) if isinstance(vals, list) and n_i < len(vals) else "–")
            rows.append(row)
    if rows:
        panel.html.append(_table(["iteration", "member", "mean loss", "mean reward margin"], rows, 'class="data"'))
    return panel


# -------------------------------------------------------------------------------- 8. config
def panel_config(run: RunData, colors) -> Panel:
    panel = Panel("config", PANEL_TITLES["config"])
    if run.config is None:
        panel.notes.append("No config.json in this workdir.")
        return panel
    text = json.dumps(run.config, indent=2, sort_keys=True, ensure_ascii=False)
    panel.html.append(f"<details><summary>config.json ({text.count(chr(10)) + 1} lines)</summary>"
                      f"<pre>{_esc(text)}</pre></details>")
    return panel


# ------------------------------------------------------------------------------- headline
def _headline(run: RunData) -> str:
    trained = run.trained
    completed = [it.t for it in trained if it.summary is not None]
    duels = sum(len(it.duels) for it in trained if it.duels is not None)
    answered_only = sum(len(it.answers) for it in trained if it.duels is None and it.answers is not None)
    pairs = sum(len(it.preferences) for it in trained if it.preferences is not None)
    rated_duels = sum(len(it.duels or []) for it in trained if it.preferences is not None)
    planned = (run.config or {}).get("iterations")
    rows = [("workdir", _esc(os.path.abspath(run.workdir)))]
    it_text = f"{len(completed)} completed"
    if planned is not None:
        it_text += f" of {planned} planned"
    partial = [it.t for it in trained if it.summary is None]
    if partial:
        it_text += f"; in progress or incomplete: {', '.join(map(str, partial))}"
    rows.append(("iterations", _esc(it_text)))
    if run.bases:  # each member's base model, grouped (a mixed tribe has several)
        by_base: dict = {}
        for name, base in run.bases.items():
            by_base.setdefault(base, []).append(name)
        rows.append(("members and bases", "<br>".join(f"{_esc(', '.join(names))}: <code>{_esc(base)}</code>"
                                                      for base, names in by_base.items())))
    method = (run.config or {}).get("method", "sparta")
    if method != "sparta":  # a baseline: one model, its own pairs (iteration_NNN/pairs.json)
        member = _read_json(os.path.join(run.workdir, "method.json"), [], "method.json") or {}
        rows.append(("method", _esc(f"{method}, training {member.get('member', '?')} (the initial tribe's best "
                                    "member by dev accuracy, or methods.member); no duels or reputations")))
    d_text = f"{duels} judged"
    if answered_only:
        d_text += f" (+{answered_only} answered, not judged yet)"
    rows.append(("duels", _esc(d_text)))
    rows.append(("preference pairs", _esc(f"{pairs} ({max(0, rated_duels - pairs)} duels without a preference)")))
    ranked = None
    for it in reversed(trained):
        end = (it.reputations or {}).get("end")
        if isinstance(end, dict) and end:
            ranked = (it.t, sorted(((n, v.get("R")) for n, v in end.items() if isinstance(v, dict) and _is_num(v.get("R"))),
                                   key=lambda x: -x[1]))
            break
    if ranked:
        t, order = ranked
        items = "".join(f"<li>{_esc(n)} <span class='num'>R = {r:.4f}</span></li>" for n, r in order)
        rows.append((f"reputation ranking (end of iteration {t})", f"<ol class='rank' id='ranking'>{items}</ol>"))
    else:
        rows.append(("reputation ranking", "no reputations yet"))
    last_eval = next(((it.t, it.evaluation) for it in reversed(run.iterations) if it.evaluation is not None), None)
    if last_eval:
        t, ev = last_eval
        best = ev.get("best_member")
        rows.append((f"best member (dev, after iteration {t})",
                     f"<b>{_esc(best or '–')}</b>: test accuracy {_esc(_acc_text(ev.get('best_test')))}"))
        first = next(it.evaluation for it in run.iterations if it.evaluation is not None)
        if first is not ev:
            rows.append(("best initial member (iteration 0 or first evaluated)",
                         f"{_esc(first.get('best_member') or '–')}: test accuracy "
                         f"{_esc(_acc_text(first.get('best_test')))}"))
        best_dev = pick({it.t: it.evaluation for it in run.iterations if it.evaluation is not None}, "best_dev")
        select = ((run.config or {}).get("evaluation") or {}).get("select", "last")
        rows.append((f"best dev over the run (evaluation.select = {_esc(select)})",
                     f"{_esc(best_dev.member)} after iteration {best_dev.iteration}: test accuracy "
                     f"{_esc(_acc_text(best_dev.test))}" + (" (reported by this run; the gain claimed is the "
                                                             "last iteration's)" if select == "best_dev" else "")))
    else:
        rows.append(("best member", "no evaluation in this run"))
    signals = [it.judge_signal for it in run.trained if isinstance(it.judge_signal, dict)]
    if signals:  # pooled over iterations: how often a judge scored the right answer higher
        wins, n = pooled_matched(signals)
        if n:
            lo, hi = wilson_interval(int(round(wins)), n)
            rows.append(("judge signal (all iterations)", _esc(
                f"right answer scored higher in {wins / n:.3f} [{lo:.3f}, {hi:.3f}] of {n} verdicts on duels with "
                f"one right answer (0.5 = chance)")))
    cfg = run.config or {}
    setting = []
    for label, value in (("members", len(run.names)), ("mode", cfg.get("mode")),
                         ("judge mode", (cfg.get("judge") or {}).get("mode")),
                         ("scheme", (cfg.get("reputation") or {}).get("scheme")),
                         ("instructions per iteration", cfg.get("instructions_per_iteration"))):
        if value is not None:
            setting.append(f"{label} {value}")
    if setting:
        rows.append(("setting", _esc(", ".join(setting))))
    body = "".join(f"<tr><th>{_esc(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="headline" id="headline">{body}</table>'


def _iteration_table(run: RunData) -> str:
    header = ["iteration", "answers", "duels", "pairs", "no preference", "unparseable / scores",
              "R spread", "DPO loss", "DPO margin", "seconds", "missing"]
    rows = []
    for it in run.trained:
        s = it.summary or {}
        missing = [name for name, v in (("answers", it.answers), ("duels", it.duels), ("reputations", it.reputations),
                                        ("preferences", it.preferences), ("summary", it.summary)) if v is None]
        n_duels = len(it.duels) if it.duels is not None else None
        n_pairs = len(it.preferences) if it.preferences is not None else None
        unp = (f"{s['unparseable_scores']}/{s['judge_scores']}" if "unparseable_scores" in s and "judge_scores" in s
               else "–")
        rows.append([
            it.t, len(it.answers) if it.answers is not None else "–", _fmt(n_duels), _fmt(n_pairs),
            _fmt(n_duels - n_pairs) if n_duels is not None and n_pairs is not None else "–", unp,
            _fmt(s.get("reputation_spread")), _fmt(s.get("dpo_loss")), _fmt(s.get("dpo_margin")),
            _fmt(s.get("seconds"), 0), ", ".join(missing) or "–"])
    if not rows:
        return "<p class='note'>No iteration folder yet.</p>"
    return _table(header, rows, 'class="data" id="iterations"')


# ---------------------------------------------------------------------------------- output
_CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 24px auto; max-width: 1200px;
       color: #222; padding: 0 16px; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 4px; margin-top: 2em; }
.sub { color: #666; font-size: 0.9em; }
table { border-collapse: collapse; margin: 10px 0; font-size: 0.88em; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
thead th, table.headline th { background: #f3f3f3; }
table.data td { font-variant-numeric: tabular-nums; }
ol.rank { margin: 0; padding-left: 1.4em; } .num { color: #555; font-variant-numeric: tabular-nums; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
.note { color: #444; margin: 4px 0; } .panel-error { color: #a00; font-weight: bold; }
pre { background: #f7f7f7; padding: 8px; overflow-x: auto; font-size: 0.85em; }
nav a { margin-right: 12px; } details { margin: 8px 0; } summary { cursor: pointer; }
"""

_BUILDERS = {
    "reputation_accuracy": panel_reputation_accuracy,
    "reputation": panel_reputation,
    "win_matrix": panel_win_matrix,
    "judge_agreement": panel_judge_agreement,
    "judge_signal": panel_judge_signal,
    "margins": panel_margins,
    "unparseable": panel_unparseable,
    "evaluation": panel_evaluation,
    "dpo": panel_dpo,
    "config": panel_config,
    "audit": panel_audit,
}


def build_panels(run: RunData) -> List[Panel]:
    """Every panel; one that fails renders its error instead of stopping the report."""
    colors = _colors(run.names)
    panels = []
    for pid, title in PANELS:
        try:
            panels.append(_BUILDERS[pid](run, colors))
        except Exception as e:  # a broken file must not cost the rest of the report
            traceback.print_exc(file=sys.stderr)
            panels.append(Panel(pid, title, error=f"{type(e).__name__}: {e}"))
    return panels


def render_html(run: RunData, panels: Sequence[Panel]) -> str:
    nav = "".join(f'<a href="#{p.id}">{_esc(p.title)}</a>' for p in panels)
    problems = list(run.problems) + [q for it in run.iterations for q in it.problems]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Sparta run report: {_esc(os.path.basename(os.path.abspath(run.workdir)))}</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>Sparta Alignment run report</h1>",
        f"<p class='sub'>{_esc(os.path.abspath(run.workdir))} &middot; generated "
        f"{_esc(time.strftime('%Y-%m-%d %H:%M:%S'))}</p>",
        f"<nav>{nav}</nav>",
        '<section id="headline-section"><h2>Headline</h2>',
        _headline(run),
        "<h3>Per iteration</h3>",
        _iteration_table(run),
    ]
    if problems:
        parts.append("<h3>Files skipped</h3><ul>" + "".join(f"<li>{_esc(q)}</li>" for q in problems) + "</ul>")
    parts.append("</section>")
    for k, p in enumerate(panels, 1):
        parts.append(f'<section id="{p.id}"><h2>{k}. {_esc(p.title)}</h2>')
        if p.error:
            parts.append(f"<p class='panel-error'>Could not draw this panel: {_esc(p.error)}</p>")
        for note in p.notes:
            parts.append(f"<p class='note'>{_esc(note)}</p>")
        if p.image is not None:
            data = base64.b64encode(p.image).decode("ascii")
            parts.append(f'<img alt="{_esc(p.alt or p.title)}" src="data:image/png;base64,{data}">')
        parts.extend(p.html)
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(workdir: str) -> str:
    """Regenerates `<workdir>/report/report.html` (and one PNG per plotted panel beside it)
    from the run's files; returns the HTML's path. Every file is written atomically.

    Only process 0 of a multi-host run should call it (like every other non-Orbax write):
    the workdir is shared, and concurrent writers would race on the same files. It reads
    whatever is there, so it can run during a run or after one was killed.
    """
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:  # never switch the backend under a pyplot user
        matplotlib.use("Agg")
    run = load_run(workdir)
    panels = build_panels(run)
    out_dir = os.path.join(workdir, REPORT_DIR)
    os.makedirs(out_dir, exist_ok=True)
    written = set()
    for p in panels:
        if p.image is not None:
            name = f"{p.id}.png"
            _atomic_write(os.path.join(out_dir, name), p.image)
            written.add(name)
    for pid, _ in PANELS:  # drop a stale PNG of a panel that has nothing to plot now
        name = f"{pid}.png"
        if name not in written and os.path.exists(os.path.join(out_dir, name)):
            try:
                os.remove(os.path.join(out_dir, name))
            except OSError:
                pass
    path = os.path.join(out_dir, REPORT_FILE)
    _atomic_write(path, render_html(run, panels).encode("utf-8"))
    return path


def evaluation_markdown(run: RunData) -> str:
    """Dev and test score of every member per evaluation, and the best member's, as Markdown."""
    evals = [(it.t, it.evaluation) for it in run.iterations if it.evaluation is not None]
    if not evals:
        return "No evaluation.json in this run."

    def cell(entry):
        if not isinstance(entry, dict) or not _is_num(entry.get("accuracy")):
            return "-"
        lo, hi = entry.get("ci95", (math.nan, math.nan))
        count = f"{entry['n_correct']}/{entry['n']}" if _is_num(entry.get("n_correct")) else f"n={entry.get('n')}"
        return f"{entry['accuracy']:.3f} [{lo:.3f}, {hi:.3f}] ({count})"

    lines = ["| after iteration | member | dev | test |", "|---:|---|---|---|"]
    for t, ev in evals:
        best = ev.get("best_member")
        for name in run.names:
            label = f"**{name}** (best on dev)" if name == best else name
            lines.append(f"| {t} | {label} | {cell(ev.get('dev', {}).get(name))} | {cell(ev.get('test', {}).get(name))} |")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sparta_jax.report", description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", required=True, help="the run's workdir (python -m sparta_jax.main --workdir)")
    parser.add_argument("--markdown", action="store_true",
                        help="print the dev/test table of every evaluation as Markdown instead of writing the report")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.workdir):
        print(f"error: no such directory: {args.workdir}", file=sys.stderr)
        return 1
    if args.markdown:
        print(evaluation_markdown(load_run(args.workdir)))
        return 0
    print(write_report(args.workdir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
