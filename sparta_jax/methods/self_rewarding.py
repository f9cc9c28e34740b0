"""Self-Rewarding (Yuan et al., 2024): the model answers each instruction `samples` times,
judges each answer itself with the additive 5-point rubric (methods.rubric), and trains on
(highest, lowest) score.

As in the paper: 4 answers, each scored by the mean of 3 sampled judgments (`judge.mode =
"sampled"`). `logits` scores each answer once by its expected points; `verifier` (the control)
by the task's answer check. `prompt="sparta"` keeps the variant this project ran before: the
Sparta judge prompt (1-10), one judgment per answer.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from sparta_jax.methods import rubric
from sparta_jax.methods.common import ACTOR, best_and_worst, fold, json_scores, sample_and_score, sample_answers

DEFAULTS = dict(samples=4, judgments=3, prompt="rubric")
PROMPTS = ("rubric", "sparta")


def jobs_per_instruction(cfg) -> int:
    """Answers, then judgments (sampled rubric) or scores."""
    return cfg.samples * (1 + (cfg.judgments if cfg.get("prompt", "rubric") == "rubric" else 1))


def pair_from_scores(instruction: str, answers: Sequence[str], scores: Sequence[float]) -> dict | None:
    """The preference record of one instruction: its best-scored answer over its worst; None on
    ties (all equal, or fewer than two parseable scores) and on identical texts."""
    picked = best_and_worst(scores)
    if picked is None or answers[picked[0]] == answers[picked[1]]:
        return None
    hi, lo = picked
    return {"instruction": instruction, "chosen": answers[hi], "rejected": answers[lo],
            "chosen_score": scores[hi], "rejected_score": scores[lo], "kind": "answer"}


def rubric_scores(config, judge, texts: Sequence[str], answers: Sequence[Sequence[str]], k: int, *, rng,
                  progress=lambda n: None) -> tuple[list[list[float]], list[list[list[str]]] | None]:
    """(each answer's rubric score in the judge mode, the sampled judgments [q][a][k] or None in
    `logits` mode)."""
    judge_cfg = config.judge
    prompts = [rubric.rubric_prompt_ids(judge, t, a, max_tokens=judge_cfg.max_prompt_tokens, mode=config.mode)
               for t, row in zip(texts, answers) for a in row]
    sizes = [len(row) for row in answers]
    if judge_cfg.mode == "logits":
        flat = rubric.logit_points(judge, prompts, batch_size=judge_cfg.batch_size, adapter=ACTOR, progress=progress)
        return _unflatten([float(x) for x in flat], sizes), None
    judged = rubric.sample_judgments(judge, prompts, k, judge_cfg=judge_cfg, rng=rng, adapter=ACTOR, progress=progress)
    scores = [rubric.mean_points([rubric.parse_points(j) for j in js]) for js in judged]
    return _unflatten(scores, sizes), _unflatten(judged, sizes)


def _unflatten(flat: list, sizes: Sequence[int]) -> list[list]:
    out, i = [], 0
    for n in sizes:
        out.append(flat[i: i + n])
        i += n
    return out


def make_pairs(config, tribe, instructions: Sequence[dict], *, rng, judge=None, progress=lambda n: None):
    """(preference records, candidate rows for candidates.jsonl, info)."""
    cfg = config.methods.self_rewarding
    judgments = None
    if cfg.get("prompt", "rubric") == "sparta" or config.judge.mode == "verifier":
        texts, answers, scores = sample_and_score(config, tribe, instructions, cfg.samples, rng=rng, judge=judge,
                                                  progress=progress)
    else:
        texts = [r["instruction"] for r in instructions]
        answers = sample_answers(tribe, texts, cfg.samples, gen_cfg=config.generation, rng=fold(rng, 0),
                                 progress=progress)
        scores, judgments = rubric_scores(config, judge or tribe, texts, answers, cfg.judgments, rng=fold(rng, 1),
                                          progress=progress)
    records = [p for p in (pair_from_scores(t, a, s) for t, a, s in zip(texts, answers, scores)) if p]
    rows = [{"instruction": t, "answers": a, "scores": json_scores(s)} for t, a, s in zip(texts, answers, scores)]
    if judgments is not None:
        for row, js in zip(rows, judgments):
            row["judgments"] = js
    return records, rows, {"unparsed_scores": int(sum(np.isnan(x) for row in scores for x in row))}
