"""The baselines' pair construction on hand-made scores, and the SPPO loss by hand and
against TRL 1.16's `sppo_hard` (the same loss at win probabilities 1 and 0)."""
import math
import os

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from sparta_jax import methods
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
    scores = [8.0, 6.0, NAN, 6.0]
    s = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    rates = sppo.win_rates(scores, temperature=2.0)
    # answer 0 against answers 1 and 3 (2 is unparsed): sigmoid(2/2) twice
    np.testing.assert_allclose(rates[0], s(1.0), rtol=1e-12)
    np.testing.assert_allclose(rates[1], (s(-1.0) + s(0.0)) / 2, rtol=1e-12)
    assert math.isnan(rates[2])
    np.testing.assert_allclose(rates[3], rates[1], rtol=1e-12)
    pair = sppo.pair_from_scores("q", ["a", "b", "c", "d"], scores, temperature=2.0)
    assert (pair["chosen"], pair["rejected"]) == ("a", "b")  # first of the equal lowest
    np.testing.assert_allclose([pair["chosen_win_rate"], pair["rejected_win_rate"]], [s(1.0), (s(-1) + 0.5) / 2])
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


def test_meta_verdict_and_answer_score_parsing():
    assert meta_rewarding.parse_meta_verdict("Judgment 2 is better") == 1
    assert meta_rewarding.parse_meta_verdict("judgment1.") == 0
    assert meta_rewarding.parse_meta_verdict("Both are fine") is None
    assert meta_rewarding.answer_score([7, None, 4]) == 5.5
    assert math.isnan(meta_rewarding.answer_score([None, None]))


def test_sppo_loss_by_hand():
    pc, pr, rc, rr = jnp.array([-10.0]), jnp.array([-12.0]), jnp.array([-10.5]), jnp.array([-11.0])
    beta, pw, pl = 0.5, 0.8, 0.3
    losses, cr, rj = dpo_loss(pc, pr, rc, rr, beta=beta, loss_type="sppo", chosen_targets=jnp.array([pw]),
                              rejected_targets=jnp.array([pl]))
    want = (0.5 - (pw - 0.5) / beta) ** 2 + (-1.0 - (pl - 0.5) / beta) ** 2  # (0.5-0.6)^2 + (-1+0.4)^2
    np.testing.assert_allclose(float(losses[0]), want, rtol=1e-6)
    np.testing.assert_allclose(float(losses[0]), 0.01 + 0.36, rtol=1e-6)
    np.testing.assert_allclose([float(cr[0]), float(rj[0])], [0.25, -0.5], rtol=1e-6)


@pytest.mark.parametrize("beta", [0.1, 1e-3])
def test_sppo_hard_matches_trl(beta):
    """With hard win probabilities our loss is TRL 1.16's sppo_hard, run through its own code."""
    from test_dpo_loss import _random_logps, trl_dpo
    import torch

    pc, pr, rc, rr = (np.asarray(x, np.float32) for x in _random_logps(seed=41, b=6))
    losses, _, _ = dpo_loss(*map(jnp.asarray, (pc, pr, rc, rr)), beta=beta, loss_type="sppo")
    for i in range(6):
        loss, _ = trl_dpo(torch.tensor(np.stack([[pc[i]], [pr[i]]])), torch.tensor(rc[i: i + 1]),
                          torch.tensor(rr[i: i + 1]), beta, "sppo_hard")
        np.testing.assert_allclose(float(losses[i]), loss.item(), rtol=2e-6)


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
    judges write '{"score": s}' with s = 2 + the answer's number (so answers rank by number), and
    the meta-judge prefers the judgment whose score is higher (by candidate log-probs)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.calls = []

    def generate(self, model, prompts, *, rng, adapter_ids, **kwargs):
        import re
        from sparta_jax.sampling import Generation

        assert set(adapter_ids) == {0}  # a baseline's one model
        texts = []
        for k, ids in enumerate(prompts):
            text = self.tokenizer.decode(ids)
            if "Response to be evaluated" in text:
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
            first, second = (int(x) for x in re.findall(r'Judgment [12]: \{"score": (\d+)\}', text))
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


def test_meta_rewarding_pairs_from_a_scripted_model(scripted_tribe):
    import jax

    records, rows, info = meta_rewarding.make_pairs(_config("logits"), scripted_tribe,
                                                    [{"instruction": "What is 1 + 2?"}, {"instruction": "Name 3."}],
                                                    rng=jax.random.key(0))
    # answers are "The answer is 0..3." per instruction; every judgment of answer k scores 2 + k, so
    # the three judgments of one answer are identical texts: no meta battles, no judge pairs
    assert info["meta_battles"] == 0 and info["judge_pairs"] == 0
    answer_pairs = [r for r in records if r["kind"] == "answer"]
    assert [(r["chosen"], r["rejected"], r["chosen_score"], r["rejected_score"]) for r in answer_pairs] == [
        ("The answer is 3.", "The answer is 0.", 5.0, 2.0)] * 2
    assert rows[0]["scores"] == [2.0, 3.0, 4.0, 5.0] and len(rows[0]["judgments"][0]) == 3


def test_meta_judge_battles_rank_distinct_judgments(scripted_tribe, monkeypatch):
    """Judgments of one answer that differ: the meta-judge (both orders) prefers the higher score."""
    import jax
    from sparta_jax import combat

    real = combat.generate_texts
    scores = iter(range(100))

    def varied(tribe, jobs, **kwargs):  # judgments of one answer score 4, 7, 5, ... in turn
        texts = real(tribe, jobs, **kwargs)
        return [('{"score": %d}' % (4 + (next(scores) * 3) % 5)) if t.startswith('{"score"') else t for t in texts]

    monkeypatch.setattr(combat, "generate_texts", varied)
    records, rows, info = meta_rewarding.make_pairs(_config("logits"), scripted_tribe, [{"instruction": "Q?"}],
                                                    rng=jax.random.key(0))
    judge_pairs = [r for r in records if r["kind"] == "judgment"]
    assert info["meta_battles"] == sum(2 * 3 for js in rows[0]["judgments"] if len(set(js)) == 3) + sum(
        2 for js in rows[0]["judgments"] if len(set(js)) == 2)
    assert info["meta_unparsed"] == 0 and len(judge_pairs) == info["judge_pairs"] > 0
    for r in judge_pairs:
        chosen, rejected = (int(x.split(": ")[1].rstrip("}")) for x in (r["chosen"], r["rejected"]))
        assert chosen > rejected  # the scripted meta-judge prefers the higher score
        assert "Response to be evaluated" in r["instruction"]  # the judge prompt, not the meta-judge's
        assert not r["instruction"].startswith("Review the user")


def test_self_rewarding_and_sppo_from_a_scripted_model(scripted_tribe):
    import jax

    c = _config("sampled")
    c.methods.self_rewarding.samples = c.methods.sppo.samples = 3
    records, rows, _ = self_rewarding.make_pairs(c, scripted_tribe, [{"instruction": "Q?"}], rng=jax.random.key(0))
    assert rows[0]["answers"] == ["The answer is 0.", "The answer is 1.", "The answer is 2."]
    assert (records[0]["chosen"], records[0]["rejected"]) == ("The answer is 2.", "The answer is 0.")
    records, rows, _ = sppo.make_pairs(c, scripted_tribe, [{"instruction": "Q?"}], rng=jax.random.key(0))
    s = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    np.testing.assert_allclose(rows[0]["win_rates"], [(s(-1) + s(-2)) / 2, 0.5, (s(2) + s(1)) / 2])
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
