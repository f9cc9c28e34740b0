"""Refuses, before anything is built, a run that trains but cannot evaluate; the message names
the config key to change.

A run that evaluates (`evaluation.enabled`) scores its members on the first `evaluation.dev`
dev items (the best member is picked on them) and the best one on the first `evaluation.test`
test items, before the first iteration and after each. A split that cannot be scored used to be
skipped with one log line, so a run could train for days and report nothing. Refused instead:

- `evaluation.dev` or `evaluation.test` under 1, or a split the data source does not give;
- items that name no evaluator (a generic source without `data.evaluator`, or a paper task
  whose loader gives the split none: TruthfulQA's dev), an evaluator no scorer knows, or a
  split mixing open-ended, multiple-choice-likelihood and text-answer items;
- a verifiable or MC split with items whose reference answer (or MC targets) is missing or
  unreadable (`sparta_jax.data.reference_problems`): their scores would be zeros;
- open-ended ("judged") items with no one to judge them: `evaluation.judge` "tribe" and a tribe
  of one member (Sparta judges a member by the others, a baseline by the rest of the initial tribe).

`check_evaluation_config(config)` is what the config alone tells (config_check.validate_config
and `python -m sparta_jax.aot` run it); `check_evaluation(config, data)` is all of it on the
loaded splits (train.run, right after loading the data). Both raise ConfigError.
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

from sparta_jax.data import describe_source
from sparta_jax.errors import ConfigError

SPLITS = ("dev", "test")
WHY = {"dev": "the best member is picked on the dev items", "test": "the best member is scored on the test items"}
OFF = "or set evaluation.enabled=False to train without evaluating"


def evaluates(config) -> bool:
    """Whether the run trains and evaluates."""
    return bool(config.evaluation.enabled) and int(config.iterations) >= 1


def evaluation_problem(config) -> str | None:
    """check_evaluation_config's message, or None when the config can evaluate."""
    try:
        check_evaluation_config(config)
    except ConfigError as e:
        return str(e)
    return None


def check_evaluation_config(config) -> None:
    """The checks the config alone settles (module docstring)."""
    if not evaluates(config):
        return
    for split in SPLITS:
        n = config.evaluation[split]
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ConfigError(f"config.evaluation.{split} = {n!r}: must be an integer >= 1 ({WHY[split]}), {OFF}")
    for split in SPLITS:
        evaluator = _known_evaluator(config.data, split)
        if evaluator is None and _paper_task(config.data) is not None:
            raise ConfigError(_task_without_evaluator(config.data, split))
        if evaluator == "judged":
            _check_judges(config, split)


def check_evaluation(config, data: Mapping[str, Sequence[dict]], log: Callable[[str], None] = lambda s: None) -> None:
    """Everything check_evaluation_config checks, then each split's evaluated items; `log` gets a
    note where a split holds fewer items than evaluation.dev / test asks for (all are evaluated)."""
    check_evaluation_config(config)
    if not evaluates(config):
        return
    for split in SPLITS:
        records = list(data.get(split) or [])
        if not records:
            raise ConfigError(f"config.data ({describe_source(config.data)}) gives no {split!r} items and "
                              f"config.evaluation.{split} = {config.evaluation[split]} asks for them ({WHY[split]}): "
                              f"hold {split} items out of train (data.{split} = a count) or give the split, {OFF}")
        wanted = config.evaluation[split]
        if wanted > len(records):
            log(f"evaluation.{split} = {wanted}: the {split} split holds {len(records)} items, all of them evaluated")
        if _check_items(config, split, records[:wanted]) == "judged":
            _check_judges(config, split)


