"""The sampler against transformers: greedy tokens, filtered distributions, compile counts."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import nnx
from transformers.generation.logits_process import (TemperatureLogitsWarper, TopKLogitsWarper,
                                                    TopPLogitsWarper)

from sparta_jax import sharding
from sparta_jax.models import NO_ADAPTER
from sparta_jax.models.loading import from_pretrained
from sparta_jax.sampling import PromptTooLongError, Sampler, SamplerConfig
from sparta_jax.iteration_time import queue_schedule
from sparta_jax.sampling_filters import filtered_logits, sample_tokens
from tiny_models import TINY, save_hf_model

ONE = None  # set in fixture


@pytest.fixture(scope="module")
def mesh1():
    return sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, devices=jax.devices()[:1])


def random_prompts(n, vocab, seed, lo=3, hi=20):
    rng = np.random.default_rng(seed)
    return [list(rng.integers(1, vocab, size=int(rng.integers(lo, hi)))) for _ in range(n)]


def hf_greedy(model, prompts, max_new, pad_id=0):
    """transformers' generate, greedy, on a left-padded batch; new tokens per row."""
    length = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), length), pad_id)
    mask = torch.zeros((len(prompts), length), dtype=torch.long)
    for r, p in enumerate(prompts):
        ids[r, length - len(p):] = torch.tensor(p)
        mask[r, length - len(p):] = 1
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=max_new,
                             min_new_tokens=max_new, pad_token_id=pad_id, eos_token_id=None)
    return out[:, length:].numpy()


@pytest.mark.parametrize("family", ["llama", "qwen2", "mistral"])
@pytest.mark.reference
def test_greedy_equals_transformers_generate(family, tmp_path, mesh1):
    hf = save_hf_model(family, tmp_path)
    model, _ = from_pretrained(str(tmp_path), dtype=jnp.float32, mesh=mesh1, load_tokenizer=False)
    sampler = Sampler(model, pad_id=0, config=SamplerConfig(cache_dtype="float32"))
    prompts = random_prompts(4, TINY["vocab_size"], seed=1)
    ours = sampler.generate(model, prompts, rng=jax.random.key(0), max_new_tokens=16, stop_ids=[], decode=False)
    np.testing.assert_array_equal(ours.tokens, hf_greedy(hf, prompts, 16))
    assert list(ours.lengths) == [16] * 4 and ours.finish_reasons == ["length"] * 4


@pytest.mark.reference
def test_smollm2_greedy_equals_transformers(smollm2_dir, mesh1):
    model, tokenizer = from_pretrained(smollm2_dir, dtype=jnp.float32, mesh=mesh1)
    hf = transformers.AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
    sampler = Sampler(model, tokenizer, config=SamplerConfig(cache_dtype="float32"))
    questions = ["What is the capital of France?", "What is 12 + 7?", "Name a primary colour.",
                 "Say hello in Spanish."]
    prompts = sampler.encode_chat(questions)
    ours = sampler.generate(model, prompts, rng=jax.random.key(0), max_new_tokens=24, stop_ids=[])
    ref = hf_greedy(hf, prompts, 24, pad_id=tokenizer.pad_token_id)
    np.testing.assert_array_equal(ours.tokens, ref)
    stopped = sampler.generate(model, prompts, rng=jax.random.key(0), max_new_tokens=24)
    assert "Paris" in stopped.texts[0]
    assert stopped.finish_reasons[0] == "stop"
    n = stopped.lengths[0]
    assert stopped.tokens[0, n - 1] == tokenizer.eos_token_id  # the stop token is counted ...
    assert (stopped.tokens[0, n:] == sampler.pad_id).all()  # ... and what follows is masked
    assert "<|im_end|>" not in stopped.texts[0]


# ------------------------------------------------------------------------------- filters
def hf_filtered(logits, temperature, top_k, top_p):
    scores = torch.tensor(logits)[None]
    for proc in (TemperatureLogitsWarper(temperature), TopKLogitsWarper(top_k) if top_k else None,
                 TopPLogitsWarper(top_p) if top_p < 1 else None):
        if proc is not None:
            scores = proc(None, scores)
    return scores[0].numpy()


SETTINGS = [(0.7, 50, 0.95), (1.0, 5, 1.0), (1.3, 0, 0.8), (0.5, 200, 0.5), (1.0, 1, 0.9), (0.9, 0, 1.0)]


