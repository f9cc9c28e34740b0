"""The paper's tribe on one H100: ten Qwen2.5-7B-Instruct LoRA experts sharing one base.

    XLA_FLAGS=--xla_gpu_enable_triton_gemm=false python -m sparta_jax.main \
        --config=configs/gpu_h100.py --workdir=/scratch/run --config.tribe.base=/models/Qwen2.5-7B-Instruct
"""
from sparta_jax.config_files import sibling_config


def get_config():
    c = sibling_config(__file__, "tpu_v4")
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 1, 1, 1
    c.generation.batch_size = 64
    c.judge.batch_size = 128
    c.dpo.pairs_per_step = 4
    c.distributed.initialize = False
    # Layer weights sliced once per generate call, not in each step: the TPU compiler fuses a
    # step's slices into its matmuls, but CPU XLA copies them before each, and XLA:GPU has not
    # been measured (benchmarks/gpu_session.sh times both). The copy costs 12.8 GiB of the chip
    # for the call: aot's generate is 38.4 GiB with it, 25.6 GiB with
    # --config.sampler.slice_layers=per_step.
    c.sampler.slice_layers = "per_call"
    # One chip holds the whole step's activations: recompute each layer (the TPU form keeps the
    # projections' outputs, 16.7 GiB a chip of temporaries when spread over v4-32's 16 chips).
    c.dpo.remat = "full"
    return c
