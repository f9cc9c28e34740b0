"""DPO training of a whole tribe in one jitted step (docs/algorithm.md §2.6).

Every member trains on the same preference pairs. Two tribe shapes:
- `lora`: one frozen base plus a stack of M adapters. The batch is every pair once per member;
  each row carries its member's adapter index, so one forward serves all members.
- `full`: M full parameter sets stacked on a leading member axis; the loss is vmapped.

Members are independent: the loss is the sum of the members' mean losses, so each member's
gradient is exactly what a single-member step would give, and gradient clipping is applied
per member (a global clip over the stack would couple them).

Log-probabilities are taken from the final hidden states chunk by chunk over the sequence,
with the chunk recomputed in the backward pass unless `remat` is "none", so [rows, length, vocab] is
never held in float32 at once.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from sparta_jax.dpo_loss import dpo_loss, dpo_metrics
from sparta_jax.models.llama import remat_mode


@dataclasses.dataclass(frozen=True)
class DPOConfig:
    """docs/algorithm.md §2.6 defaults (the released settings)."""

    beta: float = 0.1
    loss_type: str = "sigmoid"
    label_smoothing: float = 0.0
    # Weight α of a negative log-likelihood term on the chosen responses (per token, over the batch),
    # added to each member's DPO loss: TRL's loss_type=["sigmoid", "sft"], loss_weights=[1, α]
    # (RPO, Pang et al. 2024). Plain DPO can lower the chosen answers' likelihood along with the
    # rejected ones; the term holds it up. 0 is the released setting (docs/algorithm.md §2.6).
    sft_weight: float = 0.0
    learning_rate: float = 1e-6
    lr_schedule: str = "cosine"  # "cosine" or "constant", both after a linear warmup
    warmup_ratio: float = 0.1
    weight_decay: float = 1e-5
    max_grad_norm: float = 1.0  # transformers' Trainer default; <= 0 disables
    adam_b1: float = 0.9
    adam_b2: float = 0.999
    adam_eps: float = 1e-8
    pairs_per_step: int = 1  # the released batch size
    grad_accum: int = 1
    epochs: int = 1
    max_length: int = 512
    max_prompt_length: int = 256
    logps_chunk: int = 128
    # What the backward pass recomputes (models.llama.REMAT_MODES): "full" (True) each layer, from
    # its input: memory for one layer, a third more compute; "dots" all but the projections'
    # outputs, which it keeps; "none" (False) nothing. Each log-prob chunk's logits are recomputed
    # unless "none". The 7B configs use "dots" where it fits; the CPU configs turn it off (a 135M
    # model's activations are small, and the recompute was the CPU step's gap to PyTorch:
    # BENCHMARKS.md, "DPO step").
    remat: bool | str = True
    # Unroll every scan (micro-batches, layers, log-prob chunks): the same math, compiled for XLA's
    # cost analysis, which counts a loop's body once (`sparta_jax.aot --roofline`). Slow to compile.
    unroll_scans: bool = False

    def __post_init__(self):
        remat_mode(self.remat)  # a ValueError naming the modes


def dpo_config(config) -> DPOConfig:
    """A run config's DPOConfig: config.dpo, except that SPPO trains with its own loss and beta
    (methods.sppo.beta, its 1/eta)."""
    fields = {f.name for f in dataclasses.fields(DPOConfig)}
    values = {k: v for k, v in config.dpo.items() if k in fields}
    if config.get("method", "sparta") == "sppo":
        values.update(loss_type="sppo", beta=config.methods.sppo.beta)
    return DPOConfig(**values)


class PairBatch(NamedTuple):
    """Preference pairs as token rows: [pairs, 2 (chosen, rejected), length], right padded.

    `mask` marks real tokens, `response_mask` the response tokens whose log-probs count.
    `targets` ([pairs, 2] float32, optional) are the chosen and rejected responses' win
    probabilities, read by the `sppo` loss only.
    """

    ids: jax.Array
    mask: jax.Array
    response_mask: jax.Array
    targets: Optional[jax.Array] = None


# ------------------------------------------------------------------------------- schedule
def warmup_steps(cfg: DPOConfig, total_steps: int) -> int:
    return math.ceil(total_steps * cfg.warmup_ratio)


def learning_rate(cfg: DPOConfig, step, warmup, total):
    """transformers' linear warmup then cosine (or constant) decay at `step`. Every argument
    but cfg may be traced, so a run whose iterations train for different numbers of steps
    compiles its train step once."""
    if cfg.lr_schedule not in ("cosine", "constant"):
        raise ValueError(f"lr_schedule must be 'cosine' or 'constant', got {cfg.lr_schedule!r}")
    step = jnp.asarray(step, jnp.float32)
    ramp = step / jnp.maximum(1, warmup)
    progress = (step - warmup) / jnp.maximum(1, total - warmup)
    decay = 0.5 * (1.0 + jnp.cos(jnp.pi * progress)) if cfg.lr_schedule == "cosine" else 1.0
    return cfg.learning_rate * jnp.where(step < warmup, ramp, decay)


def learning_rate_schedule(cfg: DPOConfig, total_steps: int) -> Callable:
    """The schedule of a `total_steps`-step run, as a function of the step."""
    warm = warmup_steps(cfg, total_steps)
    learning_rate(cfg, 0, warm, total_steps)  # an unknown schedule fails here, not at the first step
    return lambda step: learning_rate(cfg, step, warm, total_steps)


def clip_per_member(max_norm: float, member_axis: Callable[[str], int]) -> optax.GradientTransformation:
    """Scale each member's gradient to norm <= max_norm, as torch's clip_grad_norm_ does.

    `member_axis(path)` gives the member axis of each leaf.
    """

    def update(updates, state, params=None):
        del params
        paths_leaves = jax.tree_util.tree_flatten_with_path(updates)[0]
        sq = None
        for path, g in paths_leaves:
            axis = member_axis(_path_str(path))
            other = tuple(a for a in range(g.ndim) if a != axis)
            s = jnp.sum(jnp.square(g.astype(jnp.float32)), axis=other)
            sq = s if sq is None else sq + s
        norm = jnp.sqrt(sq)
        scale = jnp.minimum(1.0, max_norm / (norm + 1e-6))
        return scale_members(updates, scale, member_axis), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def scale_members(tree, factors, member_axis: Callable[[str], int]):
    """Every leaf's slice of member m along member_axis(path) times factors[m] (in the factors'
    precision, cast back to the leaf's dtype)."""
    def scale(path, x):
        shape = [1] * x.ndim
        shape[member_axis(_path_str(path))] = -1
        return (x * jnp.reshape(factors, shape)).astype(x.dtype)
    return jax.tree_util.tree_map_with_path(scale, tree)


