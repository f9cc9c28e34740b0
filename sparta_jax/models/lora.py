"""A stack of M LoRA adapters over one base model, selected per batch row.

Every row of a batch carries an adapter index in [0, M) or NO_ADAPTER (-1) for the plain base
model. The delta of projection t for row b is scaling[m] * (x @ A[m]) @ B[m] with m the row's
adapter. Rather than gathering each row's A and B (which re-reads the adapters once per row on
every decode step), x is multiplied by all adapters' A at once, masked to the row's own slice,
and multiplied by all B: every adapter is read once per step whatever the batch size.

Adapters of different ranks share one stack: each is zero-padded to the largest rank, which
leaves its product unchanged.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

NO_ADAPTER = -1

# Projection names, in HF (PEFT target_modules) spelling.
ATTENTION_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_TARGETS = ("gate_proj", "up_proj", "down_proj")
ALL_TARGETS = ATTENTION_TARGETS + MLP_TARGETS


class LoraParam(nnx.Param):
    """Trainable LoRA matrices; a filter for optimizers that train adapters only."""


class LoraScaling(nnx.Variable):
    """Per-adapter scale alpha / r (or alpha / sqrt(r) with rsLoRA); not trained."""


@dataclasses.dataclass(frozen=True)
class AdapterSpec:
    """What one adapter of the stack is, enough to write it back as a PEFT folder."""

    name: str
    rank: int
    alpha: float
    use_rslora: bool = False
    targets: tuple[str, ...] = ATTENTION_TARGETS

    @property
    def scaling(self) -> float:
        return self.alpha / (self.rank**0.5 if self.use_rslora else self.rank)


@dataclasses.dataclass(frozen=True)
class LoraConfig:
    """The shape of the adapter stack: which projections carry adapters, and the adapters."""

    adapters: tuple[AdapterSpec, ...]
    targets: tuple[str, ...] = ()  # union of the adapters' targets; derived when empty

    def __post_init__(self):
        if not self.adapters:
            raise ValueError("a LoRA stack needs at least one adapter")
        names = [a.name for a in self.adapters]
        if len(set(names)) != len(names):
            raise ValueError(f"adapter names must be unique, got {names}")
        if not self.targets:
            union = {t for a in self.adapters for t in a.targets}
            object.__setattr__(self, "targets", tuple(t for t in ALL_TARGETS if t in union))
        unknown = set(self.targets) - set(ALL_TARGETS)
        if unknown:
            raise ValueError(f"unknown LoRA targets {sorted(unknown)}; known: {ALL_TARGETS}")

    @property
    def num_adapters(self) -> int:
        return len(self.adapters)

    @property
    def rank(self) -> int:
        return max(a.rank for a in self.adapters)

    def index(self, name: str) -> int:
        for i, a in enumerate(self.adapters):
            if a.name == name:
                return i
        raise KeyError(f"no adapter named {name!r}; have {[a.name for a in self.adapters]}")


def uniform_lora_config(num_adapters: int, rank: int, alpha: float,
                        targets=ATTENTION_TARGETS, prefix: str = "member") -> LoraConfig:
    """M identical-shape adapters named member_0 .. member_{M-1}."""
    specs = tuple(
        AdapterSpec(f"{prefix}_{i}", rank, alpha, targets=tuple(targets)) for i in range(num_adapters)
    )
    return LoraConfig(specs)


def lora_delta(x: jnp.ndarray, a: jnp.ndarray, b: jnp.ndarray, row_scale: jnp.ndarray) -> jnp.ndarray:
    """The adapters' contribution for each row.

    x [batch, length, in]; a [M, in, r]; b [M, r, out];
    row_scale [batch, M]: the row's adapter scaling at its own adapter, 0 elsewhere.
    """
    h = jnp.einsum("bti,mir->btmr", x, a.astype(x.dtype))
    h = h * row_scale[:, None, :, None].astype(x.dtype)
    return jnp.einsum("btmr,mro->bto", h, b.astype(x.dtype))


def row_scales(adapter_ids: jnp.ndarray, scaling: jnp.ndarray) -> jnp.ndarray:
    """[batch, M] mask-times-scale; NO_ADAPTER rows (or any id outside [0, M)) get zeros."""
    num_adapters = scaling.shape[0]
    return jax.nn.one_hot(adapter_ids, num_adapters, dtype=scaling.dtype) * scaling[None, :]
