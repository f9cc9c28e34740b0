"""Runs side by side, with a paired test: does training change held-out accuracy?

    python -m sparta_jax.compare WORKDIR [WORKDIR ...]          # a Markdown table; --json for the figures
    python -m sparta_jax.compare WORKDIR ... --markdown OUT.md --html OUT.html   # also the paper's layout

The paper's layout (`paper_table`): rows are methods (with "best initial", the initial tribe's
best member by dev accuracy), columns are tasks; each cell is the best member's test accuracy
after the run with a Wilson 95% interval, the best cell per column in bold; then McNemar's
exact test of each method against "best initial" and against Sparta on the same test items,
and each method's minutes and preference pairs. A method's run is the workdir whose config
names it (`method`; Sparta's ablations are labelled by their switches).

Each workdir is a finished (or partial) run of `sparta_jax.main`. For each, the best member by
dev accuracy is compared before training (the iteration-0 evaluation) and after its last
evaluated iteration, on the same test items: accuracy with a Wilson 95% interval, McNemar's
exact test on the paired per-item outcomes, the mean answer length and the share of answers
with no parseable answer (a gain that comes only from answering within the token budget shows
there), the judges' audit AUC when the workdir holds audit.json, and the minutes the run took.
Runs that share tribe, data and seeds have the same iteration-0 evaluation; it is printed once
as the "no training" reference, and a mismatch is reported. For runs with duel logs, a last table
gives the reach of reputation weighting per iteration (`sparta.weight_reach`): how many duels a
judge dissents on, what weight ratio would turn them, what the run's reputations gave, and the
winners and trained pairs they changed against equal weights.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Optional, Sequence

import html as html_lib

from sparta_jax.evaluation import wilson_interval
from sparta_jax.run_summary import own_and_replayed, pairs_text
from sparta_jax.selection import mean_member, pick, read_evaluations
from sparta_jax.sparta.duel_log import read_duel_log
from sparta_jax.sparta.weight_reach import RATIO_STEPS, iteration_reach
from sparta_jax.stats import mcnemar_exact, pearson_r, sign_test
from sparta_jax.workdir import iteration_dir, read_json


def arm_label(config: dict) -> str:
    judge = (config.get("judge") or {}).get("mode")
    if judge == "verifier":
        return "verifier control (not Sparta)"
    if config.get("label"):
        return str(config["label"])
    if config.get("method") == "spin":  # no judgments: the data's reference answers are chosen
        return f"{method_label(config)}, the reference answers chosen over its own"
    if config.get("method", "sparta") != "sparta":  # a baseline judges itself
        return f"{method_label(config)}, its own {judge} judgments"
    scheme = (config.get("reputation") or {}).get("scheme")
    return f"Sparta, {judge} judges, {scheme} reputation" + "".join(f", {s}" for s in _training_switches(config))


def _training_switches(config: dict) -> list[str]:
    scale = (config.get("dpo") or {}).get("best_member_lr_scale", 1.0)
    return [] if scale == 1.0 else [f"best member at {scale:g}x the rate"]


def method_label(config: dict) -> str:
    """The row of the paper's table: a baseline's name, or Sparta with its ablation switches."""
    from sparta_jax.methods import LABELS

    if config.get("label"):  # a sweep names its points
        return str(config["label"])
    method = config.get("method", "sparta")
    if method != "sparta":
        return LABELS.get(method, method)
    if (config.get("judge") or {}).get("mode") == "verifier":
        return "verifier control (not Sparta)"
    switches = _ablation_switches(config) + _training_switches(config)
    return "Sparta" + (f" ({', '.join(switches)})" if switches else "")


def _ablation_switches(config: dict) -> list[str]:
    """What a Sparta run turned off: its reputation weights, its match-making."""
    switches = []
    if (config.get("reputation") or {}).get("scheme") == "uniform":
        switches.append("uniform votes")
    if (config.get("matchmaking") or {}).get("alpha") == 1.0:
        switches.append("random match-making")
    return switches


def is_sparta_reference(config: dict) -> bool:
    """Whether a run is Sparta itself, the arm the others are tested against: its own judges and
    reputation weights, however it trains (a slower best member is the recipe, not an ablation),
    and not a sweep's named point, an ablation or the verifier control."""
    return (config.get("method", "sparta") == "sparta" and not config.get("label")
            and (config.get("judge") or {}).get("mode") != "verifier" and not _ablation_switches(config))


