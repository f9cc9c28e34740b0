"""The baselines' pair construction on hand-made scores, and the SPPO loss by hand and
against TRL 1.16's `sppo_hard` (the same loss at win probabilities 1 and 0)."""
import math
import os

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from sparta_jax import dpo, methods
from sparta_jax.dpo_loss import dpo_loss
from sparta_jax.methods import meta_rewarding, self_rewarding, spin, sppo
from sparta_jax.methods.common import best_and_worst
from sparta_jax.preference_batches import pairs_to_batch, preference_targets

NAN = float("nan")


def test_best_and_worst_skips_unparsed_and_ties():
    assert best_and_worst([3.0, NAN, 9.0, 1.0]) == (2, 3)
    assert best_and_worst([5.0, 7.0, 7.0, 5.0]) == (1, 0)  # first of equals
    assert best_and_worst([4.0, 4.0, NAN]) is None  # all parsed scores tie
    assert best_and_worst([NAN, 6.0, NAN]) is None  # one parsed score
    assert best_and_worst([]) is None


def test_self_rewarding_pair_is_highest_over_lowest():
    pair = self_rewarding.pair_from_scores("q", ["a", "b", "c", "d"], [6.0, 2.5, NAN, 9.0])
    assert (pair["chosen"], pair["rejected"], pair["chosen_score"], pair["rejected_score"]) == ("d", "b", 9.0, 2.5)
    assert self_rewarding.pair_from_scores("q", ["a", "b"], [7.0, 7.0]) is None  # a tie is dropped
    assert self_rewarding.pair_from_scores("q", ["same", "same"], [9.0, 1.0]) is None  # nothing to learn


def test_spin_pair_reference_over_own_answer():
    rec = {"instruction": "What is 2 + 3?", "answer": "5"}
    pair = spin.pair_from_answer(rec, "It is 6.", "The answer is {answer}.")
    assert (pair["chosen"], pair["rejected"]) == ("The answer is 5.", "It is 6.")
    assert spin.pair_from_answer(rec, " The answer is 5. ", "The answer is {answer}.") is None
    assert spin.pair_from_answer({"instruction": "x", "reference": "Paris."}, "Rome.", "{answer}")["chosen"] == "Paris."
    assert spin.pair_from_answer({"instruction": "open question"}, "anything", "{answer}") is None


def test_sppo_win_rates_by_hand():
    """SPPO's win rate averages over all K answers, itself included at 1/2 (the authors' compute_prob)."""
    scores = [8.0, 6.0, NAN, 6.0]
    s = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    rates = sppo.win_rates(scores, temperature=2.0)
    # answer 0 against itself (1/2) and answers 1 and 3 (2 is unparsed): sigmoid(2/2) twice
    np.testing.assert_allclose(rates[0], (0.5 + 2 * s(1.0)) / 3, rtol=1e-12)
    np.testing.assert_allclose(rates[1], (s(-1.0) + 0.5 + 0.5) / 3, rtol=1e-12)
    assert math.isnan(rates[2])
    np.testing.assert_allclose(rates[3], rates[1], rtol=1e-12)
    assert math.isnan(sppo.win_rates([7.0, NAN], 1.0)[0])  # alone: nothing to compare with
    # K = 5 targets: the self term pulls each win rate towards 1/2 by (K - 1) / K, so P - 1/2 is 4/5
    # of the rate over the others alone (the old definition)
    five = [9.0, 7.0, 5.0, 3.0, 1.0]
    over_others = [np.mean([s((a - b) / 2) for j, b in enumerate(five) if j != i]) for i, a in enumerate(five)]
    np.testing.assert_allclose(sppo.win_rates(five, 2.0) - 0.5, (np.array(over_others) - 0.5) * 4 / 5, rtol=1e-12)
    pair = sppo.pair_from_scores("q", ["a", "b", "c", "d"], scores, temperature=2.0)
    assert (pair["chosen"], pair["rejected"]) == ("a", "b")  # first of the equal lowest
    np.testing.assert_allclose([pair["chosen_win_rate"], pair["rejected_win_rate"]],
                               [(0.5 + 2 * s(1.0)) / 3, (s(-1) + 1.0) / 3])
    assert sppo.pair_from_scores("q", ["a", "b"], [5.0, 5.0], 1.0) is None
    assert preference_targets(pair) == (pair["chosen_win_rate"], pair["rejected_win_rate"])
    assert preference_targets({"chosen": "x"}) == (1.0, 0.0)


