"""A Flax NNX decoder of the Llama family (Llama 2/3, Qwen2/2.5, Mistral, SmolLM2) and of Gemma
1, 2 and 3 (text), whose differences are switches of ModelConfig (models/config.py).

Layer weights are stacked along a leading layer axis and the forward pass runs the layers
with `jax.lax.scan`, so compile time does not grow with depth. Weights are stored as
`x @ W` kernels ([in, out]), transposed from the HF [out, in] layout at load time.

Positions count real tokens only (cumulative sum of the attention mask), so left padding
shifts nothing. The KV cache is a plain pytree passed in and returned, which is what a
`jax.lax.while_loop` decode wants; cache slots are written in place by dynamic updates.

The cached path (`extend`, what each decode step runs) unrolls its layers instead, each on its
own weights and its own cache arrays (`decode_weights`, `KVCache`), as inference stacks usually
do: a decode step is bound by memory bandwidth, and a layer scan makes XLA slice each layer's
weights and cache out of the stacks, which on CPU (and GPU) is a copy before every matmul (the
cost of a step then grew with the cache: 73 to 184 ms from 128 to 1088 slots on CPU). Unrolled,
a step reads each weight and each cached key once and writes only the new slots. Its weights are
either sliced out of the stacks once per generate call (a copy of the layer weights for the call)
or left stacked for each step to slice at a static index, which the TPU compiler fuses into the
matmuls (no copy, the same bytes per step); CPU XLA copies such a slice. `prefill` fills a fresh
cache with the layer scan: a prompt is read once per call.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, struct
from jax.sharding import NamedSharding, PartitionSpec as P

from sparta_jax import sharding as sharding_lib
from sparta_jax.models import decode_partitioned, layer_math, rope as rope_lib
from sparta_jax.models.config import ModelConfig
from sparta_jax.models.lora import NO_ADAPTER, LoraConfig, LoraParam, LoraScaling, lora_delta, row_scales
from sparta_jax.sampling_filters import top_candidates

# What the backward pass of a training forward recomputes (`remat`): "none" stores every
# activation; "full" stores each layer's input only and recomputes the layer (memory for one
# layer, a third more compute); "dots" stores the outputs of the matmuls without batch
# dimensions (the projections, base and LoRA: the big, costly ones) and recomputes the rest
# (norms, RoPE, activations, attention).
REMAT_MODES = ("none", "full", "dots")


def remat_mode(remat) -> str:
    """`remat` as one of REMAT_MODES; True and False are "full" and "none"."""
    if isinstance(remat, bool) or remat is None:
        return "full" if remat else "none"
    if remat not in REMAT_MODES:
        raise ValueError(f"remat {remat!r}: one of {', '.join(REMAT_MODES)} (or True / False)")
    return remat


def checkpointed(fn, remat):
    """fn as the backward pass should see it under `remat` (see REMAT_MODES)."""
    mode = remat_mode(remat)
    if mode == "none":
        return fn
    if mode == "full":
        return jax.checkpoint(fn)
    return jax.checkpoint(fn, policy=jax.checkpoint_policies.dots_with_no_batch_dims_saveable)


@struct.dataclass
class KVCache:
    """Keys and values of every layer, plus what is needed to place the next tokens.

    k, v: one [batch, kv_heads, max_length, head_dim] array per layer (heads-major: attention
    contracts the last axis with the queries and the slot axis with the probabilities, so it
    reads the cache where it lies, with no transpose); key_mask [batch, max_length] marks slots
    holding real tokens; next_position [batch] is the RoPE position of each row's next real
    token; index is the next free slot: a scalar shared by all rows (rows are left padded), or
    [batch], one per row (a sampler that refills finished rows with new prompts: each row then
    writes at its own slot, a scatter instead of one slice).
    """

    k: tuple[jax.Array, ...]
    v: tuple[jax.Array, ...]
    key_mask: jax.Array
    next_position: jax.Array
    index: jax.Array

    @property
    def max_length(self) -> int:
        return self.k[0].shape[2]


@struct.dataclass
class StackedLayers:
    """The layer weights as a decode step reads them when it slices them itself: the base stacks
    as stored, the LoRA stacks in the compute dtype. `per_layer()` slices them (inside a traced
    step: in every step)."""

    weights: dict[str, jax.Array]
    lora: dict[str, jax.Array]

    def per_layer(self) -> tuple[tuple[dict, dict], ...]:
        num_layers = next(iter(self.weights.values())).shape[0]
        return tuple(({n: a[i] for n, a in self.weights.items()}, {n: a[i] for n, a in self.lora.items()})
                     for i in range(num_layers))


def init_cache(config: ModelConfig, batch: int, max_length: int, dtype=jnp.bfloat16) -> KVCache:
    shape = (batch, config.num_kv_heads, max_length, config.head_dim)
    return KVCache(
        k=tuple(jnp.zeros(shape, dtype) for _ in range(config.num_layers)),
        v=tuple(jnp.zeros(shape, dtype) for _ in range(config.num_layers)),
        key_mask=jnp.zeros((batch, max_length), jnp.bool_),
        next_position=jnp.zeros((batch,), jnp.int32),
        index=jnp.zeros((), jnp.int32),
    )


def _normal(rngs: nnx.Rngs, shape, dtype, std=0.02):
    return (std * jax.random.normal(rngs.params(), shape, jnp.float32)).astype(dtype)


class DecoderLayers(nnx.Module):
    """All decoder layers' weights, each stacked on a leading [num_layers] axis."""

    def __init__(self, config: ModelConfig, *, param_dtype, rngs: nnx.Rngs):
        c = config
        stack = (c.num_layers,)
        norm = _norm_init(c, param_dtype)
        self.attn_norm = nnx.Param(norm(stack + (c.hidden_size,)))
        self.q_proj = nnx.Param(_normal(rngs, stack + (c.hidden_size, c.q_size), param_dtype))
        self.k_proj = nnx.Param(_normal(rngs, stack + (c.hidden_size, c.kv_size), param_dtype))
        self.v_proj = nnx.Param(_normal(rngs, stack + (c.hidden_size, c.kv_size), param_dtype))
        self.o_proj = nnx.Param(_normal(rngs, stack + (c.q_size, c.hidden_size), param_dtype))
        if c.qkv_bias:
            self.q_bias = nnx.Param(_normal(rngs, stack + (c.q_size,), param_dtype))
            self.k_bias = nnx.Param(_normal(rngs, stack + (c.kv_size,), param_dtype))
            self.v_bias = nnx.Param(_normal(rngs, stack + (c.kv_size,), param_dtype))
        if c.o_bias:
            self.o_bias = nnx.Param(_normal(rngs, stack + (c.hidden_size,), param_dtype))
        if c.qk_norm:  # Gemma 3: RMSNorm of each head's queries and keys, before RoPE
            self.q_norm = nnx.Param(norm(stack + (c.head_dim,)))
            self.k_norm = nnx.Param(norm(stack + (c.head_dim,)))
        if c.post_norms:  # Gemma 2/3: the attention and MLP outputs are normalised before the residual add
            self.post_attn_norm = nnx.Param(norm(stack + (c.hidden_size,)))
            self.post_mlp_norm = nnx.Param(norm(stack + (c.hidden_size,)))
        self.mlp_norm = nnx.Param(norm(stack + (c.hidden_size,)))
        self.gate_proj = nnx.Param(_normal(rngs, stack + (c.hidden_size, c.intermediate_size), param_dtype))
        self.up_proj = nnx.Param(_normal(rngs, stack + (c.hidden_size, c.intermediate_size), param_dtype))
        self.down_proj = nnx.Param(_normal(rngs, stack + (c.intermediate_size, c.hidden_size), param_dtype))

    def arrays(self) -> dict[str, jax.Array]:
        return {name: var[...] for name, var in vars(self).items() if isinstance(var, nnx.Param)}


