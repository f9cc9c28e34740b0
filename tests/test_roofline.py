"""The decode step reads its cache once, and the roofline arithmetic is right.

XLA's own cost analysis (CPU) is the measure: a decode step's bytes accessed stay within 1.2x of
the bytes it must move, no instruction copies a whole cache layer, and the generate loop slices
no weights in its body. The roofline's sums are checked by hand and its layer extrapolation
against a full compile.
"""
import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sparta_jax import dpo, roofline
from sparta_jax.models.config import ModelConfig
from sparta_jax.models.llama import LlamaForCausalLM, init_cache
from sparta_jax.models.lora import uniform_lora_config
from sparta_jax.sampling import Sampler, SamplerConfig, decode_step

# SmolLM2-135M's layer (hidden 576, 9 query and 3 key-value heads of 64, MLP 1536) with a small
# vocabulary and two layers, so the test compiles in seconds and the embedding does not drown
# the layers and cache in the totals.
SMOL_LAYERS = dict(architectures=["LlamaForCausalLM"], model_type="llama", vocab_size=512, hidden_size=576,
                   intermediate_size=1536, num_hidden_layers=2, num_attention_heads=9, num_key_value_heads=3,
                   max_position_embeddings=8192, rope_theta=10000.0, rms_norm_eps=1e-5,
                   tie_word_embeddings=True, hidden_act="silu")
BATCH, CACHE = 8, 1088


def _nbytes(tree) -> int:
    return sum(int(x.size) * x.dtype.itemsize for x in jax.tree.leaves(tree))


