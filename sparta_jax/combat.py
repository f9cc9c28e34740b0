"""Duels and judgments of one iteration (docs/algorithm.md §2.2, §2.3), batched whole.

All answers of an iteration go through the sampler in fixed-size batches, rows of every
member mixed; then all judge prompts do. Nothing here waits on a reputation update.
"""
from __future__ import annotations

from typing import Callable, Sequence

import jax
import numpy as np

from sparta_jax import evaluation
from sparta_jax.sparta import (DuelRecord, JudgeRecord, LOGIT_ASSISTANT_PREFIX, Matchup, fit_around_response,
                               fit_judge_prompt, logit_candidate_ids, logit_expected_score)
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
    order = sorted(range(len(jobs)), key=lambda i: len(jobs[i][1]))
    out: list[str] = [""] * len(jobs)
    for b, rows in enumerate(_in_batches(len(jobs), batch_size, order)):
        result = tribe.sampler.generate(
            tribe.model, [jobs[i][1] for i in rows], rng=jax.random.fold_in(rng, b),
            adapter_ids=[jobs[i][0] for i in rows], temperature=gen_cfg.temperature, top_k=gen_cfg.top_k,
            top_p=gen_cfg.top_p, max_new_tokens=gen_cfg.max_new_tokens)
        for i, text in zip(rows, result.texts):
            out[i] = text
        progress(len(rows))
    return out


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
    texts = generate_texts(tribe, jobs, gen_cfg=gen_cfg, rng=rng, batch_size=gen_cfg.batch_size, progress=progress)
    return [tuple(texts[where[(name, text)]] for name in m.models) for m, text in zip(matchups, instructions)]


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
        raw = generate_texts(tribe, [(j, ids) for _, _, _, j, ids in jobs], gen_cfg=judge_cfg, rng=rng,
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