# ------------------------------------------------------------------------------- the items
def _check_items(config, split: str, records: Sequence[dict]) -> str:
    """The split's kind ("judged", "likelihood" or "text"), or ConfigError naming what is wrong."""
    from sparta_jax import evaluation

    source = describe_source(config.data)
    missing = [r for r in records if not r.get("evaluator")]
    if missing:
        key = "data.task" if _paper_task(config.data) else "data.evaluator"
        raise ConfigError(f"config.{key}: {len(missing)} of the {len(records)} {split} items evaluated "
                          f"({source}) name no evaluator, so they cannot be scored (e.g. {_ids(missing)}); "
                          f"{'give the split items with reference answers' if key == 'data.task' else 'name one'}, "
                          f"{OFF}")
    names = {r["evaluator"] for r in records}
    unknown = sorted(names - set(evaluation.EVALUATORS) - {evaluation.LIKELIHOOD, evaluation.JUDGED})
    if unknown:
        raise ConfigError(f"config.data ({source}): the {split} items name evaluators no scorer knows: {unknown}; "
                          f"known: {', '.join(evaluation.EVALUATORS + (evaluation.LIKELIHOOD, evaluation.JUDGED))}")
    kinds = {"judged" if n == evaluation.JUDGED else "likelihood" if n == evaluation.LIKELIHOOD else "text"
             for n in names}
    if len(kinds) > 1:
        raise ConfigError(f"config.data ({source}): the {split} split mixes {' and '.join(sorted(kinds))} items; "
                          "a split is scored one way (answers checked, options' likelihoods, or judges)")
    _check_references(source, split, records)
    return kinds.pop()


def _check_references(source: str, split: str, records: Sequence[dict]) -> None:
    from sparta_jax.data import reference_problems

    problems = reference_problems(records)
    bad = problems["missing"] + problems["unparseable"]
    if bad:
        example = ", ".join(map(repr, bad[:3])) + (", ..." if len(bad) > 3 else "")
        missing, unreadable = len(problems["missing"]), len(problems["unparseable"])
        raise ConfigError(f"config.data ({source}): {len(bad)} of the {len(records)} {split} items evaluated have no "
                          f"usable reference answer ({missing} missing, {unreadable} unreadable by their evaluator; "
                          f"e.g. {example}), so their scores would be zeros: give the {split} split its answers, {OFF}")


def _ids(records: Sequence[dict]) -> str:
    ids = [repr(str(r.get("id", "?"))) for r in records[:3]]
    return ", ".join(ids) + (", ..." if len(records) > 3 else "")


# ------------------------------------------------------------------------------- the judges
def _check_judges(config, split: str) -> None:
    if config.evaluation.judge != "tribe":
        return  # a named judge model
    members = member_count(config)
    if members < 2:
        raise ConfigError(f"config.evaluation.judge = 'tribe': the {split} items are open-ended (evaluator 'judged') "
                          f"and a tribe of {members} member has no one to judge a member's answers (Sparta's are "
                          "judged by the other members, a baseline's by the rest of the initial tribe); name a judge "
                          f"model folder ('embedded' for SmolLM2-135M-Instruct), {OFF}")


def member_count(config) -> int:
    """How many members the config's tribe has (the experts', each group's, or tribe's own)."""
    experts = config.get("experts")
    if experts is not None and experts.enabled:
        return len(experts.sources) * int(experts.copies)
    if config.tribe.get("groups"):
        from sparta_jax.tribe import group_configs

        return sum(_group_size(cfg) for _, cfg in group_configs(config.tribe))
    return _group_size(config.tribe)


def _group_size(tribe_cfg) -> int:
    adapters = [a for a in tribe_cfg.get("adapters", ()) if a]
    folders = [f for f in tribe_cfg.get("member_folders", ()) if f]
    return len(adapters) or len(folders) or int(tribe_cfg.members)


# ------------------------------------------------------------------------------- the source
def _paper_task(spec):
    """The paper task a source names (kind "paper", or "hf" with "task"), or None."""
    from sparta_jax import paper_tasks

    task = spec.get("task")
    if spec.get("kind") not in ("paper", "hf") or task not in paper_tasks.TASKS:
        return None
    return paper_tasks.TASKS[task]


def _known_evaluator(spec, split: str) -> str | None:
    """The evaluator the source's `split` items carry, where the config settles it: a paper
    task's per split, or a generic source's data.evaluator; else None."""
    task = _paper_task(spec)
    if task is not None:
        return task.evaluator_for(split)
    if spec.get("kind") in ("local", "hf", "tfds"):
        return spec.get("evaluator")
    return None


def _task_without_evaluator(spec, split: str) -> str:
    task = spec.get("task")
    if task == "truthfulqa":
        reason = ("its only labelled questions are the test split's 817 MC questions: the dev split is held out "
                  "of the released training prompts, which carry no MC targets, and no dev split is ever held out "
                  "of a test split")
    else:
        reason = f"the task's {split} items carry no reference to score"
    return (f"config.data.task = {task!r}: the loader gives the {split} split no evaluator ({reason}), so the "
            f"{split} items cannot be scored ({WHY[split]}); {OFF}")