@pytest.mark.parametrize("candidates", [None, 256])
@pytest.mark.reference
def test_filters_equal_transformers_processors(candidates):
    rng = np.random.default_rng(0)
    vocab = 1000
    logits = (rng.standard_normal((len(SETTINGS), vocab)) * 3).astype(np.float32)
    logits[3, :10] = 8.0  # ties at the top
    t, k, p = (np.asarray(col) for col in zip(*SETTINGS))
    if candidates is not None:  # top_k 0 means "all candidates" there: compare only bounded rows
        keep = (k > 0) & (k <= candidates)
        logits, t, k, p = logits[keep], t[keep], k[keep], p[keep]
    ours = np.asarray(filtered_logits(jnp.asarray(logits), jnp.asarray(t, jnp.float32), jnp.asarray(k, jnp.int32),
                                      jnp.asarray(p, jnp.float32), candidates))
    for r in range(len(logits)):
        ref = hf_filtered(logits[r], float(t[r]), int(k[r]), float(p[r]))
        np.testing.assert_array_equal(np.isfinite(ours[r]), np.isfinite(ref), err_msg=f"row {r}")
        kept = np.isfinite(ref)
        np.testing.assert_allclose(ours[r][kept], ref[kept], rtol=1e-6)
        assert 0 < kept.sum() < vocab or (k[r] == 0 and p[r] == 1.0)


def test_sampled_frequencies_match_filtered_distribution():
    rng = np.random.default_rng(1)
    logits = jnp.asarray(rng.standard_normal((1, 40)).astype(np.float32) * 2)
    t, k, p = jnp.asarray([0.8]), jnp.asarray([10], jnp.int32), jnp.asarray([0.9])
    expected = np.asarray(jax.nn.softmax(filtered_logits(logits, t, k, p)))[0]
    draws = 20000
    keys = jax.random.split(jax.random.key(7), draws)
    tokens = jax.vmap(lambda key: sample_tokens(key, logits, t, k, p, candidates=16))(keys)[:, 0]
    freq = np.bincount(np.asarray(tokens), minlength=40) / draws
    assert set(np.nonzero(freq)[0]) <= set(np.nonzero(expected)[0])  # nothing filtered is ever drawn
    sigma = np.sqrt(expected * (1 - expected) / draws)
    assert np.all(np.abs(freq - expected) <= 5 * sigma + 1e-9)
    # Greedy rows take the argmax whatever the key.
    greedy = sample_tokens(jax.random.key(0), logits, jnp.asarray([0.0]), k, p)
    assert int(greedy[0]) == int(jnp.argmax(logits[0]))


# ------------------------------------------------------------------------------- batches
@pytest.fixture(scope="module")
def lora_model(tmp_path_factory, mesh1):
    from sparta_jax.models.lora import uniform_lora_config

    folder = tmp_path_factory.mktemp("base")
    save_hf_model("qwen2", folder)
    model, _ = from_pretrained(str(folder), dtype=jnp.float32, mesh=mesh1, load_tokenizer=False,
                               lora=uniform_lora_config(3, rank=4, alpha=8.0))
    # Fresh adapters have B = 0; give them weights so each member is a different model.
    for i, (name, var) in enumerate(sorted(model.lora.arrays().items())):
        key = jax.random.key(i)
        getattr(model.lora, name).set_value(0.3 * jax.random.normal(key, var.shape, var.dtype))
    return folder, model


def test_mixed_adapter_batch_equals_one_call_per_adapter(lora_model):
    _, model = lora_model
    sampler = Sampler(model, pad_id=0, config=SamplerConfig(cache_dtype="float32"))
    prompts = random_prompts(6, TINY["vocab_size"], seed=2)
    adapters = [0, 1, 2, NO_ADAPTER, 1, 0]
    mixed = sampler.generate(model, prompts, adapter_ids=adapters, rng=jax.random.key(0), max_new_tokens=12,
                             stop_ids=[], decode=False)
    for a in sorted(set(adapters)):
        rows = [r for r, x in enumerate(adapters) if x == a]
        alone = sampler.generate(model, [prompts[r] for r in rows], adapter_ids=a, rng=jax.random.key(0),
                                 max_new_tokens=12, stop_ids=[], decode=False)
        np.testing.assert_array_equal(mixed.tokens[rows], alone.tokens)
    assert len({tuple(mixed.tokens[r]) for r in (0, 1, 2, 3)}) == 4  # members really differ


