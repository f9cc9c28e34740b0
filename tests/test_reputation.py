"""Reputation (docs/algorithm.md §2.4), weighting schemes (§2.5) and preferences: hand-computed cases and
an independent plain re-implementation of the released rating loop as a reference."""
import math
import random

import numpy as np
import pytest

from sparta_jax.sparta import (
    DuelRecord,
    JudgeRecord,
    ReputationConstants,
    TribeRater,
    TribeReputation,
    confidence,
    deviation,
    dynamic_weights,
    learning_rate,
    make_matchups,
    make_preferences,
    separated,
    normal_cdf,
    rate_iteration,
    rating_change,
    replay,
    scheme_c,
    static_weights,
    update_pair,
    weighted_difference,
    weighted_scores,
)
from sparta_jax.sparta.weighting import needed_iterations

TANH_HALF = math.tanh(0.5)  # 0.46211715726000974
K1 = 10 * 0.9 ** (1 / 10)  # 9.895192582062144
K2 = 10 * 0.9 ** (2 / 10)  # 9.791483623609768


def duel(index, a, b, judges, iteration=1, instruction=None, responses=None):
    """A DuelRecord; judges = {name: (s_a, s_b) or None}."""
    return DuelRecord(
        iteration,
        index,
        instruction if instruction is not None else f"q{iteration}.{index}",
        (a, b),
        responses if responses is not None else (f"{a} answers {index}", f"{b} answers {index}"),
        {j: JudgeRecord(None if s is None else tuple(s)) for j, s in judges.items()},
    )


def rate(records, names, start=None, weights=None, c=20.0, mode="faithful"):
    state = start if start is not None else TribeReputation.fair(names)
    return rate_iteration(records, state, iteration=1, weights=weights, c=c, mode=mode)


# ----------------------------------------------------------------------------------------
# The formulas, by hand
# ----------------------------------------------------------------------------------------
def test_learning_rate_decay():
    # K_n = max(5, 10 * 0.9 ** (n / 10))
    assert learning_rate(1) == pytest.approx(9.895192582062144, abs=1e-12)  # 10 * 0.98951926
    assert learning_rate(2) == pytest.approx(9.791483623609768, abs=1e-12)
    assert learning_rate(10) == pytest.approx(9.0, abs=1e-12)  # 10 * 0.9
    assert learning_rate(20) == pytest.approx(8.1, abs=1e-12)  # 10 * 0.81
    # 0.9 ** 6.5 = exp(6.5 ln 0.9) = exp(-0.684843) = 0.504169 -> 5.0417, above the floor
    assert learning_rate(65) == pytest.approx(5.041692005992632, abs=1e-12)
    # 0.9 ** 6.6 = 0.498884 -> 4.9888 < 5, so the floor K_min = 5 takes over
    assert learning_rate(66) == 5.0
    assert learning_rate(1000) == 5.0
    custom = ReputationConstants(K0=20, K_min=1, gamma=0.5, T=1)
    assert learning_rate(3, custom) == pytest.approx(20 * 0.125)  # 20 * 0.5 ** 3 = 2.5


def test_normal_cdf_and_confidence():
    assert normal_cdf(0.0) == 0.5
    assert normal_cdf(1.959963984540054) == pytest.approx(0.975, abs=1e-12)
    # |Phi(z) - Phi(-z)| at z = 0 is 0, floored at eps = 0.01
    assert confidence(0.0) == 0.01
    # z = 1: Phi(1) - Phi(-1) = 0.8413447 - 0.1586553 = 0.6826895 (the 1-sigma mass)
    assert confidence(1.0) == pytest.approx(0.6826894921370859, abs=1e-12)
    assert confidence(-1.0) == confidence(1.0)  # symmetric: upsets are not rewarded more
    assert confidence(1.0) == pytest.approx(abs(normal_cdf(1.0) - normal_cdf(-1.0)), abs=1e-15)


def test_weighted_difference_by_hand():
    # R = (100, 300), scores a = (8, 2), b = (6, 4):
    # (100 * (8 - 6) + 300 * (2 - 4)) / 400 = (200 - 600) / 400 = -1
    assert weighted_difference([100, 300], [8, 2], [6, 4]) == -1.0
    # with w_a = 0.5: (100 * (4 - 6) + 300 * (1 - 4)) / 400 = (-200 - 900) / 400 = -2.75
    assert weighted_difference([100, 300], [8, 2], [6, 4], w_a=0.5) == -2.75


def test_first_duel_from_fair_start_by_hand():
    # Tribe a, b, j1, j2; all R = 100, sigma = 0.5. Duel (a, b): j1 scores (8, 6), j2 (7, 3).
    # Delta = (100 * 2 + 100 * 4) / 200 = 3 (with equal R: the mean score difference).
    # K_1 = 10 * 0.9 ** 0.1 = 9.895192582; z = 0, so max(|Phi(0) - Phi(0)|, eps) = 0.01.
    # delta_a = 9.895192582 * 3 * tanh(0.5) * 0.01 / 20
    #         = 9.895192582 * 3 * 0.462117157 * 0.01 / 20 = 0.0068591074
    names = ["a", "b", "j1", "j2"]
    res = rate([duel(0, "a", "b", {"j1": (8, 6), "j2": (7, 3)})], names)
    delta_a = K1 * 3 * TANH_HALF * 0.01 / 20
    assert delta_a == pytest.approx(0.006859107399844341, abs=1e-15)
    r_a = res.end.R[0]
    assert r_a == pytest.approx(100 + delta_a, abs=1e-12)
    # b: z = (100 - 100.0068591) / sqrt(0.5) = -0.0097002; |Phi(z) - Phi(-z)| = 0.00774 < 0.01,
    # so the eps floor again, and delta_b = -delta_a.
    assert res.end.R[1] == pytest.approx(100 - delta_a, abs=1e-12)
    # judges do not move; one change each is not enough for sigma (needs >= 2)
    assert res.end.R[2:] == [100.0, 100.0]
    assert res.end.sigma == [0.5, 0.5, 0.5, 0.5]