def test_meta_rewarding_judgment_pair_from_battles():
    judgments = ["j0 score 9", "j1 score 2", "j2 score 5"]
    # both orders of each pair: j0 beats j1 twice, j0 and j2 split, j2 beats j1 once, one unparsed
    battles = [(0, 1, 0), (0, 1, 0), (0, 2, 0), (0, 2, 2), (1, 2, 2), (1, 2, None)]
    pair = meta_rewarding.judgment_pair("PROMPT", judgments, battles)
    assert (pair["chosen"], pair["rejected"], pair["chosen_wins"], pair["rejected_wins"]) == (
        "j0 score 9", "j1 score 2", 3.0, 0.0)
    assert pair["instruction"] == "PROMPT" and pair["kind"] == "judgment"
    assert meta_rewarding.judgment_pair("P", judgments[:2], [(0, 1, 0), (0, 1, 1)]) is None  # 1 : 1
    assert meta_rewarding.judgment_pair("P", judgments, []) is None
    # a judgment in no battle (a duplicate text) is neither chosen nor rejected
    pair = meta_rewarding.judgment_pair("P", ["a", "b", "a"], [(0, 1, 1), (0, 1, 1)])
    assert (pair["chosen"], pair["rejected"]) == ("b", "a")


def test_meta_verdict_and_rubric_parsing():
    from sparta_jax.methods import rubric

    assert meta_rewarding.parse_meta_verdict("Judgment 2 is better") == 1
    assert meta_rewarding.parse_meta_verdict("judgment1.") == 0
    assert meta_rewarding.parse_meta_verdict("Both are fine") is None
    # the rubric's points: the number after the last "Score:", 0..5
    assert rubric.parse_points("Relevant and complete, but wordy.\nScore: 4") == 4
    assert rubric.parse_points("It earns the first point (Score: 1 so far) and two more. **Score:** 3") == 3
    assert rubric.parse_points("score: 0") == 0
    assert rubric.parse_points("Score: 7") is None and rubric.parse_points("I would give it 4/5.") is None
    assert rubric.parse_points(None) is None
    assert rubric.mean_points([4, None, 1]) == 2.5
    assert math.isnan(rubric.mean_points([None, None]))
    prompt = rubric.rubric_prompt("What is 2 + 2?", "4")
    assert prompt.count("1 point") + prompt.count("1 more point") == 5  # one point per criterion
    assert "Request: What is 2 + 2?\nAnswer: 4\n" in prompt and prompt.endswith('"Score: <points>".')


def test_meta_rewarding_length_control_by_hand():
    """rho = 0.25 on scores 5, 4.8, 3, 1, 1.1: the top tier is >= 0.75*5 + 0.25*1 = 4, so the shorter of
    the 5 and the 4.8 is chosen; the bottom tier is <= 0.75*1 + 0.25*5 = 2, so the longer of the 1 and
    the 1.1 is rejected. rho = 0 takes the top and bottom scores only."""
    answers = ["a long but top answer", "short", "middle answer", "bad", "a very long and bad answer"]
    scores = [5.0, 4.8, 3.0, 1.0, 1.1]
    pair = meta_rewarding.length_controlled_pair("q", answers, scores, 0.25)
    assert (pair["chosen"], pair["rejected"]) == ("short", "a very long and bad answer")
    assert (pair["chosen_score"], pair["rejected_score"]) == (4.8, 1.1) and pair["kind"] == "answer"
    pair = meta_rewarding.length_controlled_pair("q", answers, scores, 0.0)
    assert (pair["chosen"], pair["rejected"]) == ("a long but top answer", "bad")
    assert meta_rewarding.length_controlled_pair("q", answers[:2], [3.0, 3.0], 0.2) is None
    assert meta_rewarding.length_controlled_pair("q", answers[:2], [3.0, NAN], 0.2) is None
    with pytest.raises(ValueError, match="length_tier"):
        meta_rewarding.length_controlled_pair("q", answers, scores, 0.5)


def test_sppo_loss_by_hand():
    pc, pr, rc, rr = jnp.array([-10.0]), jnp.array([-12.0]), jnp.array([-10.5]), jnp.array([-11.0])
    beta, pw, pl = 0.5, 0.8, 0.3
    losses, cr, rj = dpo_loss(pc, pr, rc, rr, beta=beta, loss_type="sppo", chosen_targets=jnp.array([pw]),
                              rejected_targets=jnp.array([pl]))
    # SPPO's trainer: the mean of the two squared terms, ((0.5 - 0.6)^2 + (-1 + 0.4)^2) / 2
    want = ((0.5 - (pw - 0.5) / beta) ** 2 + (-1.0 - (pl - 0.5) / beta) ** 2) / 2
    np.testing.assert_allclose(float(losses[0]), want, rtol=1e-6)
    np.testing.assert_allclose(float(losses[0]), (0.01 + 0.36) / 2, rtol=1e-6)
    np.testing.assert_allclose([float(cr[0]), float(rj[0])], [0.25, -0.5], rtol=1e-6)