def _compiled_decode_step(lora: bool):
    config = ModelConfig.from_hf_dict(SMOL_LAYERS)
    model = LlamaForCausalLM(config, lora=uniform_lora_config(3, 8, 16.0) if lora else None, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    layers = jax.jit(lambda st: nnx.merge(graphdef, st).decode_weights())(state)
    cache = init_cache(config, BATCH, CACHE, jnp.float32)
    adapter_ids = jnp.arange(BATCH, dtype=jnp.int32) % 3 if lora else jnp.full((BATCH,), -1, jnp.int32)

    def step(state, layers, token, live, cache, adapter_ids):
        return decode_step(nnx.merge(graphdef, state), layers, token, live, cache, adapter_ids)

    compiled = jax.jit(step, donate_argnums=(4,)).lower(
        state, layers, jnp.zeros((BATCH,), jnp.int32), jnp.ones((BATCH,), bool), cache, adapter_ids).compile()
    # What a step must move: every layer weight (and LoRA factor), the final norm and the tied
    # unembedding read once, every cache slot read once, the logits written.
    ideal = (_nbytes(layers) + _nbytes(model.final_norm[...]) + _nbytes(model.embed[...])
             + _nbytes((cache.k, cache.v)) + BATCH * config.vocab_size * 4)
    return compiled, ideal, _nbytes(cache.k[0])


@pytest.mark.parametrize("lora", [False, True], ids=["base", "three-adapters-mixed"])
def test_decode_step_moves_little_more_than_weights_and_cache(lora):
    compiled, ideal, layer_bytes = _compiled_decode_step(lora)
    _, accessed = roofline.program_cost(compiled)
    assert ideal <= accessed <= 1.2 * ideal, (accessed, ideal, accessed / ideal)
    assert roofline.large_copies(compiled.as_text(), layer_bytes) == []


def test_large_copies_sees_a_cache_read_through_a_transpose():
    """The check above can fail: a cache kept [batch, slots, heads, dim], as before, is transposed
    for the attention matmul, a copy of the whole layer on every step."""
    cache = jnp.zeros((BATCH, CACHE, 3, 64))
    query = jnp.ones((BATCH, 3, 3, 64))

    def attend(cache, query, new, index):
        cache = jax.lax.dynamic_update_slice(cache, new, (0, index, 0, 0))
        return cache, jnp.einsum("bkgd,bskd->bkgs", query, cache)

    compiled = jax.jit(attend, donate_argnums=0).lower(cache, query, jnp.ones((BATCH, 1, 3, 64)), 5).compile()
    copies = roofline.large_copies(compiled.as_text(), cache.nbytes)
    assert copies and all(c["bytes"] >= cache.nbytes for c in copies)
    in_place = jax.jit(lambda c, n, i: jax.lax.dynamic_update_slice(c, n, (0, i, 0, 0)), donate_argnums=0)
    assert roofline.large_copies(in_place.lower(cache, jnp.ones((BATCH, 1, 3, 64)), 5).compile().as_text(),
                                 cache.nbytes) == []


def test_generate_loop_neither_copies_cache_nor_slices_weights_per_step():
    config = ModelConfig.from_hf_dict(SMOL_LAYERS)
    model = LlamaForCausalLM(config, lora=uniform_lora_config(3, 8, 16.0), rngs=nnx.Rngs(0))
    _, state = nnx.split(model)
    sampler = Sampler(model, pad_id=0, config=SamplerConfig(cache_dtype="float32"))
    rows, prompt, new = BATCH, 64, 1024
    params = dict(adapter_ids=jnp.zeros((rows,), jnp.int32), temperature=jnp.zeros((rows,)),
                  top_k=jnp.zeros((rows,), jnp.int32), top_p=jnp.ones((rows,)),
                  max_new_tokens=jnp.full((rows,), new, jnp.int32),
                  stop_ids=jnp.full((rows, sampler.config.max_stop_ids), -1, jnp.int32))
    hlo = sampler._generate.lower(state, jnp.ones((rows, prompt), jnp.int32), jnp.ones((rows, prompt), bool),
                                  params, jax.random.key(0), max_new=new).compile().as_text()
    # The decode loop is the while loop that carries the cache (the prefill's layer scan does not).
    cache_layer = f"f32[{rows},{config.num_kv_heads},{prompt + new},{config.head_dim}]"
    bodies = set(re.findall(r"while\(.*?body=%([\w.\-]+)", hlo))
    decode = {b for b in bodies if re.search(r"^%" + re.escape(b) + r" \(.*" + re.escape(cache_layer), hlo, re.M)}
    assert len(decode) == 1, (bodies, decode)
    smallest_weight = min(_nbytes(w) for w in jax.tree.leaves(model.decode_weights()) if w.ndim == 2)
    assert [c for c in roofline.large_copies(hlo, smallest_weight) if c["computation"] in decode] == []


# --------------------------------------------------------------------------- arithmetic
def test_roofline_rows_by_hand():
    chip = roofline.Chip("test", bf16_tflops=100.0, hbm_gbps=1000.0, source="test")
    # 2 GFLOP in 20 us; 30 MB in 30 us: memory bound at 30 us.
    row = roofline.decode_row("d", flops=2e9, bytes_accessed=30e6, ideal_bytes=24e6, chip=chip,
                              tokens_per_step=64, chips=4)
    assert row["bound"] == "memory" and row["seconds"] == pytest.approx(30e-6)
    assert row["tokens_per_s_per_chip"] == pytest.approx(64 / 30e-6 / 4)
    assert row["percent_of_floor"] == pytest.approx(100 * 24 / 30)
    assert row["bytes_over_ideal"] == pytest.approx(1.25)
    # 5 TFLOP in 50 ms; 1 GB in 1 ms: compute bound; 4 TFLOP of it useful: MFU 80%.
    row = roofline.train_row("t", flops=5e12, bytes_accessed=1e9, ideal_bytes=5e8, chip=chip, model_flops=4e12)
    assert row["bound"] == "compute" and row["seconds"] == pytest.approx(0.05)
    assert row["mfu"] == pytest.approx(0.8)
    # Useful flops per token: forward 2N, backward to activations 2N, LoRA 6 per weight, attention 3x.
    assert roofline.lora_dpo_model_flops(base_params=10, lora_params=1, tokens=2, attention_flops_per_token=5,
                                         reference_pass=False) == 2 * (40 + 6 + 15)
    assert roofline.lora_dpo_model_flops(base_params=10, lora_params=1, tokens=2, attention_flops_per_token=5,
                                         reference_pass=True) == 2 * (60 + 6 + 20)
    assert roofline.array_bytes("f32[8,3,1088,64]{3,2,1,0}") == 8 * 3 * 1088 * 64 * 4
    assert roofline.array_bytes("(bf16[2,3], pred[4])") == 12 + 4


def test_traffic_by_kind_by_hand():
    """`aot --roofline`'s breakdown of a decode step's bytes: each top-level op's operands and
    result, by kind; an in-place update counts its update, an asynchronous copy its buffer once
    each way, a loop is kept apart, a Pallas kernel is its own kind."""
    hlo = """HloModule m

%fused_dot (p0: bf16[4,8], p1: bf16[8,16]) -> bf16[4,16] {
  %p0 = bf16[4,8]{1,0} parameter(0)
  %p1 = bf16[8,16]{1,0} parameter(1)
  ROOT %d = bf16[4,16]{1,0} dot(%p0, %p1), lhs_contracting_dims={1}, rhs_contracting_dims={0}
}

%fused_add (p0: bf16[4,16]) -> f32[4,16] {
  %p0 = bf16[4,16]{1,0} parameter(0)
  ROOT %c = f32[4,16]{1,0} convert(%p0)
}

%fused_write (p0: f32[64,16], p1: f32[1,16], p2: s32[]) -> f32[64,16] {
  %p0 = f32[64,16]{1,0} parameter(0)
  %p1 = f32[1,16]{1,0} parameter(1)
  %p2 = s32[] parameter(2)
  ROOT %u = f32[64,16]{1,0} dynamic-update-slice(%p0, %p1, %p2, %p2)
}

ENTRY %main (x: bf16[4,8], w: bf16[8,16], cache: f32[64,16], row: f32[1,16], i: s32[]) -> f32[4,16] {
  %x = bf16[4,8]{1,0} parameter(0)
  %w = bf16[8,16]{1,0} parameter(1)
  %cache = f32[64,16]{1,0} parameter(2)
  %row = f32[1,16]{1,0} parameter(3)
  %i = s32[] parameter(4)
  %fusion.0 = f32[64,16]{1,0} fusion(%cache, %row, %i), kind=kLoop, calls=%fused_write
  %fusion.1 = bf16[4,16]{1,0} fusion(%x, %w), kind=kOutput, calls=%fused_dot, metadata={op_name="a%b"}
  %all-reduce.2 = bf16[4,16]{1,0} all-reduce(%fusion.1), replica_groups={}, to_apply=%fused_add
  %while.3 = f32[64,16]{1,0} while(%cache), condition=%fused_add, body=%fused_add
  %tuple.4 = (f32[64,16]) tuple(%while.3)
  %copy-start.6 = (bf16[8,16]{1,0:S(1)}, bf16[8,16]{1,0}, u32[]) copy-start(%w)
  %copy-done.7 = bf16[8,16]{1,0:S(1)} copy-done(%copy-start.6)
  %kernel.8 = bf16[4,16]{1,0} custom-call(%x, %w), custom_call_target="tpu_custom_call", frontend_attributes={kernel_metadata={"mesh_axes":"[\"fsdp\"]"
}}, backend_config={"custom_call_config":{}}
  ROOT %fusion.5 = f32[4,16]{1,0} fusion(%all-reduce.2), kind=kLoop, calls=%fused_add
}
"""
    assert roofline.traffic_by_kind(hlo) == {
        "matmul fusions": 4 * 8 * 2 + 8 * 16 * 2 + 4 * 16 * 2,  # x and w read, the product written
        "collectives": 2 * 4 * 16 * 2,  # the product read and its sum written
        # the convert; the row written in place, and its index; w copied (read once, written once)
        "other": 4 * 16 * 2 + 4 * 16 * 4 + 16 * 4 + 4 + 2 * 8 * 16 * 2,
        "loops": 2 * 64 * 16 * 4,  # the cache in and out, as listed (in place, it writes a few rows)
        # a Pallas kernel: x and w read, its output written (its attributes' text spans two lines,
        # the second starting "}}": not the end of the computation)
        "kernels": 4 * 8 * 2 + 8 * 16 * 2 + 4 * 16 * 2,
    }


def test_traffic_by_kind_adds_up_to_xla_s_count():
    """On a compiled decode step the breakdown's total (loops apart) is XLA's own count of bytes
    accessed within a few percent, and the matmuls read at least the weights and the cache."""
    compiled, ideal, _ = _compiled_decode_step(lora=True)
    _, accessed = roofline.program_cost(compiled)
    kinds = roofline.traffic_by_kind(compiled.as_text())
    assert sum(v for k, v in kinds.items() if k != "loops") == pytest.approx(accessed, rel=0.1)
    assert kinds["matmul fusions"] >= 0.9 * ideal


@pytest.mark.e2e
def test_layer_extrapolation_equals_a_full_compile():
    """The DPO step's cost at L layers from its cost at 1 and 2 (scans unrolled) is the cost of
    compiling all L: what `aot --roofline` relies on for a 28-layer model."""
    base = dict(SMOL_LAYERS, hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2)
    cfg = dpo.DPOConfig(pairs_per_step=2, grad_accum=2, max_length=32, logps_chunk=16, unroll_scans=True)

    def cost(layers, cfg=cfg):
        config = ModelConfig.from_hf_dict(dict(base, num_hidden_layers=layers))
        model = LlamaForCausalLM(config, lora=uniform_lora_config(2, 4, 8.0), rngs=nnx.Rngs(0))
        graphdef, trainable, frozen = dpo.split_lora(model)
        optimizer = dpo.make_optimizer(cfg, dpo.lora_member_axis)
        step = dpo.make_lora_train_step(graphdef, cfg, optimizer)
        state = dpo.init_train_state(trainable, optimizer, cfg, total_steps=4)
        ids = jnp.ones((2, 2, 32), jnp.int32)
        batch = dpo.PairBatch(ids, jnp.ones_like(ids, bool), jnp.ones_like(ids, bool))
        return roofline.program_cost(step.lower(state, frozen, batch, jnp.zeros((2, 2, 2))).compile())

    full = cost(4)
    np.testing.assert_allclose(roofline.per_layer_extrapolation(cost(1), cost(2), 4), full, rtol=0.02)
    # Why the scans are unrolled for costing: the scanned program counts each loop body once.
    scanned_flops, _ = cost(4, dataclasses.replace(cfg, unroll_scans=False))
    assert scanned_flops < 0.5 * full[0]
