"""A decode step partitioned by hand over the fsdp x tensor axes of a mesh (`jax.shard_map`).

Left to XLA's partitioner, a decode step of [rows, 1, hidden] activations on a v4-32 (fsdp 4 x
tensor 4, Qwen2.5-7B, 256 rows) moved 1.61x the bytes of its weights, cache and logits: the
activations were all-reduced whole and sliced again, and the logits were reduced, gathered and
relaid out, about 45 MB a layer around 70 MB of weights and cache. Here every collective is
written out, on layouts chosen for a step of a few hundred rows (n = fsdp x tensor chips):

- the residual stream: every row of the data replica, a 1/n slice of the hidden dimension
  (norms sum their squares over the n chips);
- attention: rows over fsdp and heads over tensor, as the KV cache lies. The q, k and v
  projections keep their stored layout (input over fsdp, heads over tensor): each chip multiplies
  all rows by its slice and a reduce-scatter over fsdp leaves it its own rows' sums. The output
  projection (heads over tensor, hidden over fsdp) takes all rows' attention (a gather over
  fsdp) and reduce-scatters over tensor back into the residual slice;
- the MLP: every row against 1/n of the intermediate dimension (the per-call copy's layout, gate
  and up side by side), so its input is gathered once and its output reduce-scattered once;
- LoRA: each row's own adapter is picked before any sum over chips (a [rows, r] sum, not
  [rows, adapters, r]);
- the unembedding: every row against 1/n of the vocabulary, then an all-to-all leaves each chip
  1/n of the rows with the whole vocabulary (`unembed`), or only each slice's best logits
  (`unembed_candidates`: what the sampler draws from, without the whole vocabulary's logits
  ever being moved).

The math is `llama.LlamaForCausalLM`'s own (`layer_math`), on each chip's shard; the tests check
the tokens and logits against the unpartitioned model. `partition_problem` says why a model and
mesh cannot take this path (the caller then decodes as before).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from sparta_jax import sharding as sharding_lib
from sparta_jax.models import decode_kernels, layer_math, rope as rope_lib
from sparta_jax.models.config import ModelConfig

DATA, FSDP, TENSOR = "data", "fsdp", "tensor"
HIDDEN = (FSDP, TENSOR)  # the residual stream's and the MLP's split
NORMS = ("attn_norm", "mlp_norm", "post_attn_norm", "post_mlp_norm")
KERNELS = ("xla", "pallas", "interpret")


def axis_sizes(mesh: Mesh) -> tuple[int, int, int]:
    """(data, fsdp, tensor) sizes, 1 for an axis the mesh lacks."""
    return tuple(int(mesh.shape.get(a, 1)) for a in (DATA, FSDP, TENSOR))


def partition_problem(config: ModelConfig, mesh: Mesh | None) -> str | None:
    """Why a decode step of this model cannot be partitioned by hand on this mesh, or None."""
    if mesh is None:
        return "no mesh"
    _, nf, nt = axis_sizes(mesh)
    n = nf * nt
    if n == 1:
        return "fsdp x tensor is one chip"
    needs = {"hidden size": (config.hidden_size, n), "intermediate size": (config.intermediate_size, n),
             "query heads": (config.num_heads, nt), "key-value heads": (config.num_kv_heads, nt)}
    for what, (size, ways) in needs.items():
        if size % ways:
            return f"{what} {size} does not split {ways} ways"
    return None


def row_multiple(mesh: Mesh) -> int:
    """Rows a partitioned decode step needs a multiple of: the all-to-all of the logits leaves each
    chip of a data replica 1/(fsdp x tensor) of its rows."""
    nd, nf, nt = axis_sizes(mesh)
    return nd * nf * nt


@struct.dataclass
class PartitionedLayers:
    """What `LlamaForCausalLM.decode_weights` returns on a mesh that takes this path: per layer the
    weights ('qkv' [hidden, tensor x (q + k + v columns of a tensor shard)] with 'qkv_bias', gate
    and up side by side per chip in 'gate_up', the rest by their model names) and LoRA factors,
    the final norm and the unembedding [hidden, vocab padded to a multiple of fsdp x tensor]."""

    layers: tuple[tuple[dict, dict], ...]
    final_norm: jax.Array
    unembedding: jax.Array
    vocab_size: int = struct.field(pytree_node=False)
    mesh: Mesh = struct.field(pytree_node=False)
    # "xla", or the Pallas kernels of `decode_kernels` for attention and the MLP: "pallas" (a mesh of
    # TPU chips; `prepare` turns it into "xla" on others) or "interpret" (the kernels interpreted).
    kernels: str = struct.field(pytree_node=False, default="xla")

    def specs(self):
        """The PartitionSpec of every array, in the same tree structure."""
        return dataclasses.replace(
            self,
            layers=tuple(({n: weight_spec(n) for n in w}, {n: lora_spec(n) for n in lw}) for w, lw in self.layers),
            final_norm=P(HIDDEN), unembedding=P(None, HIDDEN))


def weight_spec(name: str) -> P:
    if name == "qkv":
        return P(FSDP, TENSOR)
    if name == "qkv_bias":
        return P(TENSOR)
    if name == "o_proj":
        return P(TENSOR, FSDP)
    if name in NORMS or name == "o_bias":
        return P(HIDDEN)
    if name in ("q_norm", "k_norm"):
        return P(None)
    if name == "gate_up":
        return P(None, HIDDEN)
    if name in ("gate_t", "up_t"):  # the MLP kernel's: transposed, [intermediate, hidden]
        return P(HIDDEN, None)
    if name == "down_proj":
        return P(HIDDEN, None)
    raise KeyError(f"no partitioned decode layout for weight {name!r}")


def lora_spec(name: str) -> P:
    target, factor = name.rsplit("_", 1)
    if target == "o_proj":
        return P(None, TENSOR, None) if factor == "a" else P(None, None, HIDDEN)
    if factor == "a":  # every other projection's input is the residual slice or the MLP slice
        return P(None, HIDDEN, None)
    return P(None, None, TENSOR) if target in ("q_proj", "k_proj", "v_proj") else P(None, None, HIDDEN)


def _by_shard(arrays, ways: int):
    """Column blocks of several [..., out_i] arrays side by side per shard: shard s of the result
    holds block s of each, in order."""
    blocks = [a.reshape(*a.shape[:-1], ways, a.shape[-1] // ways) for a in arrays]
    joined = jnp.concatenate(blocks, axis=-1)
    return joined.reshape(*joined.shape[:-2], -1)


def prepare(per_layer, final_norm, unembedding, config: ModelConfig, mesh: Mesh, dtype,
            kernels: str = "xla") -> PartitionedLayers:
    """The per-call copy of the decode weights in this path's layouts. `per_layer` is
    ((weights, lora), ...) as `StackedLayers.per_layer()` gives them (LoRA in the compute dtype);
    `unembedding` [hidden, vocab]. With `kernels` ("pallas", "interpret"), an MLP without adapters
    keeps gate and up apart and transposed for `decode_kernels.mlp` ('gate_t', 'up_t')."""
    if kernels not in KERNELS:
        raise ValueError(f"kernels must be one of {KERNELS}, got {kernels!r}")
    if kernels == "pallas" and mesh.devices.flat[0].platform != "tpu":
        kernels = "xla"  # Mosaic kernels lower only for TPU
    _, nf, nt = axis_sizes(mesh)
    n = nf * nt
    layers = []
    for w, lw in per_layer:
        w = dict(w)
        qkv = [w.pop(f"{p}_proj") for p in "qkv"]
        out = {"qkv": _by_shard(qkv, nt)}
        if config.qkv_bias:
            out["qkv_bias"] = _by_shard([w.pop(f"{p}_bias") for p in "qkv"], nt)
        gate, up = w.pop("gate_proj"), w.pop("up_proj")
        if kernels != "xla" and not any(f"{p}_proj_a" in lw for p in ("gate", "up", "down")):
            out["gate_t"], out["up_t"] = gate.T, up.T
        else:
            out["gate_up"] = _by_shard([gate, up], n)
        out.update(w)
        layers.append((out, dict(lw)))
    vocab = unembedding.shape[1]
    padded = -(-vocab // n) * n  # zero columns, sliced off the logits
    unembedding = jnp.pad(unembedding.astype(dtype), ((0, 0), (0, padded - vocab)))
    built = PartitionedLayers(tuple(layers), final_norm, unembedding, vocab, mesh, kernels)
    return jax.tree.map(lambda a, spec: jax.lax.with_sharding_constraint(a, NamedSharding(mesh, spec)),
                        built, built.specs())


def _rows_axes(mesh: Mesh) -> tuple[str, ...]:
    return tuple(a for a in (DATA, FSDP) if a in mesh.shape)


def _data(mesh: Mesh):
    return DATA if DATA in mesh.shape else None


def decode_layers(tokens, embed, layers: PartitionedLayers, keys, values, index, visible, local_visible, ropes,
                  scales, config: ModelConfig, dtype):
    """The embedding, the decoder layers and the final norm for one token per row.

    tokens [rows]; embed [vocab, hidden] as the model stores it; keys / values: per layer
    [rows, kv_heads, slots, head_dim]; index: the cache's write slot (scalar or [rows]);
    visible / local_visible [rows, 1, slots];
    ropes {"global", "local"}: (cos, sin) [rows, 1, head_dim]; scales [rows, adapters] or None.
    Returns (final-normed hidden [rows, 1, hidden] split over fsdp x tensor, keys, values).
    """
    mesh = layers.mesh
    rows = tokens.shape[0]
    nd, nf, nt = axis_sizes(mesh)
    if rows % (nd * nf):
        raise ValueError(f"a partitioned decode step needs rows in multiples of data x fsdp = {nd * nf}, got {rows}")
    by_rows = P(_rows_axes(mesh))
    cache_spec = P(_rows_axes(mesh), TENSOR, None, None)
    residual = P(_data(mesh), None, HIDDEN)
    table_spec = sharding_lib.spec_for("embed", embed.shape, mesh)
    sliding = tuple(config.is_sliding(i) for i in range(config.num_layers))
    has_lora = scales is not None
    kernels = layers.kernels
    gather = decode_kernels.Gather(HIDDEN, (nf, nt), tuple(mesh.axis_names))  # the MLP kernel's input
    specs = layers.specs()

    def body(tokens, table, weights, final_norm, keys, values, index, visible, local_visible, ropes, scales):
        # [rows, features] inside: with the length-1 axis in, XLA:TPU lowered the reduce-scatters
        # to all-reduces and slices.
        x = _embedded(tokens, table, config, dtype, vocab_split=table_spec[0] is not None)
        if kernels != "xla":  # the attention kernel's mask, once for every layer
            visible, local_visible = visible.astype(jnp.int32), local_visible.astype(jnp.int32)
        keys, values = list(keys), list(values)
        for i, (w, lw) in enumerate(weights):
            x, keys[i], values[i] = _layer(
                x, w, lw, keys[i], values[i], index, local_visible if sliding[i] else visible,
                ropes["local" if sliding[i] else "global"], scales, config=config, dtype=dtype, nf=nf, nt=nt,
                kernels=kernels, gather=gather)
        return _norm(x, final_norm, config, nf * nt)[:, None], tuple(keys), tuple(values)

    ropes_spec = {k: (by_rows, by_rows) for k in ropes}
    fn = jax.shard_map(
        body, mesh=mesh,
        in_specs=(P(_data(mesh)), table_spec, specs.layers, specs.final_norm, (cache_spec,) * len(keys),
                  (cache_spec,) * len(values), P() if index.ndim == 0 else by_rows, by_rows, by_rows, ropes_spec,
                  P(_data(mesh), None) if has_lora else P()),
        out_specs=(residual, (cache_spec,) * len(keys), (cache_spec,) * len(values)),
        check_vma=False)
    return fn(tokens, embed, layers.layers, layers.final_norm, tuple(keys), tuple(values), index, visible,
              local_visible, ropes, scales)


def unembed(hidden, layers: PartitionedLayers):
    """Logits [rows, 1, vocab] in float32 of the final-normed hidden states `decode_layers`
    returns, rows split over every mesh axis (each chip holds whole rows)."""

    def body(hidden, unembedding):
        # [rows, vocab / n] -> [rows / n, vocab]: whole rows for the sampler
        return jax.lax.all_to_all(_slice_logits(hidden, unembedding), HIDDEN, 0, 1, tiled=True)[:, None]

    logits = _unembedding_map(body, hidden, layers, out_specs=P(_every_axis(layers.mesh), None, None))
    return logits[..., : layers.vocab_size]


def unembed_candidates(hidden, layers: PartitionedLayers, n: int, softcap: float | None = None):
    """The `n` best logits of each row and their token ids [rows, n], best first (ties: the lower
    id first), as `sampling_filters.top_candidates` finds them in the whole logits, with the
    final soft-cap `softcap` applied. Each chip ranks its slice of the vocabulary, an all-to-all
    brings a row's slices to one chip, which merges them; rows split over every mesh axis."""
    _, nf, nt = axis_sizes(layers.mesh)
    width = layers.unembedding.shape[1] // (nf * nt)
    n = min(n, layers.vocab_size)

    def body(hidden, unembedding):
        logits = layer_math.soft_cap(_slice_logits(hidden, unembedding), softcap)
        first = (jax.lax.axis_index(FSDP) * nt + jax.lax.axis_index(TENSOR)) * width
        logits = jnp.where(first + jnp.arange(width) < layers.vocab_size, logits, -jnp.inf)  # the padding columns
        values, local = jax.lax.top_k(logits, min(n, width))  # this slice's best, [rows, k]
        ids = (first + local).astype(jnp.int32)

        def gather(a):  # [rows, k] -> [rows / n, n x k]: a row's best of every slice, in vocabulary order
            return jax.lax.all_to_all(a[:, None], HIDDEN, 0, 1, tiled=True).reshape(-1, nf * nt * a.shape[-1])

        values, ids = gather(values), gather(ids)
        best, at = jax.lax.top_k(values, n)
        return best, jnp.take_along_axis(ids, at, axis=-1)

    by_rows = P(_every_axis(layers.mesh), None)
    return _unembedding_map(body, hidden, layers, out_specs=(by_rows, by_rows))


