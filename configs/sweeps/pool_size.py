"""The paper's pool-size sweep (Figure 3): Sparta with N distinct SmolLM2 LoRA experts.

    for n in 4 6 8 10; do
      python -m sparta_jax.main --config=configs/sweeps/pool_size.py:$n --workdir=pool_$n
    done
    python -m sparta_jax.compare pool_4 pool_6 pool_8 pool_10

The pool is the first N of ten experts, each SFT'd on its own bundled task and sample
(each pool size builds and caches its own set); the rest is configs/demo.py (bundled
arithmetic, 64 duels per iteration, the same test items in every run), so `compare` sets the
pool sizes side by side on the same items (each run's row is its `label`).
"""
from sparta_jax.config_files import sibling_config

TASKS = ("arithmetic", "word_problems", "multiple_choice", "mixed")


def expert_pool(n: int) -> tuple[tuple[dict, ...], tuple[str, ...]]:
    """(sources, names) of the first n of ten distinct experts: the bundled tasks in turn, each
    expert its own training sample (seed)."""
    if not 1 <= n <= 10:
        raise ValueError(f"the expert pool holds 1 to 10 experts, asked for {n}")
    sources = tuple(dict(kind="bundled", task=TASKS[i % 4], train=256, dev=0, test=0, seed=300 + i) for i in range(n))
    names = tuple(f"{TASKS[i % 4]}_{i // 4}" for i in range(n))
    return sources, names


def get_config(size: str = "4"):
    c = sibling_config(__file__, "../demo")
    c.experts.enabled = True
    c.experts.sources, c.experts.names = expert_pool(int(size))
    c.label = f"Sparta, {int(size)} experts"
    return c
