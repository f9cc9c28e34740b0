"""Llama-family decoders in Flax NNX, their LoRA adapter stack, and HF / PEFT / GGUF I/O."""
from sparta_jax.models.config import ModelConfig, RopeConfig, UnsupportedModelError
from sparta_jax.models.llama import KVCache, LlamaForCausalLM, init_cache
from sparta_jax.models.loading import from_pretrained
from sparta_jax.models.lora import NO_ADAPTER, AdapterSpec, LoraConfig, uniform_lora_config

__all__ = [
    "AdapterSpec", "KVCache", "LlamaForCausalLM", "LoraConfig", "ModelConfig", "NO_ADAPTER",
    "RopeConfig", "UnsupportedModelError", "from_pretrained", "init_cache", "uniform_lora_config",
]