@pytest.mark.reference
@pytest.mark.parametrize("beta", [0.1, 1e-3])
def test_sppo_hard_matches_trl(beta):
    """With hard win probabilities our loss is half TRL 1.16's sppo_hard (TRL sums the two squared
    terms, SPPO's own trainer averages them), run through TRL's own code."""
    from trl_loss import random_logps, trl_dpo
    import torch

    pc, pr, rc, rr = (np.asarray(x, np.float32) for x in random_logps(seed=41, b=6))
    losses, _, _ = dpo_loss(*map(jnp.asarray, (pc, pr, rc, rr)), beta=beta, loss_type="sppo")
    for i in range(6):
        loss, _ = trl_dpo(torch.tensor(np.stack([[pc[i]], [pr[i]]])), torch.tensor(rc[i: i + 1]),
                          torch.tensor(rr[i: i + 1]), beta, "sppo_hard")
        np.testing.assert_allclose(2 * float(losses[i]), loss.item(), rtol=2e-6)


def test_pairs_to_batch_carries_targets():
    batch = pairs_to_batch([([1, 2], [3], [4, 5]), ([1], [6], [7])], length=6, targets=[(0.7, 0.2), (0.6, 0.4)])
    np.testing.assert_allclose(batch.targets, [[0.7, 0.2], [0.6, 0.4]])
    np.testing.assert_allclose(pairs_to_batch([([1], [2], [3])], length=4).targets, [[1.0, 0.0]])
    with pytest.raises(ValueError, match="targets"):
        pairs_to_batch([([1], [2], [3])], length=4, targets=[(0.5, 0.5), (0.5, 0.5)])


def test_method_registry_and_defaults():
    cfg = methods.default_config()
    assert methods.METHODS == ("sparta", "self_rewarding", "meta_rewarding", "spin", "sppo")
    assert (cfg.self_rewarding.samples, cfg.sppo.samples, cfg.sppo.beta) == (4, 5, 1e-3)
    c = ml_collections.ConfigDict({"methods": cfg})
    assert [methods.samples_per_instruction(m, c) for m in methods.METHODS] == [2, 4, 7, 1, 5]
    with pytest.raises(ValueError, match="method must be one of"):
        methods.make_pairs("dpo", c, None, [], rng=None)


# ------------------------------------------------------------------- wiring, on a scripted model
class ScriptedSampler:
    """Stands in for the sampler: answers "The answer is <k>." (k = the row's rank in its batch),
    Sparta-prompt judges write '{"score": s}' with s = 2 + the answer's number and rubric judges
    "Relevant. Score: p" with p = 1 + that number (so answers rank by number, in either mode), and
    the meta-judge prefers the judgment whose score is higher (by candidate log-probs)."""

    def __init__(self, tokenizer):
        from sparta_jax.sampling import SamplerConfig

        self.tokenizer = tokenizer
        self.config = SamplerConfig()  # static batches, as a run's sampler by default
        self.calls = []

    def generate(self, model, prompts, *, rng, adapter_ids, **kwargs):
        import re
        from sparta_jax.sampling import Generation

        assert set(adapter_ids) == {0}  # a baseline's one model
        texts = []
        for k, ids in enumerate(prompts):
            text = self.tokenizer.decode(ids)
            if "Rate the answer below" in text:
                number = int(re.findall(r"The answer is (\d+)\.", text)[-1])
                texts.append(f"Relevant. Score: {min(5, 1 + number)}")
                self.calls.append("rubric")
            elif "Response to be evaluated" in text:
                number = int(re.findall(r"The answer is (\d+)\.", text)[-1])
                texts.append('{"score": %d}' % min(10, 2 + number))
                self.calls.append("judge")
            else:
                texts.append(f"The answer is {k % 4}.")
                self.calls.append("answer")
        return Generation(np.zeros((len(prompts), 1), np.int32), np.ones(len(prompts), np.int32), ["stop"] * len(prompts),
                          texts)

    def candidate_logprobs(self, model, prompts, candidates, *, adapter_ids=None, continuation_ids=None):
        import re

        out = []
        for ids in prompts:
            text = self.tokenizer.decode(ids)
            if len(candidates) == 6:  # the rubric's points "0".."5" in `logits` mode
                points = min(5, 1 + int(re.findall(r"The answer is (\d+)\.", text)[-1]))
                out.append([0.0 if p == points else -30.0 for p in range(6)])
                self.calls.append("rubric logits")
                continue
            first, second = (int(x) for x in re.findall(r"Judgment [12]: [^\n]*?Score: (\d+)", text))
            out.append([0.0, -1.0] if first > second else [-1.0, 0.0])
            self.calls.append("meta")
        return np.asarray(out)


