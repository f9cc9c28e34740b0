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

The package, one job per module (each imports only the ones above it):
  load.py      reading the workdir into RunData and IterationData
  stats.py     the statistics the panels need (win counts, judge agreement, ...)
  panels.py    one function per panel: figure, notes and tables -> Panel
  html.py      the page (headline, sections) and write_report; the Markdown table
  __main__.py  the command line
"""
from sparta_jax.report.load import IterationData, RunData, load_run
from sparta_jax.report.stats import (WinCounts, judge_agreement, reputation_and_accuracy, unparseable_counts,
                                     win_counts)
from sparta_jax.report.panels import (PANEL_TITLES, PANELS, Panel, _colors, build_panels, panel_audit,
                                      panel_config, panel_dpo, panel_evaluation, panel_judge_agreement,
                                      panel_judge_signal, panel_margins, panel_reputation,
                                      panel_reputation_accuracy, panel_unparseable, panel_win_matrix)
from sparta_jax.report.html import REPORT_DIR, REPORT_FILE, evaluation_markdown, render_html, write_report

__all__ = [
    "REPORT_DIR", "REPORT_FILE", "PANELS", "PANEL_TITLES",
    "IterationData", "RunData", "load_run",
    "WinCounts", "win_counts", "judge_agreement", "unparseable_counts", "reputation_and_accuracy",
    "Panel", "build_panels", "panel_reputation", "panel_win_matrix", "panel_judge_agreement", "panel_judge_signal",
    "panel_audit", "panel_margins", "panel_unparseable", "panel_evaluation", "panel_reputation_accuracy",
    "panel_dpo", "panel_config",
    "render_html", "write_report", "evaluation_markdown",
    "_colors",  # used by tests/test_report.py
]
