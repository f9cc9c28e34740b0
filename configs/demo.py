"""The measured demonstration (README): a diverse SmolLM2 tribe on the bundled `mixed` task.

    python -m sparta_jax.main --config=configs/demo.py --workdir=demo

Four LoRA experts, each fine-tuned first on a different bundled task (arithmetic, word
problems, multiple choice, a mix; `python -m sparta_jax.experts`, cached after the first
run), then three Sparta iterations on `mixed` instructions. Every member is scored on the same
60 dev and 120 test items before the first iteration and after each one.
"""
import importlib.util
import os


def _sibling(name):
    """Load configs/<name>.py by path, so this file works wherever the repo sits."""
    spec = importlib.util.spec_from_file_location(f"sparta_config_{name}", os.path.join(os.path.dirname(__file__), f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def get_config():
    c = _sibling("default").get_config()
    c.iterations = 3
    c.instructions_per_iteration = 24
    c.experts.enabled = True
    c.experts.examples = 128
    c.data.task = "mixed"
    c.data.train, c.data.dev, c.data.test = 300, 60, 120
    c.evaluation.dev, c.evaluation.test = 60, 120
    c.evaluation.test_all_members = True
    return c