def _every_axis(mesh: Mesh) -> tuple[str, ...]:
    return tuple(a for a in (DATA, FSDP, TENSOR) if a in mesh.shape)


def _unembedding_map(body, hidden, layers: PartitionedLayers, out_specs):
    """body(hidden [rows, 1, hidden/n], unembedding [hidden, vocab/n]) on every chip, whose
    outputs split whole rows over every mesh axis."""
    mesh = layers.mesh
    if hidden.shape[0] % row_multiple(mesh):
        raise ValueError(f"a partitioned decode step needs rows in multiples of {row_multiple(mesh)} "
                         f"(data x fsdp x tensor), got {hidden.shape[0]}")
    return jax.shard_map(body, mesh=mesh, in_specs=(P(_data(mesh), None, HIDDEN), P(None, HIDDEN)),
                         out_specs=out_specs, check_vma=False)(hidden, layers.unembedding)


def _slice_logits(hidden, unembedding):
    """Float32 logits [rows, vocab/n] of every row for this chip's slice of the vocabulary."""
    whole = jax.lax.all_gather(hidden[:, 0], HIDDEN, axis=1, tiled=True)  # [rows, hidden]
    return jnp.einsum("bd,dv->bv", whole, unembedding, preferred_element_type=jnp.float32)


# ------------------------------------------------------------------------- on one chip's shard
def _norm(x, weight, c: ModelConfig, n: int):
    """layer_math.rms_norm over a hidden dimension split over the fsdp x tensor chips."""
    def mean(squares):
        return jax.lax.psum(jnp.sum(squares, axis=-1, keepdims=True), HIDDEN) / (x.shape[-1] * n)

    return layer_math.rms_norm(x, weight, c.rms_norm_eps, c.norm_offset, mean=mean)


