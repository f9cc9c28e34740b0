"""The NNX decoder is the same function as transformers' PyTorch models, adapters as PEFT's."""
from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import peft
import pytest
import torch
import transformers

from sparta_jax import sharding
from sparta_jax.models import NO_ADAPTER, init_cache
from sparta_jax.models.config import UnsupportedModelError
from sparta_jax.models.export import export_merged, export_peft
from sparta_jax.models.loading import CheckpointError, from_pretrained
from tiny_models import FAMILIES, TINY, left_padded_batch, make_hf_model, save_hf_model

TOL = 1e-4
LENGTHS = [12, 7, 3]  # a left-padded batch: rows of different real lengths


def torch_logits(model, ids, mask):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits.float().numpy()


def jax_logits(model, ids, mask, adapter_ids=None):
    kw = {} if adapter_ids is None else {"adapter_ids": jnp.asarray(adapter_ids, jnp.int32)}
    return np.asarray(model(jnp.asarray(ids.numpy()), jnp.asarray(mask.numpy()), **kw))


def max_diff_on_real_tokens(a, b, mask):
    # Logits at padding positions are meaningless in both implementations.
    return float(np.abs(a - b)[mask.numpy().astype(bool)].max())


@pytest.fixture(scope="module")
def one_device_mesh():
    return sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, devices=jax.devices()[:1])


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.reference
def test_logits_match_transformers(family, tmp_path, one_device_mesh):
    hf = save_hf_model(family, tmp_path)
    model, _ = from_pretrained(str(tmp_path), dtype=jnp.float32, mesh=one_device_mesh, load_tokenizer=False)
    ids, mask = left_padded_batch(TINY["vocab_size"], LENGTHS)
    ref = torch_logits(hf, ids, mask)
    out = jax_logits(model, ids, mask)
    assert out.shape == ref.shape
    assert max_diff_on_real_tokens(out, ref, mask) <= TOL
    # Left padding shifts nothing: the shortest row alone gives the same logits.
    alone = jax_logits(model, ids[2:, -3:], mask[2:, -3:])
    np.testing.assert_allclose(alone[0], out[2, -3:], atol=TOL)


@pytest.mark.reference
def test_sliding_window_changes_the_function(tmp_path):
    """The Mistral window test above is meaningful only if the window alters the logits."""
    ids, mask = left_padded_batch(TINY["vocab_size"], [12])
    windowed = torch_logits(make_hf_model("mistral_window"), ids, mask)
    full = torch_logits(make_hf_model("mistral"), ids, mask)
    assert np.abs(windowed[0, -1] - full[0, -1]).max() > 1e-3


@pytest.mark.parametrize("family, change", [
    ("gemma2", dict(sliding_window=64)), ("gemma2", dict(attn_logit_softcapping=None)),
    ("gemma2", dict(final_logit_softcapping=None)), ("gemma2", dict(query_pre_attn_scalar=16)),
    ("gemma3", dict(sliding_window=64)),
    ("gemma3", dict(rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                                     "full_attention": {"rope_type": "default", "rope_theta": 1000000.0}})),
])
@pytest.mark.reference
def test_each_gemma_feature_changes_the_function(family, change):
    """The Gemma parity tests pin the window, soft-caps, query scalar and Gemma 3's scaled global
    RoPE only because each changes these tiny models' logits (same weights, one setting off)."""
    ids, mask = left_padded_batch(TINY["vocab_size"], [12])
    ref = torch_logits(make_hf_model(family), ids, mask)
    assert np.abs(torch_logits(make_hf_model(family, **change), ids, mask) - ref)[0, -4:].max() > 1e-4


