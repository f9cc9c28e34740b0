"""Diverse starting experts: one LoRA adapter per member, each fine-tuned (SFT) on its own data.

    python -m sparta_jax.experts --config=configs/demo.py      # prints the adapter folders
    python -m sparta_jax.experts --config=configs/specialists.py --package=sparta_jax/assets/specialists

The paper's tribe starts from experts (one base, adapters tuned on different data sets); this
makes such a tribe. `config.experts.sources` lists one data source per member (the specs of
`sparta_jax.data`); member m is trained on the "train" records of source m, each answer written
as `experts.response_template` (e.g. "The answer is {answer}."). All members train together in
one jitted step (`sparta_jax.sft`). Items of the run's own dev and test splits are never used.

The adapters are cached: `<experts.dir or $SPARTA_JAX_CACHE/experts>/<key>/<member>/` (PEFT
folders), where key hashes the base model's files and every setting that shapes the experts.
A finished set has `experts.json` written last and the folder renamed into place, so a killed
build is never taken for a finished one. With `experts.enabled`, the main loop calls
`ensure_experts` and starts from these folders, building them first when they are missing.

`--package=DIR` also copies a built set to DIR with a manifest (the command and settings that
made it, each file's sha256). Sets under sparta_jax/assets/ ship with the package, so a config
can start from them with no build (`packaged_experts`; configs/default.py does).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile

import jax
import numpy as np

from sparta_jax import checkpoints, data as data_lib, dpo, sft
from sparta_jax.errors import ConfigError
from sparta_jax.metrics import Progress
from sparta_jax.models.embedded import default_cache_dir, file_sha256
from sparta_jax.preference_batches import prompt_ids, truncate
from sparta_jax.sampling import to_host
from sparta_jax.sparta import write_text_atomic
from sparta_jax.tribe import fresh_lora, resolve_base, supports_system_role

MANIFEST = "experts.json"
SFT_FIELDS = ("learning_rate", "lr_schedule", "warmup_ratio", "weight_decay", "max_grad_norm", "remat")


# ------------------------------------------------------------------------------- the sources
def _plain(x):
    return x.to_dict() if hasattr(x, "to_dict") else x


def expert_sources(experts_cfg) -> list[tuple[str, dict]]:
    """(member name, data spec) per member; names from experts.names, else the source's task."""
    sources = [dict(_plain(s)) for s in experts_cfg.sources]
    if not sources:
        raise ConfigError("config.experts.sources is empty: list one data source per expert")
    names = list(experts_cfg.names) or [s.get("name") or s.get("task") or f"expert_{i}"
                                        for i, s in enumerate(sources)]
    if len(names) != len(sources):
        raise ConfigError(f"config.experts.names has {len(names)} names for {len(sources)} sources")
    repeated = {n for n in names if names.count(n) > 1}  # two sources of one task: task_0, task_1
    unique = [f"{n}_{names[:i].count(n)}" if n in repeated else n for i, n in enumerate(names)]
    return [(n, {k: v for k, v in s.items() if k != "name"}) for n, s in zip(unique, sources)]


def held_out_instructions(data_spec) -> set[str]:
    """The run's dev and test instructions: an expert never trains on them."""
    splits = data_lib.load_instructions(data_spec)
    return {r["instruction"] for split in ("dev", "test") for r in splits.get(split, [])}


def sft_examples(tokenizer, records, *, template: str, system_prompt: str | None, max_prompt_length: int,
                 max_length: int, held_out: set[str]) -> tuple[list[tuple[list[int], list[int]]], dict]:
    """(prompt ids, response ids) per usable record; the prompt is exactly the generation prompt."""
    out, skipped = [], {"held_out": 0, "no_answer": 0, "too_long": 0}
    for r in records:
        if r["instruction"] in held_out:
            skipped["held_out"] += 1
            continue
        if r.get("answer") is None or str(r["answer"]).strip() == "":
            skipped["no_answer"] += 1
            continue
        prompt = prompt_ids(tokenizer, r["instruction"], mode="fixed", system_prompt=system_prompt)
        response = tokenizer.encode(template.format(answer=r["answer"]), add_special_tokens=False)
        response.append(tokenizer.eos_token_id)
        if len(prompt) > max_prompt_length or len(prompt) + len(response) > max_length:
            skipped["too_long"] += 1  # cutting an example would teach a truncated answer
            continue
        out.append(truncate(prompt, response, max_prompt_length, max_length))
    return out, skipped


