"""The embedded Gemma 3 270M: its folder equals transformers' own GGUF conversion, our decoder
gives transformers' logits and greedy text on it, and a Gemma member's prompts fold the system
prompt into the first user turn."""
from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from safetensors.numpy import load_file

from chat_helpers import chat_batch, chat_logits, greedy
from sparta_jax import sharding
from sparta_jax.models.embedded_gemma import END_OF_TURN, gemma_gguf_path
from sparta_jax.models.loading import from_pretrained

pytestmark = pytest.mark.reference

QUESTIONS = ["What is the capital of France?", "Write the number twelve in digits.", "What is 7 + 5?"]


@pytest.fixture(scope="module")
def models(gemma_dir):
    mesh = sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, devices=jax.devices()[:1])
    ours, tokenizer = from_pretrained(gemma_dir, dtype=jnp.float32, mesh=mesh)
    ref = transformers.AutoModelForCausalLM.from_pretrained(gemma_dir, dtype=torch.float32).eval()
    return ours, ref, tokenizer


def test_folder_equals_transformers_own_gguf_conversion(gemma_dir):
    """transformers reads the GGUF itself (its Gemma processor also undoes llama.cpp's norm + 1):
    every tensor and the architecture fields agree with the folder we built."""
    path = gemma_gguf_path()
    hf = transformers.AutoModelForCausalLM.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path),
                                                           dtype=torch.float32)
    ours = load_file(os.path.join(gemma_dir, "model.safetensors"))
    theirs = {k: v.numpy() for k, v in hf.state_dict().items() if k != "lm_head.weight"}  # tied
    assert set(ours) == set(theirs)
    for name, value in ours.items():
        np.testing.assert_array_equal(value, theirs[name], err_msg=name)
    config = json.load(open(os.path.join(gemma_dir, "config.json")))
    for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "head_dim", "sliding_window", "layer_types", "query_pre_attn_scalar",
                "rope_parameters", "max_position_embeddings", "tie_word_embeddings"):
        assert config[key] == getattr(hf.config, key), key
    assert config["layer_types"].count("full_attention") == 3  # layers 5, 11, 17
    from sparta_jax.models.config import ModelConfig
    from sparta_jax.models.shapes import MODEL_SHAPES

    assert ModelConfig.from_hf_dict(config) == ModelConfig.from_hf_dict(MODEL_SHAPES["gemma-3-270m"])  # AOT's shape


def test_logits_match_pytorch(models):
    got, expected, real = chat_logits(*models, QUESTIONS)
    assert np.abs(got - expected)[real].max() <= 1e-4 * max(1.0, np.abs(expected[real]).max())
    assert np.abs(got - expected)[real].mean() <= 1e-5 * max(1.0, np.abs(expected[real]).max())


def test_greedy_text_equals_hf_generate(models):
    ours, ref, tokenizer = models
    enc = chat_batch(tokenizer, QUESTIONS)
    tokens = greedy(ours, jnp.asarray(enc["input_ids"]), jnp.asarray(enc["attention_mask"]), steps=12)
    with torch.no_grad():
        hf = ref.generate(input_ids=torch.tensor(enc["input_ids"]), attention_mask=torch.tensor(enc["attention_mask"]),
                          do_sample=False, max_new_tokens=12, pad_token_id=tokenizer.pad_token_id)
    hf_new = hf[:, enc["input_ids"].shape[1]:].numpy()
    stops = set(ref.generation_config.eos_token_id)
    assert tokenizer.convert_tokens_to_ids(END_OF_TURN) in stops
    for row in range(len(QUESTIONS)):  # up to each row's first stop token (HF pads after it)
        stop = next((i + 1 for i, t in enumerate(hf_new[row]) if t in stops), hf_new.shape[1])
        np.testing.assert_array_equal(tokens[row, :stop], hf_new[row, :stop])
    assert any(tokenizer.decode(tokens[row]).strip() for row in range(len(QUESTIONS)))


