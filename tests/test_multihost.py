"""Two local CPU processes under jax.distributed load, run and export like one."""
from __future__ import annotations

import os
import socket
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from sparta_jax.models.loading import from_pretrained
from sparta_jax.models.safetensors_io import CheckpointShards
from tiny_models import save_hf_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_equal_one(tmp_path):
    save_hf_model("qwen2", tmp_path / "model")
    port = str(free_port())
    worker = os.path.join(REPO, "tests", "multihost_worker.py")
    env = {**os.environ, "PYTHONPATH": REPO}
    env.pop("XLA_FLAGS", None)
    procs = [subprocess.Popen([sys.executable, worker, str(i), port, str(tmp_path / "model"), str(tmp_path)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(2)]
    outputs = [p.communicate(timeout=240)[0] for p in procs]
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-3000:]

    single, _ = from_pretrained(str(tmp_path / "model"), dtype=jnp.float32, load_tokenizer=False)
    ids = np.arange(24).reshape(4, 6) % 100 + 1
    np.testing.assert_allclose(np.load(tmp_path / "logits.npy"), np.asarray(single(jnp.asarray(ids))), atol=1e-5)

    exported = CheckpointShards(str(tmp_path / "exported"))
    source = CheckpointShards(str(tmp_path / "model"))
    assert set(exported.keys()) == set(source.keys())
    for name in source.keys():
        np.testing.assert_array_equal(exported.get(name), source.get(name))
