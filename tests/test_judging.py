"""Judging text (docs/algorithm.md §2.3): the prompt, truncation with a real tokenizer, score parsing,
the unparseable rule and the `logits` judge mode's arithmetic."""
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sparta_jax.sparta import (
    JUDGE_PROMPT_TEMPLATE,
    LOGIT_ASSISTANT_PREFIX,
    LOGIT_CANDIDATES,
    effective_judgements,
    effective_pair,
    fit_judge_prompt,
    judge_prompt,
    logit_candidate_ids,
    logit_expected_score,
    parse_score,
)

EXPECTED_PROMPT = (
    "\n"
    "Please judge the following response based on the question and the response to be evaluated.\n"
    "Question: What is 2+2?\n"
    "Response to be evaluated: It is 4.\n"
    "\n"
    "Operation: Output ONLY a JSON object with one score in this exact format. Score must be in the range of 1 to 10.\n"
    "Your output should be like this:\n"
    '{"score": score}\n'
)
HEAD = "\nPlease judge the following response based on the question and the response to be evaluated.\nQuestion: "
TAIL = (
    "\n\nOperation: Output ONLY a JSON object with one score in this exact format. Score must be in the range "
    'of 1 to 10.\nYour output should be like this:\n{"score": score}\n'
)


@pytest.fixture(scope="module")
def tokenizer():
    """A real byte-level BPE, trained here on a few strings, wrapped as a transformers
    PreTrainedTokenizerFast (no downloads)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = [
        EXPECTED_PROMPT,
        "The quick brown fox jumps over the lazy dog. " * 4,
        "Please judge the following response. The answer is 42 because six times seven is 42.",
        "Question: how many legs does a spider have? Response: a spider has eight legs.",
        '{"score": 7} {"score": 10} Score: 3, 8/10',
    ]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=["<|endoftext|>"]
    )
    tok.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")


# ----------------------------------------------------------------------------------------
# The prompt
# ----------------------------------------------------------------------------------------
def test_prompt_exact_text():
    assert judge_prompt("What is 2+2?", "It is 4.") == EXPECTED_PROMPT
    assert EXPECTED_PROMPT.startswith("\n") and EXPECTED_PROMPT.endswith('{"score": score}\n')
    assert JUDGE_PROMPT_TEMPLATE == HEAD + "{instruction}\nResponse to be evaluated: {response}" + TAIL
    # single-pass substitution: braces in the texts are left alone
    p = judge_prompt("say {response}", '{"score": 3}')
    assert p == HEAD + "say {response}\nResponse to be evaluated: " + '{"score": 3}' + TAIL


def test_short_prompt_is_untouched(tokenizer):
    for mode in ("faithful", "fixed"):
        fitted = fit_judge_prompt("What is 2+2?", "It is 4.", tokenizer, mode=mode)
        assert fitted.text == EXPECTED_PROMPT
        assert not fitted.truncated
        assert list(fitted.ids) == tokenizer.encode(EXPECTED_PROMPT, add_special_tokens=False)
        assert tokenizer.decode(list(fitted.ids)) == EXPECTED_PROMPT


LONG_RESPONSE = " ".join(f"step {i}: the quick brown fox jumps over the lazy dog." for i in range(300))
INSTRUCTION = "How many legs does a spider have? (unique marker QZX)"


def test_faithful_truncation_cuts_from_the_right(tokenizer):
    full = tokenizer.encode(judge_prompt(INSTRUCTION, LONG_RESPONSE), add_special_tokens=False)
    assert len(full) > 2000
    fitted = fit_judge_prompt(INSTRUCTION, LONG_RESPONSE, tokenizer, max_tokens=512, mode="faithful")
    assert fitted.truncated
    assert list(fitted.ids) == full[:512]  # HF truncation (right side): the first 512 tokens
    assert fitted.text.startswith(HEAD + INSTRUCTION)  # the question survives ...
    assert "Operation:" not in fitted.text  # ... the judging instruction is cut off
    assert "step 299: the quick brown fox" not in fitted.text


def test_fixed_truncation_shortens_the_response_inside_the_template(tokenizer):
    fitted = fit_judge_prompt(INSTRUCTION, LONG_RESPONSE, tokenizer, max_tokens=512, mode="fixed")
    assert fitted.truncated
    assert len(fitted.ids) <= 512
    assert len(fitted.ids) >= 505  # the response is cut no more than needed
    assert fitted.text.startswith(HEAD + INSTRUCTION + "\nResponse to be evaluated: ")
    assert fitted.text.endswith(TAIL)
    response = fitted.text[len(HEAD + INSTRUCTION + "\nResponse to be evaluated: ") : -len(TAIL)]
    assert 100 < len(response) < len(LONG_RESPONSE)
    assert LONG_RESPONSE.startswith(response)  # the response's beginning is kept
    assert list(fitted.ids) == tokenizer.encode(fitted.text, add_special_tokens=False)


def test_limit_counts_the_wrapped_prompt(tokenizer):
    wrap = lambda user: "<|user|>" + user + "<|assistant|>"  # noqa: E731 (a chat template)
    fitted = fit_judge_prompt(INSTRUCTION, LONG_RESPONSE, tokenizer, max_tokens=300, mode="fixed", wrap=wrap)
    assert len(fitted.ids) <= 300
    assert fitted.text.startswith("<|user|>" + HEAD + INSTRUCTION)
    assert fitted.text.endswith(TAIL + "<|assistant|>")
    faithful = fit_judge_prompt(INSTRUCTION, LONG_RESPONSE, tokenizer, max_tokens=300, wrap=wrap)
    assert list(faithful.ids) == tokenizer.encode(wrap(judge_prompt(INSTRUCTION, LONG_RESPONSE)), add_special_tokens=False)[:300]
    assert not faithful.text.endswith("<|assistant|>")  # the template's tail is cut too


def test_truncation_with_callables_char_level():
    # a char-level tokenizer given as (encode, decode) makes the arithmetic exact
    codec = (lambda s: [ord(c) for c in s], lambda ids: "".join(map(chr, ids)))
    full = judge_prompt("Q?", "x" * 1000)
    faithful = fit_judge_prompt("Q?", "x" * 1000, codec, max_tokens=400)
    assert faithful.text == full[:400]
    fixed = fit_judge_prompt("Q?", "x" * 1000, codec, max_tokens=400, mode="fixed")
    overhead = len(judge_prompt("Q?", ""))
    assert fixed.text == judge_prompt("Q?", "x" * (400 - overhead))
    assert len(fixed.ids) == 400
    # instruction alone too long: it is shortened too, the template stays whole
    long_q = fit_judge_prompt("Q" * 1000, "resp", codec, max_tokens=400, mode="fixed")
    bare = len(judge_prompt("", ""))  # the template alone: overhead - len("Q?")
    assert long_q.text == judge_prompt("Q" * (400 - bare), "")
    assert len(long_q.ids) == 400
    with pytest.raises(ValueError):
        fit_judge_prompt("Q", "r", codec, max_tokens=50, mode="fixed")
    with pytest.raises(ValueError):
        fit_judge_prompt("Q", "r", codec, mode="other")


# ----------------------------------------------------------------------------------------
# Parsing
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, score",
    [
        ('{"score": 7}', 7),
        ('  {"score": 6}\n', 6),  # JSON tolerates surrounding whitespace
        ('{"score": 7.9}', 7),  # JSON floats truncate
        ('{"score": 0}', 0),  # the JSON path accepts [0, 10]
        ('{"score": 0.5}', 0),
        ('{"score": 10}', 10),
        ('{"score": 1e1}', 10),
        ('{"score": 7, "reason": "fine"}', 7),
        ('{"score": 10.5}', 10),  # JSON out of range; regex 2 then reads the "10"
        ('{"score": 11}', None),
        ('{"score": -1}', None),
        ('{"score": "7"}', None),  # a string is not a number, and no regex fits
        ('{"score": true}', None),  # booleans are not numbers
        ('{"score": NaN}', None),
        ('[7]', None),
        ('Sure! {"score": 8} is my verdict', 8),  # regex 1
        ('Here: { "Score" : 3 }', 3),  # case-insensitive
        ('"score": 9, more', 9),  # regex 2
        ("score = 6", 6),  # regex 3
        ("SCORE:4", 4),
        ("Score: 5", 5),
        ("I would rate this 8/10.", 8),  # regex 5
        ("8 / 10", 8),
        ("score: 3 and 7/10", 3),  # earlier pattern wins
        ("Score: 0", None),  # the regex path needs [1, 10]
        ("I give it 11/10", None),
        ("Score: 007", 7),
        ("Score: 15, final score: 8", None),  # each pattern's first match only (re.search)
        ("The answer is 4.", None),
        ("", None),
    ],
)
def test_parse_examples(text, score):
    assert parse_score(text) == score


def test_parse_non_text_and_huge_numbers():
    assert parse_score(None) is None
    assert parse_score(b'{"score": 7}') is None
    assert parse_score("Score: " + "0" * 5000 + "7") == 7  # int() would refuse 5000 digits
    assert parse_score("Score: " + "9" * 5000) is None
    assert parse_score("Score: \u0667") == 7  # an Arabic-Indic seven matches \d
    assert parse_score("[" * 100000 + "]" * 100000) is None  # deep nesting does not raise


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_parse_never_raises(text):
    out = parse_score(text)
    assert out is None or (isinstance(out, int) and 0 <= out <= 10)


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["score", "Score", "x"]), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(JSONISH)
def test_parse_never_raises_on_json_like_text(value):
    text = json.dumps(value)
    out = parse_score(text)
    assert out is None or 0 <= out <= 10
    if isinstance(value, dict) and isinstance(value.get("score"), (int, float)) and not isinstance(value["score"], bool):
        s = value["score"]
        if math.isfinite(s) and 0 <= s <= 10:
            assert out == int(s)


FORMATS = ['{"score": %d}', '{ "score" : %d }', 'x "score":%d y', "score = %d", "score:%d", "Score: %d", "%d/10", "%d / 10"]
NO_DIGITS = st.text(st.characters(blacklist_categories=("Nd",)), max_size=20)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(FORMATS), st.integers(1, 10), NO_DIGITS, NO_DIGITS)
def test_every_documented_format_parses(fmt, score, prefix, suffix):
    assert parse_score(prefix + fmt % score + suffix) == score


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(FORMATS), st.integers(11, 10**9), NO_DIGITS, NO_DIGITS)
def test_out_of_range_integers_are_rejected(fmt, score, prefix, suffix):
    assert parse_score(prefix + fmt % score + suffix) is None


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=0, max_value=10))
def test_json_floats_truncate(value):
    assert parse_score(json.dumps({"score": value})) == int(value)


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=11, max_value=1e6) | st.floats(max_value=-1e-9, min_value=-1e6))
def test_json_out_of_range_floats_are_rejected(value):
    assert parse_score(json.dumps({"score": value})) is None


# ----------------------------------------------------------------------------------------
# The unparseable rule
# ----------------------------------------------------------------------------------------
def test_effective_pair_modes():
    assert effective_pair((7, 3), "faithful") == (7, 3)
    assert effective_pair((7, 3), "fixed") == (7, 3)
    assert effective_pair((0, 10), "fixed") == (0, 10)  # 0 is a parsed score, not missing
    for broken in [(7, None), (None, 3), (None, None), None]:
        assert effective_pair(broken, "faithful") == (5, 5)
        assert effective_pair(broken, "fixed") is None
    judges = {"j1": (8, None), "j2": (6, 4), "j3": None}
    assert effective_judgements(judges, "faithful") == {"j1": (5, 5), "j2": (6, 4), "j3": (5, 5)}
    assert effective_judgements(judges, "fixed") == {"j2": (6, 4)}
    assert effective_judgements({"j1": None}, "fixed") == {}  # no judge left: no preference
    with pytest.raises(ValueError):
        effective_pair((1, 2), "lenient")


# ----------------------------------------------------------------------------------------
# The `logits` judge mode
# ----------------------------------------------------------------------------------------
def test_logit_constants():
    assert LOGIT_ASSISTANT_PREFIX == '{"score": '
    assert LOGIT_CANDIDATES == ("1", "2", "3", "4", "5", "6", "7", "8", "9", "10")


def test_logit_expected_score_by_hand():
    # uniform: p = 0.1 each, E = (1 + ... + 10) / 10 = 5.5
    probs, expected = logit_expected_score(np.zeros(10))
    assert probs == pytest.approx(np.full(10, 0.1))
    assert expected == pytest.approx(5.5)
    # "1" with log 1 = 0 and "2" with log 3, rest -inf: p = (1/4, 3/4), E = 1/4 + 6/4 = 1.75
    x = np.full(10, -np.inf)
    x[0], x[1] = 0.0, math.log(3.0)
    probs, expected = logit_expected_score(x)
    assert probs[:2] == pytest.approx([0.25, 0.75]) and probs[2:].sum() == 0.0
    assert expected == pytest.approx(1.75)
    # half on "1", half on "10" (two tokens, summed log-probs): E = (1 + 10) / 2 = 5.5
    x = np.full(10, -np.inf)
    x[0] = x[9] = math.log(0.5)
    assert logit_expected_score(x)[1] == pytest.approx(5.5)
    # shift invariance and large magnitudes (softmax with the max subtracted)
    y = np.arange(10.0) * 3 - 1000.0
    p1, e1 = logit_expected_score(y)
    p2, e2 = logit_expected_score(y + 1000.0)
    assert p1 == pytest.approx(p2) and e1 == pytest.approx(e2)
    w = np.exp(np.arange(10.0) * 3)
    assert e1 == pytest.approx(float((w / w.sum()) @ np.arange(1, 11)))


def test_logit_expected_score_batched_and_errors():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 10))
    probs, expected = logit_expected_score(x)
    assert probs.shape == (2, 3, 10) and expected.shape == (2, 3)
    assert probs.sum(-1) == pytest.approx(np.ones((2, 3)))
    assert expected[1, 2] == pytest.approx(logit_expected_score(x[1, 2])[1])
    assert ((expected >= 1) & (expected <= 10)).all()
    for bad in [np.zeros(9), np.full(10, -np.inf), np.array([np.nan] + [0.0] * 9), np.array([np.inf] + [0.0] * 9)]:
        with pytest.raises(ValueError):
            logit_expected_score(bad)


def test_logit_candidate_ids(tokenizer):
    ids = logit_candidate_ids(tokenizer)
    prefix_ids = tokenizer.encode(LOGIT_ASSISTANT_PREFIX, add_special_tokens=False)
    assert len(ids) == 10
    for cand, cand_ids in zip(LOGIT_CANDIDATES, ids):
        assert len(cand_ids) >= 1
        assert tokenizer.decode(prefix_ids + list(cand_ids)) == LOGIT_ASSISTANT_PREFIX + cand
    # a digit-splitting tokenizer makes "10" two tokens
    digits = (lambda s: [ord(c) for c in s], lambda t: "".join(map(chr, t)))
    assert logit_candidate_ids(digits)[9] == (ord("1"), ord("0"))
