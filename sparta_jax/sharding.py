"""Device mesh, parameter partitioning rules, and multi-host start-up.

The mesh has named axes (by default `data`, `fsdp`, `tensor`). Batches split over
`data` x `fsdp`; weights split their input dimension over `fsdp` and their output (heads,
MLP width, vocabulary) over `tensor`. One ordered table maps parameter paths to
PartitionSpecs; the first matching rule wins and a parameter no rule matches is an error,
so a new weight can never be silently replicated.
"""
from __future__ import annotations

import logging
import re
from typing import Mapping, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

DEFAULT_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

# (regex over the "/"-joined parameter path, spec). Layer weights carry a leading layer axis;
# LoRA weights a leading [layer, adapter] pair.
PARAM_RULES: tuple[tuple[str, P], ...] = (
    (r"embed", P("tensor", "fsdp")),  # [vocab, hidden]
    (r"lm_head", P("fsdp", "tensor")),  # [hidden, vocab]
    (r"final_norm", P(None)),
    (r"layers/(attn_norm|mlp_norm|post_attn_norm|post_mlp_norm|q_norm|k_norm)", P(None, None)),  # [L, dim]
    (r"layers/(q|k|v|gate|up)_proj", P(None, "fsdp", "tensor")),  # [L, hidden, out]
    (r"layers/(o|down)_proj", P(None, "tensor", "fsdp")),  # [L, in, hidden]
    (r"layers/(q|k|v)_bias", P(None, "tensor")),
    (r"layers/o_bias", P(None, None)),
    (r"lora/(q|k|v|gate|up)_proj_a", P(None, None, "fsdp", None)),  # [L, M, hidden, r]
    (r"lora/(q|k|v|gate|up)_proj_b", P(None, None, None, "tensor")),  # [L, M, r, out]
    (r"lora/(o|down)_proj_a", P(None, None, "tensor", None)),
    (r"lora/(o|down)_proj_b", P(None, None, None, "fsdp")),
    (r"lora/scaling", P(None)),
)

# A generate call's own layout of the MLP weights it slices once per call (per-layer, no layer
# axis). A decode step multiplies a few hundred rows by each weight once: with the MLP's input
# dimension split over fsdp (PARAM_RULES), every chip writes partial sums for every row and
# all-reduces them, activations as large as a third of the weights. Column-parallel gate and
# up (output over fsdp x tensor) and a row-parallel down projection reduce once per MLP instead.
# Attention projections keep their layout: their heads must stay whole on a chip.
DECODE_RULES: tuple[tuple[str, P], ...] = (
    (r"(gate|up)_proj", P(None, ("fsdp", "tensor"))),  # [hidden, mlp]
    (r"down_proj", P(("fsdp", "tensor"), None)),  # [mlp, hidden]
)


class UnmatchedParameterError(KeyError):
    pass


