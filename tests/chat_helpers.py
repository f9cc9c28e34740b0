"""Chat prompts through our decoder and a PyTorch reference: logits and greedy tokens.

Shared by test_smollm2_jax.py and test_embedded_gemma.py (the embedded SmolLM2 and Gemma 3 models).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx

from sparta_jax.models import init_cache


def chat_batch(tokenizer, questions):
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                           add_generation_prompt=True) for q in questions]
    tokenizer.padding_side = "left"
    return tokenizer(texts, return_tensors="np", padding=True)


def chat_logits(ours, ref, tokenizer, questions):
    """(our logits, PyTorch's, the real-token mask) for a left-padded batch of chat prompts."""
    enc = chat_batch(tokenizer, questions)
    with torch.no_grad():
        expected = ref(input_ids=torch.tensor(enc["input_ids"]),
                       attention_mask=torch.tensor(enc["attention_mask"])).logits.numpy()
    got = np.asarray(ours(jnp.asarray(enc["input_ids"]), jnp.asarray(enc["attention_mask"])))
    return got, expected, enc["attention_mask"].astype(bool)


def greedy(model, input_ids, attention_mask, steps):
    batch, length = input_ids.shape
    cache = init_cache(model.config, batch, length + steps, dtype=jnp.float32)
    # The weights go in as an argument: closed over, they would be baked into the program as
    # constants (a 270M model then took 77 s to compile, not 6).
    graphdef, state = nnx.split(model)
    step = jax.jit(lambda state, ids, mask, cache: nnx.merge(graphdef, state).extend(ids, mask, cache))
    logits, cache = step(state, input_ids, attention_mask, cache)
    out = []
    for _ in range(steps):
        token = jnp.argmax(logits[:, -1], axis=-1)[:, None]
        out.append(token)
        logits, cache = step(state, token, jnp.ones_like(token, jnp.bool_), cache)
    return np.asarray(jnp.concatenate(out, axis=1))
