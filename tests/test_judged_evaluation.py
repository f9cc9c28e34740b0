"""Open-ended ("judged") evaluation: scores by the tribe's other members or a named judge model."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import peft
import pytest
import torch
import transformers

from sparta_jax import inference, member_eval, sharding
from sparta_jax.tribe import build_judge, build_tribe
from tiny_models import save_tiny_chat_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_judged_summary_by_hand():
    s = member_eval.judged_summary([10.0, 1.0, np.nan, 5.5])
    x = np.array([1.0, 0.0, 0.0, 0.5])  # (s - 1) / 9, unscored = 0
    half = 1.96 * np.std(x, ddof=1) / 2
    assert s["accuracy"] == pytest.approx(0.375) and s["n"] == 4 and s["n_unparsed"] == 1
    assert s["ci95"] == pytest.approx([max(0, 0.375 - half), min(1, 0.375 + half)])
    assert s["mean_score"] == pytest.approx(5.5)
    assert member_eval.judged_summary([np.nan])["mean_score"] is None


def test_split_kind():
    judged = [{"instruction": "Write a haiku.", "evaluator": "judged"}]
    verifiable = [{"instruction": "1 + 1?", "answer": 2, "evaluator": "numeric"}]
    assert member_eval.split_kind(judged) == "judged"
    assert member_eval.split_kind(verifiable) == "verifiable"
    assert member_eval.split_kind(judged + verifiable) is None
    assert member_eval.split_kind([{"instruction": "x", "evaluator": "numeric"}]) is None  # no answer
    assert member_eval.split_kind([]) is None


@pytest.fixture(scope="module")
def chat_base(tmp_path_factory, smollm2_dir):
    folder = tmp_path_factory.mktemp("judged_base")
    save_tiny_chat_model(folder, smollm2_dir)
    adapters = []
    for m in range(3):  # random, non-zero adapters: the members really differ as judges
        base = transformers.AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
        torch.manual_seed(20 + m)
        peft.get_peft_model(base, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                  init_lora_weights=False)).save_pretrained(str(folder / f"m{m}"))
        adapters.append(str(folder / f"m{m}"))
    return str(folder), adapters


def _cfgs(base, adapters):
    tribe = ml_collections.ConfigDict(dict(base=base, adapters=tuple(adapters), names=("a", "b", "c"), members=3,
                                           lora_rank=4, lora_alpha=8.0, lora_targets=("q_proj",),
                                           system_prompt="You are a helpful AI assistant.", dtype="float32",
                                           param_dtype="float32"))
    sampler = ml_collections.ConfigDict(dict(prompt_buckets=(64, 128, 256, 512), new_token_buckets=(16, 32),
                                             candidates=64, cache_dtype="float32"))
    judge = ml_collections.ConfigDict(dict(mode="logits", max_prompt_tokens=512, batch_size=8, temperature=0.7,
                                           top_k=50, top_p=0.95, max_new_tokens=16))
    return tribe, sampler, judge


RECORDS = [{"instruction": "Write one sentence about the sea.", "evaluator": "judged"},
           {"instruction": "Name a primary colour.", "evaluator": "judged"}]
TEXTS = [["The sea is wide.", "Red."], ["Waves.", "Blue is one."], ["Salt water everywhere.", "Yellow"]]


@pytest.mark.reference
def test_tribe_judges_exclude_the_answering_member_and_average(chat_base):
    base, adapters = chat_base
    mesh = sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, devices=jax.devices()[:1])
    tribe_cfg, sampler_cfg, judge_cfg = _cfgs(base, adapters)
    tribe = build_tribe(tribe_cfg, sampler_cfg, mesh)
    scorer = member_eval.TribeScorer(tribe, judge_cfg=judge_cfg, mode="fixed")
    got = scorer.judge_scores([0, 1, 2], RECORDS, TEXTS)
    # Every judge on every answer, one by one; then the mean over the judges other than the author.
    table = np.zeros((3, 3, 2))  # [judge, author, item]
    for j in range(3):
        for k in range(3):
            for i, r in enumerate(RECORDS):
                ids = inference.judge_prompt_ids(tribe, r["instruction"], TEXTS[k][i], judge_cfg=judge_cfg, mode="fixed")
                table[j, k, i] = inference.logit_scores(tribe, [(j, ids)], batch_size=1)[0]
    assert len({round(float(x), 6) for x in table[:, 0, 0]}) == 3  # the judges disagree
    for k in range(3):
        others = [j for j in range(3) if j != k]
        np.testing.assert_allclose(got[k], table[others, k].mean(axis=0), rtol=1e-5)
    summaries = scorer.score([0, 1, 2], RECORDS, TEXTS)
    assert [s["accuracy"] for s in summaries] == pytest.approx([float(np.mean((g - 1) / 9)) for g in got])

    # A named judge model: its base alone scores every answer once.
    judge = build_judge(base, tribe_cfg, sampler_cfg, mesh)
    named = member_eval.TribeScorer(tribe, judges=member_eval.Panel(judge), judge_cfg=judge_cfg,
                                    mode="fixed").judge_scores(
        [1], RECORDS, TEXTS[1:2])
    want = [inference.logit_scores(judge, [(-1, inference.judge_prompt_ids(judge, r["instruction"], t, judge_cfg=judge_cfg,
                                                                      mode="fixed"))], batch_size=1)[0]
            for r, t in zip(RECORDS, TEXTS[1])]
    np.testing.assert_allclose(named[0], want, rtol=1e-5)
    assert all(1.0 <= x <= 10.0 for x in want)


@pytest.mark.reference
def test_a_baseline_is_judged_by_the_rest_of_the_initial_tribe_and_alone_is_an_error(chat_base):
    """A baseline's tribe is its one trained member: nobody is left to judge its open-ended answers.
    Alone it is an error (it read as accuracy 0.0 with every answer unscored); with the rest of the
    initial tribe as a frozen panel, its scores are the ones the whole tribe gives it."""
    from sparta_jax.tribe import actor_config

    base, adapters = chat_base
    mesh = sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, devices=jax.devices()[:1])
    tribe_cfg, sampler_cfg, judge_cfg = _cfgs(base, adapters)
    whole = build_tribe(tribe_cfg, sampler_cfg, mesh)
    actor_cfg, actor_adapters = actor_config(tribe_cfg, whole.names, "b", tuple(adapters))
    actor = build_tribe(actor_cfg, sampler_cfg, mesh, adapters=actor_adapters)
    assert actor.names == ("b",)
    alone = member_eval.TribeScorer(actor, judge_cfg=judge_cfg, mode="fixed")
    with pytest.raises(member_eval.EvaluationError, match="no one can judge b's open-ended answers"):
        alone.score([0], RECORDS, TEXTS[1:2])
    panel = member_eval.Panel(whole, (0, 2))
    got = member_eval.TribeScorer(actor, judges=panel, judge_cfg=judge_cfg, mode="fixed").judge_scores(
        [0], RECORDS, TEXTS[1:2])
    want = member_eval.TribeScorer(whole, judge_cfg=judge_cfg, mode="fixed").judge_scores([1], RECORDS, TEXTS[1:2])
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert ((got >= 1) & (got <= 10)).all()


def run_open_ended(tmp_path, base, items: int, extra: list[str]):
    """The main loop on 40 open-ended prompts ("judged" items, `items` dev and test each) for one
    iteration on the tiny chat model; (the finished process, its workdir)."""
    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Write a short line about the number {i}."}) + "\n"
                            for i in range(40)))
    config = tmp_path / "open_ended.py"
    config.write_text(
        "import ml_collections\n"
        "from sparta_jax.config_files import load_config\n"
        "def get_config():\n"
        f"    c = load_config({os.path.join(REPO, 'configs', 'tiny.py')!r})\n"
        f"    c.data = ml_collections.ConfigDict(dict(kind='local', path={str(data)!r}, instruction_field='prompt',\n"
        f"                                            evaluator='judged', dev={items}, test={items}, seed=0))\n"
        "    return c\n")
    env = {**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    workdir = tmp_path / "run"
    out = subprocess.run(
        [sys.executable, "-m", "sparta_jax.main", f"--config={config}", f"--workdir={workdir}",
         f"--config.tribe.base={base}", "--config.iterations=1", "--config.generation.max_new_tokens=8",
         "--config.dpo.max_length=96", "--config.dpo.max_prompt_length=80", *extra],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    return out, workdir


@pytest.mark.e2e
@pytest.mark.reference
def test_main_loop_evaluates_open_ended_items_with_a_named_judge(tmp_path, chat_base):
    base, _ = chat_base
    out, workdir = run_open_ended(tmp_path, base, 4, ["--config.instructions_per_iteration=4",
                                                      f"--config.evaluation.judge={base}"])
    assert out.returncode == 0, out.stderr[-3000:]
    assert "evaluation judging" in out.stderr
    for t in (0, 1):
        ev = json.load(open(workdir / f"iteration_00{t}" / "evaluation.json"))
        assert set(ev["dev"]) == {"member_0", "member_1", "member_2"}
        for s in ev["dev"].values():
            assert s["n"] == 4 and 0.0 <= s["accuracy"] <= 1.0 and 1.0 <= s["mean_score"] <= 10.0
            assert s["accuracy"] == pytest.approx((s["mean_score"] - 1) / 9, abs=1e-9)  # nothing unscored
        assert ev["best_test"]["n"] == 4 and ev["examples"][0]["answer"] is None
    assert not (workdir / "iteration_001" / "judge_signal.json").exists()  # no reference answers


@pytest.mark.e2e
@pytest.mark.reference
def test_baseline_on_open_ended_items_is_judged_by_the_frozen_initial_tribe(tmp_path, chat_base):
    """Self-Rewarding on open-ended prompts with the tribe's own judges: every evaluation of its one
    model, before and after training, is scored by the other initial members (nothing unscored)."""
    base, _ = chat_base
    out, workdir = run_open_ended(tmp_path, base, 3, ["--config.instructions_per_iteration=2",
                                                      "--config.method=self_rewarding",
                                                      "--config.methods.self_rewarding.samples=2"])
    assert out.returncode == 0, out.stderr[-3000:]
    actor = json.load(open(workdir / "method.json"))["member"]
    for t in (0, 1):
        ev = json.load(open(workdir / f"iteration_00{t}" / "evaluation.json"))
        s = ev["dev"][actor]
        assert s["n"] == 3 and s["n_unparsed"] == 0 and 1.0 <= s["mean_score"] <= 10.0
        assert s["accuracy"] == pytest.approx((s["mean_score"] - 1) / 9, abs=1e-9)
    assert set(json.load(open(workdir / "iteration_001" / "evaluation.json"))["dev"]) == {actor}


@pytest.mark.reference
def test_sampled_judges_parse_scores_and_count_the_unscored(chat_base, monkeypatch):
    """`sampled` mode: judge texts go through the score parser (docs/algorithm.md §2.3); an answer
    no judge scored counts 0."""
    base, adapters = chat_base
    mesh = sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, devices=jax.devices()[:1])
    tribe_cfg, sampler_cfg, judge_cfg = _cfgs(base, adapters)
    judge_cfg.mode = "sampled"
    tribe = build_tribe(tribe_cfg, sampler_cfg, mesh)
    # Member 0's two answers, judged by members 1 and 2: 8 and 6 on the first, nothing readable on the second.
    judge_texts = ['{"score": 8}', "Score: 6", "no idea", "???"]

    def fake_generate(tribe_, jobs, **kwargs):
        assert [j for j, _ in jobs] == [1, 2, 1, 2]  # the other members judge
        return judge_texts[: len(jobs)]

    monkeypatch.setattr(inference, "generate_texts", fake_generate)
    scorer = member_eval.TribeScorer(tribe, judge_cfg=judge_cfg, mode="fixed", rng=jax.random.key(0))
    scores = scorer.judge_scores([0], RECORDS, TEXTS[:1])
    assert scores[0][0] == 7.0 and np.isnan(scores[0][1])
    (summary,) = scorer.score([0], RECORDS, TEXTS[:1])
    assert summary["n_unparsed"] == 1 and summary["mean_score"] == 7.0
    assert summary["accuracy"] == pytest.approx(((7 - 1) / 9 + 0) / 2)
    judge_texts[:2] = ["I like it.", "no score"]  # judges that write nonsense on every answer: an error, not 0.0
    with pytest.raises(member_eval.EvaluationError, match="no judge scored any of 4 answers"):
        scorer.score([0], RECORDS, TEXTS[:1])