@pytest.mark.parametrize("family", ["qwen2", "mistral_window", "gemma2", "gemma3"])
def test_kv_cache_incremental_equals_full_forward(family, tmp_path, one_device_mesh):
    """Chunks of 8, 1 and 3 tokens through the cache equal one full pass; with a 5-token window
    (mistral_window, Gemma 2 and 3's sliding layers) the later chunks cross its boundary."""
    save_hf_model(family, tmp_path)
    model, _ = from_pretrained(str(tmp_path), dtype=jnp.float32, mesh=one_device_mesh, load_tokenizer=False)
    ids, mask = left_padded_batch(TINY["vocab_size"], [12, 9, 5])
    ids, mask = jnp.asarray(ids.numpy()), jnp.asarray(mask.numpy())
    full = np.asarray(model(ids, mask))

    # Prefill the first 8 slots (padding included), then 1 token, then a chunk of 3.
    cache = init_cache(model.config, batch=3, max_length=16, dtype=jnp.float32)
    pieces = []
    for start, stop in [(0, 8), (8, 9), (9, 12)]:
        logits, cache = model.extend(ids[:, start:stop], mask[:, start:stop], cache)
        pieces.append(np.asarray(logits))
    incremental = np.concatenate(pieces, axis=1)
    real = np.asarray(mask).astype(bool)
    assert np.abs(incremental - full)[real].max() <= TOL
    assert int(cache.index) == 12
    np.testing.assert_array_equal(np.asarray(cache.next_position), [12, 9, 5])

    # Decoding a new token after the prompt: cache path == full forward on the longer sequence.
    nxt = jnp.asarray([[7], [8], [9]])
    step_logits, _ = model.extend(nxt, jnp.ones((3, 1), jnp.bool_), cache)
    longer = np.asarray(model(jnp.concatenate([ids, nxt], 1), jnp.concatenate([mask, jnp.ones((3, 1), mask.dtype)], 1)))
    np.testing.assert_allclose(np.asarray(step_logits)[:, 0], longer[:, -1], atol=TOL)

    # prefill (one layer scan) fills the cache as extend does from empty, to float rounding, in
    # every slot a real token holds (padding slots are never attended to).
    last, filled = model.prefill(ids[:, :8], mask[:, :8], 16, cache_dtype=jnp.float32)
    _, extended = model.extend(ids[:, :8], mask[:, :8], init_cache(model.config, 3, 16, jnp.float32))
    np.testing.assert_allclose(np.asarray(last)[:, 0], incremental[:, 7], atol=TOL)
    slots = np.asarray(extended.key_mask)
    np.testing.assert_array_equal(np.asarray(filled.key_mask), slots)
    np.testing.assert_array_equal(np.asarray(filled.next_position), np.asarray(extended.next_position))
    assert int(filled.index) == int(extended.index) == 8
    for got, want in zip(filled.k + filled.v, extended.k + extended.v):
        got, want = np.moveaxis(np.asarray(got), 2, 1), np.moveaxis(np.asarray(want), 2, 1)  # slots second
        np.testing.assert_allclose(got[slots], want[slots], atol=TOL)
    with pytest.raises(ValueError, match="does not fit"):
        model.prefill(ids, mask, 8)


# ------------------------------------------------------------------------------------- LoRA
ADAPTERS = {
    # name: PEFT config kwargs (different ranks, alphas, targets, rsLoRA)
    "attn_r4": dict(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]),
    "mlp_r8_rslora": dict(r=8, lora_alpha=16, target_modules=["gate_proj", "up_proj", "down_proj"], use_rslora=True),
    "all_r2": dict(r=2, lora_alpha=4, target_modules="all-linear"),
}


@pytest.fixture(scope="module", params=["qwen2", "gemma", "gemma3"])
def peft_tribe(request, tmp_path_factory):
    """A tiny base (Qwen2, Gemma 1, Gemma 3) and three PEFT adapter folders written by peft itself."""
    root = tmp_path_factory.mktemp(f"tribe_{request.param}")
    base_dir = root / "base"
    save_hf_model(request.param, base_dir)
    folders = {}
    for i, (name, kw) in enumerate(ADAPTERS.items()):
        base = transformers.AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
        torch.manual_seed(100 + i)
        # init_lora_weights=False: B random too, so every adapter changes the logits.
        pm = peft.get_peft_model(base, peft.LoraConfig(init_lora_weights=False, **kw))
        folders[name] = root / name
        pm.save_pretrained(str(folders[name]))
    return base_dir, folders


def peft_model_for(base_dir, adapter_dir):
    base = transformers.AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    base.config._attn_implementation = "eager"
    return peft.PeftModel.from_pretrained(base, str(adapter_dir)).eval()


@pytest.mark.reference
def test_lora_stack_matches_peft(peft_tribe, one_device_mesh):
    base_dir, folders = peft_tribe
    names = list(folders)
    model, _ = from_pretrained(str(base_dir), dtype=jnp.float32, mesh=one_device_mesh, load_tokenizer=False,
                               adapters=[str(folders[n]) for n in names])
    assert [a.name for a in model.lora_config.adapters] == names
    ids, mask = left_padded_batch(TINY["vocab_size"], LENGTHS, seed=1)
    for m, name in enumerate(names):
        ref = torch_logits(peft_model_for(base_dir, folders[name]), ids, mask)
        out = jax_logits(model, ids, mask, adapter_ids=[m] * 3)
        assert max_diff_on_real_tokens(out, ref, mask) <= TOL, name
    base_ref = torch_logits(transformers.AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32),
                            ids, mask)
    base_out = jax_logits(model, ids, mask, adapter_ids=[NO_ADAPTER] * 3)
    assert max_diff_on_real_tokens(base_out, base_ref, mask) <= TOL
    # The adapters really change the function, so the comparisons above are not vacuous.
    assert max_diff_on_real_tokens(jax_logits(model, ids, mask, adapter_ids=[0] * 3), base_out, mask) > 1e-2


