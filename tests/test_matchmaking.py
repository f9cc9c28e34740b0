"""Match-making (docs/algorithm.md §2.1): leader blocks, opponent choice by alpha / k-closest, seeding.

Statistical checks use fixed seeds (deterministic, never flaky) and chi-square bounds far
beyond the 99.9% quantile, so they pass for a correct implementation and fail for a biased
one."""
import collections

import numpy as np
import pytest

from sparta_jax.sparta import (
    DEFAULT_ALPHA,
    DEFAULT_K,
    assign_leaders,
    closest_opponents,
    make_matchups,
    opponent_probabilities,
)

NAMES = [f"m{i}" for i in range(10)]
# distinct-ish reputations, with ties to exercise the stable sort
REPS = [100.0, 103.0, 95.0, 120.0, 101.0, 99.0, 80.0, 110.0, 104.0, 97.0]


def chi_square(counts, probs):
    counts = np.asarray(counts, dtype=float)
    expected = counts.sum() * np.asarray(probs, dtype=float)
    mask = expected > 0
    assert counts[~mask].sum() == 0, "a zero-probability outcome occurred"
    return float((((counts - expected) ** 2)[mask] / expected[mask]).sum())


def test_defaults_are_the_released_script_values():
    assert (DEFAULT_ALPHA, DEFAULT_K) == (0.6, 5)


def test_each_model_leads_once_per_full_block():
    m = 7
    for seed in range(50):
        leaders = assign_leaders(m * 5 + 3, m, seed)
        assert len(leaders) == 38
        for block in range(5):
            assert sorted(leaders[block * m : (block + 1) * m]) == list(range(m))
        tail = leaders[35:]
        assert len(set(tail)) == 3  # a partial block does not repeat a leader
    # and through make_matchups with names
    matchups = make_matchups(NAMES, 30, REPS, seed=3)
    for block in range(3):
        assert sorted(mu.leader for mu in matchups[block * 10 : (block + 1) * 10]) == NAMES
    assert [mu.index for mu in matchups] == list(range(30))


def test_partial_block_leaders_uniform():
    # m = 5, 7 instructions: the second block has 2 leaders; each model leads there with
    # probability 2/5. 3000 seeds -> 6000 leader slots, 1200 expected per model.
    counts = collections.Counter()
    pairs = collections.Counter()
    for seed in range(3000):
        tail = assign_leaders(7, 5, seed)[5:]
        counts.update(tail)
        pairs[frozenset(tail)] += 1
    stat = chi_square([counts[i] for i in range(5)], [0.2] * 5)
    assert stat < 25.0  # df = 4; the 99.9% quantile is 18.5
    # every unordered pair of leaders equally likely (10 pairs, df = 9)
    assert len(pairs) == 10
    assert chi_square(list(pairs.values()), [0.1] * 10) < 35.0
    # a biased rule (always the first models) would blow this up
    assert chi_square([3000, 3000, 0, 0, 0], [0.2] * 5) > 1000


def test_closest_opponents_stable_sort_by_hand():
    # leader m0 (R = 100): |R_j - 100| = m1 3, m2 5, m3 20, m4 1, m5 1, m6 20, m7 10, m8 4, m9 3
    # ascending, ties in tribe order: m4 (1), m5 (1), m1 (3), m9 (3), m8 (4), m2 (5), m7, m3, m6
    assert closest_opponents(0, REPS, 5) == [4, 5, 1, 9, 8]
    assert closest_opponents(0, REPS, 9) == [4, 5, 1, 9, 8, 2, 7, 3, 6]
    # all equal (fair start): tribe order
    assert closest_opponents(4, [100.0] * 6, 3) == [0, 1, 2]
    assert closest_opponents(0, [100.0] * 6, 10) == [1, 2, 3, 4, 5]  # k > m - 1: all others
    # P(j | m0) = 0.6 / 9 + 0.4 / 5 = 0.14667 for the 5 closest, 0.6 / 9 = 0.06667 otherwise
    p = opponent_probabilities(0, REPS, 0.6, 5)
    assert p[0] == 0.0
    assert p[[4, 5, 1, 9, 8]] == pytest.approx([0.6 / 9 + 0.4 / 5] * 5)
    assert p[[2, 7, 3, 6]] == pytest.approx([0.6 / 9] * 4)
    assert p.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("alpha, k", [(0.6, 5), (0.2, 3), (0.0, 2), (1.0, 5)])
