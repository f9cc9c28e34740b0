"""Run-state checkpoints: bit-exact round trips, resharding, retention, async saves, kill safety."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from sparta_jax import sharding as sharding_lib
from sparta_jax.checkpoints import (CheckpointMismatchError, RunCheckpointer, TMP_SUFFIX, abstract_targets,
                                    key_from_json, key_to_json, targets_like)
from sparta_jax.models.config import ModelConfig
from sparta_jax.models.loading import build_model
from sparta_jax.models.lora import ALL_TARGETS, LoraParam, uniform_lora_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --------------------------------------------------------------------------- helpers
class TinyTrainable(nnx.Module):
    def __init__(self, seed: int):
        rng = np.random.default_rng(seed)
        self.a32 = LoraParam(jnp.asarray(rng.standard_normal((3, 8, 4)), jnp.float32))
        self.b16 = LoraParam(jnp.asarray(rng.standard_normal((3, 4, 8)), jnp.bfloat16))
        self.frozen = nnx.Param(jnp.ones((5,), jnp.float32))  # not LoRA: filtered out


def one_adamw_step(params, seed: int = 7):
    tx = optax.adamw(1e-2, weight_decay=0.1)
    opt_state = tx.init(params)
    rng = np.random.default_rng(seed)
    grads = jax.tree.map(lambda x: jnp.asarray(rng.standard_normal(x.shape), x.dtype), params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state


def host_state_example(key) -> dict:
    return {
        "iteration": 3, "phase": "train",
        "reputations": {"member_0": {"mu": 25.5, "sigma": 8.125, "history": [[0, 25.0], [1, 25.5]]},
                        "member_1": {"mu": -1.0e-7, "sigma": 0.1, "history": []}},
        "rng": key_to_json(key), "config": {"tribe": {"members": 2}, "lr": 1e-5, "name": "x", "flag": None},
    }


def assert_trees_equal(got, want):
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        assert g.dtype == w.dtype
        assert g.shape == w.shape
        assert np.array_equal(np.asarray(jax.device_get(g)), np.asarray(jax.device_get(w)))


def lora_model(mesh):
    config = ModelConfig(vocab_size=101, hidden_size=64, intermediate_size=96, num_layers=2, num_heads=4,
                         num_kv_heads=2, head_dim=16)
    lora = uniform_lora_config(2, 4, 8.0, targets=ALL_TARGETS)
    return build_model(config, {}, lora=lora, mesh=mesh)


def randomized(tree, seed: int):
    """Same shapes, dtypes and shardings, random values (LoRA B starts at zero)."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda x: jax.device_put(rng.standard_normal(x.shape).astype(x.dtype), x.sharding), tree)


# --------------------------------------------------------------------------- tests
def test_round_trip_is_bit_exact(tmp_path):
    params = nnx.state(TinyTrainable(0), LoraParam)
    params, opt_state = one_adamw_step(params)
    key = jax.random.split(jax.random.key(42))[1]
    host = host_state_example(key)
    with RunCheckpointer(tmp_path / "ckpt") as ckpt:
        ckpt.save(10, trainable=params, opt_state=opt_state, host_state=host)
        ckpt.wait()
        assert ckpt.latest_step() == 10
        got_params, got_opt, got_host = ckpt.restore(trainable_target=targets_like(params),
                                                     opt_state_target=targets_like(opt_state))
    assert isinstance(got_params, nnx.State)
    assert {str(x.dtype) for x in jax.tree.leaves(got_params)} == {"float32", "bfloat16"}
    assert_trees_equal(got_params, params)
    assert_trees_equal(got_opt, opt_state)
    assert int(got_opt[0].count) == 1
    assert got_host == host
    restored_key = key_from_json(got_host["rng"])
    assert restored_key.dtype == key.dtype
    assert np.array_equal(jax.random.key_data(restored_key), jax.random.key_data(key))
    assert np.array_equal(jax.random.normal(restored_key, (4,)), jax.random.normal(key, (4,)))


