"""One DPO step on a tiny Qwen2 in f32 equals TRL's DPOTrainer: loss, rewards, updated weights."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import peft
import pytest
import torch
import transformers
from flax import nnx

from assertions import assert_update_close
from sparta_jax import dpo, sharding
from sparta_jax.models.export import merged_tensors
from sparta_jax.models.loading import from_pretrained
from sparta_jax.models import weights as names
from sparta_jax.preference_batches import pairs_to_batch
from tiny_models import TINY, save_hf_model
from trl_reference import trl_dpo_step

pytestmark = pytest.mark.reference

METRICS = ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen", "logps/rejected")


def random_pairs(n, seed):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        prompt = rng.integers(1, TINY["vocab_size"], int(rng.integers(3, 9))).tolist()
        chosen = rng.integers(1, TINY["vocab_size"], int(rng.integers(2, 8))).tolist()
        rejected = rng.integers(1, TINY["vocab_size"], int(rng.integers(2, 8))).tolist()
        out.append({"prompt_ids": prompt, "chosen_ids": chosen, "rejected_ids": rejected})
    return out


def our_batches(pairs, pairs_per_step):
    triples = [(p["prompt_ids"], p["chosen_ids"], p["rejected_ids"]) for p in pairs]
    batch = pairs_to_batch(triples, length=16)
    return [dpo.PairBatch(*(jnp.asarray(x[i: i + pairs_per_step]) for x in batch))
            for i in range(0, len(pairs), pairs_per_step)]


@pytest.fixture(scope="module")
def mesh1():
    return sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, devices=jax.devices()[:1])


def test_full_finetune_step_matches_trl(tmp_path, mesh1):
    save_hf_model("qwen2", tmp_path / "model")
    pairs = random_pairs(2, seed=0)
    hp = dict(learning_rate=1e-3, weight_decay=0.01, max_grad_norm=1.0)
    ref = trl_dpo_step(str(tmp_path / "model"), pairs, output_dir=str(tmp_path / "trl"), batch_size=2, steps=1,
                       lr_scheduler_type="constant", **hp)

    model, _ = from_pretrained(str(tmp_path / "model"), dtype=jnp.float32, mesh=mesh1, load_tokenizer=False)
    graphdef, state = nnx.split(model)
    stacked = jax.tree.map(lambda x: x[None], state)
    cfg = dpo.DPOConfig(lr_schedule="constant", warmup_ratio=0.0, **hp)
    (batch,) = our_batches(pairs, 2)
    ref_logps = dpo.make_full_reference_logps(graphdef, cfg)(stacked, batch)
    opt = dpo.make_optimizer(cfg, dpo.full_member_axis)
    out, metrics = dpo.make_full_train_step(graphdef, cfg, opt)(dpo.init_train_state(stacked, opt, cfg, 1), None, batch, ref_logps)

    for key in METRICS:
        assert abs(float(metrics[key][0]) - ref["logs"][0][key]) <= 1e-5 * max(1.0, abs(ref["logs"][0][key])), key
    trained = merged_tensors(nnx.merge(graphdef, jax.tree.map(lambda x: x[0], out.params)))
    assert set(trained) == set(ref["params"])
    for name, want in ref["params"].items():
        # k_proj.bias only gets a gradient through RoPE's tiny, cancelling terms: a looser bound.
        # Adam's first step divides each gradient element by its own size, so an element whose
        # gradient is at float-noise level moves by a few % of lr either way with the summation
        # order: one element of layer 1's v_proj (of 2048) lands 2.5e-5 off, the rest within 2e-8.
        rel = 1e-4 if name.endswith("k_proj.bias") else 2e-5
        assert_update_close(name, trained[name], want, ref["initial_params"][name], rel_param=rel)


def test_lora_steps_with_warmup_and_accumulation_match_trl(tmp_path, mesh1):
    save_hf_model("qwen2", tmp_path / "model")
    base = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "model"), dtype=torch.float32)
    torch.manual_seed(1)
    peft.get_peft_model(base, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                                              init_lora_weights=False, lora_dropout=0.0)).save_pretrained(
        str(tmp_path / "adapter"))
    pairs = random_pairs(8, seed=1)
    hp = dict(learning_rate=5e-3, weight_decay=0.05, max_grad_norm=0.5)
    ref = trl_dpo_step(str(tmp_path / "model"), pairs, output_dir=str(tmp_path / "trl"), batch_size=2, grad_accum=2,
                       steps=2, lr_scheduler_type="cosine", warmup_ratio=0.5, lora=str(tmp_path / "adapter"), **hp)

    model, _ = from_pretrained(str(tmp_path / "model"), dtype=jnp.float32, mesh=mesh1, load_tokenizer=False,
                               adapters=[str(tmp_path / "adapter")])
    cfg = dpo.DPOConfig(lr_schedule="cosine", warmup_ratio=0.5, grad_accum=2, **hp)
    graphdef, trainable, frozen = dpo.split_lora(model)
    reference = dpo.make_lora_reference_logps(graphdef, cfg)
    batches = our_batches(pairs, 4)
    ref_logps = [reference(trainable, frozen, b) for b in batches]  # the start-of-iteration adapter
    opt = dpo.make_optimizer(cfg, dpo.lora_member_axis)
    step = dpo.make_lora_train_step(graphdef, cfg, opt)
    state = dpo.init_train_state(trainable, opt, cfg, 2)
    for i, (batch, r) in enumerate(zip(batches, ref_logps)):
        state, metrics = step(state, frozen, batch, r)
        for key in METRICS:
            want = ref["logs"][i][key]
            assert abs(float(metrics[key][0]) - want) <= 1e-5 * max(1.0, abs(want)), (i, key)
    lora = {k: np.asarray(v) for k, v in nnx.merge(graphdef, state.params, frozen).lora.arrays().items()}
    checked = 0
    for name, want in ref["params"].items():
        layer, target, which = names.parse_peft_name(name)
        ours = lora[f"{target}_{which.lower()}"][layer, 0]  # [in, r] / [r, out]
        assert_update_close(name, ours.T, want, ref["initial_params"][name])
        checked += 1
    assert checked == 2 * 3 * 2  # layers x targets x (A, B)
