"""Model configuration for the Llama and Gemma families, read from a Hugging Face `config.json`.

One frozen dataclass holds everything the forward pass needs. `from_hf_dict` accepts both
the transformers 4 spelling (`rope_theta`, `rope_scaling`, Gemma 3's `rope_local_base_freq`)
and the transformers 5 one (`rope_parameters`, per layer type for Gemma 3), since real
checkpoints on disk carry either.

The Gemma fields, as transformers' modeling files have them: embeddings scaled by
sqrt(hidden) (`embed_scale`), RMSNorm as x * (1 + w) in float32 (`norm_offset`), GeGLU with
tanh-approximate GELU (`hidden_act`), a tied head; Gemma 2 adds normalised attention and MLP
outputs (`post_norms`), attention and final-logit soft-caps, `query_pre_attn_scalar` and
alternating sliding-window / global layers (`layer_types`); Gemma 3 drops the soft-caps and
adds QK-norm (`qk_norm`) and its own RoPE for the sliding layers (`local_rope`).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from sparta_jax.errors import SpartaError

# Architectures whose forward pass this decoder reproduces exactly.
SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM", "Qwen2ForCausalLM", "MistralForCausalLM", "GemmaForCausalLM",
                           "Gemma2ForCausalLM", "Gemma3ForCausalLM")
GEMMA_ARCHITECTURES = SUPPORTED_ARCHITECTURES[3:]
SLIDING, GLOBAL = "sliding_attention", "full_attention"
SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")


class UnsupportedModelError(SpartaError, ValueError):
    """The checkpoint uses an architecture or option this decoder does not implement."""


@dataclasses.dataclass(frozen=True)
class RopeConfig:
    theta: float = 10000.0
    rope_type: str = "default"
    factor: float = 1.0
    # Llama 3 frequency-dependent scaling.
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-6
    rope: RopeConfig = RopeConfig()
    tie_word_embeddings: bool = False
    qkv_bias: bool = False  # Qwen2 and Llama with attention_bias
    o_bias: bool = False  # Llama with attention_bias only
    sliding_window: int | None = None  # Mistral (every layer), Gemma 2/3 (the sliding layers)
    max_position_embeddings: int = 4096
    architecture: str = "LlamaForCausalLM"
    # Gemma (see the module docstring); the defaults are the Llama family's.
    hidden_act: str = "silu"  # or "gelu_pytorch_tanh"
    norm_offset: bool = False
    embed_scale: bool = False
    post_norms: bool = False
    qk_norm: bool = False
    attn_softcap: float | None = None
    final_softcap: float | None = None
    query_pre_attn_scalar: float | None = None
    layer_types: tuple[str, ...] | None = None  # per layer SLIDING or GLOBAL; None: all alike
    local_rope: RopeConfig | None = None  # the sliding layers' RoPE, where it differs

    def __post_init__(self):
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}"
            )
        if self.layer_types is not None and len(self.layer_types) != self.num_layers:
            raise ValueError(f"layer_types lists {len(self.layer_types)} layers for num_layers={self.num_layers}")

    def is_sliding(self, layer: int) -> bool:
        """Whether `layer` attends within the sliding window only."""
        if self.sliding_window is None:
            return False
        return self.layer_types is None or self.layer_types[layer] == SLIDING

    def layer_rope(self, layer: int) -> RopeConfig:
        return self.local_rope if self.local_rope is not None and self.is_sliding(layer) else self.rope

    @property
    def attention_scale(self) -> float:
        return (self.query_pre_attn_scalar or self.head_dim) ** -0.5

    @property
    def q_size(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_kv_heads * self.head_dim

    @classmethod
    def from_hf_dict(cls, cfg: Mapping[str, Any]) -> "ModelConfig":
        archs = cfg.get("architectures") or []
        arch = archs[0] if archs else _ARCH_BY_MODEL_TYPE.get(cfg.get("model_type", ""), "")
        if arch not in SUPPORTED_ARCHITECTURES:
            raise UnsupportedModelError(
                f"unsupported architecture {arch or cfg.get('model_type')!r}; "
                f"supported: {', '.join(SUPPORTED_ARCHITECTURES)}"
            )
        if arch in GEMMA_ARCHITECTURES:
            return _gemma_from_hf(cls, cfg, arch)
        act = cfg.get("hidden_act", "silu")
        if act != "silu":
            raise UnsupportedModelError(f"unsupported hidden_act {act!r} (only 'silu')")
        if cfg.get("mlp_bias", False):
            raise UnsupportedModelError("mlp_bias=True is not supported")
        num_heads = cfg["num_attention_heads"]
        hidden = cfg["hidden_size"]
        head_dim = cfg.get("head_dim") or hidden // num_heads

        if arch == "Qwen2ForCausalLM":
            qkv_bias, o_bias = True, False
            if cfg.get("use_sliding_window", False):
                raise UnsupportedModelError("Qwen2 use_sliding_window=True is not supported")
            sliding_window = None
        else:
            attention_bias = bool(cfg.get("attention_bias", False))
            qkv_bias = o_bias = attention_bias
            sliding_window = cfg.get("sliding_window") if arch == "MistralForCausalLM" else None

        return cls(
            vocab_size=cfg["vocab_size"],
            hidden_size=hidden,
            intermediate_size=cfg["intermediate_size"],
            num_layers=cfg["num_hidden_layers"],
            num_heads=num_heads,
            num_kv_heads=cfg.get("num_key_value_heads") or num_heads,
            head_dim=head_dim,
            rms_norm_eps=cfg.get("rms_norm_eps", 1e-6),
            rope=_rope_from_hf(cfg),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            qkv_bias=qkv_bias,
            o_bias=o_bias,
            sliding_window=sliding_window,
            max_position_embeddings=cfg.get("max_position_embeddings", 4096),
            architecture=arch,
        )


_ARCH_BY_MODEL_TYPE = {
    "llama": "LlamaForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "mistral": "MistralForCausalLM",
    "gemma": "GemmaForCausalLM",
    "gemma2": "Gemma2ForCausalLM",
    "gemma3_text": "Gemma3ForCausalLM",
}


def _gemma_from_hf(cls, cfg: Mapping[str, Any], arch: str) -> "ModelConfig":
    act = cfg.get("hidden_activation") or cfg.get("hidden_act") or "gelu_pytorch_tanh"
    if act != "gelu_pytorch_tanh":
        raise UnsupportedModelError(f"unsupported Gemma activation {act!r} (only 'gelu_pytorch_tanh')")
    if cfg.get("attention_bias", False):
        raise UnsupportedModelError("Gemma attention_bias=True is not supported")
    if cfg.get("use_bidirectional_attention", False):
        raise UnsupportedModelError("Gemma use_bidirectional_attention=True is not supported")
    gemma1 = arch == "GemmaForCausalLM"
    num_heads, hidden = cfg["num_attention_heads"], cfg["hidden_size"]
    layers = cfg["num_hidden_layers"]
    layer_types, window = None, None
    if not gemma1:
        window = cfg.get("sliding_window")
        layer_types = tuple(cfg.get("layer_types") or _default_layer_types(arch, layers, cfg))
        unknown = set(layer_types) - {SLIDING, GLOBAL}
        if unknown:
            raise UnsupportedModelError(f"unsupported Gemma layer types {sorted(unknown)}")
    if arch == "Gemma3ForCausalLM":
        rope, local_rope = _gemma3_ropes(cfg)
    else:
        rope, local_rope = _rope_from_hf(cfg), None
    return cls(
        vocab_size=cfg["vocab_size"], hidden_size=hidden, intermediate_size=cfg["intermediate_size"],
        num_layers=layers, num_heads=num_heads, num_kv_heads=cfg.get("num_key_value_heads") or num_heads,
        head_dim=cfg.get("head_dim") or hidden // num_heads, rms_norm_eps=cfg.get("rms_norm_eps", 1e-6),
        rope=rope, tie_word_embeddings=bool(cfg.get("tie_word_embeddings", True)),
        sliding_window=window, max_position_embeddings=cfg.get("max_position_embeddings", 8192), architecture=arch,
        hidden_act=act, norm_offset=True, embed_scale=True, post_norms=not gemma1,
        qk_norm=arch == "Gemma3ForCausalLM",
        attn_softcap=None if gemma1 else cfg.get("attn_logit_softcapping"),
        final_softcap=None if gemma1 else cfg.get("final_logit_softcapping"),
        query_pre_attn_scalar=None if gemma1 else cfg.get("query_pre_attn_scalar"),
        layer_types=layer_types, local_rope=local_rope,
    )


def _default_layer_types(arch: str, layers: int, cfg: Mapping[str, Any]) -> list[str]:
    """transformers' defaults where a config.json predates `layer_types`: Gemma 2 alternates from a
    sliding layer; Gemma 3 has a global layer every `sliding_window_pattern` (6)."""
    period = 2 if arch == "Gemma2ForCausalLM" else int(cfg.get("sliding_window_pattern") or
                                                        cfg.get("_sliding_window_pattern") or 6)
    return [SLIDING if (i + 1) % period else GLOBAL for i in range(layers)]


def _gemma3_ropes(cfg: Mapping[str, Any]) -> tuple[RopeConfig, RopeConfig]:
    """(global RoPE, sliding layers' RoPE) of Gemma 3, from either spelling."""
    params = cfg.get("rope_parameters") or {}
    if GLOBAL in params or SLIDING in params:  # transformers 5: one entry per layer type
        def one(p):
            return _rope_from_hf({"rope_parameters": dict(p)})

        return one(params.get(GLOBAL, {})), one(params.get(SLIDING, {}))
    global_rope = _rope_from_hf({**cfg, "rope_theta": cfg.get("rope_theta", 1_000_000.0)})
    return global_rope, RopeConfig(theta=float(cfg.get("rope_local_base_freq", 10_000.0)))


def _rope_from_hf(cfg: Mapping[str, Any]) -> RopeConfig:
    params = dict(cfg.get("rope_parameters") or {})
    scaling = cfg.get("rope_scaling") or {}
    params = {**scaling, **params}
    theta = params.get("rope_theta", cfg.get("rope_theta", 10000.0))
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise UnsupportedModelError(
            f"unsupported rope type {rope_type!r}; supported: {', '.join(SUPPORTED_ROPE_TYPES)}"
        )
    if rope_type == "default":
        return RopeConfig(theta=float(theta))
    if rope_type == "linear":
        return RopeConfig(theta=float(theta), rope_type="linear", factor=float(params["factor"]))
    return RopeConfig(
        theta=float(theta),
        rope_type="llama3",
        factor=float(params["factor"]),
        low_freq_factor=float(params["low_freq_factor"]),
        high_freq_factor=float(params["high_freq_factor"]),
        original_max_position_embeddings=int(params["original_max_position_embeddings"]),
    )