def _embedded(tokens, table, c: ModelConfig, dtype, *, vocab_split: bool):
    """Each row's embedding [rows, hidden/n] in the residual slice. table: this chip's block of the
    stored embedding, [vocab/tensor (or all of it), hidden/fsdp]. Each chip looks up the rows its
    block holds (the others' are zeros, summed away by the reduce-scatter)."""
    if vocab_split:
        first = jax.lax.axis_index(TENSOR) * table.shape[0]
        local = tokens - first
        inside = (local >= 0) & (local < table.shape[0])
        x = jnp.take(table, jnp.clip(local, 0, table.shape[0] - 1), axis=0).astype(dtype)
        x = jax.lax.psum_scatter(jnp.where(inside[:, None], x, 0), TENSOR, scatter_dimension=1, tiled=True)
    else:  # the vocabulary does not split over tensor: every chip holds all of it
        x = jnp.take(table, tokens, axis=0).astype(dtype)
        width = x.shape[1] // jax.lax.axis_size(TENSOR)
        x = jax.lax.dynamic_slice_in_dim(x, jax.lax.axis_index(TENSOR) * width, width, 1)
    if c.embed_scale:  # Gemma: sqrt(hidden size), rounded to the compute dtype as HF does
        x = x * jnp.asarray(c.hidden_size**0.5, dtype)
    return x


