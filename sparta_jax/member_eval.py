"""Evaluating every member on held-out items (docs/algorithm.md §2.7).

Each member answers the dev items greedily through the sampler (all members' rows in the same
batches); the best member by dev score is the one to report, with its test score. With
`test_all_members` every member is also scored on test (costlier, useful for the report).

Two kinds of split:
- verifiable: every item has an answer and a text evaluator (`sparta_jax.evaluation`); the
  score is the accuracy with a Wilson 95% interval.
- judged (every item's evaluator is "judged"; open-ended, no answer needed): each answer is
  scored 1..10 with the Sparta judge prompt, in the run's judge mode, by the tribe (every
  member but the one that answered, averaged), by a named judge model, or by a panel held
  frozen (a baseline's one trained model: the rest of the initial tribe). The split's
  "accuracy" is then the mean score rescaled to [0, 1], (s - 1) / 9, with a normal-approximation
  95% interval; "mean_score" keeps the 1..10 mean, and "n_unparsed" counts answers no judge
  scored (they count as 0). An answer nobody may judge, or a split on which no judge scored
  a single answer, is an EvaluationError, never an accuracy of 0.
- likelihood (every item's evaluator is "likelihood_mc", with valid MC targets: TruthfulQA's MC
  questions): nothing is generated. Each member scores every option by its summed log-probability
  as the continuation " <option>" after the item's raw text "Q: ...\nA:" (no chat template:
  TruthfulQA's MC protocol, and the prompt `python -m sparta_jax.score --dump` writes, so other
  implementations' numbers compare), one batched forward pass per batch of options
  (`continuation_logprobs`). The split's accuracy is MC1 with a Wilson 95% interval; MC2 and its
  interval are kept beside it ("mc2", "mc2_ci95", "mc2_scores").
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np

from sparta_jax import evaluation, inference
from sparta_jax.errors import SpartaError
from sparta_jax.metrics import Progress
from sparta_jax.tribe import Tribe

JUDGED = "judged"
LIKELIHOOD = "likelihood"
SUMMARY_KEYS = ("accuracy", "n", "n_correct", "n_unparsed", "ci95")


class EvaluationError(SpartaError, ValueError):
    """A split that cannot be scored as configured (e.g. open-ended answers with no one to judge them)."""


@dataclasses.dataclass(frozen=True)
class Panel:
    """Judges from outside the evaluated tribe: `members` of `tribe` (-1: its base model alone,
    a named judge model)."""
    tribe: Tribe
    members: tuple[int, ...] = (-1,)


def split_kind(records: Sequence[dict]) -> str | None:
    """"judged", "verifiable", "likelihood", or None when the split cannot be scored (a mix, or
    items without answers or MC targets)."""
    if records and all(r.get("evaluator") == JUDGED for r in records):
        return JUDGED
    if records and all(r.get("evaluator") == evaluation.LIKELIHOOD
                       and evaluation.reference_status(r) == evaluation.REFERENCE_OK for r in records):
        return LIKELIHOOD
    if records and all(r.get("answer") is not None and r.get("evaluator") in evaluation.EVALUATORS for r in records):
        return "verifiable"
    return None


def answers(tribe: Tribe, members: Sequence[int], records: Sequence[dict], eval_cfg, rng, progress) -> list[list[str]]:
    """answers[k][i]: member members[k]'s greedy answer to records[i]."""
    prompts = inference.prompts_by_group(tribe, members, lambda m: [  # each in the member's own template
        inference.chat_ids(tribe, r["instruction"], m)[: eval_cfg.max_prompt_tokens] for r in records])
    jobs = [(m, p) for m in members for p in prompts[m]]
    texts = inference.generate_texts(tribe, jobs, gen_cfg=eval_cfg, rng=rng, batch_size=eval_cfg.batch_size,
                                  progress=progress)
    return [texts[k * len(records):(k + 1) * len(records)] for k in range(len(members))]


def continuation_logprobs(tribe: Tribe, jobs: Sequence[tuple[int, tuple[list[int], list[int]]]],
                          batch_size: int) -> np.ndarray:
    """log p(continuation | prompt) summed over the continuation's tokens, for (member, (prompt ids,
    continuation ids)) jobs: batches of rows of every member (each row its own adapter, or its
    member of a full-parameter stack), shortest first, each group of a mixed tribe in its own
    programs. One forward pass per batch (`Sampler.score_continuations`), no generation."""
    out = np.zeros(len(jobs))
    run = lambda group, local, _: _group_logprobs(group, local, batch_size)  # noqa: E731
    for rows, values in inference.per_group(tribe, jobs, run):
        out[rows] = values
    return out


