"""`python -m sparta_jax.compare` on hand-made workdirs: the paper's layout, the best cell per
column, McNemar's exact test against "best initial" and Sparta, cost, and the written files."""
import json
import os

import numpy as np

from sparta_jax import compare
from sparta_jax.stats import mcnemar_exact

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

INITIAL = [1, 0, 0, 1, 0, 0, 0, 0, 1, 0]  # 3/10 right before training (shared by all arms of a task)


def _evaluation(t, scores, member="m0"):
    n, k = len(scores), sum(scores)
    entry = {"accuracy": k / n, "n": n, "n_correct": k, "n_unparsed": 1, "ci95": [0, 1], "scores": scores,
             "mean_answer_chars": 20.0}
    return {"iteration": t, "best_member": member, "dev": {member: entry}, "test": {member: entry},
            "seconds": 30.0}


def make_run(root, name, *, method="sparta", task="arithmetic", after, scheme="static", initial=INITIAL,
             pairs=(4, 5), best_member_lr_scale=1.0):
    workdir = os.path.join(root, name)
    config = {"method": method, "data": {"kind": "bundled", "task": task, "seed": 0},
              "judge": {"mode": "logits"}, "reputation": {"scheme": scheme}, "matchmaking": {"alpha": 0.6},
              "dpo": {"best_member_lr_scale": best_member_lr_scale}}
    os.makedirs(os.path.join(workdir, "iteration_000"))
    with open(os.path.join(workdir, "config.json"), "w") as f:
        json.dump(config, f)
    with open(os.path.join(workdir, "iteration_000", "evaluation.json"), "w") as f:
        json.dump(_evaluation(0, initial), f)
    for t, p in enumerate(pairs, start=1):
        os.makedirs(os.path.join(workdir, f"iteration_{t:03d}"))
        with open(os.path.join(workdir, f"iteration_{t:03d}", "summary.json"), "w") as f:
            json.dump({"pairs_trained": p, "seconds": 90.0}, f)
        with open(os.path.join(workdir, f"iteration_{t:03d}", "evaluation.json"), "w") as f:
            json.dump(_evaluation(t, after if t == len(pairs) else initial, member="m1" if method == "sparta" else "m0"), f)
    return workdir


def test_sparta_with_its_training_recipe_is_still_the_arm_the_others_are_tested_against(tmp_path):
    # configs/specialists.py trains Sparta's best member at half the rate: its label carries the
    # setting, and the baselines and uniform votes (at the same rate) are still tested against it.
    sparta_after = [1, 1, 0, 1, 1, 0, 1, 0, 1, 0]  # 6/10
    spin_after = [1, 0, 0, 0, 0, 0, 0, 0, 1, 1]
    uniform_after = [1, 0, 0, 1, 0, 0, 0, 0, 1, 0]
    runs = [make_run(tmp_path, "uniform", scheme="uniform", after=uniform_after, best_member_lr_scale=0.5),
            make_run(tmp_path, "sparta", after=sparta_after, best_member_lr_scale=0.5),
            make_run(tmp_path, "spin", method="spin", after=spin_after)]
    arms = [compare.arm_summary(w) for w in runs]
    assert [a["sparta_reference"] for a in arms] == [False, True, False]
    reference = "Sparta (best member at 0.5x the rate)"
    assert arms[1]["method"] == reference
    table = compare.paper_table(arms)
    tests = {(x["method"], x["vs"]): x for x in table["tests"]}
    assert (tests[("SPIN", reference)]["lost"], tests[("SPIN", reference)]["gained"]) == (4, 1)
    uniform = tests[("Sparta (uniform votes, best member at 0.5x the rate)", reference)]
    assert (uniform["lost"], uniform["gained"]) == tuple(mcnemar_exact(sparta_after, uniform_after)[k]
                                                         for k in ("lost", "gained")) == (3, 0)
    assert (reference, reference) not in tests
    assert f"| arithmetic | SPIN | {reference} | 4 / 1 |" in compare.paper_markdown(table)