def test_mixed_adapter_batch_equals_per_adapter_runs(peft_tribe, one_device_mesh):
    base_dir, folders = peft_tribe
    model, _ = from_pretrained(str(base_dir), dtype=jnp.float32, mesh=one_device_mesh, load_tokenizer=False,
                               adapters=[str(f) for f in folders.values()])
    rows = [2, NO_ADAPTER, 0, 1, 0]
    ids, mask = left_padded_batch(TINY["vocab_size"], [10, 4, 7, 10, 1], seed=2)
    mixed = jax_logits(model, ids, mask, adapter_ids=rows)
    for r, adapter in enumerate(rows):
        alone = jax_logits(model, ids[r:r + 1], mask[r:r + 1], adapter_ids=[adapter])
        assert max_diff_on_real_tokens(mixed[r:r + 1], alone, mask[r:r + 1]) <= 1e-5


# ------------------------------------------------------------------------------- round trips
@pytest.mark.reference
def test_export_merged_and_peft_reload_in_transformers(peft_tribe, tmp_path, one_device_mesh):
    base_dir, folders = peft_tribe
    names = list(folders)
    model, _ = from_pretrained(str(base_dir), dtype=jnp.float32, mesh=one_device_mesh, load_tokenizer=False,
                               adapters=[str(folders[n]) for n in names])
    ids, mask = left_padded_batch(TINY["vocab_size"], LENGTHS, seed=3)

    base_out = export_merged(model, str(tmp_path / "base"))
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(base_out, dtype=torch.float32)
    assert max_diff_on_real_tokens(torch_logits(reloaded, ids, mask), jax_logits(model, ids, mask), mask) <= TOL

    member = names[1]
    merged_out = export_merged(model, str(tmp_path / "merged"), member=member)
    merged = transformers.AutoModelForCausalLM.from_pretrained(merged_out, dtype=torch.float32)
    ours = jax_logits(model, ids, mask, adapter_ids=[1] * 3)
    assert max_diff_on_real_tokens(torch_logits(merged, ids, mask), ours, mask) <= TOL

    peft_out = export_peft(model, member, str(tmp_path / "peft"), base_model_name_or_path=str(base_dir))
    reloaded_peft = peft_model_for(base_dir, peft_out)
    assert max_diff_on_real_tokens(torch_logits(reloaded_peft, ids, mask), ours, mask) <= TOL
    saved = json.load(open(os.path.join(peft_out, "adapter_config.json")))
    assert saved["r"] == ADAPTERS[member]["r"] and saved["use_rslora"] is True


def test_export_round_trip_through_our_loader(tmp_path, one_device_mesh):
    save_hf_model("llama3_rope", tmp_path / "src")
    model, _ = from_pretrained(str(tmp_path / "src"), dtype=jnp.float32, mesh=one_device_mesh, load_tokenizer=False)
    out = export_merged(model, str(tmp_path / "out"), dtype="bfloat16")
    again, _ = from_pretrained(out, dtype=jnp.float32, mesh=one_device_mesh, load_tokenizer=False)
    assert again.config == model.config
    a = np.asarray(model.layers.q_proj[...])
    b = np.asarray(again.layers.q_proj[...])
    np.testing.assert_allclose(a, b, rtol=1e-2, atol=1e-3)  # bf16 storage: ~3 significant digits
    assert b.dtype == np.float32 and not np.array_equal(a, b)


