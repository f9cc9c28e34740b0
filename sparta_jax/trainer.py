"""DPO for a whole tribe on an iteration's preference records (docs/algorithm.md §2.6): the
jitted programs built once per run (`TribeTrainer`, a `MixedTrainer` of them for a mixed
tribe), the pairs cut into steps (every pair once per epoch), the reference log-probs of the
start-of-iteration members, the steps, and the figures of the trained members on the pairs."""
from __future__ import annotations

import jax
import numpy as np

from sparta_jax import dpo, preference_batches
from sparta_jax.metrics import Progress
from sparta_jax.models.stack import MemberStack
from sparta_jax.sampling import to_host
from sparta_jax.tribe import MixedTribe, Tribe


class TribeTrainer:
    """The jitted DPO programs of a run, built once, for either tribe shape: what is trained
    (`trainable`: the LoRA stack, or the whole MemberStack), the reference log-probs, the
    optimizer and the train step. The schedule's length is part of the train state, so
    iterations with different numbers of steps share one compiled step."""

    def __init__(self, tribe: Tribe, dpo_cfg: dpo.DPOConfig):
        self.cfg = dpo_cfg
        if isinstance(tribe.model, MemberStack):
            self._stack, self.graphdef, self.frozen = tribe.model, tribe.model.graphdef, None
            full_reference = dpo.make_full_reference_logps(self.graphdef, dpo_cfg)
            self.reference = lambda trainable, frozen, batch: full_reference(trainable, batch)
            self.optimizer = dpo.make_optimizer(dpo_cfg, dpo.full_member_axis)
            self.step = dpo.make_full_train_step(self.graphdef, dpo_cfg, self.optimizer)
        else:
            self._stack = None
            self.graphdef, _, self.frozen = dpo.split_lora(tribe.model)
            self.reference = dpo.make_lora_reference_logps(self.graphdef, dpo_cfg)
            self.optimizer = dpo.make_optimizer(dpo_cfg, dpo.lora_member_axis)
            self.step = dpo.make_lora_train_step(self.graphdef, dpo_cfg, self.optimizer)

    def trainable(self, model):
        return model.state if self._stack is not None else dpo.split_lora(model)[1]

    def members(self, trainable):
        """The tribe's model with `trainable` as its members' weights."""
        if self._stack is not None:
            return self._stack.replace_state(trainable)
        return dpo.merge_lora(self.graphdef, trainable, self.frozen)

    def trainable_of(self, tribe: Tribe):
        return self.trainable(tribe.model)

    def install(self, tribe: Tribe, trainable) -> None:
        """Gives the tribe's members the weights `trainable`."""
        tribe.model = self.members(trainable)

    def init_opt_state(self, trainable):
        return jax.jit(self.optimizer.init)(trainable)  # jitted: global arrays, also on multi-host


class MixedTrainer:
    """A TribeTrainer per group of a mixed tribe (each group's programs jitted once, run in turn);
    what is trained, and its optimizer state, are dicts keyed by group name."""

    def __init__(self, tribe: MixedTribe, dpo_cfg: dpo.DPOConfig):
        self.cfg = dpo_cfg
        self.trainers = {name: TribeTrainer(g, dpo_cfg) for name, g in zip(tribe.group_names, tribe.groups)}

    def trainable_of(self, tribe: MixedTribe) -> dict:
        return {name: tr.trainable_of(g) for (name, tr), g in zip(self.trainers.items(), tribe.groups)}

    def install(self, tribe: MixedTribe, trainable: dict) -> None:
        for (name, tr), g in zip(self.trainers.items(), tribe.groups):
            tr.install(g, trainable[name])

    def init_opt_state(self, trainable: dict) -> dict:
        return {name: tr.init_opt_state(trainable[name]) for name, tr in self.trainers.items()}


def make_trainer(tribe: Tribe | MixedTribe, dpo_cfg: dpo.DPOConfig) -> TribeTrainer | MixedTrainer:
    return MixedTrainer(tribe, dpo_cfg) if isinstance(tribe, MixedTribe) else TribeTrainer(tribe, dpo_cfg)