def test_changing_settings_inside_buckets_compiles_nothing(lora_model):
    _, model = lora_model
    sampler = Sampler(model, pad_id=0, config=SamplerConfig(cache_dtype="float32"))
    prompts = random_prompts(4, TINY["vocab_size"], seed=3, lo=5, hi=30)  # prompt bucket 32
    rng = jax.random.key(0)
    sampler.generate(model, prompts, rng=rng, max_new_tokens=10, temperature=0.7, top_k=50, top_p=0.95,
                     stop_ids=[5], decode=False)
    assert sampler.trace_count == 1
    variants = [
        dict(temperature=0.0), dict(temperature=[0.1, 0.5, 1.0, 2.0]), dict(top_k=3), dict(top_k=[1, 2, 0, 40]),
        dict(top_p=0.5), dict(max_new_tokens=16), dict(max_new_tokens=[9, 3, 12, 16]),
        dict(stop_ids=[7, 8]), dict(stop_ids=[]), dict(adapter_ids=[0, 1, 2, NO_ADAPTER]),
    ]
    for change in variants:
        kw = dict(rng=rng, max_new_tokens=10, temperature=0.7, top_k=50, top_p=0.95, stop_ids=[5], decode=False)
        kw.update(change)
        sampler.generate(model, prompts, **kw)
    sampler.generate(model, [p[:4] for p in prompts], rng=rng, max_new_tokens=10, decode=False)  # shorter prompts
    new_weights = jax.tree.map(lambda x: x * 1.01, model)  # DPO changed the weights
    sampler.generate(new_weights, prompts, rng=rng, max_new_tokens=10, decode=False)
    assert sampler.trace_count == 1
    sampler.generate(model, prompts, rng=rng, max_new_tokens=40, decode=False)  # a bigger budget bucket
    assert sampler.trace_count == 2


def test_per_row_budgets_and_stops(lora_model):
    _, model = lora_model
    sampler = Sampler(model, pad_id=0, config=SamplerConfig(cache_dtype="float32"))
    prompts = random_prompts(3, TINY["vocab_size"], seed=4)
    free = sampler.generate(model, prompts, rng=jax.random.key(0), max_new_tokens=[5, 9, 0], stop_ids=[],
                            decode=False)
    assert list(free.lengths) == [5, 9, 0]
    assert (free.tokens[0, 5:] == 0).all() and (free.tokens[2] == 0).all()
    # Stop on the 3rd token row 1 produced freely: it ends there, with reason "stop".
    stop_token = int(free.tokens[1, 2])
    first = int(np.argmax(free.tokens[1] == stop_token))
    stopped = sampler.generate(model, prompts, rng=jax.random.key(0), max_new_tokens=[5, 9, 0],
                               stop_ids=[stop_token], decode=False)
    assert stopped.lengths[1] == first + 1 and stopped.finish_reasons[1] == "stop"
    np.testing.assert_array_equal(stopped.tokens[1, : first + 1], free.tokens[1, : first + 1])


def test_sharded_generation_equals_one_device(lora_model):
    folder, model1 = lora_model
    mesh8 = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    model8, _ = from_pretrained(str(folder), dtype=jnp.float32, mesh=mesh8, load_tokenizer=False,
                                lora=model1.lora_config)
    for name, var in model1.lora.arrays().items():  # same adapter weights, resharded
        target = getattr(model8.lora, name)
        target.set_value(jax.device_put(var, target[...].sharding))
    prompts = random_prompts(6, TINY["vocab_size"], seed=5)
    kw = dict(adapter_ids=[0, 1, 2, NO_ADAPTER, 0, 1], rng=jax.random.key(3), max_new_tokens=10, stop_ids=[],
              decode=False)
    one = Sampler(model1, pad_id=0, config=SamplerConfig(cache_dtype="float32")).generate(model1, prompts, **kw)
    eight = Sampler(model8, pad_id=0, mesh=mesh8, config=SamplerConfig(cache_dtype="float32")).generate(
        model8, prompts, **kw)
    np.testing.assert_array_equal(one.tokens, eight.tokens)


