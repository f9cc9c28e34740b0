"""Compile a config's programs ahead of time for a TPU topology and report per-chip memory.

    python -m sparta_jax.aot --config=configs/tpu_v4.py --topology=v4:2x2x4 --model_shape=qwen2.5-7b

Topologies count chips: v4:2x2x2 is 8 v4 chips (a v4-16 slice), v4:2x2x4 16 chips (v4-32).

No TPU is needed: with `jax[tpu]` installed on any machine, libtpu describes the topology
(`jax.experimental.topologies.get_topology_desc`) and compiles for it. The model is built
without weights (`nnx.eval_shape`), its parameters sharded by `sharding.PARAM_RULES` over the
config's mesh, and three programs are lowered and compiled with exactly the shapes a run of
that config uses:

- generate: the Sampler's prefill + decode loop at generation.batch_size x
  (max_prompt_tokens bucket + max_new_tokens bucket);
- judge_score: the judges' logit scoring (`logits` mode) at judge.batch_size x judge prompt
  bucket + a 2-token continuation bucket; judge_generate as well when judge.mode == "sampled";
- dpo_step: the tribe's LoRA DPO train step at dpo.pairs_per_step pairs x dpo.max_length.

For each it prints XLA's memory analysis per chip (arguments, outputs, temporaries, generated
code) against the chip's HBM and exits 1 if a program does not fit. It also runs the config's
evaluation check (`sparta_jax.eval_check`, what the config alone tells: no data is loaded) and
exits 1, after compiling, where a run would be refused because it cannot evaluate. A program the TPU
compiler refuses for lack of memory is reported with the numbers from its error message.

`--roofline` also costs one decode step (compiled on its own) and the DPO step (its scans
unrolled at one and two layers) from XLA's cost analysis: flops and HBM bytes per chip against
what they must move, and the time, tokens/s or MFU that implies at the chip's published peaks
(`sparta_jax.roofline`; `--peak_tflops` / `--hbm_gbps` for chips it does not know).

`--iteration` predicts one Sparta iteration's time, phase by phase (answers, judging, reference
log-probs, DPO, evaluation; `sparta_jax.iteration_time`): every program the iteration runs is
costed as above at the config's shapes (decode steps, prefills and the judges' scoring pass with
their layers unrolled, the reference pass like the DPO step), and each is priced by how often an
iteration calls it. `--answer_lengths=FILE` (a JSON list of token counts) sets the decode steps
per batch to the expected longest of a batch; by default every answer runs to its cap.
`--eval_items=DEV,TEST` where the config evaluates whole splits of unnamed size.

`--remat_modes=full,dots,none` (with `--roofline`) compiles the DPO step once per backward-pass
recompute mode (`dpo.remat`: each layer recomputed, all but the projections' outputs, nothing)
and prints each mode's memory per chip beside its MFU ceiling: what remat buys and costs.

`--topology=cpu:8` runs the same path on 8 (fake) CPU devices, without libtpu.
`--config.generation.batch_size=64` etc. override config values as for `sparta_jax.main`.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
from typing import Mapping

from sparta_jax import roofline as roofline_lib
from sparta_jax.errors import SpartaError
from sparta_jax.models.shapes import BASE_ALIASES as _BASE_ALIASES, MODEL_SHAPES

# Per-generation facts about TPU chips. chip_config_name and chips_per_host_bounds are what
# libtpu uses on live Cloud TPU hosts; without "megacore" a v4 / v5p topology is described
# as two single-core devices per chip, which is not how JAX runs on them.
TPU_GENERATIONS = {
    # prefix: (HBM GiB per chip, chip_config_name, chips_per_host_bounds)
    "v4": (32.0, "megacore", (2, 2, 1)),
    "v5p": (95.0, "megacore", (2, 2, 1)),
    "v5e": (16.0, "default", (2, 2, 1)),
    "v5litepod": (16.0, "default", (2, 2, 1)),
    "v6e": (32.0, "default", (2, 2, 1)),
}
HBM_GIB = {name: spec[0] for name, spec in TPU_GENERATIONS.items()}

GIB = 1024**3



class AotError(SpartaError, ValueError):
    pass


# ------------------------------------------------------------------------------- topology
@dataclasses.dataclass(frozen=True)
class Topology:
    name: str  # as given, e.g. "v4:2x2x4" or "cpu:8"
    platform: str  # "tpu" or "cpu"
    devices: tuple
    hbm_gib: float | None  # per chip; None when unknown

    @property
    def num_devices(self) -> int:
        return len(self.devices)


def parse_topology(spec: str) -> tuple[str, str, int | None]:
    """("tpu"|"cpu", generation or "cpu", cpu device count) from "v4:2x2x4" / "cpu:8" / "cpu"."""
    spec = spec.strip()
    if spec == "cpu" or spec.startswith("cpu:"):
        count = int(spec.split(":", 1)[1]) if ":" in spec else None
        if count is not None and count < 1:
            raise AotError(f"--topology {spec!r}: need at least one device")
        return "cpu", "cpu", count
    if not re.fullmatch(r"[a-z0-9]+:\d+(x\d+)*", spec):
        raise AotError(f"--topology {spec!r}: expected e.g. v4:2x2x4, v5e:4x4, v6e:2x2 or cpu:8")
    generation = spec.split(":", 1)[0]
    return "tpu", generation, None


def host_bounds(spec: str, full_host: tuple[int, int, int]) -> tuple[int, int, int]:
    """Chips per host for a topology: a full host's bounds, or the slice's own where it is
    smaller than one host (v5p:1x1x1, a single chip)."""
    dims = [int(d) for d in spec.split(":", 1)[1].split("x")]
    dims += [1] * (3 - len(dims))
    return tuple(min(d, h) for d, h in zip(dims, full_host))


def get_topology(spec: str, *, chip_config_name: str | None = None, hbm_gib: float | None = None) -> Topology:
    platform, generation, count = parse_topology(spec)
    if platform == "cpu":
        import jax

        devices = jax.devices("cpu")
        if count is not None:
            if len(devices) < count:
                raise AotError(
                    f"--topology {spec}: only {len(devices)} CPU devices; set "
                    f"XLA_FLAGS=--xla_force_host_platform_device_count={count} before jax starts")
            devices = devices[:count]
        if hbm_gib is None:  # fake devices share the host's memory
            try:
                hbm_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB / len(devices)
            except (ValueError, OSError, AttributeError):
                hbm_gib = None
        return Topology(spec, "cpu", tuple(devices), hbm_gib)

    from jax.experimental import topologies

    # Compiling opens no chip, so another process holding libtpu's lockfile (a second aot
    # run, or a job on a TPU VM) need not stop this one.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    known = TPU_GENERATIONS.get(generation)
    kwargs = {}
    if known is not None:
        kwargs["chips_per_host_bounds"] = host_bounds(spec, known[2])
        kwargs["chip_config_name"] = known[1]
    if chip_config_name:
        kwargs["chip_config_name"] = chip_config_name
    try:
        desc = topologies.get_topology_desc(topology_name=spec, platform="tpu", **kwargs)
    except RuntimeError as e:
        if "not installed" in str(e):
            raise AotError(f"--topology {spec}: needs libtpu: pip install 'jax[tpu]' (no TPU required)") from e
        raise
    if hbm_gib is None and known is not None:
        hbm_gib = known[0]
    return Topology(spec, "tpu", tuple(desc.devices), hbm_gib)


def topology_mesh(topology: Topology, mesh_axes: Mapping[str, int]):
    """The config's mesh (one axis may be -1) over the topology's devices."""
    from jax.sharding import AxisType, Mesh

    from sparta_jax import sharding as sharding_lib

    axes = _ordered_axes(mesh_axes)
    try:
        return sharding_lib.make_mesh(axes, devices=list(topology.devices))
    except (ValueError, AssertionError, NotImplementedError) as e:
        if "mesh:" in str(e):  # the config's axes do not fit this device count
            raise AotError(f"{topology.name}: {e}") from e
        # Device-order helpers may not know a compile-only topology; a plain reshape is valid.
        import numpy as np

        sizes = dict(axes)
        fill = [k for k, v in sizes.items() if v == -1]
        if fill:
            sizes[fill[0]] = topology.num_devices // int(np.prod([v for v in sizes.values() if v != -1]))
        grid = np.array(topology.devices, dtype=object).reshape(tuple(sizes.values()))
        return Mesh(grid, tuple(sizes), axis_types=(AxisType.Auto,) * len(sizes))


def _ordered_axes(mesh_axes: Mapping[str, int]) -> dict[str, int]:
    from sparta_jax.sharding import DEFAULT_AXES

    given = {str(k): int(v) for k, v in dict(mesh_axes).items()}
    ordered = {k: given[k] for k in DEFAULT_AXES if k in given}
    ordered.update({k: v for k, v in given.items() if k not in ordered})
    return ordered


# ---------------------------------------------------------------------------- model shape
def resolve_model_shape(model_shape, base: str | None = None):
    """A ModelConfig from a ModelConfig, a HF config dict, a MODEL_SHAPES name, or the base folder."""
    from sparta_jax.models.config import ModelConfig

    if isinstance(model_shape, ModelConfig):
        return model_shape
    if isinstance(model_shape, Mapping):
        return ModelConfig.from_hf_dict(model_shape)
    if model_shape:
        key = str(model_shape).lower()
        key = _BASE_ALIASES.get(key, key)
        if key in MODEL_SHAPES:
            return ModelConfig.from_hf_dict(MODEL_SHAPES[key])
        path = str(model_shape)
        if os.path.isfile(os.path.join(path, "config.json")) or os.path.isfile(path):
            return _from_json(path)
        raise AotError(f"unknown --model_shape {model_shape!r}; known: {', '.join(MODEL_SHAPES)} "
                       "(or a HF model folder / config.json)")
    if base in _BASE_ALIASES:
        return ModelConfig.from_hf_dict(MODEL_SHAPES[_BASE_ALIASES[base]])
    if str(base or "").startswith("random:"):  # random weights of a named shape
        return resolve_model_shape(str(base)[len("random:"):])
    name = os.path.basename(str(base or "").rstrip("/")).lower()  # e.g. /data/models/gemma-7b-it
    if name and not os.path.isdir(str(base)) and _BASE_ALIASES.get(name, name) in MODEL_SHAPES:
        return ModelConfig.from_hf_dict(MODEL_SHAPES[_BASE_ALIASES.get(name, name)])
    if base and os.path.isfile(os.path.join(base, "config.json")):
        return _from_json(base)
    raise AotError(f"the config's base {base!r} is not a folder here; pass --model_shape "
                   f"(one of {', '.join(MODEL_SHAPES)}, or a HF config.json)")


def _from_json(path: str):
    from sparta_jax.models.config import ModelConfig

    file = path if os.path.isfile(path) else os.path.join(path, "config.json")
    with open(file) as f:
        return ModelConfig.from_hf_dict(json.load(f))


# --------------------------------------------------------------------------- abstract args
def _sds(shape, dtype, sharding):
    import jax

    return jax.ShapeDtypeStruct(tuple(shape), dtype, sharding=sharding)


def abstract_model(model_config, config, mesh=None):
    """(abstract model, LoraConfig) of the config's tribe: shapes only, nothing allocated.

    With a mesh, its activations are kept split over the batch axes, as `build_model` does for
    a run (without it XLA may follow the weights' sharding and replicate the rows)."""
    import jax.numpy as jnp
    from flax import nnx

    from sparta_jax.models.llama import LlamaForCausalLM
    from sparta_jax.models.lora import uniform_lora_config

    tribe = config.tribe
    lora = uniform_lora_config(_members(config), int(tribe.lora_rank), float(tribe.lora_alpha),
                               targets=tuple(tribe.lora_targets))
    dtype, param_dtype = jnp.dtype(tribe.dtype), jnp.dtype(tribe.param_dtype)
    model = nnx.eval_shape(
        lambda: LlamaForCausalLM(model_config, lora=lora, dtype=dtype, param_dtype=param_dtype, rngs=nnx.Rngs(0)))
    if mesh is not None:
        from sparta_jax.sharding import batch_sharding

        model.activation_sharding = batch_sharding(mesh, rank=1)
    return model, lora


def _members(config) -> int:
    tribe = config.tribe
    return len(tribe.adapters) if tribe.get("adapters") else int(tribe.members)


def shard_abstract(state, mesh, rules=None):
    """Each leaf of an abstract State as a ShapeDtypeStruct carrying its rule-table sharding."""
    import jax

    from sparta_jax import sharding as sharding_lib

    shardings = sharding_lib.state_shardings(state, mesh, *(() if rules is None else (rules,)))
    return jax.tree.map(lambda leaf, s: _sds(leaf.shape, leaf.dtype, s), state, shardings)


def optimizer_rules():
    """Rules for optimizer-state leaves: a parameter's moments shard like the parameter
    (their paths end with the parameter's path); scalars (step counts) are replicated."""
    from jax.sharding import PartitionSpec as P

    from sparta_jax.sharding import PARAM_RULES

    return tuple((r"(?:.*/)?" + pattern, spec) for pattern, spec in PARAM_RULES) + ((r".*", P()),)


def _batch_sds(mesh, shape, dtype):
    from sparta_jax.sharding import batch_sharding

    return _sds(shape, dtype, batch_sharding(mesh, len(shape)))


def _replicated(mesh, shape, dtype):
    from jax.sharding import NamedSharding, PartitionSpec as P

    return _sds(shape, dtype, NamedSharding(mesh, P()))


# ------------------------------------------------------------------------------- programs
def _generation_args(sampler, mesh, state, batch: int, prompt_tokens: int, max_new_tokens: int):
    import jax
    import jax.numpy as jnp

    from sparta_jax.sampling import bucket

    rows = sampler._batch_rows(int(batch))  # what Sampler.generate pads a batch to
    prompt_len = bucket(int(prompt_tokens), sampler.config.prompt_buckets, "prompt length")
    max_new = bucket(int(max_new_tokens), sampler.config.new_token_buckets, "max_new_tokens")
    per_row = dict(
        adapter_ids=_batch_sds(mesh, (rows,), jnp.int32),
        temperature=_batch_sds(mesh, (rows,), jnp.float32),
        top_k=_batch_sds(mesh, (rows,), jnp.int32),
        top_p=_batch_sds(mesh, (rows,), jnp.float32),
        max_new_tokens=_batch_sds(mesh, (rows,), jnp.int32),
        stop_ids=_batch_sds(mesh, (rows, sampler.config.max_stop_ids), jnp.int32),
    )
    key = jax.eval_shape(lambda: jax.random.key(0))
    args = (state, _batch_sds(mesh, (rows, prompt_len), jnp.int32), _batch_sds(mesh, (rows, prompt_len), jnp.bool_),
            per_row, _replicated(mesh, key.shape, key.dtype))
    shape = f"{rows} x ({prompt_len} prompt + {max_new} new)"
    return args, dict(max_new=max_new), shape


def _score_args(sampler, mesh, state, batch: int, prompt_tokens: int, continuation_tokens: int = 2):
    import jax.numpy as jnp

    from sparta_jax.sampling import bucket

    rows = sampler._batch_rows(int(batch), decode=False)
    prompt_len = bucket(int(prompt_tokens), sampler.config.prompt_buckets, "prompt length")
    cont_len = bucket(int(continuation_tokens), sampler.config.new_token_buckets, "continuation length")
    total = prompt_len + cont_len
    args = (state, _batch_sds(mesh, (rows, total), jnp.int32), _batch_sds(mesh, (rows, total), jnp.bool_),
            _batch_sds(mesh, (rows, cont_len), jnp.bool_), _batch_sds(mesh, (rows,), jnp.int32))
    return args, f"{rows} x ({prompt_len} prompt + {cont_len} scored)"


def _dpo_args(mesh, graphdef_trainable_frozen, cfg, members: int, optimizer):
    import jax
    import jax.numpy as jnp

    from sparta_jax import dpo
    from sparta_jax.sharding import BATCH_AXES

    _, trainable, frozen = graphdef_trainable_frozen
    params = shard_abstract(trainable, mesh)
    opt_state = shard_abstract(jax.eval_shape(optimizer.init, trainable), mesh, optimizer_rules())
    scalar = _replicated(mesh, (), jnp.int32)
    state = dpo.TrainState(params, opt_state, scalar, scalar, scalar)
    pairs, length = int(cfg.pairs_per_step), int(cfg.max_length)
    multiple = 1
    for a in BATCH_AXES:
        multiple *= mesh.shape.get(a, 1)
    make = _batch_sds if pairs % multiple == 0 else (lambda m, s, d: _replicated(m, s, d))
    batch = dpo.PairBatch(make(mesh, (pairs, 2, length), jnp.int32), make(mesh, (pairs, 2, length), jnp.bool_),
                          make(mesh, (pairs, 2, length), jnp.bool_))
    ref = _replicated(mesh, (members, pairs, 2), jnp.float32)
    return (state, shard_abstract(frozen, mesh), batch, ref), f"{members} members x {pairs} pairs x 2 x {length}"


def memory_row(compiled) -> dict:
    m = compiled.memory_analysis()
    if m is None:
        raise AotError("this backend gives no memory analysis")
    row = dict(
        argument_bytes=int(m.argument_size_in_bytes),
        output_bytes=int(m.output_size_in_bytes),
        alias_bytes=int(m.alias_size_in_bytes),
        temp_bytes=int(m.temp_size_in_bytes),
        code_bytes=int(m.generated_code_size_in_bytes),
    )
    # Donated arguments that become outputs (the DPO train state) are counted once.
    row["total_bytes"] = (row["argument_bytes"] + row["output_bytes"] - row["alias_bytes"]
                          + row["temp_bytes"] + row["code_bytes"])
    return row


_SIZE = r"([\d.]+)\s*([KMGT]?)i?B?"


def _parse_size(value: str, unit: str) -> int:
    return int(float(value) * {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}[unit])


def oom_row(message: str) -> dict | None:
    """Numbers from the TPU compiler's out-of-memory error, or None if it is another error.

    libtpu words it either "... HLO temporaries (42.71G) exceeds available HBM (30.75G)" or
    "Used 48.62G of 30.75G hbm ... Total hbm usage >= 49.12G: ... program 46.00G ...".
    """
    if "RESOURCE_EXHAUSTED" not in message and not re.search(r"(?i)out of memory", message):
        return None
    row = dict(argument_bytes=None, output_bytes=None, alias_bytes=None, temp_bytes=None, code_bytes=None,
               total_bytes=None, oom=True)
    temps = re.search(r"HLO temporaries \(" + _SIZE + r"\) exceeds available HBM \(" + _SIZE + r"\)", message)
    if temps:
        row["temp_bytes"] = _parse_size(temps.group(1), temps.group(2))
        row["compiler_hbm_bytes"] = _parse_size(temps.group(3), temps.group(4))
    used = re.search(r"Used " + _SIZE + r" of " + _SIZE + r" hbm", message)
    if used:
        row["total_bytes"] = _parse_size(used.group(1), used.group(2))
        row["compiler_hbm_bytes"] = _parse_size(used.group(3), used.group(4))
    total = re.search(r"Total hbm usage >= " + _SIZE, message)
    if total:
        row["total_bytes"] = _parse_size(total.group(1), total.group(2))
    for key, label in (("argument_bytes", "arguments"), ("output_bytes", "output"), ("temp_bytes", "program")):
        hit = re.search(r"^\s*" + label + r"\s+" + _SIZE + r"\s*$", message, re.M)
        if hit:
            row[key] = _parse_size(hit.group(1), hit.group(2))
    return row


def shard_bytes(tree) -> int:
    """Bytes one device holds of a tree of ShapeDtypeStructs with shardings (the most loaded one)."""
    import jax
    import numpy as np

    total = 0
    for leaf in jax.tree.leaves(tree):
        if not hasattr(leaf, "shape"):
            continue
        shape = leaf.sharding.shard_shape(leaf.shape) if getattr(leaf, "sharding", None) is not None else leaf.shape
        total += int(np.prod(shape, dtype=np.int64)) * int(leaf.dtype.itemsize)  # key<fry> has one too
    return total


def compile_config(config, mesh, model_shape=None, *, hbm_gib: float | None = None,
                   programs: tuple[str, ...] | None = None, log=None) -> list[dict]:
    """Lower and compile the config's programs on `mesh`; one dict of per-chip bytes each.

    Each row: program, shape, argument_bytes, output_bytes, alias_bytes, temp_bytes, code_bytes,
    total_bytes (arguments + outputs - aliased + temporaries + code), hbm_bytes, fits, error.
    """
    import jax
    from flax import nnx

    from sparta_jax import dpo
    from sparta_jax.sampling import Sampler, SamplerConfig

    log = log or (lambda *_: None)
    if config.tribe.get("kind", "lora") != "lora":
        raise AotError("tribe.kind='full': the ahead-of-time check covers LoRA tribes only so far")
    model_config = resolve_model_shape(model_shape, config.tribe.get("base"))
    model, lora = abstract_model(model_config, config, mesh)
    sampler = Sampler(model, None, config=SamplerConfig.from_config(config.sampler), mesh=mesh, pad_id=0)
    _, state = nnx.split(model)
    state = shard_abstract(state, mesh)
    hbm = None if hbm_gib is None else int(hbm_gib * GIB)

    jobs = []  # (name, shape, abstract args, thunk returning a jax.stages.Lowered)
    gen, judge = config.generation, config.judge
    args, kw, shape = _generation_args(sampler, mesh, state, gen.batch_size, gen.max_prompt_tokens, gen.max_new_tokens)
    jobs.append(("generate", shape, args, lambda a=args, k=kw: sampler._generate.lower(*a, **k)))
    args, shape = _score_args(sampler, mesh, state, judge.batch_size, judge.max_prompt_tokens)
    jobs.append(("judge_score", shape, args, lambda a=args: sampler._score.lower(*a)))
    if judge.mode == "sampled":
        args, kw, shape = _generation_args(sampler, mesh, state, judge.batch_size, judge.max_prompt_tokens,
                                           judge.max_new_tokens)
        jobs.append(("judge_generate", shape, args, lambda a=args, k=kw: sampler._generate.lower(*a, **k)))
    cfg = dpo.dpo_config(config)
    split = dpo.split_lora(model)
    optimizer = dpo.make_optimizer(cfg, dpo.lora_member_axis)
    step = dpo.make_lora_train_step(split[0], cfg, optimizer)
    args, shape = _dpo_args(mesh, split, cfg, lora.num_adapters, optimizer)
    jobs.append(("dpo_step", shape, args, lambda a=args: step.lower(*a)))

    unknown = set(programs or ()) - {job[0] for job in jobs}
    if unknown:
        raise AotError(f"unknown programs {sorted(unknown)}; this config has {[job[0] for job in jobs]}")
    rows = []
    for name, shape, args, lower in jobs:
        if programs and name not in programs:
            continue
        log(f"compiling {name} [{shape}] ...")
        row = dict(program=name, shape=shape, error=None)
        try:
            with jax.set_mesh(mesh):
                compiled = lower().compile()
            row.update(memory_row(compiled))
        except Exception as e:  # noqa: BLE001 (an out-of-memory compile is a result, not a crash)
            parsed = oom_row(str(e))
            if parsed is None:
                raise
            row.update(parsed)
            row["error"] = _first_line(str(e))
            if row["argument_bytes"] is None:  # exact from the inputs' shardings
                row["argument_bytes"] = shard_bytes(args)
            if row["total_bytes"] is None and row["temp_bytes"] is not None:  # a lower bound
                row["total_bytes"] = row["argument_bytes"] + row["temp_bytes"]
        row["hbm_bytes"] = hbm
        if row.get("oom"):
            row["fits"] = False
        else:
            row["fits"] = None if hbm is None else row["total_bytes"] <= hbm
        rows.append(row)
    return rows


# ------------------------------------------------------------------------- mixed tribes
def group_run_config(config, group_cfg):
    """The run config with one group of a mixed tribe (tribe.groups) as its whole tribe."""
    import ml_collections

    out = ml_collections.ConfigDict({k: v for k, v in config.to_dict().items() if k != "tribe"})
    out.tribe = ml_collections.ConfigDict(group_cfg.to_dict())
    return out


def resident_bytes(config, mesh, model_shape) -> int:
    """Per-chip bytes one tribe (or group) keeps on the chips between its programs: its weights
    (frozen base and LoRA stack) and its LoRA optimizer state."""
    import jax
    from flax import nnx

    from sparta_jax import dpo

    model, _ = abstract_model(resolve_model_shape(model_shape, config.tribe.get("base")), config, mesh)
    _, state = nnx.split(model)
    optimizer = dpo.make_optimizer(dpo.dpo_config(config), dpo.lora_member_axis)
    opt_state = shard_abstract(jax.eval_shape(optimizer.init, dpo.split_lora(model)[1]), mesh, optimizer_rules())
    return shard_bytes((shard_abstract(state, mesh), opt_state))


def compile_mixed(config, mesh, shapes: Mapping[str, object], *, hbm_gib: float | None = None,
                  programs: tuple[str, ...] | None = None, log=None) -> list[dict]:
    """compile_config for each group of a mixed tribe, in turn, as a run runs them. Every group
    shards over the whole mesh and keeps its weights there, so a group's program has the other
    groups' resident bytes beside it: each row's total adds them (other_groups_bytes)."""
    from sparta_jax.tribe import group_configs

    configs = {name: group_run_config(config, g) for name, g in group_configs(config.tribe)}
    missing = set(configs) - set(shapes)
    if missing:
        raise AotError(f"no model shape for groups {sorted(missing)}")
    resident = {name: resident_bytes(c, mesh, shapes[name]) for name, c in configs.items()}
    rows = []
    for name, c in configs.items():
        others = sum(v for k, v in resident.items() if k != name)
        for row in compile_config(c, mesh, shapes[name], hbm_gib=hbm_gib, programs=programs, log=log):
            row.update(program=f"{name}: {row['program']}", group=name, other_groups_bytes=others)
            if row["total_bytes"] is not None:
                row["total_bytes"] += others
            if not row.get("oom") and row["hbm_bytes"] is not None:
                row["fits"] = row["total_bytes"] <= row["hbm_bytes"]
            rows.append(row)
    return rows


def group_shapes(config, given: Mapping[str, str]) -> dict:
    """Each group's ModelConfig: --group_shapes name=shape, else from the group's base (a folder
    here, or a base whose name is a known shape or alias, e.g. .../gemma-7b-it)."""
    from sparta_jax.tribe import group_configs

    return {name: resolve_model_shape(given.get(name) or None, g.base) for name, g in group_configs(config.tribe)}


# ------------------------------------------------------------------------------- roofline
def _layer_shardings(layers, stacked_shape, mesh):
    """What `decode_weights` returns, sharded as it lays them out: PartitionedLayers by their
    specs, a StackedLayers as its stacks are (the LoRA ones in their cast dtype), or each
    per-layer slice like its stack minus the layer axis, the MLP weights in the decode layout
    (sharding.DECODE_RULES)."""
    import jax
    from jax.sharding import NamedSharding, PartitionSpec as P

    from sparta_jax.models.decode_partitioned import PartitionedLayers
    from sparta_jax.models.llama import StackedLayers
    from sparta_jax.sharding import decode_spec, spec_for

    def one(prefix, drop_layer_axis=True):
        def shard(path, leaf):
            name = path[-1].key
            spec = spec_for(f"{prefix}/{name}", stacked_shape(prefix, name), mesh)
            if drop_layer_axis:  # a per-call slice: the stack's layout less the layer axis, or the decode layout
                spec = (decode_spec(name, leaf.shape, mesh) if prefix == "layers" else None) or P(*spec[1:])
            return _sds(leaf.shape, leaf.dtype, NamedSharding(mesh, spec))
        return shard

    if isinstance(layers, PartitionedLayers):  # the hand-partitioned step's own layouts
        return jax.tree.map(lambda leaf, spec: _sds(leaf.shape, leaf.dtype, NamedSharding(mesh, spec)),
                            layers, layers.specs())
    if isinstance(layers, StackedLayers):
        return StackedLayers(jax.tree_util.tree_map_with_path(one("layers", False), layers.weights),
                             jax.tree_util.tree_map_with_path(one("lora", False), layers.lora))
    return tuple((jax.tree_util.tree_map_with_path(one("layers"), w),
                  jax.tree_util.tree_map_with_path(one("lora"), lw)) for w, lw in layers)


def _cache_sds(mesh, model_config, rows: int, length: int, dtype, per_row_index: bool = False):
    """The KV cache as the decode loop carries it: rows over the batch axes, kv heads over tensor;
    with `per_row_index` each row's own write slot (the refilled rows' loop)."""
    from jax.sharding import NamedSharding, PartitionSpec as P

    import jax

    from sparta_jax.models.llama import init_cache
    from sparta_jax.sharding import BATCH_AXES

    batch_axes = tuple(a for a in BATCH_AXES if a in mesh.shape)
    tensor = "tensor" if "tensor" in mesh.shape and model_config.num_kv_heads % mesh.shape["tensor"] == 0 else None
    abstract = jax.eval_shape(lambda: init_cache(model_config, rows, length, dtype))
    layer = NamedSharding(mesh, P(batch_axes, tensor, None, None))
    return type(abstract)(
        k=tuple(_sds(a.shape, a.dtype, layer) for a in abstract.k),
        v=tuple(_sds(a.shape, a.dtype, layer) for a in abstract.v),
        key_mask=_batch_sds(mesh, abstract.key_mask.shape, abstract.key_mask.dtype),
        next_position=_batch_sds(mesh, abstract.next_position.shape, abstract.next_position.dtype),
        index=(_batch_sds(mesh, (rows,), abstract.index.dtype) if per_row_index
               else _replicated(mesh, (), abstract.index.dtype)),
    )


def decode_step_roofline(config, mesh, model_config, chip, *, log=None, gen=None) -> dict:
    """One decode step of the config's generation, compiled on its own, against the chip's peaks.

    Shapes: generation.batch_size rows (padded as the Sampler pads them), a cache of the prompt
    bucket plus the new-token bucket, the members' adapters mixed over the rows; `gen` (a config
    section with batch_size, max_prompt_tokens, max_new_tokens) for other shapes. Ideal bytes:
    each device's shard of the layer weights, LoRA factors, final norm and unembedding, of the
    whole KV cache (every slot is read), and of what the step hands the sampler: each row's best
    `sampler.candidates` logits and their token ids (the whole logits when that is None).
    """
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from sparta_jax.models.decode_partitioned import PartitionedLayers, rows_sharding
    from sparta_jax.sampling import Sampler, SamplerConfig, bucket, decode_step, decode_step_candidates
    from sparta_jax.sharding import batch_sharding

    log = log or (lambda *_: None)
    model, lora = abstract_model(model_config, config, mesh)
    sampler = Sampler(model, None, config=SamplerConfig.from_config(config.sampler), mesh=mesh, pad_id=0)
    graphdef, state = nnx.split(model)
    per_step = sampler.config.slice_layers == "per_step"
    abstract_layers = jax.eval_shape(lambda st: nnx.merge(graphdef, st).decode_weights(
        per_step=per_step, partitioned=sampler.config.partition_decode, kernels=sampler.config.decode_kernels), state)
    state = shard_abstract(state, mesh)
    gen = gen or config.generation
    rows = sampler._batch_rows(int(gen.batch_size))
    length = (bucket(int(gen.max_prompt_tokens), sampler.config.prompt_buckets, "prompt length")
              + bucket(int(gen.max_new_tokens), sampler.config.new_token_buckets, "max_new_tokens"))
    layers = _layer_shardings(abstract_layers, lambda prefix, name: state[prefix][name].shape, mesh)
    per_row = sampler.config.refill_rows > 0  # the refilled rows' loop: each row writes at its own slot
    cache = _cache_sds(mesh, model_config, rows, length, jnp.dtype(sampler.config.cache_dtype), per_row)
    token = _batch_sds(mesh, (rows,), jnp.int32)
    live = _batch_sds(mesh, (rows,), jnp.bool_)
    adapter_ids = _batch_sds(mesh, (rows,), jnp.int32)
    head = state["lm_head"] if "lm_head" in state else state["embed"]
    # What the step hands the sampler: each row's best `candidates` logits and their ids (the
    # sampler's loop), or, with sampler.candidates None, the whole logits.
    candidates = sampler.config.candidates
    width = model_config.vocab_size if candidates is None else min(candidates, model_config.vocab_size)
    row_split = rows_sharding(mesh) if isinstance(layers, PartitionedLayers) else batch_sharding(mesh)
    out = _sds((rows, width), jnp.float32, row_split)
    if candidates is not None:
        out = (out, _sds((rows, width), jnp.int32, row_split))
    if isinstance(layers, PartitionedLayers):  # its own copy of the final norm and unembedding
        ideal = shard_bytes((layers, cache.k, cache.v, out))
    else:
        ideal = shard_bytes((layers, state["final_norm"], head, cache.k, cache.v, out))
    layer_bytes = shard_bytes(cache.k[0])

    def step(state, layers, token, live, cache, adapter_ids):
        model = nnx.merge(graphdef, state)
        if candidates is None:
            return decode_step(model, layers, token, live, cache, adapter_ids)
        return decode_step_candidates(model, layers, token, live, cache, adapter_ids, candidates)

    args = (state, layers, token, live, cache, adapter_ids)
    shardings = jax.tree.map(lambda x: x.sharding, args)
    out_shardings = (jax.tree.map(lambda x: x.sharding, out), shardings[4])
    if mesh.devices.flat[0].platform == "tpu":
        # In the decode loop XLA lays out the carried cache and the sliced weights as it likes; a
        # step compiled alone with default argument layouts would add a relayout copy of each.
        # Stacks the step slices itself are the model's own arrays, in their stored layout.
        from jax.experimental.layout import Format, Layout

        auto = lambda tree: jax.tree.map(lambda s: Format(Layout.AUTO, s), tree)  # noqa: E731
        cache_formats = dataclasses.replace(shardings[4], k=auto(shardings[4].k), v=auto(shardings[4].v))
        shardings = (shardings[0], shardings[1] if per_step else auto(shardings[1]), *shardings[2:4], cache_formats,
                     shardings[5])
        out_shardings = (auto(out_shardings[0]), cache_formats)

    log(f"compiling one decode step [{rows} rows, cache {length}] ...")
    with jax.set_mesh(mesh):
        compiled = jax.jit(step, in_shardings=shardings, out_shardings=out_shardings,
                           donate_argnums=(4,)).lower(*args).compile(_hbm_only_options(mesh))
    flops, accessed = roofline_lib.program_cost(compiled)
    name = (f"decode step ({rows} rows, cache {length}{', per-row slots' if per_row else ''}"
            f"{', layers sliced per step' if per_step else ''})")
    row = roofline_lib.decode_row(name, flops=flops, bytes_accessed=accessed,
                                  ideal_bytes=ideal, chip=chip, tokens_per_step=rows, chips=mesh.devices.size)
    hlo = compiled.as_text()  # megabytes of text at a 7B shape: made once for both readings
    row["copies"] = roofline_lib.large_copies(hlo, layer_bytes)
    row["traffic"] = roofline_lib.traffic_by_kind(hlo)
    return row


def format_traffic(row: dict) -> str:
    """Where a decode step's bytes go: each kind of top-level op's operands and results."""
    gb = lambda x: f"{x / 1e9:.2f} GB"  # noqa: E731
    t = row["traffic"]
    return (f"decode step, bytes by kind of op (operands + results, loops apart): matmul fusions {gb(t['matmul fusions'])}"
            f" and Pallas kernels {gb(t['kernels'])} (they read the ideal's {gb(row['ideal_bytes'])} of weights and "
            f"cache), collectives {gb(t['collectives'])}, other ops {gb(t['other'])}; in-place loops {gb(t['loops'])} "
            "of operands")


def _layer_extrapolated_cost(mesh, model_config, lower_at, *, what: str, log) -> tuple[float, float]:
    """(flops, bytes) per device of a program at the model's depth. XLA counts a loop body once, so
    the program is lowered with its scans unrolled at one and two layers (`lower_at(shallow model
    config)` -> (a function that lowers it, its shape for the log)), compiled, costed, and
    extrapolated by `roofline.per_layer_extrapolation`."""
    import jax

    costs = []
    for depth in (1, 2):
        lower, shape = lower_at(dataclasses.replace(model_config, num_layers=depth))
        log(f"compiling {what} at {depth} layer(s), scans unrolled [{shape}] ...")
        with jax.set_mesh(mesh):
            costs.append(roofline_lib.program_cost(lower().compile(_hbm_only_options(mesh))))
    return roofline_lib.per_layer_extrapolation(costs[0], costs[1], model_config.num_layers)


def _lora_dpo_setup(config, mesh, model_config, cfg):
    """The LoRA DPO programs' pieces at one model shape: (the model's (graphdef, trainable, frozen)
    split, its LoraConfig, the optimizer, the step's abstract arguments, their shape)."""
    from sparta_jax import dpo

    model, lora = abstract_model(model_config, config, mesh)
    split = dpo.split_lora(model)
    optimizer = dpo.make_optimizer(cfg, dpo.lora_member_axis)
    args, shape = _dpo_args(mesh, split, cfg, lora.num_adapters, optimizer)
    return split, lora, optimizer, args, shape


def forward_roofline(config, mesh, model_config, chip, *, batch: int, tokens: int, unembedded: int, name: str,
                     log=None) -> dict:
    """One forward pass of `batch` rows (padded as the Sampler pads them) of the `tokens` bucket,
    unembedding the last `unembedded` positions: a prefill (1), or a judge's scoring pass (the
    few scored tokens). Costed at the model's depth from one and two layers
    (_layer_extrapolated_cost). Ideal bytes: the weight shards read once."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from sparta_jax.sampling import Sampler, SamplerConfig, bucket

    sampler_config = SamplerConfig.from_config(config.sampler)
    length = bucket(int(tokens), sampler_config.prompt_buckets, "prompt length")

    def lower_at(shallow):
        model, _ = abstract_model(shallow, config, mesh)
        rows = Sampler(model, None, config=sampler_config, mesh=mesh, pad_id=0)._batch_rows(int(batch), decode=False)
        graphdef, state = nnx.split(model)

        def forward(state, ids, mask, adapter_ids):
            model = nnx.merge(graphdef, state)
            hidden = model.hidden_states(ids, mask, adapter_ids=adapter_ids, unroll=True)
            return model.logits_from_hidden(hidden[:, -unembedded:])

        args = (shard_abstract(state, mesh), _batch_sds(mesh, (rows, length), jnp.int32),
                _batch_sds(mesh, (rows, length), jnp.bool_), _batch_sds(mesh, (rows,), jnp.int32))
        return (lambda: jax.jit(forward).lower(*args)), f"{rows} x {length}"

    flops, accessed = _layer_extrapolated_cost(mesh, model_config, lower_at, what=name, log=log or (lambda *_: None))
    model, _ = abstract_model(model_config, config, mesh)
    rows = Sampler(model, None, config=sampler_config, mesh=mesh, pad_id=0)._batch_rows(int(batch), decode=False)
    ideal = shard_bytes(shard_abstract(nnx.split(model)[1], mesh))
    return roofline_lib.decode_row(f"{name} ({rows} x {length})", flops=flops, bytes_accessed=accessed,
                                   ideal_bytes=ideal, chip=chip, tokens_per_step=rows * length,
                                   chips=mesh.devices.size)


def reference_roofline(config, mesh, model_config, chip, *, log=None) -> dict:
    """DPO's reference pass (the start-of-iteration policy's log-probs of one step's pairs, every
    member), costed as dpo_step_roofline costs the step."""
    import jax
    from flax import nnx

    from sparta_jax import dpo

    cfg = dataclasses.replace(dpo.dpo_config(config), unroll_scans=True)

    def lower_at(shallow):
        (graphdef, _, _), _, _, (state, frozen, batch, _), shape = _lora_dpo_setup(config, mesh, shallow, cfg)

        def reference(trainable, frozen, batch):
            return dpo.lora_tribe_logps(nnx.merge(graphdef, trainable, frozen), batch, cfg.logps_chunk, unroll=True)

        return (lambda: jax.jit(reference).lower(state.params, frozen, batch)), shape

    flops, accessed = _layer_extrapolated_cost(mesh, model_config, lower_at, what="the reference pass",
                                               log=log or (lambda *_: None))
    _, lora, _, (state, frozen, batch, _), shape = _lora_dpo_setup(config, mesh, model_config, cfg)
    ideal = shard_bytes(frozen) + shard_bytes(state.params) + shard_bytes(batch)
    tokens = lora.num_adapters * int(cfg.pairs_per_step) * 2 * int(cfg.max_length)
    return roofline_lib.decode_row(f"reference pass ({shape})", flops=flops, bytes_accessed=accessed,
                                   ideal_bytes=ideal, chip=chip, tokens_per_step=tokens, chips=mesh.devices.size)


def iteration_roofline(config, mesh, model_config, chip, *, answer_lengths=None, eval_items=None, members=None,
                       share=1.0, log=None):
    """(each program's roofline row, the per-phase rows of sparta_jax.iteration_time) for one
    iteration of the config. Programs of the same shape are compiled once. For one group of a
    mixed tribe: the group's run config, the whole tribe's `members` and the group's `share`."""
    import ml_collections

    from sparta_jax import iteration_time
    from sparta_jax.sampling import bucket

    cache: dict = {}  # one roofline row per program shape

    def once(key, make):
        if key not in cache:
            cache[key] = make()
        return cache[key]

    def decode(section):  # a decode step at a config section's batch, prompt and new-token sizes
        gen = ml_collections.ConfigDict({k: int(section[k]) for k in ("batch_size", "max_prompt_tokens",
                                                                      "max_new_tokens")})
        return once(("decode", *gen.values()),
                    lambda: decode_step_roofline(config, mesh, model_config, chip, log=log, gen=gen))

    def forward(batch, tokens, unembedded, name):
        return once(("forward", int(batch), int(tokens), unembedded),
                    lambda: forward_roofline(config, mesh, model_config, chip, batch=batch, tokens=tokens,
                                             unembedded=unembedded, name=name, log=log))

    gen, judge, ev = config.generation, config.judge, config.evaluation
    answer_prefill, answer_decode = forward(gen.batch_size, gen.max_prompt_tokens, 1, "prefill"), decode(gen)
    judge_programs = []
    if judge.mode == "logits":  # the judge prompt and its few scored tokens (a 2-token bucket)
        scored = bucket(2, [int(b) for b in config.sampler.new_token_buckets], "continuation length")
        judge_programs = [forward(judge.batch_size, int(judge.max_prompt_tokens) + scored, scored, "judge scoring")]
    elif judge.mode == "sampled":
        judge_programs = [forward(judge.batch_size, judge.max_prompt_tokens, 1, "prefill"), decode(judge)]
    eval_prefill, eval_decode = forward(ev.batch_size, ev.max_prompt_tokens, 1, "prefill"), decode(ev)
    reference = once("reference", lambda: reference_roofline(config, mesh, model_config, chip, log=log))
    train = once("dpo", lambda: dpo_step_roofline(config, mesh, model_config, chip, log=log))
    refill = int(config.sampler.get("refill_rows", 0))
    refill_programs = []
    if refill:  # a refill prefills refill_rows prompts (into rows of the running loop)
        refill_programs = [forward(refill, gen.max_prompt_tokens, 1, "refill prefill"),
                           forward(refill, ev.max_prompt_tokens, 1, "refill prefill")]
    refill_seconds = [p["seconds"] for p in refill_programs] or [0.0, 0.0]
    judge_seconds = [p["seconds"] for p in judge_programs] + [0.0, 0.0]
    times = iteration_time.ProgramTimes(
        answer_prefill=answer_prefill["seconds"], answer_decode_step=answer_decode["seconds"],
        judge_call=judge_seconds[0], judge_decode_step=judge_seconds[1], reference_call=reference["seconds"],
        dpo_step=train["seconds"], eval_prefill=eval_prefill["seconds"], eval_decode_step=eval_decode["seconds"],
        refill_prefill=refill_seconds[0], eval_refill_prefill=refill_seconds[1])
    phases = iteration_time.iteration_phases(config, times, members=members or _members(config),
                                             answer_lengths=answer_lengths, eval_lengths=answer_lengths,
                                             eval_items=eval_items, share=share)
    programs = [answer_decode, answer_prefill, *refill_programs, *judge_programs, eval_prefill, eval_decode,
                reference, train]
    unique = list({id(p): p for p in programs}.values())
    return unique, phases


def _hbm_only_options(mesh) -> dict:
    """Compiler options for costing HBM traffic. On chips with CMEM (v4), XLA stages arrays
    through it with async copies that its cost analysis counts as bytes accessed; without that
    staging the count is the program's HBM traffic (CMEM can only lower it)."""
    if mesh.devices.flat[0].platform == "tpu":
        return {"xla_tpu_cmem_memory_space_assignment": False}
    return {}


def dpo_step_roofline(config, mesh, model_config, chip, *, log=None) -> dict:
    """The LoRA DPO step at the config's shapes, costed whole, against the chip's peaks.

    XLA counts a loop body once, so the step is compiled with every scan unrolled (micro-batches,
    log-prob chunks, layers) at one and at two layers, and costed at the model's depth by
    `roofline.per_layer_extrapolation` (_layer_extrapolated_cost). Ideal bytes: each device's
    shard of the frozen base read twice (forward and backward), of the train state (LoRA factors
    and Adam moments) read and written, and of the batch; activations are left out, so the ratio
    shows what they add.
    """
    import jax

    from sparta_jax import dpo

    cfg = dataclasses.replace(dpo.dpo_config(config), unroll_scans=True)

    def lower_at(shallow):
        split, _, optimizer, args, shape = _lora_dpo_setup(config, mesh, shallow, cfg)
        step = dpo.make_lora_train_step(split[0], cfg, optimizer)
        return (lambda: step.lower(*args)), shape

    flops, accessed = _layer_extrapolated_cost(mesh, model_config, lower_at, what="dpo_step",
                                               log=log or (lambda *_: None))
    split, lora, _, (state, frozen, batch, _), shape = _lora_dpo_setup(config, mesh, model_config, cfg)
    ideal = 2 * shard_bytes(frozen) + 2 * shard_bytes(state) + shard_bytes(batch)
    count = lambda tree: sum(int(x.size) for x in jax.tree.leaves(tree))  # noqa: E731
    lora_params = count(split[1])
    base_params = count(split[2])
    c = model_config
    length = int(cfg.max_length)
    attention = 4.0 * length * c.q_size * c.num_layers  # QK^T and PV per token, over the whole row
    tokens = lora.num_adapters * int(cfg.pairs_per_step) * 2 * length
    model_flops = roofline_lib.lora_dpo_model_flops(
        base_params=base_params, lora_params=lora_params, tokens=tokens,
        attention_flops_per_token=attention, reference_pass=False) / mesh.devices.size
    return roofline_lib.train_row(f"dpo_step ({shape})", flops=flops, bytes_accessed=accessed, ideal_bytes=ideal,
                                  chip=chip, model_flops=model_flops)


def remat_comparison(config, mesh, model_config, chip, modes, *, hbm_gib=None, log=None) -> list[dict]:
    """The DPO step under each `dpo.remat` mode: its memory per chip (compiled whole at the
    config's depth) and its roofline (MFU ceiling), as dicts {mode, memory, roofline}."""
    from sparta_jax.models.llama import remat_mode

    rows = []
    for mode in modes:
        mode = remat_mode(mode)
        variant = config.copy_and_resolve_references()
        variant.dpo.remat = mode
        (memory,) = compile_config(variant, mesh, model_config, hbm_gib=hbm_gib, programs=("dpo_step",), log=log)
        roofline = dpo_step_roofline(variant, mesh, model_config, chip, log=log)
        roofline["program"] += f", remat {mode}"
        rows.append(dict(mode=mode, memory=memory, roofline=roofline))
    return rows


def format_remat_rows(rows: list[dict]) -> str:
    def gib(x):
        return "?" if x is None else f"{x / GIB:.2f}"

    out = ["\nDPO step by remat mode (per chip):",
           "| dpo.remat | total GiB | temporaries GiB | fits | flops/chip | roofline time | MFU ceiling |",
           "|---|---:|---:|---|---:|---:|---:|"]
    for r in rows:
        m, t = r["memory"], r["roofline"]
        fits = "?" if m["fits"] is None else ("yes" if m["fits"] else "NO")
        out.append(f"| {r['mode']} | {gib(m['total_bytes'])} | {gib(m['temp_bytes'])} | {fits} | "
                   f"{t['flops'] / 1e12:.2f} TFLOP | {1e3 * t['seconds']:.1f} ms | {100 * t['mfu']:.1f}% |")
    return "\n".join(out)


def _first_line(message: str) -> str:
    for line in message.splitlines():
        if line.strip():
            return line.strip()[:300]
    return message[:300]


# ---------------------------------------------------------------------------------- table
def format_table(rows: list[dict], header: str = "") -> str:
    def gib(x):
        return "?" if x is None else f"{x / GIB:.3f}"

    mixed = any("other_groups_bytes" in r for r in rows)  # a mixed tribe: the other groups' weights
    cols = ("program", "shape", "arguments GiB", "outputs GiB", "temporaries GiB", "code GiB",
            *(("other groups GiB",) if mixed else ()), "total per chip GiB", "HBM GiB", "fits")
    body = []
    for r in rows:
        fits = "?" if r["fits"] is None else ("yes" if r["fits"] else "NO")
        code = "?" if r["code_bytes"] is None else f"{r['code_bytes'] / GIB:.3f}"
        total = (">= " + gib(r["total_bytes"]) + " (OOM)") if r.get("oom") else gib(r["total_bytes"])
        others = (gib(r.get("other_groups_bytes")),) if mixed else ()
        body.append((r["program"], r["shape"], gib(r["argument_bytes"]), gib(r["output_bytes"]),
                     gib(r["temp_bytes"]), code, *others, total, gib(r["hbm_bytes"]), fits))
    widths = [max(len(c), *(len(b[i]) for b in body)) if body else len(c) for i, c in enumerate(cols)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    out = ([header] if header else []) + [line(cols), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(b) for b in body]
    for r in rows:
        if r.get("error"):
            out.append(f"{r['program']}: {r['error']}")
    if any(r.get("oom") for r in rows):
        out.append("OOM rows: the TPU compiler refused the program; arguments are the inputs' shards, "
                   "temporaries the compiler's figure, total their sum (a lower bound).")
    return "\n".join(out)


# ------------------------------------------------------------------------------------ CLI
def _define_flags():
    from absl import flags
    from ml_collections import config_flags

    config_flags.DEFINE_config_file("config", None, "configs/*.py file; override values with --config.a.b=v")
    flags.DEFINE_string("topology", "v4:2x2x4", "TPU topology (v4:2x2x4, v5e:4x4, v6e:2x2, ...) or cpu:N")
    flags.DEFINE_string("model_shape", "", f"base model shape: {', '.join(MODEL_SHAPES)}, or a HF folder / "
                        "config.json; default: the config's tribe.base folder")
    flags.DEFINE_list("group_shapes", [], "a mixed tribe's shapes, name=shape per group (e.g. "
                      "gemma=gemma-7b,qwen=qwen2.5-7b); default: from each group's base")
    flags.DEFINE_float("hbm_gib", None, f"HBM per chip in GiB (default per generation: {HBM_GIB})")
    flags.DEFINE_string("chip_config", "", "libtpu chip_config_name override (default per generation: "
                        "'megacore' for v4/v5p, one device per chip, as Cloud TPU runs them)")
    flags.DEFINE_list("programs", [], "compile only these (generate, judge_score, judge_generate, dpo_step)")
    flags.DEFINE_string("json_out", "", "also write the rows as JSON here")
    flags.DEFINE_bool("roofline", False, "also cost one decode step and the DPO step from XLA's cost analysis "
                      "against the chip's peak flops and HBM bandwidth")
    flags.DEFINE_float("peak_tflops", None, "peak bf16 TFLOP/s per chip for --roofline (default: the TPU "
                       "generation's published figure; required for cpu topologies)")
    flags.DEFINE_bool("iteration", False, "also predict one Sparta iteration's time, phase by phase, from the "
                      "roofline times of every program it runs (sparta_jax/iteration_time.py)")
    flags.DEFINE_string("answer_lengths", "", "for --iteration: a JSON list of answer lengths in tokens (the answers' "
                        "and evaluation's decode steps follow its expected batch maximum); default: every answer "
                        "runs to max_new_tokens")
    flags.DEFINE_list("eval_items", [], "for --iteration: DEV,TEST items one evaluation scores (default: the "
                      "config's evaluation.dev and evaluation.test)")
    flags.DEFINE_float("hbm_gbps", None, "HBM GB/s per chip for --roofline (default: the generation's figure)")
    flags.DEFINE_list("remat_modes", [], "with --roofline: the DPO step's memory and MFU under each of these "
                      "dpo.remat modes (none, full, dots)")


def _prepare_cpu_devices(spec: str) -> None:
    """Fake CPU devices must be requested before the backend starts."""
    platform, _, count = parse_topology(spec)
    if platform == "cpu" and count:
        flags_now = os.environ.get("XLA_FLAGS", "")
        if "xla_force_host_platform_device_count" not in flags_now:
            os.environ["XLA_FLAGS"] = f"{flags_now} --xla_force_host_platform_device_count={count}".strip()
    # Compiling for a TPU topology needs no TPU backend; a CPU backend avoids libtpu probing for
    # an attached chip on a machine without one.
    os.environ.setdefault("JAX_PLATFORMS", "cpu")


def main(argv) -> int:
    from absl import flags

    FLAGS = flags.FLAGS
    if len(argv) > 1:
        raise AotError(f"unexpected arguments {argv[1:]}")
    if FLAGS.config is None:
        raise AotError("--config is required")
    _prepare_cpu_devices(FLAGS.topology)
    config = FLAGS.config
    from sparta_jax.eval_check import evaluation_problem

    cannot_evaluate = evaluation_problem(config)  # reported first, the compiles still run
    if cannot_evaluate:
        print(f"evaluation check: a run of this config would be refused: {cannot_evaluate}", flush=True)
    topology = get_topology(FLAGS.topology, chip_config_name=FLAGS.chip_config or None, hbm_gib=FLAGS.hbm_gib)
    mesh = topology_mesh(topology, config.mesh)
    kind = getattr(topology.devices[0], "device_kind", topology.platform)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    if config.tribe.get("groups"):  # a mixed tribe: each group's programs, the others' weights beside them
        if FLAGS.roofline or FLAGS.model_shape:
            raise AotError("a mixed tribe (tribe.groups): give each group's shape with --group_shapes=name=shape,...; "
                           "--model_shape and --roofline are for one-group tribes (--iteration covers both)")
        given = dict(item.split("=", 1) for item in FLAGS.group_shapes)
        shapes = group_shapes(config, given)
        from sparta_jax.tribe import group_configs

        described = [f"{name} {given.get(name) or g.base}: {_members(g_config)} LoRA members r{g.lora_rank} "
                     f"({shapes[name].num_layers} layers, hidden {shapes[name].hidden_size}, vocab "
                     f"{shapes[name].vocab_size})"
                     for name, g in group_configs(config.tribe) for g_config in [group_run_config(config, g)]]
        print(f"{topology.name}: {topology.num_devices} x {kind}, mesh {dict(mesh.shape)}; a mixed tribe, its groups "
              f"in turn, params {config.tribe.param_dtype}: " + "; ".join(described), flush=True)
        rows = compile_mixed(config, mesh, shapes, hbm_gib=topology.hbm_gib, programs=tuple(FLAGS.programs) or None,
                             log=log)
        print(format_table(rows), flush=True)
        iteration = None
        if FLAGS.iteration:
            iteration = _print_iteration(config, mesh, FLAGS, log, groups=[
                (name, group_run_config(config, g), shapes[name]) for name, g in group_configs(config.tribe)])
        if FLAGS.json_out:
            with open(FLAGS.json_out, "w") as f:
                json.dump(dict(topology=topology.name, devices=topology.num_devices, mesh=dict(mesh.shape),
                               rows=rows, roofline=[], iteration=iteration, evaluation_problem=cannot_evaluate), f,
                          indent=1)
        return 1 if cannot_evaluate or any(r["fits"] is False for r in rows) else 0
    model_config = resolve_model_shape(FLAGS.model_shape or None, config.tribe.get("base"))
    header = (f"{topology.name}: {topology.num_devices} x {kind}, mesh {dict(mesh.shape)}; "
              f"model {FLAGS.model_shape or config.tribe.base} ({model_config.num_layers} layers, hidden "
              f"{model_config.hidden_size}, vocab {model_config.vocab_size}), {_members(config)} LoRA members "
              f"r{config.tribe.lora_rank}, params {config.tribe.param_dtype}")
    print(header, flush=True)
    rows = compile_config(config, mesh, model_config, hbm_gib=topology.hbm_gib,
                          programs=tuple(FLAGS.programs) or None,
                          log=lambda msg: print(msg, file=sys.stderr, flush=True))
    print(format_table(rows), flush=True)
    roofline_rows = []
    if FLAGS.roofline:
        chip = roofline_chip(FLAGS.topology, FLAGS.peak_tflops, FLAGS.hbm_gbps)
        log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
        roofline_rows = [decode_step_roofline(config, mesh, model_config, chip, log=log),
                         dpo_step_roofline(config, mesh, model_config, chip, log=log)]
        print(roofline_lib.format_rows(roofline_rows, chip, header="\nRoofline (per chip):"), flush=True)
        print(format_traffic(roofline_rows[0]), flush=True)
        for copy in roofline_rows[0]["copies"]:
            print(f"decode step copies as much as a cache layer or more: {copy}", flush=True)
        if FLAGS.remat_modes:
            remat_rows = remat_comparison(config, mesh, model_config, chip, FLAGS.remat_modes,
                                          hbm_gib=topology.hbm_gib, log=log)
            print(format_remat_rows(remat_rows), flush=True)
            roofline_rows += [r["roofline"] for r in remat_rows]
    iteration = None
    if FLAGS.iteration:
        iteration = _print_iteration(config, mesh, FLAGS, log, groups=[(None, config, model_config)])
    if FLAGS.json_out:
        with open(FLAGS.json_out, "w") as f:
            json.dump(dict(topology=topology.name, devices=topology.num_devices, mesh=dict(mesh.shape),
                           rows=rows, roofline=roofline_rows, iteration=iteration,
                           evaluation_problem=cannot_evaluate), f, indent=1)
    return 1 if cannot_evaluate or any(r["fits"] is False for r in rows) else 0


def _print_iteration(config, mesh, FLAGS, log, *, groups) -> dict:
    """--iteration: prints each program's roofline row and the per-phase table; returns both for
    --json_out. `groups`: [(name, run config, model shape)]: one unnamed entry, or a mixed tribe's
    groups, each costed at its own shapes and priced at its share of the members."""
    from sparta_jax import iteration_time

    chip = roofline_chip(FLAGS.topology, FLAGS.peak_tflops, FLAGS.hbm_gbps)
    lengths = read_answer_lengths(FLAGS.answer_lengths) if FLAGS.answer_lengths else None
    eval_items = _eval_items(config, FLAGS.eval_items)
    members = sum(_members(c) for _, c, _ in groups)
    programs, phases = [], []
    for name, group_config, shape in groups:
        group_programs, group_phases = iteration_roofline(
            group_config, mesh, shape, chip, answer_lengths=lengths, eval_items=eval_items, members=members,
            share=_members(group_config) / members, log=log)
        prefix = f"{name}: " if name else ""
        programs += [dict(r, program=prefix + r["program"]) for r in group_programs]
        phases += [dict(r, program=prefix + r["program"]) for r in group_phases]
    print(roofline_lib.format_rows(programs, chip, header="\nPrograms of one iteration (roofline, per chip):"),
          flush=True)
    lengths_note = (f"answer lengths: {len(lengths)} measured, from {FLAGS.answer_lengths}" if lengths
                    else "answer lengths: every answer runs to max_new_tokens")
    print(iteration_time.format_iteration(
        phases, header=f"\nOne iteration of {config.instructions_per_iteration} duels, {members} members, "
                       f"judge mode {config.judge.mode}, evaluation of {eval_items[0]} dev and {eval_items[1]} "
                       f"test items (pairs: one per duel, an upper bound; {lengths_note}):"), flush=True)
    return dict(programs=programs, phases=phases, totals=iteration_time.phase_totals(phases),
                answer_lengths=FLAGS.answer_lengths or "max_new_tokens", eval_items=list(eval_items))


def _eval_items(config, given: list[str]) -> tuple[int, int]:
    """(dev, test) items one evaluation scores: --eval_items, else the config's counts, which
    must then be real sizes (a config may ask for "all", a count larger than any split)."""
    if given:
        try:
            dev, test = (int(x) for x in given)
        except ValueError:
            raise AotError(f"--eval_items={','.join(given)}: give two integers, DEV,TEST") from None
        return dev, test
    dev, test = int(config.evaluation.dev), int(config.evaluation.test)
    if max(dev, test) >= 100_000:
        raise AotError(f"--iteration: evaluation.dev / test = {dev} / {test} ask for whole splits whose sizes "
                       "this config does not name; give the items evaluated with --eval_items=DEV,TEST")
    return dev, test


def read_answer_lengths(path: str) -> list[int]:
    """A JSON list of positive integers (answer lengths in tokens)."""
    try:
        with open(path) as f:
            lengths = json.load(f)
    except (OSError, ValueError) as e:
        raise AotError(f"--answer_lengths={path}: cannot read a JSON list from it ({e})") from e
    if not isinstance(lengths, list) or not lengths or not all(
            isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in lengths):
        raise AotError(f"--answer_lengths={path}: must be a non-empty JSON list of positive integers")
    return lengths


def roofline_chip(topology: str, peak_tflops: float | None, hbm_gbps: float | None) -> roofline_lib.Chip:
    """The chip's peak figures: the generation's published ones, or those given."""
    _, generation, _ = parse_topology(topology)
    known = roofline_lib.CHIPS.get(generation)
    if known is None and (peak_tflops is None or hbm_gbps is None):
        raise AotError(f"--roofline on {topology}: no published peak figures for {generation!r}; give "
                       f"--peak_tflops and --hbm_gbps (known: {', '.join(roofline_lib.CHIPS)})")
    if known is None:
        return roofline_lib.Chip(generation, float(peak_tflops), float(hbm_gbps), "given on the command line")
    if peak_tflops is None and hbm_gbps is None:
        return known
    return dataclasses.replace(known, bf16_tflops=float(peak_tflops or known.bf16_tflops),
                               hbm_gbps=float(hbm_gbps or known.hbm_gbps), source="given on the command line")


def _run(argv):
    try:
        return main(argv)
    except AotError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    from absl import app

    _define_flags()
    from sparta_jax.config_files import parse_flags_checked

    app.run(_run, flags_parser=parse_flags_checked)