def _group_logprobs(group: Tribe, jobs, batch_size: int) -> np.ndarray:
    order = sorted(range(len(jobs)), key=lambda i: len(jobs[i][1][0]) + len(jobs[i][1][1]))
    out = np.zeros(len(jobs))
    for start in range(0, len(jobs), batch_size):
        rows = order[start: start + batch_size]
        out[rows] = group.sampler.score_continuations(
            group.model, [jobs[i][1][0] for i in rows], [jobs[i][1][1] for i in rows],
            adapter_ids=[jobs[i][0] for i in rows])
    return out


def option_logprobs(tribe: Tribe, members: Sequence[int], records: Sequence[dict], batch_size: int,
                    progress) -> list[list[dict]]:
    """out[k][i] = {"mc1": [...], "mc2": [...]}: member members[k]'s summed log-probability of each
    MC option of records[i] (`evaluation.mc_continuations`) after the record's raw text (module
    docstring). An option listed in both mc1 and mc2 is scored once."""
    texts = [evaluation.mc_continuations(r) for r in records]
    options = [sorted({o for key in ("mc1", "mc2") for o in t[key]}) for t in texts]
    jobs, where = [], {}
    for m in members:
        tokenizer = tribe.group(m).tokenizer
        for i, r in enumerate(records):
            prompt = tokenizer.encode(r["instruction"])  # its own special tokens (Gemma's BOS)
            for option in options[i]:
                where[m, i, option] = len(jobs)
                jobs.append((m, (prompt, tokenizer.encode(option, add_special_tokens=False))))
    logps = continuation_logprobs(tribe, jobs, batch_size)
    progress(len(members) * len(records))
    return [[{key: [float(logps[where[m, i, o]]) for o in texts[i][key]] for key in ("mc1", "mc2")}
             for i in range(len(records))] for m in members]


def likelihood_summary(result: dict) -> dict:
    """A likelihood split's summary (evaluation.evaluate_likelihood's result): MC1 as the accuracy,
    MC2 beside it."""
    out = {k: result[k] for k in ("accuracy", "n", "n_correct")}
    out.update(n_unparsed=0, ci95=list(result["ci95"]), scores=[int(s) for s in result["scores"]],
               mc2=result["mc2"], mc2_ci95=list(result["mc2_ci95"]), mc2_scores=list(result["mc2_scores"]))
    return out


def member_outputs(tribe: Tribe, members: Sequence[int], records: Sequence[dict], eval_cfg, rng, progress) -> list:
    """outputs[k][i]: member members[k]'s greedy answer to records[i], or on a likelihood split its
    options' log-probabilities."""
    if split_kind(records) == LIKELIHOOD:
        return option_logprobs(tribe, members, records, eval_cfg.batch_size, progress)
    return answers(tribe, members, records, eval_cfg, rng, progress)


def example(record: dict, output) -> dict:
    """A test item and the best member's output, for the evaluation's examples: on a likelihood
    split the MC1 option it scored highest, beside the true one."""
    if split_kind([record]) != LIKELIHOOD:
        return {"instruction": record["instruction"], "answer": record.get("answer"), "best_member_output": output}
    choices, labels = record["mc1_targets"]["choices"], record["mc1_targets"]["labels"]
    best = max(range(len(choices)), key=lambda j: (output["mc1"][j], -j))  # mc1_score's argmax
    return {"instruction": record["instruction"], "answer": choices[labels.index(1)],
            "best_member_output": choices[best]}


def summarize(result: dict, texts: Sequence[str]) -> dict:
    """A verifiable split's summary, with the per-item 0/1 scores (for paired tests between
    evaluations of the same items) and the mean answer length in characters (a gain that only
    comes from answering within the token budget shows there)."""
    out = {k: result[k] for k in SUMMARY_KEYS}
    out["ci95"] = list(out["ci95"])
    out["scores"] = [int(s) for s in result["scores"]]
    out["mean_answer_chars"] = float(np.mean([len(t) for t in texts])) if len(texts) else 0.0
    return out


def judged_summary(scores: Sequence[float]) -> dict:
    """Per-answer judge scores (1..10, nan = unscored) -> the split's summary (module docstring)."""
    s = np.asarray(scores, np.float64)
    unscored = np.isnan(s)
    x = np.where(unscored, 0.0, (s - 1.0) / 9.0)
    n = len(x)
    mean = float(np.mean(x)) if n else 0.0
    half = 1.96 * float(np.std(x, ddof=1)) / math.sqrt(n) if n > 1 else 1.0
    return {"accuracy": mean, "n": n, "n_correct": None, "n_unparsed": int(unscored.sum()),
            "ci95": [max(0.0, mean - half), min(1.0, mean + half)],
            "mean_score": float(np.nanmean(s)) if (~unscored).any() else None}


