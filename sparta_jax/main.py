"""Sparta Alignment end to end.

    python -m sparta_jax.main --config=configs/default.py --workdir=/tmp/sparta [--config.KEY=VALUE ...]

Re-running the same command after a kill resumes from the last completed phase.
"""
from __future__ import annotations

import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", "configs/default.py", "Run config (a file with get_config()).")
_WORKDIR = flags.DEFINE_string("workdir", "workdir", "Where outputs, checkpoints and metrics go.")


def main(argv):
    del argv
    from sparta_jax.logs import quiet_third_party

    quiet_third_party()
    from sparta_jax.errors import SpartaError
    from sparta_jax.train import run

    try:
        run(_CONFIG.value, _WORKDIR.value)
    except (SpartaError, FileNotFoundError) as e:  # what a user can cause: one line, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    from sparta_jax.config_files import parse_flags_checked

    app.run(lambda argv: sys.exit(main(argv)),
            flags_parser=lambda argv: parse_flags_checked(argv, "configs/default.py"))
