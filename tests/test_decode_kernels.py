"""The Pallas kernels of the partitioned decode step (models/decode_kernels.py), interpreted on CPU,
against the XLA math they replace (layer_math), and lowered for TPU at Qwen2.5-7B's shapes on a
v4-32. Inside the whole decode step, against one device: tests/test_decode_partitioned.py."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from sparta_jax.models import decode_kernels, layer_math


class _Heads:  # the fields of a ModelConfig that layer_math.attention reads
    def __init__(self, kv_heads, groups, head_dim, softcap):
        self.num_heads, self.num_kv_heads, self.head_dim = kv_heads * groups, kv_heads, head_dim
        self.attention_scale, self.attn_softcap = head_dim**-0.5, softcap


def _attention_inputs(rows=12, kv_heads=2, groups=3, slots=40, head_dim=128, cache_dtype=jnp.bfloat16):
    keys = jax.random.split(jax.random.key(0), 4)
    q = jax.random.normal(keys[0], (rows, kv_heads, groups, head_dim), jnp.bfloat16)
    k = (3 * jax.random.normal(keys[1], (rows, kv_heads, slots, head_dim))).astype(cache_dtype)
    v = jax.random.normal(keys[2], (rows, kv_heads, slots, head_dim)).astype(cache_dtype)
    visible = jax.random.bernoulli(keys[3], 0.6, (rows, 1, slots))
    visible = visible.at[0].set(False)  # a row that sees nothing (left padding): a uniform softmax
    return q, k, v, visible


@pytest.mark.parametrize("softcap,cache_dtype", [(None, jnp.bfloat16), (30.0, jnp.bfloat16), (None, jnp.float32)])
def test_attention_kernel_equals_layer_math(softcap, cache_dtype):
    """12 rows in two steps of 6 (a step's rows unrolled in the kernel), two key-value heads of
    three query heads each."""
    q, k, v, visible = _attention_inputs(cache_dtype=cache_dtype)
    rows, kv_heads, groups, head_dim = q.shape
    got = decode_kernels.attention(q, k, v, visible.astype(jnp.int32), scale=head_dim**-0.5, softcap=softcap,
                                   mode="interpret")
    want = layer_math.attention(q.reshape(rows, 1, kv_heads * groups, head_dim), k.astype(q.dtype),
                                v.astype(q.dtype), visible, _Heads(kv_heads, groups, head_dim, softcap),
                                heads_major=True).reshape(q.shape)
    assert got.dtype == jnp.bfloat16
    got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
    # The same roundings: equal but for an ulp now and then (float32 sums of a row in another
    # order; tanh's float32 approximation).
    np.testing.assert_allclose(got, want, rtol=1e-2, atol=1e-2)
    assert np.mean(got == want) > 0.99
    # the row that sees nothing averages every value, as the XLA path does
    np.testing.assert_allclose(got[0, 0, 0], np.asarray(v[0, 0], np.float32).mean(0), rtol=2e-2, atol=2e-2)


def _mlp_reference(x, gate, up, down, act):
    return (layer_math.activation(act)(x @ gate) * (x @ up)) @ down


@pytest.mark.parametrize("dtype,act,chunk", [(jnp.float32, "silu", 32), (jnp.bfloat16, "silu", 96),
                                             (jnp.bfloat16, "gelu_pytorch_tanh", 48)])
def test_mlp_kernel_equals_the_xla_mlp(dtype, act, chunk):
    """Two blocks of the hidden dimension (gate and up summed over them in VMEM) for each chunk
    of the inner dimension (three, one, two), then three blocks of the output (the inner
    activations kept between the phases); rows minor."""
    rows, hidden, inner, out = 16, 512, 96, 384
    keys = jax.random.split(jax.random.key(1), 4)
    x = jax.random.normal(keys[0], (rows, hidden), dtype)
    gate, up = ((0.05 * jax.random.normal(k, (hidden, inner))).astype(dtype) for k in keys[1:3])
    down = (0.05 * jax.random.normal(keys[3], (inner, out))).astype(dtype)
    got = decode_kernels.mlp(x.T, gate.T, up.T, down, act=act, mode="interpret", inner_chunk=chunk).T
    want = _mlp_reference(x, gate, up, down, act)
    assert got.shape == (rows, out) and got.dtype == dtype
    if dtype == jnp.float32:
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)
    else:  # float32 sums in another order, rounded to bfloat16: an ulp apart at most
        np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32), rtol=1e-2, atol=2e-2)


def test_mlp_kernel_gathers_its_input_over_the_mesh():
    """Each chip of fsdp x tensor holds a slice of the input; the kernel copies every slice into
    every chip's VMEM (remote copies, interpreted) and multiplies by that chip's slice of the
    weights: the partial sums add up to the whole MLP. Two data replicas gather apart."""
    mesh = jax.make_mesh((2, 2, 2), ("data", "fsdp", "tensor"))
    gather = decode_kernels.Gather(("fsdp", "tensor"), (2, 2), ("data", "fsdp", "tensor"))
    rows, hidden, inner, out = 8, 64, 32, 64  # the interpreter's copies stay small on a 2-core CI machine
    keys = jax.random.split(jax.random.key(2), 4)
    x = jax.random.normal(keys[0], (2, rows, hidden))  # a different batch on each data replica
    gate, up = (0.1 * jax.random.normal(k, (hidden, 4 * inner)) for k in keys[1:3])
    down = 0.1 * jax.random.normal(keys[3], (4 * inner, out))
    split = ("fsdp", "tensor")

    def body(x, gate, up, down):  # [1, rows, hidden/4] -> partial sums [1, rows, out]
        part = decode_kernels.mlp(x[0].T, gate.T, up.T, down, act="silu", mode="interpret", gather=gather).T
        return jax.lax.psum(part, split)[None]

    specs = (P("data", None, split), P(None, split), P(None, split), P(split, None))
    args = [jax.device_put(a, NamedSharding(mesh, s)) for a, s in zip((x, gate, up, down), specs)]
    got = jax.jit(jax.shard_map(body, mesh=mesh, in_specs=specs, out_specs=P("data"), check_vma=False))(*args)
    got = np.asarray(got)  # (wait here: the interpreter's devices run as callbacks)
    want = np.stack([np.asarray(_mlp_reference(x[d], gate, up, down, "silu")) for d in range(2)])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def _declared_cost(lowered) -> dict:
    """The cost a lowered program's one Pallas kernel declares (what XLA's cost analysis counts)."""
    import json
    import re

    text = lowered.as_text()
    assert text.count("stablehlo.custom_call @tpu_custom_call") == 1
    found = re.search(r'\\22cost_estimate\\22: (\{.*?\})', text).group(1)
    return json.loads(found.replace("\\0A", "").replace("\\22", '"'))


def test_kernels_lower_for_tpu_at_the_7b_shapes():
    """Mosaic's lowering (Pallas to the TPU dialect: what a TPU compile takes) at one v4-32 chip's
    shapes of tpu_v4.py's decode step: 64 rows of cache, 7 query heads to a key-value head, 1024
    slots; the MLP's 1/16 of Qwen2.5-7B's intermediate dimension, gathering over 4 x 4 chips. The
    HBM bytes each declares are its operands and result once (what `aot --roofline` counts for
    it), the gathered input's copies to the other 15 chips as interconnect bytes."""
    bf16 = jnp.bfloat16
    spec = jax.ShapeDtypeStruct
    attention = jax.jit(lambda q, k, v, m: decode_kernels.attention(q, k, v, m, scale=128**-0.5, softcap=None,
                                                                    mode="pallas"))
    lowered = attention.trace(spec((64, 1, 7, 128), bf16), spec((64, 1, 1024, 128), bf16),
                              spec((64, 1, 1024, 128), bf16), spec((64, 1, 1024), jnp.int32)).lower(
        lowering_platforms=("tpu",))
    cost = _declared_cost(lowered)
    cache = 64 * 1024 * 128 * 2
    assert cost["bytes_accessed"] == 2 * cache + 2 * (64 * 7 * 128 * 2) + 64 * 1024 * 4  # k, v; q, out; mask
    assert cost["flops"] == 4 * 64 * 7 * 1024 * 128 and cost["remote_bytes_transferred"] == 0

    mesh = jax.sharding.AbstractMesh((1, 4, 4), ("data", "fsdp", "tensor"))  # a v4-32's, no devices needed
    gather = decode_kernels.Gather(("fsdp", "tensor"), (4, 4), ("data", "fsdp", "tensor"))
    split = NamedSharding(mesh, P(("fsdp", "tensor")))
    mlp = jax.jit(jax.shard_map(
        lambda x, g, u, d: decode_kernels.mlp(x, g, u, d, act="silu", mode="pallas", gather=gather), mesh=mesh,
        in_specs=P(("fsdp", "tensor")), out_specs=P(("fsdp", "tensor")), check_vma=False))
    lowered = mlp.trace(spec((3584, 256), bf16, sharding=split), spec((18944, 3584), bf16, sharding=split),
                        spec((18944, 3584), bf16, sharding=split), spec((18944, 3584), bf16, sharding=split)
                        ).lower(lowering_platforms=("tpu",))
    cost = _declared_cost(lowered)
    weights = 3 * 1184 * 3584 * 2
    assert cost["bytes_accessed"] == weights + 224 * 256 * 2 + 3584 * 256 * 2  # input slice in, partial sums out
    assert cost["remote_bytes_transferred"] == 15 * 224 * 256 * 2


def test_kernel_modes_are_checked():
    q, k, v, visible = _attention_inputs()
    with pytest.raises(ValueError, match="kernel mode must be one of"):
        decode_kernels.attention(q, k, v, visible, scale=1.0, softcap=None, mode="xla")
