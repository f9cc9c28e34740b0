"""Run configs are Python files with `get_config()` (ml_collections `--config=`), loaded by path:
a config that builds on another (configs/tiny.py on configs/base.py, a user's file on
configs/tiny.py) uses these instead of importing it, so it works wherever the repo sits."""
from __future__ import annotations

import importlib.util
import os


def load_config(path: str, arg: str | None = None):
    """`get_config()` of the config file at `path`; `get_config(arg)` for a parameterised one
    (ml_collections' `--config=path:arg`, e.g. configs/sweeps/diversity.py:2x5)."""
    if arg is None and ":" in os.path.basename(path):
        path, arg = path.rsplit(":", 1)
    name = "sparta_config_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config() if arg is None else module.get_config(arg)


def sibling_config(this_file: str, name: str, arg: str | None = None):
    """`get_config()` of `<name>.py` in the same folder as `this_file` (pass `__file__`)."""
    return load_config(os.path.join(os.path.dirname(os.path.abspath(this_file)), f"{name}.py"), arg)


def _config_path(argv, default: str | None) -> str | None:
    """The --config file named on a command line (absl accepts --config=P and --config P)."""
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
    return default


def _dotted_keys(node, prefix: str = "") -> list[str]:
    keys = []
    for k, v in node.items():
        keys.append(prefix + k)
        if hasattr(v, "items") and not isinstance(v, str):
            keys += _dotted_keys(v, f"{prefix}{k}.")
    return keys


def unknown_override(argv, default_config: str | None = None) -> str | None:
    """A one-line message for the first --config.KEY=VALUE override whose KEY the config does not
    have (ml_collections would raise a bare AttributeError with a traceback), or None."""
    import difflib

    path = _config_path(argv, default_config)
    if not path or not os.path.exists(path.rsplit(":", 1)[0] if ":" in os.path.basename(path) else path):
        return None  # absl reports a missing config file itself
    config = load_config(path)
    known = _dotted_keys(config)
    for arg in argv:
        if not arg.startswith("--config."):
            continue
        key = arg[len("--config."):].split("=", 1)[0]
        node, missing = config, None
        for depth, part in enumerate(key.split(".")):
            if not hasattr(node, "items") or isinstance(node, str) or part not in node:
                missing = ".".join(key.split(".")[: depth + 1])
                break
            node = node[part]
        if missing is not None:
            near = difflib.get_close_matches(key, known, n=3, cutoff=0.5)
            hint = f"; nearest known keys: {', '.join(near)}" if near else ""
            return f"unknown config key {key!r} in {path}{hint}"
    return None


def parse_flags_checked(argv, default_config: str | None = None):
    """absl's flag parser, after checking the --config.KEY overrides: an unknown key exits with
    status 2 and one line naming it, before anything is built or written."""
    import sys

    from absl import app

    problem = unknown_override(argv, default_config)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)
    return app.parse_flags_with_usage(argv)
