"""The one mapping between Hugging Face / PEFT tensor names and this decoder's parameters.

Both loading and export use it, so the two can never disagree. Our kernels are [in, out]
(`x @ W`); HF stores Linear weights as [out, in].
"""
from __future__ import annotations

import re

# Stacked layer parameter -> (HF name inside model.layers.{i}., transpose?)
LAYER_TENSORS: dict[str, tuple[str, bool]] = {
    "attn_norm": ("input_layernorm.weight", False),
    "q_proj": ("self_attn.q_proj.weight", True),
    "k_proj": ("self_attn.k_proj.weight", True),
    "v_proj": ("self_attn.v_proj.weight", True),
    "o_proj": ("self_attn.o_proj.weight", True),
    "q_bias": ("self_attn.q_proj.bias", False),
    "k_bias": ("self_attn.k_proj.bias", False),
    "v_bias": ("self_attn.v_proj.bias", False),
    "o_bias": ("self_attn.o_proj.bias", False),
    "mlp_norm": ("post_attention_layernorm.weight", False),
    "gate_proj": ("mlp.gate_proj.weight", True),
    "up_proj": ("mlp.up_proj.weight", True),
    "down_proj": ("mlp.down_proj.weight", True),
}

# Gemma 2/3 call their post-attention-output norm "post_attention_layernorm" (the Llama name of
# the norm before the MLP, which they call "pre_feedforward_layernorm").
POST_NORM_TENSORS: dict[str, tuple[str, bool]] = {
    "mlp_norm": ("pre_feedforward_layernorm.weight", False),
    "post_attn_norm": ("post_attention_layernorm.weight", False),
    "post_mlp_norm": ("post_feedforward_layernorm.weight", False),
}
QK_NORM_TENSORS: dict[str, tuple[str, bool]] = {
    "q_norm": ("self_attn.q_norm.weight", False),
    "k_norm": ("self_attn.k_norm.weight", False),
}


def layer_tensors(config) -> dict[str, tuple[str, bool]]:
    """Stacked layer parameter -> (HF name inside model.layers.{i}., transpose?) for `config`."""
    out = dict(LAYER_TENSORS)
    if config.post_norms:
        out.update(POST_NORM_TENSORS)
    if config.qk_norm:
        out.update(QK_NORM_TENSORS)
    return out


# Top-level parameter -> (HF name, transpose?)
TOP_TENSORS: dict[str, tuple[str, bool]] = {
    "embed": ("model.embed_tokens.weight", False),
    "final_norm": ("model.norm.weight", False),
    "lm_head": ("lm_head.weight", True),
}

# The HF module (PEFT target name) that holds each projection.
MODULE_PARENT = {
    "q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn", "o_proj": "self_attn",
    "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp",
}

PEFT_PREFIX = "base_model.model.model.layers"
_PEFT_KEY = re.compile(r"layers\.(\d+)\.(self_attn|mlp)\.(\w+)\.lora_([AB])(?:\.[\w-]+)?\.weight$")


def hf_layer_name(i: int, param: str, config) -> str:
    return f"model.layers.{i}.{layer_tensors(config)[param][0]}"


def peft_name(i: int, target: str, which: str) -> str:
    """PEFT's saved key for layer i's lora_A / lora_B of `target` (`which` is 'A' or 'B')."""
    return f"{PEFT_PREFIX}.{i}.{MODULE_PARENT[target]}.{target}.lora_{which}.weight"


def parse_peft_name(key: str) -> tuple[int, str, str] | None:
    """(layer, target, 'A'|'B') of a PEFT adapter tensor name, or None if it is not one."""
    m = _PEFT_KEY.search(key)
    if not m:
        return None
    layer, parent, target, which = m.groups()
    if MODULE_PARENT.get(target) != parent:
        return None
    return int(layer), target, which
