"""The paper's tribe on one H100: ten Qwen2.5-7B-Instruct LoRA experts sharing one base.

    XLA_FLAGS=--xla_gpu_enable_triton_gemm=false python -m sparta_jax.main \
        --config=configs/gpu_h100.py --workdir=/scratch/run --config.tribe.base=/models/Qwen2.5-7B-Instruct
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
    c = _sibling("tpu_v4").get_config()
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 1, 1, 1
    c.generation.batch_size = 64
    c.judge.batch_size = 128
    c.dpo.pairs_per_step = 4
    c.distributed.initialize = False
    return c