def test_paper_table_layout_best_cells_and_paired_tests(tmp_path):
    sparta_after = [1, 1, 0, 1, 1, 0, 1, 0, 1, 0]  # 6/10: gained 3, lost 0
    runs = [make_run(tmp_path, "sparta_a", after=sparta_after),
            make_run(tmp_path, "spin_a", method="spin", after=[1, 0, 0, 0, 0, 0, 0, 0, 1, 1]),  # 3/10
            make_run(tmp_path, "uniform_a", scheme="uniform", after=[1, 0, 0, 1, 0, 0, 0, 0, 1, 0]),
            make_run(tmp_path, "sppo_w", method="sppo", task="word_problems", after=[1] * 5 + [0] * 5,
                     initial=[0] * 10)]
    arms = [compare.arm_summary(w) for w in runs]
    table = compare.paper_table(arms)
    assert table["tasks"] == ["arithmetic", "word_problems"]
    assert [r["method"] for r in table["rows"]] == ["best initial", "Sparta", "SPIN", "SPPO",
                                                    "Sparta (uniform votes)"]
    cells = {r["method"]: r["cells"] for r in table["rows"]}
    assert cells["Sparta"]["arithmetic"]["accuracy"] == 0.6 and cells["Sparta"]["arithmetic"]["best"]
    assert not cells["SPIN"]["arithmetic"]["best"] and cells["SPIN"]["word_problems"] is None
    assert cells["best initial"]["word_problems"]["accuracy"] == 0.0
    assert cells["SPPO"]["word_problems"]["best"]
    tests = {(x["task"], x["method"], x["vs"]): x for x in table["tests"]}
    assert tests[("arithmetic", "Sparta", "best initial")]["p_value"] == mcnemar_exact(INITIAL, sparta_after)["p_value"]
    assert (tests[("arithmetic", "Sparta", "best initial")]["lost"], tests[("arithmetic", "Sparta", "best initial")]["gained"]) == (0, 3)
    spin_vs_sparta = tests[("arithmetic", "SPIN", "Sparta")]
    # Sparta right and SPIN wrong on items 1, 3, 4, 6; the reverse on item 9
    assert (spin_vs_sparta["lost"], spin_vs_sparta["gained"]) == (4, 1)
    assert abs(spin_vs_sparta["p_value"] - 0.375) < 1e-12  # 2 * P(X <= 1), X ~ Bin(5, 1/2) = 2 * 6/32
    assert ("word_problems", "SPPO", "Sparta") not in tests  # no Sparta run on that task
    assert table["cost"]["Sparta"] == {"minutes": (3 * 30 + 2 * 90) / 60, "pairs": 9, "replayed": 0, "runs": 1}
    md = compare.paper_markdown(table)
    assert "| method | arithmetic | word_problems |" in md
    assert "| Sparta | **0.600 [" in md and "| SPIN | 0.300 [" in md
    assert not table["notes"]
    assert [a["label"] for a in arms] == ["Sparta, logits judges, static reputation", "SPIN, the reference answers chosen over its own",
                                          "Sparta, logits judges, uniform reputation", "SPPO, its own logits judgments"]


def test_mismatched_initial_evaluations_are_noted_and_not_paired(tmp_path):
    a = make_run(tmp_path, "a", after=[1] * 10)
    b = make_run(tmp_path, "b", method="self_rewarding", after=[1] * 10, initial=[0] * 10)
    table = compare.paper_table([compare.arm_summary(a), compare.arm_summary(b)])
    assert any("initial evaluation differs" in n for n in table["notes"])
    assert all(x["method"] != "Self-Rewarding" for x in table["tests"])


def test_cli_writes_markdown_and_html(tmp_path):
    runs = [make_run(tmp_path, "s", after=[1] * 10), make_run(tmp_path, "m", method="meta_rewarding", after=[0] * 10)]
    md, html = tmp_path / "t.md", tmp_path / "t.html"
    assert compare.main([*runs, "--markdown", str(md), "--html", str(html)]) == 0
    text = md.read_text()
    assert "| Meta-Rewarding | 0.000 [" in text and "| Sparta | **1.000 [" in text
    page = html.read_text()
    assert page.startswith("<!doctype html>") and "<th>Meta-Rewarding</th>" in page and "<b>1.000 [" in page