def _sparta_reference(arms: Sequence[dict], task: str | None = None) -> dict | None:
    """The first Sparta arm (`is_sparta_reference`) on the command line, on `task` if given."""
    return next((a for a in arms if a.get("sparta_reference") and task in (None, a["task"])), None)


def task_label(config: dict) -> str:
    data = config.get("data") or {}
    return str(data.get("task") or data.get("name") or os.path.basename(str(data.get("path") or "")) or
               data.get("kind") or "?")


def evaluations(workdir: str) -> dict[int, dict]:
    return read_evaluations(workdir)


def best_test(ev: dict) -> dict:
    return ev["test"][ev["best_member"]]


def judges_and_reputations(workdir: str, last: int, audit: dict | None) -> dict | None:
    """Each member's reputation R at the end of the last iteration against its audit AUC, and
    Pearson's r between the two (None without reputations.json or a per-judge audit)."""
    end = end_reputations(workdir, last)
    per_judge = (audit or {}).get("per_judge") or {}
    if end is None or not per_judge:
        return None
    auc = {name: per_judge[name].get("auc") for name in end if name in per_judge}
    both = [n for n in end if auc.get(n) is not None]
    return {"reputation": end, "auc": auc,
            "pearson_r": pearson_r([end[n] for n in both], [auc[n] for n in both]) if len(both) >= 3 else None}


def end_reputations(workdir: str, t: int) -> dict | None:
    """{member: R} at the end of iteration t (None without its reputations.json)."""
    reps = read_json(os.path.join(iteration_dir(workdir, t), "reputations.json"))
    return {name: float(v["R"]) for name, v in reps.get("end", {}).items()} if reps else None


def weighting_reach(workdir: str, config: dict, last: int) -> list:
    """Per iteration with a duel log and reputations: how far the judges' reputation weights could
    move the duels' pairs, and what they moved against equal weights (`weight_reach`)."""
    out = []
    for t in range(1, last + 1):
        end = end_reputations(workdir, t)
        duels = os.path.join(iteration_dir(workdir, t), "duels.jsonl")
        if end is None or not os.path.exists(duels):
            continue
        out.append({"iteration": t, **iteration_reach(read_duel_log(duels), end, config.get("mode", "fixed"),
                                                      float((config.get("dpo") or {}).get("min_margin", 0.0)))})
    return out


def arm_summary(workdir: str) -> dict:
    """The before/after figures of one run (see the module docstring)."""
    config = read_json(os.path.join(workdir, "config.json")) or {}
    evals = evaluations(workdir)
    if 0 not in evals or len(evals) < 2:
        raise ValueError(f"{workdir}: needs the iteration-0 evaluation and at least one after training")
    last = max(evals)
    before, after = best_test(evals[0]), best_test(evals[last])
    if "scores" not in before or "scores" not in after:
        raise ValueError(f"{workdir}: evaluation.json has no per-item scores (written by runs since the paired test)")
    seconds = sum(ev.get("seconds", 0.0) for ev in evals.values())
    pairs, replayed = [], []
    for t in range(1, last + 1):
        summary = read_json(os.path.join(iteration_dir(workdir, t), "summary.json")) or {}
        seconds += summary.get("seconds", 0.0)
        own, again = own_and_replayed(summary)
        pairs.append(own)
        replayed.append(again)
    audit = read_json(os.path.join(workdir, "audit.json"))
    mean_before, mean_after = mean_member(evals[0]), mean_member(evals[last])
    return {
        "workdir": workdir, "label": arm_label(config), "method": method_label(config), "task": task_label(config),
        "sparta_reference": is_sparta_reference(config),
        "data": config.get("data"), "iterations": last, "pairs_trained": pairs,
        "pairs_replayed": replayed,
        "before": {"member": evals[0]["best_member"], **_figures(before)},
        "after": {"member": evals[last]["best_member"], **_figures(after)},
        "best_dev": _best_dev(evals),
        "paired": mcnemar_exact(before["scores"], after["scores"]),
        "audit_auc": (audit or {}).get("pooled", {}).get("auc"), "minutes": seconds / 60.0,
        "initial_scores": before["scores"], "final_scores": after["scores"],
        "mean_before": mean_before, "mean_after": mean_after,
        "mean_paired": (sign_test(mean_before["item_means"], mean_after["item_means"])
                        if mean_before and mean_after and mean_before["n"] == mean_after["n"] else None),
        "judges": judges_and_reputations(workdir, last, audit),
        "weighting_reach": weighting_reach(workdir, config, last),
    }


