"""The `logits` judge: each candidate is the probability of writing exactly that number.

Hand-made judges (next-token distributions over a 12-token vocabulary: the digits, "}" and
"x") check the rule itself; the embedded model checks the one-pass token tree against
PyTorch transformers scoring every candidate in its own forward pass.
"""
from __future__ import annotations

import jax
import numpy as np
import pytest
import torch
import transformers
from hypothesis import given, settings
from hypothesis import strategies as st

from sparta_jax import inference, sharding
from sparta_jax.config_files import load_config
from sparta_jax.models.llama import suffix_tree_layout
from sparta_jax.sampling import candidate_tree, tree_candidate_logprobs
from sparta_jax.sparta import LOGIT_ASSISTANT_PREFIX, logit_expected_score, number_continuation_ids

DIGITS = [str(d) for d in range(10)]
VOCAB = DIGITS + ["}", "x"]  # token i is VOCAB[i]
CANDIDATES = [[int(c) for c in str(n)] for n in range(1, 11)]  # digit-split: "10" is [1, 0]
CONTINUES = number_continuation_ids(VOCAB)


def judge_over_strings(strings: dict[str, float]):
    """A judge that writes each complete string with the given probability; returns
    next(prefix) -> probabilities over VOCAB, the token-level conditionals of that law."""
    def next_token(prefix: str) -> np.ndarray:
        p = np.zeros(len(VOCAB))
        for s, q in strings.items():
            if s.startswith(prefix) and len(s) > len(prefix):
                p[VOCAB.index(s[len(prefix)])] += q
        return p / p.sum() if p.sum() else np.full(len(VOCAB), 1.0 / len(VOCAB))
    return next_token


def expected_score(next_token, *, with_stop: bool = True) -> float:
    """The judge's expected score through the same tables the sampler fills (one row)."""
    nodes, ends = candidate_tree(CANDIDATES)
    query = list(range(len(VOCAB)))
    prefixes = [""] + ["".join(VOCAB[t] for t in _path(nodes, k)) for k in range(len(nodes))]
    with np.errstate(divide="ignore"):
        probs = np.stack([next_token(p) for p in prefixes])  # [nodes + 1, vocab]
        table = np.log(probs)[None]
        stop = np.log(probs[:, [i for i in range(len(VOCAB)) if i not in CONTINUES]].sum(-1))[None]
    logliks = tree_candidate_logprobs(table, stop if with_stop else None, nodes, ends, query)
    return float(logit_expected_score(logliks)[1][0])


def _path(nodes, k):
    out = []
    while k >= 0:
        out.append(nodes[k][0])
        k = nodes[k][1]
    return out[::-1]


def test_number_continuation_ids():
    assert list(CONTINUES) == list(range(10))
    assert list(number_continuation_ids(["a", "7", "12", " 3", "", "٣", "3x"])) == [1, 2, 6]


def test_certain_judges_score_their_number():
    assert expected_score(judge_over_strings({"10}": 1.0})) >= 9.9
    assert expected_score(judge_over_strings({"1}": 1.0})) <= 1.1
    assert expected_score(judge_over_strings({"9}": 1.0})) == pytest.approx(9.0)
    assert expected_score(judge_over_strings({"9}": 0.5, "10}": 0.5})) == pytest.approx(9.5)
    # The shipped rule (no stop term) put a judge certain of 10 at 5.5 and 9-or-10 at 6.67.
    assert expected_score(judge_over_strings({"10}": 1.0}), with_stop=False) == pytest.approx(5.5)
    assert expected_score(judge_over_strings({"9}": 0.5, "10}": 0.5}), with_stop=False) == pytest.approx(20 / 3)
    # Mass on numbers outside 1..10 ("15", "0") is not a score: the rest is renormalised.
    assert expected_score(judge_over_strings({"15}": 0.6, "1}": 0.1, "3}": 0.3})) == pytest.approx(2.5)
    assert expected_score(judge_over_strings({"0}": 0.5, "10}": 0.4, "1x": 0.1})) == pytest.approx(0.4 / 0.5 * 10 + 0.1 / 0.5)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=10, max_size=10).filter(lambda w: sum(w) > 1e-3),
       st.integers(1, 9), st.floats(0.0, 1.0), st.floats(0.0, 0.5))