def test_b_sees_a_new_reputation():
    # R_a = 100, R_b = 100.5, sigma = 0.5 each, Delta = 9 (one judge: 10 vs 1).
    # a: z = -0.5 / sqrt(0.5) = -0.7071068; |Phi(z) - Phi(-z)| = erf(0.5) = 0.5204999
    #    delta_a = 9.8951926 * 9 * 0.4621172 * 0.5204999 / 20 = 1.0710494 -> R_a = 101.0710494
    # b: z = (100.5 - 101.0710494) / sqrt(0.5) = -0.8075858 -> erf(0.5710494) = 0.5806709
    #    delta_b = -9.8951926 * 9 * 0.4621172 * 0.5806709 / 20 = -1.1948652 -> R_b = 99.3051348
    # (with a's OLD reputation b would get 0.5204999 and end at 99.4289506)
    start = TribeReputation(("a", "b", "j"), [100.0, 100.5, 100.0], [0.5, 0.5, 0.5])
    res = rate([duel(0, "a", "b", {"j": (10, 1)})], start.names, start=start)
    assert res.end.R[0] == pytest.approx(101.07104936905766, abs=1e-9)
    assert res.end.R[1] == pytest.approx(99.3051347500694, abs=1e-9)
    assert abs(res.end.R[1] - 99.42895063094234) > 0.1
    # the pure function agrees
    new_a, new_b = update_pair(100.0, 100.5, 0.5, 0.5, 9.0, K1, 20.0)
    assert (new_a, new_b) == pytest.approx((res.end.R[0], res.end.R[1]), abs=1e-12)


def test_sigma_from_change_history_by_hand():
    # R_a = 100, R_b = 200, sigma = 5 each; |z| >= 12.9 in both duels, so erf(..) = 1.0.
    # duel 1 (j: 10 vs 1, Delta = 9):  delta_a = K_1 * 9 * tanh(5) / 20 = 4.4524324
    # duel 2 (j: 1 vs 10, Delta = -9): delta_a = -K_2 * 9 * tanh(5) / 20 = -4.4057676
    # history_a = [4.4524324, -4.4057676]: std = (4.4524324 + 4.4057676) / 2 = 4.4291000
    start = TribeReputation(("a", "b", "j"), [100.0, 200.0, 100.0], [5.0, 5.0, 0.5])
    one = rate([duel(0, "a", "b", {"j": (10, 1)})], start.names, start=start)
    assert one.end.sigma[:2] == [5.0, 5.0]  # one change kept: sigma untouched
    assert one.end.R[0] == pytest.approx(100 + 4.452432363339701, abs=1e-9)
    two = rate([duel(0, "a", "b", {"j": (10, 1)}), duel(1, "a", "b", {"j": (1, 10)})], start.names, start=start)
    t5 = math.tanh(5)
    assert two.end.R[0] == pytest.approx(100 + K1 * 9 * t5 / 20 - K2 * 9 * t5 / 20, abs=1e-9)  # 100.0466648
    assert two.end.R[1] == pytest.approx(199.95333520604552, abs=1e-9)
    assert two.end.sigma[0] == pytest.approx((K1 + K2) * 9 * t5 / 40, abs=1e-9)  # 4.4290999664
    assert two.end.sigma[0] == pytest.approx(4.429099966362473, abs=1e-9)
    assert two.end.sigma[1] == pytest.approx(4.429099966362473, abs=1e-9)
    assert two.end.sigma[2] == 0.5  # the judge has no history


def test_clamp_at_ten_and_realised_change():
    # a: R = 10.05, sigma 2; b: R = 300, sigma 2. tanh(2) = 0.9640276; |z| > 100 so erf = 1.
    # duel 1 (j: 1 vs 10, Delta = -9): delta_a = -K_1 * 9 * 0.9640276 / 20 = -4.2926574
    #   10.05 - 4.29 = 5.76 < 10 -> R_a = 10 (clamp), realised change -0.05.
    #   b: +4.2926574 -> 304.2926574 (b's delta does not mirror a's realised change)
    # duel 2 (j: 10 vs 1, Delta = 9): delta_a = K_2 * 9 * 0.9640276 / 20 = 4.2476671 -> 14.2476671
    #   history_a = [-0.05, 4.2476671] -> sigma_a = (4.2476671 + 0.05) / 2 = 2.1488336
    #   (the unclamped change -4.29 would have given 4.27)
    start = TribeReputation(("a", "b", "j"), [10.05, 300.0, 100.0], [2.0, 2.0, 0.5])
    one = rate([duel(0, "a", "b", {"j": (1, 10)})], start.names, start=start)
    assert one.end.R[0] == 10.0
    assert one.end.R[1] == pytest.approx(304.2926573516713, abs=1e-9)
    two = rate([duel(0, "a", "b", {"j": (1, 10)}), duel(1, "a", "b", {"j": (10, 1)})], start.names, start=start)
    assert two.end.R[0] == pytest.approx(14.247667118359232, abs=1e-9)
    assert two.end.sigma[0] == pytest.approx(2.1488335591796157, abs=1e-9)
    # a custom floor is honoured
    low = ReputationConstants(R_floor=1.0)
    res = rate_iteration([duel(0, "a", "b", {"j": (1, 10)})], start, iteration=1, constants=low)
    assert res.end.R[0] == pytest.approx(10.05 - 4.292657351671295, abs=1e-9)