# wrong_answers: "near_miss" (the evaluator's one near miss) or "wrong_forms" (any wrong rewrite of a
# `case` / `reverse` phrase: tasks.wrong_forms). abstain_share: the part of the judge examples over
# other experts' tasks, scored abstain_score whatever the answer (a judge that knows its part only).
JUDGE_DEFAULTS = dict(share=0.5, right_score=9, wrong_score=2, noise=0.0, max_prompt_tokens=512,
                      wrong_answers="near_miss", abstain_share=0.0, abstain_score=5)
WRONG_ANSWERS = ("near_miss", "wrong_forms")


def judge_settings(spec: dict) -> dict | None:
    """A source's `judge` entry with its defaults, or None when the source teaches no judging."""
    judge = _plain(spec.get("judge"))
    if not judge:
        return None
    unknown = set(judge) - set(JUDGE_DEFAULTS)
    if unknown:
        raise ConfigError(f"experts.sources judge settings: unknown keys {sorted(unknown)}; known: "
                          f"{sorted(JUDGE_DEFAULTS)}")
    out = {**JUDGE_DEFAULTS, **judge}
    if not 0.0 < out["share"] < 1.0:
        raise ConfigError(f"experts.sources judge share must lie in (0, 1), got {out['share']}")
    for key in ("right_score", "wrong_score", "abstain_score"):
        if not 1 <= out[key] <= 10:
            raise ConfigError(f"experts.sources judge {key} must lie in [1, 10], got {out[key]}")
    if out["wrong_answers"] not in WRONG_ANSWERS:
        raise ConfigError(f"experts.sources judge wrong_answers = {out['wrong_answers']!r}: one of {WRONG_ANSWERS}")
    if not 0.0 <= out["abstain_share"] < 1.0:
        raise ConfigError(f"experts.sources judge abstain_share must lie in [0, 1), got {out['abstain_share']}")
    return out


def wrong_answer(record: dict, judge: dict, rng: np.random.Generator) -> str | None:
    """A wrong answer to `record` for a judge example, of the kind judge["wrong_answers"] names."""
    from sparta_jax.evaluation import near_miss
    from sparta_jax.tasks import wrong_forms

    if judge["wrong_answers"] == "wrong_forms":
        forms = wrong_forms(record)
        if forms:
            return forms[int(rng.integers(len(forms)))]
    return near_miss(record, rng)