def test_opponent_frequencies_match_alpha_and_k(alpha, k):
    matchups = make_matchups(NAMES, 20000, dict(zip(NAMES, REPS)), alpha=alpha, k=k, seed=11)
    index = {n: i for i, n in enumerate(NAMES)}
    counts = np.zeros((10, 10))
    for mu in matchups:
        counts[index[mu.leader], index[mu.opponent]] += 1
    assert np.trace(counts) == 0  # nobody fights itself
    assert counts.sum(axis=1) == pytest.approx([2000] * 10)  # 2000 full blocks
    total = 0.0
    df = 0
    for i in range(10):
        p = opponent_probabilities(i, REPS, alpha, k)
        total += chi_square(counts[i], p)
        df += int((p > 0).sum()) - 1
    # chi-square with df degrees of freedom: mean df, sd sqrt(2 df); allow mean + 6 sd
    assert total < df + 6 * np.sqrt(2 * df)
    if alpha == 0.0:
        # only the k closest are ever drawn
        for i in range(10):
            drawn = set(np.nonzero(counts[i])[0])
            assert drawn == set(closest_opponents(i, REPS, k))
    # a different rule is detected: uniform opponents (alpha = 1, any k) for the k-closest
    # rules, and a half-closest rule (alpha = 0.5, k = 2) for the uniform one
    other_alpha, other_k = (0.5, 2) if alpha == 1.0 else (1.0, k)
    wrong = sum(chi_square(counts[i], opponent_probabilities(i, REPS, other_alpha, other_k)) for i in range(10))
    assert wrong > 5 * (df + 6 * np.sqrt(2 * df))
    print(f"alpha={alpha} k={k}: chi2={total:.1f} df={df}; against the other rule {wrong:.0f}")


def test_fair_start_ties_keep_tribe_order():
    names = ["a", "b", "c", "d", "e", "f"]
    matchups = make_matchups(names, 600, None, alpha=0.0, k=3, seed=5)
    allowed = {n: [m for m in names if m != n][:3] for n in names}
    for mu in matchups:
        assert mu.opponent in allowed[mu.leader]
    # e.g. e's three closest at a fair start are a, b, c
    assert allowed["e"] == ["a", "b", "c"]
    assert {mu.opponent for mu in matchups if mu.leader == "e"} == {"a", "b", "c"}


def test_two_model_tribe_and_pair_order():
    matchups = make_matchups(["x", "y"], 9, seed=0)
    for mu in matchups:
        assert mu.models == (mu.leader, mu.opponent)
        assert {mu.leader, mu.opponent} == {"x", "y"}


def test_same_seed_same_duels():
    reps = dict(zip(NAMES, REPS))
    a = make_matchups(NAMES, 137, reps, seed=42)
    b = make_matchups(NAMES, 137, reps, seed=42)
    c = make_matchups(NAMES, 137, reps, seed=43)
    assert a == b
    assert a != c
    # a Generator continues its stream: two draws from one generator differ
    rng = np.random.default_rng(42)
    first = make_matchups(NAMES, 137, reps, seed=rng)
    second = make_matchups(NAMES, 137, reps, seed=rng)
    assert first == a and second != first


def test_reputations_as_sequence_or_mapping():
    reps = dict(zip(NAMES, REPS))
    assert make_matchups(NAMES, 50, reps, seed=1) == make_matchups(NAMES, 50, REPS, seed=1)


def test_bad_arguments():
    with pytest.raises(ValueError):
        make_matchups(["a"], 3)
    with pytest.raises(ValueError):
        make_matchups(["a", "a"], 3)
    with pytest.raises(ValueError):
        make_matchups(["a", "b"], 3, alpha=1.5)
    with pytest.raises(ValueError):
        make_matchups(["a", "b"], 3, k=0)
    with pytest.raises(ValueError):
        make_matchups(["a", "b"], 3, {"a": 100.0})
