"""The judge audit: near-miss answers, its statistics by hand, the CLI on the embedded tribe,
and the paired test used by the demonstration."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from sparta_jax import audit, evaluation, inference, sharding
from sparta_jax.config_files import load_config
from sparta_jax.data import load_instructions
from sparta_jax.sparta.judge_signal import audit_statistics
from sparta_jax.stats import binomial_tail, bootstrap_interval, mcnemar_exact
from sparta_jax.tasks import generate_task

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ------------------------------------------------------------------------------ statistics
def test_mcnemar_exact_by_hand():
    # 6 gained, 0 lost: p = 2 * (1/2)^6
    r = mcnemar_exact([0] * 6 + [1] * 4, [1] * 6 + [1] * 4)
    assert (r["lost"], r["gained"], r["right_before"], r["right_after"]) == (0, 6, 4, 10)
    assert r["p_value"] == pytest.approx(2 / 64)
    # 1 lost, 9 gained: P(X <= 1 | n = 10) = 11 / 1024, doubled
    before = [1] + [0] * 9 + [1, 0]
    after = [0] + [1] * 9 + [1, 0]
    assert mcnemar_exact(before, after)["p_value"] == pytest.approx(22 / 1024)
    # symmetric, and no discordant items gives p = 1
    assert mcnemar_exact(after, before)["p_value"] == pytest.approx(22 / 1024)
    assert mcnemar_exact([1, 0], [1, 0])["p_value"] == 1.0
    assert mcnemar_exact([1, 0, 1], [0, 1, 1])["p_value"] == 1.0  # one each way: min(1, 2 * 3/4)
    assert binomial_tail(2, 4) == pytest.approx(11 / 16)
    assert binomial_tail(500, 1000) == pytest.approx(0.5 + 0.5 * 0.02522502, rel=1e-6)  # P(X = 500) = .0252250
    with pytest.raises(ValueError):
        mcnemar_exact([1, 0], [1])
    with pytest.raises(ValueError):
        mcnemar_exact([2, 0], [1, 0])


def test_bootstrap_interval():
    x = np.arange(100.0)
    lo, hi = bootstrap_interval(lambda idx: float(x[idx].mean()), 100, seed=0, resamples=500)
    assert lo < 49.5 < hi and hi - lo == pytest.approx(2 * 1.96 * x.std() / 10, rel=0.25)
    assert bootstrap_interval(lambda idx: 3.0, 5) == [3.0, 3.0]
    assert bootstrap_interval(lambda idx: None, 5) is None and bootstrap_interval(lambda idx: 1.0, 0) is None


def test_audit_statistics_by_hand():
    right = np.array([[9, 8, 7], [np.nan, 5, 5]], float)
    wrong = np.array([[1, 8, 2], [5, 5, 6]], float)
    s = audit_statistics(right, wrong, ["a", "b"], resamples=200)
    a, b, pooled = s["per_judge"]["a"], s["per_judge"]["b"], s["pooled"]
    assert a["matched"]["accuracy"] == pytest.approx(2.5 / 3) and a["matched"]["n"] == 3
    assert a["auc"] == pytest.approx(7.5 / 9)  # 9 beats 3, 8 beats 2 and ties 1, 7 beats 2
    assert a["mean_score_right"] == pytest.approx(8.0) and a["mean_score_wrong"] == pytest.approx(11 / 3)
    assert b["matched"]["accuracy"] == pytest.approx(0.25) and b["matched"]["n"] == 2 and b["unscored"] == 1
    assert b["auc"] == pytest.approx((0.5 + 0.5 + 0 + 0.5 + 0.5 + 0) / 6)
    assert pooled["matched"]["n"] == 5 and pooled["matched"]["accuracy"] == pytest.approx(3.0 / 5)
    assert a["matched"]["ci95"] == pytest.approx(list(evaluation.wilson_interval(2, 3)))  # 2.5 wins rounded
    assert a["auc_ci95"][0] <= a["auc"] <= a["auc_ci95"][1]
    # Copies of one judge are one judge: pooling them changes neither the figures nor the intervals.
    rng = np.random.default_rng(0)
    one_r, one_w = rng.integers(1, 11, (1, 40)).astype(float), rng.integers(1, 11, (1, 40)).astype(float)
    alone = audit_statistics(one_r, one_w, ["a"], resamples=300)["per_judge"]["a"]
    copies = audit_statistics(np.repeat(one_r, 4, 0), np.repeat(one_w, 4, 0), list("abcd"), resamples=300)["pooled"]
    assert copies["matched"]["accuracy"] == pytest.approx(alone["matched"]["accuracy"])
    assert copies["auc"] == pytest.approx(alone["auc"]) and copies["matched"]["n"] == 4 * alone["matched"]["n"]
    lo, hi = copies["matched"]["ci95"]
    wilson_pooled = evaluation.wilson_interval(int(round(copies["matched"]["accuracy"] * 160)), 160)
    assert hi - lo > 1.5 * (wilson_pooled[1] - wilson_pooled[0])  # not narrowed as if 160 independent verdicts
    assert hi - lo == pytest.approx(alone["matched"]["ci95"][1] - alone["matched"]["ci95"][0], rel=0.35)
    with pytest.raises(ValueError):
        audit_statistics(right, wrong[:, :2], ["a", "b"])


# ------------------------------------------------------------------------------ the items
def test_near_misses_are_wrong_and_of_the_same_form():
    records = generate_task("mixed", 60, seed=3)
    items = audit.audit_items(records, 40, "The answer is {answer}.", seed=0)
    assert len(items) == 40 and len({i["id"] for i in items}) == 40
    by_id = {r["id"]: r for r in records}
    for item in items:
        r = by_id[item["id"]]
        assert evaluation.score(item["right"], r["answer"], r["evaluator"]) == 1.0
        assert evaluation.score(item["wrong"], r["answer"], r["evaluator"]) == 0.0
        assert item["right"].startswith("The answer is ") and item["wrong"].startswith("The answer is ")
        if r["evaluator"] == "numeric":
            off = int(item["wrong"][14:-1]) - int(r["answer"])
            assert off in audit.NUMERIC_OFFSETS and int(item["wrong"][14:-1]) >= 0
    cased = generate_task("case", 30, seed=3)
    for item in audit.audit_items(cased, 30, "The answer is {answer}.", seed=0):
        r = next(x for x in cased if x["instruction"] == item["instruction"])
        assert evaluation.score(item["wrong"], r["answer"], "cased") == 0.0
        assert item["wrong"].lower() == item["right"].lower()  # the same words, another letter case
    reversed_items = generate_task("reverse", 10, seed=3)
    for item in audit.audit_items(reversed_items, 10, "The answer is {answer}.", seed=0):
        r = next(x for x in reversed_items if x["instruction"] == item["instruction"])
        assert item["wrong"] == f"The answer is {r['near_miss']}."  # the task's own mistake: the phrase copied
        assert evaluation.score(item["wrong"], r["answer"], "cased") == 0.0
    with pytest.raises(audit.AuditError, match="does not make answers"):
        audit.audit_items(records, 5, "The answer is {answer}0.", seed=0)
    with pytest.raises(audit.AuditError, match="verifiable task"):
        audit.audit_items([{"instruction": "Say hi.", "answer": "hi", "evaluator": "exact"}], 5, "{answer}", seed=0)


# ------------------------------------------------------------------------------ the CLI
@pytest.fixture(scope="module")
def chat_base(tmp_path_factory, smollm2_dir):
    """A tiny random Llama with SmolLM2's tokenizer and chat template: the real judge prompts, fast."""
    from tiny_models import save_tiny_chat_model

    return save_tiny_chat_model(tmp_path_factory.mktemp("audit_base"), smollm2_dir)


