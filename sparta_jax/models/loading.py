"""Loading HF-format model folders and PEFT LoRA folders into a sharded NNX model.

The model is first built abstractly (`nnx.eval_shape`: shapes only, no memory), then every
parameter is read from the memory-mapped safetensors, laid out on the host once, and placed
with `jax.make_array_from_callback`, which hands each device only its own shard (and on a
multi-host pod, each host only the shards of its own devices).
"""
from __future__ import annotations

import json
import os
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sparta_jax import sharding as sharding_lib
from sparta_jax.errors import SpartaError
from sparta_jax.models import weights as names
from sparta_jax.models.config import ModelConfig
from sparta_jax.models.llama import LlamaForCausalLM, projection_dims
from sparta_jax.models.lora import ALL_TARGETS, AdapterSpec, LoraConfig
from sparta_jax.models.safetensors_io import CheckpointShards, SafetensorsFile


class CheckpointError(SpartaError, ValueError):
    """A model or adapter folder is missing pieces or does not fit the model."""


def read_json(path: str, what: str) -> dict:
    if not os.path.exists(path):
        raise FileNotFoundError(f"{what}: {path} does not exist")
    with open(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{what}: {path} is not valid JSON ({e})") from None


def load_model_config(path: str) -> ModelConfig:
    if not os.path.isdir(path):
        raise FileNotFoundError(f"model folder {path!r} does not exist")
    return ModelConfig.from_hf_dict(read_json(os.path.join(path, "config.json"), f"model folder {path}"))


# ------------------------------------------------------------------------------------ adapters
def read_adapter_spec(path: str, name: str | None = None) -> AdapterSpec:
    """The AdapterSpec of a PEFT LoRA folder, refusing options this stack cannot reproduce."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"adapter folder {path!r} does not exist")
    cfg = read_json(os.path.join(path, "adapter_config.json"), f"adapter folder {path}")
    if cfg.get("peft_type", "LORA") != "LORA":
        raise CheckpointError(f"{path}: peft_type {cfg.get('peft_type')!r} is not LORA")
    unsupported = {
        "use_dora": bool(cfg.get("use_dora")),
        "fan_in_fan_out": bool(cfg.get("fan_in_fan_out")),
        "bias": cfg.get("bias", "none") != "none",
        "modules_to_save": bool(cfg.get("modules_to_save")),
        "rank_pattern": bool(cfg.get("rank_pattern")),
        "alpha_pattern": bool(cfg.get("alpha_pattern")),
    }
    bad = [k for k, v in unsupported.items() if v]
    if bad:
        raise CheckpointError(f"{path}: unsupported LoRA options {bad}")
    return AdapterSpec(
        name=name or os.path.basename(os.path.normpath(path)),
        rank=int(cfg["r"]),
        alpha=float(cfg.get("lora_alpha", 8)),
        use_rslora=bool(cfg.get("use_rslora", False)),
        targets=_resolve_targets(cfg.get("target_modules"), path),
    )


def _resolve_targets(target_modules, path) -> tuple[str, ...]:
    import re

    if target_modules == "all-linear":
        return ALL_TARGETS
    if isinstance(target_modules, str):  # PEFT: a regex matched against full module names
        hits = tuple(t for t in ALL_TARGETS
                     if re.fullmatch(target_modules, f"model.layers.0.{names.MODULE_PARENT[t]}.{t}"))
    else:
        # PEFT matches an entry against a module name or its dotted suffix; saved configs may
        # list full names ("model.layers.0.mlp.up_proj"). Layers without tensors stay zero.
        wanted = {str(t).split(".")[-1] for t in target_modules or ()}
        unknown = wanted - set(ALL_TARGETS)
        if unknown:
            raise CheckpointError(f"{path}: LoRA on {sorted(unknown)} is not supported (only {ALL_TARGETS})")
        hits = tuple(t for t in ALL_TARGETS if t in wanted)
    if not hits:
        raise CheckpointError(f"{path}: target_modules {target_modules!r} selects no projection")
    return hits


def _adapter_tensors(path: str) -> dict[tuple[int, str, str], np.ndarray]:
    file = os.path.join(path, "adapter_model.safetensors")
    if not os.path.exists(file):
        raise FileNotFoundError(f"adapter folder {path}: adapter_model.safetensors is missing")
    st = SafetensorsFile(file)
    out = {}
    for key in st.keys():
        parsed = names.parse_peft_name(key)
        if parsed is None:
            raise CheckpointError(f"{path}: unexpected tensor {key!r} in adapter")
        out[parsed] = st.get(key)
    return out


# ------------------------------------------------------------------------------ host layouts
def checkpoint_host_arrays(config: ModelConfig, shards: CheckpointShards | None, adapter_dirs: Sequence[str],
                 lora: LoraConfig | None):
    """path -> zero-argument function returning the full host array in our layout."""
    c = config

    def tensor(hf_name, transpose, expected):
        if shards is None or hf_name not in shards:
            raise CheckpointError(f"checkpoint is missing tensor {hf_name!r}")
        arr = shards.get(hf_name)
        arr = arr.T if transpose else arr
        if tuple(arr.shape) != tuple(expected):
            raise CheckpointError(
                f"tensor {hf_name!r} has shape {tuple(shards.shape(hf_name))}, the config implies "
                f"{tuple(expected[::-1]) if transpose else tuple(expected)}"
            )
        return arr

    getters = {}
    for param, (hf_name, transpose) in names.TOP_TENSORS.items():
        getters[param] = lambda shape, hf_name=hf_name, transpose=transpose: tensor(hf_name, transpose, shape)
    for param, (_, transpose) in names.layer_tensors(c).items():
        def stacked(shape, param=param, transpose=transpose):
            return np.stack([tensor(names.hf_layer_name(i, param, c), transpose, shape[1:])
                             for i in range(c.num_layers)])
        getters[f"layers/{param}"] = stacked

    if lora is not None:
        per_adapter = [_adapter_tensors(d) for d in adapter_dirs]
        dims = projection_dims(c)
        for spec, tensors, folder in zip(lora.adapters, per_adapter, adapter_dirs):
            _check_adapter_fits(spec, tensors, folder, c, dims)

        for target in lora.targets:
            fan_in, fan_out = dims[target]

            def a_stack(shape, target=target, fan_in=fan_in):
                out = np.zeros(shape, np.float32)
                for m, tensors in enumerate(per_adapter):
                    for i in range(c.num_layers):
                        a = tensors.get((i, target, "A"))  # PEFT: [r, in]
                        if a is not None:
                            out[i, m, :, : a.shape[0]] = a.T
                return out

            def b_stack(shape, target=target):
                out = np.zeros(shape, np.float32)
                for m, tensors in enumerate(per_adapter):
                    for i in range(c.num_layers):
                        b = tensors.get((i, target, "B"))  # PEFT: [out, r]
                        if b is not None:
                            out[i, m, : b.shape[1], :] = b.T
                return out

            getters[f"lora/{target}_a"] = a_stack
            getters[f"lora/{target}_b"] = b_stack
        getters["lora/scaling"] = lambda shape: np.asarray([a.scaling for a in lora.adapters], np.float32)
    return getters


def _check_adapter_fits(spec, tensors, folder, c: ModelConfig, dims):
    for (layer, target, which), arr in tensors.items():
        fan_in, fan_out = dims[target]
        expected = (spec.rank, fan_in) if which == "A" else (fan_out, spec.rank)
        if layer >= c.num_layers or tuple(arr.shape) != expected:
            raise CheckpointError(
                f"adapter {folder} does not fit this base model: layer {layer} {target}.lora_{which} "
                f"has shape {tuple(arr.shape)}, expected {expected} for a model with "
                f"{c.num_layers} layers (was it trained on another base?)"
            )
        if target not in spec.targets:
            raise CheckpointError(f"adapter {folder}: tensor for {target}, not in its target_modules")


# ---------------------------------------------------------------------------------- loading
def from_pretrained(path: str, *, dtype=jnp.bfloat16, param_dtype=None, mesh=None,
                    adapters: Sequence[str] = (), adapter_names: Sequence[str] | None = None,
                    lora: LoraConfig | None = None, load_tokenizer: bool = True):
    """(model, tokenizer) from a HF folder, with optional PEFT adapters stacked as LoRA members.

    dtype is the compute dtype (jnp.float32 for exact checks); param_dtype the storage dtype
    (defaults to dtype). `adapters` are PEFT folders; `lora` instead gives a fresh stack to
    train (B = 0, so the members start equal to the base). `mesh` defaults to all devices on
    the fsdp axis.
    """
    config = load_model_config(path)
    shards = CheckpointShards(path)
    param_dtype = param_dtype or dtype
    if adapters and lora is not None:
        raise ValueError("give either adapter folders or a fresh LoRA config, not both")
    adapter_dirs = list(adapters)
    if adapter_dirs:
        adapter_names = list(adapter_names or [None] * len(adapter_dirs))
        if len(adapter_names) != len(adapter_dirs):
            raise ValueError("adapter_names must name every adapter folder")
        lora = LoraConfig(tuple(read_adapter_spec(d, n) for d, n in zip(adapter_dirs, adapter_names)))
    model = build_model(config, checkpoint_host_arrays(config, shards, adapter_dirs, lora if adapter_dirs else None),
                        lora=lora, dtype=dtype, param_dtype=param_dtype, mesh=mesh)
    model.source_path = os.path.abspath(path)
    tokenizer = load_tokenizer_from(path) if load_tokenizer else None
    return model, tokenizer


def build_model(config: ModelConfig, host_arrays, *, lora=None, dtype=jnp.float32, param_dtype=jnp.float32,
                mesh=None, seed: int = 0) -> LlamaForCausalLM:
    """Materialise a model whose parameters come from `host_arrays` (path -> fn(shape) -> array).

    Parameters without a host array (a fresh LoRA stack) keep their initialiser's values.
    """
    mesh = mesh or sharding_lib.make_mesh()
    abstract = nnx.eval_shape(
        lambda: LlamaForCausalLM(config, lora=lora, dtype=dtype, param_dtype=param_dtype, rngs=nnx.Rngs(seed))
    )
    graphdef, abstract_state = nnx.split(abstract)
    shardings = sharding_lib.state_shardings(abstract_state, mesh)
    fresh = None
    flat = []
    for (path, var), (_, sharding) in zip(nnx.to_flat_state(abstract_state), nnx.to_flat_state(shardings)):
        name = sharding_lib.path_name(path)
        shape, leaf_dtype = var.shape, var.dtype
        getter = host_arrays.get(name)
        if getter is None:
            if fresh is None:  # initialise only what the checkpoint cannot supply
                fresh = _fresh_state(config, lora, dtype, param_dtype, seed, mesh)
            value = fresh[name]
        else:
            host = np.asarray(getter(shape)).astype(leaf_dtype)
            value = jax.make_array_from_callback(shape, sharding.get_value(), lambda idx, host=host: host[idx])
        var.set_value(value)
        flat.append((path, var))
    model = nnx.merge(graphdef, nnx.from_flat_state(flat))
    model.activation_sharding = sharding_lib.batch_sharding(mesh, rank=1)  # rows over data x fsdp
    return model


def _fresh_state(config, lora, dtype, param_dtype, seed, mesh) -> dict:
    """Initialised values of every parameter, placed with the rule-table shardings."""
    @jax.jit
    def init():
        model = LlamaForCausalLM(config, lora=lora, dtype=dtype, param_dtype=param_dtype, rngs=nnx.Rngs(seed))
        return nnx.state(model)

    abstract = jax.eval_shape(init)
    shardings = sharding_lib.state_shardings(abstract, mesh)
    state = jax.jit(init, out_shardings=shardings)()
    return {sharding_lib.path_name(p): v[...] for p, v in nnx.to_flat_state(state)}


def load_tokenizer_from(path: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"model folder {path}: cannot load its tokenizer ({e})") from None