def test_sigma_keeps_last_ten_changes_and_floor():
    # 12 duels a vs b with alternating verdicts; sigma_a must equal max(std(last 10 realised
    # changes), 0.1), the changes read back from the per-duel history.
    start = TribeReputation(("a", "b", "j"), [100.0, 160.0, 100.0], [3.0, 3.0, 0.5])
    verdicts = [(10, 1), (1, 10), (9, 2), (3, 8), (10, 1), (2, 9), (10, 1), (1, 10), (8, 3), (1, 9), (10, 2), (1, 10)]
    records = [duel(i, "a", "b", {"j": v}) for i, v in enumerate(verdicts)]
    res = rate(records, start.names, start=start)
    r_a = [100.0] + [h["reputations"]["a"]["R"] for h in res.history]
    changes = np.diff(r_a)
    assert len(changes) == 12
    expected = max(float(np.std(changes[-10:])), 0.1)
    assert expected > 0.1  # the test exercises the std, not the floor
    assert res.end.sigma[0] == pytest.approx(expected, abs=1e-12)
    assert float(np.std(changes)) != pytest.approx(expected, abs=1e-6)  # all 12 would differ
    # the pure helper agrees, and floors tiny spreads at 0.1
    assert deviation(list(changes), 3.0) == pytest.approx(expected, abs=1e-12)
    assert deviation([0.01, 0.02], 0.5) == 0.1
    assert deviation([0.3], 0.5) == 0.5
    # sigma after every duel: unchanged after duel 1, std of the first two after duel 2
    assert res.history[0]["reputations"]["a"]["sigma"] == 3.0
    assert res.history[1]["reputations"]["a"]["sigma"] == pytest.approx(max(np.std(changes[:2]), 0.1))


def test_rating_change_pure_function():
    # z = 0 -> eps: K * Delta * tanh(sigma) * 0.01 / c
    assert rating_change(100, 100, 0.5, 0.5, 2.0, K1, 20) == pytest.approx(0.004572738266562894, abs=1e-15)
    # c = 10 (dynamic) doubles it
    assert rating_change(100, 100, 0.5, 0.5, 2.0, K1, 10) == pytest.approx(2 * 0.004572738266562894, abs=1e-15)


# ----------------------------------------------------------------------------------------
# Modes, weights and c inside the update
# ----------------------------------------------------------------------------------------
def test_faithful_five_five_versus_fixed_drop():
    # j1's score for b is unparseable, j2 gives (6, 4). All R = 100.
    # faithful: j1 -> (5, 5): Delta = (100 * 0 + 100 * 2) / 200 = 1
    #   delta_a = K_1 * 1 * tanh(0.5) * 0.01 / 20 = 0.0022863691
    # fixed: j1 dropped: Delta = 2 -> delta_a = 0.0045727383
    names = ["a", "b", "j1", "j2"]
    rec = duel(0, "a", "b", {"j1": (8, None), "j2": (6, 4)})
    faithful = rate([rec], names, mode="faithful")
    fixed = rate([rec], names, mode="fixed")
    assert faithful.end.R[0] == pytest.approx(100 + 0.002286369133281447, abs=1e-12)
    assert fixed.end.R[0] == pytest.approx(100 + 0.004572738266562894, abs=1e-12)
    # a whole-null pair behaves the same
    rec_null = duel(0, "a", "b", {"j1": None, "j2": (6, 4)})
    assert rate([rec_null], names, mode="faithful").end.R == faithful.end.R
    assert rate([rec_null], names, mode="fixed").end.R == fixed.end.R
    # preferences: faithful S_a = (5 + 6) / 2 = 5.5, S_b = (5 + 4) / 2 = 4.5; fixed: 6 vs 4
    assert faithful.preferences[0].weighted_scores == (5.5, 4.5)
    assert fixed.preferences[0].weighted_scores == (6.0, 4.0)
    assert fixed.preferences[0].margin == 2.0


