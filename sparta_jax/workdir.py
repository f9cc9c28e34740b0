"""The run folder (`--workdir`): where each of a run's files lives, and how they are written and read.

    WORKDIR/config.json         the run's config          tribe.json   what the tribe started from
    WORKDIR/method.json         a baseline's one member   audit.json   a judge audit, when written there
    WORKDIR/metrics.jsonl       one line per phase        tensorboard/ the same as event files
    WORKDIR/checkpoints/N       Orbax, after iteration N  best_dev/    the best-dev iteration's weights
    WORKDIR/report/             report.html and its PNGs
    WORKDIR/iteration_NNN/      one folder per iteration (000: the initial evaluation):
        duels.jsonl, reputations.json, preferences.jsonl, judge_signal.json (Sparta);
        candidates.jsonl, pairs.json (a baseline); summary.json, evaluation.json

Writes are atomic (a temporary file renamed over the target), so a killed run never leaves half
a file; on several hosts only process 0 writes, and every process waits for it. Readers take a
missing or unreadable file as not there yet (a run still going).
"""
from __future__ import annotations

import json
import os
from typing import Any, Optional

from sparta_jax.sparta.duel_log import write_text_atomic

ITERATION_PREFIX = "iteration_"


def iteration_dir(workdir: str, t: int) -> str:
    return os.path.join(workdir, f"{ITERATION_PREFIX}{t:03d}")


def iterations_in(workdir: str) -> list[int]:
    """The iterations that have a folder in the workdir, in order."""
    if not os.path.isdir(workdir):
        return []
    return sorted(int(e[len(ITERATION_PREFIX):]) for e in os.listdir(workdir)
                  if e.startswith(ITERATION_PREFIX) and e[len(ITERATION_PREFIX):].isdigit())


def write_json(path: str, obj: Any) -> None:
    _write_on_first_process(path, json.dumps(obj, indent=1) + "\n")


def write_jsonl(path: str, rows) -> None:
    _write_on_first_process(path, "".join(json.dumps(r) + "\n" for r in rows))


def _write_on_first_process(path: str, text: str) -> None:
    import jax

    if jax.process_index() == 0:
        write_text_atomic(path, text)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f"write {os.path.basename(path)}")


def read_json(path: str) -> Optional[Any]:
    """A JSON file, or None when it is missing or unreadable (a run still going)."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def read_jsonl(path: str) -> list:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
