"""The GPU cases of benchmarks/sampler.py and benchmarks/dpo.py, run at a tiny shape on CPU
(`--case gpu --smoke`): every line the one GPU session will run, including the PyTorch
baselines and the table, runs here first. The figures themselves mean nothing at this size."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.e2e


def run_smoke(script: str) -> list[list[str]]:
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)  # one CPU device, as on a one-GPU host
    proc = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", script), "--case", "gpu", "--smoke"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"command `python benchmarks/{script} --case gpu --smoke`" in proc.stdout
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| smoke")]
    return [[c.strip() for c in line.strip("|").split("|")] for line in rows]


def number(cell: str) -> float:
    return float(cell.replace(",", ""))


def test_sampler_gpu_case_runs():
    rows = run_smoke("sampler.py")
    assert [r[0].split(" bf16, ", 1)[1] for r in rows] == [
        "batch 4, prompt 16, 16 new", "batch 4, prompt 16, 16 new, 3 LoRA r4 mixed",
        "batch 8, prompt 16, 16 new", "batch 8, prompt 16, 16 new, 3 LoRA r4 mixed",
        "batch 8, prompt 16, 16 new, 3 LoRA r4 mixed, layers sliced per step"]
    for case, ours, hf, ratio, floor in rows:
        assert number(ours) > 0
        assert "% of " in floor and number(floor.split("% of ")[1]) > 0
        if "LoRA" in case:
            assert hf == ratio == "-"
        else:  # HF generate on the same weights, and the ratio of the two (of the unrounded figures:
            # at a few tok/s, rounding to whole tok/s moves the quotient by more than its last digit)
            o, h, r = number(ours), number(hf), number(ratio.rstrip("x"))
            assert h > 0 and (o - 0.5) / (h + 0.5) - 0.01 <= r <= (o + 0.5) / (h - 0.5) + 0.01, (ours, hf, ratio)


def test_dpo_gpu_case_runs():
    rows = run_smoke("dpo.py")
    assert [r[0] for r in rows] == [
        "smoke (tiny, not a measurement) bf16, 1 LoRA r4 qkvo, 2 pairs x 32",
        "smoke (tiny, not a measurement) bf16, 3 LoRA r4 qkvo, 2 pairs x 32",
        "smoke (tiny, not a measurement), full fine-tune AdamW (bf16 compute, f32 master), 2 pairs x 32"]
    for case, ours, torch_tok_s, ratio, mfu in rows:
        assert number(ours) > 0 and mfu == "-"  # no MFU off an H100/H200
        if "3 LoRA" in case:
            assert torch_tok_s == ratio == "-"
        else:  # the PyTorch step of the same case
            assert number(torch_tok_s) > 0 and ratio.endswith("x")
