"""The embedded SmolLM2-135M-Instruct through our loader: same logits as PyTorch, says Paris."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from chat_helpers import chat_batch, chat_logits, greedy
from sparta_jax import sharding
from sparta_jax.models.loading import from_pretrained

pytestmark = pytest.mark.reference

QUESTIONS = ["What is the capital of France?", "Name three colours of the rainbow, briefly."]


@pytest.fixture(scope="module")
def models(smollm2_dir):
    mesh = sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, devices=jax.devices()[:1])
    ours, tokenizer = from_pretrained(smollm2_dir, dtype=jnp.float32, mesh=mesh)
    ref = transformers.AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
    return ours, ref, tokenizer


def test_logits_match_pytorch(models):
    got, expected, real = chat_logits(*models, QUESTIONS)
    assert np.abs(got - expected)[real].max() <= 5e-4  # seen 1.3e-4: logits up to ~38, 30 layers, f32
    assert np.abs(got - expected)[real].mean() <= 5e-5


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