def judge_examples(tokenizer, records, judge: dict, count: int, *, template: str, system_prompt: str | None,
                   max_prompt_length: int, max_length: int, held_out: set[str], seed: int, abstain_records=()):
    """SFT examples that teach judging: the Sparta judge prompt (docs/algorithm.md §2.3, the judges' own chat
    prompt) over a right or a wrong answer (alternating; `wrong_answer`) to a training instruction,
    with the target `{"score": N}`: N = judge["right_score"] or judge["wrong_score"] plus Gaussian
    noise of std judge["noise"], rounded and kept in 1..10. A judge["abstain_share"] of the `count`
    examples are over `abstain_records` (other experts' instructions) instead, with the target
    judge["abstain_score"] for right and wrong answers alike: the judge learns to leave a part it
    does not know to the judges that do. This stands in for the judging skill large instruct models
    bring; it is not part of Sparta. Returns (examples, skipped counts)."""
    from sparta_jax.inference import judge_chat_ids

    rng = np.random.default_rng([seed, 23])

    def usable(rs):
        return [r for r in rs if r["instruction"] not in held_out and r.get("answer") is not None]

    own, other = usable(records), usable(abstain_records)
    abstaining = round(count * judge["abstain_share"]) if other else 0
    plan = [(own, i, False) for i in range(count - abstaining if own else 0)] + [
        (other, i, True) for i in range(abstaining)]
    out, skipped = [], {"no_near_miss": 0, "too_long": 0}
    for pool, i, abstain in plan:
        record, right = pool[(i // 2) % len(pool)], i % 2 == 0
        answer = record["answer"] if right else wrong_answer(record, judge, rng)
        if answer is None:
            skipped["no_near_miss"] += 1
            continue
        target = judge["abstain_score"] if abstain else judge["right_score"] if right else judge["wrong_score"]
        score = int(np.clip(np.rint(target + judge["noise"] * rng.standard_normal()), 1, 10))
        prompt = judge_chat_ids(tokenizer, system_prompt, record["instruction"], template.format(answer=answer),
                                max_tokens=int(judge["max_prompt_tokens"]), mode="fixed")
        response = tokenizer.encode(f'{{"score": {score}}}', add_special_tokens=False) + [tokenizer.eos_token_id]
        if len(prompt) > max_prompt_length or len(prompt) + len(response) > max_length:
            skipped["too_long"] += 1
            continue
        out.append((prompt, response))
    return out, skipped


# --------------------------------------------------------------------------------- the cache
def _base_fingerprint(base_path: str) -> dict:
    files = {}
    for name in sorted(os.listdir(base_path)):
        if name.endswith((".safetensors", ".json")):
            st = os.stat(os.path.join(base_path, name))
            files[name] = [st.st_size, st.st_mtime_ns]
    return {"path": os.path.abspath(base_path), "files": files}


def expert_settings(config) -> dict:
    """Every setting that shapes the experts, apart from the base model's files (JSON-ready)."""
    t = config.tribe
    settings = {
        "lora": [int(t.lora_rank), float(t.lora_alpha), list(t.lora_targets)],
        "system_prompt": t.system_prompt, "dtype": [t.dtype, t.param_dtype],
        "experts": {k: _plain(v) for k, v in config.experts.items()
                    if k not in ("enabled", "dir", "checkpoint_every", "copies")},  # copies: the tribe, not the experts
        "held_out_from": _plain(config.data), "format": 1,
    }
    return json.loads(json.dumps(settings, default=list))


def cache_key(config, base_path: str) -> str:
    """A hash of the base model's files and every setting that shapes the experts."""
    blob = {"base": _base_fingerprint(base_path), **expert_settings(config)}
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=list).encode()).hexdigest()[:16]


def cache_root(experts_cfg) -> str:
    return os.path.abspath(os.path.expanduser(experts_cfg.dir)) if experts_cfg.dir else os.path.join(
        default_cache_dir(), "experts")


def read_manifest(folder: str) -> dict | None:
    try:
        with open(os.path.join(folder, MANIFEST)) as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return None
    names = manifest.get("names") if isinstance(manifest, dict) else None
    if not names or not all(os.path.isfile(os.path.join(folder, n, "adapter_config.json")) for n in names):
        return None
    return manifest


# ------------------------------------------------------------------------------ the training
def _schedule(n_examples: list[int], rows: int, epochs: int, seed: int) -> list[np.ndarray]:
    """Per member, the example order over all epochs (fresh permutation each epoch)."""
    rng = np.random.default_rng(seed)
    return [np.concatenate([rng.permutation(n) for _ in range(epochs)]) for n in n_examples]