def test_fixed_with_no_judge_left_moves_nothing_and_yields_no_preference():
    names = ["a", "b", "j1", "j2"]
    records = [duel(0, "a", "b", {"j1": (None, 3), "j2": None}), duel(1, "a", "b", {"j1": (9, 2), "j2": (8, 2)})]
    fixed = rate(records, names, mode="fixed")
    # duel 0 changes nothing, and has no preference
    assert fixed.history[0]["reputations"]["a"] == {"R": 100.0, "sigma": 0.5}
    assert [p.index for p in fixed.preferences] == [1]
    # but it counts in n: duel 1 uses K_2. Delta = 6.5, z = 0 -> eps:
    # delta_a = 9.7914836 * 6.5 * 0.4621172 * 0.01 / 20 = 0.0147059
    assert fixed.end.R[0] == pytest.approx(100 + K2 * 6.5 * TANH_HALF * 0.01 / 20, abs=1e-12)
    # faithful: duel 0 is (5, 5) from both judges: Delta = 0, a tie, no preference either
    faithful = rate(records, names, mode="faithful")
    assert [p.index for p in faithful.preferences] == [1]


def test_weights_enter_delta_only():
    # w_a = 0 (e.g. static, iteration 2): j scores (8, 6); Delta = 1 * (0 * 8 - 1 * 6) / 1 = -6
    # delta_a = K_1 * (-6) * tanh(0.5) * 0.01 / 20 = -0.0137182148: a loses despite the 8
    names = ["a", "b", "j"]
    res = rate([duel(0, "a", "b", {"j": (8, 6)})], names, weights={"a": 0.0})
    assert res.end.R[0] == pytest.approx(100 - 0.013718214799688683, abs=1e-12)
    # the preference still uses w = 1: a chosen with 8 vs 6
    (pref,) = res.preferences
    assert (pref.chosen_model, pref.weighted_scores, pref.margin) == ("a", (8.0, 6.0), 2.0)


def test_dynamic_c_is_ten():
    assert scheme_c("normal") == 20.0
    assert scheme_c("static") == 20.0
    assert scheme_c("dynamic") == 10.0
    names = ["a", "b", "j"]
    rec = [duel(0, "a", "b", {"j": (9, 7)})]
    # delta_a = K_1 * 2 * tanh(0.5) * 0.01 / c: 0.0045727 with c = 20, 0.0091455 with c = 10
    assert rate(rec, names, c=10.0).end.R[0] == pytest.approx(100 + 2 * 0.004572738266562894, abs=1e-12)
    assert rate(rec, names, c=20.0).end.R[0] == pytest.approx(100 + 0.004572738266562894, abs=1e-12)


def test_constants_are_configurable():
    c = ReputationConstants(K0=20, K_min=5, gamma=0.9, T=10, eps=0.1, c=20, R0=50, sigma0=1.0)
    fair = TribeReputation.fair(["a", "b", "j"], c)
    assert fair.R == [50.0] * 3 and fair.sigma == [1.0] * 3
    res = rate_iteration([duel(0, "a", "b", {"j": (9, 7)})], fair, iteration=1, constants=c)
    # delta_a = 20 * 0.9 ** 0.1 * 2 * tanh(1) * 0.1 / 20
    assert res.end.R[0] == pytest.approx(50 + 2 * K1 * 2 * math.tanh(1.0) * 0.1 / 20, abs=1e-12)
    with pytest.raises(ValueError):
        ReputationConstants(history=1)


# ----------------------------------------------------------------------------------------
# Preferences
# ----------------------------------------------------------------------------------------
def test_preferences_by_hand_and_exact_tie():
    # R_j1 = 200, R_j2 = 100; j1 scores (9, 1), j2 (1, 10):
    # S_a = (200 * 9 + 100 * 1) / 300 = 1900 / 300 = 6.3333; S_b = (200 + 1000) / 300 = 4.0
    rec = duel(0, "a", "b", {"j1": (9, 1), "j2": (1, 10)}, responses=("RA", "RB"))
    (p,) = make_preferences([rec], {"a": 100, "b": 100, "j1": 200, "j2": 100}, "faithful")
    assert (p.chosen_model, p.rejected_model, p.chosen, p.rejected) == ("a", "b", "RA", "RB")
    assert p.weighted_scores == pytest.approx((1900 / 300, 4.0), abs=1e-12)
    assert p.margin == pytest.approx(1900 / 300 - 4.0, abs=1e-12)  # 2.3333
    # equal judge weights: S_a = 5, S_b = 5.5 -> b chosen, margin 0.5
    (q,) = make_preferences([rec], {"a": 1, "b": 1, "j1": 100, "j2": 100}, "faithful")
    assert (q.chosen_model, q.weighted_scores, q.margin) == ("b", (5.5, 5.0), 0.5)
    # exact tie: (7, 7) -> margin 0 -> dropped
    tie = duel(1, "a", "b", {"j1": (7, 7)})
    assert make_preferences([tie], {"a": 1, "b": 1, "j1": 100, "j2": 100}, "faithful") == []
    assert weighted_scores([200, 100], [9, 1], [1, 10]) == pytest.approx((1900 / 300, 4.0))
    assert p.to_json()["weighted_scores"] == list(p.weighted_scores)