class LoraStack(nnx.Module):
    """A and B of every adapter for every targeted projection: [layers, M, in, r] / [layers, M, r, out]."""

    def __init__(self, lora: LoraConfig, config: ModelConfig, *, param_dtype, rngs: nnx.Rngs):
        self.config = lora
        dims = projection_dims(config)
        m, r = lora.num_adapters, lora.rank
        for t in lora.targets:
            fan_in, fan_out = dims[t]
            # PEFT's default init: A random, B zero, so a fresh adapter leaves the model unchanged.
            a = jax.random.uniform(rngs.params(), (config.num_layers, m, fan_in, r), jnp.float32,
                                   -1.0 / fan_in**0.5, 1.0 / fan_in**0.5)
            setattr(self, f"{t}_a", LoraParam(a.astype(param_dtype)))
            setattr(self, f"{t}_b", LoraParam(jnp.zeros((config.num_layers, m, r, fan_out), param_dtype)))
        self.scaling = LoraScaling(jnp.asarray([a.scaling for a in lora.adapters], jnp.float32))

    def arrays(self) -> dict[str, jax.Array]:
        return {name: var[...] for name, var in vars(self).items() if isinstance(var, LoraParam)}


def projection_dims(config: ModelConfig) -> dict[str, tuple[int, int]]:
    """(in, out) of every linear projection of a layer, by HF name."""
    d, i = config.hidden_size, config.intermediate_size
    return {
        "q_proj": (d, config.q_size), "k_proj": (d, config.kv_size), "v_proj": (d, config.kv_size),
        "o_proj": (config.q_size, d), "gate_proj": (d, i), "up_proj": (d, i), "down_proj": (i, d),
    }