def train_experts(config, mesh, *, partial_dir: str | None = None, log=lambda s: None):
    """(model with the trained LoRA stack, tokenizer, names, report dict).

    With `partial_dir`, the training state is checkpointed there every experts.checkpoint_every
    steps, and a killed build resumes from its last checkpoint (the example order is seeded, so
    the result equals an uninterrupted build)."""
    import jax.numpy as jnp

    from sparta_jax.models.loading import from_pretrained

    cfg = config.experts
    sources = expert_sources(cfg)
    names = [n for n, _ in sources]
    base = resolve_base(config.tribe.base)
    t = config.tribe
    model, tokenizer = from_pretrained(base, dtype=jnp.dtype(t.dtype), param_dtype=jnp.dtype(t.param_dtype),
                                       mesh=mesh, lora=fresh_lora(t, tuple(names)))
    system = t.system_prompt if supports_system_role(tokenizer) else None
    held_out = held_out_instructions(config.data)
    per_member, report = [], {}
    train_records = [data_lib.load_instructions({k: v for k, v in spec.items() if k != "judge"}).get("train") or []
                     for _, spec in sources]
    for m, (name, spec) in enumerate(sources):
        judge = judge_settings(spec)
        records = train_records[m]
        lengths = dict(system_prompt=system or None, max_prompt_length=int(cfg.max_prompt_length),
                       max_length=int(cfg.max_length), held_out=held_out)
        examples, skipped = sft_examples(tokenizer, records[: int(cfg.examples)], template=cfg.response_template,
                                         **lengths)
        if not examples:
            raise data_lib.DataError(f"expert {name!r}: no usable training example in {spec} ({skipped})")
        report[name] = {"source": spec, "examples": len(examples), "skipped": skipped}
        if judge is not None:  # judge examples mixed in at the configured share of this expert's data
            count = round(len(examples) * judge["share"] / (1.0 - judge["share"]))
            others = [r for k, (_, other) in enumerate(sources) if other.get("task") != spec.get("task")
                      for r in train_records[k][: int(cfg.examples)]]  # other parts' instructions, to abstain on
            judging, judge_skipped = judge_examples(tokenizer, records[: int(cfg.examples)], judge, count,
                                                    template=cfg.response_template, seed=int(cfg.seed) + m,
                                                    abstain_records=others, **lengths)
            if not judging:
                raise data_lib.DataError(f"expert {name!r}: no usable judge example ({judge_skipped}); judge prompts "
                                         "are long: raise experts.max_length and experts.max_prompt_length")
            examples = examples + judging
            report[name].update(judge_examples=len(judging), judge_skipped=judge_skipped)
        per_member.append(examples)
    rows, epochs = int(cfg.rows_per_member), int(cfg.epochs)
    orders = _schedule([len(e) for e in per_member], rows, epochs, int(cfg.seed))
    steps = max(math.ceil(len(o) / rows) for o in orders)
    sft_cfg = sft.SFTConfig(**{k: cfg[k] for k in SFT_FIELDS if k in cfg})
    optimizer = sft.make_optimizer(sft_cfg)
    graphdef, trainable, frozen = dpo.split_lora(model)
    step_fn = sft.make_lora_sft_step(graphdef, sft_cfg, optimizer)
    state = dpo.init_train_state(trainable, optimizer, sft_cfg, steps)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    history = []
    every = int(cfg.checkpoint_every)
    with contextlib.ExitStack() as stack:
        ckpt = None
        if partial_dir is not None and every > 0:
            ckpt = stack.enter_context(checkpoints.RunCheckpointer(os.path.join(partial_dir, "checkpoints"),
                                                                   max_to_keep=1))
            if (done := ckpt.latest_step()) is not None:
                params, opt_state, host = ckpt.restore(
                    done, trainable_target=checkpoints.targets_like(state.params),
                    opt_state_target=checkpoints.targets_like(state.opt_state))
                state = dpo.init_train_state(params, optimizer, sft_cfg, steps, step=done)._replace(opt_state=opt_state)
                history = host["loss_history"]
                log(f"expert SFT: resumed after step {done}/{steps}")
        progress = Progress("expert SFT", steps - len(history), "steps")
        for s in range(len(history), steps):
            chunk = [[per_member[m][i] for i in o[s * rows: (s + 1) * rows]] for m, o in enumerate(orders)]
            batch = sft.examples_to_batch(chunk, int(cfg.max_length), pad, rows)  # members out of examples: left out
            state, metrics = step_fn(state, frozen, batch)
            losses = [None] * len(names)  # None: the member had no example this step
            for m, loss in zip(batch.members.tolist(), to_host(metrics["loss"])):
                losses[m] = float(loss)
            history.append(losses)
            progress(1)
            if s in (0, steps - 1):
                log(f"expert SFT step {s + 1}/{steps}: loss "
                    + ", ".join(f"{n} {v:.3f}" for n, v in zip(names, history[-1]) if v is not None))
            if ckpt is not None and (s + 1) % every == 0 and s + 1 < steps:
                ckpt.save(s + 1, trainable=state.params, opt_state=state.opt_state,
                          host_state={"loss_history": history})
    for m, name in enumerate(names):
        own = [losses[m] for losses in history if losses[m] is not None]
        report[name].update(loss_first_step=own[0], loss_last_step=own[-1], steps=len(own))
    model = dpo.merge_lora(graphdef, state.params, frozen)
    return model, tokenizer, names, {"members": report, "steps": steps, "loss_history": history}