def _path_str(path) -> str:
    from sparta_jax.sharding import path_name

    return path_name(path)


def lora_member_axis(path: str) -> int:
    return 1  # LoRA leaves are [layers, members, ...]


def full_member_axis(path: str) -> int:
    return 0  # stacked full parameter sets are [members, ...]


def decay_mask(params):
    """transformers' Trainer rule: no weight decay on biases and norm weights."""
    def keep(path, _):
        name = _path_str(path)
        return not (name.endswith("_bias") or name.endswith("norm"))
    return jax.tree_util.tree_map_with_path(keep, params)


def make_optimizer(cfg: DPOConfig, member_axis: Callable[[str], int]) -> optax.GradientTransformation:
    """Per-member clipping, then AdamW at unit learning rate: the train step scales the update
    by the schedule's rate (`learning_rate`), as optax's adamw would."""
    parts = []
    if cfg.max_grad_norm and cfg.max_grad_norm > 0:
        parts.append(clip_per_member(cfg.max_grad_norm, member_axis))
    parts.append(optax.adamw(1.0, b1=cfg.adam_b1, b2=cfg.adam_b2, eps=cfg.adam_eps,
                             weight_decay=cfg.weight_decay, mask=decay_mask))
    return optax.chain(*parts)


# ------------------------------------------------------------------------------- log-probs
def sequence_logps(model, ids, mask, response_mask, *, adapter_ids=None, chunk: int = 128,
                   remat: bool | str = False, unroll: bool = False) -> jax.Array:
    """Sum of log p(token | prefix) over the response tokens of each row: [rows] float32."""
    rows, length = ids.shape
    hidden = model.hidden_states(ids, mask, adapter_ids=adapter_ids, remat=remat, unroll=unroll)[:, :-1]  # t predicts t + 1
    targets = ids[:, 1:]
    weights = response_mask[:, 1:].astype(jnp.float32)
    n = length - 1
    chunk = min(chunk, n)
    pad = -n % chunk
    if pad:
        hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
        targets = jnp.pad(targets, ((0, 0), (0, pad)))
        weights = jnp.pad(weights, ((0, 0), (0, pad)))
    n_chunks = (n + pad) // chunk
    split = lambda x: jnp.moveaxis(x.reshape(rows, n_chunks, chunk, *x.shape[2:]), 1, 0)  # noqa: E731
    unembed = model.unembedding().astype(model.dtype)

    def chunk_logps(h, t, w):
        logits = model.cap_logits(jnp.einsum("rcd,dv->rcv", h, unembed, preferred_element_type=jnp.float32))
        picked = jnp.take_along_axis(logits, t[..., None], axis=-1)[..., 0]
        return jnp.sum((picked - jax.nn.logsumexp(logits, axis=-1)) * w, axis=-1)

    # With remat a chunk's float32 logits are recomputed in the backward pass, not stored.
    chunk_fn = chunk_logps if remat_mode(remat) == "none" else jax.checkpoint(chunk_logps)

    def body(total, xs):
        return total + chunk_fn(*xs), None

    total, _ = jax.lax.scan(body, jnp.zeros((rows,), jnp.float32), (split(hidden), split(targets), split(weights)),
                            unroll=unroll)
    return total


