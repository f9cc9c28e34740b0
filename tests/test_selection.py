"""evaluation.select: the member and iteration a run reports, by hand; the closing summary,
compare and export name the iteration they took; the loop keeps the best-dev weights."""
from __future__ import annotations

import json
import os

import pytest

from sparta_jax import compare, selection
from sparta_jax.run_summary import evaluation_lines
from sparta_jax.stats import mcnemar_exact
from loop_runs import export_in_process, overrides, run_to_end


def entry(accuracy, scores=None, n=10):
    k = round(accuracy * n)
    scores = scores if scores is not None else [1] * k + [0] * (n - k)
    return {"accuracy": accuracy, "n": n, "n_correct": k, "n_unparsed": 0, "ci95": [0.0, 1.0], "scores": scores}


def evaluation(t, dev, best, test_scores):
    """dev: {member: accuracy}; the best member is tested."""
    return {"iteration": t, "best_member": best, "dev": {m: entry(a) for m, a in dev.items()},
            "test": {best: entry(sum(test_scores) / len(test_scores), test_scores)}, "seconds": 1.0}


BEFORE = [1, 1, 0, 0, 0, 0, 0, 0, 0, 0]
EVALS = {
    0: evaluation(0, {"a": 0.4, "b": 0.6}, "b", BEFORE),
    1: evaluation(1, {"a": 0.7, "b": 0.5}, "a", [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]),
    2: evaluation(2, {"a": 0.7, "b": 0.3}, "a", [1, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
    3: evaluation(3, {"a": 0.5, "b": 0.6}, "b", [1, 1, 1, 0, 0, 0, 0, 0, 0, 0]),
}


def test_last_and_best_dev_by_hand():
    last = selection.pick(EVALS, "last")
    assert (last.member, last.iteration, last.dev["accuracy"], last.test["n_correct"]) == ("b", 3, 0.6, 3)
    best = selection.pick(EVALS, "best_dev")  # a's 0.7 at iterations 1 and 2: the earlier one
    assert (best.member, best.iteration, best.test["n_correct"]) == ("a", 1, 4)
    only_start = {0: EVALS[0], 1: evaluation(1, {"a": 0.3, "b": 0.5}, "b", BEFORE)}
    assert (selection.pick(only_start, "best_dev").member, selection.pick(only_start, "best_dev").iteration) == ("b", 0)
    tie = {0: evaluation(0, {"a": 0.5, "b": 0.5}, "a", BEFORE)}  # a tie at one iteration: the evaluation's pick
    assert selection.pick(tie, "best_dev").member == "a"
    with pytest.raises(ValueError, match="evaluation.select must be one of"):
        selection.pick(EVALS, "best_test")


def test_closing_summary_names_both_selections_and_the_paired_test():
    lines = evaluation_lines(EVALS, "best_dev")
    assert lines[1].startswith("  before training: b | 0.600")
    assert lines[2].startswith("  after iteration 3 (last: the gain claimed): b | 0.600") and "(3/10)" in lines[2]
    assert lines[3].startswith("  best dev over the run, after iteration 1, reported (evaluation.select=best_dev): a")
    t = mcnemar_exact(BEFORE, EVALS[3]["test"]["b"]["scores"])
    assert lines[4] == f"  paired on the 10 test items: 1 gained, 0 lost, McNemar p = {t['p_value']:.2g}"
    assert "reported" not in "".join(evaluation_lines(EVALS, "last"))


def test_compare_arm_names_the_best_dev_iteration(tmp_path):
    workdir = tmp_path / "run"
    for t, ev in EVALS.items():
        os.makedirs(workdir / f"iteration_{t:03d}")
        (workdir / f"iteration_{t:03d}" / "evaluation.json").write_text(json.dumps(ev))
        if t:
            (workdir / f"iteration_{t:03d}" / "summary.json").write_text(json.dumps({"pairs_trained": 4}))
    (workdir / "config.json").write_text(json.dumps({"method": "sparta", "evaluation": {"select": "best_dev"}}))
    arm = compare.arm_summary(str(workdir))
    assert arm["best_dev"]["member"] == "a" and arm["best_dev"]["iteration"] == 1
    assert arm["best_dev"]["accuracy"] == 0.4 and arm["after"]["accuracy"] == 0.3
    assert "| a after iteration 1: 0.400 |" in compare.markdown([arm])
    from sparta_jax.export import best_member

    assert best_member(str(workdir)) == ("a", 1, selection.BEST_DEV_DIR)
    (workdir / "config.json").write_text(json.dumps({"method": "sparta", "evaluation": {"select": "last"}}))
    assert best_member(str(workdir)) == ("b", None, "checkpoints")


@pytest.mark.e2e
@pytest.mark.reference
def test_best_dev_weights_are_kept_and_exported(tmp_path, tiny_base, compile_cache):
    """A run with evaluation.select=best_dev keeps the best-dev iteration's weights in best_dev/;
    export --member=best takes that member from them and names the iteration."""
    from sparta_jax.checkpoints import RunCheckpointer

    workdir = tmp_path / "run"
    out = run_to_end(str(workdir), overrides(tiny_base) + ["--config.evaluation.select=best_dev"], compile_cache)
    best = selection.pick(selection.read_evaluations(str(workdir)), "best_dev")
    with RunCheckpointer(os.path.join(workdir, selection.BEST_DEV_DIR), create=False) as kept:
        assert kept.all_steps() == [best.iteration]
    assert "(last: the gain claimed)" in out
    status, stdout, err = export_in_process("--workdir", workdir, "--member", "best", "--out", tmp_path / "best",
                                            "--peft")
    assert status == 0, err[-3000:]
    assert stdout.startswith(f"{best.member} (after iteration {best.iteration}) -> ")