def test_decode_weights_take_the_decode_layout_on_a_mesh(lora_model):
    """On a mesh the per-call copy of the decode weights is laid out for the step that reads it:
    the hand-partitioned step's layouts (models/decode_partitioned.py: q, k and v side by side per
    tensor shard, gate and up per chip), or, under XLA's partitioning (`partitioned=False`, and
    where the hand partition does not split the model), column-parallel gate and up and a
    row-parallel down projection over fsdp x tensor (sharding.DECODE_RULES), every other weight
    as stored. aot prices the decode step with the same shardings."""
    from jax.sharding import NamedSharding, PartitionSpec as P

    from sparta_jax import aot
    from sparta_jax.models.decode_partitioned import PartitionedLayers

    folder, model1 = lora_model
    mesh8 = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    model8, _ = from_pretrained(str(folder), dtype=jnp.float32, mesh=mesh8, load_tokenizer=False,
                                lora=model1.lora_config)
    _, state = nnx.split(model8)
    stacked_shape = lambda prefix, name: state[prefix][name].shape  # noqa: E731

    layers = nnx.jit(lambda m: m.decode_weights(partitioned=False))(model8)
    expected = {"gate_proj": P(None, ("fsdp", "tensor")), "up_proj": P(None, ("fsdp", "tensor")),
                "down_proj": P(("fsdp", "tensor"), None), "q_proj": P("fsdp", "tensor"), "o_proj": P("tensor", "fsdp")}
    for name, spec in expected.items():
        assert layers[0][0][name].sharding.is_equivalent_to(NamedSharding(mesh8, spec), 2), name
    np.testing.assert_array_equal(layers[1][0]["down_proj"], model8.layers.down_proj[...][1])
    priced = aot._layer_shardings(jax.eval_shape(lambda m: m.decode_weights(partitioned=False), model8),
                                  stacked_shape, mesh8)
    for (w, lw), (pw, plw) in zip(layers, priced):
        for ran, costed in ((w, pw), (lw, plw)):
            for name in ran:
                assert ran[name].sharding.is_equivalent_to(costed[name].sharding, ran[name].ndim), name

    split = nnx.jit(lambda m: m.decode_weights())(model8)
    assert isinstance(split, PartitionedLayers)
    w, lw = split.layers[1]
    expected = {"qkv": P("fsdp", "tensor"), "gate_up": P(None, ("fsdp", "tensor")),
                "down_proj": P(("fsdp", "tensor"), None), "o_proj": P("tensor", "fsdp"), "mlp_norm": P(("fsdp", "tensor"))}
    for name, spec in expected.items():
        assert w[name].sharding.is_equivalent_to(NamedSharding(mesh8, spec), w[name].ndim), name
    # Shard t of qkv holds q's, k's and v's column block t; chip s of gate_up gate's block s, then up's.
    q, k, v = (model8.layers.arrays()[f"{p}_proj"][1] for p in "qkv")
    q_cols, kv_cols = q.shape[1] // 2, k.shape[1] // 2
    np.testing.assert_array_equal(w["qkv"][:, : q_cols], q[:, : q_cols])
    np.testing.assert_array_equal(w["qkv"][:, q_cols + 2 * kv_cols: 2 * q_cols + 2 * kv_cols], q[:, q_cols:])
    np.testing.assert_array_equal(w["qkv"][:, -kv_cols:], v[:, kv_cols:])
    width = model8.config.intermediate_size // 4
    np.testing.assert_array_equal(w["gate_up"][:, 2 * width: 3 * width], model8.layers.gate_proj[...][1][:, width: 2 * width])
    np.testing.assert_array_equal(w["gate_up"][:, 3 * width: 4 * width], model8.layers.up_proj[...][1][:, width: 2 * width])
    priced = aot._layer_shardings(jax.eval_shape(lambda m: m.decode_weights(), model8), stacked_shape, mesh8)
    for ran, costed in zip(jax.tree.leaves(split), jax.tree.leaves(priced)):
        assert ran.sharding.is_equivalent_to(costed.sharding, ran.ndim)


