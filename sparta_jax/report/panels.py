"""One function per report panel: a loaded run -> a Panel (a matplotlib figure as PNG bytes, notes
and HTML tables), and `build_panels`, which draws them all in report order."""
from __future__ import annotations

import dataclasses
import html
import io
import json
import math
import sys
import traceback
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from sparta_jax.report.load import RunData
from sparta_jax.report.stats import (_acc, _is_num, judge_agreement, reputation_and_accuracy, unparseable_counts,
                                     win_counts)


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


def _mark_iterations(ax, boundaries: Sequence[Tuple[float, int]], label: bool = True) -> None:
    """Dashed vertical lines at iteration starts (not the first), labels at the top."""
    for k, (x, t) in enumerate(boundaries):
        if k > 0:
            ax.axvline(x, color="0.5", linestyle="--", linewidth=0.8)
        if label:
            ax.text(x, 1.0, f" it {t}", transform=ax.get_xaxis_transform(), va="top", ha="left",
                    fontsize=8, color="0.35")


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


# --------------------------------------------------------------------------- 1. reputation
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


# --------------------------------------------------------------------------- 2. win matrix
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


# ---------------------------------------------------------------------- 3. judge agreement
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


# ------------------------------------------------------------------------------ 4. margins
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


# -------------------------------------------------------------------------- 5. unparseable
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


# ------------------------------------------------------------------------------- 8. config
def panel_config(run: RunData, colors) -> Panel:
    panel = Panel("config", PANEL_TITLES["config"])
    if run.config is None:
        panel.notes.append("No config.json in this workdir.")
        return panel
    text = json.dumps(run.config, indent=2, sort_keys=True, ensure_ascii=False)
    panel.html.append(f"<details><summary>config.json ({text.count(chr(10)) + 1} lines)</summary>"
                      f"<pre>{_esc(text)}</pre></details>")
    return panel


# ------------------------------------------------------------------------------ all panels
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