class TribeScorer:
    """Scores members' answers on a split, by the text evaluators or by judges."""

    def __init__(self, tribe: Tribe, *, judges: Panel | None = None, judge_cfg=None, mode: str = "faithful",
                 rng=None, label: str = "evaluation judging"):
        """judges: None for the tribe's own (each answer by every other member), or a Panel."""
        self.tribe, self.judges, self.judge_cfg, self.mode, self.rng = tribe, judges, judge_cfg, mode, rng
        self.label = label

    def score(self, members: Sequence[int], records: Sequence[dict], texts: Sequence[Sequence[str]]) -> list[dict]:
        """texts[k][i]: member members[k]'s answer to records[i] (on a likelihood split, its
        options' log-probabilities: `option_logprobs`) -> one summary per member."""
        kind = split_kind(records)
        if kind == JUDGED:
            return [judged_summary(s) for s in self.judge_scores(members, records, texts)]
        if kind == LIKELIHOOD:
            return [likelihood_summary(evaluation.evaluate_likelihood(t, records)) for t in texts]
        return [summarize(evaluation.evaluate(t, records), t) for t in texts]

    def judges_of(self, member: int) -> list[int]:
        if self.judges is not None:
            return list(self.judges.members)
        return [j for j in range(len(self.tribe.names)) if j != member]

    def judge_scores(self, members, records, texts) -> np.ndarray:
        """[members, items] mean judge score of each answer."""
        judge = self.tribe if self.judges is None else self.judges.tribe
        jobs, owner = [], []
        for k, m in enumerate(members):
            judges = self.judges_of(m)
            if not judges:
                raise EvaluationError(
                    f"no one can judge {self.tribe.names[m]}'s open-ended answers: a tribe judges each member by "
                    "its other members, and this one has none; set evaluation.judge to a model folder")
            for i, (r, text) in enumerate(zip(records, texts[k])):
                ids = inference.prompts_by_group(judge, judges, lambda j: inference.judge_prompt_ids(  # noqa: B023
                    judge, r["instruction"], text, judge_cfg=self.judge_cfg, mode=self.mode, member=j))
                for j in judges:  # each judge reads the answer in its own template
                    jobs.append((j, ids[j]))
                    owner.append((k, i))
        scores = inference.single_scores(judge, jobs, judge_cfg=self.judge_cfg, rng=self.rng,
                                      progress=Progress(self.label, len(jobs), "scores"))
        total = np.zeros((len(members), len(records)))
        count = np.zeros((len(members), len(records)))
        for (k, i), s in zip(owner, scores):
            if not np.isnan(s):
                total[k, i] += s
                count[k, i] += 1
        if records and not count.any():
            raise EvaluationError(
                f"{self.label}: no judge scored any of {len(jobs)} answers "
                f"(judge mode {getattr(self.judge_cfg, 'mode', None)!r}; "
                "sampled judges must write a score the parser reads; 'logits' always scores)")
        with np.errstate(invalid="ignore"):
            return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def evaluate_tribe(tribe: Tribe, dev: Sequence[dict], test: Sequence[dict], eval_cfg, rng, progress,
                   scorer: TribeScorer | None = None) -> dict:
    scorer = scorer or TribeScorer(tribe)
    everyone = list(range(len(tribe.names)))
    dev_answers = member_outputs(tribe, everyone, dev, eval_cfg, rng, progress)
    dev_scores = dict(zip(tribe.names, scorer.score(everyone, dev, dev_answers)))
    best = max(tribe.names, key=lambda n: (dev_scores[n]["accuracy"], -tribe.index(n)))  # ties: tribe order
    tested = everyone if eval_cfg.test_all_members else [tribe.index(best)]
    test_answers = member_outputs(tribe, tested, test, eval_cfg, rng, progress)
    test_scores = {tribe.names[m]: s for m, s in zip(tested, scorer.score(tested, test, test_answers))}
    examples = [example(r, a) for r, a in list(zip(test, test_answers[tested.index(tribe.index(best))]))[:5]]
    return {"dev": dev_scores, "test": test_scores, "best_member": best, "best_test": test_scores[best],
            "examples": examples}
