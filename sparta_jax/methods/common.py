"""What the baselines share: K answers per instruction from the one model, and its own scores
of them through the Sparta judge prompt (docs/algorithm.md §2.3) in the configured judge mode."""
from __future__ import annotations

from typing import Sequence

import jax
import numpy as np

from sparta_jax import inference
from sparta_jax.tribe import Tribe

ACTOR = 0  # a baseline's tribe holds one member, the actor (and its own judge)


def sample_answers(tribe: Tribe, instructions: Sequence[str], k: int, *, gen_cfg, rng,
                   progress=lambda n: None) -> list[list[str]]:
    """k sampled answers per instruction (prompts cut to max_prompt_tokens, as in the duels)."""
    prompts = [inference.chat_ids(tribe, text)[: gen_cfg.max_prompt_tokens] for text in instructions]
    jobs = [(ACTOR, ids) for ids in prompts for _ in range(k)]
    texts = inference.generate_texts(tribe, jobs, gen_cfg=gen_cfg, rng=rng, batch_size=gen_cfg.batch_size,
                                  progress=progress)
    return [texts[i * k: (i + 1) * k] for i in range(len(instructions))]


def score_answers(judge: Tribe, instructions: Sequence[str], answers: Sequence[Sequence[str]], *, judge_cfg,
                  mode: str, rng, references=None, progress=lambda n: None) -> list[list[float]]:
    """Each answer's score in 1..10 (nan when unparseable) by `judge`'s first member.

    judge.mode="verifier" is the control: the task's answer check instead of a judge."""
    if judge_cfg.mode == "verifier":
        if references is None:
            raise ValueError("judge.mode='verifier' needs the instructions' reference answers")
        progress(sum(len(a) for a in answers))
        return [[inference.verifier_score(a, ref) for a in row] for row, ref in zip(answers, references)]
    jobs = [(ACTOR, inference.judge_prompt_ids(judge, text, a, judge_cfg=judge_cfg, mode=mode))
            for text, row in zip(instructions, answers) for a in row]
    flat = inference.single_scores(judge, jobs, judge_cfg=judge_cfg, rng=rng, progress=progress)
    out, i = [], 0
    for row in answers:
        out.append([float(x) for x in flat[i: i + len(row)]])
        i += len(row)
    return out


def sample_and_score(config, tribe: Tribe, instructions: Sequence[dict], k: int, *, rng, judge: Tribe | None = None,
                     progress=lambda n: None) -> tuple[list[str], list[list[str]], list[list[float]]]:
    """(instruction texts, k answers each, their scores by `judge`, by default the model itself):
    what Self-Rewarding and SPPO start from."""
    texts = [r["instruction"] for r in instructions]
    answers = sample_answers(tribe, texts, k, gen_cfg=config.generation, rng=fold(rng, 0), progress=progress)
    scores = score_answers(judge or tribe, texts, answers, judge_cfg=config.judge, mode=config.mode,
                           rng=fold(rng, 1), references=instructions, progress=progress)
    return texts, answers, scores


def best_and_worst(scores: Sequence[float]) -> tuple[int, int] | None:
    """Indices of the highest and lowest parsed score (first of equals), or None when fewer than
    two scores parsed or all parsed scores tie (nothing to prefer)."""
    valid = [i for i, s in enumerate(scores) if not np.isnan(s)]
    if len(valid) < 2:
        return None
    hi = max(valid, key=lambda i: scores[i])
    lo = min(valid, key=lambda i: scores[i])
    return None if scores[hi] == scores[lo] else (hi, lo)


def fold(rng, index: int):
    return jax.random.fold_in(rng, index)


def json_scores(scores: Sequence[float]) -> list:
    """Scores for a JSON file: nan (unparseable) as null."""
    return [None if np.isnan(s) else float(s) for s in scores]
