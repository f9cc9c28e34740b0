"""The predicted time of one iteration (sparta_jax/iteration_time.py): counts from the config,
times from the programs, worked by hand."""
import os

import pytest

from sparta_jax.config_files import load_config
from sparta_jax.iteration_time import (ProgramTimes, expected_longest, format_iteration, iteration_phases, phase_totals,
                                       queue_schedule)

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
    c.sampler.refill_rows = 0  # static batches (the refill: test_refilled_rows_follow_the_queue_schedule)
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
    c.sampler.refill_rows = 0  # static batches
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
    c.sampler.refill_rows = 0  # static batches
    whole = {(r["phase"], r["program"].split(" (")[0]): r["calls"] for r in iteration_phases(c, TIMES, members=6)}
    half = {(r["phase"], r["program"].split(" (")[0]): r for r in iteration_phases(c, TIMES, members=6, share=0.5)}
    assert half["answers", "prefill"]["program"] == "prefill (1000 answers, 4 batches)" and whole["answers", "prefill"] == 8
    assert half["judging", "prefill"]["program"] == "prefill (4000 judgments)"  # 2000 x 4 judges / 2
    assert half["DPO", "train step"]["calls"] == whole["DPO", "train step"] == 63
    assert half["evaluation", "prefill"]["program"] == "prefill (1260 answers, 5 batches)"  # (6 x 200 + 1319) / 2


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


def test_queue_schedule_by_hand():
    # 2 rows, refill 1 at a time: the rows take answers 3 and 1; answer 1's row is free after
    # step 1 and takes answer 2 at step 2 (steps 2-3); answer 4 waits for a free row: both are
    # free after step 3, it takes one at step 4 and ends after step 7.
    assert queue_schedule([3, 1, 2, 4], rows=2, refill_rows=1) == (7, 2)
    # Refill 2 at a time: the free row waits for a second one (after step 3), then both refill.
    assert queue_schedule([3, 1, 2, 4], rows=2, refill_rows=2) == (7, 1)
    # Static batches would take 3 + 4 steps; a queue with every answer in its own row, the longest.
    assert queue_schedule([3, 1, 2, 4], rows=4, refill_rows=1) == (4, 0)
    # The last waiting prompt is refilled alone even when refill_rows asks for more.
    assert queue_schedule([2, 2, 5], rows=2, refill_rows=2) == (7, 1)
    assert queue_schedule([0, 0, 0], rows=2, refill_rows=1) == (1, 1)  # an empty answer's refill still takes a step
    # Both rows free at once with refill_rows 1: two refills before the step, no row idles.
    assert queue_schedule([1] * 6, rows=2, refill_rows=1) == (3, 4)


def test_refilled_rows_follow_the_queue_schedule():
    """sampler.refill_rows > 0: each call of queue_batches x batch answers is costed by its schedule
    (lengths taken in turn), its first rows' prefill and its refill prefills."""
    c = load_config(os.path.join(REPO, "configs", "tpu_v4.py"))
    c.sampler.refill_rows, c.sampler.queue_batches = 32, 4  # calls of 1024 answers: 1024 + 976
    c.evaluation.enabled = False
    times = ProgramTimes(**{**TIMES.__dict__, "refill_prefill": 0.5})
    lengths = [100, 300, 512, 700]  # 700 is capped at max_new_tokens (512)
    by = {(r["phase"], r["program"].split(" (")[0]): r for r in iteration_phases(c, times, members=10,
                                                                               answer_lengths=lengths)}
    capped = [100, 300, 512, 512] * 500
    first, second = queue_schedule(capped[:1024], 256, 32), queue_schedule(capped[1024:], 256, 32)
    assert by["answers", "prefill"]["calls"] == 2
    assert by["answers", "decode step"]["calls"] == first[0] + second[0]
    assert by["answers", "refill prefill"]["calls"] == first[1] + second[1]
    assert by["answers", "refill prefill"]["seconds"] == pytest.approx((first[1] + second[1]) * 0.5)
    # Fewer steps than static batches, which wait for a 512-token answer in every batch.
    assert first[0] + second[0] < 8 * 512
    # (1024 - 256) / 32 = 24 refills fill the first call's queue; 976 - 256 = 720 -> 22.5, so 23.
    assert (first[1], second[1]) == (24, 23)
