"""The hand-partitioned decode step (models/decode_partitioned.py) computes what the model does on
one device: logits, cache and each row's best candidates of several decode steps on an 8-device CPU mesh against the same
model and adapters unpartitioned, for every model family's switches, LoRA on all seven
projections with mixed adapters, shared and per-row cache slots, and meshes it splits 2 x 2 x 2
and 1 x 4 x 2 (data x fsdp x tensor)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sparta_jax import sharding
from sparta_jax.models import decode_partitioned
from sparta_jax.models.config import ModelConfig
from sparta_jax.models.loading import from_pretrained
from sparta_jax.models.lora import ALL_TARGETS, NO_ADAPTER, uniform_lora_config
from sparta_jax.sampling import Sampler, SamplerConfig, decode_step, decode_step_candidates
from tests.tiny_models import TINY, save_hf_model

ROWS, STEPS, CANDIDATES = 8, 3, 10


def _models(folder, mesh, targets=ALL_TARGETS):
    lora = uniform_lora_config(3, rank=4, alpha=8.0, targets=targets)
    one, _ = from_pretrained(str(folder), dtype=jnp.float32, mesh=sharding.make_mesh(
        {"data": 1, "fsdp": 1, "tensor": 1}, devices=jax.devices()[:1]), load_tokenizer=False, lora=lora)
    split, _ = from_pretrained(str(folder), dtype=jnp.float32, mesh=mesh, load_tokenizer=False, lora=lora)
    for i, (name, var) in enumerate(sorted(one.lora.arrays().items())):  # adapters that differ, on both
        value = 0.3 * jax.random.normal(jax.random.key(i), var.shape, var.dtype)
        getattr(one.lora, name).set_value(value)
        target = getattr(split.lora, name)
        target.set_value(jax.device_put(value, target[...].sharding))
    return one, split


def _decode(model, ids, mask, adapter_ids, per_row_index: bool, kernels: str = "xla"):
    """Prefill, then STEPS greedy decode steps: each step's logits, and the final cache."""

    @nnx.jit
    def run(model, ids, mask, adapter_ids):
        logits, cache = model.prefill(ids, mask, ids.shape[1] + STEPS + 1, adapter_ids=adapter_ids,
                                      cache_dtype=jnp.float32)
        if per_row_index:  # the refilled rows' cache: each row its own write slot
            cache = cache.replace(index=jnp.full((ids.shape[0],), ids.shape[1], jnp.int32))
        layers = model.decode_weights(kernels=kernels)
        token, out = jnp.argmax(logits[:, -1], -1), []
        live = jnp.ones(ids.shape[:1], bool).at[1].set(False)  # a finished row writes a masked slot
        for _ in range(STEPS):
            step_logits, cache = decode_step(model, layers, token, live, cache, adapter_ids)
            out.append(step_logits)
            token = jnp.argmax(step_logits, -1)
        # The sampler's form of a step: each row's best logits and their ids (one more step).
        best, _ = decode_step_candidates(model, layers, token, live, cache, adapter_ids, CANDIDATES)
        return jnp.stack(out, 1), cache, layers, best

    return run(model, ids, mask, adapter_ids)


def _batch(vocab, seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, 12, ROWS)
    ids = np.zeros((ROWS, 12), np.int32)
    mask = np.zeros((ROWS, 12), bool)
    for r, n in enumerate(lengths):
        ids[r, 12 - n:] = rng.integers(1, vocab, n)
        mask[r, 12 - n:] = True
    return jnp.asarray(ids), jnp.asarray(mask), jnp.asarray([0, 1, 2, NO_ADAPTER, 2, 1, 0, 1], jnp.int32)


ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")


