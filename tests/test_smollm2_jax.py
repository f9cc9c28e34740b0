"""The embedded SmolLM2-135M-Instruct through our loader: same logits as PyTorch, says Paris."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
import torch
import transformers

from sparta_jax import sharding
from sparta_jax.models import init_cache
from sparta_jax.models.loading import from_pretrained

QUESTIONS = ["What is the capital of France?", "Name three colours of the rainbow, briefly."]


@pytest.fixture(scope="module")
def models(smollm2_dir):
    mesh = sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, devices=jax.devices()[:1])
    ours, tokenizer = from_pretrained(smollm2_dir, dtype=jnp.float32, mesh=mesh)
    ref = transformers.AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
    return ours, ref, tokenizer


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


def test_logits_match_pytorch(models):
    got, expected, real = chat_logits(*models, QUESTIONS)
    assert np.abs(got - expected)[real].max() <= 5e-4  # seen 1.3e-4: logits up to ~38, 30 layers, f32
    assert np.abs(got - expected)[real].mean() <= 5e-5


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


def test_greedy_answer_is_paris_and_equals_pytorch(models):
    ours, ref, tokenizer = models
    enc = chat_batch(tokenizer, QUESTIONS)
    tokens = greedy(ours, jnp.asarray(enc["input_ids"]), jnp.asarray(enc["attention_mask"]), steps=12)
    answer = tokenizer.decode(tokens[0], skip_special_tokens=True)
    assert "Paris" in answer, answer
    with torch.no_grad():
        hf = ref.generate(input_ids=torch.tensor(enc["input_ids"]), attention_mask=torch.tensor(enc["attention_mask"]),
                          do_sample=False, max_new_tokens=12, pad_token_id=tokenizer.pad_token_id)
    hf_new = hf[:, enc["input_ids"].shape[1]:].numpy()
    # HF pads finished rows with pad (= eos here); compare up to each row's first eos.
    for row in range(len(QUESTIONS)):
        stop = next((i + 1 for i, t in enumerate(hf_new[row]) if t == tokenizer.eos_token_id), hf_new.shape[1])
        np.testing.assert_array_equal(tokens[row, :stop], hf_new[row, :stop])
