"""The pure functions of a decoder layer that more than one forward pass uses: RMSNorm, the MLP
activation, soft-capping, grouped-query attention, and writing new tokens into cache slots.
`llama.LlamaForCausalLM` runs them under XLA's own partitioning; `decode_partitioned` runs them
on each chip's shard of a decode step.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from sparta_jax.models.config import ModelConfig

# Masked attention logits get a large finite value rather than -inf, so a query that sees no
# key at all (a left-padding position) yields a uniform softmax instead of NaN.
MASKED = -1e30


def rms_norm(x, weight, eps, offset: bool = False, mean=None):
    """RMSNorm over the last axis. `mean` (of the float32 squares, keeping the axis) replaces
    the plain mean where the axis is split over chips (decode_partitioned)."""
    x32 = x.astype(jnp.float32)
    mean = mean or (lambda squares: jnp.mean(squares, axis=-1, keepdims=True))
    x32 = x32 * jax.lax.rsqrt(mean(x32 * x32) + eps)
    if offset:  # as HF's Gemma: scale by (1 + w) in float32, then cast back
        return (x32 * (1.0 + weight.astype(jnp.float32))).astype(x.dtype)
    # As HF's Llama: normalise in float32, cast back, then scale.
    return weight.astype(x.dtype) * x32.astype(x.dtype)


def activation(name: str):
    if name == "silu":
        return jax.nn.silu
    if name == "gelu_pytorch_tanh":
        return lambda x: jax.nn.gelu(x, approximate=True)
    raise ValueError(f"unsupported activation {name!r}")


def soft_cap(x, cap: float | None):
    """Gemma 2's soft-capping: cap * tanh(x / cap) (identity when cap is None)."""
    return x if cap is None else jnp.tanh(x / cap) * cap


def write_slots(cache_array, new, index, *, axis: int):
    """`new` written into `cache_array` [batch, ...] from slot `index` along its slot `axis`.

    A scalar index (every row at the same slot) is one dynamic_update_slice; a [batch] index
    writes row b from slot index[b]: a per-row dynamic_update_slice, which XLA lowers to one
    scatter."""

    def write(array, update, start, slot_axis):
        at = [0] * array.ndim
        at[slot_axis] = start
        return jax.lax.dynamic_update_slice(array, update, tuple(at))

    if index.ndim == 0:
        return write(cache_array, new, index, axis)
    return jax.vmap(lambda row, update, start: write(row, update, start, axis - 1))(cache_array, new, index)


def attention(q, k, v, visible, c: ModelConfig, *, heads_major: bool = False):
    """Grouped-query attention. q [b, t, heads, d]; visible [b, t, s];
    k, v [b, s, kv_heads, d], or [b, kv_heads, s, d] when `heads_major` (the cache's layout)."""
    batch, length = q.shape[:2]
    groups = c.num_heads // c.num_kv_heads
    kv = "bksd" if heads_major else "bskd"
    q = q.reshape(batch, length, c.num_kv_heads, groups, c.head_dim)
    scores = jnp.einsum(f"btkgd,{kv}->bkgts", q, k, preferred_element_type=jnp.float32)
    # As transformers' eager attention: the scores in the compute dtype, the softmax in float32.
    # In bfloat16 this halves the bytes of the scores, which a decode step reads three times.
    scores = soft_cap((scores * c.attention_scale).astype(q.dtype), c.attn_softcap)
    scores = jnp.where(visible[:, None, None, :, :], scores, jnp.asarray(MASKED, q.dtype))
    probs = jax.nn.softmax(scores.astype(jnp.float32), axis=-1).astype(q.dtype)
    # Heads-major out of the matmul, then one transpose of the (small) result: asking the einsum
    # for [b, t, heads, d] directly made XLA:CPU's attention 6x slower at a 1088-slot cache.
    out = jnp.einsum(f"bkgts,{kv}->bkgtd", probs, v)
    return out.transpose(0, 3, 1, 2, 4).reshape(batch, length, c.num_heads * c.head_dim)