def _own_rows(a, nf: int):
    """This chip's block of rows (its fsdp index) of an array over all the data replica's rows."""
    block = a.shape[0] // nf
    return jax.lax.dynamic_slice_in_dim(a, jax.lax.axis_index(FSDP) * block, block, 0)


def _picked(h, a, scales):
    """h @ A of each row's own adapter, scaled: [rows, r] (a sum over adapters where only the
    row's own is nonzero). Partial where h holds part of the input dimension."""
    per_adapter = jnp.einsum("bi,mir->bmr", h, a)
    return jnp.einsum("bmr,bm->br", per_adapter, scales.astype(h.dtype))


def _lora_out(picked, scales, b):
    """The picked rows times each row's own B: [rows, out]."""
    own = (scales != 0).astype(picked.dtype)
    return jnp.einsum("br,bm,mro->bo", picked, own, b)


def _layer(x, w, lw, k_cache, v_cache, index, visible, rope, scales, *, config: ModelConfig, dtype, nf: int,
           nt: int, kernels: str, gather: decode_kernels.Gather):
    """One decoder layer on one chip's shards (see the module docstring for the layouts).

    x [R, hidden/n] (R: the data replica's rows); k_cache / v_cache [R/nf, kv_heads/nt, slots,
    head_dim]; visible [R/nf, 1, slots]; rope (cos, sin) [R/nf, 1, head_dim]; scales [R, adapters]."""
    c = config
    n = nf * nt
    heads, kv_heads = c.num_heads // nt, c.num_kv_heads // nt
    q_cols, kv_cols = heads * c.head_dim, kv_heads * c.head_dim
    act = layer_math.activation(c.hidden_act)

    # Each row's adapter scale, for all the data replica's rows and for this chip's own (fsdp) block.
    row_scales = {} if scales is None else {"all": scales, "own": _own_rows(scales, nf)}

    def lora(name, h, out, over, h_rows="all", out_rows="all"):
        """Add projection `name`'s adapters: `over` the axes h's input dimension is split over;
        h and out hold all the data replica's rows or this chip's own block of them."""
        if f"{name}_a" not in lw:
            return out
        picked = jax.lax.psum(_picked(h, lw[f"{name}_a"], row_scales[h_rows]), over)
        if (h_rows, out_rows) == ("own", "all"):
            picked = jax.lax.all_gather(picked, FSDP, axis=0, tiled=True)
        elif (h_rows, out_rows) == ("all", "own"):
            picked = _own_rows(picked, nf)
        return out + _lora_out(picked, row_scales[out_rows], lw[f"{name}_b"])

    # Attention: q, k, v of every row from this chip's input slice, summed over fsdp into its rows.
    h = _norm(x, w["attn_norm"], c, n)
    h_fsdp = jax.lax.all_gather(h, TENSOR, axis=1, tiled=True)  # [R, hidden/nf]
    qkv = h_fsdp @ w["qkv"].astype(dtype)
    qkv = jax.lax.psum_scatter(qkv, FSDP, scatter_dimension=0, tiled=True)  # [R/nf, q + k + v columns]
    split = [q_cols, q_cols + kv_cols]
    q, k, v = jnp.split(qkv, split, axis=-1)
    if scales is not None:
        q = lora("q_proj", h, q, HIDDEN, out_rows="own")
        k = lora("k_proj", h, k, HIDDEN, out_rows="own")
        v = lora("v_proj", h, v, HIDDEN, out_rows="own")
    if c.qkv_bias:  # after the adapters, as the model adds it
        q_bias, k_bias, v_bias = jnp.split(w["qkv_bias"].astype(dtype), split)
        q, k, v = q + q_bias, k + k_bias, v + v_bias
    rows = q.shape[0]
    q = q.reshape(rows, 1, heads, c.head_dim)  # [rows, length 1, heads, head_dim] for RoPE and attention
    k = k.reshape(rows, 1, kv_heads, c.head_dim)
    v = v.reshape(rows, 1, kv_heads, c.head_dim)
    if c.qk_norm:
        q = layer_math.rms_norm(q, w["q_norm"], c.rms_norm_eps, c.norm_offset)
        k = layer_math.rms_norm(k, w["k_norm"], c.rms_norm_eps, c.norm_offset)
    cos, sin = rope
    q = rope_lib.apply_rotary(q, cos, sin)
    k = rope_lib.apply_rotary(k, cos, sin)
    k_cache = layer_math.write_slots(k_cache, k.transpose(0, 2, 1, 3).astype(k_cache.dtype), index, axis=2)
    v_cache = layer_math.write_slots(v_cache, v.transpose(0, 2, 1, 3).astype(v_cache.dtype), index, axis=2)
    local = dataclasses.replace(c, num_heads=heads, num_kv_heads=kv_heads)
    attn = _attention(q[:, 0], k_cache, v_cache, visible, local, dtype, kernels)

    # Output projection: every row's heads of this tensor shard, reduce-scattered into the residual slice.
    attn_rows = jax.lax.all_gather(attn, FSDP, axis=0, tiled=True)  # [R, heads/nt x head_dim]
    o = attn_rows @ w["o_proj"].astype(dtype)  # [R, hidden/nf], partial over tensor
    o = jax.lax.psum_scatter(o, TENSOR, scatter_dimension=1, tiled=True)  # [R, hidden/n]
    if scales is not None:
        o = lora("o_proj", attn, o, TENSOR, h_rows="own")
    if c.o_bias:
        o = o + w["o_bias"].astype(dtype)
    if c.post_norms:
        o = _norm(o, w["post_attn_norm"], c, n)
    x = x + o

    # MLP: every row against this chip's 1/n of the intermediate dimension.
    h = _norm(x, w["mlp_norm"], c, n)
    if "gate_t" in w:  # the MLP kernel's layout (prepare: no adapters here)
        gate_t, up_t, down = (w[k].astype(dtype) for k in ("gate_t", "up_t", "down_proj"))
        if decode_kernels.mlp_vmem_bytes(h.shape[0], h.shape[1], c.hidden_size, gate_t.shape[0], down.shape[1], dtype,
                                         gather=True) <= decode_kernels.VMEM_BUDGET:
            # It gathers its input over the interconnect into each chip's VMEM. Transposed in and
            # out: XLA keeps these activations hidden-major (a layout change, no copy).
            m = decode_kernels.mlp(h.T, gate_t, up_t, down, act=c.hidden_act, mode=kernels, gather=gather).T
        else:  # too many rows for the kernel's VMEM: XLA's ops on its layout
            h_all = jax.lax.all_gather(h, HIDDEN, axis=1, tiled=True)
            project = lambda weight: jnp.einsum("bi,oi->bo", h_all, weight)  # noqa: E731
            m = (act(project(gate_t)) * project(up_t)) @ down
    else:
        h_all = jax.lax.all_gather(h, HIDDEN, axis=1, tiled=True)  # [R, hidden]
        gate_up = h_all @ w["gate_up"].astype(dtype)
        width = gate_up.shape[-1] // 2
        gate, up = gate_up[..., :width], gate_up[..., width:]
        if scales is not None:
            gate = lora("gate_proj", h, gate, HIDDEN)
            up = lora("up_proj", h, up, HIDDEN)
        inner = act(gate) * up
        m = inner @ w["down_proj"].astype(dtype)  # [R, hidden], partial over all
    # Two reduce-scatters (fsdp, then tensor): one over both axes compiled to an all-reduce and a slice.
    m = jax.lax.psum_scatter(m, FSDP, scatter_dimension=1, tiled=True)
    m = jax.lax.psum_scatter(m, TENSOR, scatter_dimension=1, tiled=True)
    if "down_proj_a" in lw:
        m = lora("down_proj", inner, m, HIDDEN)
    if c.post_norms:
        m = _norm(m, w["post_mlp_norm"], c, n)
    return x + m, k_cache, v_cache


def _attention(q, k_cache, v_cache, visible, c: ModelConfig, dtype, kernels: str):
    """One token per row against its cache: q [rows, heads, head_dim] -> [rows, heads x head_dim]."""
    rows, groups, slots = q.shape[0], c.num_heads // c.num_kv_heads, k_cache.shape[2]
    if kernels == "xla" or (decode_kernels.attention_vmem_bytes(groups, slots, c.head_dim, k_cache.dtype)
                            > decode_kernels.VMEM_BUDGET):
        return layer_math.attention(q[:, None], k_cache.astype(dtype), v_cache.astype(dtype), visible.astype(bool), c,
                                    heads_major=True)[:, 0]
    grouped = q.reshape(rows, c.num_kv_heads, groups, c.head_dim)
    out = decode_kernels.attention(grouped, k_cache, v_cache, visible, scale=c.attention_scale,
                                   softcap=c.attn_softcap, mode=kernels)
    return out.reshape(rows, c.num_heads * c.head_dim)


def rows_sharding(mesh: Mesh) -> NamedSharding:
    """How `unembed` and `unembed_candidates` split their outputs: whole rows over every mesh axis."""
    return NamedSharding(mesh, P(_every_axis(mesh)))

