"""The predicted time of one iteration (sparta_jax/iteration_time.py): counts from the config,
times from the programs, worked by hand."""
import os

import pytest

from sparta_jax.config_files import load_config
from sparta_jax.iteration_time import ProgramTimes, expected_longest, format_iteration, iteration_phases, phase_totals

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMES = ProgramTimes(answer_prefill=2.0, answer_decode_step=0.01, judge_call=3.0, judge_decode_step=0.02,
                     reference_call=0.5, dpo_step=1.5, eval_prefill=4.0, eval_decode_step=0.03)


def test_expected_longest_of_a_batch():
    assert expected_longest(None, 8, 512) == 512.0  # no lengths: every answer runs to the cap
    assert expected_longest([5, 5, 5], 4, 512) == pytest.approx(5.0)
    # lengths 1 or 2 with even odds, 2 rows: P(max >= 1) = 1, P(max >= 2) = 1 - 0.5 ** 2
    assert expected_longest([1, 2], 2, 10) == pytest.approx(1.75)
    assert expected_longest([1, 2], 1, 10) == pytest.approx(1.5)  # one row: the mean
    assert expected_longest([3, 900], 2, 100) == pytest.approx(3 + 97 * 0.75)  # capped at 100
    assert expected_longest([1, 2], 64, 10) == pytest.approx(2.0, abs=1e-12)  # a large batch waits for the longest


def test_paper_gsm8k_iteration_by_hand():
    """configs/tpu_v4.py: 1000 duels of 10 members, answers of 512 tokens in batches of 256,
    sampled judges (256 tokens, batches of 512), 16 pairs a DPO step, evaluation of 10 x 200 dev
    and 1319 test answers in batches of 256."""
    c = load_config(os.path.join(REPO, "configs", "tpu_v4.py"))
    rows = iteration_phases(c, TIMES, members=10)
    by = {(r["phase"], r["program"].split(" (")[0]): r for r in rows}
    assert by["answers", "prefill"]["calls"] == 8  # 2000 answers / 256
    assert by["answers", "decode step"]["calls"] == 8 * 512
    assert by["judging", "prefill"]["calls"] == 32  # 2000 answers x 8 judges / 512
    assert by["judging", "decode step"]["calls"] == 32 * 256
    assert by["DPO", "train step"]["calls"] == 63  # ceil(1000 / 16)
    assert by["reference log-probs", "reference"]["calls"] == 63 + 63  # each step's batch, then the after-figures
    assert by["evaluation", "prefill"]["calls"] == 13  # ceil((2000 + 1319) / 256)
    assert by["evaluation", "decode step"]["calls"] == 13 * 512
    totals = phase_totals(rows)
    assert list(totals) == ["answers", "judging", "reference log-probs", "DPO", "evaluation"]
    assert totals["answers"] == pytest.approx(8 * 2.0 + 8 * 512 * 0.01)
    assert totals["judging"] == pytest.approx(32 * 3.0 + 32 * 256 * 0.02)
    assert totals["DPO"] == pytest.approx(63 * 1.5)
    assert totals["evaluation"] == pytest.approx(13 * 4.0 + 13 * 512 * 0.03)
    table = format_iteration(rows)
    assert f"{sum(totals.values()):.4g} s" in table and table.count("\n") == len(rows) + len(totals) + 2


def test_counts_follow_the_judge_mode_replay_epochs_and_eval_items():
    c = load_config(os.path.join(REPO, "configs", "tpu_v4.py"))
    c.judge.mode, c.judge.batch_size = "logits", 100
    c.dpo.replay_iterations, c.dpo.epochs, c.dpo.pairs_per_step = 1, 2, 32
    c.evaluation.test_all_members = True
    rows = iteration_phases(c, TIMES, members=4, answer_lengths=[10, 20], eval_items=(5, 7))
    by = {(r["phase"], r["program"].split(" (")[0]): r for r in rows}
    assert by["judging", "score"]["calls"] == 40  # 2000 answers x 2 judges / 100, no decoding
    assert ("judging", "decode step") not in by
    assert by["DPO", "train step"]["calls"] == 125  # 2000 pairs (own + replayed) x 2 epochs / 32
    assert by["reference log-probs", "reference"]["calls"] == 125 + 63
    assert by["answers", "decode step"]["calls"] == pytest.approx(8 * 20)  # 256 rows: the longest, 20
    assert by["evaluation", "prefill"]["calls"] == 1  # 4 x 5 dev + 4 x 7 test answers
    c.judge.mode = "verifier"
    assert "judging" not in phase_totals(iteration_phases(c, TIMES, members=4, eval_items=(5, 7)))
    c.evaluation.enabled = False
    assert "evaluation" not in phase_totals(iteration_phases(c, TIMES, members=4))


def test_a_group_of_a_mixed_tribe_takes_its_share_and_trains_on_every_pair():
    """Two groups of 3 of a 6-member tribe: each writes half the answers and judgments (4 judges a
    duel, drawn from both groups), answers the dev items with its 3 members, and trains on all pairs."""
    c = load_config(os.path.join(REPO, "configs", "tpu_v4.py"))
    whole = {(r["phase"], r["program"].split(" (")[0]): r["calls"] for r in iteration_phases(c, TIMES, members=6)}
    half = {(r["phase"], r["program"].split(" (")[0]): r for r in iteration_phases(c, TIMES, members=6, share=0.5)}
    assert half["answers", "prefill"]["program"] == "prefill (4 batches)" and whole["answers", "prefill"] == 8
    assert half["judging", "prefill"]["program"] == "prefill (4000 judgments)"  # 2000 x 4 judges / 2
    assert half["DPO", "train step"]["calls"] == whole["DPO", "train step"] == 63
    assert half["evaluation", "prefill"]["program"] == "prefill (1260 answers)"  # (6 x 200 + 1319) / 2


def test_finished_row_share_of_static_batches():
    """benchmarks/finished_rows.py's arithmetic, by hand: a batch decodes for its longest answer, and
    every step after an answer ended spends its row."""
    import sys

    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    from finished_rows import batch_shares, released_prompts

    # [10, 20]: 20 steps, 30 of 40 row-steps live; [30, 40]: 70 of 80; [5]: one row, nothing spent.
    assert batch_shares([10, 20, 30, 40, 5], 2) == [(2, 20, 0.25), (2, 40, 0.125), (1, 5, 0.0)]
    prompts = released_prompts()
    assert [source for source, _ in prompts].count("gsm8k test") == 3 and len(prompts) == 12
    assert all(text.endswith("Let's solve this problem step by step.") for s, text in prompts if s.startswith("MATH"))
