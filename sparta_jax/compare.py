"""Runs side by side, with a paired test: does training change held-out accuracy?

    python -m sparta_jax.compare WORKDIR [WORKDIR ...]          # a Markdown table; --json for the figures

Each workdir is a finished (or partial) run of `sparta_jax.main`. For each, the best member by
dev accuracy is compared before training (the iteration-0 evaluation) and after its last
evaluated iteration, on the same test items: accuracy with a Wilson 95% interval, McNemar's
exact test on the paired per-item outcomes, the mean answer length and the share of answers
with no parseable answer (a gain that comes only from answering within the token budget shows
there), the judges' audit AUC when the workdir holds audit.json, and the minutes the run took.
Runs that share tribe, data and seeds have the same iteration-0 evaluation; it is printed once
as the "no training" reference, and a mismatch is reported.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Optional, Sequence

from sparta_jax.evaluation import wilson_interval
from sparta_jax.run_summary import read_json as _read
from sparta_jax.stats import mcnemar_exact


def arm_label(config: dict) -> str:
    judge = (config.get("judge") or {}).get("mode")
    if judge == "verifier":
        return "verifier control (not Sparta)"
    scheme = (config.get("reputation") or {}).get("scheme")
    return f"Sparta, {judge} judges, {scheme} reputation"


def evaluations(workdir: str) -> dict[int, dict]:
    out = {}
    for entry in sorted(os.listdir(workdir)):
        if entry.startswith("iteration_") and entry[10:].isdigit():
            ev = _read(os.path.join(workdir, entry, "evaluation.json"))
            if ev is not None:
                out[int(entry[10:])] = ev
    return out


def best_test(ev: dict) -> dict:
    return ev["test"][ev["best_member"]]


def arm_summary(workdir: str) -> dict:
    """The before/after figures of one run (see the module docstring)."""
    config = _read(os.path.join(workdir, "config.json")) or {}
    evals = evaluations(workdir)
    if 0 not in evals or len(evals) < 2:
        raise ValueError(f"{workdir}: needs the iteration-0 evaluation and at least one after training")
    last = max(evals)
    before, after = best_test(evals[0]), best_test(evals[last])
    if "scores" not in before or "scores" not in after:
        raise ValueError(f"{workdir}: evaluation.json has no per-item scores (written by runs since the paired test)")
    seconds = sum(ev.get("seconds", 0.0) for ev in evals.values())
    pairs = []
    for t in range(1, last + 1):
        summary = _read(os.path.join(workdir, f"iteration_{t:03d}", "summary.json")) or {}
        seconds += summary.get("seconds", 0.0)
        pairs.append(summary.get("pairs_trained"))
    audit = _read(os.path.join(workdir, "audit.json"))
    return {
        "workdir": workdir, "label": arm_label(config), "iterations": last, "pairs_trained": pairs,
        "before": {"member": evals[0]["best_member"], **_figures(before)},
        "after": {"member": evals[last]["best_member"], **_figures(after)},
        "paired": mcnemar_exact(before["scores"], after["scores"]),
        "audit_auc": (audit or {}).get("pooled", {}).get("auc"), "minutes": seconds / 60.0,
        "initial_scores": before["scores"],
    }


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

    lines = ["| arm | best member test accuracy | lost / gained | McNemar p (vs no training) | answer chars / "
             "no answer | judge audit AUC | pairs trained | minutes |", "|---|---|---|---:|---|---:|---|---:|"]
    first = arms[0]
    lines.append(f"| no training (iteration 0, {first['before']['member']}) | {acc(first['before'])} | – | – | "
                 f"{form(first['before'])} | {_num(first['audit_auc'])} | – | – |")
    for a in arms:
        p = a["paired"]
        lines.append(f"| {a['label']}, after {a['iterations']} iterations ({a['after']['member']}) | {acc(a['after'])} | "
                     f"{p['lost']} / {p['gained']} | {p['p_value']:.2g} | {form(a['after'])} | {_num(a['audit_auc'])} | "
                     f"{' + '.join(str(x) for x in a['pairs_trained'])} | {a['minutes']:.0f} |")
    notes = [f"- {a['workdir']}: the initial evaluation differs from {first['workdir']}'s (not the same tribe, "
             "data or seeds?)" for a in arms[1:] if a["initial_scores"] != first["initial_scores"]]
    return "\n".join(lines + notes)


def _num(x, digits: int = 2) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workdirs", nargs="+")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON instead of Markdown")
    args = parser.parse_args(argv)
    try:
        arms = [arm_summary(w) for w in args.workdirs]
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(arms, indent=1) if args.json else markdown(arms))
    return 0


if __name__ == "__main__":
    sys.exit(main())
