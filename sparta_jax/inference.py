"""Tribe inference: what every part of the project asks of a tribe's models, batched.

Prompts in each member's own chat template (a mixed tribe's groups differ), generation of many
(member, prompt) jobs in fixed-size batches over the sampler with rows of every member mixed,
and judge scores of judge prompts in the judge mode (docs/algorithm.md §2.3: `logits`, the
expected score over "1".."10"; `sampled`, parsed text; `verifier`, the task's answer check).
Sparta's duels (combat.py), the baselines (methods/), evaluation, the audit and the experts use it.
"""
from __future__ import annotations

from typing import Callable, Sequence

import jax
import numpy as np

from sparta_jax import evaluation
from sparta_jax.sparta import (LOGIT_ASSISTANT_PREFIX, fit_around_response, fit_judge_prompt, logit_candidate_ids,
                               logit_expected_score)
from sparta_jax.tribe import MixedTribe, Tribe


def member_group(tribe: Tribe | MixedTribe, member: int | None) -> Tribe:
    """The group whose tokenizer and template member `member`'s prompts use; a one-group tribe
    needs no member, a mixed tribe always does (its groups' templates differ)."""
    if member is None:
        if isinstance(tribe, MixedTribe):
            raise ValueError("a mixed tribe's prompts depend on the member's group: pass member=")
        return tribe
    return tribe.group(member)


def prompts_by_group(tribe: Tribe | MixedTribe, members, make) -> dict:
    """{member: make(member)} for each of `members`, made once per group: a group's members share
    its tokenizer and template, so one member's prompts serve them all."""
    made, out = {}, {}
    for m in members:
        key = id(tribe.group(m))
        if key not in made:
            made[key] = make(m)
        out[m] = made[key]
    return out


def chat_text(tokenizer, system_prompt: str | None, user_text: str) -> str:
    """`user_text` as one user turn of `tokenizer`'s chat template, up to the assistant's header."""
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    messages.append({"role": "user", "content": user_text})
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def chat_ids(tribe: Tribe | MixedTribe, user_text: str, member: int | None = None) -> list[int]:
    """`user_text` as one user turn in member `member`'s chat template (its group's tokenizer)."""
    group = member_group(tribe, member)
    return group.tokenizer.encode(chat_text(group.tokenizer, group.system_prompt, user_text), add_special_tokens=False)


def fitted_chat_ids(tribe: Tribe | MixedTribe, make_user, response: str, *, max_tokens: int, mode: str,
                    member: int | None = None) -> list[int]:
    """The chat prompt of the user turn `make_user(response)`, fitted to max_tokens the way judge
    prompts are (docs/algorithm.md §2.3): `faithful` keeps the first tokens, `fixed` shortens `response` inside it."""
    group = member_group(tribe, member)
    wrap = lambda user: chat_text(group.tokenizer, group.system_prompt, user)  # noqa: E731
    return list(fit_around_response(make_user, response, group.tokenizer, max_tokens=max_tokens, mode=mode,
                                    wrap=wrap).ids)


def _in_batches(n: int, batch_size: int, order: Sequence[int]):
    for start in range(0, n, batch_size):
        yield list(order[start: start + batch_size])


def per_group(tribe: Tribe | MixedTribe, jobs: Sequence[tuple[int, list[int]]], run, rng=None):
    """Splits (global member index, prompt ids) jobs by group and calls run(group, local jobs,
    key) once per group with jobs: the group's own model, tokenizer and sampler programs. Returns
    (job indices, run's results) per group. One group keeps global indices (a judge tribe's -1,
    its base) and `rng` as they are; with several, group g's key is fold_in(rng, g)."""
    spans = tribe.spans()
    out = []
    for g, (group, offset) in enumerate(spans):
        rows = list(range(len(jobs))) if len(spans) == 1 else [
            i for i, (m, _) in enumerate(jobs) if offset <= m < offset + len(group.names)]
        if rows:
            key = rng if rng is None or len(spans) == 1 else jax.random.fold_in(rng, g)
            out.append((rows, run(group, [(jobs[i][0] - offset, jobs[i][1]) for i in rows], key)))
    return out


def generate_texts(tribe: Tribe | MixedTribe, jobs: Sequence[tuple[int, list[int]]], *, gen_cfg, rng,
                   batch_size: int, progress: Callable[[int], None] = lambda n: None) -> list[str]:
    """(member index, prompt ids) -> generated text, each group's rows in fixed-size batches sorted
    by prompt length."""
    out: list[str] = [""] * len(jobs)
    run = lambda group, local, key: _generate_group(group, local, gen_cfg=gen_cfg, rng=key,  # noqa: E731
                                                     batch_size=batch_size, progress=progress)
    for rows, texts in per_group(tribe, jobs, run, rng):
        for i, text in zip(rows, texts):
            out[i] = text
    return out


