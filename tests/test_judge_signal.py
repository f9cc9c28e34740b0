"""Judge signal on verifiable tasks: hand-computed cases."""
import pytest

from sparta_jax.sparta.judge_signal import judge_signal, pooled_auc

REFS = {
    "q1": {"answer": 5, "evaluator": "numeric"},
    "q2": {"answer": 7, "evaluator": "numeric"},
    "q3": {"answer": "B", "evaluator": "choice"},
}


def duel(instruction, responses, judges):
    return {"iteration": 1, "index": 0, "instruction": instruction, "models": ["a", "b"],
            "responses": list(responses),
            "judges": {j: {"scores": s, "raw": None} for j, s in judges.items()}}


def test_pooled_auc_by_hand():
    # right {8, 5}, wrong {5, 2}: pairs (8>5, 8>2, 5=5, 5>2) -> (1 + 1 + .5 + 1) / 4
    assert pooled_auc([8, 5], [5, 2]) == pytest.approx(3.5 / 4)
    assert pooled_auc([], [1]) is None


def test_judge_signal_counts_matched_pooled_and_preferences():
    duels = [
        # q1: a right (5), b wrong. judge c prefers a, judge d ties, judge e unparseable.
        duel("q1", ["it is 5", "it is 6"], {"c": [8, 3], "d": [4, 4], "e": None}),
        # q2: b right (7). judge c prefers a (wrong), judge d prefers b.
        duel("q2", ["8", "#### 7"], {"c": [9, 2], "d": [1, 6]}),
        # q3: both right: not informative, but its scores enter the pooled AUC.
        duel("q3", ["B", "The answer is B"], {"c": [5, 5], "d": [7, 3]}),
        # unknown instruction: not scored at all.
        duel("q4", ["x", "y"], {"c": [1, 9]}),
    ]
    prefs = [
        {"instruction": "q1", "chosen": "it is 5", "rejected": "it is 6"},  # right chosen
        {"instruction": "q2", "chosen": "8", "rejected": "#### 7"},  # wrong chosen
        {"instruction": "q3", "chosen": "B", "rejected": "The answer is B"},  # both right: skipped
    ]
    s = judge_signal(duels, REFS, prefs)
    assert (s["duels_scored"], s["duels_one_right"], s["duels_both_right"], s["duels_both_wrong"]) == (3, 2, 1, 0)
    assert s["unparseable_verdicts_one_right"] == 1
    assert s["per_judge"]["c"]["accuracy"] == 0.5 and s["per_judge"]["c"]["n"] == 2  # 1 then 0
    assert s["per_judge"]["d"]["accuracy"] == 0.75 and s["per_judge"]["d"]["n"] == 2  # tie .5 then 1
    assert s["matched"]["accuracy"] == pytest.approx(2.5 / 4) and s["matched"]["n"] == 4
    right = [8, 4, 2, 6, 5, 5, 7, 3]
    wrong = [3, 4, 9, 1]
    assert s["pooled_auc"] == pytest.approx(pooled_auc(right, wrong))
    assert s["mean_score_right"] == pytest.approx(sum(right) / len(right))
    assert s["mean_score_wrong"] == pytest.approx(sum(wrong) / len(wrong))
    assert s["preference"]["accuracy"] == 0.5 and s["preference"]["n"] == 2
    lo, hi = s["matched"]["ci95"]
    assert 0.0 < lo < 0.625 < hi < 1.0


def test_judge_signal_none_without_references():
    assert judge_signal([duel("q9", ["a", "b"], {"c": [1, 2]})], REFS) is None


def test_judge_signal_by_task():
    refs = {"q1": {"answer": 5, "evaluator": "numeric", "task": "arithmetic"},
            "q2": {"answer": 7, "evaluator": "numeric", "task": "arithmetic"},
            "q3": {"answer": "B", "evaluator": "choice", "task": "multiple_choice"}}
    duels = [duel("q1", ["5", "6"], {"c": [8, 3]}),  # arithmetic: right scored higher
             duel("q2", ["8", "7"], {"c": [9, 2]}),  # arithmetic: wrong scored higher
             duel("q3", ["A", "B"], {"c": [1, 9]})]  # multiple choice: right scored higher
    s = judge_signal(duels, refs)
    assert s["matched"]["accuracy"] == pytest.approx(2 / 3)
    arith, mc = s["by_task"]["arithmetic"], s["by_task"]["multiple_choice"]
    assert (arith["duels_scored"], arith["matched"]["accuracy"], arith["pooled_auc"]) == (2, 0.5, pooled_auc([8, 2], [3, 9]))
    assert (mc["duels_scored"], mc["matched"]["accuracy"], mc["pooled_auc"]) == (1, 1.0, 1.0)
    assert "by_task" not in judge_signal(duels[:2], {k: refs[k] for k in ("q1", "q2")})  # one task: no breakdown
