"""Which member, after which iteration, a run reports (`evaluation.select`).

- `last`: the best member by dev accuracy after the last iteration. The gain a run claims is
  this one: it is chosen without looking back over iterations.
- `best_dev`: the member and iteration with the best dev accuracy over the whole run, the
  initial tribe (iteration 0) included; ties go to the earlier iteration, then to the member
  that iteration's evaluation picked. Its test score was taken at that iteration (the best
  member by dev is always scored on test), so nothing is evaluated again. The loop keeps the
  weights of the best-dev iteration in `best_dev/` of the workdir, since the rolling
  checkpoints may have dropped them.
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np

from sparta_jax.stats import bootstrap_interval
from sparta_jax.workdir import iteration_dir, iterations_in, read_json

SELECTIONS = ("last", "best_dev")
BEST_DEV_DIR = "best_dev"  # in the workdir: a checkpoint folder holding the best-dev iteration's weights


@dataclasses.dataclass(frozen=True)
class Pick:
    member: str
    iteration: int
    dev: dict  # the member's dev summary at that iteration
    test: dict | None  # its test summary there


def read_evaluations(workdir: str) -> dict[int, dict]:
    """{iteration: evaluation.json} of a run folder (unreadable or missing files left out)."""
    evals = {t: read_json(os.path.join(iteration_dir(workdir, t), "evaluation.json")) for t in iterations_in(workdir)}
    return {t: ev for t, ev in evals.items() if ev is not None}


def pick(evals: dict[int, dict], how: str) -> Pick:
    """The reported member and iteration of evaluations {iteration: evaluation.json}."""
    if how not in SELECTIONS:
        raise ValueError(f"evaluation.select must be one of {', '.join(SELECTIONS)}, got {how!r}")
    if not evals:
        raise ValueError("no evaluation to select from")
    if how == "last":
        t = max(evals)
        member = evals[t]["best_member"]
    else:
        candidates = [(ev["dev"][m]["accuracy"], -t, m == ev["best_member"], t, m)
                      for t, ev in evals.items() for m in ev["dev"]]
        *_, t, member = max(candidates)
    ev = evals[t]
    return Pick(member, t, ev["dev"][member], ev["test"].get(member))


def mean_member(ev: dict, seed: int = 0) -> dict | None:
    """Every member's test outcomes averaged per item, when every member was scored on the same
    test items (evaluation.test_all_members): accuracy, a bootstrap 95% interval over items, each
    member's accuracy and the per-item means; None otherwise."""
    test = ev.get("test") or {}
    scores = {name: entry.get("scores") for name, entry in test.items()}
    if len(scores) < 2 or any(v is None for v in scores.values()) or len({len(v) for v in scores.values()}) != 1:
        return None
    table = np.asarray(list(scores.values()), np.float64)  # [members, items]
    items = table.mean(axis=0)
    return {"accuracy": float(items.mean()), "n": int(items.size), "members": len(scores),
            "ci95": bootstrap_interval(lambda idx: float(items[idx].mean()), items.size, seed=seed),
            "per_member": {name: float(np.mean(v)) for name, v in scores.items()}, "item_means": items.tolist()}