def _best_dev(evals: dict) -> dict:
    """The best dev score over the run (iteration 0 included): its member, iteration and test figures."""
    p = pick(evals, "best_dev")
    return {"member": p.member, "iteration": p.iteration, **(_figures(p.test) if p.test else {})}


def _figures(entry: dict) -> dict:
    n, k = entry["n"], entry["n_correct"]
    return {"accuracy": k / n, "n": n, "n_correct": k, "ci95": list(wilson_interval(k, n)),
            "no_answer_rate": entry["n_unparsed"] / n, "mean_answer_chars": entry.get("mean_answer_chars")}


def markdown(arms: Sequence[dict]) -> str:
    def acc(f):
        return f"{f['accuracy']:.3f} [{f['ci95'][0]:.3f}, {f['ci95'][1]:.3f}] ({f['n_correct']}/{f['n']})"

    def form(f):
        chars = f.get("mean_answer_chars")
        return f"{'–' if chars is None else f'{chars:.0f}'} / {f['no_answer_rate']:.2f}"

    def best_dev(a):
        b = a.get("best_dev")
        if not b or "accuracy" not in b:
            return "–"
        return f"{b['member']} after iteration {b['iteration']}: {b['accuracy']:.3f}"

    lines = ["| arm | best member test accuracy (last) | lost / gained | McNemar p (vs no training) | answer chars / "
             "no answer | best dev over the run: test | judge audit AUC | own pairs trained | minutes |",
             "|---|---|---|---:|---|---|---:|---|---:|"]
    first = arms[0]
    lines.append(f"| no training (iteration 0, {first['before']['member']}) | {acc(first['before'])} | – | – | "
                 f"{form(first['before'])} | – | {_num(first['audit_auc'])} | – | – |")
    for a in arms:
        p = a["paired"]
        lines.append(f"| {a['label']}, after {a['iterations']} iterations ({a['after']['member']}) | {acc(a['after'])} | "
                     f"{p['lost']} / {p['gained']} | {p['p_value']:.2g} | {form(a['after'])} | {best_dev(a)} | "
                     f"{_num(a['audit_auc'])} | {pairs_text(a['pairs_trained'], a.get('pairs_replayed', []))} | "
                     f"{a['minutes']:.0f} |")
    notes = [f"- {a['workdir']}: the initial evaluation differs from {first['workdir']}'s (not the same tribe, "
             "data or seeds?)" for a in arms[1:] if a["initial_scores"] != first["initial_scores"]]
    return "\n".join(lines + notes)


def _mean_text(m: dict | None) -> str:
    if m is None:
        return "–"
    ci = m["ci95"] or [float("nan")] * 2
    return f"{m['accuracy']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def _sign_text(t: dict | None) -> str:
    return "–" if t is None else f"{t['up']} / {t['down']}, {t['p_value']:.2g}"


def mechanism_markdown(arms: Sequence[dict]) -> str:
    """The mechanism table (docs/results.md, "Measured demonstration: competent judges"): best- and
    mean-member test accuracy against no training, the sign test on per-item member means (each
    arm's against no training and against Sparta's), and each member's final reputation with its
    audit AUC (Pearson r). Empty when no arm scored every member on test."""
    if not any(a.get("mean_after") for a in arms):
        return ""
    first = arms[0]
    sparta = _sparta_reference(arms)
    lines = ["| arm | best member test accuracy | McNemar p vs no training | mean member test accuracy [bootstrap 95%] "
             "| items up / down, sign test p vs no training | vs Sparta: items up / down, p | minutes |",
             "|---|---|---:|---|---|---|---:|",
             f"| no training (iteration 0) | {_cell_text(first['before'])} | – | {_mean_text(first['mean_before'])} "
             "| – | – | – |"]
    for a in arms:
        vs = None
        if sparta is not None and a is not sparta and a.get("mean_after") and sparta.get("mean_after"):
            vs = sign_test(sparta["mean_after"]["item_means"], a["mean_after"]["item_means"])
        lines.append(f"| {a['label']} ({a['after']['member']}) | {_cell_text(a['after'])} | "
                     f"{a['paired']['p_value']:.2g} | {_mean_text(a.get('mean_after'))} | "
                     f"{_sign_text(a.get('mean_paired'))} | {_sign_text(vs)} | {a['minutes']:.0f} |")
    judged = [a for a in arms if a.get("judges")]
    if judged:
        names = list(judged[0]["judges"]["reputation"])
        lines += ["", "| arm | " + " | ".join(f"{n}: final R (audit AUC)" for n in names) + " | Pearson r(R, AUC) |",
                  "|---|" + "---:|" * (len(names) + 1)]
        for a in judged:
            j = a["judges"]
            cells = [f"{j['reputation'][n]:.1f} ({_num(j['auc'].get(n))})" if n in j["reputation"] else "–"
                     for n in names]
            lines.append(f"| {a['label']} | " + " | ".join(cells) + f" | {_num(j['pearson_r'])} |")
    return "\n".join(lines)