def ensure_experts(config, mesh, *, log=lambda s: None) -> tuple[str, ...]:
    """The expert adapter folders for `config` (member order), trained and cached when missing."""
    cfg = config.experts
    if jax.process_count() > 1 and not cfg.dir:
        raise ConfigError("config.experts.dir must name storage every host can read on a multi-host run")
    names = [n for n, _ in expert_sources(cfg)]
    base = resolve_base(config.tribe.base)
    root = cache_root(cfg)
    final = os.path.join(root, cache_key(config, base))
    if read_manifest(final) is None:
        partial = final + ".partial"  # SFT checkpoints of an unfinished build
        model, tokenizer, names, report = train_experts(config, mesh, partial_dir=partial, log=log)
        from sparta_jax.models.export import peft_tensors

        adapters = {n: peft_tensors(model, n, base_model_name_or_path=base) for n in names}  # every process gathers
        if jax.process_index() == 0:
            _write_experts(adapters, report, base, final, config)
            shutil.rmtree(partial, ignore_errors=True)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("experts written")
        del model
    else:
        log(f"experts: cached in {final}")
    return tuple(os.path.join(final, n) for n in names)


def tribe_source(config, mesh, *, log=lambda s: None):
    """(tribe config, adapter folders or None) a run's tribe is built from: config.tribe as it is,
    or with experts enabled the expert adapters (built and cached when missing), each expert in
    `experts.copies` members named <expert>_<k> when copies > 1 (the paper's pool-diversity
    runs: copies start equal, and as Sparta trains every member on every pair, stay equal)."""
    if not config.experts.enabled:
        return config.tribe, None
    folders = ensure_experts(config, mesh, log=log)
    copies = int(config.experts.get("copies", 1))
    if copies < 1:
        raise ConfigError(f"config.experts.copies = {copies}: must be >= 1")
    if copies == 1:
        return config.tribe, folders
    import ml_collections

    tribe_cfg = ml_collections.ConfigDict(config.tribe.to_dict())
    names = [n for n, _ in expert_sources(config.experts)]
    tribe_cfg.names = tuple(f"{n}_{k}" for n in names for k in range(copies))
    return tribe_cfg, tuple(f for f in folders for _ in range(copies))


def _write_experts(adapters: dict, report, base, final, config) -> None:
    from sparta_jax.models.export import write_peft

    os.makedirs(os.path.dirname(final), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".building-", dir=os.path.dirname(final))
    try:
        for name, tensors_and_config in adapters.items():
            write_peft(tensors_and_config, os.path.join(tmp, name))
        manifest = {"names": list(adapters), "base": base, "key": os.path.basename(final), **report,
                    "config": {k: _plain(v) for k, v in config.experts.items()}}
        write_text_atomic(os.path.join(tmp, MANIFEST), json.dumps(manifest, indent=1, default=list) + "\n")
        os.chmod(tmp, 0o755)
        if os.path.isdir(final):  # an unfinished set (no manifest) from a killed build
            shutil.rmtree(final)
        try:
            os.replace(tmp, final)
        except OSError:
            if read_manifest(final) is None:  # not another builder's finished set
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------- sets shipped with the package
PACKAGED_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets")
PACKAGED_MANIFEST = "manifest.json"
EMBEDDED_HF_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # the embedded base (tests/test_smollm2_jax.py: same logits)