@pytest.mark.parametrize("refill_rows", [0, 2])
def test_layers_sliced_in_each_step_equal_layers_sliced_once(lora_model, refill_rows):
    """`slice_layers="per_step"` (each decode step slices the layer stacks: no copy of the weights
    for the call) gives the tokens of `"per_call"`, sampled with mixed adapters, in static batches
    and in refilled rows."""
    _, model = lora_model
    prompts = random_prompts(7, TINY["vocab_size"], seed=21)
    kw = dict(rng=jax.random.key(5), adapter_ids=[0, 1, 2, NO_ADAPTER, 2, 1, 0], max_new_tokens=[12, 5, 9, 12, 3, 8, 10],
              temperature=0.9, top_k=20, stop_ids=[], decode=False, **({"rows": 3} if refill_rows else {}))
    out = {how: Sampler(model, pad_id=0, config=SamplerConfig(cache_dtype="float32", refill_rows=refill_rows,
                                                              slice_layers=how)).generate(model, prompts, **kw)
           for how in ("per_call", "per_step")}
    np.testing.assert_array_equal(out["per_step"].tokens, out["per_call"].tokens)
    np.testing.assert_array_equal(out["per_step"].lengths, [12, 5, 9, 12, 3, 8, 10])
    assert len({tuple(t) for t in out["per_call"].tokens[:4]}) == 4  # the adapters make the rows differ
    with pytest.raises(ValueError, match="slice_layers 'each'"):
        SamplerConfig(slice_layers="each")


def test_decode_weights_are_the_stacks_in_the_compute_dtype(lora_model):
    """Sliced once or left stacked, `decode_weights` holds each layer's stored weights and its LoRA
    factors cast to the compute dtype (a bfloat16 model with float32 adapters reads bfloat16 ones)."""
    from sparta_jax.models.llama import StackedLayers

    _, model = lora_model
    weights, lora = model.layers.arrays(), model.lora.arrays()
    stacked = model.decode_weights(per_step=True)
    assert isinstance(stacked, StackedLayers)
    jax.tree.map(np.testing.assert_array_equal, (stacked.weights, stacked.lora), (weights, lora))
    for sliced in (model.decode_weights(), stacked.per_layer()):
        assert len(sliced) == TINY["num_hidden_layers"]
        for i, (w, lw) in enumerate(sliced):
            jax.tree.map(np.testing.assert_array_equal, (w, lw),
                         ({n: a[i] for n, a in weights.items()}, {n: a[i] for n, a in lora.items()}))
    half = jax.tree.map(lambda x: x, model)
    half.dtype = jnp.bfloat16
    assert model.lora.q_proj_a[...].dtype == jnp.float32
    lw = half.decode_weights(per_step=True).lora
    assert {a.dtype for a in lw.values()} == {jnp.dtype(jnp.bfloat16)}
    np.testing.assert_array_equal(lw["q_proj_a"], model.lora.q_proj_a[...].astype(jnp.bfloat16))


# ------------------------------------------------------------------ refilled rows (queue)
def queue_sampler(model, refill_rows, mesh=None):
    return Sampler(model, pad_id=0, mesh=mesh, config=SamplerConfig(cache_dtype="float32", refill_rows=refill_rows))


@pytest.mark.parametrize("refill_rows", [1, 3])
def test_refilled_rows_equal_one_static_batch(lora_model, refill_rows):
    """Greedy answers from 3 rows refilled as answers end equal one static batch of every prompt:
    per-row budgets and stop ids, mixed adapters, prompts of different lengths."""
    _, model = lora_model
    prompts = random_prompts(11, TINY["vocab_size"], seed=7)
    budgets = [int(b) for b in np.random.default_rng(7).integers(1, 30, size=11)]
    kw = dict(rng=jax.random.key(0), adapter_ids=[0, 1, 2, NO_ADAPTER, 1, 0, 2, 2, 1, 0, NO_ADAPTER],
              max_new_tokens=budgets, stop_ids=[11, 12], decode=False)
    static = Sampler(model, pad_id=0, config=SamplerConfig(cache_dtype="float32")).generate(model, prompts, **kw)
    queued = queue_sampler(model, refill_rows).generate(model, prompts, rows=3, **kw)
    assert "stop" in static.finish_reasons and "length" in static.finish_reasons  # both endings occur
    np.testing.assert_array_equal(queued.tokens, static.tokens)
    np.testing.assert_array_equal(queued.lengths, static.lengths)
    assert queued.finish_reasons == static.finish_reasons
    # The loop took the steps its schedule predicts (what `aot --iteration` counts), fewer than
    # static batches of 3 rows would.
    assert queued.decode_steps == queue_schedule(static.lengths, 3, refill_rows)[0]
    assert queued.decode_steps < sum(max(static.lengths[i: i + 3]) for i in range(0, 11, 3))