@pytest.mark.e2e
@pytest.mark.reference
def test_audit_cli(tmp_path, chat_base):
    """Every member judges both answers of each item; the scores are the run's own judge's, the
    table and JSON agree, and the report shows the audit panel."""
    out = tmp_path / "run" / "audit.json"
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run([sys.executable, "-m", "sparta_jax.audit", "--config=configs/tiny.py", "--items=6",
                           f"--config.tribe.base={chat_base}", f"--out={out}"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["items"] == 6 and result["members"] == ["member_0", "member_1", "member_2"]
    # the test split by default, never train
    assert result["split"] == "test" and "judge audit on the test split: 6 items" in proc.stdout
    config = load_config(os.path.join(REPO, "configs/tiny.py"))
    test_instructions = {r["instruction"] for r in load_instructions(config.data)["test"]}
    assert {s["instruction"] for s in result["scores"]} <= test_instructions
    assert "| pooled |" in proc.stdout and "| member_2 |" in proc.stdout
    right = np.array([s["right_scores"] for s in result["scores"]]).T
    wrong = np.array([s["wrong_scores"] for s in result["scores"]]).T
    assert right.shape == (3, 6) and ((right >= 1) & (right <= 10)).all()
    assert len({round(x, 6) for x in right[0]}) > 1  # the scores depend on the item
    # Fresh LoRA members (B = 0) are the base model: all three judges give the same scores.
    np.testing.assert_allclose(right[0], right[2], atol=1e-4)
    stats = audit_statistics(right, wrong, result["members"], seed=0)
    assert result["pooled"]["auc"] == pytest.approx(stats["pooled"]["auc"])
    assert result["pooled"]["matched"] == stats["pooled"]["matched"]

    # The first item's right-answer score equals the run's own judging path.
    from sparta_jax.tribe import build_tribe

    config = load_config(os.path.join(REPO, "configs/tiny.py"))
    config.tribe.base = chat_base
    mesh = sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, devices=jax.devices()[:1])
    tribe = build_tribe(config.tribe, config.sampler, mesh)
    item = result["scores"][0]
    ids = inference.judge_prompt_ids(tribe, item["instruction"], item["right"], judge_cfg=config.judge, mode=config.mode)
    assert inference.logit_scores(tribe, [(1, ids)], batch_size=1)[0] == pytest.approx(item["right_scores"][1], abs=1e-4)

    from sparta_jax.report import write_report

    html = open(write_report(str(tmp_path / "run"))).read()
    assert 'id="judge-audit"' in html and "member_2" in html


def test_audit_refuses_what_it_cannot_audit():
    config = load_config(os.path.join(REPO, "configs/tiny.py"))
    config.judge.mode = "verifier"
    with pytest.raises(audit.AuditError, match="no judges to audit"):
        audit.run_audit(config, 4, audit.DEFAULT_TEMPLATE)
    config.judge.mode = "logits"
    with pytest.raises(audit.AuditError, match="no 'holdout' split to audit on"):
        audit.run_audit(config, 4, audit.DEFAULT_TEMPLATE, split="holdout")
    with pytest.raises(audit.AuditError, match="--items must be >= 1"):
        audit.run_audit(config, 0, audit.DEFAULT_TEMPLATE)


@pytest.mark.reference
def test_likelihood_scorer_is_each_members_own_log_likelihood_as_transformers_computes_it(chat_base):
    """--scorer=likelihood: the sum of log p(answer tokens | chat prompt), per member; fresh LoRA
    members are the base model, so transformers' log-softmax over the same tokens is the reference."""
    import torch
    import transformers

    config = load_config(os.path.join(REPO, "configs/tiny.py"))
    config.tribe.base = chat_base
    config.judge.batch_size = 3  # several batches, the last one short
    result = audit.run_audit(config, 4, audit.DEFAULT_TEMPLATE, scorer="likelihood")
    assert result["scorer"] == "likelihood" and result["items"] == 4
    hf = transformers.AutoModelForCausalLM.from_pretrained(chat_base, dtype=torch.float32).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(chat_base)
    for item in result["scores"]:
        messages = [{"role": "system", "content": config.tribe.system_prompt},
                    {"role": "user", "content": item["instruction"]}]
        prompt = tokenizer.encode(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True),
                                  add_special_tokens=False)
        for side in ("right", "wrong"):
            answer = tokenizer.encode(item[side], add_special_tokens=False)
            with torch.no_grad():
                logits = hf(input_ids=torch.tensor([prompt + answer])).logits[0].double()
            logp = torch.log_softmax(logits[len(prompt) - 1: -1], -1)[torch.arange(len(answer)), torch.tensor(answer)]
            for member_score in item[f"{side}_scores"]:
                assert member_score == pytest.approx(float(logp.sum()), abs=2e-3)
    assert result["pooled"]["mean_score_right"] < 0  # log-likelihoods, not 1..10 scores
    config.tribe.kind, config.tribe.member_folders = "full", (chat_base, chat_base)
    config.tribe.names = ("a", "b")
    with pytest.raises(audit.AuditError, match="LoRA tribes"):
        audit.run_audit(config, 2, audit.DEFAULT_TEMPLATE, scorer="likelihood")
    with pytest.raises(audit.AuditError, match="--scorer must be one of"):
        audit.run_audit(config, 2, audit.DEFAULT_TEMPLATE, scorer="vibes")
