"""Pallas TPU kernels for one chip's shard of a hand-partitioned decode step (`decode_partitioned`).

Under XLA's fusions a decode step of 256 rows writes to HBM, and reads back, what a kernel can keep
in the chip's vector memory (VMEM):
- attention's scores [rows, heads, slots]: written by the q.k fusion, read by the softmax's sum
  and again by the product with the values. `attention` reads each row's q, keys, values and mask
  once and writes its output: one pass over the cache.
- the MLP's gate and up [rows, intermediate]: written by one matmul fusion, read by the next.
  `mlp` keeps them in VMEM between the two matmuls; and its input, which the chips hold in
  slices, it gathers itself: each chip copies its slice into every other chip's VMEM over the
  interconnect, so the gathered input is neither written to HBM nor read back.

The math is `layer_math`'s, rounding where it rounds (the scores and probabilities in the compute
dtype, a float32 softmax; gate and up in the compute dtype, the activation in float32 rounded
once), so greedy tokens equal the XLA path's. Each kernel declares what its block specs copy from
and to HBM (`pl.CostEstimate`), which is what XLA's cost analysis counts for it. A kernel whose
blocks would not fit VMEM (`attention_vmem_bytes`, `mlp_vmem_bytes` over VMEM_BUDGET) is not
called: the step takes XLA's ops there.

`mode` is "pallas" (Mosaic, TPU only) or "interpret" (the same kernels run by JAX's TPU interpreter
on any backend, remote copies across a shard_map's devices included: how the tests check them on
CPU; slow). On chips with two TensorCores (v4, v5p) the MLP's grid is sequential and runs on one
of them: to be measured on a device.
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from sparta_jax.models import layer_math

MODES = ("pallas", "interpret")
# Bytes of the key block one attention grid step reads: several rows a step, so that the ~0.35 us a
# step costs stays small against its copy from HBM.
ATTENTION_BLOCK_BYTES = 1 << 20
ATTENTION_BLOCK_ROWS = 8  # (the rows of a step are unrolled in the kernel)


def _nbytes(*arrays) -> int:
    return sum(a.size * a.dtype.itemsize for a in arrays)


def _check_mode(mode: str):
    if mode not in MODES:
        raise ValueError(f"kernel mode must be one of {MODES}, got {mode!r}")


# ------------------------------------------------------------------------------------- attention
def attention_vmem_bytes(groups: int, slots: int, head_dim: int, cache_dtype) -> int:
    """The attention kernel's VMEM at one row a step: its key and value blocks double-buffered,
    and a head group's float32 scores and probabilities. (It reads a row's whole cache at once: a
    cache too long for VMEM takes XLA's ops, `decode_partitioned`.)"""
    return 4 * slots * head_dim * jnp.dtype(cache_dtype).itemsize + 2 * 4 * groups * slots


