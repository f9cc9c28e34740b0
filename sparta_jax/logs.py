"""What the command-line tools print: the project's own lines, and third-party warnings only.

Orbax's checkpoint manager writes a dozen absl INFO lines per save (options dumps, "Closing
_NonBlockingMetadataStore", ...), which bury the run's own progress lines. The CLIs turn absl
INFO off unless the user asks for it with absl's own `--verbosity` flag (`--verbosity=0` or
higher brings everything back); warnings and errors still show.
"""
from __future__ import annotations


def quiet_third_party(verbose: bool | None = None) -> None:
    """absl INFO lines off, unless `verbose` (argparse tools) or --verbosity was given (absl apps)."""
    from absl import flags, logging

    if verbose is None:
        verbose = "verbosity" in flags.FLAGS and flags.FLAGS["verbosity"].present
    if not verbose:
        logging.set_verbosity(logging.WARNING)