def _generate_group(tribe: Tribe, jobs, *, gen_cfg, rng, batch_size: int, progress) -> list[str]:
    """Static batches of `batch_size` rows; or, with `sampler.refill_rows` > 0, calls of
    `sampler.queue_batches` x batch_size prompts, each decoded by batch_size rows refilled as
    answers end (sparta_jax/sampling.py). Progress is reported after each call."""
    order = sorted(range(len(jobs)), key=lambda i: len(jobs[i][1]))
    out: list[str] = [""] * len(jobs)
    queued = tribe.sampler.config.refill_rows > 0
    per_call = batch_size * (tribe.sampler.config.queue_batches if queued else 1)
    for b, rows in enumerate(_in_batches(len(jobs), per_call, order)):
        result = tribe.sampler.generate(
            tribe.model, [jobs[i][1] for i in rows], rng=jax.random.fold_in(rng, b),
            adapter_ids=[jobs[i][0] for i in rows], temperature=gen_cfg.temperature, top_k=gen_cfg.top_k,
            top_p=gen_cfg.top_p, max_new_tokens=gen_cfg.max_new_tokens, rows=batch_size if queued else None)
        for i, text in zip(rows, result.texts):
            out[i] = text
        progress(len(rows))
    return out


def judge_prompt_ids(tribe: Tribe | MixedTribe, instruction: str, response: str, *, judge_cfg, mode: str,
                     member: int | None = None) -> list[int]:
    """Judge `member`'s chat prompt for one response (docs/algorithm.md §2.3), fitted to judge.max_prompt_tokens:
    the answer as text, in the judge's own template (another group's member wrote it in its own)."""
    group = member_group(tribe, member)
    return judge_chat_ids(group.tokenizer, group.system_prompt, instruction, response,
                          max_tokens=judge_cfg.max_prompt_tokens, mode=mode)


def judge_chat_ids(tokenizer, system_prompt: str | None, instruction: str, response: str, *, max_tokens: int,
                   mode: str) -> list[int]:
    """The judge prompt (docs/algorithm.md §2.3) as one user turn of `tokenizer`'s chat template,
    fitted to max_tokens."""
    wrap = lambda user: chat_text(tokenizer, system_prompt, user)  # noqa: E731
    return list(fit_judge_prompt(instruction, response, tokenizer, max_tokens=max_tokens, mode=mode, wrap=wrap).ids)


def single_scores(tribe: Tribe, jobs: Sequence[tuple[int, list[int]]], *, judge_cfg, rng,
                  progress=lambda n: None) -> np.ndarray:
    """(judge adapter index, judge prompt ids) -> score in 1..10 (nan when unparseable), per job."""
    if judge_cfg.mode == "logits":
        return logit_scores(tribe, jobs, batch_size=judge_cfg.batch_size, progress=progress)
    if judge_cfg.mode == "sampled":
        from sparta_jax.sparta import parse_score

        raw = generate_texts(tribe, jobs, gen_cfg=judge_cfg, rng=rng, batch_size=judge_cfg.batch_size,
                             progress=progress)
        return np.array([np.nan if (s := parse_score(text)) is None else float(s) for text in raw])
    if judge_cfg.mode == "verifier":
        raise ValueError("judge.mode='verifier' scores answers against references; open-ended (\"judged\") "
                         "evaluation items have none: use 'logits' or 'sampled' judges, or a verifiable split")
    raise ValueError(f"judge.mode must be 'sampled', 'logits' or 'verifier', got {judge_cfg.mode!r}")


VERIFIER_SCORES = (1.0, 10.0)  # judge.mode="verifier": a wrong answer's score, a right one's


def verifier_score(response: str, reference) -> float:
    """The verifier control's score: 10 for an answer the task's evaluator accepts, 1 otherwise."""
    if reference is None or reference.get("answer") is None or reference.get("evaluator") is None:
        raise ValueError("judge.mode='verifier' needs instructions with an answer and an evaluator; "
                         f"this one has none: {reference!r:.200}")
    return VERIFIER_SCORES[evaluation.score(response, reference["answer"], reference["evaluator"]) == 1.0]


def logit_scores(tribe: Tribe | MixedTribe, jobs: Sequence[tuple[int, list[int]]], *, batch_size: int,
                 progress=lambda n: None) -> np.ndarray:
    """The `logits` judge (docs/algorithm.md §2.3): expected score over "1".."10" after `{"score": `, per job, each
    candidate the probability that the judge writes exactly that number (no digit follows); each
    group over its own tokenizer's number tokens."""
    out = np.zeros(len(jobs))
    run = lambda group, local, _: _group_logit_scores(group, local, batch_size, progress)  # noqa: E731
    for rows, scores in per_group(tribe, jobs, run):
        out[rows] = scores
    return out


def _group_logit_scores(tribe: Tribe, jobs, batch_size: int, progress) -> np.ndarray:
    prefix = tribe.tokenizer.encode(LOGIT_ASSISTANT_PREFIX, add_special_tokens=False)
    candidates = logit_candidate_ids(tribe.tokenizer)
    order = sorted(range(len(jobs)), key=lambda i: len(jobs[i][1]))
    out = np.zeros(len(jobs))
    for rows in _in_batches(len(jobs), batch_size, order):
        logliks = tribe.sampler.candidate_logprobs(tribe.model, [jobs[i][1] + prefix for i in rows], candidates,
                                                   adapter_ids=[jobs[i][0] for i in rows],
                                                   continuation_ids=tribe.number_token_ids)
        _, expected = logit_expected_score(logliks)
        out[rows] = expected
        progress(len(rows))
    return out