def reach_markdown(arms: Sequence[dict]) -> str:
    """The reach of reputation weighting, per arm and iteration (`weight_reach`): duels judged,
    those with a judge who disagrees with the others, how many weights of ratio up to 1.1 ... 4
    could turn, the largest ratio the run's reputations gave, and what those reputations changed
    against equal weights. Empty when no arm has a duel log."""
    rows = [(a, r) for a in arms for r in a.get("weighting_reach") or []]
    if not rows:
        return ""
    steps = " / ".join(f"{k:g}" for k in RATIO_STEPS)
    lines = [f"| arm | iteration | duels judged | a judge dissents | turnable at weight ratio {steps} "
             "| largest ratio of the run's R | winners turned | pairs trained only under equal / reputation weights |",
             "|---|---:|---:|---:|---|---:|---:|---|"]
    for a, r in rows:
        turnable = " / ".join(str(r["turnable_at"][str(k)]) for k in RATIO_STEPS)
        lines.append(f"| {a['label']} | {r['iteration']} | {r['duels']} | {r['dissent']} | {turnable} | "
                     f"{r['max_weight_ratio']:.3f} | {r['winners_turned']} | "
                     f"{r['trained_only_equal']} / {r['trained_only_reputation']} |")
    return "\n".join(lines)


BEST_INITIAL = "best initial"


def paper_table(arms: Sequence[dict]) -> dict:
    """The paper's layout from arm summaries: {"tasks", "rows": [{"method", "cells": {task: cell}}],
    "tests": [{"task", "method", "vs", "p_value", "lost", "gained"}], "cost": {method: ...},
    "notes"}. A cell is the figures of `_figures` plus "best" (the top accuracy of its column)."""
    tasks = list(dict.fromkeys(a["task"] for a in arms))
    order = list(dict.fromkeys(a["method"] for a in sorted(arms, key=_method_rank)))
    cells: dict[tuple[str, str], dict] = {}
    notes, tests = [], []
    for a in arms:
        key = (a["method"], a["task"])
        if key in cells:
            notes.append(f"{a['workdir']}: a second run of {a['method']} on {a['task']}; the table shows "
                         f"{cells[key]['workdir']}")
            continue
        cells[key] = {**a["after"], "workdir": a["workdir"], "scores": a["final_scores"]}
        initial = cells.setdefault((BEST_INITIAL, a["task"]), {**a["before"], "workdir": a["workdir"],
                                                               "scores": a["initial_scores"], "data": a["data"]})
        if initial["scores"] != a["initial_scores"] or initial["data"] != a["data"]:
            notes.append(f"{a['workdir']}: its initial evaluation differs from {initial['workdir']}'s (not the same "
                         "tribe, data or seeds): no paired tests for it")
            cells[key]["unpaired"] = True
    for task in tasks:
        column = [c for (m, t), c in cells.items() if t == task]
        top = max(c["accuracy"] for c in column)
        for c in column:
            c["best"] = c["accuracy"] == top
        initial, reference = cells[(BEST_INITIAL, task)], _sparta_reference(arms, task)
        sparta = None if reference is None else cells.get((reference["method"], task))
        for method in order:
            c = cells.get((method, task))
            if c is None or c.get("unpaired"):
                continue
            for vs, other in ((BEST_INITIAL, initial), (reference["method"] if reference else None, sparta)):
                if other is None or other is c or other.get("unpaired") or len(other["scores"]) != len(c["scores"]):
                    continue
                tests.append({"task": task, "method": method, "vs": vs, **mcnemar_exact(other["scores"], c["scores"])})
    cost = {}
    for a in arms:
        entry = cost.setdefault(a["method"], {"minutes": 0.0, "pairs": 0, "replayed": 0, "runs": 0})
        entry["minutes"] += a["minutes"]
        entry["pairs"] += sum(p or 0 for p in a["pairs_trained"])
        entry["replayed"] += sum(p or 0 for p in a.get("pairs_replayed", []))
        entry["runs"] += 1
    rows = [{"method": m, "cells": {t: cells.get((m, t)) for t in tasks}} for m in [BEST_INITIAL] + order]
    return {"tasks": tasks, "rows": rows, "tests": tests, "cost": cost, "notes": notes}


