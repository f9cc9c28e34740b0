"""SPIN (Chen et al., 2024): on instructions with reference answers, the reference is "chosen"
and the model's own answer "rejected"; the opponent that writes it is the previous iteration's
model (the start-of-iteration weights, which are also DPO's reference). SPIN's loss is the
logistic form, i.e. DPO's `sigmoid` loss (dpo.beta is SPIN's lambda; Chen et al. use 0.1).

The reference text is the record's "reference" field when it has one (open-ended data), else
`methods.spin.reference_template` filled with its "answer" (the experts' SFT target by default:
SPIN's chosen answers are its SFT data).
"""
from __future__ import annotations

from typing import Sequence

from sparta_jax.errors import ConfigError
from sparta_jax.methods.common import fold, sample_answers

DEFAULTS = dict(reference_template="The answer is {answer}.")


def jobs_per_instruction(cfg) -> int:
    return 1  # its own answer


def reference_text(record: dict, template: str) -> str | None:
    if record.get("reference"):
        return str(record["reference"])
    if record.get("answer") is not None:
        return template.format(answer=record["answer"])
    return None


def check_train_split(records: Sequence[dict], template: str, source: str) -> None:
    """Refuses, before any model is built, a SPIN run whose training instructions carry no
    reference answer (TruthfulQA's and Alpaca's training prompts, say): SPIN would have nothing to
    prefer over the model's own answers. ConfigError naming the way out."""
    if not any(reference_text(r, template) is not None for r in records):
        raise ConfigError(f"method 'spin' prefers each instruction's reference answer over the model's own, and "
                          f"the training instructions of {source} carry none ('reference' or 'answer'): "
                          "choose another method or a task with answers")


def pair_from_answer(record: dict, answer: str, template: str) -> dict | None:
    """(reference, own answer) as a preference record; None without a reference or when the
    model already wrote the reference text (a zero-gradient pair)."""
    chosen = reference_text(record, template)
    if chosen is None or answer.strip() == chosen.strip():
        return None
    return {"instruction": record["instruction"], "chosen": chosen, "rejected": answer, "kind": "answer"}


def make_pairs(config, tribe, instructions: Sequence[dict], *, rng, judge=None, progress=lambda n: None):
    cfg = config.methods.spin
    if not any(reference_text(r, cfg.reference_template) is not None for r in instructions):
        raise ValueError("method 'spin' needs instructions with a reference answer ('reference' or 'answer'); "
                         "this iteration's have none")
    texts = [r["instruction"] for r in instructions]
    answers = [row[0] for row in sample_answers(tribe, texts, 1, gen_cfg=config.generation, rng=fold(rng, 0),
                                                progress=progress)]
    records = [p for p in (pair_from_answer(r, a, cfg.reference_template) for r, a in zip(instructions, answers)) if p]
    rows = [{"instruction": t, "answers": [a], "reference": reference_text(r, cfg.reference_template)}
            for t, a, r in zip(texts, answers, instructions)]
    return records, rows, {"no_reference": sum(reference_text(r, cfg.reference_template) is None for r in instructions)}
