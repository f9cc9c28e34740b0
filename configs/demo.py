"""The first measured demonstration (docs/results.md, "Measured demonstration: does the loop
move a model?").

Three arms on the same tribe, data and seeds (four SmolLM2-135M-Instruct LoRA members, bundled
arithmetic, 2 iterations x 64 duels, the best member scored on the same 400 held-out items):

    python -m sparta_jax.audit --config=configs/demo.py --out=demo_sparta/audit.json
    python -m sparta_jax.main --config=configs/demo.py --workdir=demo_sparta
    python -m sparta_jax.main --config=configs/demo.py --workdir=demo_verifier --config.judge.mode=verifier
    python -m sparta_jax.compare demo_sparta demo_verifier

The first arm is Sparta with the members' own `logits` judges; the second is the verifier
control (each judge's score is the task's answer check: a control, not Sparta); the "no
training" reference is the iteration-0 evaluation both runs share. `compare` gives McNemar's
exact test of the best member before against after on the same test items.

DPO: lr 1e-3, 2 epochs, 4 pairs per step, 10% warmup, the settings with which right pairs moved
a fresh-adapter tribe of this model (docs/results.md, "Earlier measurements"). Diverse SFT'd
starting experts are one flag away:
--config.experts.enabled=True (four adapters, one per bundled task; `python -m sparta_jax.experts`).
"""
from sparta_jax.config_files import sibling_config


def get_config():
    c = sibling_config(__file__, "base")
    c.iterations = 2
    c.instructions_per_iteration = 64
    c.data.task = "arithmetic"
    c.data.train, c.data.dev, c.data.test = 300, 60, 400
    c.evaluation.dev, c.evaluation.test = 60, 400
    c.experts.examples = 128  # used with --config.experts.enabled=True
    c.dpo.learning_rate = 1e-3
    c.dpo.pairs_per_step = 4
    c.dpo.epochs = 2
    c.dpo.warmup_ratio = 0.1
    return c
