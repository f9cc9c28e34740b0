"""Evaluators on hand-written answers, the Wilson interval, and `evaluate`."""
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sparta_jax.evaluation import (evaluate, extract_boxed, extract_choice, extract_number,
                                   math_value, parse, score, wilson_interval)

# ---------------------------------------------------------------------------------------
# extract_number


@pytest.mark.parametrize("text, expected", [
    ("The answer is 12.", 12),
    ("12", 12),
    ("#### 1,234", 1234),
    ("She pays 3 + 4 = 7 dollars.\n#### 7", 7),
    ("#### 72\nThen I counted 5 more things", 72),  # the marker wins over the last number
    ("first #### 3 then #### 4", 4),  # the last marker
    ("I think it's -5 or maybe 7", 7),
    ("It is -5.", -5),
    ("The temperature fell to \u22123 degrees", -3),
    ("x = -12", -12),
    ("The cost is $3.50.", 3.5),
    ("Total: 1,234,567 apples", 1234567),
    ("from 3-5 people", 5),  # a range, not a negative five
    ("values 3,4", 4),
    ("0.25", 0.25),
    ("She has 007 cats", 7),
    ("The answer is 12. Wait, no: 13.", 13),
    ("1,23", 23),  # not a thousands group: two numbers
    ("####", None),
    ("#### The answer is 9 apples, not 10", 9),  # the first number after the marker
    ("no numbers here", None),
    ("", None),
    ("   \n  ", None),
])
def test_extract_number(text, expected):
    got = extract_number(text)
    if expected is None:
        assert got is None
    else:
        assert got == expected


def test_extract_number_marker_without_number_falls_back_to_last_number():
    assert extract_number("5 apples and 6 pears ####") == 6


def test_extract_number_types_and_non_strings():
    assert isinstance(extract_number("#### 1,234"), int)
    assert isinstance(extract_number("3.50"), float)
    assert extract_number("3.00") == 3 and isinstance(extract_number("3.00"), int)
    assert extract_number(None) is None
    assert extract_number(42) is None


@pytest.mark.parametrize("pred, ref, expected", [
    ("The answer is 12.", "12", 1.0),
    ("The answer is 12.", "13", 0.0),
    ("#### 1,234", "1234", 1.0),
    ("So the total is 1234", "Natalia sold 48/2 = 24 clips ... #### 1,234", 1.0),
    ("I think it's -5 or maybe 7", "7", 1.0),
    ("I think it's -5 or maybe 7", "-5", 0.0),
    ("It costs $3.50", "3.5", 1.0),
    ("It costs 3.5", 3.5, 1.0),
    ("It costs 3", 3.5, 0.0),
    ("42", 42, 1.0),
    ("I don't know", "12", 0.0),
    ("", "12", 0.0),
    ("12", "no reference number", 0.0),
    ("0.1", "0.10000000001", 1.0),
])
def test_score_numeric(pred, ref, expected):
    assert score(pred, ref, "numeric") == expected


# ---------------------------------------------------------------------------------------
# extract_boxed


@pytest.mark.parametrize("text, expected", [
    ("so \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
    ("\\boxed{1} then \\boxed{2}", "2"),
    ("$\\boxed{ 3 x + 1 }$.", "3x+1"),
    ("\\boxed{\\left( 1, 2 \\right)}", "(1,2)"),
    ("\\boxed{\\frac{\\sqrt{3}}{2}}", "\\frac{\\sqrt{3}}{2}"),
    ("\\boxed{5.}", "5"),
    ("\\boxed{\\$5}", "5"),
    ("\\boxed{50\\%}", "50"),
    ("\\boxed{\\dfrac{3}{4}}", "\\frac{3}{4}"),
    ("\\boxed 7", "7"),
    ("\\fbox{8}", "8"),
    ("\\boxed{1} and a broken \\boxed{2", "1"),  # the last well-formed one
    ("\\boxed{}", None),
    ("\\boxed{\\frac{1}{2}", None),
    ("the answer is 1/2", None),
    ("", None),
])
def test_extract_boxed(text, expected):
    assert extract_boxed(text) == expected


@pytest.mark.parametrize("pred, ref, expected", [
    ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}", 1.0),
    ("\\boxed{\\frac{1}{2}}", "The solution is $\\boxed{\\frac12}$... no: \\boxed{\\frac{1}{2}}",
     1.0),
    ("\\boxed{\\frac{1}{2}}", "1/2", 1.0),  # equal values
    ("\\boxed{0.5}", "\\frac{1}{2}", 1.0),
    ("\\boxed{-\\frac{1}{2}}", "-1/2", 1.0),
    ("\\boxed{1,000}", "1000", 1.0),
    ("\\boxed{\\frac{1}{3}}", "\\frac{1}{2}", 0.0),
    ("\\boxed{x+1}", "x + 1", 1.0),
    ("\\boxed{x+1}", "x+2", 0.0),
    ("The answer is 1/2", "1/2", 0.0),  # no box, unparsed
    ("\\boxed{1/0}", "1/0", 1.0),  # same string, even if meaningless
    ("\\boxed{1/0}", "2", 0.0),
    ("", "1", 0.0),
])
def test_score_boxed(pred, ref, expected):
    assert score(pred, ref, "boxed") == expected


