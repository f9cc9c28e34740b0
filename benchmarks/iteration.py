"""Seconds per phase of Sparta iterations, from a real run of the main loop.

    python benchmarks/iteration.py --config=configs/default.py --workdir=/tmp/bench_iter [--config.KEY=VALUE ...]
    # one iteration of the paper's tribe on one H100, random weights of the Qwen2.5-7B shape, 100 duels:
    python benchmarks/iteration.py --config=configs/gpu_h100.py --workdir=/scratch/bench_iter \
        --config.tribe.base=random:qwen2.5-7b --config.iterations=1 --config.instructions_per_iteration=100 \
        --bundled_task=mixed

Runs `sparta_jax.train.run` (the same program as `python -m sparta_jax.main`, compilation
included) in a fresh workdir, then prints a Markdown table of each iteration's phases from its
summary.json (answers, judging, rating, DPO: reference log-probs and steps) and evaluation.json,
and the whole run's wall time.
`--bundled_task=TASK` swaps in a bundled task (no download) for configs that name a dataset. `--append FILE` also appends the table to FILE.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time

if any(a.startswith("--config=") and "gpu" in a for a in sys.argv):
    os.environ.setdefault("XLA_FLAGS", "--xla_gpu_enable_triton_gemm=false")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from absl import app, flags  # noqa: E402
from ml_collections import ConfigDict, config_flags  # noqa: E402
from common import heading, machine, publish  # noqa: E402
from sparta_jax.workdir import iteration_dir  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", "configs/default.py", "Run config.")
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/sparta_bench_iteration", "Fresh workdir (emptied first).")
_APPEND = flags.DEFINE_string("append", "", "Also append the table to this file.")
_TASK = flags.DEFINE_string("bundled_task", "", "Use this bundled task as the data source (no download).")
PHASES = ("answers", "judging", "rating", "dpo")


def with_bundled_data(config, task: str):
    if task:
        config.data = ConfigDict(dict(kind="bundled", task=task, train=max(1000, config.instructions_per_iteration),
                                      dev=100, test=200, seed=0))
    return config


def table(workdir: str, config, where: str, wall: float) -> str:
    rows = []
    for t in range(1, config.iterations + 1):
        folder = iteration_dir(workdir, t)
        with open(os.path.join(folder, "summary.json")) as f:
            s = json.load(f)
        ev_path = os.path.join(folder, "evaluation.json")
        ev = json.load(open(ev_path)).get("seconds") if os.path.exists(ev_path) else None
        p = s["phase_seconds"]
        rows.append(f"| {t} | {s['duels']} | {s['pairs_trained']} | "
                    + " | ".join(f"{p[k]:.1f}" for k in PHASES)
                    + f" | {s['seconds']:.1f} | {'-' if ev is None else f'{ev:.1f}'} |")
    head = heading("Iteration phases", where) + [
            "| iteration | duels | pairs trained | answers s | judging s | rating s | DPO s | iteration s | evaluation s |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    last = os.path.join(iteration_dir(workdir, config.iterations), "summary.json")
    with open(last) as f:
        s = json.load(f)
    after = (f"; last iteration's DPO on its pairs after training: loss {s['dpo_loss_after']:.3f}, reward accuracy "
             f"{s['dpo_reward_accuracy_after']:.2f}" if s.get("dpo_loss_after") is not None else "")
    return "\n".join(head + rows + ["", f"Whole run (model load, compilation, every evaluation and checkpoint "
                                         f"included): {wall:.0f} s{after}."])


def main(argv):
    import jax

    from sparta_jax import train
    from sparta_jax.logs import quiet_third_party

    quiet_third_party()  # as `sparta_jax.main`: third-party INFO lines only with --verbosity
    config = with_bundled_data(_CONFIG.value, _TASK.value)
    workdir = _WORKDIR.value
    shutil.rmtree(workdir, ignore_errors=True)
    started = time.perf_counter()
    train.run(config, workdir)
    wall = time.perf_counter() - started
    command = "python benchmarks/iteration.py " + " ".join(a for a in sys.argv[1:] if not a.startswith("--append"))
    with open(os.path.join(workdir, "tribe.json")) as f:
        members = len(json.load(f)["names"])
    kind = config.tribe.get("kind", "lora")
    text = table(workdir, config, f"{machine()}, jax {jax.__version__}, base {config.tribe.base}, {members} "
                                  f"{'LoRA' if kind == 'lora' else 'full'} members, judge {config.judge.mode}, "
                                  f"command `{command}`", wall)
    publish(text, _APPEND.value)


if __name__ == "__main__":
    from sparta_jax.config_files import parse_flags_checked

    app.run(main, flags_parser=lambda argv: parse_flags_checked(argv, "configs/default.py"))
