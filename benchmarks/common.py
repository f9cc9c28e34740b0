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


def case_args(description: str):
    """The flags every benchmark takes: --case cpu|gpu, --append FILE, --smoke (the gpu case at a
    tiny shape, on any machine)."""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--case", choices=("cpu", "gpu"), required=True)
    parser.add_argument("--append", help="append the table to this Markdown file")
    parser.add_argument("--smoke", action="store_true", help="gpu case at a tiny shape, on any machine")
    return parser.parse_args()


def measured_where(script: str, args) -> str:
    """Where a table was measured: the device, jax's version and the command that made it."""
    import jax

    return (f"{machine()}, jax {jax.__version__}, command "
            f"`python benchmarks/{script} --case {args.case}{' --smoke' * args.smoke}`")


def markdown_table(title: str, where: str, columns: list[str], rows: list[list[str]]) -> str:
    """A titled, dated Markdown table: the first column left-aligned, the others right."""
    lines = heading(title, where) + ["| " + " | ".join(columns) + " |",
                                     "|" + "---|" + "---:|" * (len(columns) - 1)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def against(ours: float, reference: float | None) -> list[str]:
    """The reference's figure and ours over it ("-" for both when there is none)."""
    return [f"{reference:,.0f}", f"{ours / reference:.2f}x"] if reference else ["-", "-"]
