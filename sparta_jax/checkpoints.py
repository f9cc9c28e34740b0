"""Run-state checkpoints: trainable weights, optimizer state and host-side state, in Orbax.

One checkpoint step holds three items:

- `trainable`: a pytree of (possibly sharded) jax.Arrays, e.g. `nnx.state(model, LoraParam)`;
- `opt_state`: the optax state that goes with it;
- `host_state`: JSON-able Python (reputations and their histories, RNG key data from
  `key_to_json`, the iteration and phase, the config as a dict).

Commits are atomic. Orbax writes a step into `<dir>/<step>.orbax-checkpoint-tmp` and renames
it to `<dir>/<step>` only when every item is written, so a process killed mid-save leaves the
previous step restorable; `latest_step` and `restore` only see committed steps. The leftover
temporary folder is deleted in the background when a `RunCheckpointer` next opens the directory
(`cleanup_tmp=True`; finished before its first save), so the killed step can be saved again.

Restoring takes abstract targets (`jax.ShapeDtypeStruct` with a `.sharding`) for the CURRENT
mesh; Orbax reads each shard where the target puts it, so a checkpoint written on an 8-device
mesh restores onto one device or onto another mesh layout. `targets_like` builds targets from
live arrays, `abstract_targets` from abstract state (e.g. `jax.eval_shape`) plus a mesh.

Multi-host: every process constructs the `RunCheckpointer` with the same directory and calls
`save`, `restore`, `wait` and `close` with the same arguments in the same order (they contain
barriers). The directory must be one file system that every process sees (GCS, NFS, ...).
`host_state` must be identical on every process: only the primary process writes it. While a
save is in flight processes may briefly disagree on `latest_step`; call `wait()` first where
they must agree (`restore` does).
"""
from __future__ import annotations

import json
import logging
import math
import os
from typing import Any, Mapping, Sequence

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from sparta_jax import sharding as sharding_lib
from sparta_jax.errors import SpartaError

ITEM_NAMES = ("trainable", "opt_state", "host_state")
TMP_SUFFIX = ".orbax-checkpoint-tmp"  # Orbax's temporary-folder marker (atomicity_types.TMP_DIR_SUFFIX)


class CheckpointMismatchError(SpartaError, ValueError):
    """A checkpoint's tree structure, shapes or dtypes differ from the restore targets."""


# --------------------------------------------------------------------------- RNG keys
def key_to_json(key: jax.Array) -> dict:
    """A PRNG key (typed `jax.random.key` or legacy uint32 `PRNGKey`) as JSON-able data."""
    typed = jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
    data = np.asarray(jax.device_get(jax.random.key_data(key)))
    impl = str(jax.random.key_impl(key)) if typed else None
    return {"typed": bool(typed), "impl": impl, "shape": list(data.shape),
            "dtype": str(data.dtype), "data": [int(v) for v in data.reshape(-1)]}


def key_from_json(blob: Mapping[str, Any]) -> jax.Array:
    """Inverse of `key_to_json`: the same key, bit for bit."""
    data = np.asarray(blob["data"], dtype=np.dtype(blob.get("dtype", "uint32"))).reshape(blob["shape"])
    if not blob.get("typed", True):
        return jax.numpy.asarray(data)
    return jax.random.wrap_key_data(data, impl=blob.get("impl"))


# --------------------------------------------------------------------------- restore targets
def targets_like(tree):
    """Restore targets from live arrays: same shapes, dtypes and shardings."""
    def one(x):
        if isinstance(x, jax.ShapeDtypeStruct):
            return x
        return jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=getattr(x, "sharding", None))
    return jax.tree.map(one, tree)


def abstract_targets(abstract_tree, mesh: Mesh | None = None, *, shardings=None,
                     rules: Sequence[tuple[str, P]] = sharding_lib.PARAM_RULES):
    """Restore targets from abstract state (`jax.eval_shape`, `nnx.eval_shape`) on `mesh`.

    With `shardings` (a matching pytree of Shardings) those are used as given. Otherwise each
    leaf gets the sharding the parameter rule table gives it on `mesh`; leaves of an optimizer
    state (paths like `0/mu/lora/q_proj_a`) take the rule of the longest path suffix that a
    rule matches, and scalars (step counts) are replicated.
    """
    if shardings is not None:
        return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=s),
                            abstract_tree, shardings)
    if mesh is None:
        raise ValueError("abstract_targets needs a mesh or shardings")

    def one(path, x):
        shape = tuple(np.shape(x))
        return jax.ShapeDtypeStruct(shape, x.dtype, sharding=NamedSharding(mesh, _suffix_spec(path, shape, mesh, rules)))
    return jax.tree_util.tree_map_with_path(one, abstract_tree)


