"""Jitted batched generation over the KV cache, and continuation scoring for judges.

One call generates for a whole batch whose rows may belong to different tribe members
(adapter ids), with per-row temperature, top-k, top-p, max new tokens and stop tokens, all
traced: changing them never recompiles. Shapes are bucketed (prompt length, new-token budget,
batch) so that a Sparta iteration compiles a handful of programs once. Weights are an
argument of the compiled program, so new weights after a DPO step need no rebuild.

Shape of a call: prefill the left-padded prompts into a fresh cache, then one
`jax.lax.while_loop` that samples a token per row and feeds it back until every row has hit
a stop token or its budget. Tokens after a row's end are `pad_id`.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sparta_jax import sharding as sharding_lib
from sparta_jax.errors import SpartaError
from sparta_jax.models import decode_partitioned
from sparta_jax.models.llama import LlamaForCausalLM
from sparta_jax.models.lora import NO_ADAPTER
from sparta_jax.models.stack import MemberStack
from sparta_jax.sampling_filters import sample_candidates, sample_tokens, top_candidates


class PromptTooLongError(SpartaError, ValueError):
    pass


SLICE_LAYERS = ("per_call", "per_step")


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
    """Static shape choices. Values inside a bucket share one compiled program."""

    prompt_buckets: tuple[int, ...] = (32, 64, 128, 256, 512, 1024, 2048)
    new_token_buckets: tuple[int, ...] = (16, 32, 64, 128, 256, 512, 1024)
    max_stop_ids: int = 4  # stop-token slots per row
    candidates: int | None = 64  # sampling considers the best `candidates` logits (>= top_k)
    cache_dtype: str = "bfloat16"
    # `generate(..., rows=R)`: how many finished rows are refilled with waiting prompts together
    # (one prefill of that many prompts). 0: no refill, static batches of R rows.
    refill_rows: int = 0
    # With refill: the prompts of one `generate` call in the tribe's inference, as a multiple of
    # its rows (the queue's tail, where rows run out of prompts, is paid once per call).
    queue_batches: int = 8
    # Where a decode step's layer weights come from (LlamaForCausalLM.decode_weights): "per_call",
    # sliced out of the stacks once per generate call (a copy of the layer weights for the call's
    # length); "per_step", each step slices the stacks (no copy: free on TPU, a copy per step on CPU).
    slice_layers: str = "per_call"
    # On a mesh whose fsdp x tensor chips split the model (models/decode_partitioned.py), a decode
    # step's collectives written out by hand; False leaves the step to XLA's partitioner.
    partition_decode: bool = True
    # That step's attention and MLP: "xla" (XLA's fusions), "pallas" (the Pallas kernels of
    # models/decode_kernels.py where the program is compiled for TPU, XLA's ops elsewhere), or
    # "interpret" (those kernels interpreted on any backend: a slow check of their math).
    decode_kernels: str = "xla"

    def __post_init__(self):
        if self.slice_layers not in SLICE_LAYERS:
            raise ValueError(f"slice_layers {self.slice_layers!r}: one of {', '.join(SLICE_LAYERS)}")
        if self.decode_kernels not in decode_partitioned.KERNELS:
            raise ValueError(f"decode_kernels {self.decode_kernels!r}: one of {', '.join(decode_partitioned.KERNELS)}")

    @classmethod
    def from_config(cls, sampler_cfg) -> "SamplerConfig":
        """From a run config's `sampler` section."""
        return cls(prompt_buckets=tuple(sampler_cfg.prompt_buckets), new_token_buckets=tuple(sampler_cfg.new_token_buckets),
                   candidates=sampler_cfg.candidates, cache_dtype=str(sampler_cfg.cache_dtype),
                   refill_rows=int(sampler_cfg.get("refill_rows", cls.refill_rows)),
                   queue_batches=int(sampler_cfg.get("queue_batches", cls.queue_batches)),
                   slice_layers=str(sampler_cfg.get("slice_layers", cls.slice_layers)),
                   partition_decode=bool(sampler_cfg.get("partition_decode", cls.partition_decode)),
                   decode_kernels=str(sampler_cfg.get("decode_kernels", cls.decode_kernels)))


@dataclasses.dataclass
class Generation:
    tokens: np.ndarray  # [batch, n] generated ids, pad after each row's end
    lengths: np.ndarray  # [batch] tokens generated, the stop token included
    finish_reasons: list[str]  # "stop" (a stop token was sampled) or "length"
    texts: list[str] | None = None  # decoded without the stop token
    decode_steps: int | None = None  # decode steps the queue (`rows=`) took; None for a static batch