def _norm_init(config: ModelConfig, param_dtype):
    """Norm weights that leave x unscaled: ones, or zeros where the norm scales by (1 + w)."""
    fill = jnp.zeros if config.norm_offset else jnp.ones
    return lambda shape: fill(shape, param_dtype)


class LlamaForCausalLM(nnx.Module):
    """Decoder with optional LoRA stack. `dtype` is the compute dtype, `param_dtype` the storage."""

    def __init__(self, config: ModelConfig, *, lora: LoraConfig | None = None, dtype=jnp.float32,
                 param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.config = config
        self.dtype = dtype
        c = config
        self.embed = nnx.Param(_normal(rngs, (c.vocab_size, c.hidden_size), param_dtype))
        self.layers = DecoderLayers(c, param_dtype=param_dtype, rngs=rngs)
        self.final_norm = nnx.Param(_norm_init(c, param_dtype)((c.hidden_size,)))
        if not c.tie_word_embeddings:
            self.lm_head = nnx.Param(_normal(rngs, (c.hidden_size, c.vocab_size), param_dtype))
        # Adapters are stored in float32 whatever the base's dtype: they are what DPO trains, and a
        # 1e-6 learning rate moves a bf16 weight by less than its resolution.
        self.lora = LoraStack(lora, c, param_dtype=jnp.float32, rngs=rngs) if lora else None

    @property
    def lora_config(self) -> LoraConfig | None:
        return self.lora.config if self.lora is not None else None

    # ----------------------------------------------------------------------------- public API
    def __call__(self, input_ids, attention_mask=None, *, adapter_ids=None) -> jax.Array:
        """Logits [batch, length, vocab] in float32 for a (left-padded) batch."""
        hidden, _ = self._forward(input_ids, attention_mask, adapter_ids, cache=None)
        return self.logits_from_hidden(hidden)

    def hidden_states(self, input_ids, attention_mask=None, *, adapter_ids=None, remat: bool | str = False,
                      suffix_tree: tuple[int, ...] | None = None, unroll: bool = False) -> jax.Array:
        """Final-normed hidden states [batch, length, hidden]; unembed only what you need.

        `remat` (REMAT_MODES; True = "full") recomputes each layer, or all but its matmul outputs,
        in the backward pass instead of storing its activations.
        `suffix_tree` (static) makes the last T slots a token tree instead of a sequence: entry i
        is the parent of suffix slot i (an earlier suffix slot, or -1 for a child of the last
        prefix token). Each suffix token then sees the prefix and its own ancestors only, at the
        position it would have on its own branch, so one pass scores many continuations that
        share a prompt. The suffix slots must all be real tokens.
        `unroll` unrolls the layer scan: the same math, for XLA's cost analysis (which counts a
        loop's body once).
        """
        hidden, _ = self._forward(input_ids, attention_mask, adapter_ids, cache=None, remat=remat,
                                  suffix_tree=suffix_tree, unroll=unroll)
        return hidden

    def prefill(self, input_ids, attention_mask, max_length: int, *, adapter_ids=None, cache_dtype=jnp.bfloat16):
        """A left-padded prompt batch through the model into a fresh cache of `max_length` slots:
        (logits of the last position [batch, 1, vocab], cache).

        The same result as `extend` on an empty cache, but one layer scan (whose keys and values
        come out as its outputs) instead of unrolled layers: a prompt is read once per call, and
        the unrolled code would double the program's size (and its compile time on a TPU).
        """
        batch, length = input_ids.shape
        if length > max_length:
            raise ValueError(f"a {length}-token prompt does not fit a {max_length}-slot cache")
        if attention_mask is None:
            attention_mask = jnp.ones((batch, length), jnp.bool_)
        hidden, (keys, values) = self._forward(input_ids, attention_mask, adapter_ids, cache=None, collect_kv=True)
        free = max_length - length

        def layer_cache(a):  # [batch, length, kv_heads, head_dim] -> [batch, kv_heads, max_length, head_dim]
            return jnp.pad(a.transpose(0, 2, 1, 3).astype(cache_dtype), ((0, 0), (0, 0), (0, free), (0, 0)))

        mask = attention_mask.astype(jnp.bool_)
        cache = KVCache(
            k=tuple(layer_cache(keys[i]) for i in range(self.config.num_layers)),
            v=tuple(layer_cache(values[i]) for i in range(self.config.num_layers)),
            key_mask=jnp.pad(mask, ((0, 0), (0, free))),
            next_position=mask.sum(axis=1, dtype=jnp.int32),
            index=jnp.asarray(length, jnp.int32),
        )
        return self._unembedding_layout(self.logits_from_hidden(hidden[:, -1:])), cache

    def extend(self, input_ids, attention_mask, cache: KVCache, *, adapter_ids=None, layers=None):
        """Run new tokens through the model against a KV cache: (logits, updated cache).

        `layers` is `self.decode_weights(...)` computed once by the caller, outside its decode loop.
        """
        layers = self.decode_weights() if layers is None else layers
        hidden, cache = self._forward(input_ids, attention_mask, adapter_ids, cache=cache, layers=layers)
        if isinstance(layers, decode_partitioned.PartitionedLayers):
            return self.cap_logits(decode_partitioned.unembed(hidden, layers)), cache
        return self.logits_from_hidden(hidden), cache

    def extend_candidates(self, input_ids, attention_mask, cache: KVCache, *, n: int, adapter_ids=None, layers=None):
        """`extend` for a sampler that draws from each row's best logits: ((values, token ids)
        [batch, n] of the last position's logits, best first, ties to the lower id), updated
        cache). Hand-partitioned layers rank each chip's slice of the vocabulary where it lies."""
        layers = self.decode_weights() if layers is None else layers
        hidden, cache = self._forward(input_ids, attention_mask, adapter_ids, cache=cache, layers=layers)
        if isinstance(layers, decode_partitioned.PartitionedLayers):
            return decode_partitioned.unembed_candidates(hidden[:, -1:], layers, n, self.config.final_softcap), cache
        return top_candidates(self.logits_from_hidden(hidden[:, -1:])[:, -1], n), cache

    def decode_weights(self, *, per_step: bool = False, partitioned: bool = True, kernels: str = "xla"):
        """The layer weights `extend` reads, prepared once per generate call.

        LoRA factors are cast to the compute dtype here (a copy a few percent of the weights'
        size): a step would otherwise read them in their stored dtype (float32) and cast them,
        and the TPU compiler does not fuse that cast with a slice of the stacks. Then either
        (per_step=False) every layer's weights are sliced out of the stacks, a copy of the layer
        weights that lives as long as the call, or (per_step=True) the stacks are left whole in a
        `StackedLayers` for each step to slice: no copy, and on TPU the same bytes per step (the
        slices fuse into the matmuls); on CPU each step copies its slices.

        On a mesh whose fsdp x tensor chips can split the layers (`decode_partitioned`), the
        per-call copy is laid out for that module's hand-partitioned step, with the unembedding;
        `partitioned=False` keeps XLA's partitioning (a vmapped MemberStack needs it). `kernels`
        ("xla", "pallas", "interpret") picks that step's attention and MLP (`decode_kernels`).
        """
        weights = self.layers.arrays()
        lora = {n: a.astype(self.dtype) for n, a in self.lora.arrays().items()} if self.lora is not None else {}
        stacked = StackedLayers(weights, lora)
        if per_step:
            return stacked
        mesh = self.decode_mesh()
        if partitioned and decode_partitioned.partition_problem(self.config, mesh) is None:
            return decode_partitioned.prepare(stacked.per_layer(), self.final_norm[...], self.unembedding(),
                                              self.config, mesh, self.dtype, kernels)
        return tuple((self._decode_layout(w), lw) for w, lw in stacked.per_layer())

    def decode_mesh(self):
        """The mesh a decode step runs on (the activation sharding's), or None on one device."""
        sharding = getattr(self, "activation_sharding", None)
        return None if sharding is None else sharding.mesh

    def _decode_layout(self, weights: dict) -> dict:
        """The per-call copy of a layer's weights in the decode layout (sharding.DECODE_RULES):
        the copy exists anyway, so laying it out for decoding costs one reshard per call."""
        sharding = getattr(self, "activation_sharding", None)
        if sharding is None:
            return weights
        mesh = sharding.mesh

        def laid_out(name, array):
            spec = sharding_lib.decode_spec(name, array.shape, mesh)
            return array if spec is None else jax.lax.with_sharding_constraint(array, NamedSharding(mesh, spec))

        return {name: laid_out(name, array) for name, array in weights.items()}

    def _unembedding_layout(self, logits):
        """Logits [batch, length, vocab] kept as the unembedding computes them: rows over the batch
        axes, the vocabulary over tensor. A decode loop that carries them on in another layout
        would otherwise have XLA compute the prefill's logits in that one, with the whole
        unembedding gathered to every chip (2 GiB more for Qwen2.5-7B on a v4-32)."""
        sharding = getattr(self, "activation_sharding", None)
        if sharding is None:
            return logits
        mesh = sharding.mesh
        rows = sharding.spec[0]
        tensor = "tensor" if "tensor" in mesh.shape and logits.shape[-1] % mesh.shape["tensor"] == 0 else None
        if logits.shape[0] % int(np.prod([mesh.shape[a] for a in rows])):
            rows = None
        return jax.lax.with_sharding_constraint(logits, NamedSharding(mesh, P(rows, None, tensor)))

    def unembedding(self) -> jax.Array:
        """The [hidden, vocab] output projection (the embedding transposed when tied)."""
        if self.config.tie_word_embeddings:
            return self.embed[...].T
        return self.lm_head[...]

    def logits_from_hidden(self, hidden) -> jax.Array:
        w = self.unembedding().astype(self.dtype)
        return self.cap_logits(jnp.einsum("btd,dv->btv", hidden, w, preferred_element_type=jnp.float32))

    def cap_logits(self, logits) -> jax.Array:
        """The final-logit soft-cap (Gemma 2), for code that unembeds hidden states itself."""
        return layer_math.soft_cap(logits, self.config.final_softcap)

    # ----------------------------------------------------------------------------- internals
    def _constrain(self, x):
        """Keep activations split over the batch axes (XLA would otherwise follow the weights'
        sharding and hold the whole batch on every chip)."""
        sharding = getattr(self, "activation_sharding", None)
        if sharding is None:
            return x
        ways = int(np.prod([sharding.mesh.shape[a] for a in sharding.spec[0]]))
        if x.shape[0] % ways:
            return x
        return jax.lax.with_sharding_constraint(x, sharding)

    def _forward(self, input_ids, attention_mask, adapter_ids, cache: KVCache | None, remat: bool | str = False,
                 suffix_tree: tuple[int, ...] | None = None, layers=None, unroll: bool = False,
                 collect_kv: bool = False):
        """(final-normed hidden states, extra): extra is the updated cache when `cache` is given,
        each layer's keys and values stacked [layers, batch, length, kv_heads, head_dim] when
        `collect_kv`, else None."""
        c = self.config
        batch, length = input_ids.shape
        if attention_mask is None:
            attention_mask = jnp.ones((batch, length), jnp.bool_)
        attention_mask = attention_mask.astype(jnp.bool_)
        if adapter_ids is None:
            adapter_ids = jnp.full((batch,), NO_ADAPTER, jnp.int32)

        real_so_far = jnp.cumsum(attention_mask.astype(jnp.int32), axis=1)
        if cache is None:
            positions = jnp.maximum(real_so_far - 1, 0)
            query_slots = jnp.arange(length)
            key_slots = jnp.arange(length)
            key_mask = attention_mask
        else:
            positions = jnp.maximum(cache.next_position[:, None] + real_so_far - 1, 0)
            query_slots = cache.index[..., None] + jnp.arange(length)  # [length], or [batch, length] per row
            key_slots = jnp.arange(cache.max_length)
            key_mask = layer_math.write_slots(cache.key_mask, attention_mask, cache.index, axis=1)
        row_query_slots = jnp.atleast_2d(query_slots)  # [batch or 1, length]

        visible = key_mask[:, None, :] & (key_slots[None, None, :] <= row_query_slots[:, :, None])
        if suffix_tree is not None:
            if cache is not None:
                raise ValueError("suffix_tree is for cache-free forward passes")
            tree_visible, position_offset = suffix_tree_layout(suffix_tree, length)
            visible &= tree_visible[None]
            positions = positions - position_offset[None]
        # Global layers see `visible`; sliding layers (Mistral: all, Gemma 2/3: some) only the
        # keys less than sliding_window POSITIONS back. Each layer picks its mask and RoPE tables.
        # In a cache a row's real tokens sit in consecutive slots, so slots measure positions
        # there; a token tree's node sits at slot P + k but position P + depth, so without a
        # cache the distance is taken in positions.
        sliding = tuple(c.is_sliding(i) for i in range(c.num_layers))
        local_visible = visible
        if any(sliding):
            if cache is None:
                distance = positions[:, :, None] - positions[:, None, :]
            else:
                distance = row_query_slots[:, :, None] - key_slots[None, None, :]
            local_visible = visible & (distance < c.sliding_window)
        ropes = {}
        for kind, rope in (("global", c.rope), ("local", c.local_rope or c.rope)):
            inv_freq = rope_lib.inverse_frequencies(rope, c.head_dim)  # a trace-time constant
            ropes[kind] = rope_lib.rotary_tables(positions, inv_freq)

        # Activations are kept split over the batch axes where there are many tokens (training,
        # scoring, prefill). A decode step's [rows, 1, hidden] is tiny: left to itself XLA
        # gathers it and keeps the weights where they lie, where the split would make every step
        # gather the FSDP-sharded weights instead (4.9x the bytes of the floor on v4-32, not 1.7x).
        constrain = self._constrain if cache is None else (lambda a: a)
        x = jnp.take(self.embed[...], input_ids, axis=0).astype(self.dtype)
        if c.embed_scale:  # Gemma: sqrt(hidden size), rounded to the compute dtype as HF does
            x = x * jnp.asarray(c.hidden_size**0.5, self.dtype)
        x = constrain(x)
        act = layer_math.activation(c.hidden_act)
        weights = self.layers.arrays()
        if self.lora is not None:
            lora_weights = self.lora.arrays()
            scales = row_scales(adapter_ids, self.lora.scaling[...])
        else:
            lora_weights, scales = {}, None

        def project(name, h, w, lw):
            y = jnp.einsum("bti,io->bto", h, w[name].astype(self.dtype))
            if f"{name}_a" in lw:
                y = y + lora_delta(h, lw[f"{name}_a"], lw[f"{name}_b"], scales)
            return y

        def pick(is_sliding, local, glob):
            """A layer's mask or RoPE table: chosen at trace time in the unrolled cached path, by
            the scanned per-layer flag inside the layer scan."""
            if isinstance(is_sliding, bool):
                return local if is_sliding else glob
            return jax.tree.map(lambda a, b: jnp.where(is_sliding, a, b), local, glob)

        def norm(x, weight):
            return layer_math.rms_norm(x, weight, c.rms_norm_eps, c.norm_offset)

        def layer(x, w, lw, kv, is_sliding):
            x = constrain(x)
            h = norm(x, w["attn_norm"])
            q = project("q_proj", h, w, lw)
            k = project("k_proj", h, w, lw)
            v = project("v_proj", h, w, lw)
            if c.qkv_bias:
                q = q + w["q_bias"].astype(self.dtype)
                k = k + w["k_bias"].astype(self.dtype)
                v = v + w["v_bias"].astype(self.dtype)
            q = q.reshape(batch, length, c.num_heads, c.head_dim)
            k = k.reshape(batch, length, c.num_kv_heads, c.head_dim)
            v = v.reshape(batch, length, c.num_kv_heads, c.head_dim)
            if c.qk_norm:
                q, k = norm(q, w["q_norm"]), norm(k, w["k_norm"])
            cos, sin = pick(is_sliding, ropes["local"], ropes["global"])
            q = rope_lib.apply_rotary(q, cos, sin)
            k = rope_lib.apply_rotary(k, cos, sin)
            keys, values, heads_major = kv(k, v)
            attn = layer_math.attention(q, keys, values, pick(is_sliding, local_visible, visible), c, heads_major=heads_major)
            o = project("o_proj", attn, w, lw)
            if c.o_bias:
                o = o + w["o_bias"].astype(self.dtype)
            if c.post_norms:
                o = norm(o, w["post_attn_norm"])
            x = x + o
            h = norm(x, w["mlp_norm"])
            gate = act(project("gate_proj", h, w, lw))
            up = project("up_proj", h, w, lw)
            m = project("down_proj", gate * up, w, lw)
            if c.post_norms:
                m = norm(m, w["post_mlp_norm"])
            return x + m

        if cache is None:
            # The per-layer flag only where layers differ: a plain Python bool otherwise.
            mixed = len(set(sliding)) > 1
            flags = jnp.asarray(sliding) if mixed else jnp.zeros((c.num_layers,), jnp.bool_)

            def body(x, layer_inputs):
                w, lw, flag = layer_inputs
                seen = []

                def kv(k, v):
                    seen.append((k, v))
                    return k, v, False

                x = layer(x, w, lw, kv, flag if mixed else sliding[0])
                return x, (seen[0] if collect_kv else None)

            x, new_cache = jax.lax.scan(checkpointed(body, remat), x, (weights, lora_weights, flags),
                                        unroll=unroll)
        else:
            keys, values = list(cache.k), list(cache.v)
            if isinstance(layers, decode_partitioned.PartitionedLayers):  # final norm included
                if length != 1:
                    raise ValueError(f"partitioned decode weights take one token per row, got {length}")
                hidden, keys, values = decode_partitioned.decode_layers(
                    input_ids[:, 0], self.embed[...], layers, keys, values, cache.index, visible, local_visible,
                    ropes, scales, c, self.dtype)
                return hidden, self._advanced_cache(cache, keys, values, key_mask, attention_mask, length)
            if isinstance(layers, StackedLayers):  # sliced here, in the step (see decode_weights)
                layers = layers.per_layer()
            for i, (w, lw) in enumerate(layers):  # unrolled: see the module docstring
                def kv(k, v, i=i):
                    # Write the new tokens into this layer's cache in place, then attend over it.
                    k = k.transpose(0, 2, 1, 3).astype(keys[i].dtype)
                    v = v.transpose(0, 2, 1, 3).astype(values[i].dtype)
                    keys[i] = layer_math.write_slots(keys[i], k, cache.index, axis=2)
                    values[i] = layer_math.write_slots(values[i], v, cache.index, axis=2)
                    return keys[i].astype(self.dtype), values[i].astype(self.dtype), True

                x = layer(x, w, lw, kv, sliding[i])
            new_cache = self._advanced_cache(cache, keys, values, key_mask, attention_mask, length)
        return norm(x, self.final_norm[...]), new_cache

    @staticmethod
    def _advanced_cache(cache: KVCache, keys, values, key_mask, attention_mask, length: int) -> KVCache:
        """The cache after `length` new slots were written (keys and values, per layer)."""
        return KVCache(k=tuple(keys), v=tuple(values), key_mask=key_mask,
                       next_position=cache.next_position + attention_mask.sum(axis=1, dtype=jnp.int32),
                       index=cache.index + length)


def suffix_tree_layout(parents: tuple[int, ...], length: int) -> tuple[np.ndarray, np.ndarray]:
    """Trace-time constants for a token tree in the last len(parents) of `length` slots.

    Returns (visible [length, length]: False where a suffix slot would see a suffix slot that is
    not its ancestor or itself; position_offset [length]: how far each slot's sequential position
    lies beyond its depth in the tree). Parents must precede their children.
    """
    n = len(parents)
    if n > length:
        raise ValueError(f"a suffix tree of {n} tokens does not fit {length} slots")
    ancestor = np.eye(n, dtype=bool)  # ancestor[i, j]: j is i or an ancestor of i
    depth = np.zeros(n, np.int32)
    for i, parent in enumerate(parents):
        if not -1 <= parent < i:
            raise ValueError(f"suffix tree slot {i} has parent {parent}: parents must precede their children")
        if parent >= 0:
            ancestor[i] |= ancestor[parent]
            depth[i] = depth[parent] + 1
    visible = np.ones((length, length), bool)
    visible[length - n:, length - n:] = ancestor
    position_offset = np.zeros(length, np.int32)
    position_offset[length - n:] = np.arange(n) - depth
    return visible, position_offset