def test_moving_mass_up_never_lowers_the_score(weights, k, share, junk):
    """Moving mass from k to k + 1 never lowers the expected score, with junk ("15") around."""
    total = sum(weights)
    law = {f"{n}}}": w / total * (1 - junk) for n, w in zip(range(1, 11), weights)}
    law["15}"] = junk
    moved = dict(law)
    delta = share * law[f"{k}}}"]
    moved[f"{k}}}"] -= delta
    moved[f"{k + 1}}}"] += delta
    before, after = expected_score(judge_over_strings(law)), expected_score(judge_over_strings(moved))
    assert after >= before - 1e-9
    exact = sum(n * law[f"{n}}}"] for n in range(1, 11)) / (1 - junk)
    assert before == pytest.approx(exact, rel=1e-6, abs=1e-9)


def test_suffix_tree_layout_by_hand():
    # prefix of 2 slots, then the tree "1" (root child), "0" (child of "1"), "2" (root child)
    visible, offset = suffix_tree_layout((-1, 0, -1), 5)
    assert visible[:2].all() and visible[:, :2].all()
    np.testing.assert_array_equal(visible[2:, 2:], [[1, 0, 0], [1, 1, 0], [0, 0, 1]])
    np.testing.assert_array_equal(offset, [0, 0, 0, 0, 2])  # "2" sits at depth 0, two slots on
    with pytest.raises(ValueError, match="parents must precede"):
        suffix_tree_layout((0,), 3)


@pytest.fixture(scope="module")
def embedded_tribe(smollm2_dir):
    from sparta_jax.tribe import build_tribe

    config = load_config("configs/base.py")
    config.tribe.base = smollm2_dir
    config.tribe.members = 3
    mesh = sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, devices=jax.devices()[:1])
    return config, build_tribe(config.tribe, config.sampler, mesh)


JUDGE_CASES = [("What is 17 + 25?", "17 + 25 = 42."), ("What is 17 + 25?", "17 + 25 = 32."),
               ("Name the capital of France.", "Paris is the capital of France."),
               ("What is 6 x 7?", "I think the answer is 13, because 6 and 7 make 13.")]


@pytest.mark.reference
def test_logit_scores_equal_pytorch_one_pass_per_candidate(embedded_tribe, smollm2_dir):
    """inference.logit_scores (one tree pass per prompt) == transformers scoring "1".."10" each in
    its own forward pass, with the stop mass of every non-digit token, on real judge prompts."""
    config, tribe = embedded_tribe
    hf = transformers.AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
    prefix = tribe.tokenizer.encode(LOGIT_ASSISTANT_PREFIX, add_special_tokens=False)
    candidates = [tribe.tokenizer.encode(LOGIT_ASSISTANT_PREFIX + str(n), add_special_tokens=False)[len(prefix):]
                  for n in range(1, 11)]
    assert candidates[9] == candidates[0] + candidates[9][1:]  # "10" = "1", "0": the double count's cause
    digit = torch.zeros(len(tribe.tokenizer), dtype=torch.bool)
    digit[torch.as_tensor(tribe.number_token_ids)] = True
    jobs = [(m, inference.judge_prompt_ids(tribe, q, a, judge_cfg=config.judge, mode="fixed"))
            for m, (q, a) in zip([0, 1, 0, 1], JUDGE_CASES)]
    ours = inference.logit_scores(tribe, jobs, batch_size=4)

    want, shipped = [], []
    for _, ids in jobs:
        logliks, no_stop = [], []
        for cand in candidates:
            with torch.no_grad():
                logp = torch.log_softmax(hf(input_ids=torch.tensor([ids + prefix + cand])).logits[0].double(), -1)
            start = len(ids) + len(prefix) - 1
            path = sum(float(logp[start + i, t]) for i, t in enumerate(cand))
            logliks.append(path + float(torch.logsumexp(logp[start + len(cand)][~digit], 0)))
            no_stop.append(path)
        want.append(logit_expected_score(np.array(logliks))[1])
        shipped.append(logit_expected_score(np.array(no_stop))[1])
    np.testing.assert_allclose(ours, want, atol=1e-4)
    assert np.max(np.abs(np.array(want) - np.array(shipped))) > 0.05  # the stop term changes real scores
