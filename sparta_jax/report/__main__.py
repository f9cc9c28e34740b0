"""An HTML report of a run's workdir: reputations, duels, judges, preferences, evaluation, DPO.

    python -m sparta_jax.report --workdir DIR             # prints DIR/report/report.html
    python -m sparta_jax.report --workdir DIR --markdown  # the dev/test table, as Markdown

The command line of the report package (sparta_jax/report/__init__.py says what the report holds).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

from sparta_jax.report.html import evaluation_markdown, write_report
from sparta_jax.report.load import load_run


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sparta_jax.report", description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", required=True, help="the run's workdir (python -m sparta_jax.main --workdir)")
    parser.add_argument("--markdown", action="store_true",
                        help="print the dev/test table of every evaluation as Markdown instead of writing the report")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.workdir):
        print(f"error: no such directory: {args.workdir}", file=sys.stderr)
        return 1
    if args.markdown:
        print(evaluation_markdown(load_run(args.workdir)))
        return 0
    print(write_report(args.workdir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