def train_phase(config, tribe: Tribe | MixedTribe, t: int, records: list[dict], trainable, trainer,
                lr_scales: dict | None = None):
    """DPO for every member on the iteration's preference records; the reference is the
    start-of-iteration tribe. A mixed tribe trains group by group, each on every record in its
    own tokenizer and template. `lr_scales` {member: factor} scales those members' learning rates
    (the others train at dpo.learning_rate). Returns (trained, optimizer state or None when no
    pair trained, info)."""
    if not isinstance(tribe, MixedTribe):
        return train_group(config, tribe, t, records, trainable, trainer, lr_scales)
    trained, opt_states, infos = {}, {}, {}
    for name, group in zip(tribe.group_names, tribe.groups):
        tr = trainer.trainers[name]
        trained[name], opt_states[name], infos[name] = train_group(config, group, t, records, trainable[name], tr,
                                                                   lr_scales)
    if all(o is None for o in opt_states.values()):
        return trained, None, mixed_train_info(tribe, infos)
    opt_states = {n: tr.init_opt_state(trained[n]) if opt_states[n] is None else opt_states[n]
                  for n, tr in trainer.trainers.items()}
    return trained, opt_states, mixed_train_info(tribe, infos)


def mixed_train_info(tribe: MixedTribe, infos: dict) -> dict:
    """The groups' DPO infos as one, per-member figures in the global member order (nan for a
    group that trained nothing, or past its last step); each group's own info under "groups"."""
    sizes = {n: len(g.names) for n, g in zip(tribe.group_names, tribe.groups)}

    def joined(per_group: dict) -> dict | None:  # {group: {metric: [its members]} or None}
        keys = next((list(d) for d in per_group.values() if d), None)
        if keys is None:
            return None
        return {k: [x for n in tribe.group_names
                    for x in (per_group[n][k] if per_group[n] else [float("nan")] * sizes[n])] for k in keys}

    histories = {n: infos[n].get("dpo_history") or [] for n in tribe.group_names}
    steps = max(len(h) for h in histories.values())
    info = {"members": list(tribe.names), "pairs_trained": max(i["pairs_trained"] for i in infos.values()),
            "pairs_trained_replayed": max(i["pairs_trained_replayed"] for i in infos.values()),
            "pairs_dropped_too_long": max(i["pairs_dropped_too_long"] for i in infos.values()),
            "groups": {n: {k: v for k, v in i.items() if k != "dpo_history"} for n, i in infos.items()}}
    per_member = joined({n: infos[n].get("dpo_per_member") for n in tribe.group_names})
    if per_member is not None:
        info.update(dpo_steps=steps, dpo_per_member=per_member,
                    dpo_after=joined({n: infos[n].get("dpo_after") for n in tribe.group_names}),
                    dpo_history=[joined({n: h[s] if s < len(h) else None for n, h in histories.items()})
                                 for s in range(steps)])
    return info


