"""The tribe: its members, tokenizer and sampler.

Two shapes (`tribe.kind`). "lora": one frozen base with a stack of LoRA members, either PEFT
adapter folders (the paper's experts) or fresh adapters (B = 0, so they start equal to the base
and diverge through sampling and training). "full": a MemberStack of whole models from
tribe.member_folders, every weight trained by DPO (for small models).

Mixed-base tribes (`tribe.groups`): several bases side by side (docs/algorithm.md §1), e.g. Gemma and Qwen
experts. Each group is a `Tribe` of its own (base, kind, tokenizer, chat template, sampler);
a `MixedTribe` holds them with one global member order, the groups' members one after another.
Code that builds prompts or samples asks `tribe.group(m)` for member m's group and batches
per group (`tribe.spans()`); a plain `Tribe` is its own single group.
"""
from __future__ import annotations

import dataclasses
import functools
import os

import jax.numpy as jnp
import ml_collections
import numpy as np

from sparta_jax.errors import ConfigError
from sparta_jax.models.llama import LlamaForCausalLM
from sparta_jax.models.loading import from_pretrained, load_model_config, load_tokenizer_from
from sparta_jax.models.lora import AdapterSpec, LoraConfig
from sparta_jax.models.stack import MemberStack, stack_of
from sparta_jax.sampling import Sampler, SamplerConfig
from sparta_jax.sparta import number_continuation_ids


@dataclasses.dataclass
class Tribe:
    names: tuple[str, ...]
    model: LlamaForCausalLM | MemberStack  # rows pick their member by adapter id in either shape
    tokenizer: object
    sampler: Sampler
    system_prompt: str | None  # None where the chat template has no system role (Gemma)
    base_path: str
    member_folders: tuple[str, ...] = ()  # tribe.kind "full": each member's own model folder

    def index(self, name: str) -> int:
        return self.names.index(name)

    def group(self, member: int) -> "Tribe":
        """Member `member`'s group: a one-group tribe is its own."""
        return self

    def spans(self) -> list[tuple["Tribe", int]]:
        """(group, global index of its first member) per group."""
        return [(self, 0)]

    def bases(self) -> dict[str, str]:
        """Each member's base model: the tribe's base, or a whole member's own folder."""
        return dict(zip(self.names, self.member_folders or [self.base_path] * len(self.names)))

    @functools.cached_property
    def number_token_ids(self) -> np.ndarray:
        """Tokens that continue a number (text starting with a digit): the `logits` judge's
        candidate "1" counts only where none of them follows."""
        return number_continuation_ids(self.tokenizer.batch_decode([[i] for i in range(len(self.tokenizer))]))


