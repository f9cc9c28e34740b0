"""Run configs are Python files with `get_config()` (ml_collections `--config=`), loaded by path:
a config that builds on another (configs/tiny.py on configs/default.py, a user's file on
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
