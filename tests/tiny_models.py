"""Tiny random Hugging Face models (PyTorch) written to disk, the references for parity tests."""
from __future__ import annotations

import torch
import transformers

TINY = dict(vocab_size=101, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)

FAMILIES = {
    # name: (config class, model class, extra config)
    "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM, {}),
    "llama3_rope": (transformers.LlamaConfig, transformers.LlamaForCausalLM, dict(
        rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                         "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 64})),
    "llama_tied_bias": (transformers.LlamaConfig, transformers.LlamaForCausalLM,
                        dict(tie_word_embeddings=True, attention_bias=True)),
    "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM, dict(tie_word_embeddings=False)),
    "qwen2_tied": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM, dict(tie_word_embeddings=True)),
    "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM, dict(sliding_window=None)),
    "mistral_window": (transformers.MistralConfig, transformers.MistralForCausalLM, dict(sliding_window=5)),
    # Gemma: soft-caps small enough to bend these tiny logits, a window shorter than the prompts,
    # a query scalar that is not head_dim, Gemma 3's two RoPEs (the global one linearly scaled).
    "gemma": (transformers.GemmaConfig, transformers.GemmaForCausalLM, dict(head_dim=16)),
    "gemma2": (transformers.Gemma2Config, transformers.Gemma2ForCausalLM, dict(
        head_dim=16, num_hidden_layers=3, sliding_window=5, query_pre_attn_scalar=24, attn_logit_softcapping=2.0,
        final_logit_softcapping=3.0)),
    "gemma3": (transformers.Gemma3TextConfig, transformers.Gemma3ForCausalLM, dict(
        head_dim=16, num_hidden_layers=3, sliding_window=5, query_pre_attn_scalar=24,
        layer_types=["sliding_attention", "full_attention", "sliding_attention"],
        rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                         "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1000000.0}})),
}
GEMMA = ("gemma", "gemma2", "gemma3")


def make_hf_model(family: str, seed: int = 0, **overrides) -> torch.nn.Module:
    config_cls, model_cls, extra = FAMILIES[family]
    config = config_cls(**{**TINY, **extra, **overrides})
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = model_cls(config).eval()
    # HF initialises norms to 1 and biases to 0; randomise everything so every weight matters.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            else:
                p.copy_(0.05 * torch.randn_like(p))
    return model


def save_hf_model(family: str, folder, seed: int = 0, **overrides) -> torch.nn.Module:
    model = make_hf_model(family, seed, **overrides)
    model.save_pretrained(str(folder))
    return model


def left_padded_batch(vocab_size: int, lengths, seed: int = 0):
    """(input_ids, attention_mask) as int64 torch tensors, each row left padded to max(lengths)."""
    g = torch.Generator().manual_seed(seed)
    total = max(lengths)
    ids = torch.randint(1, vocab_size, (len(lengths), total), generator=g)
    mask = torch.zeros(len(lengths), total, dtype=torch.long)
    for row, n in enumerate(lengths):
        mask[row, total - n:] = 1
        ids[row, : total - n] = 0
    return ids, mask


def save_tiny_chat_model(folder, tokenizer_dir, seed: int = 0) -> str:
    """A tiny random Llama that speaks SmolLM2's tokenizer (copied from `tokenizer_dir`): real chat
    templates with fast runs."""
    import os
    import shutil

    save_hf_model("llama", folder, seed, vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  max_position_embeddings=1024, bos_token_id=1, eos_token_id=2)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(os.path.join(tokenizer_dir, name), folder)
    return str(folder)


def save_tiny_gemma_chat_model(folder, tokenizer_dir, seed: int = 0) -> str:
    """A tiny random Gemma 3 that speaks the embedded Gemma 3 270M's tokenizer and turn format
    (copied from `tokenizer_dir`): Gemma's chat template and 262k vocabulary with fast runs."""
    import os
    import shutil

    save_hf_model("gemma3", folder, seed, vocab_size=262144, hidden_size=64, intermediate_size=128,
                  max_position_embeddings=1024, bos_token_id=2, eos_token_id=1, pad_token_id=0)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"):
        if os.path.exists(os.path.join(tokenizer_dir, name)):
            shutil.copy(os.path.join(tokenizer_dir, name), folder)
    return str(folder)
