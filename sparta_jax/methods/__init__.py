"""The paper's self-alignment baselines, on the same sampler, judges, DPO, checkpoints and
evaluation as Sparta (`method` in the config; "sparta" is the loop in sparta_jax.train).

A baseline trains one model: the initial tribe's best member by dev accuracy (or
`methods.member`). Each module turns an iteration's instructions into preference records
{"instruction", "chosen", "rejected", ...} with `make_pairs(config, tribe, instructions, rng=,
judge=, progress=) -> (records, candidate rows, info)`; SPPO's records also carry the two
responses' win rates, which its loss (dpo_loss "sppo") reads.
"""
from __future__ import annotations

import ml_collections

from sparta_jax.methods import meta_rewarding, self_rewarding, spin, sppo

BASELINES = {"self_rewarding": self_rewarding, "meta_rewarding": meta_rewarding, "spin": spin, "sppo": sppo}
METHODS = ("sparta",) + tuple(BASELINES)
LABELS = {"sparta": "Sparta", "self_rewarding": "Self-Rewarding", "meta_rewarding": "Meta-Rewarding",
          "spin": "SPIN", "sppo": "SPPO"}


def default_config() -> ml_collections.ConfigDict:
    """config.methods: the actor and each baseline's settings (their papers' defaults)."""
    return ml_collections.ConfigDict(dict(
        member="",  # the baseline's model: a member name; "" = the initial tribe's best by dev accuracy
        **{name: dict(module.DEFAULTS) for name, module in BASELINES.items()}))


def make_pairs(method: str, config, tribe, instructions, *, rng, judge=None, progress=lambda n: None):
    if method not in BASELINES:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    return BASELINES[method].make_pairs(config, tribe, instructions, rng=rng, judge=judge, progress=progress)


def jobs_per_instruction(method: str, config) -> int:
    """Sampler and judge jobs per instruction, for progress lines."""
    return BASELINES[method].jobs_per_instruction(config.methods[method])


def samples_per_instruction(method: str, config) -> int:
    """Answers the actor writes per instruction (Sparta: the two duelists')."""
    return 2 if method == "sparta" else int(config.methods[method].get("samples", 1))
