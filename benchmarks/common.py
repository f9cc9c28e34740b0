"""What the benchmark scripts share: how they name the machine, and where their tables go."""
from __future__ import annotations

import datetime
import os
import platform


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine() -> str:
    """The device JAX runs on: "CPU <model>, <n> cores" or the accelerator's kind."""
    import jax

    dev = jax.devices()[0]
    if dev.platform == "cpu":
        return f"CPU {cpu_model()}, {os.cpu_count()} cores"
    return f"{dev.device_kind} ({dev.platform})"


def heading(title: str, where: str) -> list[str]:
    """A table's first lines: its title, then the date and where it was measured."""
    return [f"### {title}", "", f"{datetime.date.today().isoformat()}, {where}", ""]


def publish(text: str, append: str | None) -> None:
    """Prints a table, and appends it to the Markdown file `append` when given."""
    print(text)
    if append:
        with open(append, "a", encoding="utf-8") as f:
            f.write("\n" + text + "\n")
