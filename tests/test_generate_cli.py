"""`python -m sparta_jax.generate`: the answer on stdout, clear errors otherwise."""
from __future__ import annotations

import os
import subprocess
import sys

import peft
import pytest
import torch
import transformers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.e2e


def run_cli(*args):
    env = {**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    return subprocess.run([sys.executable, "-m", "sparta_jax.generate", *args], capture_output=True, text=True,
                          env=env, timeout=300)


@pytest.mark.reference
def test_greedy_answer_on_stdout(smollm2_dir, tmp_path):
    # A PEFT adapter with B = 0 (peft's default init) leaves the function unchanged.
    base = transformers.AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32)
    peft.get_peft_model(base, peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"])).save_pretrained(
        str(tmp_path / "adapter"))
    args = ["--model", smollm2_dir, "--prompt", "What is the capital of France?", "--max-new-tokens", "16"]
    out = run_cli(*args)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout == "The capital of France is Paris.\n"
    # With the adapter: in this process (the launched command's output and status are checked above).
    from loop_runs import cli_in_process
    from sparta_jax import generate

    status, stdout, err = cli_in_process(generate.main, *args, "--adapter", tmp_path / "adapter")
    assert status == 0, err[-2000:]
    assert stdout == "The capital of France is Paris.\n"


def test_errors_are_one_line_and_nonzero(tmp_path):
    out = run_cli("--model", str(tmp_path / "missing"), "--prompt", "hi")
    assert out.returncode == 1
    assert out.stdout == ""
    assert "error: model folder" in out.stderr and "does not exist" in out.stderr