def _method_rank(arm: dict):
    from sparta_jax.methods import LABELS

    labels = list(LABELS.values())
    return (labels.index(arm["method"]) if arm["method"] in labels else len(labels), arm["method"])


def _cell_text(c: dict | None) -> str:
    if c is None:
        return "–"
    return f"{c['accuracy']:.3f} [{c['ci95'][0]:.3f}, {c['ci95'][1]:.3f}]"


def paper_markdown(table: dict) -> str:
    tasks = table["tasks"]
    lines = ["| method | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
    for row in table["rows"]:
        texts = [(f"**{_cell_text(c)}**" if c and c.get("best") else _cell_text(c)) for c in row["cells"].values()]
        lines.append(f"| {row['method']} | " + " | ".join(texts) + " |")
    lines += ["", "Test accuracy of the best member by dev accuracy (a baseline: its one model), Wilson 95% "
              "interval; bold: the best of its column.", "",
              "| task | method | vs | lost / gained | McNemar p |", "|---|---|---|---|---:|"]
    lines += [f"| {x['task']} | {x['method']} | {x['vs']} | {x['lost']} / {x['gained']} | {x['p_value']:.2g} |"
              for x in table["tests"]]
    lines += ["", "| method | runs | minutes | own preference pairs trained | replayed pairs trained again |",
              "|---|---:|---:|---:|---:|"]
    lines += [f"| {m} | {c['runs']} | {c['minutes']:.1f} | {c['pairs']} | {c['replayed']} |"
              for m, c in table["cost"].items()]
    return "\n".join(lines + [""] + [f"- {n}" for n in table["notes"]]).rstrip() + "\n"


def paper_html(table: dict) -> str:
    e = html_lib.escape

    def cell(c):
        text = e(_cell_text(c))
        return f"<td><b>{text}</b></td>" if c and c.get("best") else f"<td>{text}</td>"

    head = "".join(f"<th>{e(t)}</th>" for t in table["tasks"])
    rows = "".join(f"<tr><th>{e(r['method'])}</th>{''.join(cell(c) for c in r['cells'].values())}</tr>"
                   for r in table["rows"])
    tests = "".join(f"<tr><td>{e(x['task'])}</td><td>{e(x['method'])}</td><td>{e(x['vs'])}</td>"
                    f"<td>{x['lost']} / {x['gained']}</td><td>{x['p_value']:.2g}</td></tr>" for x in table["tests"])
    cost = "".join(f"<tr><td>{e(m)}</td><td>{c['runs']}</td><td>{c['minutes']:.1f}</td><td>{c['pairs']}</td>"
                   f"<td>{c['replayed']}</td></tr>" for m, c in table["cost"].items())
    notes = "".join(f"<li>{e(n)}</li>" for n in table["notes"])
    style = "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:4px 8px;text-align:right}"
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>sparta_jax comparison</title>"
            f"<style>{style}</style></head><body><h1>Methods by task</h1>"
            f"<table><tr><th>method</th>{head}</tr>{rows}</table>"
            "<p>Test accuracy of the best member by dev accuracy (a baseline: its one model), Wilson 95% interval; "
            "bold: the best of its column.</p><h2>Paired tests (McNemar, exact)</h2>"
            "<table><tr><th>task</th><th>method</th><th>vs</th><th>lost / gained</th><th>p</th></tr>"
            f"{tests}</table><h2>Cost</h2><table><tr><th>method</th><th>runs</th><th>minutes</th>"
            f"<th>own preference pairs trained</th><th>replayed pairs trained again</th></tr>{cost}</table><ul>{notes}</ul></body></html>\n")


def _num(x, digits: int = 2) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workdirs", nargs="+")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON instead of Markdown")
    parser.add_argument("--markdown", metavar="OUT", help="also write the paper-layout table (Markdown) here")
    parser.add_argument("--html", metavar="OUT", help="also write the paper-layout table (HTML) here")
    args = parser.parse_args(argv)
    try:
        arms = [arm_summary(w) for w in args.workdirs]
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    table = paper_table(arms)
    extra = "".join(text + "\n\n" for text in (mechanism_markdown(arms), reach_markdown(arms)) if text)
    print(json.dumps({"arms": arms, "paper_table": table}, indent=1) if args.json
          else markdown(arms) + "\n\n" + extra + paper_markdown(table))
    for path, text in ((args.markdown, paper_markdown), (args.html, paper_html)):
        if path:
            with open(path, "w") as f:
                f.write(text(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
