"""Evaluating every member on held-out verifiable items (SPEC 2.7).

Each member answers the dev items greedily through the sampler (all members' rows in the same
batches); the best member by dev accuracy is the one to report, with its test accuracy. With
`test_all_members` every member is also scored on test (costlier, useful for the report).
"""
from __future__ import annotations

from typing import Sequence

from sparta_jax import combat, evaluation
from sparta_jax.tribe import Tribe

SUMMARY_KEYS = ("accuracy", "n", "n_correct", "n_unparsed", "ci95")


def answers(tribe: Tribe, members: Sequence[int], records: Sequence[dict], eval_cfg, rng, progress) -> list[list[str]]:
    """answers[k][i]: member members[k]'s greedy answer to records[i]."""
    prompts = [combat.chat_ids(tribe, r["instruction"])[: eval_cfg.max_prompt_tokens] for r in records]
    jobs = [(m, p) for m in members for p in prompts]
    texts = combat.generate_texts(tribe, jobs, gen_cfg=eval_cfg, rng=rng, batch_size=eval_cfg.batch_size,
                                  progress=progress)
    return [texts[k * len(records):(k + 1) * len(records)] for k in range(len(members))]


def summarize(result: dict) -> dict:
    out = {k: result[k] for k in SUMMARY_KEYS}
    out["ci95"] = list(out["ci95"])
    return out


def evaluate_tribe(tribe: Tribe, dev: Sequence[dict], test: Sequence[dict], eval_cfg, rng, progress) -> dict:
    everyone = list(range(len(tribe.names)))
    dev_answers = answers(tribe, everyone, dev, eval_cfg, rng, progress)
    dev_scores = {tribe.names[m]: summarize(evaluation.evaluate(a, dev)) for m, a in zip(everyone, dev_answers)}
    best = max(tribe.names, key=lambda n: (dev_scores[n]["accuracy"], -tribe.index(n)))  # ties: tribe order
    tested = everyone if eval_cfg.test_all_members else [tribe.index(best)]
    test_answers = answers(tribe, tested, test, eval_cfg, rng, progress)
    test_scores = {tribe.names[m]: summarize(evaluation.evaluate(a, test)) for m, a in zip(tested, test_answers)}
    examples = [{"instruction": r["instruction"], "answer": r["answer"], "best_member_output": a}
                for r, a in list(zip(test, test_answers[tested.index(tribe.index(best))]))[:5]]
    return {"dev": dev_scores, "test": test_scores, "best_member": best, "best_test": test_scores[best],
            "examples": examples}