# --------------------------------------------------------------------------------- sharding
def test_sharded_over_2x4_mesh_equals_one_device(peft_tribe, one_device_mesh):
    base_dir, folders = peft_tribe
    mesh8 = sharding.make_mesh({"data": 1, "fsdp": 2, "tensor": 4})
    adapters = [str(f) for f in folders.values()]
    one, _ = from_pretrained(str(base_dir), dtype=jnp.float32, mesh=one_device_mesh, load_tokenizer=False,
                             adapters=adapters)
    eight, _ = from_pretrained(str(base_dir), dtype=jnp.float32, mesh=mesh8, load_tokenizer=False, adapters=adapters)
    spec = eight.layers.q_proj[...].sharding.spec
    assert spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor")
    assert len(eight.layers.q_proj[...].sharding.device_set) == 8
    ids, mask = left_padded_batch(TINY["vocab_size"], [12, 7, 3, 9], seed=4)
    rows = [0, 1, 2, NO_ADAPTER]
    batch = sharding.batch_sharding(mesh8)
    with jax.sharding.use_mesh(mesh8) if hasattr(jax.sharding, "use_mesh") else jax.set_mesh(mesh8):
        out8 = np.asarray(jax.jit(lambda i, m, a: eight(i, m, adapter_ids=a))(
            jax.device_put(jnp.asarray(ids.numpy()), batch), jax.device_put(jnp.asarray(mask.numpy()), batch),
            jnp.asarray(rows, jnp.int32)))
    out1 = jax_logits(one, ids, mask, adapter_ids=rows)
    assert max_diff_on_real_tokens(out8, out1, mask) <= 1e-5


def test_mesh_from_config():
    mesh = sharding.make_mesh({"data": 2, "fsdp": -1, "tensor": 2})
    assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
    with pytest.raises(ValueError, match="at most one axis"):
        sharding.make_mesh({"data": -1, "fsdp": -1})
    with pytest.raises(ValueError, match="need 6 devices"):
        sharding.make_mesh({"data": 3, "fsdp": 2})
    with pytest.raises(ValueError, match="do not divide"):
        sharding.make_mesh({"data": 3, "fsdp": -1})


def test_unmatched_parameter_is_an_error():
    mesh = sharding.make_mesh({"data": 1, "fsdp": 2, "tensor": 4})
    with pytest.raises(sharding.UnmatchedParameterError, match="layers/new_gate"):
        sharding.spec_for("layers/new_gate", (2, 8, 8), mesh)
    # A dimension the axis does not divide is replicated, not an error.
    assert sharding.spec_for("layers/q_proj", (2, 6, 12), mesh) == jax.sharding.PartitionSpec(None, "fsdp", "tensor")
    assert sharding.spec_for("layers/q_proj", (2, 5, 6), mesh) == jax.sharding.PartitionSpec(None, None, None)


# ----------------------------------------------------------------------------------- errors
def test_missing_folder_and_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        from_pretrained(str(tmp_path / "nope"), load_tokenizer=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        from_pretrained(str(tmp_path / "empty"), load_tokenizer=False)
    save_hf_model("llama", tmp_path / "noweights")
    os.remove(tmp_path / "noweights" / "model.safetensors")
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        from_pretrained(str(tmp_path / "noweights"), load_tokenizer=False)


def test_unsupported_architecture(tmp_path):
    transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=50)).save_pretrained(
        str(tmp_path))
    with pytest.raises(UnsupportedModelError, match="GPT2LMHeadModel"):
        from_pretrained(str(tmp_path), load_tokenizer=False)


def test_shape_mismatch_names_the_tensor(tmp_path):
    save_hf_model("llama", tmp_path)
    cfg = json.load(open(tmp_path / "config.json"))
    cfg["intermediate_size"] = 80  # the weights say 96
    json.dump(cfg, open(tmp_path / "config.json", "w"))
    with pytest.raises(CheckpointError, match=r"mlp\.(gate|up|down)_proj\.weight. has shape \(\d+, \d+\), the config implies"):
        from_pretrained(str(tmp_path), load_tokenizer=False)


def test_adapter_for_another_base(peft_tribe, tmp_path):
    _, folders = peft_tribe
    save_hf_model("qwen2", tmp_path, hidden_size=32)  # a different base: hidden 32, not 64
    with pytest.raises(CheckpointError, match="does not fit this base model"):
        from_pretrained(str(tmp_path), load_tokenizer=False, adapters=[str(folders["attn_r4"])])
    with pytest.raises(FileNotFoundError, match="adapter folder"):
        from_pretrained(str(tmp_path), load_tokenizer=False, adapters=[str(tmp_path / "missing")])


def test_bf16_compute_stays_close_to_f32(tmp_path):
    save_hf_model("llama", tmp_path)
    f32, _ = from_pretrained(str(tmp_path), dtype=jnp.float32, load_tokenizer=False)
    bf16, _ = from_pretrained(str(tmp_path), dtype=jnp.bfloat16, param_dtype=jnp.float32, load_tokenizer=False)
    assert bf16.layers.q_proj[...].dtype == jnp.float32  # storage stays f32 (master weights)
    ids, mask = left_padded_batch(TINY["vocab_size"], LENGTHS)
    a, b = jax_logits(f32, ids, mask), jax_logits(bf16, ids, mask)
    diff = max_diff_on_real_tokens(a, b, mask)
    assert 1e-6 < diff < 0.05  # really ran in bf16, and still the same function