def _lora_rows(batch: PairBatch, num_members: int):
    """Every pair once per member: rows [members * pairs * 2, length] and their adapter ids."""
    pairs, two, length = batch.ids.shape
    tile = lambda x: jnp.broadcast_to(x[None], (num_members,) + x.shape).reshape(-1, length)  # noqa: E731
    adapter_ids = jnp.repeat(jnp.arange(num_members, dtype=jnp.int32), pairs * two)
    return tile(batch.ids), tile(batch.mask), tile(batch.response_mask), adapter_ids


def lora_tribe_logps(model, batch: PairBatch, chunk: int, remat: bool = False, unroll: bool = False) -> jax.Array:
    """[members, pairs, 2] log-probs of every pair under every member's adapter."""
    m = model.lora_config.num_adapters
    ids, mask, response_mask, adapter_ids = _lora_rows(batch, m)
    logps = sequence_logps(model, ids, mask, response_mask, adapter_ids=adapter_ids, chunk=chunk, remat=remat,
                           unroll=unroll)
    return logps.reshape(m, batch.ids.shape[0], 2)


def full_tribe_logps(graphdef, stacked_state, batch: PairBatch, chunk: int, remat: bool = False,
                     unroll: bool = False) -> jax.Array:
    """[members, pairs, 2] for a stack of full parameter sets (vmapped over members)."""
    pairs, two, length = batch.ids.shape

    def one(state):
        model = nnx.merge(graphdef, state)
        flat = lambda x: x.reshape(pairs * two, length)  # noqa: E731
        return sequence_logps(model, flat(batch.ids), flat(batch.mask), flat(batch.response_mask),
                              chunk=chunk, remat=remat, unroll=unroll).reshape(pairs, two)

    return jax.vmap(one)(stacked_state)


# --------------------------------------------------------------------------------- losses
def pair_validity(batch: PairBatch) -> jax.Array:
    """[pairs] True for real pairs; filler pairs (no response tokens) pad a batch to its size."""
    return jnp.any(batch.response_mask[:, 0], axis=-1)