def bucket(value: int, buckets: Sequence[int], what: str) -> int:
    for b in buckets:
        if value <= b:
            return b
    raise PromptTooLongError(f"{what} {value} exceeds the largest bucket {max(buckets)}")


def left_pad(token_lists: Sequence[Sequence[int]], length: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    ids = np.full((len(token_lists), length), pad_id, np.int32)
    mask = np.zeros((len(token_lists), length), np.bool_)
    for row, tokens in enumerate(token_lists):
        if len(tokens) > length:
            raise PromptTooLongError(f"prompt {row} has {len(tokens)} tokens, more than {length}")
        if len(tokens):
            ids[row, length - len(tokens):] = tokens
            mask[row, length - len(tokens):] = True
    return ids, mask


def to_host(x) -> np.ndarray:
    """A (possibly multi-host sharded) array as numpy on every process."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))


def _per_row(value, batch: int, dtype) -> np.ndarray:
    arr = np.asarray(value, dtype)
    return np.broadcast_to(arr, (batch,)).copy() if arr.ndim == 0 else arr


def _at_slots(values: Sequence, slots: np.ndarray, rows: int, filler) -> list:
    out = [filler] * rows
    for value, slot in zip(values, slots):
        out[slot] = value
    return out


def _fill(values: np.ndarray, slots: np.ndarray, rows: int, filler) -> np.ndarray:
    out = np.full((rows,) + values.shape[1:], filler, values.dtype)
    out[slots] = values
    return out


def _per_member(impl, kinds: Sequence[str]):
    """impl(state, *args, **static) over a MemberStack: state leaves [M, ...]; an arg of kind
    "rows" is [M * R, ...] (member m's rows in block m), "member" is [M, ...], "shared" is the
    same for every member. Outputs come back as [M * R, ...]."""

    def run(state, *args, **static):
        members = jax.tree.leaves(state)[0].shape[0]
        split = lambda x: x.reshape((members, -1) + x.shape[1:])  # noqa: E731
        args = [jax.tree.map(split, a) if k == "rows" else a for a, k in zip(args, kinds)]
        in_axes = (0,) + tuple(None if k == "shared" else 0 for k in kinds)
        out = jax.vmap(functools.partial(impl, **static), in_axes=in_axes)(state, *args)
        return jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), out)

    return run


class Sampler:
    """Generation and scoring for one model family: a base plus its adapter stack (rows pick
    their adapter by `adapter_ids`), or a MemberStack of full parameter sets (rows pick their
    member by `adapter_ids`; the rows of each member run together, vmapped over the members, so
    every member's weights are read once per step)."""

    def __init__(self, model: LlamaForCausalLM | MemberStack, tokenizer=None, *,
                 config: SamplerConfig = SamplerConfig(), mesh=None, pad_id: int | None = None):
        self.graphdef = model.graphdef if isinstance(model, MemberStack) else nnx.split(model)[0]
        self.model_config = model.config
        self.tokenizer = tokenizer
        self.config = config
        self.mesh = mesh
        # The mesh the model's decode steps run on (its activation sharding's), which may be
        # given to the model and not to the sampler.
        self.decode_mesh = None if isinstance(model, MemberStack) else model.decode_mesh()
        if pad_id is None:
            pad_id = getattr(tokenizer, "pad_token_id", None)
            pad_id = pad_id if pad_id is not None else getattr(tokenizer, "eos_token_id", None)
        self.pad_id = int(pad_id or 0)
        self.trace_count = 0  # how many programs were traced (each trace is a compilation)
        self._generate = jax.jit(self._generate_impl, static_argnames=("max_new",))
        self._generate_queue = jax.jit(self._generate_queue_impl, static_argnames=("rows", "max_new"))
        self._score = jax.jit(self._score_impl)
        self._table = jax.jit(self._table_impl, static_argnames=("tree",))
        # A MemberStack's members decode vmapped, under XLA's own partitioning (not by hand).
        self._generate_stacked = jax.jit(_per_member(functools.partial(self._generate_impl, partitioned=False),
                                                     ("rows", "rows", "rows", "member")),
                                         static_argnames=("max_new",))
        self._score_stacked = jax.jit(_per_member(self._score_impl, ("rows",) * 4))
        self._table_stacked = jax.jit(_per_member(self._table_impl, ("rows", "rows", "rows", "shared", "shared")),
                                      static_argnames=("tree",))

    # ------------------------------------------------------------------------------ inputs
    def encode_chat(self, prompts: Sequence[str], system_prompt: str | None = None) -> list[list[int]]:
        """Token ids of each prompt as one user turn through the model's own chat template."""
        out = []
        for text in prompts:
            messages = ([{"role": "system", "content": system_prompt}] if system_prompt else [])
            messages.append({"role": "user", "content": text})
            rendered = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            out.append(self.tokenizer.encode(rendered, add_special_tokens=False))
        return out

    def partitions_decode(self) -> bool:
        """Whether decode steps run the hand-partitioned layers (models/decode_partitioned.py)."""
        return (self.config.partition_decode and self.config.slice_layers == "per_call"
                and decode_partitioned.partition_problem(self.model_config, self.decode_mesh) is None)

    def _batch_rows(self, n: int, decode: bool = True) -> int:
        """n rows padded to what the programs need: a multiple of the batch axes (rows split over
        them), and for rows that decode by hand-partitioned steps, of every chip."""
        multiple = 1
        if self.mesh is not None:
            multiple = int(np.prod([self.mesh.shape[a] for a in sharding_lib.BATCH_AXES if a in self.mesh.shape]))
        if decode and self.partitions_decode():
            multiple = decode_partitioned.row_multiple(self.decode_mesh)  # its logits: whole rows on every chip
        return -(-n // multiple) * multiple

    def _layout(self, model, adapter_ids, n: int, decode: bool = True) -> tuple[object, int, np.ndarray, int]:
        """(weights, members, slots, rows): where each of the n real rows sits in a batch of
        `rows` (filler rows elsewhere). With a MemberStack, member m's rows fill slots
        [m * R, (m + 1) * R), R the largest member's row count rounded up to a power of two (so
        that a handful of programs serve every mix) and to the batch multiple."""
        if not isinstance(model, MemberStack):
            return nnx.split(model)[1], 0, np.arange(n), self._batch_rows(n, decode)
        members = model.num_members
        if adapter_ids is None:
            raise ValueError("a MemberStack needs adapter_ids: the member of each row")
        ids = _per_row(adapter_ids, n, np.int32)
        if ids.min() < 0 or ids.max() >= members:
            raise ValueError(f"member ids must lie in [0, {members}), got {sorted(set(ids.tolist()))}")
        counts = np.bincount(ids, minlength=members)
        per_member = self._batch_rows(1 << int(counts.max() - 1).bit_length(), decode=False)  # vmapped: XLA partitions it
        rank = np.zeros(n, np.int64)
        for m in range(members):
            rank[ids == m] = np.arange(counts[m])
        return model.state, members, ids * per_member + rank, members * per_member

    def _prompt_rows(self, prompts: Sequence[Sequence[int]], slots: np.ndarray, rows: int):
        """Left-padded prompts in their length bucket, at their slots; filler rows elsewhere."""
        prompt_len = bucket(max(len(p) for p in prompts), self.config.prompt_buckets, "prompt length")
        return left_pad(_at_slots(prompts, slots, rows, [self.pad_id]), prompt_len, self.pad_id)

    @staticmethod
    def _row_adapters(adapter_ids, n: int, slots: np.ndarray, rows: int, members: int) -> np.ndarray:
        """Each real row's adapter (scalar or per row); filler rows use the base model. A
        MemberStack's members have no adapters (the member is chosen by the row's slot)."""
        if members:
            return np.full((rows,), NO_ADAPTER, np.int32)
        real = _per_row(NO_ADAPTER if adapter_ids is None else adapter_ids, n, np.int32)
        return _fill(real, slots, rows, NO_ADAPTER)

    def _place(self, *arrays):
        if self.mesh is None:
            return tuple(jnp.asarray(a) for a in arrays)
        return tuple(jax.device_put(a, sharding_lib.batch_sharding(self.mesh, a.ndim)) for a in arrays)

    # -------------------------------------------------------------------------- generation
    def generate(self, model: LlamaForCausalLM | MemberStack, prompts: Sequence[Sequence[int]], *, rng,
                 adapter_ids=None, temperature=0.0, top_k=0, top_p=1.0, max_new_tokens=64, stop_ids=None,
                 decode: bool = True, rows: int | None = None, key_ids: Sequence[int] | None = None) -> Generation:
        """Generate for token-id prompts. Per-row settings may be scalars or length-batch lists.

        By default every prompt gets a row of one static batch. With `rows` and
        `SamplerConfig.refill_rows` > 0 (and an adapter model, not a MemberStack), the prompts
        wait in a queue and `rows` rows decode them: a row whose answer has ended takes the next
        waiting prompt, inside the jitted loop (`_generate_queue_impl`). Each prompt then draws
        from its own keys (folded from `key_ids`, default its index), so its answer does not
        depend on the row or step it was decoded in. Prompts of different length buckets queue
        apart, one loop per bucket: every refill prefills a whole bucket, so one long prompt
        would otherwise make every prompt's prefill as long as its.
        """
        n = len(prompts)
        if n == 0:
            return Generation(np.zeros((0, 0), np.int32), np.zeros((0,), np.int32), [], [] if decode else None)
        queued = rows is not None and self.config.refill_rows > 0 and not isinstance(model, MemberStack)
        if queued:
            buckets = np.array([bucket(len(p), self.config.prompt_buckets, "prompt length") for p in prompts])
            if len(set(buckets.tolist())) > 1:
                settings = dict(adapter_ids=adapter_ids, temperature=temperature, top_k=top_k, top_p=top_p,
                                max_new_tokens=max_new_tokens)
                return self._generate_by_bucket(model, prompts, buckets, rng=rng, rows=rows, decode=decode,
                                                key_ids=np.arange(n) if key_ids is None else np.asarray(key_ids),
                                                stop_ids=self._stop_rows(stop_ids, n), **settings)
            # The queue's length is rows x a power of two: a handful of programs serve every n.
            rows = self._batch_rows(min(int(rows), n))
            queue = rows * (1 << (-(-n // rows) - 1).bit_length())
            state, members, slots = nnx.split(model)[1], 0, np.arange(n)
        else:
            state, members, slots, queue = self._layout(model, adapter_ids, n)
        ids, mask = self._prompt_rows(prompts, slots, queue)  # filler rows generate nothing (max_new_tokens 0)
        prompt_len = ids.shape[1]
        max_new_rows = _per_row(max_new_tokens, n, np.int32)
        max_new = bucket(int(max_new_rows.max()), self.config.new_token_buckets, "max_new_tokens")
        if prompt_len + max_new > self.model_config.max_position_embeddings:
            raise PromptTooLongError(
                f"prompt bucket {prompt_len} + {max_new} new tokens exceeds the model's context of "
                f"{self.model_config.max_position_embeddings} tokens")
        row_params = self._row_params(n, slots, queue, members, adapter_ids=adapter_ids, temperature=temperature,
                                      top_k=top_k, top_p=top_p, max_new_rows=max_new_rows, stop_ids=stop_ids)
        ids, mask = self._place(ids, mask)
        placed = dict(zip(row_params, self._place(*row_params.values())))
        steps = None
        if queued:
            keys = _fill(np.arange(n) if key_ids is None else np.asarray(key_ids, np.int32), slots, queue, 0)
            placed["key_ids"] = self._place(keys.astype(np.int32))[0]
            out, steps = self._generate_queue(state, ids, mask, placed, jnp.asarray(n, jnp.int32), rng, rows=rows,
                                              max_new=max_new)
            steps = int(to_host(steps))
        elif members:
            out = self._generate_stacked(state, ids, mask, placed, jax.random.split(rng, members), max_new=max_new)
        else:
            out = self._generate(state, ids, mask, placed, rng, max_new=max_new)
        tokens, lengths, stopped = (to_host(x)[slots] for x in out)
        tokens = tokens[:, : int(max_new_rows.max())]  # the budget bucket's extra columns are all pad
        reasons = ["stop" if s else "length" for s in stopped]
        texts = None
        if decode:
            texts = [self.tokenizer.decode(tokens[r, : lengths[r] - int(stopped[r])]) for r in range(n)]
        return Generation(tokens, lengths, reasons, texts, decode_steps=steps)

    def _generate_by_bucket(self, model, prompts, buckets: np.ndarray, *, rng, rows, decode, key_ids, stop_ids,
                            **per_row) -> Generation:
        """`generate` in queue mode, one queue per prompt-length bucket (`buckets`: each prompt's);
        outputs in prompt order. `stop_ids` holds each prompt's list."""
        n = len(prompts)
        parts = []
        for b in sorted(set(buckets.tolist())):
            idx = np.flatnonzero(buckets == b)
            # A per-row setting is cut to the bucket's rows; a scalar (or None) serves them all.
            pick = lambda v: v if np.ndim(v) == 0 else [v[i] for i in idx]  # noqa: E731
            parts.append((idx, self.generate(
                model, [prompts[i] for i in idx], rng=rng, rows=rows, decode=decode, key_ids=key_ids[idx],
                stop_ids=[stop_ids[i] for i in idx], **{k: pick(v) for k, v in per_row.items()})))
        width = max(g.tokens.shape[1] for _, g in parts)
        tokens = np.full((n, width), self.pad_id, np.int32)
        lengths, reasons, texts = np.zeros((n,), np.int32), [""] * n, [""] * n
        for idx, g in parts:
            tokens[idx, : g.tokens.shape[1]] = g.tokens
            lengths[idx] = g.lengths
            for j, i in enumerate(idx):
                reasons[i] = g.finish_reasons[j]
                texts[i] = g.texts[j] if decode else ""
        return Generation(tokens, lengths, reasons, texts if decode else None,
                          decode_steps=sum(g.decode_steps for _, g in parts))

    def _stop_rows(self, stop_ids, n: int) -> list:
        """Each of the n rows' stop ids: `stop_ids` is one list for every row, a list per row, or
        None (the tokenizer's end token)."""
        if stop_ids is None:
            eos = getattr(self.tokenizer, "eos_token_id", None)
            stop_ids = [] if eos is None else [eos]
        stop_rows = stop_ids if (len(stop_ids) and isinstance(stop_ids[0], (list, tuple))) else [stop_ids] * n
        for r, s in enumerate(stop_rows):
            if len(s) > self.config.max_stop_ids:
                raise ValueError(f"row {r}: {len(s)} stop ids, at most {self.config.max_stop_ids}")
        return stop_rows

    def _row_params(self, n: int, slots: np.ndarray, rows: int, members: int, *, adapter_ids, temperature, top_k,
                    top_p, max_new_rows, stop_ids) -> dict[str, np.ndarray]:
        """Each row's sampling settings, adapter and stop ids, at their slots of `rows`; filler
        rows get a budget of 0 (they generate nothing)."""
        stops = np.full((rows, self.config.max_stop_ids), -1, np.int32)
        for r, s in enumerate(self._stop_rows(stop_ids, n)):
            stops[slots[r], : len(s)] = s

        def fill(values, dtype, filler):
            return _fill(_per_row(values, n, dtype), slots, rows, filler)

        params = dict(
            adapter_ids=self._row_adapters(adapter_ids, n, slots, rows, members),
            temperature=fill(temperature, np.float32, 0.0),
            top_k=fill(top_k, np.int32, 0),
            top_p=fill(top_p, np.float32, 1.0),
            max_new_tokens=fill(max_new_rows, np.int32, 0),
            stop_ids=stops,
        )
        if self.config.candidates is not None and int(params["top_k"].max()) > self.config.candidates:
            raise ValueError(f"top_k {int(params['top_k'].max())} exceeds SamplerConfig.candidates "
                             f"{self.config.candidates}")
        return params

    # What a decode loop carries from one step to the next: with `candidates`, each row's best
    # logits and their token ids (found where the step's logits lie), else the whole logits.
    def _carried(self, logits):
        return logits if self.config.candidates is None else top_candidates(logits, self.config.candidates)

    def _step(self, model, layers, token, live, cache, adapter_ids):
        if self.config.candidates is None:
            return decode_step(model, layers, token, live, cache, adapter_ids)
        return decode_step_candidates(model, layers, token, live, cache, adapter_ids, self.config.candidates)

    def _draw(self, rng, last, temperature, top_k, top_p):
        if self.config.candidates is None:
            return sample_tokens(rng, last, temperature, top_k, top_p)
        return sample_candidates(rng, *last, temperature, top_k, top_p)

    def _decode_weights(self, model, partitioned: bool = True):
        """The layer weights of this call's decode steps (`LlamaForCausalLM.decode_weights`)."""
        return model.decode_weights(per_step=self.config.slice_layers == "per_step",
                                    partitioned=partitioned and self.config.partition_decode,
                                    kernels=self.config.decode_kernels)

    def _generate_impl(self, state, ids, mask, p, rng, *, max_new: int, partitioned: bool = True):
        self.trace_count += 1
        model = nnx.merge(self.graphdef, state)
        batch, prompt_len = ids.shape
        logits, cache = model.prefill(ids, mask, prompt_len + max_new, adapter_ids=p["adapter_ids"],
                                      cache_dtype=jnp.dtype(self.config.cache_dtype))
        layers = self._decode_weights(model, partitioned)

        def sample(step, last):
            return self._draw(jax.random.fold_in(rng, step), last, p["temperature"], p["top_k"], p["top_p"])

        def cond(carry):
            step, _, _, _, done, _, _ = carry
            return (step < max_new) & ~jnp.all(done)

        def body(carry):
            step, last, cache, tokens, done, lengths, stopped = carry
            token = jnp.where(done, self.pad_id, sample(step, last))
            tokens = jax.lax.dynamic_update_slice(tokens, token[:, None], (0, step))
            live = ~done
            hit_stop = live & jnp.any(token[:, None] == p["stop_ids"], axis=-1)
            lengths = lengths + live.astype(jnp.int32)
            stopped = stopped | hit_stop
            done = done | hit_stop | (lengths >= p["max_new_tokens"])
            last, cache = self._step(model, layers, token, live, cache, p["adapter_ids"])
            return step + 1, last, cache, tokens, done, lengths, stopped

        init = (
            jnp.zeros((), jnp.int32), self._carried(logits[:, -1]), cache,
            jnp.full((batch, max_new), self.pad_id, jnp.int32),
            p["max_new_tokens"] <= 0, jnp.zeros((batch,), jnp.int32), jnp.zeros((batch,), jnp.bool_),
        )
        _, _, _, tokens, _, lengths, stopped = jax.lax.while_loop(cond, body, init)
        return tokens, lengths, stopped

    def _generate_queue_impl(self, state, ids, mask, p, n_real, rng, *, rows: int, max_new: int):
        """Continuous batching: `rows` rows decode a queue of prompts ([queue, ...] arrays, the
        first `n_real` real). Each step samples a token for every live row and feeds it back;
        when at least `refill_rows` rows have finished (or every waiting prompt has a free row),
        the next waiting prompts are prefilled together and take those rows (again while that
        many rows are still free): their cache rows are overwritten, so each row keeps its own
        slot index (a per-row cache index). A prompt's t-th token is drawn with key
        fold_in(fold_in(rng, key_ids[prompt]), t). Outputs are per prompt."""
        self.trace_count += 1
        model = nnx.merge(self.graphdef, state)
        queue, prompt_len = ids.shape
        refill = min(self.config.refill_rows, rows)
        cache_dtype = jnp.dtype(self.config.cache_dtype)
        layers = self._decode_weights(model)

        def prefill(prompt):  # prompt indices [k] -> (last-position logits [k, vocab], per-row-index cache)
            logits, cache = model.prefill(ids[prompt], mask[prompt], prompt_len + max_new,
                                          adapter_ids=p["adapter_ids"][prompt], cache_dtype=cache_dtype)
            return self._carried(logits[:, -1]), cache.replace(index=jnp.full(prompt.shape, prompt_len, jnp.int32))

        def take_rows(carry):
            """The next waiting prompts into the first free rows (at most `refill` of them)."""
            step, last, cache, serving, row_len, done, next_prompt, out = carry
            free_rows = jnp.argsort(~done, stable=True)[:refill]  # finished rows first
            k = jnp.arange(refill)
            valid = k < jnp.minimum(jnp.sum(done), n_real - next_prompt)
            prompt = jnp.minimum(next_prompt + k, queue - 1)
            new_last, new_cache = prefill(prompt)
            target = jnp.where(valid, free_rows, rows)  # out of range: dropped

            def put(old, new):
                return old.at[target].set(new.astype(old.dtype), mode="drop")

            cache = jax.tree.map(put, cache, new_cache)
            return (step, jax.tree.map(put, last, new_last), cache, put(serving, prompt), put(row_len, jnp.zeros_like(k)),
                    put(done, p["max_new_tokens"][prompt] <= 0), next_prompt + jnp.sum(valid), out)

        def cond(carry):
            _, _, _, _, _, done, next_prompt, _ = carry
            return ~jnp.all(done) | (next_prompt < n_real)

        def refill_due(carry):  # enough free rows for the next refill (or for every waiting prompt)
            _, _, _, _, _, done, next_prompt, _ = carry
            waiting = n_real - next_prompt
            return (waiting > 0) & (jnp.sum(done) >= jnp.minimum(refill, waiting))

        def body(carry):
            carry = jax.lax.while_loop(refill_due, take_rows, carry)  # usually 0 or 1 refills
            step, last, cache, serving, row_len, done, next_prompt, (tokens, lengths, stopped) = carry
            live = ~done
            keys = jax.vmap(lambda i, t: jax.random.fold_in(jax.random.fold_in(rng, i), t))(p["key_ids"][serving],
                                                                                          row_len)
            token = self._draw(keys, last, p["temperature"][serving], p["top_k"][serving], p["top_p"][serving])
            token = jnp.where(live, token, self.pad_id)
            at = jnp.where(live, serving, queue)  # a finished row writes nothing
            tokens = tokens.at[at, row_len].set(token, mode="drop")
            hit_stop = live & jnp.any(token[:, None] == p["stop_ids"][serving], axis=-1)
            row_len = row_len + live.astype(jnp.int32)
            lengths = lengths.at[at].set(row_len, mode="drop")
            stopped = stopped.at[at].set(hit_stop, mode="drop")
            done = done | hit_stop | (row_len >= p["max_new_tokens"][serving])
            last, cache = self._step(model, layers, token, live, cache, p["adapter_ids"][serving])
            return step + 1, last, cache, serving, row_len, done, next_prompt, (tokens, lengths, stopped)

        first = jnp.arange(rows)
        last, cache = prefill(first)
        out = (jnp.full((queue, max_new), self.pad_id, jnp.int32), jnp.zeros((queue,), jnp.int32),
               jnp.zeros((queue,), jnp.bool_))
        init = (jnp.zeros((), jnp.int32), last, cache, first, jnp.zeros((rows,), jnp.int32),
                (p["max_new_tokens"][first] <= 0) | (first >= n_real), jnp.minimum(n_real, rows), out)
        final = jax.lax.while_loop(cond, body, init)
        return final[-1], final[0]

    # ----------------------------------------------------------------------------- scoring
    def score_continuations(self, model: LlamaForCausalLM | MemberStack, prompts: Sequence[Sequence[int]],
                            continuations: Sequence[Sequence[int]], *, adapter_ids=None) -> np.ndarray:
        """log p(continuation | prompt) summed over its tokens, per row, in one forward pass.

        Row r scores continuations[r] after prompts[r]; to score several candidates after one
        prompt, repeat the prompt. Returns float32 [rows].
        """
        n = len(prompts)
        if n != len(continuations):
            raise ValueError("one continuation per prompt")
        state, members, slots, rows = self._layout(model, adapter_ids, n, decode=False)
        pids, pmask = self._prompt_rows(prompts, slots, rows)
        cont_len = bucket(max(len(c) for c in continuations), self.config.new_token_buckets, "continuation length")
        cids = np.full((rows, cont_len), self.pad_id, np.int32)
        cmask = np.zeros((rows, cont_len), np.bool_)
        for r, c in enumerate(continuations):
            cids[slots[r], : len(c)] = c
            cmask[slots[r], : len(c)] = True
        placed = self._place(np.concatenate([pids, cids], 1), np.concatenate([pmask, cmask], 1), cmask,
                             self._row_adapters(adapter_ids, n, slots, rows, members))
        return to_host((self._score_stacked if members else self._score)(state, *placed))[slots]

    def _score_impl(self, state, ids, mask, target_mask, adapter_ids):
        self.trace_count += 1
        model = nnx.merge(self.graphdef, state)
        cont_len = target_mask.shape[1]
        hidden = model.hidden_states(ids, mask, adapter_ids=adapter_ids)
        # The continuation's tokens are predicted by the slot before each of them; with the
        # prompt left padded its last slot is real, and the continuation follows contiguously.
        predictors = hidden[:, -cont_len - 1: -1]
        logp = jax.nn.log_softmax(model.logits_from_hidden(predictors), axis=-1)
        targets = ids[:, -cont_len:]
        token_logp = jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
        return jnp.sum(jnp.where(target_mask, token_logp, 0.0), axis=-1)

    def candidate_logprobs(self, model: LlamaForCausalLM | MemberStack, prompts: Sequence[Sequence[int]],
                           candidates: Sequence[Sequence[int]], *, adapter_ids=None,
                           continuation_ids: Sequence[int] | None = None) -> np.ndarray:
        """log p(candidate | prompt) for every candidate after every prompt: [rows, candidates].

        One forward pass per prompt: the candidates are laid after it as a token tree (shared
        first tokens once: under a digit-splitting tokenizer "10" is "1" then "0", so "1" and
        "10" share a node), each tree token seeing the prompt and its own ancestors only.
        With `continuation_ids` a candidate counts only where it is not continued by one of
        those tokens: log p(candidate) + log(1 - sum p(t | candidate) over t in
        continuation_ids), computed as the log of the remaining mass (no cancellation). That
        makes "1" mean the number 1, not a prefix of "10" (the judges' `logits` mode).
        """
        parents, ends = candidate_tree(candidates)
        tokens = [token for token, _ in parents]
        tree = tuple(parent for _, parent in parents)
        query = sorted(set(tokens))
        continues = np.zeros((self.model_config.vocab_size,), np.bool_)
        if continuation_ids is not None:
            continues[np.asarray(list(continuation_ids), np.int64)] = True
        n = len(prompts)
        state, members, slots, rows = self._layout(model, adapter_ids, n, decode=False)
        ids, mask = self._prompt_rows(prompts, slots, rows)
        ids = np.concatenate([ids, np.tile(np.asarray(tokens, np.int32), (rows, 1))], axis=1)
        mask = np.concatenate([mask, np.ones((rows, len(tokens)), np.bool_)], axis=1)
        placed = self._place(ids, mask, self._row_adapters(adapter_ids, n, slots, rows, members))
        table_fn = self._table_stacked if members else self._table
        table, stop = (to_host(x)[slots] for x in table_fn(state, *placed, np.asarray(query, np.int32), continues,
                                                            tree=tree))
        return tree_candidate_logprobs(table, stop if continuation_ids is not None else None, parents, ends, query)

    def _table_impl(self, state, ids, mask, adapter_ids, query_ids, continues, *, tree: tuple[int, ...]):
        """([rows, nodes + 1, queries] log p(query token), [rows, nodes + 1] log p(a token outside
        `continues`)) after the prompt's last slot and after each node of the appended tree."""
        self.trace_count += 1
        model = nnx.merge(self.graphdef, state)
        hidden = model.hidden_states(ids, mask, adapter_ids=adapter_ids, suffix_tree=tree)
        predictors = hidden[:, -len(tree) - 1:]
        logp = jax.nn.log_softmax(model.logits_from_hidden(predictors), axis=-1)
        stop = jax.nn.logsumexp(jnp.where(continues, -jnp.inf, logp), axis=-1)
        return jnp.take(logp, query_ids, axis=-1), stop


def decode_step(model: LlamaForCausalLM, layers, token, live, cache, adapter_ids):
    """One token per row through the model: (next-token logits [batch, vocab], updated cache).

    The body of the sampler's decode loop, and the program `sparta_jax.aot --roofline` and the
    cache tests compile on their own. `layers` is `model.decode_weights(...)`.
    """
    logits, cache = model.extend(token[:, None], live[:, None], cache, adapter_ids=adapter_ids, layers=layers)
    return logits[:, -1], cache


def decode_step_candidates(model: LlamaForCausalLM, layers, token, live, cache, adapter_ids, candidates: int):
    """`decode_step` returning each row's `candidates` best next-token logits and their token ids
    ([batch, candidates], best first) instead of all of them: what the sampler draws from
    (`sampling_filters.sample_candidates`). On hand-partitioned layers each chip ranks its slice
    of the vocabulary and the whole logits are never gathered."""
    return model.extend_candidates(token[:, None], live[:, None], cache, n=candidates, adapter_ids=adapter_ids,
                                   layers=layers)


def tree_candidate_logprobs(table: np.ndarray, stop: np.ndarray | None, nodes: Sequence[tuple[int, int]],
                            ends: Sequence[int], query: Sequence[int]) -> np.ndarray:
    """Each candidate's log-likelihood from the per-node tables of `Sampler.candidate_logprobs`.

    table [rows, nodes + 1, queries]: log p(query[q]) after predictor k, where predictor 0 is the
    prompt's last slot and predictor k + 1 is tree node k; stop [rows, nodes + 1]: log p(the
    candidate is not continued) after each predictor, or None to leave it out. A candidate's
    log-likelihood is the sum over its nodes of log p(node token | parent), plus stop at its end.
    """
    column = {t: i for i, t in enumerate(query)}
    out = np.zeros((table.shape[0], len(ends)), np.float64)
    for j, end in enumerate(ends):
        node = end
        while node >= 0:
            token, parent = nodes[node]
            out[:, j] += table[:, parent + 1, column[token]]
            node = parent
        if stop is not None:
            out[:, j] += stop[:, end + 1]
    return out


def candidate_tree(candidates: Sequence[Sequence[int]]) -> tuple[list[tuple[int, int]], list[int]]:
    """Candidates as a token trie: (nodes as (token, parent node or -1), parents before children;
    the node where each candidate ends). Shared prefixes become one branch."""
    nodes: list[tuple[int, int]] = []
    child: dict[tuple[int, int], int] = {}
    ends = []
    for c in candidates:
        if not len(c):
            raise ValueError("a candidate needs at least one token")
        node = -1
        for token in c:
            key = (node, int(token))
            if key not in child:
                child[key] = len(nodes)
                nodes.append((int(token), node))
            node = child[key]
        ends.append(node)
    return nodes, ends