def test_legacy_uint32_key_round_trips():
    key = jax.random.PRNGKey(3)
    back = key_from_json(key_to_json(key))
    assert back.dtype == key.dtype and np.array_equal(back, key)


def test_8_device_checkpoint_restores_on_1_device_and_other_layout(tmp_path):
    mesh8 = sharding_lib.make_mesh({"data": 1, "fsdp": 2, "tensor": 4})
    model = lora_model(mesh8)
    params = randomized(nnx.state(model, LoraParam), seed=1)
    tx = optax.adamw(1e-3)
    opt_state = jax.jit(tx.init)(params)
    grads = randomized(params, seed=2)
    updates, opt_state = jax.jit(tx.update)(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    q_a = params["lora"]["q_proj_a"][...]
    assert len(q_a.sharding.device_set) == 8
    assert not q_a.sharding.is_fully_replicated
    host = {"iteration": 1, "phase": "evaluate"}
    with RunCheckpointer(tmp_path / "ckpt") as ckpt:
        ckpt.save(1, trainable=params, opt_state=opt_state, host_state=host)

    abstract_params = jax.eval_shape(lambda: params)
    abstract_opt = jax.eval_shape(tx.init, abstract_params)
    layouts = [({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1]),
               ({"data": 2, "fsdp": 4, "tensor": 1}, None)]
    for axes, devices in layouts:
        mesh = sharding_lib.make_mesh(axes, devices=devices)
        t_params = abstract_targets(abstract_params, mesh)
        t_opt = abstract_targets(abstract_opt, mesh)
        with RunCheckpointer(tmp_path / "ckpt") as ckpt:
            got_params, got_opt, got_host = ckpt.restore(trainable_target=t_params, opt_state_target=t_opt)
        assert_trees_equal(got_params, params)
        assert_trees_equal(got_opt, opt_state)
        assert got_host == host
        for got, target in zip(jax.tree.leaves((got_params, got_opt)), jax.tree.leaves((t_params, t_opt))):
            assert got.sharding == target.sharding
            assert got.sharding.mesh.devices.size == (1 if devices else 8)


def test_keeps_last_n(tmp_path):
    params = nnx.state(TinyTrainable(0), LoraParam)
    params, opt_state = one_adamw_step(params)
    with RunCheckpointer(tmp_path / "ckpt", max_to_keep=2) as ckpt:
        for step in range(1, 6):
            ckpt.save(step, trainable=params, opt_state=opt_state, host_state={"step": step})
        ckpt.wait()
        assert ckpt.all_steps() == [4, 5]
    assert sorted(os.listdir(tmp_path / "ckpt")) == ["4", "5"]
    with RunCheckpointer(tmp_path / "ckpt", max_to_keep=2) as ckpt:
        assert ckpt.all_steps() == [4, 5]
        assert ckpt.restore(4, trainable_target=targets_like(params),
                            opt_state_target=targets_like(opt_state))[2] == {"step": 4}


def test_async_save_commits_on_wait(tmp_path):
    params = nnx.state(TinyTrainable(0), LoraParam)
    params, opt_state = one_adamw_step(params)
    expected_params = jax.tree.map(np.asarray, params)
    targets = targets_like(params), targets_like(opt_state)
    ckpt = RunCheckpointer(tmp_path / "ckpt", async_save=True)
    ckpt.save(1, trainable=params, opt_state=opt_state, host_state={"n": 1})
    ckpt.wait()
    big = jax.tree.map(lambda x: jnp.tile(x, (64, 1, 1)), params)  # a bit more to write
    big_opt = optax.adamw(1e-3).init(big)
    ckpt.save(2, trainable=big, opt_state=big_opt, host_state={"n": 2})
    # Right after save returns, step 2 is reported only once it is really committed.
    latest = ckpt.latest_step()
    assert latest == 1 or (latest == 2 and os.path.isdir(tmp_path / "ckpt" / "2"))
    # The arrays were copied to host before save returned: donating them is safe.
    for x in jax.tree.leaves(big):
        x.delete()
    ckpt.wait()
    assert ckpt.latest_step() == 2 and ckpt.all_steps() == [1, 2]
    assert os.path.isdir(tmp_path / "ckpt" / "2")
    got = ckpt.restore(1, trainable_target=targets[0], opt_state_target=targets[1])
    assert_trees_equal(got[0], jax.tree.map(jnp.asarray, expected_params))
    ckpt.close()
    with RunCheckpointer(tmp_path / "ckpt") as again:
        assert again.latest_step() == 2
        big_targets = jax.tree.map(lambda t: jax.ShapeDtypeStruct((64 * t.shape[0],) + t.shape[1:], t.dtype,
                                                                  sharding=t.sharding), targets[0])
        _, _, host = again.restore(trainable_target=big_targets, opt_state_target=targets_like(big_opt))
        assert host == {"n": 2}


CHILD = """
import os, sys, time
os.environ["JAX_PLATFORMS"] = "cpu"
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
import jax, jax.numpy as jnp, numpy as np, optax
from jax.sharding import NamedSharding, PartitionSpec as P
from sparta_jax.checkpoints import RunCheckpointer
from sparta_jax.sharding import make_mesh

directory, mode, marker = sys.argv[1], sys.argv[2], sys.argv[3]
mesh = make_mesh({"data": 1, "fsdp": 2, "tensor": 1})
rows = NamedSharding(mesh, P("fsdp"))
rng = np.random.default_rng(0)
params = {"w": jax.device_put(rng.standard_normal((16, 8)).astype(np.float32), rows),
          "b": jnp.asarray(rng.standard_normal(8), jnp.bfloat16)}
tx = optax.adamw(1e-2)
opt_state = tx.init(params)
updates, opt_state = tx.update(jax.tree.map(jnp.ones_like, params), opt_state, params)
params = optax.apply_updates(params, updates)
np.savez(os.path.join(os.path.dirname(directory), "step1.npz"),
         **{f"p{i}": np.asarray(x.astype(jnp.float32)) for i, x in enumerate(jax.tree.leaves(params))},
         **{f"o{i}": np.asarray(x.astype(jnp.float32)) for i, x in enumerate(jax.tree.leaves(opt_state))})

ckpt = RunCheckpointer(directory, max_to_keep=1, async_save=True)
ckpt.save(1, trainable=params, opt_state=opt_state, host_state={"iteration": 1, "phase": "train"})
ckpt.wait()

if mode == "before_rename":
    # Hold the commit right before Orbax renames the finished temporary folder into place.
    from orbax.checkpoint._src.path import atomicity
    real_rename = atomicity.async_path.rename
    async def held_rename(src, dst, *a, **k):
        if os.path.basename(str(dst)) == "2":
            open(marker, "w").write(str(src))
            time.sleep(600)
        return await real_rename(src, dst, *a, **k)
    atomicity.async_path.rename = held_rename
    big = np.full((4096, 8), 3.0, np.float32)
else:  # "during_write": ~256 MB of incompressible data, killed while it is being written
    big = rng.random((8 * 1024 * 1024, 8), dtype=np.float32)
params2 = {"w": jax.device_put(big, rows), "b": params["b"]}
ckpt.save(2, trainable=params2, opt_state=opt_state, host_state={"iteration": 2, "phase": "train"})
open(marker + ".returned", "w").close()
ckpt.wait()
open(marker + ".committed", "w").close()
"""


@pytest.mark.parametrize("mode", ["during_write", "before_rename"])
@pytest.mark.e2e
def test_save_killed_midway_leaves_previous_step(tmp_path, mode):
    directory = tmp_path / "ckpt"
    marker = tmp_path / "marker"
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(CHILD))
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("XLA_FLAGS", None)
    proc = subprocess.Popen([sys.executable, str(script), str(directory), mode, str(marker)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    tmp_dir = directory / ("2" + TMP_SUFFIX)
    ready = (lambda: tmp_dir.exists()) if mode == "during_write" else (lambda: marker.exists())
    deadline = time.time() + 120
    try:
        while not ready():
            if proc.poll() is not None:
                pytest.fail(f"child exited early ({proc.returncode}):\n{proc.stdout.read().decode()[-3000:]}")
            if time.time() > deadline:
                pytest.fail("child never started saving step 2")
            time.sleep(0.001)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    # The kill landed mid-save: step 2 was never committed, its temporary folder is left over.
    assert not (tmp_path / "marker.committed").exists()
    assert not (directory / "2").exists(), "step 2 was committed before the kill; the test lost its race"
    assert tmp_dir.exists()
    assert (directory / "1").is_dir()  # max_to_keep=1: step 1 is only dropped after step 2 commits

    expected = np.load(tmp_path / "step1.npz")
    params_t = {"w": jax.ShapeDtypeStruct((16, 8), jnp.float32, sharding=jax.sharding.SingleDeviceSharding(jax.devices()[0])),
                "b": jax.ShapeDtypeStruct((8,), jnp.bfloat16, sharding=jax.sharding.SingleDeviceSharding(jax.devices()[0]))}
    opt_t = jax.eval_shape(optax.adamw(1e-2).init, params_t)
    opt_t = jax.tree.map(lambda t: jax.ShapeDtypeStruct(t.shape, t.dtype, sharding=params_t["b"].sharding), opt_t)
    # Orbax's step listing skips the uncommitted folder even while it is still on disk.
    with RunCheckpointer(directory, cleanup_tmp=False) as observer:
        assert observer.all_steps() == [1]
        assert observer.restore(trainable_target=params_t, opt_state_target=opt_t)[2]["iteration"] == 1
    assert tmp_dir.exists()
    with RunCheckpointer(directory, max_to_keep=1) as ckpt:
        assert ckpt.latest_step() == 1 and ckpt.all_steps() == [1]
        params, opt_state, host = ckpt.restore(trainable_target=params_t, opt_state_target=opt_t)
        assert host == {"iteration": 1, "phase": "train"}
        for i, x in enumerate(jax.tree.leaves(params)):
            assert np.array_equal(np.asarray(x.astype(jnp.float32)), expected[f"p{i}"])
        for i, x in enumerate(jax.tree.leaves(opt_state)):
            assert np.array_equal(np.asarray(x.astype(jnp.float32)), expected[f"o{i}"])
        assert params["b"].dtype == jnp.bfloat16
        # The leftover folder is cleaned up (at the latest before the first save), so the
        # resumed run can save step 2 again.
        ckpt.save(2, trainable=params, opt_state=opt_state, host_state={"iteration": 2})
        ckpt.wait()
        assert ckpt.all_steps() == [2]
    assert sorted(os.listdir(directory)) == ["2"]


def test_abstract_targets_follow_the_rule_table():
    mesh = sharding_lib.make_mesh({"data": 1, "fsdp": 2, "tensor": 4})
    params = {"lora": {"q_proj_a": jax.ShapeDtypeStruct((2, 3, 64, 4), jnp.float32),
                       "o_proj_b": jax.ShapeDtypeStruct((2, 3, 4, 64), jnp.bfloat16)}}
    opt = jax.eval_shape(optax.adamw(1e-3).init, params)
    targets = abstract_targets(opt, mesh)
    assert targets[0].count.sharding.spec == jax.sharding.PartitionSpec()
    assert targets[0].mu["lora"]["q_proj_a"].sharding.spec == jax.sharding.PartitionSpec(None, None, "fsdp", None)
    assert targets[0].nu["lora"]["o_proj_b"].sharding.spec == jax.sharding.PartitionSpec(None, None, None, "fsdp")
    assert targets[0].nu["lora"]["o_proj_b"].dtype == jnp.bfloat16
    with pytest.raises(sharding_lib.UnmatchedParameterError, match="mystery"):
        abstract_targets({"mystery": jax.ShapeDtypeStruct((4,), jnp.float32)}, mesh)
    given = abstract_targets(params, shardings=jax.tree.map(lambda _: jax.sharding.SingleDeviceSharding(jax.devices()[0]), params))
    assert given["lora"]["q_proj_a"].sharding.device_set == {jax.devices()[0]}


def test_restore_from_missing_or_empty_directory_names_it(tmp_path):
    missing = tmp_path / "no_such_dir"
    with RunCheckpointer(missing, create=False) as ckpt:
        assert ckpt.latest_step() is None and ckpt.all_steps() == []
        with pytest.raises(FileNotFoundError, match="no_such_dir"):
            ckpt.restore(trainable_target={}, opt_state_target={})
    with RunCheckpointer(tmp_path / "empty") as ckpt:
        with pytest.raises(FileNotFoundError, match="empty"):
            ckpt.restore(trainable_target={}, opt_state_target={})


def test_mismatched_targets_name_the_key(tmp_path):
    params = nnx.state(TinyTrainable(0), LoraParam)
    params, opt_state = one_adamw_step(params)
    with RunCheckpointer(tmp_path / "ckpt", async_save=False) as ckpt:
        ckpt.save(1, trainable=params, opt_state=opt_state, host_state={})
        with pytest.raises(FileNotFoundError, match="step 5"):
            ckpt.restore(5, trainable_target=targets_like(params), opt_state_target=targets_like(opt_state))
        bad = targets_like(params)
        bad["a32"].set_value(jax.ShapeDtypeStruct((3, 8, 5), jnp.float32, sharding=bad["a32"].get_value().sharding))
        with pytest.raises(CheckpointMismatchError, match=r"trainable/a32/value has shape .*\(3, 8, 4\).*\(3, 8, 5\)"):
            ckpt.restore(trainable_target=bad, opt_state_target=targets_like(opt_state))
        bad_opt = targets_like(opt_state)
        bad_opt[0].mu["b16"].set_value(jax.ShapeDtypeStruct((3, 4, 8), jnp.float32,
                                                             sharding=bad_opt[0].mu["b16"].get_value().sharding))
        with pytest.raises(CheckpointMismatchError, match="opt_state/0/mu/b16/value has dtype bfloat16"):
            ckpt.restore(trainable_target=targets_like(params), opt_state_target=bad_opt)
        t = targets_like(params)
        extra = nnx.State({"a32": t["a32"], "c": t["b16"]})
        with pytest.raises(CheckpointMismatchError, match=r"target only: \[.trainable/c/value.\].*checkpoint only: \[.trainable/b16/value.\]"):
            ckpt.restore(trainable_target=extra, opt_state_target=targets_like(opt_state))


def test_save_rejects_bad_host_state_and_old_steps(tmp_path):
    params = nnx.state(TinyTrainable(0), LoraParam)
    params, opt_state = one_adamw_step(params)
    with RunCheckpointer(tmp_path / "ckpt") as ckpt:
        with pytest.raises(TypeError, match=r"host_state\['reputations'\] has a non-string key 0"):
            ckpt.save(1, trainable=params, opt_state=opt_state, host_state={"reputations": {0: 1.0}})
        with pytest.raises(TypeError, match=r"host_state\['mu'\] is a ndarray"):
            ckpt.save(1, trainable=params, opt_state=opt_state, host_state={"mu": np.zeros(2)})
        ckpt.save(3, trainable=params, opt_state=opt_state, host_state={})
        with pytest.raises(ValueError, match="not newer"):
            ckpt.save(3, trainable=params, opt_state=opt_state, host_state={})
        ckpt.wait()
        assert ckpt.all_steps() == [3]