@pytest.fixture(scope="module")
def scripted_tribe(smollm2_dir):
    from sparta_jax.models.loading import load_tokenizer_from
    from sparta_jax.tribe import Tribe

    tokenizer = load_tokenizer_from(smollm2_dir)
    return Tribe(("actor",), None, tokenizer, ScriptedSampler(tokenizer), "You are a helpful AI assistant.", "x")


def _config(judge_mode="sampled"):
    from sparta_jax.config_files import load_config

    c = load_config(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "tiny.py"))
    c.mode, c.judge.mode = "fixed", judge_mode
    c.methods.meta_rewarding.samples, c.methods.meta_rewarding.judgments = 4, 3
    return c


@pytest.mark.reference
def test_meta_rewarding_pairs_from_a_scripted_model(scripted_tribe):
    import jax

    records, rows, info = meta_rewarding.make_pairs(_config("logits"), scripted_tribe,
                                                    [{"instruction": "What is 1 + 2?"}, {"instruction": "Name 3."}],
                                                    rng=jax.random.key(0))
    # answers are "The answer is 0..3." per instruction; every judgment of answer k gives 1 + k points,
    # so the three judgments of one answer are identical texts: no meta battles, no judge pairs
    assert info["meta_battles"] == 0 and info["judge_pairs"] == 0
    answer_pairs = [r for r in records if r["kind"] == "answer"]
    assert [(r["chosen"], r["rejected"]) for r in answer_pairs] == [("The answer is 3.", "The answer is 0.")] * 2
    # `logits` mode: the actor's scores are the rubric's expected points, not the parsed judgments
    np.testing.assert_allclose(rows[0]["scores"], [1.0, 2.0, 3.0, 4.0], atol=1e-9)
    assert [r["chosen_score"] for r in answer_pairs] == pytest.approx([4.0, 4.0])
    assert len(rows[0]["judgments"][0]) == 3 and rows[0]["judgments"][0][0] == "Relevant. Score: 1"
    assert "rubric logits" in scripted_tribe.sampler.calls


@pytest.mark.reference
def test_meta_judge_battles_rank_distinct_judgments(scripted_tribe, monkeypatch):
    """Judgments of one answer that differ: the meta-judge (both orders) prefers the higher score."""
    import jax
    from sparta_jax import inference

    real = inference.generate_texts
    scores = iter(range(100))

    def varied(tribe, jobs, **kwargs):  # judgments of one answer give 1, 4, 2, ... points in turn
        texts = real(tribe, jobs, **kwargs)
        return [f"Relevant. Score: {1 + (next(scores) * 3) % 5}" if t.startswith("Relevant.") else t for t in texts]

    monkeypatch.setattr(inference, "generate_texts", varied)
    records, rows, info = meta_rewarding.make_pairs(_config("logits"), scripted_tribe, [{"instruction": "Q?"}],
                                                    rng=jax.random.key(0))
    judge_pairs = [r for r in records if r["kind"] == "judgment"]
    assert info["meta_battles"] == sum(2 * 3 for js in rows[0]["judgments"] if len(set(js)) == 3) + sum(
        2 for js in rows[0]["judgments"] if len(set(js)) == 2)
    assert info["meta_unparsed"] == 0 and len(judge_pairs) == info["judge_pairs"] > 0
    for r in judge_pairs:
        chosen, rejected = (int(x.split("Score: ")[1]) for x in (r["chosen"], r["rejected"]))
        assert chosen > rejected  # the scripted meta-judge prefers the higher score
        assert "Rate the answer below" in r["instruction"]  # the rubric prompt, not the meta-judge's
        assert not r["instruction"].startswith("Review the user")


