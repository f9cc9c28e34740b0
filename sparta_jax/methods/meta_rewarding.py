"""Meta-Rewarding (Wu et al., 2024): Self-Rewarding, plus the model judges its own judgments.

Per instruction the model writes `samples` answers and `judgments` sampled judgments of each
answer with Self-Rewarding's additive 5-point rubric (methods.rubric). An answer's score follows
`judge.mode`: `sampled` the mean of its judgments' parsed points, `logits` its expected points.
Actor pairs, with the paper's length control: with S_max and S_min the best and worst scores and
`length_tier` = rho in [0, 0.5), the chosen answer is the SHORTEST of those scoring at least
(1 - rho) S_max + rho S_min, the rejected the LONGEST of those scoring at most (1 - rho) S_min +
rho S_max (length in characters); rho = 0 picks among the top and bottom scores only. Then, as
meta-judge, the model compares every two distinct judgments of one answer, in both orders
(position bias cancels), and each judgment's wins rank them: judge pairs are the most-winning
judgment over the least, with the rubric prompt as the instruction. Both kinds of pair train in
the same DPO step.

The meta-judge answers in the judge mode: `logits` compares the probabilities of "1" and "2"
after "Better judgment: Judgment "; `sampled` writes text, parsed for "Judgment 1" / "2".
Our reading of Wu et al.'s settings: 7 answers and 3 judgments per answer; rho = 0.2 is our
default (the value is a tunable of theirs).
"""
from __future__ import annotations

import itertools
import re
from typing import Sequence

import numpy as np

from sparta_jax import inference
from sparta_jax.methods import rubric
from sparta_jax.methods.common import ACTOR, best_and_worst, fold, json_scores, sample_answers

DEFAULTS = dict(samples=7, judgments=3, length_tier=0.2)


def jobs_per_instruction(cfg) -> int:
    """Answers and judgments (the meta-judge's battles are counted apart)."""
    return cfg.samples * (1 + cfg.judgments)

META_PROMPT = (
    "Review the user's question and the corresponding response, along with two judgments of that "
    "response. Decide which judgment evaluates the response more accurately: is the response correct, "
    "helpful and complete, and does the score reflect that?\n\n"
    "User question: {instruction}\nResponse: {response}\n\nJudgment 1: {first}\n\nJudgment 2: {second}\n\n"
    "Answer with \"Judgment 1\" or \"Judgment 2\" only.")
META_ASSISTANT_PREFIX = "Better judgment: Judgment "
_META_ANSWER = re.compile(r"judgment\s*([12])\b", re.IGNORECASE)


def parse_meta_verdict(text: str) -> int | None:
    """0 for "Judgment 1", 1 for "Judgment 2", None when the text names neither."""
    match = _META_ANSWER.search(text or "")
    return None if match is None else int(match.group(1)) - 1


def judgment_pair(prompt: str, judgments: Sequence[str], battles: Sequence[tuple[int, int, int | None]]):
    """The judge-pair record of one answer from its meta-judge battles (i, j, winner): the
    judgment with most wins over the one with fewest; None on a tie or identical texts."""
    if not battles:
        return None
    wins = np.zeros(len(judgments))
    seen = np.zeros(len(judgments), bool)
    for i, j, winner in battles:
        seen[[i, j]] = True
        if winner is not None:
            wins[winner] += 1
    scores = [w if s else np.nan for w, s in zip(wins, seen)]
    picked = best_and_worst(scores)
    if picked is None or judgments[picked[0]] == judgments[picked[1]]:
        return None
    hi, lo = picked
    return {"instruction": prompt, "chosen": judgments[hi], "rejected": judgments[lo],
            "chosen_wins": float(wins[hi]), "rejected_wins": float(wins[lo]), "kind": "judgment"}


def length_controlled_pair(instruction: str, answers: Sequence[str], scores: Sequence[float], rho: float):
    """The actor pair of one instruction under the length control (module docstring): the shortest
    top-tier answer over the longest bottom-tier one, with both scores; None when fewer than two
    scores parsed, all tie, or the two texts are the same."""
    if not 0.0 <= rho < 0.5:
        raise ValueError(f"methods.meta_rewarding.length_tier must be in [0, 0.5), got {rho}")
    valid = [i for i, s in enumerate(scores) if not np.isnan(s)]
    if len(valid) < 2:
        return None
    top, bottom = max(scores[i] for i in valid), min(scores[i] for i in valid)
    if top == bottom:
        return None
    high = [i for i in valid if scores[i] >= (1 - rho) * top + rho * bottom]
    low = [i for i in valid if scores[i] <= (1 - rho) * bottom + rho * top]
    chosen = min(high, key=lambda i: (len(answers[i]), -scores[i]))  # shortest; then the higher score
    rejected = max(low, key=lambda i: (len(answers[i]), -scores[i]))  # longest; then the lower score
    if answers[chosen] == answers[rejected]:
        return None
    return {"instruction": instruction, "chosen": answers[chosen], "rejected": answers[rejected],
            "chosen_score": scores[chosen], "rejected_score": scores[rejected], "kind": "answer"}


