"""Do my judges carry any signal? A judge audit before any training.

    python -m sparta_jax.audit --config=configs/default.py [--items=100] [--split=test] --out=workdir/audit.json

Sparta's only training signal is the judges' scores, so before GPU-days go into a run it pays
to know whether the tribe's judges tell a right answer from a wrong one. On a verifiable task
(items with reference answers) the audit writes, for N instructions of a split (`--split`, default
`test`: experts taught to judge saw training items, so `train` would flatter them), a right
answer and a near-miss wrong one of the same form (`--template`, default "The answer is
{answer}."; the wrong one changes the answer only: a number off by 1, 2 or 10, another option
letter, the same words in another letter case). Every member then judges both answers of every instruction with the run's judge prompt
and mode (`judge.mode`, `logits` or `sampled`), and the audit reports per judge and pooled:
matched accuracy (the right answer scored higher on the same instruction; 95% interval: Wilson's
for one judge, a bootstrap over instructions pooled), AUC (bootstrap 95% interval over
instructions), and the mean scores of right and wrong answers. 0.5 is chance. It prints a table and writes JSON; the run report shows an audit panel when the
file is `audit.json` in the run's workdir.

`--scorer=likelihood` is a diagnostic, not a judge: each member "scores" an answer by its own
log-likelihood of it after the instruction's chat prompt (the sum of log p over the answer's
tokens; higher = more expected). Where the judges are at chance but the likelihood is not, the
members hold what it takes to tell the answers apart and the judge prompt fails to draw it out;
where both are at chance, they do not hold it.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Sequence

import numpy as np

from sparta_jax.errors import SpartaError
from sparta_jax.evaluation import NUMERIC_OFFSETS, near_miss  # noqa: F401  (the audit's wrong answers)

DEFAULT_TEMPLATE = "The answer is {answer}."


class AuditError(SpartaError, ValueError):
    pass


def audit_items(records: Sequence[dict], n: int, template: str, seed: int) -> list[dict]:
    """Up to n items {instruction, right, wrong} from records with a near miss, in a seeded order.

    Each pair is checked with the task's own evaluator: right scores 1, wrong scores 0."""
    from sparta_jax import evaluation

    rng = np.random.default_rng([seed, 17])
    items = []
    for i in rng.permutation(len(records)):
        record = records[int(i)]
        wrong_answer = near_miss(record, rng)
        if wrong_answer is None:
            continue
        right, wrong = template.format(answer=record["answer"]), template.format(answer=wrong_answer)
        ok = evaluation.score(right, record["answer"], record["evaluator"])
        bad = evaluation.score(wrong, record["answer"], record["evaluator"])
        if (ok, bad) != (1.0, 0.0):
            raise AuditError(f"--template {template!r} does not make answers the task's evaluator reads: for "
                             f"{record.get('id', record['instruction'][:60])!r} right scores {ok}, wrong {bad}")
        items.append({"id": record.get("id"), "instruction": record["instruction"], "right": right,
                      "wrong": wrong, "task": record.get("task")})
        if len(items) == n:
            break
    if not items:
        raise AuditError("no instruction with a numeric or multiple-choice reference answer: the audit needs a "
                         "verifiable task")
    return items


def judge_items(tribe, items: Sequence[dict], judge_cfg, mode: str, rng, progress) -> tuple[np.ndarray, np.ndarray]:
    """[members, items] scores of the right and the wrong answers, every member judging each."""
    from sparta_jax import inference

    jobs = []
    for item in items:
        judges = range(len(tribe.names))
        sides = inference.prompts_by_group(tribe, judges, lambda j: [  # noqa: B023 (each judge's own template)
            inference.judge_prompt_ids(tribe, item["instruction"], item[side], judge_cfg=judge_cfg, mode=mode, member=j)
            for side in ("right", "wrong")])
        jobs += [(j, ids) for j in judges for ids in sides[j]]
    scores = inference.single_scores(tribe, jobs, judge_cfg=judge_cfg, rng=rng, progress=progress)
    scores = scores.reshape(len(items), len(tribe.names), 2)
    return scores[..., 0].T, scores[..., 1].T