def _suffix_spec(path, shape, mesh, rules) -> P:
    if not shape:
        return P()
    parts = sharding_lib.path_name(path).split("/")
    for start in range(len(parts)):
        try:
            return sharding_lib.spec_for("/".join(parts[start:]), shape, mesh, rules)
        except sharding_lib.UnmatchedParameterError:
            continue
    raise sharding_lib.UnmatchedParameterError(
        f"no sharding rule matches any suffix of {sharding_lib.path_name(path)!r} (shape {shape})")


# --------------------------------------------------------------------------- the checkpointer
class RunCheckpointer:
    """The state of a Sparta run in an Orbax CheckpointManager; keeps the last `max_to_keep`.

    Usage::

        with RunCheckpointer(workdir + "/checkpoints") as ckpt:
            if (step := ckpt.latest_step()) is not None:
                trainable, opt_state, host = ckpt.restore(
                    trainable_target=targets_like(trainable), opt_state_target=targets_like(opt_state))
            ...
            ckpt.save(step, trainable=trainable, opt_state=opt_state, host_state=host)

    With `async_save` the arrays are copied to host memory before `save` returns (so the
    caller may donate or delete them) and written in a background thread; `wait()` blocks
    until the step is committed. A later `save` first waits for the previous one.
    """

    def __init__(self, directory: str | os.PathLike, *, max_to_keep: int | None = 3,
                 async_save: bool = True, create: bool = True, cleanup_tmp: bool = True):
        """`cleanup_tmp` deletes temporary folders left by a killed save; turn it off for a
        read-only observer of a directory that another process is still writing to."""
        directory = os.fspath(directory)
        # Local paths made absolute; URLs (gs://...) kept as given.
        self._directory = directory if "://" in directory else os.path.abspath(directory)
        if max_to_keep is not None and max_to_keep < 1:
            raise ValueError(f"max_to_keep must be >= 1 or None, got {max_to_keep}")
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            enable_async_checkpointing=async_save,
            create=create,
            cleanup_tmp_directories=cleanup_tmp,
        )
        # Handlers named up front, so item metadata and restores work before any save.
        registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
        for name in ("trainable", "opt_state"):
            handler = ocp.StandardCheckpointHandler()
            registry.add(name, ocp.args.StandardSave, handler)
            registry.add(name, ocp.args.StandardRestore, handler)
        json_handler = ocp.JsonCheckpointHandler()
        registry.add("host_state", ocp.args.JsonSave, json_handler)
        registry.add("host_state", ocp.args.JsonRestore, json_handler)
        self._manager = ocp.CheckpointManager(self._directory, options=options, handler_registry=registry)
        self._pending: int | None = None  # step whose async save may not be committed yet

    @property
    def directory(self) -> str:
        return self._directory

    # ------------------------------------------------------------------ steps
    def _in_flight(self) -> int | None:
        if self._pending is not None and not self._manager.is_saving_in_progress():
            self._pending = None
        return self._pending

    def all_steps(self) -> list[int]:
        """Committed steps, ascending (a save still in flight is not listed)."""
        pending = self._in_flight()
        return sorted(s for s in self._manager.all_steps() if s != pending)

    def latest_step(self) -> int | None:
        """The newest committed step, or None when there is none."""
        steps = self.all_steps()
        return steps[-1] if steps else None

    def reload(self) -> None:
        """Re-read the steps on disk (for a directory another process writes to)."""
        self._manager.reload()

    # ------------------------------------------------------------------ save
    def save(self, step: int, *, trainable, opt_state, host_state: dict) -> None:
        """Save one step (asynchronously when `async_save`); old steps beyond `max_to_keep`
        are deleted once it is committed. `step` must exceed every step already saved."""
        step = int(step)
        _check_json(host_state, "host_state")
        latest = self._manager.latest_step()
        if latest is not None and step <= latest:
            raise ValueError(f"checkpoint step {step} is not newer than the latest step {latest} "
                             f"in {self._directory}")
        saved = self._manager.save(step, args=ocp.args.Composite(
            trainable=ocp.args.StandardSave(trainable),
            opt_state=ocp.args.StandardSave(opt_state),
            host_state=ocp.args.JsonSave(host_state),
        ))
        if not saved:
            raise RuntimeError(f"Orbax declined to save step {step} in {self._directory}")
        self._pending = step

    def wait(self) -> None:
        """Block until pending saves are committed; raises the error of a failed save."""
        self._manager.wait_until_finished()
        self._pending = None

    # ------------------------------------------------------------------ restore
    def saved_structure(self, step: int, sharding=None) -> tuple:
        """(trainable, opt_state) of a committed step as ShapeDtypeStructs placed on `sharding`
        (e.g. one device): restore targets for a reader that has no live model, such as a
        report or a test looking at a checkpoint written on another topology."""
        metadata = self._manager.item_metadata(step)
        as_struct = lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding)  # noqa: E731
        return tuple(jax.tree.map(as_struct, metadata[name]) for name in ("trainable", "opt_state"))

    def restore(self, step: int | None = None, *, trainable_target, opt_state_target):
        """(trainable, opt_state, host_state) of `step` (default: the latest committed one).

        Targets are pytrees of `jax.ShapeDtypeStruct` (or live arrays) whose `.sharding` says
        where each restored array goes; see `targets_like` and `abstract_targets`.
        """
        self.wait()
        steps = self.all_steps()
        if not steps:
            why = "does not exist" if not epath.Path(self._directory).exists() else "holds no committed checkpoint"
            raise FileNotFoundError(f"checkpoint directory {self._directory} {why}")
        if step is None:
            step = steps[-1]
        elif step not in steps:
            raise FileNotFoundError(f"no committed checkpoint for step {step} in {self._directory}; "
                                    f"committed steps: {steps}")
        trainable_target = _as_targets(trainable_target, "trainable")
        opt_state_target = _as_targets(opt_state_target, "opt_state")
        metadata = self._manager.item_metadata(step)
        for name, target in (("trainable", trainable_target), ("opt_state", opt_state_target)):
            _check_against_metadata(name, target, metadata[name], step, self._directory)
        restored = self._manager.restore(step, args=ocp.args.Composite(
            trainable=ocp.args.StandardRestore(trainable_target),
            opt_state=ocp.args.StandardRestore(opt_state_target),
            host_state=ocp.args.JsonRestore(),
        ))
        return restored["trainable"], restored["opt_state"], restored["host_state"]

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Wait for pending saves and release Orbax's threads."""
        self._manager.close()
        self._pending = None

    def __enter__(self) -> "RunCheckpointer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --------------------------------------------------------------------------- checks