def test_a_gemma_members_duel_and_judge_prompts(models):
    """Gemma has no system role: the chat template folds the system prompt into the first user
    turn; the duel prompt, the judge prompt and the DPO prompt all render that way."""
    from sparta_jax import inference
    from sparta_jax.preference_batches import prompt_ids, response_ids
    from sparta_jax.tribe import Tribe, supports_system_role

    _, _, tokenizer = models
    assert supports_system_role(tokenizer)
    tribe = Tribe(("g",), None, tokenizer, None, "You are a helpful AI assistant.", "x")
    duel = tokenizer.decode(inference.chat_ids(tribe, "What is 7 + 5?"))
    assert duel == ("<bos><start_of_turn>user\nYou are a helpful AI assistant.\n\nWhat is 7 + 5?<end_of_turn>\n"
                    "<start_of_turn>model\n")
    judge = tokenizer.decode(inference.judge_chat_ids(tokenizer, tribe.system_prompt, "What is 7 + 5?", "12",
                                                   max_tokens=512, mode="fixed"))
    # Gemma's template trims each turn, so the judge text's leading newline (docs/algorithm.md §2.3) goes, as it
    # does under Gemma's own template.
    assert judge.startswith("<bos><start_of_turn>user\nYou are a helpful AI assistant.\n\nPlease judge the following")
    assert judge.endswith('{"score": score}<end_of_turn>\n<start_of_turn>model\n')
    assert prompt_ids(tokenizer, "What is 7 + 5?", mode="fixed", system_prompt=tribe.system_prompt) == \
        inference.chat_ids(tribe, "What is 7 + 5?")
    assert response_ids(tokenizer, "12", mode="fixed")[-1] == tokenizer.convert_tokens_to_ids(END_OF_TURN)
    with pytest.raises(Exception, match="only the first message"):
        tokenizer.apply_chat_template([{"role": "user", "content": "a"}, {"role": "system", "content": "b"}],
                                      tokenize=False)


@pytest.mark.e2e
def test_a_gemma_tribe_runs_the_loop_and_exports_a_member(gemma_dir, tmp_path):
    """A LoRA tribe on a tiny random Gemma 3 with the embedded Gemma's tokenizer and template: one
    iteration (a second runs the same code, tested on the SmolLM2 tribes) of duels, `logits` judging
    over Gemma's number tokens, DPO on responses that end in <end_of_turn>, evaluation and a
    checkpoint; the best member exported merged reloads in transformers with our logits."""
    import subprocess
    import sys

    from loop_runs import export_in_process
    from sparta_jax.export import load_run_tribe
    from tiny_models import save_tiny_gemma_chat_model

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    base = save_tiny_gemma_chat_model(tmp_path / "base", gemma_dir)
    workdir = str(tmp_path / "run")
    env = {**os.environ, "PYTHONPATH": repo, "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    run = subprocess.run([sys.executable, "-m", "sparta_jax.main", "--config=configs/tiny.py", f"--workdir={workdir}",
                          f"--config.tribe.base={base}", "--config.mode=fixed", "--config.iterations=1",
                          "--config.instructions_per_iteration=4", "--config.generation.max_new_tokens=8",
                          "--config.dpo.max_length=96", "--config.dpo.max_prompt_length=80",
                          "--config.report_every=-1"], cwd=repo, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.load(open(os.path.join(workdir, "iteration_001", "summary.json")))
    assert summary["unparseable_scores"] == 0 and summary["pairs_trained"] == summary["pairs"] > 0
    out = tmp_path / "exported"
    status, stdout, err = export_in_process("--workdir", workdir, "--member", "best", "--out", out, "--merged")
    assert status == 0, err[-3000:]
    best = stdout.split()[0]
    tribe, _ = load_run_tribe(workdir)
    ids = np.asarray([combat_ids(tribe)])
    ours = np.asarray(tribe.model(jnp.asarray(ids), adapter_ids=jnp.asarray([tribe.index(best)])))
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32)
    with torch.no_grad():
        theirs = hf(input_ids=torch.tensor(ids)).logits.numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-4)
    assert np.abs(ours - np.asarray(tribe.model(jnp.asarray(ids)))).max() > 1e-6  # the member was trained


def combat_ids(tribe):
    from sparta_jax import inference

    return inference.chat_ids(tribe, "What is 2 + 3? Give the final answer as a number.")