def chosen_token_counts(batch: PairBatch) -> jax.Array:
    """[pairs] float32: how many tokens of each chosen response are scored (sequence_logps' targets)."""
    return jnp.sum(batch.response_mask[:, 0, 1:], axis=-1).astype(jnp.float32)


def tribe_loss(policy_logps, ref_logps, cfg: DPOConfig, valid=None, targets=None, chosen_tokens=None):
    """Sum over members of each member's mean DPO loss over real pairs (plus `cfg.sft_weight` times
    its per-token NLL of the chosen responses), and metrics [members].
    `targets` [pairs, 2]: win probabilities for the `sppo` loss (PairBatch.targets).
    `chosen_tokens` [pairs]: `chosen_token_counts(batch)`; needed for the NLL term and its metric
    "nll/chosen" (the loss metric stays the DPO loss alone)."""
    pc, pr = policy_logps[..., 0], policy_logps[..., 1]
    rc, rr = ref_logps[..., 0], ref_logps[..., 1]
    losses, chosen_rewards, rejected_rewards = dpo_loss(
        pc, pr, rc, rr, beta=cfg.beta, loss_type=cfg.loss_type, label_smoothing=cfg.label_smoothing,
        chosen_targets=None if targets is None else targets[..., 0],
        rejected_targets=None if targets is None else targets[..., 1])
    if valid is None:
        metrics = jax.vmap(dpo_metrics)(losses, chosen_rewards, rejected_rewards, pc, pr)
    else:
        w = valid.astype(jnp.float32) / jnp.maximum(jnp.sum(valid), 1)  # a masked mean over pairs
        mean = lambda x: jnp.sum(x * w, axis=-1)  # noqa: E731
        metrics = {
            "loss": mean(losses), "rewards/chosen": mean(chosen_rewards), "rewards/rejected": mean(rejected_rewards),
            "rewards/margins": mean(chosen_rewards - rejected_rewards),
            "rewards/accuracies": mean((chosen_rewards > rejected_rewards).astype(jnp.float32)),
            "logps/chosen": mean(pc), "logps/rejected": mean(pr),
        }
    total = metrics["loss"]
    if chosen_tokens is not None:
        real = jnp.ones(pc.shape[-1], jnp.float32) if valid is None else valid.astype(jnp.float32)
        # TRL's "sft" loss: the mean over every chosen token of the batch, not a mean of per-pair means.
        metrics["nll/chosen"] = -jnp.sum(pc * real, axis=-1) / jnp.maximum(jnp.sum(chosen_tokens * real), 1.0)
        if cfg.sft_weight:
            total = total + cfg.sft_weight * metrics["nll/chosen"]
    elif cfg.sft_weight:
        raise ValueError("dpo.sft_weight > 0 needs the chosen responses' token counts (chosen_token_counts)")
    return jnp.sum(total), metrics


# ----------------------------------------------------------------------------- train step
class TrainState(NamedTuple):
    params: nnx.State  # what is trained: the LoRA stack, or the stacked full parameter sets
    opt_state: optax.OptState
    step: jax.Array
    warmup_steps: jax.Array  # the schedule (arrays, not constants: a new length compiles nothing)
    total_steps: jax.Array


def apply_gradients(state: TrainState, grads, optimizer: optax.GradientTransformation, cfg,
                    member_rates=None, member_axis: Callable[[str], int] | None = None) -> TrainState:
    """One optimizer update at the schedule's learning rate for `state.step`; with `member_rates`
    ([members] float32) each member's update is scaled by its own factor too, along `member_axis`
    (its learning rate, since AdamW's update is linear in the rate)."""
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    rate = learning_rate(cfg, state.step, state.warmup_steps, state.total_steps)
    updates = jax.tree.map(lambda u: u * rate.astype(u.dtype), updates)
    if member_rates is not None:
        updates = scale_members(updates, member_rates, member_axis)
    return state._replace(params=optax.apply_updates(state.params, updates), opt_state=opt_state,
                          step=state.step + 1)


