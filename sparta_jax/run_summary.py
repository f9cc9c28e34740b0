"""The block a run prints when it ends (and again when a finished run is started once more).

What a user wants to know once the loop is done: did the best member get better (dev and test,
before against after, with intervals), how many pairs trained it, did the judges carry signal,
where the time went, where the outputs are, and what to run next. Read from the workdir's own
files, like the report, so it needs no model.
"""
from __future__ import annotations

import os
from typing import Optional

from sparta_jax.sparta.judge_signal import pooled_matched
from sparta_jax.workdir import iteration_dir, read_json


def own_and_replayed(summary: dict) -> tuple:
    """(the iteration's own pairs trained, the earlier iterations' pairs it trained again); a
    summary from before the split counts its replayed records (pairs_replayed) as replayed."""
    total = summary.get("pairs_trained")
    if total is None:
        return None, 0
    replayed = summary.get("pairs_trained_replayed", summary.get("pairs_replayed", 0))
    return summary.get("pairs_trained_own", total - replayed), replayed


def pairs_text(own, replayed) -> str:
    """"42 + 40", or "42 + 40 (+ 0 + 42 replayed)" when earlier pairs were trained again."""
    text = " + ".join(str(x) for x in own)
    return text + (f" (+ {' + '.join(str(x) for x in replayed)} replayed)" if any(replayed) else "")


def _acc(entry: Optional[dict]) -> str:
    if not entry:
        return "–"
    lo, hi = entry["ci95"]
    count = f" ({entry['n_correct']}/{entry['n']})" if entry.get("n_correct") is not None else f" (n={entry['n']})"
    return f"{entry['accuracy']:.3f} [{lo:.3f}, {hi:.3f}]{count}"


def evaluation_lines(evals: dict[int, dict], select: str = "last") -> list[str]:
    """The before / after block of the closing summary: the best member by dev before training,
    after the last iteration (the gain a run claims) and, when it differs, the best dev over the
    run (evaluation.select = "best_dev" reports it); McNemar's paired test of the first two on
    the same test items, and the mean member with its sign test when every member was tested."""
    from sparta_jax.selection import mean_member, pick
    from sparta_jax.stats import mcnemar_exact, sign_test

    first = min(evals)
    start, last, best = pick({first: evals[first]}, "last"), pick(evals, "last"), pick(evals, "best_dev")
    when = lambda p: "before training" if p.iteration == 0 else f"after iteration {p.iteration}"  # noqa: E731
    lines = ["best member (by dev accuracy) | dev | test"]
    for label, p in ((when(start), start), (f"{when(last)} (last: the gain claimed)", last)):
        lines.append(f"  {label}: {p.member} | {_acc(p.dev)} | {_acc(p.test)}")
    if (best.iteration, best.member) != (last.iteration, last.member):
        reported = ", reported (evaluation.select=best_dev)" if select == "best_dev" else ""
        lines.append(f"  best dev over the run, {when(best)}{reported}: {best.member} | {_acc(best.dev)} | "
                     f"{_acc(best.test)}")
    if last.iteration != start.iteration and start.test and last.test and "scores" in start.test and \
            len(start.test["scores"]) == len(last.test.get("scores", [])):
        t = mcnemar_exact(start.test["scores"], last.test["scores"])
        lines.append(f"  paired on the {t['n']} test items: {t['gained']} gained, {t['lost']} lost, "
                     f"McNemar p = {t['p_value']:.2g}")
    before, after = mean_member(evals[first]), mean_member(evals[last.iteration])
    if before and after and before["n"] == after["n"] and last.iteration != first:
        t = sign_test(before["item_means"], after["item_means"])
        lines.append(f"mean member (test, {after['members']} members): {before['accuracy']:.3f} "
                     f"[{before['ci95'][0]:.3f}, {before['ci95'][1]:.3f}] -> {after['accuracy']:.3f} "
                     f"[{after['ci95'][0]:.3f}, {after['ci95'][1]:.3f}], items up {t['up']} / down {t['down']}, "
                     f"sign test p = {t['p_value']:.2g}")
    return lines


def closing_summary(workdir: str, iterations: int, checkpoint: Optional[str]) -> str:
    """The closing block for `iterations` completed iterations; `checkpoint` is the latest one's folder."""
    folder = lambda t: iteration_dir(workdir, t)  # noqa: E731
    summaries = [s for s in (read_json(os.path.join(folder(t), "summary.json")) for t in range(1, iterations + 1)) if s]
    evals = {t: e for t in range(iterations + 1) if (e := read_json(os.path.join(folder(t), "evaluation.json")))}
    lines = ["", f"== run finished: {iterations} iteration(s) in {workdir} =="]
    if evals:
        select = ((read_json(os.path.join(workdir, "config.json")) or {}).get("evaluation") or {}).get("select", "last")
        lines += evaluation_lines(evals, select)
    else:
        lines.append("no evaluation in this run (evaluation.enabled, or a split without answers)")
    own, replayed = zip(*[own_and_replayed(s) for s in summaries]) if summaries else ((), ())
    own = [p or 0 for p in own]
    lines.append(f"pairs trained: {sum(own)} own ({pairs_text(own, replayed)} per iteration)"
                 + (f", and {sum(replayed)} earlier pairs replayed" if any(replayed) else ""))
    signals = [read_json(os.path.join(folder(t), "judge_signal.json")) for t in range(1, iterations + 1)]
    wins, n = pooled_matched([s for s in signals if s])
    if n:
        lines.append(f"judge signal: the right answer scored higher in {wins / n:.2f} of {n} verdicts on duels with "
                     "exactly one right answer (0.5 = chance)")
    elif any(signals):
        lines.append("judge signal: no judge verdict on a duel with exactly one right answer")
    phases: dict[str, float] = {}
    for s in summaries:
        for k, v in (s.get("phase_seconds") or {}).items():
            phases[k] = phases.get(k, 0.0) + v
    phases["evaluation"] = sum(e.get("seconds", 0.0) for e in evals.values())
    lines.append("minutes per phase: " + ", ".join(f"{k} {v / 60:.1f}" for k, v in phases.items()))
    lines += [f"report:      {os.path.join(workdir, 'report', 'report.html')}",
              f"metrics:     {os.path.join(workdir, 'metrics.jsonl')}",
              f"checkpoint:  {checkpoint or '–'}",
              f"export the best member:  python -m sparta_jax.export --workdir={workdir} --member=best "
              f"--out=best_member",
              f"TensorBoard:             tensorboard --logdir={os.path.join(workdir, 'tensorboard')}"]
    return "\n".join(lines)