@pytest.mark.parametrize("family,mesh_axes,per_row_index,kernels,targets", [
    ("qwen2", (2, 2, 2), False, "xla", ALL_TARGETS),  # q/k/v biases, untied head, vocab 101 (padded to split)
    ("qwen2", (1, 4, 2), True, "xla", ALL_TARGETS),
    ("llama_tied_bias", (1, 4, 2), False, "xla", ALL_TARGETS),  # tied embedding as the unembedding, o bias
    ("mistral_window", (2, 2, 2), True, "xla", ALL_TARGETS),  # sliding window shorter than the prompts
    ("gemma2", (2, 2, 2), False, "xla", ALL_TARGETS),  # soft-caps, post-norms, (1 + w) norms, GELU, query scalar
    ("gemma3", (1, 4, 2), True, "xla", ALL_TARGETS),  # q/k norms, two RoPEs, mixed sliding and global layers
    # The Pallas kernels (decode_kernels, interpreted): attention, and the MLP where it has no adapters.
    ("qwen2", (1, 4, 2), True, "interpret", ATTENTION),
    ("qwen2", (2, 2, 2), False, "interpret", ALL_TARGETS),  # the MLP's adapters: XLA's MLP
    ("gemma2", (2, 2, 2), False, "interpret", ATTENTION),
    ("mistral_window", (1, 4, 2), True, "interpret", ATTENTION),
])
def test_partitioned_decode_equals_one_device(family, mesh_axes, per_row_index, kernels, targets, tmp_path):
    save_hf_model(family, tmp_path)
    mesh = sharding.make_mesh(dict(zip(("data", "fsdp", "tensor"), mesh_axes)))
    one, split = _models(tmp_path, mesh, targets)
    ids, mask, adapters = _batch(TINY["vocab_size"])
    want, want_cache, plain, want_best = _decode(one, ids, mask, adapters, per_row_index)
    got, got_cache, layers, got_best = _decode(split, ids, mask, adapters, per_row_index, kernels)
    assert not isinstance(plain, decode_partitioned.PartitionedLayers)
    assert isinstance(layers, decode_partitioned.PartitionedLayers)  # the path under test, not the fallback
    mlp_kernel = kernels != "xla" and targets == ATTENTION
    assert all(("gate_t" in w) == mlp_kernel for w, _ in layers.layers)
    assert got.shape == want.shape == (ROWS, STEPS, TINY["vocab_size"])
    assert got.sharding.is_equivalent_to(decode_partitioned.rows_sharding(mesh), 3)
    # The kernels' float32 sums run in another order (and Gemma 2's soft-capped tanh elsewhere).
    tol = 2e-4 if kernels == "xla" else 1e-3
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=tol, atol=tol)
    assert float(jnp.std(want)) > 0.1  # logits that could differ
    for a, b in zip(jax.tree.leaves(got_cache), jax.tree.leaves(want_cache)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol)
    # Candidates ranked per vocabulary slice and merged (the padded columns never among them).
    assert got_best[1].shape == (ROWS, CANDIDATES) and got_best[1].sharding.is_equivalent_to(
        decode_partitioned.rows_sharding(mesh), 2)
    np.testing.assert_array_equal(np.asarray(got_best[1]), np.asarray(want_best[1]))
    np.testing.assert_allclose(np.asarray(got_best[0]), np.asarray(want_best[0]), rtol=tol, atol=tol)


@pytest.mark.parametrize("kernels,refill_rows", [("xla", 0), ("interpret", 0), ("interpret", 2)])
def test_sampler_pads_rows_for_the_partitioned_step_and_samples_as_one_device(kernels, refill_rows, tmp_path):
    """Sampled (not greedy) tokens with mixed adapters: 6 prompts take 8 rows on a 2 x 2 x 2 mesh
    (whole rows of logits on each of the 8 chips), and equal one device's; with the Pallas
    kernels (interpreted: `sampler.decode_kernels` reaches the step), also in refilled rows."""
    save_hf_model("qwen2", tmp_path)
    mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    one, split = _models(tmp_path, mesh, ALL_TARGETS if kernels == "xla" else ATTENTION)
    copies = 2 if refill_rows else 1  # 12 prompts through 8 rows: 4 wait for rows to end
    prompts = [list(range(3 + c, 3 + c + n)) for c in range(copies) for n in (4, 9, 6, 11, 5, 7)]
    kw = dict(adapter_ids=[0, 1, 2, NO_ADAPTER, 0, 1] * copies, rng=jax.random.key(3),
              max_new_tokens=[8, 3, 8, 5, 8, 2] * copies, stop_ids=[], decode=False, temperature=0.8, top_k=20,
              **({"rows": 8} if refill_rows else {}))
    config = SamplerConfig(cache_dtype="float32", decode_kernels=kernels, refill_rows=refill_rows)
    sampler = Sampler(split, pad_id=0, mesh=mesh, config=config)
    assert sampler._batch_rows(6) == 8
    got = sampler.generate(split, prompts, **kw)
    want = Sampler(one, pad_id=0, config=SamplerConfig(cache_dtype="float32", refill_rows=refill_rows)).generate(
        one, prompts, **kw)
    np.testing.assert_array_equal(got.tokens, want.tokens)
    assert len({tuple(t) for t in want.tokens}) == 6 * copies


def test_kernels_too_large_for_vmem_give_way_to_xla_ops(monkeypatch, tmp_path):
    """Rows whose MLP kernel, or a cache whose attention kernel, would overflow VMEM
    (`decode_kernels.mlp_vmem_bytes`, `attention_vmem_bytes` over the budget; here a budget of
    nothing) run XLA's ops, the MLP on the kernel's transposed gate and up: the same logits as
    one device."""
    from sparta_jax.models import decode_kernels

    monkeypatch.setattr(decode_kernels, "VMEM_BUDGET", 0)
    for kernel in ("mlp", "attention"):
        monkeypatch.setattr(decode_kernels, kernel, lambda *a, kernel=kernel, **k: pytest.fail(f"the {kernel} kernel ran"))
    save_hf_model("qwen2", tmp_path)
    one, split = _models(tmp_path, sharding.make_mesh({"data": 1, "fsdp": 4, "tensor": 2}), ATTENTION)
    ids, mask, adapters = _batch(TINY["vocab_size"])
    want, _, _, _ = _decode(one, ids, mask, adapters, False)
    got, _, layers, _ = _decode(split, ids, mask, adapters, False, "interpret")
    assert all("gate_t" in w for w, _ in layers.layers)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-3, atol=1e-3)