def test_attention_scores_are_rounded_to_the_compute_dtype():
    """As transformers' eager attention: the scores in the compute dtype, the softmax in float32
    (a bfloat16 decode step then reads half the bytes of float32 scores); float32 unchanged.
    One-hot values make the output the attention probabilities themselves."""
    from sparta_jax.models.config import ModelConfig
    from sparta_jax.models.layer_math import attention as _attention

    c = ModelConfig(vocab_size=32, hidden_size=32, intermediate_size=64, num_layers=1, num_heads=4, num_kv_heads=2,
                    head_dim=8)
    q, k = (4 * jax.random.normal(key, (2, 5, n, 8)) for key, n in zip(jax.random.split(jax.random.key(0)), (4, 2)))
    v = jnp.broadcast_to(jnp.eye(5, 8)[None, :, None, :], (2, 5, 2, 8))  # key s -> unit vector s
    visible = jnp.tril(jnp.ones((5, 5), bool))[None].repeat(2, 0)

    def probabilities(q, k, scores_dtype):
        qg = q.reshape(2, 5, 2, 2, 8).astype(jnp.float32)
        scores = jnp.einsum("btkgd,bskd->bkgts", qg, k.astype(jnp.float32)) * c.attention_scale
        scores = jnp.where(visible[:, None, None], scores.astype(scores_dtype).astype(jnp.float32), -1e30)
        return jax.nn.softmax(scores, axis=-1).transpose(0, 3, 1, 2, 4).reshape(2, 5, 4, 5)

    def attention(dtype):
        out = _attention(q.astype(dtype), k.astype(dtype), v.astype(dtype), visible, c)
        return out.reshape(2, 5, 4, 8)[..., :5].astype(jnp.float32)

    np.testing.assert_allclose(attention(jnp.float32), probabilities(q, k, jnp.float32), rtol=1e-5, atol=1e-6)
    q16, k16 = q.astype(jnp.bfloat16), k.astype(jnp.bfloat16)
    half, rounded, unrounded = attention(jnp.bfloat16), probabilities(q16, k16, jnp.bfloat16), probabilities(
        q16, k16, jnp.float32)
    np.testing.assert_allclose(half, rounded, rtol=8e-3, atol=1e-3)  # the probabilities' own bf16 rounding
    assert float(jnp.abs(half - unrounded).max()) > 2 * float(jnp.abs(half - rounded).max())


def test_from_pretrained_is_importable_from_the_package(tmp_path):
    import sparta_jax.models as models

    save_hf_model("qwen2", tmp_path)
    model, _ = models.from_pretrained(str(tmp_path), dtype=jnp.float32, load_tokenizer=False)
    assert isinstance(model, models.LlamaForCausalLM) and "from_pretrained" in models.__all__


@pytest.mark.reference
@pytest.mark.parametrize("family", ["mistral_window", "gemma2", "gemma3"])
def test_token_tree_on_sliding_window_layers_equals_one_pass_per_path(family, tmp_path, one_device_mesh):
    """The logits judge's one-pass token tree on windowed layers: a node at slot P + k sits at
    position P + depth, so the window must be measured in positions. A 9-token prompt straddles
    the 5-token window; each node's logits equal transformers' on the prompt plus that node's path."""
    hf = save_hf_model(family, tmp_path)
    model, _ = from_pretrained(str(tmp_path), dtype=jnp.float32, mesh=one_device_mesh, load_tokenizer=False)
    prompt = [5, 17, 33, 2, 71, 40, 9, 64, 12]
    tree = (-1, 0, -1, 2, 3, -1)  # nodes 1, 3, 4 deeper than their roots; 2 and 5 are roots placed late
    tokens = [21, 22, 23, 24, 25, 26]
    ids = jnp.asarray([prompt + tokens], jnp.int32)
    hidden = model.hidden_states(ids, jnp.ones_like(ids, jnp.bool_), suffix_tree=tree)
    got = np.asarray(model.logits_from_hidden(hidden))[0, len(prompt):]
    for node in range(len(tree)):
        path, at = [], node
        while at >= 0:
            path.insert(0, tokens[at])
            at = tree[at]
        want = torch_logits(hf, torch.tensor([prompt + path]), torch.ones(1, len(prompt) + len(path), dtype=torch.long))
        np.testing.assert_allclose(got[node], want[0, -1], atol=TOL, err_msg=f"node {node}, path {path}")