def test_prompts_of_different_buckets_queue_apart(lora_model):
    """Prompts of 3-19 tokens (bucket 32) and of 40-60 (bucket 64) run as two queues, each
    prefilling at its own bucket; answers equal one static batch, in the prompts' order, and
    sampled answers keep their keys (their index in the call) whatever queue they ran in."""
    _, model = lora_model
    short, long = random_prompts(5, TINY["vocab_size"], seed=11), random_prompts(3, TINY["vocab_size"], 12, 40, 60)
    prompts = [long[0], *short[:3], long[1], *short[3:], long[2]]
    budgets = [9, 4, 14, 6, 11, 3, 8, 12]
    kw = dict(rng=jax.random.key(0), adapter_ids=[0, 1, 2, 0, 1, 2, 0, 1], max_new_tokens=budgets, stop_ids=[],
              decode=False)
    static = Sampler(model, pad_id=0, config=SamplerConfig(cache_dtype="float32")).generate(model, prompts, **kw)
    sampler = queue_sampler(model, 1)
    queued = sampler.generate(model, prompts, rows=2, **kw)
    np.testing.assert_array_equal(queued.tokens, static.tokens)
    in_bucket = lambda rows: [budgets[i] for i in rows]  # noqa: E731
    assert queued.decode_steps == (queue_schedule(in_bucket([1, 2, 3, 5, 6]), 2, 1)[0]
                                   + queue_schedule(in_bucket([0, 4, 7]), 2, 1)[0])
    assert sampler.trace_count == 2  # one program per bucket
    sampled = dict(kw, temperature=1.0, top_k=20)
    together = sampler.generate(model, prompts, rows=2, **sampled)
    alone = sampler.generate(model, [prompts[i] for i in (1, 2, 3, 5, 6)], rows=2, key_ids=[1, 2, 3, 5, 6],
                             **dict(sampled, adapter_ids=[1, 2, 0, 2, 0], max_new_tokens=in_bucket([1, 2, 3, 5, 6])))
    np.testing.assert_array_equal(together.tokens[[1, 2, 3, 5, 6], :14], alone.tokens)


@pytest.mark.parametrize("family", ["mistral_window", "gemma3"])
def test_refilled_rows_equal_static_batch_with_sliding_windows(family, tmp_path, mesh1):
    """A refilled row's window counts from its own slots (its cache index is its own)."""
    save_hf_model(family, tmp_path)
    model, _ = from_pretrained(str(tmp_path), dtype=jnp.float32, mesh=mesh1, load_tokenizer=False)
    prompts = random_prompts(7, TINY["vocab_size"], seed=8)
    kw = dict(rng=jax.random.key(0), max_new_tokens=[3, 12, 5, 9, 14, 2, 11], stop_ids=[], decode=False)
    static = Sampler(model, pad_id=0, config=SamplerConfig(cache_dtype="float32")).generate(model, prompts, **kw)
    queued = queue_sampler(model, 1).generate(model, prompts, rows=2, **kw)
    np.testing.assert_array_equal(queued.tokens, static.tokens)


def test_sampled_answers_do_not_depend_on_rows(lora_model):
    """With sampling each prompt draws from its own keys: 2 refilled rows, 4, and every prompt in
    a row of its own give the same answers (and different keys give different ones)."""
    _, model = lora_model
    sampler = queue_sampler(model, 1)
    prompts = random_prompts(9, TINY["vocab_size"], seed=9)
    kw = dict(adapter_ids=[0, 1, 2] * 3, temperature=1.0, top_k=20, top_p=0.9, max_new_tokens=[20, 4, 13] * 3,
              stop_ids=[5], decode=False)
    runs = [sampler.generate(model, prompts, rng=jax.random.key(4), rows=rows, **kw) for rows in (2, 4, 9)]
    for other in runs[1:]:
        np.testing.assert_array_equal(other.tokens, runs[0].tokens)
        np.testing.assert_array_equal(other.lengths, runs[0].lengths)
    assert runs[0].decode_steps > runs[1].decode_steps > runs[2].decode_steps
    changed = sampler.generate(model, prompts, rng=jax.random.key(5), rows=2, **kw)
    assert (changed.tokens != runs[0].tokens).any()


