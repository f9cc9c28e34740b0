"""Sparta's duels and their judgments for one iteration (docs/algorithm.md §2.2, §2.3), batched whole.

All answers of an iteration go through the sampler in fixed-size batches, rows of every
member mixed; then all judge prompts do (sparta_jax/inference.py). Nothing here waits on a
reputation update.
"""
from __future__ import annotations

from typing import Sequence

from sparta_jax import inference
from sparta_jax.inference import chat_ids, judge_prompt_ids, logit_scores, prompts_by_group, verifier_score
from sparta_jax.sparta import DuelRecord, JudgeRecord, Matchup
from sparta_jax.tribe import Tribe


def answer_duels(tribe: Tribe, matchups: Sequence[Matchup], instructions: Sequence[str], *, gen_cfg, rng,
                 progress=lambda n: None) -> list[tuple[str, str]]:
    """Both duelists' answers to each instruction; a (member, instruction) pair answers once."""
    jobs, where = [], {}
    for m, text in zip(matchups, instructions):
        for name in m.models:
            key = (name, text)
            if key not in where:
                ids = chat_ids(tribe, text, tribe.index(name))
                if len(ids) > gen_cfg.max_prompt_tokens:
                    # docs/algorithm.md §2.2: prompts are cut to max_prompt_tokens (keeping the start, as the
                    # released tokenizer call does); the chat template's tail is lost with it.
                    ids = ids[: gen_cfg.max_prompt_tokens]
                where[key] = len(jobs)
                jobs.append((tribe.index(name), ids))
    texts = inference.generate_texts(tribe, jobs, gen_cfg=gen_cfg, rng=rng, batch_size=gen_cfg.batch_size, progress=progress)
    return [tuple(texts[where[(name, text)]] for name in m.models) for m, text in zip(matchups, instructions)]


def judge_jobs(tribe: Tribe, matchups, instructions, responses, *, judge_cfg, mode: str):
    """Every (judge, duel, side) with its fitted judge prompt ids. Judges: all but the duelists."""
    jobs = []
    for d, (m, text, pair) in enumerate(zip(matchups, instructions, responses)):
        judges = [j for j, judge in enumerate(tribe.names) if judge not in m.models]
        sides = prompts_by_group(tribe, judges, lambda j: [  # noqa: B023 (used at once)
            judge_prompt_ids(tribe, text, pair[side], judge_cfg=judge_cfg, mode=mode, member=j) for side in (0, 1)])
        for j in judges:
            for side in (0, 1):
                jobs.append((d, tribe.names[j], side, j, sides[j][side]))
    return jobs


def judge_duels(tribe: Tribe, iteration: int, matchups, instructions, responses, *, judge_cfg, mode: str, rng,
                progress=lambda n: None, references=None) -> list[DuelRecord]:
    """Judge every duel with every non-duelist, in the configured mode, into duel-log records.

    judge.mode="verifier" is a control, not Sparta: every judge gives each answer the score the
    task's evaluator implies (`verifier_score`; `references[d]` is duel d's instruction record),
    so the rest of the loop runs on perfect judgments."""
    verdicts: dict[tuple[int, str], list] = {}
    if judge_cfg.mode == "verifier":
        if references is None:
            raise ValueError("judge.mode='verifier' needs the instructions' reference answers")
        pairs = [tuple(verifier_score(r, ref) for r in pair) for pair, ref in zip(responses, references)]
        judges_of = lambda d, judge: JudgeRecord(pairs[d], None)  # noqa: E731
        progress(2 * (len(tribe.names) - 2) * len(matchups))
        return _records(tribe, iteration, matchups, instructions, responses, judges_of)
    jobs = judge_jobs(tribe, matchups, instructions, responses, judge_cfg=judge_cfg, mode=mode)
    if judge_cfg.mode == "sampled":
        raw = inference.generate_texts(tribe, [(j, ids) for _, _, _, j, ids in jobs], gen_cfg=judge_cfg, rng=rng,
                             batch_size=judge_cfg.batch_size, progress=progress)
        for (d, judge, side, _, _), text in zip(jobs, raw):
            verdicts.setdefault((d, judge), [None, None])[side] = text
        judges_of = lambda d, judge: JudgeRecord.from_raw(*verdicts[(d, judge)], keep_raw=judge_cfg.keep_raw)  # noqa: E731
    elif judge_cfg.mode == "logits":
        scores = logit_scores(tribe, [(j, ids) for _, _, _, j, ids in jobs], batch_size=judge_cfg.batch_size,
                              progress=progress)
        for (d, judge, side, _, _), score in zip(jobs, scores):
            verdicts.setdefault((d, judge), [None, None])[side] = float(score)
        judges_of = lambda d, judge: JudgeRecord(tuple(verdicts[(d, judge)]), None)  # noqa: E731
    else:
        raise ValueError(f"judge.mode must be 'sampled', 'logits' or 'verifier', got {judge_cfg.mode!r}")
    return _records(tribe, iteration, matchups, instructions, responses, judges_of)


def _records(tribe: Tribe, iteration: int, matchups, instructions, responses, judges_of) -> list[DuelRecord]:
    records = []
    for d, (m, text, pair) in enumerate(zip(matchups, instructions, responses)):
        judges = {judge: judges_of(d, judge) for judge in tribe.names if judge not in m.models}
        records.append(DuelRecord(iteration, m.index, text, tuple(m.models), tuple(pair), judges))
    return records
