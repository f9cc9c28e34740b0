"""Run metrics: metrics.jsonl and TensorBoard events (process 0 only), and progress lines."""
from __future__ import annotations

import json
import os
import sys
import time

import jax


class MetricsWriter:
    """Appends one JSON object per record to metrics.jsonl and mirrors scalars to TensorBoard."""

    def __init__(self, workdir: str, first_step: int = 1):
        """Records of steps >= first_step (left by a killed run that is now redoing them) are dropped."""
        self.enabled = jax.process_index() == 0
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._tb = None
        if self.enabled and os.path.exists(self.path):
            with open(self.path) as f:
                kept = [line for line in f if line.strip() and json.loads(line)["step"] < first_step]
            tmp = self.path + ".tmp"
            with open(tmp, "w") as f:
                f.writelines(kept)
            os.replace(tmp, self.path)
        if self.enabled:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def write(self, step: int, kind: str, values: dict) -> None:
        if not self.enabled:
            return
        record = {"step": step, "kind": kind, "time": time.time(), **values}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        for key, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self._tb.add_scalar(f"{kind}/{key}", value, step)
        self._tb.flush()

    def close(self):
        if self._tb is not None:
            self._tb.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def rate_text(done: int, seconds: float, unit: str) -> str:
    """"6.1/s" at one item a second or more; below that seconds per item, "28 s/step" (the
    singular of `unit`, a plural in "s"), which reads right where "0.0/s" would not."""
    if done and seconds / done > 1.0:
        per = seconds / done
        return f"{per:.1f} s/{unit[:-1]}" if per < 10 else f"{per:.0f} s/{unit[:-1]}"
    return f"{done / max(seconds, 1e-9):.1f}/s"


class Progress:
    """`phase: done/total (rate/s, ETA)` lines on stderr, at most one every `every` seconds."""

    def __init__(self, phase: str, total: int, unit: str, every: float = 5.0):
        self.phase, self.total, self.unit, self.every = phase, total, unit, every
        self.done = 0
        self.start = self.last = time.perf_counter()
        self.enabled = jax.process_index() == 0

    def __call__(self, n: int) -> None:
        self.done += n
        now = time.perf_counter()
        if self.enabled and (now - self.last >= self.every or self.done >= self.total):
            self.last = now
            elapsed = max(now - self.start, 1e-9)
            eta = (self.total - self.done) * elapsed / self.done if self.done else float("inf")
            print(f"  {self.phase}: {self.done}/{self.total} {self.unit} ({rate_text(self.done, elapsed, self.unit)}, "
                  f"ETA {eta:.0f}s)", file=sys.stderr, flush=True)

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start