def test_sweep_configs_build_their_pools_and_label_their_rows():
    from sparta_jax.config_check import validate_config
    from sparta_jax.config_files import load_config

    for shape, (distinct, copies) in {"1x10": (1, 10), "2x5": (2, 5), "5x2": (5, 2), "10x1": (10, 1)}.items():
        c = load_config(os.path.join(REPO, f"configs/sweeps/diversity.py:{shape}"))
        validate_config(c)
        assert (len(c.experts.sources), c.experts.copies, c.experts.enabled) == (distinct, copies, True)
        assert compare.method_label(c.to_dict()) == f"Sparta, {shape} experts"
    sizes = {n: load_config(os.path.join(REPO, "configs/sweeps/pool_size.py"), str(n)) for n in (4, 6, 10)}
    assert len(set(sizes[10].experts.names)) == 10 and [s["seed"] for s in sizes[10].experts.sources] == list(range(300, 310))
    assert sizes[6].experts.sources == sizes[10].experts.sources[:6]  # a larger pool adds experts
    assert compare.method_label(sizes[6].to_dict()) == "Sparta, 6 experts"
    assert compare.method_label({"method": "spin"}) == "SPIN"
    assert compare.method_label({"reputation": {"scheme": "uniform"}, "matchmaking": {"alpha": 1.0}}) == (
        "Sparta (uniform votes, random match-making)")
    slower = {"judge": {"mode": "logits"}, "reputation": {"scheme": "static"}, "dpo": {"best_member_lr_scale": 0.5}}
    assert compare.method_label(slower) == "Sparta (best member at 0.5x the rate)"
    assert compare.arm_label(slower) == "Sparta, logits judges, static reputation, best member at 0.5x the rate"
    assert compare.arm_label({**slower, "dpo": {"best_member_lr_scale": 1.0}}) == "Sparta, logits judges, static reputation"


def _all_members_run(root, name, *, scheme, initial, after, reputations=None, audit_auc=None):
    """A run whose evaluations scored every member on test, with end reputations and an audit."""
    workdir = make_run(root, name, scheme=scheme, after=after["m1"], initial=initial["m0"], pairs=(4,))
    for t, table in ((0, initial), (1, after)):
        path = os.path.join(workdir, f"iteration_{t:03d}", "evaluation.json")
        with open(path) as f:
            ev = json.load(f)
        for member, scores in table.items():
            ev["test"][member] = {**ev["test"][ev["best_member"]], "scores": scores, "n_correct": sum(scores)}
        ev["test"][ev["best_member"]]["scores"] = table[ev["best_member"]]
        ev["test"][ev["best_member"]]["n_correct"] = sum(table[ev["best_member"]])
        with open(path, "w") as f:
            json.dump(ev, f)
    if reputations:
        with open(os.path.join(workdir, "iteration_001", "reputations.json"), "w") as f:
            json.dump({"iteration": 1, "end": {n: {"R": r, "sigma": 0.5} for n, r in reputations.items()}}, f)
    if audit_auc:
        with open(os.path.join(workdir, "audit.json"), "w") as f:
            json.dump({"per_judge": {n: {"auc": a} for n, a in audit_auc.items()}, "pooled": {"auc": 0.6}}, f)
    return workdir