def make_mesh(axes: Mapping[str, int] | None = None, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A mesh with named axes; one size may be -1 to take all remaining devices.

    `axes` keeps its order, e.g. {"data": 1, "fsdp": -1, "tensor": 2}.
    """
    axes = dict(axes or {"data": 1, "fsdp": -1, "tensor": 1})
    devices = list(devices if devices is not None else jax.devices())
    fill = [name for name, size in axes.items() if size == -1]
    if len(fill) > 1:
        raise ValueError(f"mesh: at most one axis may be -1, got {fill}")
    known = int(np.prod([s for s in axes.values() if s != -1]))
    for name, size in axes.items():
        if size == 0 or size < -1:
            raise ValueError(f"mesh: axis {name!r} has invalid size {size}")
    if fill:
        if len(devices) % known:
            raise ValueError(f"mesh: {len(devices)} devices do not divide by the fixed axes {axes}")
        axes[fill[0]] = len(devices) // known
    total = int(np.prod(list(axes.values())))
    if total != len(devices):
        raise ValueError(f"mesh: axes {axes} need {total} devices, have {len(devices)}")
    # Auto axes: explicit-sharding axes (the default of jax.make_mesh) break nnx.Embed and
    # make every op spell out its output sharding.
    return jax.make_mesh(tuple(axes.values()), tuple(axes), devices=devices,
                         axis_types=(AxisType.Auto,) * len(axes))


def spec_for(path: str, shape: tuple[int, ...], mesh: Mesh,
             rules: Sequence[tuple[str, P]] = PARAM_RULES) -> P:
    """The PartitionSpec of a parameter; mesh axes that do not divide a dimension are dropped."""
    for pattern, spec in rules:
        if re.fullmatch(pattern, path):
            break
    else:
        raise UnmatchedParameterError(f"no sharding rule matches parameter {path!r} (shape {shape})")
    if len(spec) != len(shape):
        raise ValueError(f"sharding rule {pattern!r} has rank {len(spec)}, parameter {path!r} has shape {shape}")
    fitted = []
    for dim, axis in zip(shape, spec):
        size = _axis_size(mesh, axis)
        if axis is not None and dim % size:
            logging.info("sharding: %s dim %d (%d) not divisible by %s=%d; replicated", path, len(fitted), dim, axis, size)
            axis = None
        fitted.append(axis)
    return P(*fitted)


def _axis_size(mesh: Mesh, axis) -> int:
    if axis is None:
        return 1
    names = axis if isinstance(axis, tuple) else (axis,)
    return int(np.prod([mesh.shape[n] for n in names if n in mesh.shape]))


def path_name(path: tuple) -> str:
    """'layers/q_proj' from an nnx flat-state path or a jax key path (Variable '.value' dropped)."""
    parts = []
    for p in path:
        for attr in ("key", "name", "idx"):
            if hasattr(p, attr):
                p = getattr(p, attr)
                break
        parts.append(str(p))
    if parts and parts[-1] == "value":
        parts.pop()
    return "/".join(parts)


def state_shardings(state, mesh: Mesh, rules: Sequence[tuple[str, P]] = PARAM_RULES):
    """NamedSharding for every leaf of an nnx State (or any pytree keyed by parameter path)."""
    def one(path, leaf):
        return NamedSharding(mesh, spec_for(path_name(path), tuple(leaf.shape), mesh, rules))
    return jax.tree_util.tree_map_with_path(one, state)


def decode_spec(name: str, shape: tuple[int, ...], mesh: Mesh) -> P | None:
    """A per-call decode weight's PartitionSpec under DECODE_RULES, or None where the stored
    layout stays (a weight no rule names, or one no axis of the rule divides)."""
    if not any(re.fullmatch(pattern, name) for pattern, _ in DECODE_RULES):
        return None
    spec = spec_for(name, shape, mesh, DECODE_RULES)
    return spec if any(axis is not None for axis in spec) else None


def batch_sharding(mesh: Mesh, rank: int = 2) -> NamedSharding:
    """Rows split over the data-parallel axes, everything else replicated."""
    axes = tuple(a for a in BATCH_AXES if a in mesh.shape)
    return NamedSharding(mesh, P(axes, *([None] * (rank - 1))))


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None, local_device_ids=None) -> None:
    """Start jax.distributed once per process (TPU pods discover their peers when args are None)."""
    if jax.distributed.is_initialized():
        return
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                               process_id=process_id, local_device_ids=local_device_ids)
    logging.info("jax.distributed: process %d of %d, %d local / %d global devices",
                 jax.process_index(), jax.process_count(), jax.local_device_count(), jax.device_count())


def initialize_from_config(distributed_cfg) -> None:
    """`config.distributed` -> initialize_distributed, when it asks (empty / -1 fields: auto)."""
    if distributed_cfg.initialize:
        initialize_distributed(distributed_cfg.coordinator_address or None, distributed_cfg.num_processes or None,
                               None if distributed_cfg.process_id < 0 else distributed_cfg.process_id)