def test_queue_programs_compile_once_per_bucket(lora_model):
    _, model = lora_model
    sampler = queue_sampler(model, 2)
    for n in (5, 7, 8):  # queue of 4 rows x 2
        sampler.generate(model, random_prompts(n, TINY["vocab_size"], seed=n), rng=jax.random.key(0), rows=4,
                         max_new_tokens=6, stop_ids=[], decode=False)
    assert sampler.trace_count == 1
    sampler.generate(model, random_prompts(9, TINY["vocab_size"], seed=9), rng=jax.random.key(0), rows=4,
                     max_new_tokens=6, stop_ids=[], decode=False)  # queue 4 x 4
    assert sampler.trace_count == 2


def test_refilled_rows_sharded_equal_one_device(lora_model):
    folder, model1 = lora_model
    mesh8 = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    model8, _ = from_pretrained(str(folder), dtype=jnp.float32, mesh=mesh8, load_tokenizer=False,
                                lora=model1.lora_config)
    for name, var in model1.lora.arrays().items():
        target = getattr(model8.lora, name)
        target.set_value(jax.device_put(var, target[...].sharding))
    prompts = random_prompts(10, TINY["vocab_size"], seed=10)
    kw = dict(adapter_ids=[0, 1, 2, NO_ADAPTER, 0] * 2, rng=jax.random.key(3), max_new_tokens=[4, 11, 7, 2, 9] * 2,
              stop_ids=[], decode=False, rows=8)  # rows: a multiple of the mesh's 8 chips (the logits' split)
    one = queue_sampler(model1, 2).generate(model1, prompts, **kw)
    eight = queue_sampler(model8, 2, mesh=mesh8).generate(model8, prompts, **kw)
    np.testing.assert_array_equal(one.tokens, eight.tokens)
    assert one.decode_steps == eight.decode_steps


def test_prompt_longer_than_context_is_refused(lora_model):
    _, model = lora_model
    sampler = Sampler(model, pad_id=0)
    with pytest.raises(PromptTooLongError, match="largest bucket"):
        sampler.generate(model, [[1] * 5000], rng=jax.random.key(0), max_new_tokens=4)
    with pytest.raises(PromptTooLongError, match="context of 256"):
        sampler.generate(model, [[1] * 200], rng=jax.random.key(0), max_new_tokens=100)


# ------------------------------------------------------------------------------- scoring
@pytest.mark.reference
def test_continuation_scores_equal_transformers_logprobs(tmp_path, mesh1):
    hf = save_hf_model("llama", tmp_path)
    model, _ = from_pretrained(str(tmp_path), dtype=jnp.float32, mesh=mesh1, load_tokenizer=False)
    sampler = Sampler(model, pad_id=0)
    prompts = random_prompts(4, TINY["vocab_size"], seed=6)
    conts = [[5], [7, 9], [11, 12, 13], [2]]
    ours = sampler.score_continuations(model, prompts, conts)
    for r, (p, c) in enumerate(zip(prompts, conts)):
        with torch.no_grad():
            logits = hf(input_ids=torch.tensor([p + c])).logits[0]
        logp = torch.log_softmax(logits, -1)
        expected = sum(float(logp[len(p) - 1 + j, tok]) for j, tok in enumerate(c))
        assert abs(ours[r] - expected) < 1e-4, (r, ours[r], expected)


@pytest.mark.reference
def test_candidate_logprobs_equal_one_row_per_candidate(smollm2_dir, mesh1):
    """The judges' "1".."10" scored from one token tree per prompt == scoring each candidate alone,
    and so are candidates on several branches of any depth."""
    from sparta_jax.sparta import LOGIT_ASSISTANT_PREFIX, logit_candidate_ids

    model, tokenizer = from_pretrained(smollm2_dir, dtype=jnp.float32, mesh=mesh1)
    sampler = Sampler(model, tokenizer)
    candidates = logit_candidate_ids(tokenizer)
    assert len(candidates) == 10 and len(candidates[9]) == 2  # digit splitting: "10" is "1", "0"
    prompts = [p + tokenizer.encode(LOGIT_ASSISTANT_PREFIX, add_special_tokens=False)
               for p in sampler.encode_chat(["Rate 2+2=4.", "Rate the sky is green."])]
    table = sampler.candidate_logprobs(model, prompts, candidates, adapter_ids=[-1, -1])
    for j, cand in enumerate(candidates):
        alone = sampler.score_continuations(model, prompts, [list(cand)] * 2)
        np.testing.assert_allclose(table[:, j], alone, atol=2e-4)
    branches = [[5], [6, 7], [8, 9], [6, 8, 4], [6], [8, 9, 4]]
    table = sampler.candidate_logprobs(model, prompts, branches)
    for j, cand in enumerate(branches):
        np.testing.assert_allclose(table[:, j], sampler.score_continuations(model, prompts, [cand] * 2), atol=2e-4)
    with pytest.raises(ValueError, match="at least one token"):
        sampler.candidate_logprobs(model, prompts, [[5], []])


