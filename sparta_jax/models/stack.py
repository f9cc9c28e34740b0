"""A stack of full parameter sets: M members of one architecture, each with all its own weights.

The second tribe shape, `tribe.kind="full"` (the first is a LoRA stack over one frozen base): for small
models, every member is a whole model and DPO trains all of its weights. Leaves are
[members, ...]: member m's model is the single-model graphdef merged with every leaf's row m.
On a mesh the member axis is not split; each member's weights shard as a single model's do.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from sparta_jax.models.config import ModelConfig
from sparta_jax.models.llama import LlamaForCausalLM


@dataclasses.dataclass
class MemberStack:
    graphdef: nnx.GraphDef  # of one member, without adapters
    state: nnx.State  # every leaf [members, ...]
    config: ModelConfig
    names: tuple[str, ...]
    source_path: str | None = None  # the folder the members started from

    @property
    def num_members(self) -> int:
        return len(self.names)

    def member(self, m: int) -> LlamaForCausalLM:
        """Member m as an ordinary model (e.g. to export it)."""
        model = nnx.merge(self.graphdef, jax.tree.map(lambda x: x[m], self.state))
        model.source_path = self.source_path  # export copies the source's config and generation config
        return model

    def replace_state(self, state: nnx.State) -> MemberStack:
        return dataclasses.replace(self, state=state)


def stacked_sharding(sharding):
    """A single model's leaf sharding with an unsplit member axis in front."""
    if isinstance(sharding, NamedSharding):
        return NamedSharding(sharding.mesh, P(None, *sharding.spec))
    return sharding


def stack_of(models, names: tuple[str, ...], source_path: str | None = None) -> MemberStack:
    """The members `models` (one architecture, no adapters) as one stack, in the order of `names`."""
    if len(models) != len(names):
        raise ValueError(f"{len(models)} models for {len(names)} names")
    graphdef, first = nnx.split(models[0])
    for name, model in zip(names, models):
        if model.lora is not None:
            raise ValueError(f"member {name!r}: a stack of full parameter sets holds models without adapters")
        if model.config != models[0].config:
            raise ValueError(f"member {name!r}: its architecture differs from member {names[0]!r}'s")
    shardings = jax.tree.map(lambda x: stacked_sharding(x.sharding), first)
    stack = jax.jit(lambda states: jax.tree.map(lambda *xs: jnp.stack(xs), *states), out_shardings=shardings)
    return MemberStack(graphdef, stack([nnx.state(m) for m in models]), models[0].config, tuple(names), source_path)
