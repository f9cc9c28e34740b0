"""Named model shapes: the Hugging Face config.json values of the bases a config may name.

The AOT check compiles for these where the folder is not at hand (a laptop preparing a pod
run), and `tribe.base = "random:<name>"` builds a tribe with random weights of that shape (for
timing a full-size iteration without the checkpoint).
"""
from __future__ import annotations

from typing import Any

# Hugging Face config.json values of the bases a config may name, so shapes are known
# where the folder is not (a laptop preparing a pod run).
MODEL_SHAPES: dict[str, dict[str, Any]] = {
    "qwen2.5-7b": dict(
        architectures=["Qwen2ForCausalLM"], model_type="qwen2", vocab_size=152064, hidden_size=3584,
        intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
        max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=False,
        hidden_act="silu", use_sliding_window=False),
    "qwen2.5-1.5b": dict(
        architectures=["Qwen2ForCausalLM"], model_type="qwen2", vocab_size=151936, hidden_size=1536,
        intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
        max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True,
        hidden_act="silu", use_sliding_window=False),
    "smollm2-135m": dict(
        architectures=["LlamaForCausalLM"], model_type="llama", vocab_size=49152, hidden_size=576,
        intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
        max_position_embeddings=8192, rope_theta=100000.0, rms_norm_eps=1e-5, tie_word_embeddings=True,
        hidden_act="silu"),
    # Gemma 1 7B (the released code's mixed tribe) and the embedded Gemma 3 270M.
    "gemma-7b": dict(
        architectures=["GemmaForCausalLM"], model_type="gemma", vocab_size=256000, hidden_size=3072,
        intermediate_size=24576, num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=16, head_dim=256,
        max_position_embeddings=8192, rope_theta=10000.0, rms_norm_eps=1e-6, tie_word_embeddings=True,
        hidden_act="gelu_pytorch_tanh"),
    "gemma-3-270m": dict(
        architectures=["Gemma3ForCausalLM"], model_type="gemma3_text", vocab_size=262144, hidden_size=640,
        intermediate_size=2048, num_hidden_layers=18, num_attention_heads=4, num_key_value_heads=1, head_dim=256,
        max_position_embeddings=32768, rms_norm_eps=1e-6, tie_word_embeddings=True,
        hidden_activation="gelu_pytorch_tanh", sliding_window=512, query_pre_attn_scalar=256,
        layer_types=["sliding_attention" if (i + 1) % 6 else "full_attention" for i in range(18)],
        rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                         "full_attention": {"rope_type": "default", "rope_theta": 1000000.0}}),
    # For tests and quick checks of the tool itself; tiny-chat fits the embedded tokenizer.
    "tiny-chat": dict(
        architectures=["LlamaForCausalLM"], model_type="llama", vocab_size=49152, hidden_size=64,
        intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=2048, rope_theta=10000.0, rms_norm_eps=1e-5, tie_word_embeddings=True,
        hidden_act="silu"),
    "tiny": dict(
        architectures=["Qwen2ForCausalLM"], model_type="qwen2", vocab_size=512, hidden_size=64,
        intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
        max_position_embeddings=4096, rope_theta=10000.0, rms_norm_eps=1e-6, tie_word_embeddings=False,
        hidden_act="silu", use_sliding_window=False),
}
BASE_ALIASES = {"embedded": "smollm2-135m", "embedded:gemma3-270m": "gemma-3-270m", "gemma-7b-it": "gemma-7b",
                "qwen2.5-7b-instruct": "qwen2.5-7b", "qwen2.5-1.5b-instruct": "qwen2.5-1.5b"}