def test_math_value():
    assert math_value("\\frac{3}{6}") == math_value("1/2") == math_value("0.5")
    assert math_value("x") is None
    assert math_value("1/0") is None


# ---------------------------------------------------------------------------------------
# extract_choice


@pytest.mark.parametrize("text, expected", [
    ("(C)", "C"),
    ("Answer: b", "B"),
    ("The answer is B.", "B"),
    ("the ANSWER IS d", "D"),
    ("B", "B"),
    ("B) 47", "B"),
    ("(B) 47", "B"),
    ("A. 45", "A"),
    ("Let me think.\nC\n", "C"),
    ("I think the correct answer is (A)", "A"),
    ("The final answer would be option C.", "C"),
    ("The correct option is D", "D"),
    ("Option B is wrong, so the answer is C.", "C"),
    ("The answer is A. Actually, the answer is D.", "D"),  # the last statement
    ("Answer: B\nWait, (C) looks right too", "B"),  # a statement beats a bare mention
    ("**Answer: C**", "C"),
    ("$\\boxed{B}$", "B"),
    ("The answer is a bit unclear", None),  # "a" is an article here
    ("The answer is a.", "A"),
    ("The answer is E", None),  # beyond four options
    ("A man has 3 apples", None),  # a leading article is not a choice
    ("47", None),
    ("I am not sure", None),
    ("", None),
    ("The answer is Paris", None),
    ("The answer is: **B**", "B"),
    ("Answer (C)", "C"),
    ("My choice: (A)", "A"),
    ("The answer is 47, which is option B.", "B"),  # a mention, as a last resort
    ("Option B is wrong.", "B"),
    ("Answer: B) 47", "B"),
    ("(A) is wrong, (C) is right", "A"),  # a reply that starts with a letter
    ("I'd say (A) is wrong, (C) is right", "C"),  # the last parenthesised letter
])
def test_extract_choice(text, expected):
    assert extract_choice(text) == expected


def test_extract_choice_more_options():
    assert extract_choice("The answer is E", n_options=5) == "E"
    assert extract_choice("(E)", n_options=4) is None
    assert extract_choice(None) is None


@pytest.mark.parametrize("pred, ref, expected", [
    ("Answer: b", "B", 1.0),
    ("(C)", "C", 1.0),
    ("(C)", "B", 0.0),
    ("The answer is E", "E", 1.0),  # the reference widens the letter range
    ("no idea", "A", 0.0),
    ("", "A", 0.0),
    ("B", "(B)", 1.0),
])
def test_score_choice(pred, ref, expected):
    assert score(pred, ref, "choice") == expected


@pytest.mark.parametrize("pred, expected", [
    ("GREEN APPLE", 1.0), ("The answer is GREEN APPLE.", 1.0), ('  "GREEN APPLE".  ', 1.0),
    ("the answer is: GREEN  APPLE", 1.0), ("GREEN APPLE\nThat is it.", 1.0),
    ("Green Apple", 0.0), ("green apple", 0.0), ("The answer is GREEN APPLES.", 0.0), ("", 0.0), ("GREEN", 0.0),
])
def test_score_cased_keeps_the_letter_case(pred, expected):
    assert score(pred, "GREEN APPLE", "cased") == expected


@pytest.mark.parametrize("pred, expected", [
    ("green apple", 1.0), ("The answer is green apple.", 1.0), ("THE ANSWER IS green apple", 1.0),
    ("GREEN APPLE", 0.0), ("Green apple", 0.0), ("The answer is Green Apple.", 0.0),
])
def test_score_cased_lowercase_reference(pred, expected):
    assert score(pred, "green apple", "cased") == expected


def test_score_exact_and_unknown():
    assert score("  Yes. ", "yes", "exact") == 1.0
    assert score("no", "yes", "exact") == 0.0
    assert score("", "yes", "exact") == 0.0
    with pytest.raises(ValueError, match="unknown evaluator 'bleu'"):
        score("x", "x", "bleu")


