"""`python -m sparta_jax.compare` on hand-made workdirs: the paper's layout, the best cell per
column, McNemar's exact test against "best initial" and Sparta, cost, and the written files."""
import json
import os

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
             pairs=(4, 5)):
    workdir = os.path.join(root, name)
    config = {"method": method, "data": {"kind": "bundled", "task": task, "seed": 0},
              "judge": {"mode": "logits"}, "reputation": {"scheme": scheme}, "matchmaking": {"alpha": 0.6}}
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
    assert table["cost"]["Sparta"] == {"minutes": (3 * 30 + 2 * 90) / 60, "pairs": 9, "runs": 1}
    md = compare.paper_markdown(table)
    assert "| method | arithmetic | word_problems |" in md
    assert "| Sparta | **0.600 [" in md and "| SPIN | 0.300 [" in md
    assert not table["notes"]
    assert [a["label"] for a in arms] == ["Sparta, logits judges, static reputation", "SPIN, its own logits judgments",
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