def test_separated_keeps_pairs_at_or_above_the_margin_in_duel_order():
    # margins (R_j1 = 200, R_j2 = 100): a-b 1900/300 - 4 = 2.3333; c-d 5 - 1300/300 = 0.6667; e-f 3.1 - 3 = 0.1
    recs = [duel(0, "a", "b", {"j1": (9, 1), "j2": (1, 10)}), duel(1, "c", "d", {"j1": (5, 4), "j2": (5, 5)}),
            duel(2, "e", "f", {"j1": (3, 3), "j2": (3.3, 3)})]
    rep = dict.fromkeys("abcdef", 1.0) | {"j1": 200.0, "j2": 100.0}
    prefs = make_preferences(recs, rep, "faithful")
    assert [round(p.margin, 4) for p in prefs] == [2.3333, 0.6667, 0.1]
    rows = [p.to_json() for p in prefs]  # as preferences.jsonl holds them
    assert separated(rows, 0.0) == rows  # the released behaviour: exact ties are already gone
    assert [r["index"] for r in separated(rows, prefs[1].margin)] == [0, 1]  # at the margin is kept
    assert [r["index"] for r in separated(rows, 0.67)] == [0]
    assert separated(rows, 3.0) == []


def test_preferences_use_end_of_iteration_reputations():
    # Duel 0: a vs b, j1 (9, 1), j2 (1, 9): with equal R it is an exact tie (S = 5 vs 5).
    # Later duels j1 vs j2, judged by a and b who always prefer j1, lift R_j1 above R_j2.
    # With END-of-iteration R: S_a - S_b = (8 R_1 - 8 R_2) / (R_1 + R_2) > 0 -> a chosen.
    names = ["a", "b", "j1", "j2"]
    records = [duel(0, "a", "b", {"j1": (9, 1), "j2": (1, 9)})]
    records += [duel(i, "j1", "j2", {"a": (10, 1), "b": (10, 1)}) for i in range(1, 6)]
    res = rate(records, names)
    r1, r2 = res.end.R[2], res.end.R[3]
    assert r1 > r2
    first = [p for p in res.preferences if p.index == 0]
    assert len(first) == 1
    assert first[0].chosen_model == "a"
    assert first[0].margin == pytest.approx(8 * (r1 - r2) / (r1 + r2), abs=1e-12)
    assert first[0].weighted_scores == pytest.approx(((9 * r1 + r2) / (r1 + r2), (r1 + 9 * r2) / (r1 + r2)), abs=1e-12)
    # with the start-of-iteration R it would have been a tie, and dropped
    assert make_preferences(records[:1], dict.fromkeys(names, 100.0), "faithful") == []
    # the duel-0 update itself saw a tie (Delta = 0): a and b unchanged after it
    assert res.history[0]["reputations"]["a"]["R"] == 100.0


# ----------------------------------------------------------------------------------------
# Weighting schemes over iterations (docs/algorithm.md §2.5)
# ----------------------------------------------------------------------------------------
NAMES10 = [f"m{i}" for i in range(10)]
# Lowest-first order of the models at the end of iterations 1..8.
ORDERS = {
    1: [3, 5, 7, 1, 0, 9, 2, 4, 6, 8],
    2: [3, 5, 1, 7, 0, 9, 2, 4, 6, 8],  # m3 again lowest (taken) -> static takes m5
    3: [7, 3, 5, 1, 0, 9, 2, 4, 6, 8],
    4: [3, 7, 1, 5, 0, 9, 2, 4, 6, 8],  # m3, m7 taken -> m1
    5: [0, 3, 7, 1, 5, 9, 2, 4, 6, 8],
    6: [9, 0, 3, 7, 1, 5, 2, 4, 6, 8],
    7: [2, 9, 0, 3, 7, 1, 5, 4, 6, 8],  # not used by static: frozen at iteration 7
    8: [4, 2, 9, 0, 3, 7, 1, 5, 6, 8],
}
END_R = {u: {f"m{i}": 50.0 + 5 * rank for rank, i in enumerate(order)} for u, order in ORDERS.items()}


def test_static_weights_over_iterations_with_freeze():
    def lowered(w):
        return {n: v for n, v in w.items() if v != 1.0}

    assert lowered(static_weights(NAMES10, END_R, 1)) == {}
    assert lowered(static_weights(NAMES10, END_R, 2)) == {"m3": 0.0}
    assert lowered(static_weights(NAMES10, END_R, 3)) == {"m3": 0.0, "m5": 0.1}
    assert lowered(static_weights(NAMES10, END_R, 4)) == pytest.approx({"m3": 0.0, "m5": 0.1, "m7": 0.2})
    w5 = {"m3": 0.0, "m5": 0.1, "m7": 0.2, "m1": 0.3}
    assert lowered(static_weights(NAMES10, END_R, 5)) == pytest.approx(w5)
    w7 = dict(w5, m0=0.4, m9=0.5)
    assert lowered(static_weights(NAMES10, END_R, 7)) == pytest.approx(w7)
    # iteration 8 and later: the weights of iteration 7, although m2 / m4 were lowest since
    assert lowered(static_weights(NAMES10, END_R, 8)) == pytest.approx(w7)
    assert lowered(static_weights(NAMES10, END_R, 12)) == pytest.approx(w7)
    assert static_weights(NAMES10, END_R, 8)["m2"] == 1.0
    assert needed_iterations("static", 12) == [1, 2, 3, 4, 5, 6]
    # a sequence is read as iterations 1, 2, ...
    assert static_weights(NAMES10, [END_R[1], END_R[2]], 3) == static_weights(NAMES10, END_R, 3)
    # ties go to tribe order
    assert lowered(static_weights(NAMES10, {1: dict.fromkeys(NAMES10, 100.0)}, 2)) == {"m0": 0.0}
    # missing history is an error, not a silent default
    with pytest.raises(ValueError, match="iteration 1"):
        static_weights(NAMES10, {2: END_R[2]}, 3)