def _accumulate(loss_and_grad, params, batch: PairBatch, ref_logps, grad_accum: int, unroll: bool = False):
    """Mean of the micro-batches' gradients (transformers divides each micro-loss by grad_accum)."""
    if grad_accum == 1:
        (loss, metrics), grads = loss_and_grad(params, batch, ref_logps)
        return grads, metrics
    pairs = batch.ids.shape[0]
    if pairs % grad_accum:
        raise ValueError(f"{pairs} pairs do not split into {grad_accum} micro-batches")
    micro = lambda x: x.reshape(grad_accum, pairs // grad_accum, *x.shape[1:])  # noqa: E731
    micro_batches = PairBatch(*(None if x is None else micro(x) for x in batch))
    micro_refs = jnp.moveaxis(ref_logps.reshape(ref_logps.shape[0], grad_accum, -1, 2), 1, 0)

    def body(acc, xs):
        b, r = xs
        (_, metrics), grads = loss_and_grad(params, PairBatch(*b), r)
        return jax.tree.map(jnp.add, acc, grads), metrics

    zeros = jax.tree.map(jnp.zeros_like, params)
    grads, metrics = jax.lax.scan(body, zeros, (tuple(micro_batches), micro_refs), unroll=unroll)
    grads = jax.tree.map(lambda g: g / grad_accum, grads)
    return grads, jax.tree.map(lambda m: jnp.mean(m, axis=0), metrics)


def make_lora_train_step(graphdef, cfg: DPOConfig, optimizer: optax.GradientTransformation):
    """step(train_state, frozen, batch, ref_logps [members, pairs, 2], member_rates=None) ->
    (train_state, metrics [members]); `member_rates` [members] scales each member's learning rate.

    graphdef and frozen come from `split_lora(model)`; train_state.params is its LoRA state. The
    frozen base is an argument, not a closure: a closed-over array would be baked into the
    program as a constant (and cannot be, on a multi-host mesh).
    """

    def loss_and_grad(params, frozen, batch, ref_logps):
        def loss_fn(p):
            model = nnx.merge(graphdef, p, frozen)
            return tribe_loss(lora_tribe_logps(model, batch, cfg.logps_chunk, cfg.remat, cfg.unroll_scans), ref_logps, cfg,
                              pair_validity(batch), batch.targets, chosen_token_counts(batch))
        return jax.value_and_grad(loss_fn, has_aux=True)(params)

    return _make_step(loss_and_grad, cfg, optimizer, lora_member_axis)


def make_full_train_step(graphdef, cfg: DPOConfig, optimizer: optax.GradientTransformation):
    """The same for a stack of full parameter sets ([members, ...] leaves); `frozen` is None."""

    def loss_and_grad(params, frozen, batch, ref_logps):
        del frozen

        def loss_fn(p):
            return tribe_loss(full_tribe_logps(graphdef, p, batch, cfg.logps_chunk, cfg.remat, cfg.unroll_scans),
                              ref_logps, cfg, pair_validity(batch), batch.targets, chosen_token_counts(batch))
        return jax.value_and_grad(loss_fn, has_aux=True)(params)

    return _make_step(loss_and_grad, cfg, optimizer, full_member_axis)


def _make_step(loss_and_grad, cfg, optimizer, member_axis):
    def step(state: TrainState, frozen, batch: PairBatch, ref_logps, member_rates=None):
        grads, metrics = _accumulate(lambda p, b, r: loss_and_grad(p, frozen, b, r), state.params, batch,
                                     ref_logps, cfg.grad_accum, cfg.unroll_scans)
        return apply_gradients(state, grads, optimizer, cfg, member_rates, member_axis), metrics

    return ShardingKeepingStep(step)


class ShardingKeepingStep:
    """A jitted `step(state, *args) -> (state, metrics)` whose new state keeps the old one's
    shardings. Left to itself XLA picks its own for the optimizer moments, and the next call,
    seeing other shardings, would compile again. The state is donated; metrics are replicated."""

    def __init__(self, step):
        self._step = step
        self._programs = {}

    def _program(self, state):
        shardings = jax.tree.map(lambda x: x.sharding, state)
        key = (jax.tree.structure(state), tuple(jax.tree.leaves(shardings)))
        if key not in self._programs:
            self._programs[key] = jax.jit(self._step, donate_argnums=(0,),
                                          out_shardings=(shardings, _replicated(jax.tree.leaves(state)[0])))
        return self._programs[key]

    def __call__(self, state, *args):
        return self._program(state)(state, *args)

    def lower(self, state, *args):
        """For ahead-of-time compilation (`sparta_jax.aot`): state and args as ShapeDtypeStructs."""
        return self._program(state).lower(state, *args)


def _replicated(like):
    """A sharding that replicates over `like`'s mesh (or sits on its one device)."""
    sharding = like.sharding
    if isinstance(sharding, jax.sharding.NamedSharding):
        return jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec())
    return sharding