def test_mechanism_table_mean_member_sign_tests_and_reputation_against_audit(tmp_path):
    initial = {"m0": INITIAL, "m1": [0] * 10, "m2": [0] * 10}
    sparta_after = {"m0": INITIAL, "m1": [1] * 8 + [0] * 2, "m2": [1] * 6 + [0] * 4}
    uniform_after = {"m0": INITIAL, "m1": [1] * 2 + [0] * 8, "m2": [0] * 10}
    reps = {"m0": 104.0, "m1": 101.0, "m2": 95.0}
    auc = {"m0": 0.9, "m1": 0.7, "m2": 0.5}
    sparta = compare.arm_summary(_all_members_run(tmp_path, "sparta", scheme="static", initial=initial,
                                                  after=sparta_after, reputations=reps, audit_auc=auc))
    uniform = compare.arm_summary(_all_members_run(tmp_path, "uniform", scheme="uniform", initial=initial,
                                                   after=uniform_after))
    # per-item member means: before (1/3 on items 0, 3, 8; 0 elsewhere)
    assert abs(sparta["mean_before"]["accuracy"] - 3 / 30) < 1e-12
    assert abs(sparta["mean_after"]["accuracy"] - (3 + 8 + 6) / 30) < 1e-12
    assert sparta["mean_after"]["per_member"] == {"m0": 0.3, "m1": 0.8, "m2": 0.6}
    lo, hi = sparta["mean_after"]["ci95"]
    assert lo < 17 / 30 < hi
    # items 0..7 rose (m1 right; items 0..5 m2 too), items 8, 9 unchanged: 8 up, 0 down
    assert (sparta["mean_paired"]["up"], sparta["mean_paired"]["down"]) == (8, 0)
    assert abs(sparta["mean_paired"]["p_value"] - 2 / 2 ** 8) < 1e-12
    j = sparta["judges"]
    assert j["reputation"] == reps and j["auc"] == auc
    assert abs(j["pearson_r"] - float(np.corrcoef(list(reps.values()), list(auc.values()))[0, 1])) < 1e-12
    assert uniform["judges"] is None  # no audit in that workdir
    md = compare.mechanism_markdown([sparta, uniform])
    assert "| no training (iteration 0) | 0.300 [" in md and "0.100 [" in md
    assert "| 8 / 0, 0.0078 |" in md  # Sparta against no training
    # uniform against Sparta: items 0..7 fell (Sparta has one or two more members right on each), none rose
    assert "| 0 / 8, 0.0078 |" in md and "| 104.0 (0.90) | 101.0 (0.70) | 95.0 (0.50) | 0.98 |" in md
    assert compare.mechanism_markdown([compare.arm_summary(make_run(tmp_path, "one", after=[1] * 10))]) == ""


def test_replayed_pairs_are_counted_apart_from_new_pairs(tmp_path):
    """An iteration that trains its own 5 pairs and 4 replayed ones costs 9 pairs of DPO but made
    5 new ones: the arm, the cost table and the closing summary say so (older summaries, without
    the split, count their pairs_replayed records as replayed)."""
    from sparta_jax.run_summary import closing_summary

    workdir = make_run(tmp_path, "replay", after=[1] * 10, pairs=(4, 9))
    path = os.path.join(workdir, "iteration_002", "summary.json")
    with open(path, "w") as f:
        json.dump({"pairs_trained": 9, "pairs_trained_own": 5, "pairs_trained_replayed": 4, "seconds": 90.0}, f)
    arm = compare.arm_summary(workdir)
    assert arm["pairs_trained"] == [4, 5] and arm["pairs_replayed"] == [0, 4]
    assert "| 4 + 5 (+ 0 + 4 replayed) |" in compare.markdown([arm])
    table = compare.paper_table([arm])
    assert table["cost"]["Sparta"]["pairs"] == 9 and table["cost"]["Sparta"]["replayed"] == 4
    assert "| Sparta | 1 | 4.5 | 9 | 4 |" in compare.paper_markdown(table)
    assert "pairs trained: 9 own (4 + 5 (+ 0 + 4 replayed) per iteration), and 4 earlier pairs replayed" in (
        closing_summary(workdir, 2, None))
    with open(path, "w") as f:  # a summary written before the split
        json.dump({"pairs_trained": 9, "pairs_replayed": 4, "seconds": 90.0}, f)
    assert compare.arm_summary(workdir)["pairs_trained"] == [4, 5]