def test_pallas_kernels_fall_back_to_xla_off_tpu(tmp_path):
    """"pallas" names Mosaic kernels, which lower only for TPU: on a CPU mesh the partitioned
    step keeps XLA's ops and layouts; an unknown name is refused."""
    save_hf_model("qwen2", tmp_path)
    _, split = _models(tmp_path, sharding.make_mesh({"data": 1, "fsdp": 4, "tensor": 2}), ATTENTION)
    layers = split.decode_weights(kernels="pallas")
    assert layers.kernels == "xla" and all("gate_up" in w and "gate_t" not in w for w, _ in layers.layers)
    assert split.decode_weights(kernels="interpret").kernels == "interpret"
    with pytest.raises(ValueError, match="kernels must be one of"):
        split.decode_weights(kernels="mosaic")
    with pytest.raises(ValueError, match="decode_kernels 'mosaic'"):
        SamplerConfig(decode_kernels="mosaic")


def test_partition_problem_names_what_does_not_split():
    config = ModelConfig.from_hf_dict(dict(architectures=["LlamaForCausalLM"], model_type="llama", **TINY))
    mesh = lambda f, t: sharding.make_mesh({"data": 1, "fsdp": f, "tensor": t}, devices=jax.devices()[: f * t])  # noqa: E731
    assert decode_partitioned.partition_problem(config, mesh(2, 2)) is None
    assert decode_partitioned.partition_problem(config, None) == "no mesh"
    assert decode_partitioned.partition_problem(config, mesh(1, 1)) == "fsdp x tensor is one chip"
    assert decode_partitioned.partition_problem(config, mesh(1, 4)) == "key-value heads 2 does not split 4 ways"
    odd = ModelConfig.from_hf_dict(dict(architectures=["LlamaForCausalLM"], model_type="llama",
                                        **{**TINY, "intermediate_size": 90}))
    assert decode_partitioned.partition_problem(odd, mesh(2, 2)) == "intermediate size 90 does not split 4 ways"
    assert decode_partitioned.row_multiple(mesh(2, 2)) == 4


def test_partitioned_step_reduce_scatters_where_xla_all_reduces():
    """The collectives of one decode step on a 1 x 4 x 2 CPU mesh (bfloat16, 16 rows, LoRA on
    every projection): under XLA's partitioning the step all-reduces whole [rows, hidden]
    activations; by hand it reduce-scatters them (q, k, v over fsdp; the output projection over
    tensor; the MLP over fsdp then tensor: at least 4 per layer), all-reduces nothing larger than
    a row's norm or LoRA factor sums, and hands the sampler each row's best candidates only."""
    import re

    from sparta_jax import roofline
    from sparta_jax.models.llama import LlamaForCausalLM, init_cache

    shape = dict(architectures=["LlamaForCausalLM"], model_type="llama", **{**TINY, "hidden_size": 128,
                 "intermediate_size": 256, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 256})
    config = ModelConfig.from_hf_dict(shape)
    mesh = sharding.make_mesh({"data": 1, "fsdp": 4, "tensor": 2})
    rows = 16
    collectives = {}
    for partitioned in (False, True):
        model = LlamaForCausalLM(config, lora=uniform_lora_config(3, 4, 8.0, targets=ALL_TARGETS), dtype=jnp.bfloat16,
                                 param_dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
        model.activation_sharding = sharding.batch_sharding(mesh, rank=1)
        graphdef, state = nnx.split(model)
        state = jax.device_put(state, sharding.state_shardings(state, mesh))
        layers = jax.jit(lambda st: nnx.merge(graphdef, st).decode_weights(partitioned=partitioned))(state)
        cache = init_cache(config, rows, 64, jnp.bfloat16)

        def step(state, layers, token, live, cache, adapter_ids):
            return decode_step_candidates(nnx.merge(graphdef, state), layers, token, live, cache, adapter_ids, 8)

        with jax.set_mesh(mesh):
            hlo = jax.jit(step).lower(state, layers, jnp.zeros((rows,), jnp.int32), jnp.ones((rows,), bool), cache,
                                      jnp.arange(rows, dtype=jnp.int32) % 3).compile().as_text()
        found = re.findall(r"^\s*(?:ROOT )?%\S+ = (.*?) (all-reduce|reduce-scatter|all-to-all)(?:-start)?\(", hlo, re.M)
        collectives[partitioned] = [(op, roofline.array_bytes(t) // 4) for t, op in found]  # elements (CPU: float32)
    activation = rows * config.hidden_size
    assert any(op == "all-reduce" and size >= activation for op, size in collectives[False])
    assert not any(op == "all-reduce" and size >= activation // 8 for op, size in collectives[True])
    assert sum(op == "reduce-scatter" for op, _ in collectives[True]) >= 4 * config.num_layers
    assert max(size for op, size in collectives[True] if op == "all-to-all") <= rows * 8  # candidates, not logits