def attention(q, keys, values, visible, *, scale: float, softcap: float | None, mode: str):
    """Grouped-query attention of one new token per row against its cache, as
    `layer_math.attention(..., heads_major=True)` computes it.

    q [rows, kv_heads, groups, head_dim]; keys / values [rows, kv_heads, slots, head_dim] (the
    cache, in its own dtype: cast to q's in VMEM); visible [rows, 1, slots] (int32, nonzero where
    the slot is seen).
    Returns [rows, kv_heads, groups, head_dim] in q's dtype."""
    _check_mode(mode)
    rows, kv_heads, groups, head_dim = q.shape
    slots = keys.shape[2]
    per_row = slots * head_dim * keys.dtype.itemsize
    block = max(d for d in range(1, min(rows, ATTENTION_BLOCK_ROWS) + 1)
                if rows % d == 0 and (d == 1 or d * per_row <= ATTENTION_BLOCK_BYTES))

    def kernel(q_ref, k_ref, v_ref, mask_ref, out_ref):
        for r in range(block):  # static: a few rows a step
            qr = q_ref[r, 0]  # [groups, head_dim]
            scores = _dot_transposed(qr, k_ref[r, 0].astype(qr.dtype))  # [groups, slots]
            scores = _round((scores * scale), qr.dtype)
            if softcap is not None:  # op by op in the compute dtype, as layer_math.soft_cap on it
                scores = _round(_round(jnp.tanh(_round(scores / softcap, qr.dtype)), qr.dtype) * softcap, qr.dtype)
            scores = jnp.where(mask_ref[r] != 0, scores, _round(jnp.float32(layer_math.MASKED), qr.dtype))
            shifted = jnp.exp(scores - jnp.max(scores, axis=-1, keepdims=True))
            probs = (shifted / jnp.sum(shifted, axis=-1, keepdims=True)).astype(qr.dtype)
            out = jnp.dot(probs, v_ref[r, 0].astype(qr.dtype), preferred_element_type=jnp.float32)
            out_ref[r, 0] = out.astype(out_ref.dtype)

    qspec = pl.BlockSpec((block, 1, groups, head_dim), lambda r, h: (r, h, 0, 0))
    cache_spec = pl.BlockSpec((block, 1, slots, head_dim), lambda r, h: (r, h, 0, 0))
    mask_spec = pl.BlockSpec((block, 1, slots), lambda r, h: (r, 0, 0))  # kept across a block's heads
    out_shape = jax.ShapeDtypeStruct(q.shape, q.dtype)
    cost = pl.CostEstimate(
        flops=4 * rows * kv_heads * groups * slots * head_dim,
        transcendentals=rows * kv_heads * groups * slots * (2 if softcap is not None else 1),
        bytes_accessed=_nbytes(q, keys, values, visible) + _nbytes(out_shape))
    return pl.pallas_call(
        kernel, out_shape=out_shape, grid=(rows // block, kv_heads),
        in_specs=[qspec, cache_spec, cache_spec, mask_spec], out_specs=qspec,
        cost_estimate=cost, interpret=_interpret(mode),
        compiler_params=pltpu.CompilerParams(dimension_semantics=("parallel", "parallel")),
    )(q, keys, values, visible)


def _round(x, dtype):
    """x rounded to `dtype` and back to float32: what an op in `dtype` leaves."""
    return x.astype(dtype).astype(jnp.float32)


# ------------------------------------------------------------------------------------------- MLP
def _block(size: int, preferred: int = 256) -> int:
    """A block of `size` that Mosaic accepts: a multiple of 128 dividing it, or all of it."""
    for b in (preferred, 128):
        if size % b == 0:
            return b
    return size


@dataclasses.dataclass(frozen=True)
class Gather:
    """Where the MLP kernel's input comes from when it gathers it itself: each chip holds a
    [hidden / n, rows] slice, chip k of the n over `axes` (major first, sizes `sizes`) slice k;
    `mesh_axes` are all the axes of the shard_map the kernel runs in (a remote copy names its
    peer by its coordinate on each)."""

    axes: tuple[str, ...]
    sizes: tuple[int, ...]
    mesh_axes: tuple[str, ...]

    @property
    def chips(self) -> int:
        return math.prod(self.sizes)

    def index(self):
        """This chip's place among the n."""
        me = 0
        for axis, size in zip(self.axes, self.sizes):
            me = me * size + jax.lax.axis_index(axis)
        return me

    def device(self, peer: int):
        """The mesh coordinates of chip `peer` of the n (the same on the other axes)."""
        at, rest = {}, peer
        for axis, size in reversed(list(zip(self.axes, self.sizes))):
            at[axis], rest = rest % size, rest // size
        return tuple(at[a] if a in at else jax.lax.axis_index(a) for a in self.mesh_axes)


# VMEM a kernel may fill: v4's 16 MiB a core (the least of the TPU generations), less room for
# Mosaic's own scratch; `mlp_vmem_bytes` and `attention_vmem_bytes` are checked against it.
# (Calibrated on Mosaic's compiles for v4, gathering over 16 chips: Qwen2.5-7B's MLP at 1024 rows
# used 18.9 MiB where `mlp_vmem_bytes` says 18.1; 768 rows, 14.2 by it, compiled.)
VMEM_BUDGET = 14 << 20
# Rows of gate and up (their inner dimension) one first-phase grid step multiplies at most: the
# float32 sums of a chunk are what the MLP kernel keeps in VMEM, not the whole inner dimension's.
INNER_CHUNK = 640


def _inner_chunk(inner: int, sublanes: int, most: int = INNER_CHUNK) -> int:
    """The largest divisor of `inner` that is a multiple of `sublanes` and at most `most`, unless
    that is under a quarter of `most` (many small steps): then all of it."""
    fits = [c for c in range(sublanes, min(inner, most) + 1, sublanes) if inner % c == 0]
    return fits[-1] if fits and fits[-1] * 4 >= min(inner, most) else inner


def mlp_vmem_bytes(rows: int, part: int, hidden: int, inner: int, out: int, dtype, gather: bool) -> int:
    """The MLP kernel's VMEM: its scratch (a chunk of gate and up in float32, the inner
    activations, with `gather` every chip's slice of the input) and its double-buffered blocks."""
    size = jnp.dtype(dtype).itemsize
    in_block, out_block, chunk = _block(hidden), _block(out), _inner_chunk(inner, tile_rows(dtype))
    scratch = 2 * chunk * rows * 4 + inner * rows * size + (hidden * rows * size if gather else 0)
    blocks = 2 * size * (part * rows + 2 * chunk * in_block + inner * out_block + out_block * rows)
    return scratch + blocks


def tile_rows(dtype) -> int:
    """Rows of a TPU tile: 8 of 32-bit values, 16 of 16-bit ones (two to a word)."""
    return 8 * max(1, 4 // jnp.dtype(dtype).itemsize)


def mlp(x_t, gate_t, up_t, down, *, act: str, mode: str, gather: Gather | None = None,
        inner_chunk: int = INNER_CHUNK):
    """The MLP of every row, transposed: down^T @ (act(gate^T @ x^T) * (up^T @ x^T)), each matmul
    accumulated in float32 and rounded to x's dtype as the XLA path's are: [out, rows] (partial
    sums, where the weights are one chip's slices).

    x_t [hidden, rows], or with `gather` this chip's [hidden / n, rows] slice, which the kernel
    copies to every chip's VMEM over the interconnect (no gathered copy in HBM); gate_t / up_t
    [inner, hidden]; down [inner, out]. Rows minor, as XLA lays out a decode step's activations
    (the hidden dimension major), and each weight with its long dimension minor. The grid's first
    phase runs over chunks of the inner dimension and, within each, over blocks of `hidden` (a
    chunk's gate and up summed in VMEM, then its activations kept there); the second over blocks
    of `out`. Each weight block is read once."""
    _check_mode(mode)
    part, rows = x_t.shape
    hidden = part * (gather.chips if gather else 1)
    inner, out = down.shape
    in_block, out_block = _block(hidden), _block(out)
    chunk = _inner_chunk(inner, tile_rows(x_t.dtype), inner_chunk)
    n_in, n_chunks, n_out = hidden // in_block, inner // chunk, out // out_block
    first = n_chunks * n_in  # steps of the first phase
    activation = layer_math.activation(act)

    def kernel(x_ref, gate_ref, up_ref, down_ref, out_ref, gate_acc, up_acc, inner_ref, *gathered):
        i = pl.program_id(0)
        c, k = jax.lax.div(i, n_in), jax.lax.rem(i, n_in)  # (the first phase's chunk and hidden block)

        if gather:
            @pl.when(i == 0)
            def _():
                _gather_input(x_ref, *gathered, gather)

        @pl.when((i < first) & (k == 0))
        def _():
            gate_acc[...] = jnp.zeros_like(gate_acc)
            up_acc[...] = jnp.zeros_like(up_acc)

        @pl.when(i < first)
        def _():
            xb = (gathered[0] if gather else x_ref)[pl.ds(pl.multiple_of(k * in_block, in_block), in_block), :]
            gate_acc[...] += jnp.dot(gate_ref[...], xb, preferred_element_type=jnp.float32)
            up_acc[...] += jnp.dot(up_ref[...], xb, preferred_element_type=jnp.float32)

        @pl.when((i < first) & (k == n_in - 1))
        def _():
            # gate and up rounded as the matmuls' outputs are; the activation in float32, rounded once
            dtype = inner_ref.dtype
            inner_ref[pl.ds(pl.multiple_of(c * chunk, chunk), chunk), :] = (
                activation(_round(gate_acc[...], dtype)) * _round(up_acc[...], dtype)).astype(dtype)

        @pl.when(i >= first)
        def _():
            out_ref[...] = jax.lax.dot_general(down_ref[...], inner_ref[...], (((0,), (0,)), ((), ())),
                                               preferred_element_type=jnp.float32).astype(out_ref.dtype)

    def chunk_block(i):  # the first phase's (chunk, hidden block); the last one stays (no new copy) after it
        i = jnp.minimum(i, first - 1)
        return jax.lax.div(i, n_in), jax.lax.rem(i, n_in)

    def output(i):  # the out block of the second phase; the first one waits (no copy) before it
        return jnp.maximum(i - first, 0)

    out_shape = jax.ShapeDtypeStruct((out, rows), x_t.dtype)
    cost = pl.CostEstimate(  # HBM: the input slice, each weight block and the output once
        flops=2 * rows * hidden * 2 * inner + 2 * rows * inner * out,
        transcendentals=rows * inner,
        bytes_accessed=_nbytes(x_t, gate_t, up_t, down) + _nbytes(out_shape),
        # the interconnect: this chip's slice to each of the others
        remote_bytes_transferred=(gather.chips - 1) * _nbytes(x_t) if gather else 0)
    scratch = [pltpu.VMEM((chunk, rows), jnp.float32), pltpu.VMEM((chunk, rows), jnp.float32),
               pltpu.VMEM((inner, rows), x_t.dtype)]
    if gather:  # every chip's slice, and the semaphores of the copies out and in
        scratch += [pltpu.VMEM((hidden, rows), x_t.dtype), pltpu.SemaphoreType.DMA, pltpu.SemaphoreType.DMA]
    return pl.pallas_call(
        kernel, out_shape=out_shape, grid=(first + n_out,),
        in_specs=[pl.BlockSpec((part, rows), lambda i: (0, 0)),  # read once, kept
                  pl.BlockSpec((chunk, in_block), chunk_block),
                  pl.BlockSpec((chunk, in_block), chunk_block),
                  pl.BlockSpec((inner, out_block), lambda i: (0, output(i)))],
        out_specs=pl.BlockSpec((out_block, rows), lambda i: (output(i), 0)),
        scratch_shapes=scratch, cost_estimate=cost, interpret=_interpret(mode),
        compiler_params=pltpu.CompilerParams(dimension_semantics=("arbitrary",),
                                             collective_id=0 if gather else None),
    )(x_t, gate_t, up_t, down)


def _gather_input(x_ref, x_all, send_sem, recv_sem, gather: Gather):
    """Copy this chip's slice x_ref into slot `me` of every chip's x_all (itself included), and
    wait until all n slices have arrived here."""
    n = gather.chips
    # Every chip enters this kernel before any writes into its VMEM (a faster chip could otherwise
    # still be in the previous layer's kernel, whose x_all this one reuses).
    barrier = pltpu.get_barrier_semaphore()
    for peer in range(n):
        pl.semaphore_signal(barrier, 1, device_id=gather.device(peer), device_id_type=pl.DeviceIdType.MESH)
    pl.semaphore_wait(barrier, n)
    part = x_ref.shape[0]
    me = gather.index()
    slot = x_all.at[pl.ds(pl.multiple_of(me * part, part), part)]
    copies = [pltpu.make_async_remote_copy(x_ref, slot, send_sem, recv_sem, device_id=gather.device(peer),
                                           device_id_type=pl.DeviceIdType.MESH) for peer in range(n)]
    for c in copies:
        c.start()
    for c in copies:  # n copies out, and n of the same size in
        c.wait_send()
        c.wait_recv()


def _interpret(mode: str):
    """pallas_call's `interpret`: the TPU interpreter (remote copies and semaphores across the
    devices of a shard_map included) or Mosaic."""
    return pltpu.InterpretParams(dma_execution_mode="eager") if mode == "interpret" else False


def _dot_transposed(a, b):
    """a [m, k] times b [n, k] transposed: [m, n] in float32."""
    return jax.lax.dot_general(a, b, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32)