def likelihood_items(tribe, items: Sequence[dict], batch_size: int, progress) -> tuple[np.ndarray, np.ndarray]:
    """[members, items] each member's log-likelihood of the right and the wrong answer (summed
    over the answer's tokens, after the instruction's chat prompt in the member's template)."""
    import jax.numpy as jnp

    from sparta_jax import dpo, inference
    from sparta_jax.models.stack import MemberStack
    from sparta_jax.preference_batches import pairs_to_batch

    out = np.zeros((len(tribe.names), len(items), 2))
    for m, name in enumerate(tribe.names):
        group = tribe.group(m)
        if isinstance(group.model, MemberStack):
            raise AuditError("--scorer=likelihood covers LoRA tribes (tribe.kind='lora') only")
        prompts = [inference.chat_ids(tribe, item["instruction"], m) for item in items]
        # (prompt, right, wrong) as DPO's pairs: rows [pair, side], right padded
        pairs = [(p, *(group.tokenizer.encode(item[side], add_special_tokens=False) for side in ("right", "wrong")))
                 for p, item in zip(prompts, items)]
        per_batch = max(1, batch_size // 2)
        for start in range(0, len(pairs), per_batch):
            chunk = pairs[start: start + per_batch]
            batch = pairs_to_batch(chunk, max(len(p) + max(len(r), len(w)) for p, r, w in chunk),
                                   group.sampler.pad_id)
            rows = lambda x: jnp.asarray(x.reshape(2 * len(chunk), -1))  # noqa: E731
            logps = dpo.sequence_logps(group.model, rows(batch.ids), rows(batch.mask), rows(batch.response_mask),
                                       adapter_ids=jnp.full((2 * len(chunk),), group.index(name), jnp.int32))
            out[m, start: start + len(chunk)] = np.asarray(logps).reshape(len(chunk), 2)
            progress(2 * len(chunk))
    return out[..., 0], out[..., 1]


SCORERS = ("judge", "likelihood")


def run_audit(config, n_items: int, template: str, split: str = "test", log=lambda s: None,
              scorer: str = "judge") -> dict:
    import jax

    from sparta_jax import data as data_lib, sharding
    from sparta_jax.config_check import validate_config
    from sparta_jax.metrics import Progress
    from sparta_jax.sparta.judge_signal import audit_statistics
    from sparta_jax.tribe import build_tribe

    validate_config(config)
    if scorer not in SCORERS:
        raise AuditError(f"--scorer must be one of {', '.join(SCORERS)}, got {scorer!r}")
    if config.judge.mode == "verifier" and scorer == "judge":
        raise AuditError("judge.mode='verifier' has no judges to audit (it is the answer checker itself); "
                         "audit with --config.judge.mode=logits or sampled")
    if n_items < 1:
        raise AuditError(f"--items must be >= 1, got {n_items}")
    sharding.initialize_from_config(config.distributed)
    mesh = sharding.make_mesh(dict(config.mesh))
    records = data_lib.load_instructions(config.data).get(split)
    if not records:
        raise AuditError(f"the data source has no {split!r} split to audit on")
    items = audit_items(records, n_items, template, config.seed)
    from sparta_jax.experts import tribe_source

    tribe_cfg, adapters = tribe_source(config, mesh, log=log)
    tribe = build_tribe(tribe_cfg, config.sampler, mesh, adapters=adapters)
    started = time.perf_counter()
    progress = Progress(f"audit {'judging' if scorer == 'judge' else 'likelihoods'}",
                        2 * len(items) * len(tribe.names), "scores")
    if scorer == "judge":
        right, wrong = judge_items(tribe, items, config.judge, config.mode, jax.random.key(config.seed), progress)
    else:
        right, wrong = likelihood_items(tribe, items, config.judge.batch_size, progress)
    stats = audit_statistics(right, wrong, tribe.names, seed=config.seed)
    return {"scorer": scorer, "judge_mode": config.judge.mode if scorer == "judge" else "likelihood (a diagnostic)",
            "mode": config.mode, "template": template, "split": split,
            "base": tribe.base_path,
            "members": list(tribe.names), "seconds": time.perf_counter() - started, **stats,
            "scores": [{**item, "right_scores": right[:, i].tolist(), "wrong_scores": wrong[:, i].tolist()}
                       for i, item in enumerate(items)]}


def _ci(interval) -> str:
    return f"[{interval[0]:.2f}, {interval[1]:.2f}]" if interval else "–"


def _num(x, digits: int = 2) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def audit_table(result: dict) -> str:
    """The audit as a Markdown table, one row per judge and a pooled row."""
    lines = [f"judge audit on the {result.get('split', 'train')} split: {result['items']} items, judge mode {result['judge_mode']}, "
             "answers like "
             f"{result['template']!r}",
             "| judge | matched accuracy | 95% CI | AUC | 95% CI | mean score right | mean score wrong | unscored |",
             "|---|---:|---|---:|---|---:|---:|---:|"]
    rows = list(result["per_judge"].items()) + [("pooled", result["pooled"])]
    for name, f in rows:
        lines.append(f"| {name} | {_num(f['matched']['accuracy'], 3)} | {_ci(f['matched']['ci95'])} | "
                     f"{_num(f['auc'], 3)} | {_ci(f['auc_ci95'])} | {_num(f['mean_score_right'])} | "
                     f"{_num(f['mean_score_wrong'])} | {f['unscored']} |")
    return "\n".join(lines)


def main(argv) -> int:
    import json

    from sparta_jax import data as data_lib
    from sparta_jax.errors import ConfigError
    from sparta_jax.logs import quiet_third_party
    from sparta_jax.sparta import write_text_atomic

    del argv
    quiet_third_party()
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    try:
        result = run_audit(_CONFIG.value, _ITEMS.value, _TEMPLATE.value, _SPLIT.value, log=log, scorer=_SCORER.value)
    except (AuditError, ConfigError, data_lib.DataError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    out = _OUT.value
    if os.path.dirname(out):
        os.makedirs(os.path.dirname(out), exist_ok=True)
    write_text_atomic(out, json.dumps(result, indent=1) + "\n")
    print(audit_table(result))
    log(f"audit written to {out}")
    return 0


if __name__ == "__main__":
    from absl import app, flags
    from ml_collections import config_flags

    _CONFIG = config_flags.DEFINE_config_file("config", "configs/default.py", "Run config (a file with get_config()).")
    _ITEMS = flags.DEFINE_integer("items", 100, "Instructions to audit (each gets a right and a wrong answer).")
    _SPLIT = flags.DEFINE_string("split", "test", "Which split's instructions to audit on (test, dev, or train: "
                                 "experts taught to judge saw training items).")
    _SCORER = flags.DEFINE_enum("scorer", "judge", list(SCORERS), "judge: the members' judgments (the audit); "
                                "likelihood: their own log-likelihood of each answer (a diagnostic: is the "
                                "knowledge there at all?).")
    _TEMPLATE = flags.DEFINE_string("template", DEFAULT_TEMPLATE, "How an answer is written; {answer} is replaced.")
    _OUT = flags.DEFINE_string("out", "audit.json", "Where the JSON goes (audit.json in a run's workdir: the "
                                                    "report shows it).")
    from sparta_jax.config_files import parse_flags_checked

    app.run(lambda argv: sys.exit(main(argv)),
            flags_parser=lambda argv: parse_flags_checked(argv, "configs/default.py"))
