"""Writing a model back out: a merged HF folder (base or one member) or a PEFT adapter folder.

On a multi-host run every process calls these (gathering a sharded array is a collective,
`multihost_utils.process_allgather`) and only process 0 writes the folder.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile

import jax
import ml_dtypes
import numpy as np
from jax.experimental import multihost_utils

from sparta_jax.models import weights as names
from sparta_jax.models.config import GEMMA_ARCHITECTURES, ModelConfig
from sparta_jax.models.llama import LlamaForCausalLM
from sparta_jax.models.safetensors_io import save_file

_DTYPES = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16, "float16": np.float16}


def _host(x) -> np.ndarray:
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))


def _member_index(model: LlamaForCausalLM, member) -> int | None:
    if member is None:
        return None
    if model.lora is None:
        raise ValueError("this model has no adapters; export the base with member=None")
    if isinstance(member, int):
        if not 0 <= member < model.lora_config.num_adapters:
            raise IndexError(f"member {member} out of range [0, {model.lora_config.num_adapters})")
        return member
    return model.lora_config.index(member)


def hf_config_dict(config: ModelConfig, dtype: str, base: dict | None = None) -> dict:
    """config.json for `config`, keeping the extra keys (token ids, ...) of the source config.

    A Gemma model keeps its source config whole (its layer types, soft-caps and per-layer RoPE
    are written there in transformers' own spelling), with only the dtype changed."""
    if config.architecture in GEMMA_ARCHITECTURES:
        if not base:
            raise ValueError(f"exporting a {config.architecture} needs its source config.json (model.source_path)")
        if ModelConfig.from_hf_dict(base) != config:
            raise ValueError("the source config.json does not describe this model")
        return {**base, "torch_dtype": dtype, "dtype": dtype}
    out = dict(base or {})
    out.pop("rope_parameters", None)
    model_type = {"LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2",
                  "MistralForCausalLM": "mistral"}[config.architecture]
    rope = config.rope
    rope_scaling = None
    if rope.rope_type == "linear":
        rope_scaling = {"rope_type": "linear", "factor": rope.factor}
    elif rope.rope_type == "llama3":
        rope_scaling = {"rope_type": "llama3", "factor": rope.factor, "low_freq_factor": rope.low_freq_factor,
                        "high_freq_factor": rope.high_freq_factor,
                        "original_max_position_embeddings": rope.original_max_position_embeddings}
    out.update(
        architectures=[config.architecture], model_type=model_type, vocab_size=config.vocab_size,
        hidden_size=config.hidden_size, intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers, num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_kv_heads, head_dim=config.head_dim, hidden_act="silu",
        rms_norm_eps=config.rms_norm_eps, rope_theta=config.rope.theta, rope_scaling=rope_scaling,
        tie_word_embeddings=config.tie_word_embeddings,
        max_position_embeddings=config.max_position_embeddings, torch_dtype=dtype,
    )
    if config.architecture == "LlamaForCausalLM":
        out["attention_bias"] = config.qkv_bias
    if config.architecture == "MistralForCausalLM":
        out["sliding_window"] = config.sliding_window
    return out


def merged_tensors(model: LlamaForCausalLM, member=None) -> dict[str, np.ndarray]:
    """HF-named float32 tensors of the base, with one member's LoRA merged in when given."""
    c = model.config
    m = _member_index(model, member)
    out = {}
    for param, (hf_name, transpose) in names.TOP_TENSORS.items():
        if param == "lm_head" and c.tie_word_embeddings:
            continue
        arr = _host(getattr(model, param)[...]).astype(np.float32)
        out[hf_name] = arr.T if transpose else arr
    layers = model.layers.arrays()
    deltas = {}
    if m is not None:
        lora = {k: _host(v).astype(np.float32) for k, v in model.lora.arrays().items()}
        scale = float(model.lora_config.adapters[m].scaling)
        for target in model.lora_config.targets:
            # [L, in, r] @ [L, r, out] -> [L, in, out], our kernel layout.
            deltas[target] = scale * np.einsum("lir,lro->lio", lora[f"{target}_a"][:, m], lora[f"{target}_b"][:, m])
    for param, stacked in layers.items():
        arr = _host(stacked).astype(np.float32)
        if param in deltas:
            arr = arr + deltas[param]
        transpose = names.layer_tensors(c)[param][1]
        for i in range(c.num_layers):
            out[names.hf_layer_name(i, param, c)] = arr[i].T if transpose else arr[i]
    return out


def _write_folder(out_dir: str, write) -> str:
    """Build the folder next to its destination and move it into place: never half-written."""
    out_dir = os.path.abspath(out_dir)
    if jax.process_index() != 0:
        return out_dir
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".export-", dir=parent)
    try:
        write(tmp)
        if os.path.exists(out_dir):
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def export_merged(model: LlamaForCausalLM, out_dir: str, *, member=None, tokenizer=None,
                  dtype: str = "float32") -> str:
    """A Hugging Face folder transformers loads: the base, or the base with `member` merged."""
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}")
    source = getattr(model, "source_path", None)
    base_cfg = {}
    if source and os.path.exists(os.path.join(source, "config.json")):
        with open(os.path.join(source, "config.json")) as f:
            base_cfg = json.load(f)
    tensors = {k: v.astype(_DTYPES[dtype]) for k, v in merged_tensors(model, member).items()}

    def write(tmp):
        save_file(tensors, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump(hf_config_dict(model.config, dtype, base_cfg), f, indent=2)
        if source and os.path.exists(os.path.join(source, "generation_config.json")):
            shutil.copy(os.path.join(source, "generation_config.json"), tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)

    return _write_folder(out_dir, write)


def export_peft(model: LlamaForCausalLM, member, out_dir: str, *, base_model_name_or_path: str | None = None,
                dtype: str = "float32") -> str:
    """One member as a PEFT LoRA folder (its own rank, alpha and targets)."""
    return write_peft(peft_tensors(model, member, base_model_name_or_path=base_model_name_or_path, dtype=dtype),
                      out_dir)


def peft_tensors(model: LlamaForCausalLM, member, *, base_model_name_or_path: str | None = None,
                 dtype: str = "float32") -> tuple[dict, dict]:
    """(PEFT tensors, adapter_config) of one member, on the host. On a multi-host mesh every
    process must call it (the arrays are gathered); then one process writes them (`write_peft`)."""
    m = _member_index(model, member)
    if m is None:
        raise ValueError("export_peft needs a member")
    spec = model.lora_config.adapters[m]
    lora = {k: _host(v).astype(np.float32) for k, v in model.lora.arrays().items()}
    tensors = {}
    for target in spec.targets:
        a = lora[f"{target}_a"][:, m, :, : spec.rank]  # [L, in, r]
        b = lora[f"{target}_b"][:, m, : spec.rank, :]  # [L, r, out]
        for i in range(model.config.num_layers):
            tensors[names.peft_name(i, target, "A")] = a[i].T.astype(_DTYPES[dtype])
            tensors[names.peft_name(i, target, "B")] = b[i].T.astype(_DTYPES[dtype])
    adapter_config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": spec.rank, "lora_alpha": spec.alpha,
        "use_rslora": spec.use_rslora, "target_modules": list(spec.targets), "lora_dropout": 0.0,
        "bias": "none", "fan_in_fan_out": False, "inference_mode": True,
        "base_model_name_or_path": base_model_name_or_path or getattr(model, "source_path", None),
    }

    return tensors, adapter_config


def write_peft(tensors_and_config: tuple[dict, dict], out_dir: str) -> str:
    tensors, adapter_config = tensors_and_config

    def write(tmp):
        save_file(tensors, os.path.join(tmp, "adapter_model.safetensors"), metadata={"format": "pt"})
        with open(os.path.join(tmp, "adapter_config.json"), "w") as f:
            json.dump(adapter_config, f, indent=2)

    return _write_folder(out_dir, write)