@pytest.mark.reference
def test_self_rewarding_and_sppo_from_a_scripted_model(scripted_tribe):
    import jax

    c = _config("sampled")
    c.methods.self_rewarding.samples = c.methods.sppo.samples = 3
    scripted_tribe.sampler.calls.clear()
    records, rows, _ = self_rewarding.make_pairs(c, scripted_tribe, [{"instruction": "Q?"}], rng=jax.random.key(0))
    assert rows[0]["answers"] == ["The answer is 0.", "The answer is 1.", "The answer is 2."]
    # the rubric, 3 sampled judgments per answer (Yuan et al.), their points averaged
    assert scripted_tribe.sampler.calls.count("rubric") == 9 and rows[0]["scores"] == [1.0, 2.0, 3.0]
    assert rows[0]["judgments"][2] == ["Relevant. Score: 3"] * 3
    assert (records[0]["chosen"], records[0]["rejected"]) == ("The answer is 2.", "The answer is 0.")
    c.methods.self_rewarding.prompt = "sparta"  # the earlier variant: the 1-10 prompt, one judgment
    _, rows, _ = self_rewarding.make_pairs(c, scripted_tribe, [{"instruction": "Q?"}], rng=jax.random.key(0))
    assert rows[0]["scores"] == [2.0, 3.0, 4.0] and "judgments" not in rows[0]
    records, rows, _ = sppo.make_pairs(c, scripted_tribe, [{"instruction": "Q?"}], rng=jax.random.key(0))
    s = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    np.testing.assert_allclose(rows[0]["win_rates"], [(0.5 + s(-1) + s(-2)) / 3, 0.5, (s(2) + s(1) + 0.5) / 3])
    assert records[0]["chosen_win_rate"] == rows[0]["win_rates"][2]


@pytest.mark.reference
@pytest.mark.parametrize("mode", ["faithful", "fixed"])
def test_meta_judge_prompt_keeps_its_start_when_cut(smollm2_dir, mode):
    """A long answer: the meta-judge prompt keeps the chat template's head and system turn, as every
    other prompt does (it was cut from the left); `fixed` shortens the answer inside the template."""
    from sparta_jax.models.loading import load_tokenizer_from
    from sparta_jax.tribe import Tribe

    class Recorder:
        def __init__(self):
            self.prompts = []

        def candidate_logprobs(self, model, prompts, candidates, *, adapter_ids=None, continuation_ids=None):
            self.prompts += prompts
            return np.zeros((len(prompts), len(candidates)))

    tokenizer = load_tokenizer_from(smollm2_dir)
    tribe = Tribe(("actor",), None, tokenizer, Recorder(), "You are a helpful AI assistant.", "x")
    config = _config("logits")
    config.mode, config.judge.max_prompt_tokens = mode, 160
    answer = "Let me think step by step. " * 60  # far past 160 tokens
    judgments = [['{"score": 3}', '{"score": 9}']]
    meta_rewarding.meta_verdicts(config, tribe, ["What is 2 + 2?"], [[answer]], [judgments], [(0, 0, 0, 1, 0, 1)],
                                 rng=None)
    prefix = tokenizer.encode(meta_rewarding.META_ASSISTANT_PREFIX, add_special_tokens=False)
    (ids,) = tribe.sampler.prompts
    assert ids[-len(prefix):] == prefix
    prompt = tokenizer.decode(ids[:-len(prefix)])
    assert len(ids) - len(prefix) == 160
    assert prompt.startswith("<|im_start|>system\nYou are a helpful AI assistant.<|im_end|>\n<|im_start|>user\n"
                             "Review the user's question")
    if mode == "fixed":  # the whole template around a shortened answer
        assert prompt.endswith('Judgment 1: {"score": 3}\n\nJudgment 2: {"score": 9}\n\nAnswer with "Judgment 1" or '
                               '"Judgment 2" only.<|im_end|>\n<|im_start|>assistant\n')
        assert "User question: What is 2 + 2?\nResponse: Let me think step by step." in prompt
    else:  # the released truncation: the first 160 tokens
        assert "Judgment 1" not in prompt and prompt.endswith("Let me think step by step. " * 2 + "Let me")


def test_one_dpo_config_for_the_loop_and_aot():
    """The loop and `aot` build the DPO step from one dpo_config: SPPO's loss and beta included
    (aot's own copy once lacked them)."""
    c = _config()
    assert (dpo.dpo_config(c).loss_type, dpo.dpo_config(c).beta) == ("sigmoid", c.dpo.beta)
    c.method, c.methods.sppo.beta = "sppo", 0.25
    assert (dpo.dpo_config(c).loss_type, dpo.dpo_config(c).beta) == ("sppo", 0.25)
    assert not hasattr(__import__("sparta_jax.aot", fromlist=["x"]), "dpo_config")
