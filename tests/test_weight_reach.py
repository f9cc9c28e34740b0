"""How far reputation weights can move a duel's pair (`sparta.weight_reach`): the flip ratio by
hand, a duel turned by weights past it, the bound checked against brute force over random duels,
and `compare`'s table from a written duel log."""
import json
import math
import os

import numpy as np

from sparta_jax import compare
from sparta_jax.sparta.duel_log import DuelRecord, JudgeRecord, duel_to_json
from sparta_jax.sparta.preferences import choose, weighted_scores
from sparta_jax.sparta.weight_reach import duel_reach, flip_ratio, iteration_reach

from test_compare import make_run


def _duel(scores: dict, index: int = 0) -> DuelRecord:
    return DuelRecord(iteration=1, index=index, instruction="q", models=("a", "b"), responses=("ra", "rb"),
                      judges={n: JudgeRecord(tuple(s) if s is not None else None) for n, s in scores.items()})


def test_flip_ratio_by_hand():
    assert flip_ratio([3.0, -1.0]) == 3.0  # the dissenter needs 3x the other's weight
    assert flip_ratio([3.0, -1.0, -0.5]) == 2.0  # two dissenters share it: 3 / 1.5
    assert flip_ratio([-1.0, 4.0]) == 4.0
    assert flip_ratio([2.0, -2.0]) == 1.0  # a tie: any unequal weights break it
    assert flip_ratio([1.0, 2.0, 0.0]) == math.inf  # nobody dissents
    assert flip_ratio([0.0, 0.0]) == math.inf


def test_a_duel_turned_by_weights_past_its_flip_ratio():
    # judge x prefers a by 2 points, y prefers b by 1: equal weights choose a (S 5 vs 4.5, margin 0.5)
    duel = _duel({"x": (6.0, 4.0), "y": (4.0, 5.0)})
    equal = duel_reach(duel, {"x": 100.0, "y": 100.0}, "fixed", min_margin=0.25)
    assert equal["flip_ratio"] == 2.0 and equal["weight_ratio"] == 1.0 and equal["judges"] == 2
    assert equal["equal"] == equal["reputation"] == {"winner": 0, "margin": 0.5, "trained": True}
    # y at 2.5x x's weight: S_a = (600 + 1000) / 350, S_b = (400 + 1250) / 350: b chosen by 1/7, under the filter
    turned = duel_reach(duel, {"x": 100.0, "y": 250.0}, "fixed", min_margin=0.25)
    assert turned["weight_ratio"] == 2.5
    assert turned["reputation"]["winner"] == 1 and abs(turned["reputation"]["margin"] - 50 / 350) < 1e-12
    assert turned["reputation"]["trained"] is False
    # at 1.9x (under the flip ratio) a still wins, by less: (600 + 760) / 290 - (400 + 950) / 290 = 10 / 290
    kept = duel_reach(duel, {"x": 100.0, "y": 190.0}, "fixed", min_margin=0.25)
    assert kept["reputation"]["winner"] == 0 and abs(kept["reputation"]["margin"] - 10 / 290) < 1e-12
    # an unparseable judge is left out in `fixed`; with none left the duel has no pair to move
    assert duel_reach(_duel({"x": (6.0, 4.0), "y": None}), {"x": 1.0, "y": 9.0}, "fixed", 0.0)["weight_ratio"] == 1.0
    assert duel_reach(_duel({"x": None}), {"x": 1.0}, "fixed", 0.0) is None


def test_weights_turn_a_verdict_only_past_the_flip_ratio_and_the_bound_is_reached():
    """Over random duels of 2-4 judges: weights within [1, rho] never turn the equal-weights
    winner when rho < flip ratio, and the weights the bound names (rho on the dissenters, 1 on the
    others) turn it just past it."""
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(500):
        j = int(rng.integers(2, 5))
        a, b = list(rng.uniform(1, 10, j).round(1)), list(rng.uniform(1, 10, j).round(1))
        d = np.subtract(a, b)
        rho = flip_ratio(d)
        equal = choose(*weighted_scores([1.0] * j, a, b))
        if equal is None or not math.isfinite(rho):
            continue
        checked += 1
        for _ in range(20):  # any weights in [1, rho) keep the winner
            v = list(rng.uniform(1.0, 1.0 + (rho - 1.0) * 0.999, j))
            assert choose(*weighted_scores(v, a, b)) == equal
        sign = 1.0 if equal == 0 else -1.0
        v = list(np.where(sign * d < 0, rho * 1.001, 1.0))
        assert choose(*weighted_scores(v, a, b)) == 1 - equal
    assert checked > 200


def test_iteration_reach_counts():
    duels = [
        _duel({"x": (6.0, 4.0), "y": (4.0, 5.0)}, 0),  # flip ratio 2: turned by x 100, y 250
        _duel({"x": (8.0, 2.0), "y": (5.0, 5.1)}, 1),  # flip ratio 60: kept
        _duel({"x": (8.0, 2.0), "y": (9.0, 1.0)}, 2),  # both prefer a: no dissent
        _duel({"x": None, "y": None}, 3),  # no judge counts
    ]
    r = iteration_reach(duels, {"x": 100.0, "y": 250.0}, "fixed", min_margin=0.25)
    assert r == {"duels": 3, "dissent": 2, "turnable_at": {"1.1": 0, "1.5": 0, "2.0": 0, "4.0": 1},
                 "max_weight_ratio": 2.5, "winners_turned": 1, "trained_only_equal": 1, "trained_only_reputation": 0}


def test_compare_prints_the_reach_of_each_iteration(tmp_path):
    workdir = make_run(str(tmp_path), "sparta", after=[1] * 10, pairs=(4,))
    with open(os.path.join(workdir, "config.json")) as f:
        config = json.load(f)
    config.update(mode="fixed", dpo={"min_margin": 0.25})
    with open(os.path.join(workdir, "config.json"), "w") as f:
        json.dump(config, f)
    folder = os.path.join(workdir, "iteration_001")
    with open(os.path.join(folder, "duels.jsonl"), "w") as f:
        for duel in (_duel({"x": (6.0, 4.0), "y": (4.0, 5.0)}, 0), _duel({"x": (8.0, 2.0), "y": (9.0, 1.0)}, 1)):
            f.write(json.dumps(duel_to_json(duel)) + "\n")
    with open(os.path.join(folder, "reputations.json"), "w") as f:
        json.dump({"end": {"x": {"R": 100.0, "sigma": 0.1}, "y": {"R": 250.0, "sigma": 0.1}}}, f)
    arm = compare.arm_summary(workdir)
    assert arm["weighting_reach"] == [{"iteration": 1, "duels": 2, "dissent": 1,
                                       "turnable_at": {"1.1": 0, "1.5": 0, "2.0": 0, "4.0": 1},
                                       "max_weight_ratio": 2.5, "winners_turned": 1,
                                       "trained_only_equal": 1, "trained_only_reputation": 0}]
    md = compare.reach_markdown([arm])
    assert "| 1 | 2 | 1 | 0 / 0 / 0 / 1 | 2.500 | 1 | 1 / 0 |" in md
    assert compare.reach_markdown([compare.arm_summary(make_run(str(tmp_path), "plain", after=[1] * 10))]) == ""