def train_group(config, tribe: Tribe, t: int, records: list[dict], trainable, trainer: TribeTrainer,
                lr_scales: dict | None = None):
    """DPO for every member of one group (or a one-group tribe) on the preference records."""
    dpo_cfg, frozen = trainer.cfg, trainer.frozen
    triples, dropped = preference_batches.encode_preferences(
        tribe.tokenizer, records, mode=config.mode, system_prompt=tribe.system_prompt,
        max_prompt_length=dpo_cfg.max_prompt_length, max_length=dpo_cfg.max_length)
    if not triples:
        return trainable, None, {"members": list(tribe.names), "pairs_trained": 0, "pairs_trained_replayed": 0,
                                 "pairs_dropped_too_long": len(dropped)}
    skipped = set(dropped)
    replayed = sum(1 for i, r in enumerate(records) if i not in skipped and "replayed_from" in r)
    targets = [preference_batches.preference_targets(r) for i, r in enumerate(records) if i not in skipped]
    per_step = dpo_cfg.pairs_per_step
    steps_pairs, once_pairs = plan_pair_batches(len(triples), per_step, dpo_cfg.epochs,
                                                np.random.default_rng([config.seed, t, 7]))
    make = lambda chosen: _pairs_batch([triples[i] for i in chosen], [targets[i] for i in chosen],  # noqa: E731
                                       per_step, dpo_cfg.max_length, tribe.sampler.pad_id)
    batches = [make(chosen) for chosen in steps_pairs]
    steps = len(batches)
    refs = [trainer.reference(trainable, frozen, b) for b in batches]
    # The after-training figures weigh every pair once: the first epoch's batches, except a last
    # one that a pair count not divisible by pairs_per_step fills from the second epoch.
    shared = sum(1 for a, b in zip(steps_pairs, once_pairs) if np.array_equal(a, b))
    once_batches = batches[:shared] + [make(chosen) for chosen in once_pairs[shared:]]
    once_refs = refs[:shared] + [trainer.reference(trainable, frozen, b) for b in once_batches[shared:]]
    state = dpo.init_train_state(trainable, trainer.optimizer, dpo_cfg, steps)
    progress = Progress(f"iteration {t} DPO", steps, "steps")
    rates = (None if not lr_scales or not set(lr_scales) & set(tribe.names)
             else np.asarray([lr_scales.get(n, 1.0) for n in tribe.names], np.float32))
    history = []
    for batch, ref in zip(batches, refs):
        state, metrics = trainer.step(state, frozen, batch, ref, rates)
        history.append({k: to_host(v).tolist() for k, v in metrics.items()})
        progress(1)
    per_member = {k: np.mean([h[k] for h in history], axis=0).tolist() for k in history[0]}
    after = trained_pair_metrics(trainer, state.params, once_batches, once_refs, dpo_cfg)
    return state.params, state.opt_state, {"members": list(tribe.names), "pairs_trained": len(triples),
                          "pairs_trained_replayed": replayed,
                          "pairs_dropped_too_long": len(dropped), "dpo_steps": steps,
                          "dpo_per_member": per_member, "dpo_after": after, "dpo_history": history}


def plan_pair_batches(n_pairs: int, per_step: int, epochs: int, rng: np.random.Generator):
    """(the pair indices of each DPO step: `epochs` shuffles of the pairs, run together and cut
    every per_step; the first epoch's pairs alone, cut the same way: each pair exactly once)."""
    order = np.concatenate([rng.permutation(n_pairs) for _ in range(epochs)])
    cut = lambda x: [x[s: s + per_step] for s in range(0, len(x), per_step)]  # noqa: E731
    return cut(order), cut(order[:n_pairs])


def trained_pair_metrics(trainer: TribeTrainer, params, batches, refs, dpo_cfg) -> dict:
    """DPO metrics of the trained members on all the iteration's pairs ({name: [members]}): where
    training ended, which the mean over steps (it includes the first step, at log 2) hides."""
    sums, pairs = None, 0
    for batch, ref in zip(batches, refs):
        valid = dpo.pair_validity(batch)
        _, metrics = dpo.tribe_loss(trainer.reference(params, trainer.frozen, batch), ref, dpo_cfg, valid,
                                    batch.targets, dpo.chosen_token_counts(batch))
        n = int(to_host(valid).sum())
        metrics = {k: to_host(v) * n for k, v in metrics.items()}
        sums = metrics if sums is None else {k: sums[k] + metrics[k] for k in sums}
        pairs += n
    return {k: (v / pairs).tolist() for k, v in sums.items()}


def _pairs_batch(triples, targets, size: int, length: int, pad_id: int) -> dpo.PairBatch:
    """`triples` as a batch of `size` pairs; filler pairs (no response tokens) contribute
    nothing (dpo.pair_validity)."""
    batch = preference_batches.pairs_to_batch(triples, length, pad_id, targets)
    n_fill = size - len(triples)
    fill = lambda x, v: np.concatenate([x, np.full((n_fill,) + x.shape[1:], v, x.dtype)])  # noqa: E731
    # numpy, not device arrays: jit places host arrays across the whole (multi-host) mesh.
    return dpo.PairBatch(fill(batch.ids, pad_id), fill(batch.mask, False), fill(batch.response_mask, False),
                         fill(batch.targets, 0.0))
