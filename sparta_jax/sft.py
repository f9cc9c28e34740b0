"""Supervised fine-tuning of a LoRA stack: every member on its own examples, in one jitted step.

This is how a tribe starts diverse (the paper's experts): member m is trained on rows of its
own data source only, each row carrying adapter id m, so one forward pass over the shared base
serves every member. The loss is, per member, the mean negative log-likelihood of its response
tokens (transformers' causal-LM loss: a mean over the batch's counted tokens), summed over
members; members are independent, and gradient clipping is per member, as in DPO.

A member with no examples in a step has no rows in its batch, and the step leaves its adapter
and its optimizer moments exactly as they were: a zero gradient alone would not, since AdamW's
momentum and weight decay keep moving an adapter after its data is done (a unit gradient for
10 steps, then zeros, moves a weight 10.0 by step 10 and 19.6 by step 94). So experts with
little data finish early, frozen, while the others go on.
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from sparta_jax import dpo


@dataclasses.dataclass(frozen=True)
class SFTConfig:
    learning_rate: float = 1e-3
    lr_schedule: str = "cosine"  # after a linear warmup, as in DPO
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    adam_b1: float = 0.9
    adam_b2: float = 0.999
    adam_eps: float = 1e-8
    logps_chunk: int = 128
    remat: bool = True


class SFTBatch(NamedTuple):
    """[active, rows, length] right-padded rows; group g's rows train adapter members[g] only."""

    ids: np.ndarray | jax.Array
    mask: np.ndarray | jax.Array
    response_mask: np.ndarray | jax.Array  # the tokens whose likelihood is trained
    members: np.ndarray | jax.Array  # [active] int32: the adapter (member index) of each row group


def examples_to_batch(per_member: list[list[tuple[list[int], list[int]]]], length: int, pad_id: int,
                      rows: int | None = None) -> SFTBatch:
    """(prompt ids, response ids) rows per member -> an SFTBatch over the members that have rows.

    A row with no response ids counts nothing (a filler); members with fewer rows get fillers.
    Fillers keep one real token so that no row attends to nothing."""
    active = [m for m, examples in enumerate(per_member) if examples]
    if not active:
        raise ValueError("no member has an example")
    rows = rows or max(len(r) for r in per_member)  # a fixed `rows` keeps every step's shape
    ids = np.full((len(active), rows, length), pad_id, np.int32)
    mask = np.zeros((len(active), rows, length), np.bool_)
    response = np.zeros((len(active), rows, length), np.bool_)
    mask[:, :, 0] = True  # fillers: one pad token
    for g, m in enumerate(active):
        for i, (prompt, completion) in enumerate(per_member[m]):
            row = list(prompt) + list(completion)
            if len(row) > length:
                raise ValueError(f"member {m} row {i}: {len(row)} tokens exceed the batch length {length}")
            ids[g, i, : len(row)] = row
            mask[g, i, : len(row)] = True
            response[g, i, len(prompt): len(row)] = True
    return SFTBatch(ids, mask, response, np.asarray(active, np.int32))


def member_nll(model, batch: SFTBatch, cfg: SFTConfig) -> tuple[jax.Array, jax.Array]:
    """([active] mean NLL per response token, [active] counted tokens), each group of rows under
    its member's adapter (batch.members)."""
    active, rows, length = batch.ids.shape
    flat = lambda x: jnp.asarray(x).reshape(active * rows, length)  # noqa: E731
    adapter_ids = jnp.repeat(jnp.asarray(batch.members, jnp.int32), rows, total_repeat_length=active * rows)
    logps = dpo.sequence_logps(model, flat(batch.ids), flat(batch.mask), flat(batch.response_mask),
                               adapter_ids=adapter_ids, chunk=cfg.logps_chunk, remat=cfg.remat)
    # Row t predicts token t + 1: the first token of each row is never a target.
    tokens = jnp.sum(jnp.asarray(batch.response_mask)[..., 1:], axis=(1, 2)).astype(jnp.float32)
    return -jnp.sum(logps.reshape(active, rows), axis=1) / jnp.maximum(tokens, 1.0), tokens


def make_optimizer(cfg: SFTConfig) -> optax.GradientTransformation:
    return dpo.make_optimizer(cfg, dpo.lora_member_axis)


def make_lora_sft_step(graphdef, cfg: SFTConfig, optimizer: optax.GradientTransformation):
    """step(train_state, frozen, batch) -> (train_state, {"loss": [active], "tokens": [active]}), in
    batch.members order. One program per number of active members."""

    def step(state: dpo.TrainState, frozen, batch: SFTBatch):
        def loss_fn(params):
            nll, tokens = member_nll(nnx.merge(graphdef, params, frozen), batch, cfg)
            return jnp.sum(nll), {"loss": nll, "tokens": tokens}

        (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        new = dpo.apply_gradients(state, grads, optimizer, cfg)
        return new._replace(params=keep_idle_members(new.params, state.params, batch.members),
                            opt_state=keep_idle_members(new.opt_state, state.opt_state, batch.members)), metrics

    return dpo.ShardingKeepingStep(step)


def keep_idle_members(new, old, members, member_axis: int = 1):
    """`new` for the members that trained this step (`members`), `old` for the rest, leaf by
    leaf over the member axis of LoRA leaves [layers, members, ...] and of their Adam moments;
    leaves without that axis (Adam's step count) are taken from `new`."""
    def pick(n, o):
        if getattr(n, "ndim", 0) <= member_axis:
            return n
        size = n.shape[member_axis]
        trained = jnp.zeros((size,), jnp.bool_).at[jnp.asarray(members)].set(True)
        return jnp.where(trained.reshape((1,) * member_axis + (size,) + (1,) * (n.ndim - member_axis - 1)), n, o)

    return jax.tree.map(pick, new, old)