@dataclasses.dataclass
class MixedTribe:
    """Several `Tribe` groups (their own bases, tokenizers and samplers) as one tribe: members in
    one global order, group after group. Reputations, match-making, duel logs and reports use the
    global order; sampling, judging and DPO run per group, each group's rows in its own programs."""

    groups: tuple[Tribe, ...]
    group_names: tuple[str, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(n for g in self.groups for n in g.names)

    def index(self, name: str) -> int:
        return self.names.index(name)

    def spans(self) -> list[tuple[Tribe, int]]:
        out, offset = [], 0
        for g in self.groups:
            out.append((g, offset))
            offset += len(g.names)
        return out

    def group(self, member: int) -> Tribe:
        for g, offset in self.spans():
            if offset <= member < offset + len(g.names):
                return g
        raise IndexError(f"member index {member} outside a tribe of {len(self.names)}")

    def bases(self) -> dict[str, str]:
        return {n: base for g in self.groups for n, base in g.bases().items()}

    @property
    def base_path(self) -> str:
        return " + ".join(dict.fromkeys(g.base_path for g in self.groups))


def context_length(tribe) -> int:
    """The longest prompt plus answer every member's model takes."""
    return min(g.model.config.max_position_embeddings for g, _ in tribe.spans())


GROUP_FIELDS = ("name", "base", "kind", "member_folders", "adapters", "names", "members", "lora_rank",
                "lora_alpha", "lora_targets", "system_prompt", "tokenizer")


def group_configs(tribe_cfg) -> list[tuple[str, ml_collections.ConfigDict]]:
    """(group name, the group's own tribe config) per group of `tribe.groups`: each group's entries
    replace tribe.*'s (dtypes and anything unset are shared). Unnamed members of a group of fresh
    adapters or random weights are called <group>_0, <group>_1, ... so names stay unique."""
    out = []
    for i, entry in enumerate(tribe_cfg.get("groups") or ()):
        entry = dict(entry)
        unknown = set(entry) - set(GROUP_FIELDS)
        if unknown:
            raise ConfigError(f"tribe.groups[{i}]: unknown keys {sorted(unknown)}; known: {list(GROUP_FIELDS)}")
        name = str(entry.pop("name", f"group_{i}"))
        if "base" not in entry:
            raise ConfigError(f"tribe.groups[{i}] ({name}): needs a base (a model folder, 'embedded', "
                              "'embedded:gemma3-270m' or 'random:<shape>')")
        cfg = ml_collections.ConfigDict({k: v for k, v in tribe_cfg.to_dict().items() if k != "groups"})
        for key in ("member_folders", "adapters", "names"):  # never inherited: they name one group's members
            cfg[key] = ()
        for key, value in entry.items():
            cfg[key] = tuple(value) if isinstance(value, list) else value
        if not cfg.names and not any(cfg.adapters) and not any(cfg.member_folders):
            cfg.names = tuple(f"{name}_{k}" for k in range(int(cfg.members)))
        out.append((name, cfg))
    names = [n for n, _ in out]
    if len(set(names)) != len(names):
        raise ConfigError(f"tribe.groups: group names must be unique, got {names}")
    return out


def is_mixed(tribe_cfg) -> bool:
    return bool(tribe_cfg.get("groups"))


RANDOM_PREFIX = "random:"  # "random:<shape>": random weights of a named shape (models/shapes.py)


def tribe_kind(tribe_cfg) -> str:
    return tribe_cfg.get("kind", "lora")  # runs from before `tribe.kind` were LoRA tribes


def resolve_base(base: str) -> str:
    if base.startswith(RANDOM_PREFIX):
        raise ConfigError(f"tribe.base {base!r} has random weights and no folder")
    if base == "embedded":
        from sparta_jax.models.embedded import materialize_smollm2

        return materialize_smollm2()
    if base.startswith("embedded:"):
        from sparta_jax.models.embedded_gemma import EMBEDDED_NAME, materialize_gemma3_270m

        if base != EMBEDDED_NAME:
            raise ConfigError(f"tribe.base {base!r}: the embedded models are 'embedded' (SmolLM2-135M-Instruct) "
                              f"and {EMBEDDED_NAME!r}")
        return materialize_gemma3_270m()
    if not os.path.isdir(base):
        raise FileNotFoundError(f"tribe.base: model folder {base!r} does not exist")
    return base


def supports_system_role(tokenizer) -> bool:
    try:
        tokenizer.apply_chat_template([{"role": "system", "content": "s"}, {"role": "user", "content": "u"}],
                                      tokenize=False)
        return True
    except Exception:  # templates refuse a system turn in their own ways (Gemma raises)
        return False


def build_tribe(tribe_cfg, sampler_cfg, mesh, adapters=None) -> Tribe | MixedTribe:
    """`adapters` (PEFT folders, e.g. the experts') replaces tribe_cfg.adapters when given.
    With tribe.groups, a MixedTribe of the groups (each built as its own tribe, in turn)."""
    if is_mixed(tribe_cfg):
        if adapters:
            raise ConfigError("adapters for the whole tribe (e.g. experts.enabled) do not apply to tribe.groups: "
                              "give each group its adapters")
        built = [(name, build_tribe(cfg, sampler_cfg, mesh)) for name, cfg in group_configs(tribe_cfg)]
        tribe = MixedTribe(tuple(t for _, t in built), tuple(n for n, _ in built))
        if len(set(tribe.names)) != len(tribe.names):
            raise ConfigError(f"member names must be unique across tribe.groups, got {list(tribe.names)}")
        return tribe
    adapters = [a for a in (tribe_cfg.adapters if adapters is None else adapters) if a]
    if tribe_cfg.base.startswith(RANDOM_PREFIX):
        return _random_tribe(tribe_cfg, sampler_cfg, mesh, adapters)
    base = resolve_base(tribe_cfg.base)
    names = tuple(tribe_cfg.names) or None
    dtype, param_dtype = jnp.dtype(tribe_cfg.dtype), jnp.dtype(tribe_cfg.param_dtype)
    if tribe_kind(tribe_cfg) == "full":
        tribe = _finish(_full_members(tribe_cfg, base, dtype, param_dtype, mesh), load_tokenizer_from(base),
                        tribe_cfg, sampler_cfg, mesh, base)
        tribe.member_folders = tuple(f for f in tribe_cfg.member_folders if f)
        return tribe
    if adapters:
        if names and len(names) != len(adapters):
            raise ConfigError(f"tribe.names has {len(names)} names for {len(adapters)} adapters")
        model, tokenizer = from_pretrained(base, dtype=dtype, param_dtype=param_dtype, mesh=mesh,
                                           adapters=adapters, adapter_names=names)
    else:
        model, tokenizer = from_pretrained(base, dtype=dtype, param_dtype=param_dtype, mesh=mesh,
                                           lora=fresh_lora(tribe_cfg))
    return _finish(model, tokenizer, tribe_cfg, sampler_cfg, mesh, base)


def member_names(tribe_cfg, names: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """`names`, else tribe.names, else member_0 .. member_{M-1} for M = tribe.members."""
    m = len(names) if names else int(tribe_cfg.members)
    if m < 1:
        raise ConfigError(f"tribe.members must be >= 1, got {m}")
    names = tuple(names or tribe_cfg.names) or tuple(f"member_{i}" for i in range(m))
    if len(names) != m:
        raise ConfigError(f"tribe.names has {len(names)} names for {m} members")
    return names


def check_sparta_tribe(names) -> None:
    """Sparta's duels need two duelists and at least one judge."""
    if len(names) < 3:
        raise ConfigError(f"tribe.members must be >= 3 (two duelists and at least one judge), got {len(names)}")


def actor_config(tribe_cfg, names: tuple[str, ...], actor: str, adapters=None):
    """(tribe config, adapters) of a one-member tribe holding `actor`, a member of the tribe
    `tribe_cfg` (with `adapters`, e.g. the experts') builds under `names`: a baseline's model."""
    if actor not in names:
        raise ConfigError(f"methods.member {actor!r} is not a member of the tribe {list(names)}")
    if is_mixed(tribe_cfg):  # the actor's own group, as a one-group tribe
        offset = 0
        for _, cfg in group_configs(tribe_cfg):
            size = len([a for a in cfg.adapters if a]) or len([f for f in cfg.member_folders if f]) or int(cfg.members)
            if actor in names[offset: offset + size]:
                return actor_config(cfg, names[offset: offset + size], actor)
            offset += size
    i = names.index(actor)
    cfg = ml_collections.ConfigDict(tribe_cfg.to_dict())
    cfg.names = (actor,)
    cfg.members = 1
    folders = [a for a in (tribe_cfg.adapters if adapters is None else adapters) if a]
    if tribe_kind(tribe_cfg) == "full":
        cfg.member_folders = (tribe_cfg.member_folders[i],)
        return cfg, ()
    cfg.adapters = ()
    return cfg, (folders[i],) if folders else ()  # fresh adapters all start as the base


def fresh_lora(tribe_cfg, names: tuple[str, ...] | None = None) -> LoraConfig:
    """A stack of new adapters (B = 0) with tribe_cfg's rank, alpha and targets (member_names)."""
    names = member_names(tribe_cfg, names)
    return LoraConfig(tuple(AdapterSpec(n, int(tribe_cfg.lora_rank), float(tribe_cfg.lora_alpha),
                                        targets=tuple(tribe_cfg.lora_targets)) for n in names))


def _random_tribe(tribe_cfg, sampler_cfg, mesh, adapters) -> Tribe:
    """Random weights of a named shape with fresh adapters, and the tokenizer of tribe.tokenizer
    (a folder) or else the embedded SmolLM2's (its ids fit any larger vocabulary): a full-size
    tribe for timing, without its checkpoint."""
    from sparta_jax.models.config import ModelConfig
    from sparta_jax.models.embedded import materialize_smollm2
    from sparta_jax.models.loading import build_model
    from sparta_jax.models.shapes import BASE_ALIASES, MODEL_SHAPES

    name = tribe_cfg.base[len(RANDOM_PREFIX):].lower()
    name = BASE_ALIASES.get(name, name)
    if name not in MODEL_SHAPES:
        raise ConfigError(f"tribe.base {tribe_cfg.base!r}: unknown shape; known: {', '.join(MODEL_SHAPES)}")
    if adapters:
        raise ConfigError(f"tribe.base {tribe_cfg.base!r} has random weights: adapter folders need their real base")
    config = ModelConfig.from_hf_dict(MODEL_SHAPES[name])
    tokenizer = load_tokenizer_from(tribe_cfg.get("tokenizer") or materialize_smollm2())
    if len(tokenizer) > config.vocab_size:
        raise ConfigError(f"tribe.base {tribe_cfg.base!r}: vocabulary {config.vocab_size} is smaller than the "
                         f"tokenizer's {len(tokenizer)}")
    dtype, param_dtype = jnp.dtype(tribe_cfg.dtype), jnp.dtype(tribe_cfg.param_dtype)
    if tribe_kind(tribe_cfg) == "full":  # each member its own random draw
        names = member_names(tribe_cfg)
        models = [build_model(config, {}, dtype=dtype, param_dtype=param_dtype, mesh=mesh, seed=i)
                  for i in range(len(names))]
        members = stack_of(models, names, source_path=tribe_cfg.base)
    else:
        members = build_model(config, {}, lora=fresh_lora(tribe_cfg), dtype=dtype, param_dtype=param_dtype, mesh=mesh)
        members.source_path = tribe_cfg.base
    return _finish(members, tokenizer, tribe_cfg, sampler_cfg, mesh, tribe_cfg.base)


def _full_members(tribe_cfg, base: str, dtype, param_dtype, mesh) -> MemberStack:
    """tribe.member_folders as a MemberStack; tribe.base gives the tokenizer and the architecture
    every member must have."""
    folders = [f for f in tribe_cfg.get("member_folders", ()) if f]
    if not folders:
        raise ConfigError("config.tribe.member_folders is empty: tribe.kind='full' needs one model folder per "
                          "member. Copies of one base would never differ: every member trains on the same pairs "
                          "from the same weights, so every update is the same")
    names = member_names(tribe_cfg, tuple(tribe_cfg.names) or tuple(os.path.basename(f.rstrip("/")) for f in folders))
    if len(names) != len(folders):
        raise ConfigError(f"tribe.names has {len(names)} names for {len(folders)} member folders")
    expected = load_model_config(base)
    models = []
    for name, folder in zip(names, folders):
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"tribe.member_folders: model folder {folder!r} does not exist")
        found = load_model_config(folder)  # checked before any weights are read
        if found != expected:
            differ = [f.name for f in dataclasses.fields(expected)
                      if getattr(expected, f.name) != getattr(found, f.name)]
            raise ConfigError(f"tribe.member_folders: {folder!r} is not the architecture of tribe.base {base!r} "
                              f"(differs in {', '.join(differ)})")
        model, _ = from_pretrained(folder, dtype=dtype, param_dtype=param_dtype, mesh=mesh, load_tokenizer=False)
        models.append(model)
    return stack_of(models, names, source_path=folders[0])


def _finish(model, tokenizer, tribe_cfg, sampler_cfg, mesh, base) -> Tribe:
    names = model.names if isinstance(model, MemberStack) else tuple(a.name for a in model.lora_config.adapters)
    if len(set(names)) != len(names):
        raise ConfigError(f"member names must be unique, got {names}")
    system = tribe_cfg.system_prompt if supports_system_role(tokenizer) else None
    return Tribe(names, model, tokenizer, _sampler(model, tokenizer, sampler_cfg, mesh), system or None, base)


def build_judge(path: str, tribe_cfg, sampler_cfg, mesh) -> Tribe:
    """A named judge model (a HF folder or "embedded") as a one-member tribe without adapters."""
    base = resolve_base(path)
    model, tokenizer = from_pretrained(base, dtype=jnp.dtype(tribe_cfg.dtype),
                                       param_dtype=jnp.dtype(tribe_cfg.param_dtype), mesh=mesh)
    system = tribe_cfg.system_prompt if supports_system_role(tokenizer) else None
    return Tribe(("judge",), model, tokenizer, _sampler(model, tokenizer, sampler_cfg, mesh), system or None, base)


def _sampler(model, tokenizer, sampler_cfg, mesh) -> Sampler:
    return Sampler(model, tokenizer, config=SamplerConfig.from_config(sampler_cfg), mesh=mesh)