def _key_name(entry) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def _flat(tree) -> dict[str, Any]:
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {"/".join(_key_name(e) for e in path): leaf for path, leaf in leaves}


def _as_targets(tree, what: str):
    def one(path, x):
        x = x if isinstance(x, jax.ShapeDtypeStruct) else targets_like(x)
        if getattr(x, "sharding", None) is None:
            name = "/".join(_key_name(e) for e in path)
            raise ValueError(f"restore target {what}/{name} has no sharding; build targets with "
                             "targets_like(live_arrays) or abstract_targets(abstract, mesh)")
        return x
    return jax.tree_util.tree_map_with_path(one, tree)


def _check_against_metadata(what: str, target, metadata, step: int, directory: str) -> None:
    saved = _flat(getattr(metadata, "tree", metadata))
    wanted = _flat(target)
    missing = sorted(set(wanted) - set(saved))
    extra = sorted(set(saved) - set(wanted))
    where = f"checkpoint step {step} in {directory}"
    if missing or extra:
        raise CheckpointMismatchError(
            f"{where}: tree of {what!r} does not match the target; "
            f"in the target only: {[f'{what}/{k}' for k in missing]}, "
            f"in the checkpoint only: {[f'{what}/{k}' for k in extra]}")
    for key, t in wanted.items():
        m = saved[key]
        shape = getattr(m, "shape", None)
        if shape is not None and tuple(shape) != tuple(t.shape):
            raise CheckpointMismatchError(
                f"{where}: {what}/{key} has shape {tuple(shape)} in the checkpoint, the target wants {tuple(t.shape)}")
        dtype = getattr(m, "dtype", None)
        if dtype is not None and np.dtype(dtype) != np.dtype(t.dtype):
            raise CheckpointMismatchError(
                f"{where}: {what}/{key} has dtype {np.dtype(dtype)} in the checkpoint, the target wants {np.dtype(t.dtype)}")


def _check_json(x, path: str) -> None:
    """host_state must survive JSON unchanged (lists for tuples aside): reject what would not."""
    if x is None or isinstance(x, (bool, int, str)):
        return
    if isinstance(x, float):
        if not math.isfinite(x):
            logging.warning("checkpoints: %s is %r (stored as non-standard JSON)", path, x)
        return
    if isinstance(x, (list, tuple)):
        for i, v in enumerate(x):
            _check_json(v, f"{path}[{i}]")
        return
    if isinstance(x, dict):
        for k, v in x.items():
            if not isinstance(k, str):
                raise TypeError(f"{path} has a non-string key {k!r} ({type(k).__name__}); JSON would turn "
                                "it into a string, so restore would not give it back")
            _check_json(v, f"{path}[{k!r}]")
        return
    raise TypeError(f"{path} is a {type(x).__name__}, which is not JSON-able; store plain Python "
                    "(int/float/str/bool/None, lists, str-keyed dicts; RNG keys via key_to_json)")


def json_roundtrip(x):
    """What `host_state` looks like after a restore (tuples become lists)."""
    return json.loads(json.dumps(x))
