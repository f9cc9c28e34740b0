"""Llama-family decoders in Flax NNX, their LoRA adapter stack, and HF / PEFT / GGUF I/O."""
from sparta_jax.models.config import ModelConfig, RopeConfig, UnsupportedModelError
from sparta_jax.models.llama import KVCache, LlamaForCausalLM, init_cache
from sparta_jax.models.lora import NO_ADAPTER, AdapterSpec, LoraConfig, uniform_lora_config