def test_static_weights_small_tribe_runs_out():
    names = ["a", "b", "c"]
    ends = {u: {"a": 10.0, "b": 20.0, "c": 30.0} for u in range(1, 8)}
    assert static_weights(names, ends, 7) == pytest.approx({"a": 0.0, "b": 0.1, "c": 0.2})


def test_dynamic_weights_recomputed_each_iteration():
    assert set(dynamic_weights(NAMES10, END_R, 1).values()) == {1.0}
    # t = 2: the lowest at the end of 1 (m3) gets 0
    assert dynamic_weights(NAMES10, END_R, 2) == dict(dict.fromkeys(NAMES10, 1.0), m3=0.0)
    # t = 3: the 2 lowest at the end of 2 only: m3 -> 0, m5 -> 0.1
    w3 = dynamic_weights(NAMES10, {2: END_R[2]}, 3)
    assert {n: v for n, v in w3.items() if v != 1.0} == pytest.approx({"m3": 0.0, "m5": 0.1})
    # t = 4 from the end of 3: m7 0, m3 0.1, m5 0.2 (m7 was not weighted in t = 3)
    w4 = dynamic_weights(NAMES10, END_R, 4)
    assert {n: v for n, v in w4.items() if v != 1.0} == pytest.approx({"m7": 0.0, "m3": 0.1, "m5": 0.2})
    # t = 9 (no freeze): the 8 lowest at the end of 8, 0.0 .. 0.7
    w9 = dynamic_weights(NAMES10, END_R, 9)
    assert [w9[f"m{i}"] for i in ORDERS[8][:8]] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7])
    assert [w9[f"m{i}"] for i in ORDERS[8][8:]] == [1.0, 1.0]


def test_rater_uses_scheme_weights_from_end_of_iteration():
    # Iteration 1: a beats b decisively; static at iteration 2 must give b (lowest) w = 0.
    names = ["a", "b", "c", "d"]
    it1 = [duel(i, "a", "b", {"c": (10, 1), "d": (10, 1)}) for i in range(3)]
    rater = TribeRater(names, scheme="static")
    r1 = rater.rate(it1)
    assert min(r1.end.reputations(), key=r1.end.reputations().get) == "b"
    it2 = [duel(0, "c", "b", {"a": (5, 5), "d": (5, 5)}, iteration=2)]
    r2 = rater.rate(it2)
    assert r2.weights == {"a": 1.0, "b": 0.0, "c": 1.0, "d": 1.0}
    # Delta = (5 - 0 * 5) = 5 although the judges saw a tie; n restarts (K_1), history restarts
    state1 = r1.end
    ic, ib = 2, 1
    z = (state1.R[ic] - state1.R[ib]) / math.hypot(state1.sigma[ic], state1.sigma[ib])
    expected_c = state1.R[ic] + K1 * 5 * math.tanh(state1.sigma[ic]) * confidence(z) / 20
    assert r2.end.R[ic] == pytest.approx(expected_c, abs=1e-12)
    assert r2.end.sigma[ic] == state1.sigma[ic]  # one change in iteration 2 -> unchanged


def test_carry_over_and_history_restart_between_iterations():
    names = ["a", "b", "j"]
    d1 = duel(0, "a", "b", {"j": (9, 1)}, iteration=1)
    d2 = duel(0, "a", "b", {"j": (9, 1)}, iteration=2)
    two_iters = replay([d1, d2], names, scheme="normal")
    # by hand with the pure functions: iteration 2 starts from iteration 1's end, K_1 again
    ra, rb = update_pair(100, 100, 0.5, 0.5, 8.0, K1, 20)
    ra2, rb2 = update_pair(ra, rb, 0.5, 0.5, 8.0, K1, 20)
    assert two_iters.reputations.R[:2] == pytest.approx([ra2, rb2], abs=1e-12)
    assert two_iters.reputations.sigma[:2] == [0.5, 0.5]  # each iteration kept one change
    # the same two duels in ONE iteration: K_2 for the second, and sigma from two changes
    one_iter = replay([d1, duel(1, "a", "b", {"j": (9, 1)})], names, scheme="normal")
    ra_k2, rb_k2 = update_pair(ra, rb, 0.5, 0.5, 8.0, K2, 20)
    assert one_iter.reputations.R[:2] == pytest.approx([ra_k2, rb_k2], abs=1e-12)
    # a's changes: +0.0183 then +0.1146 -> std 0.048 -> floor 0.1. b's: -0.0377 (z is no
    # longer 0 once a moved) then -0.3446 -> std = (0.3446 - 0.0377) / 2 = 0.1534
    assert one_iter.reputations.sigma[0] == 0.1
    expected_b = abs((rb - 100) - (rb_k2 - rb)) / 2
    assert expected_b == pytest.approx(0.15342251432541332, abs=1e-12)
    assert one_iter.reputations.sigma[1] == pytest.approx(expected_b, abs=1e-12)


