"""The measured demonstration (README): a diverse SmolLM2 tribe on the bundled `mixed` task.

    python -m sparta_jax.main --config=configs/demo.py --workdir=demo

Four LoRA experts, each fine-tuned first on a different bundled task (arithmetic, word
problems, multiple choice, a mix; `python -m sparta_jax.experts`, cached after the first
run), then three Sparta iterations on `mixed` instructions. Every member is scored on the same
60 dev and 120 test items before the first iteration and after each one.
"""
from sparta_jax.config_files import sibling_config


def get_config():
    c = sibling_config(__file__, "default")
    c.iterations = 3
    c.instructions_per_iteration = 24
    c.experts.enabled = True
    c.experts.examples = 128
    c.data.task = "mixed"
    c.data.train, c.data.dev, c.data.test = 300, 60, 120
    c.evaluation.dev, c.evaluation.test = 60, 120
    c.evaluation.test_all_members = True
    return c
