"""The LLM-as-a-judge of Self-Rewarding (Yuan et al., 2024), which Meta-Rewarding (Wu et al.,
2024) keeps: an additive 5-point rubric, one point for each criterion an answer meets, the
judge reasoning first and closing with "Score: <points>". The wording below is ours, written
from the paper's description of the five criteria.

Scores follow `judge.mode`:
- `sampled` (the papers' way): `judgments` sampled judgments per answer, each parsed for its
  points; an answer's score is the mean of the parsed ones (nan when none parsed).
- `logits`: the expected points over "0".."5" after the forced assistant prefix "Score: ",
  each candidate the probability that the judge writes exactly that number (one forward pass).
"""
from __future__ import annotations

import re
from typing import Sequence

import numpy as np

from sparta_jax import inference
from sparta_jax.sparta.judging import logit_candidate_ids, logit_expected_score

RUBRIC_PROMPT = (
    "Rate the answer below to the user's request on a scale from 0 to 5, built up one point at a time. "
    "Start from 0 and award:\n"
    "- 1 point if the answer is on topic and offers something relevant to the request, even if it is incomplete "
    "or carries some unrelated material;\n"
    "- 1 more point if it covers a large part of what was asked without settling it fully;\n"
    "- 1 more point if it settles the core of the request in a useful way, even if an expert would do better;\n"
    "- 1 more point if it answers the request directly and completely, is well organised and written as a "
    "helpful assistant would write it, with at most small flaws;\n"
    "- 1 more point if it could hardly be better: precise, expert, focused on the request and free of padding.\n\n"
    "Request: {instruction}\nAnswer: {response}\n\n"
    "Explain the points you award in a few sentences (under 100 words), then finish with a line of the form "
    "\"Score: <points>\".")
RUBRIC_ASSISTANT_PREFIX = "Score: "
RUBRIC_POINTS = tuple(str(p) for p in range(6))
_SCORE = re.compile(r"score\s*:\s*\**\s*(\d+)", re.IGNORECASE)


def rubric_prompt(instruction: str, response: str) -> str:
    return RUBRIC_PROMPT.format(instruction=instruction, response=response)


def parse_points(text: str | None) -> int | None:
    """The points of a judgment: the number after its last "Score:", if it lies in 0..5."""
    found = _SCORE.findall(text or "")
    if not found:
        return None
    points = int(found[-1])
    return points if 0 <= points <= 5 else None


def mean_points(points: Sequence[int | None]) -> float:
    """An answer's score from its judgments' points: their mean over the parsed ones (nan if none)."""
    parsed = [p for p in points if p is not None]
    return float(np.mean(parsed)) if parsed else float("nan")


def rubric_prompt_ids(judge, instruction: str, response: str, *, max_tokens: int, mode: str) -> list[int]:
    """The rubric judge's chat prompt for one answer, cut as a judge prompt is (the answer
    shortened inside it in `fixed`, its first tokens kept in `faithful`)."""
    return inference.fitted_chat_ids(judge, lambda r: rubric_prompt(instruction, r), response, max_tokens=max_tokens,
                                  mode=mode)


def sample_judgments(judge, prompts: Sequence[list[int]], k: int, *, judge_cfg, rng, adapter: int = 0,
                     progress=lambda n: None) -> list[list[str]]:
    """k sampled judgments of each prompt (the judge's own words)."""
    jobs = [(adapter, ids) for ids in prompts for _ in range(k)]
    texts = inference.generate_texts(judge, jobs, gen_cfg=judge_cfg, rng=rng, batch_size=judge_cfg.batch_size,
                                  progress=progress)
    return [texts[i * k: (i + 1) * k] for i in range(len(prompts))]


def logit_points(judge, prompts: Sequence[list[int]], *, batch_size: int, adapter: int = 0,
                 progress=lambda n: None) -> np.ndarray:
    """Expected points of each prompt's answer over "0".."5" after "Score: " (the `logits` mode)."""
    prefix = judge.tokenizer.encode(RUBRIC_ASSISTANT_PREFIX, add_special_tokens=False)
    candidates = logit_candidate_ids(judge.tokenizer, RUBRIC_ASSISTANT_PREFIX, RUBRIC_POINTS)
    out = np.zeros(len(prompts))
    for start in range(0, len(prompts), batch_size):
        rows = list(range(start, min(start + batch_size, len(prompts))))
        logliks = judge.sampler.candidate_logprobs(judge.model, [list(prompts[i]) + prefix for i in rows], candidates,
                                                   adapter_ids=[adapter] * len(rows),
                                                   continuation_ids=judge.number_token_ids)
        out[rows] = logit_expected_score(logliks, values=np.arange(len(RUBRIC_POINTS)))[1]
        progress(len(rows))
    return out