# ----------------------------------------------------------------------------------------
# Determinism
# ----------------------------------------------------------------------------------------
def synthetic_iteration(names, state, iteration, seed, n=40):
    """Seeded match-making + seeded fake judges -> records."""
    rng = np.random.default_rng(seed)
    matchups = make_matchups(names, n, state.reputations(), seed=rng)
    records = []
    for mu in matchups:
        judges = {}
        for j in names:
            if j in mu.models:
                continue
            judges[j] = tuple(int(x) for x in rng.integers(1, 11, size=2))
        records.append(duel(mu.index, mu.leader, mu.opponent, judges, iteration=iteration))
    return records


def test_same_seed_same_duels_same_reputations():
    names = ["a", "b", "c", "d", "e"]

    def run(seed):
        rater = TribeRater(names, scheme="static")
        out = []
        for t in (1, 2, 3):
            records = synthetic_iteration(names, rater.state, t, seed + t)
            out.append(([r.models for r in records], rater.rate(records).end.to_dict()))
        return out

    first, second, other = run(7), run(7), run(8)
    assert first == second
    assert first != other
    assert first[-1][1]["a"]["R"] != 100.0


# ----------------------------------------------------------------------------------------
# Reference: a plain, dict-based re-implementation of the released rating loop
# (docs/algorithm.md §2.4, §2.5), written independently of the library, compared on a random multi-iteration log.
# ----------------------------------------------------------------------------------------
def ref_phi(x):
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def ref_weights(scheme, tribe, ends, t):
    w = {n: 1.0 for n in tribe}
    if scheme == "static":
        taken = []
        for u in range(2, min(t, 7) + 1):
            for n in sorted(tribe, key=lambda x: ends[u - 1][x]):
                if n not in taken:
                    taken.append(n)
                    break
        for i, n in enumerate(taken):
            w[n] = 0.1 * i
    elif scheme == "dynamic" and t >= 2:
        for i, n in enumerate(sorted(tribe, key=lambda x: ends[t - 1][x])[: t - 1]):
            w[n] = 0.1 * i
    return w


def ref_judges(duel_obj, mode):
    out = []
    for j, s in duel_obj["judges"].items():
        if s is None or s[0] is None or s[1] is None:
            if mode == "faithful":
                out.append((j, 5, 5))
        else:
            out.append((j, s[0], s[1]))
    return out


def reference_replay(duels, tribe, scheme, mode, start):
    R = {n: start[n][0] for n in tribe}
    sigma = {n: start[n][1] for n in tribe}
    ends = {}
    history = []
    prefs = []
    for t in sorted({d["iteration"] for d in duels}):
        ds = sorted([d for d in duels if d["iteration"] == t], key=lambda d: d["index"])
        w = ref_weights(scheme, tribe, ends, t)
        c = 10.0 if scheme == "dynamic" else 20.0
        changes = {n: [] for n in tribe}
        for n_duel, d in enumerate(ds, start=1):
            a, b = d["models"]
            js = ref_judges(d, mode)
            if js:
                delta = sum(R[j] * (w[a] * sa - w[b] * sb) for j, sa, sb in js) / sum(R[j] for j, _, _ in js)
                K = max(5.0, 10.0 * 0.9 ** (n_duel / 10.0))
                for me, other, sign in ((a, b, 1.0), (b, a, -1.0)):
                    z = (R[me] - R[other]) / math.sqrt(sigma[me] ** 2 + sigma[other] ** 2)
                    step = K * sign * delta * math.tanh(sigma[me]) * max(abs(ref_phi(z) - ref_phi(-z)), 0.01) / c
                    new = max(10.0, R[me] + step)
                    changes[me].append(new - R[me])
                    R[me] = new
                for me in (a, b):
                    changes[me] = changes[me][-10:]
                    if len(changes[me]) >= 2:
                        sigma[me] = max(float(np.std(changes[me])), 0.1)
            history.append({n: (R[n], sigma[n]) for n in tribe})
        ends[t] = dict(R)
        for d in ds:
            js = ref_judges(d, mode)
            if not js:
                continue
            total = sum(R[j] for j, _, _ in js)
            s_a = sum(R[j] * sa for j, sa, _ in js) / total
            s_b = sum(R[j] * sb for j, _, sb in js) / total
            if s_a == s_b:
                continue
            win = 0 if s_a > s_b else 1
            prefs.append((t, d["index"], d["models"][win], d["models"][1 - win], abs(s_a - s_b), max(s_a, s_b), min(s_a, s_b)))
    return R, sigma, history, prefs


def random_log(seed, tribe, iterations=3, per_iteration=110):
    rnd = random.Random(seed)
    duels = []
    for t in range(1, iterations + 1):
        for i in range(per_iteration):
            a, b = rnd.sample(tribe, 2)
            judges = {}
            for j in tribe:
                if j in (a, b) or rnd.random() < 0.1:  # some judges absent
                    continue
                u = rnd.random()
                if u < 0.05:
                    judges[j] = None
                elif u < 0.15:
                    judges[j] = (None, rnd.randint(1, 10)) if rnd.random() < 0.5 else (rnd.randint(0, 10), None)
                else:
                    judges[j] = (rnd.randint(1, 10), rnd.randint(1, 10))
            if i % 37 == 5:  # all judges unparseable: no judge in `fixed`
                judges = {j: None for j in judges}
            if i % 23 == 7:  # logits-mode style float scores
                judges = {j: (round(rnd.uniform(1, 10), 3), round(rnd.uniform(1, 10), 3)) for j in judges}
            duels.append({"iteration": t, "index": i, "models": [a, b], "judges": judges})
    rnd.shuffle(duels)  # replay must order by (iteration, index)
    return duels