# ------------------------------------------------------------------- full parameter stacks
@pytest.mark.reference
def test_member_stack_rows_equal_each_members_own_model(tmp_path, mesh1):
    """A MemberStack of three full parameter sets: greedy tokens, continuation scores and
    candidate tables of a mixed batch equal transformers on each member's own weights."""
    from sparta_jax.models.export import export_merged
    from sparta_jax.models.stack import stack_of

    save_hf_model("qwen2", tmp_path / "base")
    model, _ = from_pretrained(str(tmp_path / "base"), dtype=jnp.float32, mesh=mesh1, load_tokenizer=False)
    stack = stack_of([model] * 3, ("a", "b", "c"))
    noise = jax.tree.map(lambda x: 0.05 * jax.random.normal(jax.random.key(x.size % 97), x.shape, x.dtype), stack.state)
    stack = stack.replace_state(jax.tree.map(lambda x, e: x + e * jnp.arange(3.0).reshape((3,) + (1,) * (x.ndim - 1)),
                                             stack.state, noise))  # member 0 is the base, 1 and 2 differ
    hf = []
    for m in range(3):
        export_merged(stack.member(m), str(tmp_path / f"m{m}"), dtype="float32")
        hf.append(transformers.AutoModelForCausalLM.from_pretrained(tmp_path / f"m{m}", dtype=torch.float32).eval())

    sampler = Sampler(stack, pad_id=0, config=SamplerConfig(cache_dtype="float32"))
    prompts = random_prompts(7, TINY["vocab_size"], seed=11)
    members = [2, 0, 1, 2, 2, 0, 2]  # uneven: member 2 has four rows, member 1 one
    out = sampler.generate(stack, prompts, adapter_ids=members, rng=jax.random.key(0), max_new_tokens=10,
                           stop_ids=[], decode=False)
    for r, (p, m) in enumerate(zip(prompts, members)):
        np.testing.assert_array_equal(out.tokens[r], hf_greedy(hf[m], [p], 10)[0])
    assert len({tuple(out.tokens[r]) for r in (0, 1, 2)}) == 3  # the members really differ

    conts = [[5], [7, 9], [11, 12, 13], [2], [4, 4], [8], [3, 1]]
    scores = sampler.score_continuations(stack, prompts, conts, adapter_ids=members)
    for r, (p, c, m) in enumerate(zip(prompts, conts, members)):
        with torch.no_grad():
            logp = torch.log_softmax(hf[m](input_ids=torch.tensor([p + c])).logits[0], -1)
        expected = sum(float(logp[len(p) - 1 + j, tok]) for j, tok in enumerate(c))
        assert abs(scores[r] - expected) < 1e-4, (r, scores[r], expected)

    candidates = [[6], [6, 9], [6, 10]]  # on one path
    table = sampler.candidate_logprobs(stack, prompts, candidates, adapter_ids=members)
    single = Sampler(model, pad_id=0)
    for m in range(3):
        rows = [r for r, x in enumerate(members) if x == m]
        alone = single.candidate_logprobs(stack.member(m), [prompts[r] for r in rows], candidates)
        np.testing.assert_allclose(table[rows], alone, atol=1e-5)

    with pytest.raises(ValueError, match=r"member ids must lie in \[0, 3\)"):
        sampler.generate(stack, prompts[:1], adapter_ids=[3], rng=jax.random.key(0), max_new_tokens=2)
    with pytest.raises(ValueError, match="needs adapter_ids"):
        sampler.generate(stack, prompts[:1], rng=jax.random.key(0), max_new_tokens=2)