def package_experts(config, folders, out: str, command: str) -> dict:
    """Copies a built set (its PEFT folders, member order) to `out` with a manifest: the command
    and settings that made it (`expert_settings`: what the cache key hashes, less the base
    model's files, which the configured base names), the build report, and each file's size and
    sha256. Returns the manifest."""
    names = [os.path.basename(f) for f in folders]
    built = read_manifest(os.path.dirname(folders[0])) or {}
    tmp = out.rstrip("/") + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    files = {}
    for folder, name in zip(folders, names):
        os.makedirs(os.path.join(tmp, name))
        with open(os.path.join(folder, "adapter_config.json")) as f:
            adapter_config = json.load(f)
        # The builder's local path means nothing elsewhere: name the base as PEFT users load it.
        adapter_config["base_model_name_or_path"] = (EMBEDDED_HF_ID if config.tribe.base == "embedded"
                                                     else config.tribe.base)
        write_text_atomic(os.path.join(tmp, name, "adapter_config.json"), json.dumps(adapter_config, indent=2) + "\n")
        shutil.copyfile(os.path.join(folder, "adapter_model.safetensors"),
                        os.path.join(tmp, name, "adapter_model.safetensors"))
        for f in ("adapter_config.json", "adapter_model.safetensors"):
            path = os.path.join(tmp, name, f)
            files[f"{name}/{f}"] = {"bytes": os.path.getsize(path), "sha256": file_sha256(path)}
    manifest = {"names": names, "base": config.tribe.base, "command": command,
                "settings": expert_settings(config), "files": files,
                "build": {k: built[k] for k in ("members", "steps") if k in built}}
    write_text_atomic(os.path.join(tmp, PACKAGED_MANIFEST), json.dumps(manifest, indent=1, default=list) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return manifest


def packaged_experts(name: str) -> tuple[str, ...]:
    """The adapter folders of a set shipped in sparta_jax/assets/NAME, in member order."""
    folder = os.path.join(PACKAGED_ROOT, name)
    try:
        with open(os.path.join(folder, PACKAGED_MANIFEST)) as f:
            names = json.load(f)["names"]
    except (OSError, ValueError, KeyError) as e:
        raise ConfigError(f"no packaged expert set {name!r} in {PACKAGED_ROOT} ({e}): the package was installed "
                          "without its assets; reinstall it with `pip install -e .`") from None
    return tuple(os.path.join(folder, n) for n in names)


def verify_packaged(folder: str) -> dict:
    """The manifest of a packaged set's folder, once every file's size and sha256 match it (else
    ConfigError)."""
    with open(os.path.join(folder, PACKAGED_MANIFEST)) as f:
        manifest = json.load(f)
    for rel, want in manifest["files"].items():
        path = os.path.join(folder, rel)
        if not os.path.isfile(path) or os.path.getsize(path) != want["bytes"] or file_sha256(path) != want["sha256"]:
            raise ConfigError(f"packaged expert file {path} does not match its manifest (size or sha256)")
    return manifest


# ------------------------------------------------------------------------------------- CLI
def main(argv):
    from sparta_jax import sharding
    from sparta_jax.config_check import validate_config
    from sparta_jax.logs import quiet_third_party

    del argv
    quiet_third_party()
    config = _CONFIG.value
    try:
        validate_config(config)
        sharding.initialize_from_config(config.distributed)
        if _FORCE.value:
            path = os.path.join(cache_root(config.experts), cache_key(config, resolve_base(config.tribe.base)))
            shutil.rmtree(path, ignore_errors=True)
        folders = ensure_experts(config, sharding.make_mesh(dict(config.mesh)),
                                 log=lambda s: print(s, file=sys.stderr, flush=True))
    except (ConfigError, data_lib.DataError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if jax.process_index() == 0:
        print("\n".join(folders))
        if _PACKAGE.value:
            command = "python -m sparta_jax.experts " + " ".join(a for a in sys.argv[1:] if not a.startswith("--package"))
            manifest = package_experts(config, folders, _PACKAGE.value, command)
            print(f"packaged into {_PACKAGE.value}: {sum(f['bytes'] for f in manifest['files'].values()) / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    from absl import app, flags
    from ml_collections import config_flags

    _CONFIG = config_flags.DEFINE_config_file("config", "configs/demo.py", "Run config (a file with get_config()).")
    _FORCE = flags.DEFINE_bool("force", False, "Retrain even when a cached set exists.")
    _PACKAGE = flags.DEFINE_string("package", "", "Also copy the set, with a manifest, into this folder "
                                   "(sparta_jax/assets/NAME ships it with the package).")
    from sparta_jax.config_files import parse_flags_checked

    app.run(lambda argv: sys.exit(main(argv)),
            flags_parser=lambda argv: parse_flags_checked(argv, "configs/demo.py"))