def init_train_state(params, optimizer, cfg, total_steps: int, step: int = 0) -> TrainState:
    """A fresh optimizer state for a `total_steps`-step schedule (at `step`, for a resume).
    Moments shard like their parameters; scalars are replicated over the same mesh, exactly
    as the train step returns them (so its second call compiles nothing)."""
    scalar = lambda v: jnp.asarray(v, jnp.int32)  # noqa: E731
    # One compiled program: optax's init run eagerly dispatches (and compiles) every small op of
    # every transform on its own, seconds per DPO phase even for a tiny model.
    opt_state = jax.jit(optimizer.init, out_shardings=optimizer_state_shardings(optimizer, params))(params)
    state = TrainState(params, opt_state, scalar(step), scalar(warmup_steps(cfg, total_steps)), scalar(total_steps))
    replicated = _replicated(jax.tree.leaves(params)[0])
    return jax.tree.map(lambda x: jax.device_put(x, replicated) if x.ndim == 0 else x, state)


def optimizer_state_shardings(optimizer, params):
    """Shardings for `optimizer.init(params)`: a state leaf that follows a parameter (its tree path
    ends with the parameter's, as Adam's moments do) shards like it; the rest (counters) is
    replicated. A jitted init needs them: zeros depend on no input, so XLA would put them on one
    device."""
    replicated = _replicated(jax.tree.leaves(params)[0])
    by_path = {jax.tree_util.keystr(path): (leaf.shape, leaf.sharding)
               for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}

    def sharding_of(path, leaf):
        key = jax.tree_util.keystr(path)
        matches = [p for p, (shape, _) in by_path.items() if key.endswith(p) and leaf.shape == shape]
        return by_path[max(matches, key=len)][1] if matches else replicated

    return jax.tree_util.tree_map_with_path(sharding_of, jax.eval_shape(optimizer.init, params))


# --------------------------------------------------------------------------- conveniences
def split_lora(model):
    """(graphdef, trainable LoRA state, frozen rest) for `make_lora_train_step`."""
    from sparta_jax.models.lora import LoraParam

    graphdef, trainable, frozen = nnx.split(model, LoraParam, ...)
    return graphdef, trainable, frozen


def merge_lora(graphdef, trainable, frozen):
    return nnx.merge(graphdef, trainable, frozen)


def make_lora_reference_logps(graphdef, cfg: DPOConfig):
    """jitted fn(trainable, frozen, batch) -> [members, pairs, 2]: the start-of-iteration policy."""
    @jax.jit
    def reference(trainable, frozen, batch: PairBatch):
        return lora_tribe_logps(nnx.merge(graphdef, trainable, frozen), batch, cfg.logps_chunk)
    return reference


def make_full_reference_logps(graphdef, cfg: DPOConfig):
    @jax.jit
    def reference(stacked, batch: PairBatch):
        return full_tribe_logps(graphdef, stacked, batch, cfg.logps_chunk)
    return reference
