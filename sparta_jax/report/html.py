"""Assembling the report page (headline table, per-iteration table, one section per panel) and
writing it: `write_report` regenerates `<workdir>/report/report.html` and the panels' PNGs,
every file atomically. Also the dev/test table as Markdown (`evaluation_markdown`)."""
from __future__ import annotations

import base64
import math
import os
import sys
import time
from typing import Sequence

from sparta_jax.evaluation import wilson_interval
from sparta_jax.report.load import RunData, _read_json, load_run
from sparta_jax.report.panels import PANELS, Panel, _acc_text, _esc, _fmt, _table, build_panels
from sparta_jax.report.stats import _is_num
from sparta_jax.selection import pick
from sparta_jax.sparta.duel_log import write_bytes_atomic
from sparta_jax.sparta.judge_signal import pooled_matched


REPORT_DIR = "report"


REPORT_FILE = "report.html"


# -------------------------------------------------------------------------------- headline
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


def _atomic_write(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_bytes_atomic(path, data)


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
