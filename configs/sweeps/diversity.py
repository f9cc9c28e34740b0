"""The paper's pool-diversity sweep (Figure 4): ten members from D distinct experts, C copies each.

    for shape in 1x10 2x5 5x2 10x1; do
      python -m sparta_jax.main --config=configs/sweeps/diversity.py:$shape --workdir=diversity_$shape
    done
    python -m sparta_jax.compare diversity_1x10 diversity_2x5 diversity_5x2 diversity_10x1

"DxC": the first D experts of configs/sweeps/pool_size.py's pool, each in C members
(`experts.copies`, named <expert>_<k>). Copies start from the same adapter and, as Sparta
trains every member on every pair, keep the same weights; they differ only in reputation and
in what they sample. 1x10 is ten copies of one expert (no diversity), 10x1 ten distinct ones.
"""
from sparta_jax.config_files import sibling_config

SHAPES = ("1x10", "2x5", "5x2", "10x1")


def get_config(shape: str = "2x5"):
    try:
        distinct, copies = (int(x) for x in shape.lower().split("x"))
    except ValueError:
        raise ValueError(f"diversity shape {shape!r}: write DxC, e.g. 2x5 (2 experts, 5 copies each)") from None
    c = sibling_config(__file__, "pool_size", str(distinct))
    c.experts.copies = copies
    c.label = f"Sparta, {distinct}x{copies} experts"
    return c
