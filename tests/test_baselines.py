"""The four baselines through `python -m sparta_jax.main`: two iterations of a tiny tribe, a run
killed mid-DPO resumes to the uninterrupted result (for the two kinds of training state, below),
and `compare` reads the workdirs."""
from __future__ import annotations

import json
import os

import ml_collections
import numpy as np
import pytest

from sparta_jax import compare
from sparta_jax.config_check import ConfigError
from sparta_jax.tribe import actor_config
from loop_runs import NO_REPORT, final_state, overrides, run_to_end, run_until

SMALL = {  # fewer samples than the papers' defaults: a tiny random model, a CPU test
    "self_rewarding": ["--config.methods.self_rewarding.samples=2"],
    "meta_rewarding": ["--config.methods.meta_rewarding.samples=2", "--config.methods.meta_rewarding.judgments=2"],
    "spin": [],
    "sppo": ["--config.methods.sppo.samples=3", "--config.methods.sppo.beta=0.1"],
}


# A baseline resumes as Sparta does: its pairs are on disk before DPO starts, and the checkpoint holds
# the actor's weights and optimizer state. What a kill can break differs only in the DPO step: SPPO's
# own loss, and the standard one (Meta-Rewarding: answer and judgment pairs together; Self-Rewarding
# and SPIN train with the same step on their own pairs). Those two are killed and resumed.
KILLED = ("meta_rewarding", "sppo")


def _args(base, method):
    return overrides(base) + [f"--config.method={method}", "--config.mode=fixed", NO_REPORT] + SMALL[method]


@pytest.mark.parametrize("method", list(SMALL))
@pytest.mark.e2e
@pytest.mark.reference
def test_baseline_runs_resumes_exactly_and_compare_reads_it(method, tiny_base, compile_cache, tmp_path):
    reference = str(tmp_path / "reference")
    out = run_to_end(reference, _args(tiny_base, method), compile_cache)
    ev0 = json.load(open(os.path.join(reference, "iteration_000", "evaluation.json")))
    chosen = json.load(open(os.path.join(reference, "method.json")))
    assert chosen["method"] == method and chosen["member"] == ev0["best_member"]
    assert len(ev0["dev"]) == 3  # the whole initial tribe was evaluated to pick it
    assert f"method {method}: training {chosen['member']}" in out
    for t in (1, 2):
        folder = os.path.join(reference, f"iteration_00{t}")
        info = json.load(open(os.path.join(folder, "pairs.json")))
        records = [json.loads(line) for line in open(os.path.join(folder, "preferences.jsonl"))]
        assert info["method"] == method and info["pairs"] == len(records)
        if method == "meta_rewarding":
            # In `logits` mode every answer gets expected rubric points and every meta battle a
            # verdict, so nothing is unparsed; the length-controlled answer pairs are the actor's.
            assert info["meta_battles"] > 0 and info["meta_unparsed"] == 0 and info["unparsed_scores"] == 0
            assert info["judge_pairs"] == sum(r["kind"] == "judgment" for r in records)
            assert any(r["kind"] == "answer" for r in records)
            assert all(r["chosen_score"] > r["rejected_score"] for r in records if r["kind"] == "answer")
        assert len(records) > 0
        assert all(r["chosen"] != r["rejected"] for r in records)
        if method == "sppo":
            assert all(r["chosen_win_rate"] > r["rejected_win_rate"] for r in records)
        if method == "spin":
            assert all(r["chosen"].startswith("The answer is ") for r in records)
        ev = json.load(open(os.path.join(folder, "evaluation.json")))
        assert list(ev["dev"]) == [chosen["member"]]  # after iteration 0 the run is the one model
        summary = json.load(open(os.path.join(folder, "summary.json")))
        assert summary["pairs_trained"] == len(records) and summary["method"] == method

    arm = compare.arm_summary(reference)
    assert arm["method"] == compare.method_label({"method": method}) and arm["iterations"] == 2
    table = compare.paper_table([arm])
    assert [r["method"] for r in table["rows"]] == ["best initial", arm["method"]]

    if method not in KILLED:
        return
    killed = str(tmp_path / "killed")
    run_until(killed, _args(tiny_base, method), compile_cache, "iteration 2 DPO:")  # mid-DPO
    assert "resumed from the checkpoint after iteration 1" in run_to_end(killed, _args(tiny_base, method), compile_cache)
    params_a, _, prefs_a = final_state(reference)
    params_b, _, prefs_b = final_state(killed)
    assert prefs_a == prefs_b
    assert params_a.keys() == params_b.keys()
    for key in params_a:
        assert params_a[key].shape[1] == 1, key  # LoRA leaves are [layers, members, ...]: one member
        np.testing.assert_array_equal(params_a[key], params_b[key], err_msg=key)


def test_actor_config_keeps_one_member():
    tribe = ml_collections.ConfigDict(dict(kind="lora", names=(), members=3, adapters=(), member_folders=()))
    cfg, adapters = actor_config(tribe, ("a", "b", "c"), "b", ["/x/a", "/x/b", "/x/c"])
    assert (tuple(cfg.names), cfg.members, adapters) == (("b",), 1, ("/x/b",))
    cfg, adapters = actor_config(tribe, ("a", "b", "c"), "c")  # fresh adapters: every member starts as the base
    assert (tuple(cfg.names), adapters) == (("c",), ())
    full = ml_collections.ConfigDict(dict(kind="full", names=(), members=3, adapters=(), member_folders=("/f/a", "/f/b", "/f/c")))
    cfg, _ = actor_config(full, ("a", "b", "c"), "a")
    assert tuple(cfg.member_folders) == ("/f/a",)
    with pytest.raises(ConfigError, match="not a member"):
        actor_config(tribe, ("a", "b", "c"), "z")
