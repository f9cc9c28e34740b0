"""Runs of the main loop (`python -m sparta_jax.main`) as a subprocess, for the end-to-end tests.

Shared by test_main_loop.py, test_baselines.py and test_mixed_tribe.py (the `tiny_base` fixture they
use is in conftest.py). Everything here launches a process: the tests that call it are marked `e2e`.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_CONFIG = os.path.join(REPO, "configs", "tiny.py")


# Runs whose report no test reads skip it: its plots cost a tiny run as much as an iteration.
NO_REPORT = "--config.report_every=-1"


def overrides(base):
    return [f"--config.tribe.base={base}", "--config.instructions_per_iteration=4", "--config.generation.max_new_tokens=8",
            "--config.dpo.max_length=96", "--config.dpo.max_prompt_length=80"]


def launch(workdir, extra, cache, config=TINY_CONFIG):
    env = {**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu", "JAX_COMPILATION_CACHE_DIR": cache,
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    env.pop("XLA_FLAGS", None)
    return subprocess.Popen([sys.executable, "-m", "sparta_jax.main", f"--config={config}", f"--workdir={workdir}",
                             *extra], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def run_to_end(workdir, extra, cache, config=TINY_CONFIG):
    proc = launch(workdir, extra, cache, config)
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out[-4000:]
    return out


def run_until(workdir, extra, cache, marker, config=TINY_CONFIG):
    """Start a run and SIGKILL it as soon as `marker` shows in its output."""
    proc = launch(workdir, extra, cache, config)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if marker in line:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=120)
    assert proc.returncode == -signal.SIGKILL, f"never saw {marker!r}:\n" + "".join(seen)[-4000:]


def final_state(workdir, iterations=2):
    """Trained LoRA arrays, end reputations and preference files of a finished run, on one device."""
    import jax

    from sparta_jax.checkpoints import RunCheckpointer

    with RunCheckpointer(os.path.join(workdir, "checkpoints"), create=False) as ckpt:
        assert ckpt.all_steps() == list(range(1, iterations + 1))
        targets = ckpt.saved_structure(iterations, jax.sharding.SingleDeviceSharding(jax.devices()[0]))
        trainable, _, host = ckpt.restore(iterations, trainable_target=targets[0], opt_state_target=targets[1])
    params = {k: np.asarray(v) for k, v in _flatten(trainable).items()}
    prefs = [open(os.path.join(workdir, f"iteration_00{t}", "preferences.jsonl")).read()
             for t in range(1, iterations + 1)]
    return params, host["reputations"], prefs


def _flatten(tree, prefix=""):
    if isinstance(tree, dict):
        out = {}
        for k, v in tree.items():
            out.update(_flatten(v, f"{prefix}/{k}"))
        return out
    return {prefix: tree}


def cli_in_process(main, *args):
    """A CLI's `main(ARGS)` run in this process: (exit status, stdout, stderr). A launched process
    would pay the imports and the model's start again; each CLI's launched form is tested once
    (export: whole members refused as PEFT adapters, test_main_loop.py; generate: test_generate_cli.py)."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main([str(a) for a in args])
    return status, out.getvalue(), err.getvalue()


def export_in_process(*args):
    """`python -m sparta_jax.export ARGS` in this process (cli_in_process)."""
    from sparta_jax import export

    return cli_in_process(export.main, *args)


def run_once(name, extra, cache, config=TINY_CONFIG):
    """(workdir, output) of a run to its end, made once per test session in its shared folder
    (session_folders.built_once) and read only after. `config` is a config file, or a function that
    writes one into the folder and returns its path."""
    from session_folders import built_once

    def build(folder):
        path = config(folder) if callable(config) else config
        out = run_to_end(os.path.join(folder, "run"), extra, cache, path)
        with open(os.path.join(folder, "output.txt"), "w") as f:
            f.write(out)

    folder = built_once(name, build)
    return os.path.join(folder, "run"), open(os.path.join(folder, "output.txt")).read()