# ---------------------------------------------------------------------------------------
# never raise

_FRAGMENTS = st.sampled_from(["####", "\\boxed{", "\\boxed", "}", "{", "(", ")", "answer is ",
                              "Answer:", "-", "\u2212", ",", ".", "1", "23", "1,234", "a",
                              "B", "\n", " ", "$", "\\frac{1}{2}", "option ", "is"])


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), st.lists(_FRAGMENTS, max_size=30).map("".join)))
def test_extractors_never_raise(text):
    n = extract_number(text)
    assert n is None or isinstance(n, (int, float))
    b = extract_boxed(text)
    assert b is None or isinstance(b, str)
    c = extract_choice(text)
    assert c is None or c in "ABCD"
    for ev, ref in (("numeric", "1"), ("boxed", "1"), ("choice", "A"), ("exact", "a"), ("cased", "A B")):
        assert score(text, ref, ev) in (0.0, 1.0)
        parse(text, ev, ref)


# ---------------------------------------------------------------------------------------
# Wilson interval and evaluate


@pytest.mark.parametrize("k, n, low, high", [
    (5, 10, 0.2366, 0.7634),
    (0, 10, 0.0, 0.2775),
    (10, 10, 0.7225, 1.0),
    (1, 2, 0.0945, 0.9055),
    (81, 100, 0.7222, 0.8749),
])
def test_wilson_interval_hand_computed(k, n, low, high):
    lo, hi = wilson_interval(k, n)
    assert lo == pytest.approx(low, abs=1e-4)
    assert hi == pytest.approx(high, abs=1e-4)


def test_wilson_interval_formula_and_edges():
    # k=5, n=10 by hand: centre 0.5, half 1.96*sqrt(.025 + 3.8416/400)/1.38416.
    half = 1.96 * math.sqrt(0.025 + 3.8416 / 400) / 1.38416
    lo, hi = wilson_interval(5, 10)
    assert (lo, hi) == pytest.approx((0.5 - half, 0.5 + half), abs=1e-12)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    lo99, hi99 = wilson_interval(5, 10, z=2.576)
    assert lo99 < lo and hi99 > hi
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def test_evaluate():
    records = [
        {"id": "1", "answer": "12", "evaluator": "numeric", "task": "arithmetic"},
        {"id": "2", "answer": "7", "evaluator": "numeric", "task": "arithmetic"},
        {"id": "3", "answer": "B", "evaluator": "choice", "task": "multiple_choice"},
        {"id": "4", "answer": "C", "evaluator": "choice", "task": "multiple_choice"},
        {"id": "5", "answer": "\\frac{1}{2}", "evaluator": "boxed", "task": "math"},
    ]
    preds = ["The answer is 12.", "no idea", "Answer: b", "(A)", "\\boxed{1/2}"]
    out = evaluate(preds, records)
    assert out["n"] == 5 and out["n_correct"] == 3
    assert out["accuracy"] == pytest.approx(0.6)
    assert out["n_unparsed"] == 1
    assert out["scores"] == [1.0, 0.0, 1.0, 0.0, 1.0]
    assert out["ci95"] == pytest.approx(wilson_interval(3, 5))
    assert out["by_task"]["arithmetic"] == {"accuracy": 0.5, "n": 2, "n_correct": 1}
    assert out["by_task"]["math"]["accuracy"] == 1.0


def test_evaluate_errors_and_override():
    recs = [{"answer": "3"}]
    assert evaluate(["3"], recs, evaluator="numeric")["accuracy"] == 1.0
    with pytest.raises(ValueError, match="no evaluator"):
        evaluate(["3"], recs)
    with pytest.raises(ValueError, match="2 predictions for 1 records"):
        evaluate(["3", "4"], recs, evaluator="numeric")
    with pytest.raises(ValueError, match="has no answer"):
        evaluate(["3"], [{"id": "x", "evaluator": "numeric"}])
    empty = evaluate([], [])
    assert empty["n"] == 0 and empty["accuracy"] == 0.0 and empty["ci95"] == (0.0, 1.0)


def test_progress_rates_read_right():
    from sparta_jax.metrics import rate_text

    assert rate_text(3, 84.0, "steps") == "28 s/step"
    assert rate_text(1, 1.5, "answers") == "1.5 s/answer"
    assert rate_text(61, 10.0, "answers") == "6.1/s"
    assert rate_text(10, 10.0, "verdicts") == "1.0/s"
    assert rate_text(0, 5.0, "steps") == "0.0/s"