@pytest.mark.parametrize("scheme", ["normal", "static", "dynamic"])
@pytest.mark.parametrize("mode", ["faithful", "fixed"])
def test_matches_reference_implementation(scheme, mode):
    tribe = ["t0", "t1", "t2", "t3", "t4", "t5"]
    # a spread-out start so that the confidence term, the clamp at 10 and the sigma floor all act
    start = {"t0": (10.3, 2.0), "t1": (100.0, 0.5), "t2": (60.0, 3.0), "t3": (140.0, 1.5), "t4": (100.0, 0.2), "t5": (95.0, 4.0)}
    duels = random_log(1234, tribe)
    R, sigma, history, prefs = reference_replay(duels, tribe, scheme, mode, start)

    records = [
        DuelRecord(d["iteration"], d["index"], f"q{d['iteration']}.{d['index']}", tuple(d["models"]), ("x", "y"),
                   {j: JudgeRecord(s) for j, s in d["judges"].items()})
        for d in duels
    ]
    state = TribeReputation(tribe, [start[n][0] for n in tribe], [start[n][1] for n in tribe])
    result = replay(records, tribe, start=state, scheme=scheme, mode=mode)

    got = result.reputations.to_dict()
    for n in tribe:
        assert got[n]["R"] == pytest.approx(R[n], abs=1e-9)
        assert got[n]["sigma"] == pytest.approx(sigma[n], abs=1e-9)
    assert len(result.history) == len(history) == 330
    for mine, ref in zip(result.history, history):
        for n in tribe:
            assert mine["reputations"][n]["R"] == pytest.approx(ref[n][0], abs=1e-9)
            assert mine["reputations"][n]["sigma"] == pytest.approx(ref[n][1], abs=1e-9)
    mine_prefs = [(p.iteration, p.index, p.chosen_model, p.rejected_model, p.margin, *p.weighted_scores) for p in result.preferences]
    assert len(mine_prefs) == len(prefs) > 200
    for m, r in zip(mine_prefs, prefs):
        assert m[:4] == r[:4]
        assert m[4:] == pytest.approx(r[4:], abs=1e-9)
    # the log really exercised the rules under test
    all_r = [h[n][0] for h in history for n in tribe]
    assert min(all_r) == 10.0  # the clamp
    assert len({round(h[n][1], 12) for h in history for n in tribe}) > 20  # sigma moves
    if mode == "fixed":
        assert len(prefs) < 330 - 3  # duels without judges dropped


@pytest.mark.e2e
def test_benchmark_script_runs_and_appends_only_when_asked(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, str(root / "benchmarks" / "reputation.py"), "--duels", "3000", "--per-iteration", "500"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "| rate_compiled (fused loop) | 3,000 | 10 | 8 |" in proc.stdout
    assert list(tmp_path.iterdir()) == []  # no BENCHMARKS.md unless asked
    target = tmp_path / "BENCH.md"
    proc = subprocess.run(cmd + ["--append", str(target)], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "duel updates/s" in target.read_text()


def test_uniform_scheme_counts_every_judge_once():
    """`uniform` (the paper's ablation without reputation weighting): judges count 1 each in Delta
    and in the preference, by hand; with reputation weights the same duel goes the other way."""
    names = ["a", "b", "c", "d"]
    start = TribeReputation(tuple(names), [100.0, 100.0, 150.0, 50.0], [0.5, 0.5, 0.5, 0.5])
    record = duel(0, "a", "b", {"c": (8, 2), "d": (1, 9)}, responses=("A", "B"))

    uniform = TribeRater(names, scheme="uniform", start=start).rate([record])
    # Delta = ((8 - 2) + (1 - 9)) / 2 = -1; equal R and sigma: z = 0, so the confidence is eps = 0.01.
    delta_a = K1 * -1.0 * TANH_HALF * 0.01 / 20
    assert uniform.end.R[0] == pytest.approx(100 + delta_a, abs=1e-12)
    # b's z uses a's new R: |erf(|delta_a| / (sqrt 2 * sqrt(0.5)))| < eps, so eps again.
    assert uniform.end.R[1] == pytest.approx(100 - delta_a, abs=1e-12)
    assert uniform.weights == dict.fromkeys(names, 1.0) and uniform.c == 20.0
    (pref,) = uniform.preferences
    assert (pref.chosen, pref.chosen_model) == ("B", "b")  # S_a = 4.5, S_b = 5.5
    assert pref.weighted_scores == pytest.approx((5.5, 4.5)) and pref.margin == pytest.approx(1.0)

    weighted = TribeRater(names, scheme="normal", start=start).rate([record])
    # Delta = (150 * 6 + 50 * -8) / 200 = 2.5 for a.
    assert weighted.end.R[0] == pytest.approx(100 + K1 * 2.5 * TANH_HALF * 0.01 / 20, abs=1e-12)
    assert weighted.preferences[0].chosen_model == "a"  # S_a = 6.25, S_b = 3.75 with R_c = 150, R_d = 50