def make_pairs(config, tribe, instructions: Sequence[dict], *, rng, judge=None, progress=lambda n: None):
    cfg, judge_cfg = config.methods.meta_rewarding, config.judge
    if judge_cfg.mode == "verifier":
        raise ValueError("method 'meta_rewarding' judges in words; judge.mode='verifier' writes no judgments")
    texts = [r["instruction"] for r in instructions]
    answers = sample_answers(tribe, texts, cfg.samples, gen_cfg=config.generation, rng=fold(rng, 0),
                             progress=progress)
    # judgments[q][a][n]: the n-th sampled judgment of answer a of instruction q (the meta-judge reads them)
    prompts = [rubric.rubric_prompt_ids(tribe, t, a, max_tokens=judge_cfg.max_prompt_tokens, mode=config.mode)
               for t, row in zip(texts, answers) for a in row]
    flat = iter(rubric.sample_judgments(tribe, prompts, cfg.judgments, judge_cfg=judge_cfg, rng=fold(rng, 1),
                                        adapter=ACTOR, progress=progress))
    judgments = [[next(flat) for _ in row] for row in answers]
    if judge_cfg.mode == "logits":  # the actor's scores follow the judge mode, as every method's do
        points = iter(rubric.logit_points(tribe, prompts, batch_size=judge_cfg.batch_size, adapter=ACTOR))
        scores = [[float(next(points)) for _ in row] for row in answers]
    else:
        scores = [[rubric.mean_points([rubric.parse_points(j) for j in js]) for js in row] for row in judgments]

    battles = []  # (q, a, i, j, first, second): judgment `first` shown as Judgment 1
    for q, row in enumerate(judgments):
        for a, js in enumerate(row):
            for i, j in itertools.combinations(range(len(js)), 2):
                if js[i] != js[j]:
                    battles += [(q, a, i, j, i, j), (q, a, i, j, j, i)]
    verdicts = meta_verdicts(config, tribe, texts, answers, judgments, battles, rng=fold(rng, 2))

    outcomes: dict[tuple[int, int], list] = {}  # (q, a) -> [(i, j, winning judgment or None)]
    for (q, a, i, j, first, second), v in zip(battles, verdicts):
        outcomes.setdefault((q, a), []).append((i, j, None if v is None else (first, second)[v]))
    records, rows = [], []
    for q, text in enumerate(texts):
        pair = length_controlled_pair(text, answers[q], scores[q], cfg.length_tier)
        if pair:
            records.append(pair)
        for a, answer in enumerate(answers[q]):
            jp = judgment_pair(rubric.rubric_prompt(text, answer), judgments[q][a], outcomes.get((q, a), []))
            if jp:
                records.append(jp)
        rows.append({"instruction": text, "answers": answers[q], "scores": json_scores(scores[q]),
                     "judgments": judgments[q]})
    info = {"unparsed_scores": int(sum(np.isnan(s) for row in scores for s in row)),
            "meta_battles": len(battles), "meta_unparsed": sum(v is None for v in verdicts),
            "judge_pairs": sum(r["kind"] == "judgment" for r in records)}
    return records, rows, info


def meta_prompt_ids(tribe, instruction: str, response: str, first: str, second: str, *, max_tokens: int,
                    mode: str) -> list[int]:
    """The meta-judge's chat prompt, cut as a judge prompt is: from the end (`faithful`), or by
    shortening the response inside it (`fixed`); the template's head and system turn stay."""
    make = lambda r: META_PROMPT.format(instruction=instruction, response=r, first=first, second=second)  # noqa: E731
    return inference.fitted_chat_ids(tribe, make, response, max_tokens=max_tokens, mode=mode)


def meta_verdicts(config, tribe, texts, answers, judgments, battles, *, rng) -> list[int | None]:
    """Each battle's verdict: 0 (the judgment shown first is better), 1, or None (unparsed)."""
    if not battles:
        return []
    judge_cfg = config.judge
    prompts = [meta_prompt_ids(tribe, texts[q], answers[q][a], judgments[q][a][first], judgments[q][a][second],
                               max_tokens=judge_cfg.max_prompt_tokens, mode=config.mode)
               for q, a, _, _, first, second in battles]
    if judge_cfg.mode == "logits":
        prefix = tribe.tokenizer.encode(META_ASSISTANT_PREFIX, add_special_tokens=False)
        candidates = [tribe.tokenizer.encode(d, add_special_tokens=False) for d in ("1", "2")]
        out = []
        for start in range(0, len(prompts), judge_cfg.batch_size):
            rows = prompts[start: start + judge_cfg.batch_size]
            logliks = tribe.sampler.candidate_logprobs(tribe.model, [p + prefix for p in rows], candidates,
                                                       adapter_ids=[ACTOR] * len(rows),
                                                       continuation_ids=tribe.number_token_ids)
            out += [int(np.argmax(row)) for row in np.asarray(logliks)]
        return out
    texts_out = inference.generate_texts(tribe, [(ACTOR, p) for p in prompts], gen_cfg=judge_cfg, rng=rng,
                                      batch_size=judge_cfg.batch_size)
    return [parse_meta_verdict(t) for t in texts_out]
