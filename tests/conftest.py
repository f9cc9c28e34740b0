"""Test setup: 8 fake CPU devices, so sharding tests run on any laptop.

XLA reads the flag when the backend starts, so it is set before anything imports jax.
"""
import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402  (after the XLA flags above)


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory):
    """The embedded SmolLM2-135M-Instruct as a HF folder, built once per test session."""
    from sparta_jax.models.embedded import materialize_smollm2

    return materialize_smollm2(str(tmp_path_factory.mktemp("sparta_cache")))


@pytest.fixture(scope="session")
def gemma_dir(tmp_path_factory):
    """The embedded Gemma 3 270M as a HF folder, built once per test session."""
    from sparta_jax.models.embedded_gemma import materialize_gemma3_270m

    return materialize_gemma3_270m(str(tmp_path_factory.mktemp("gemma_cache")))


@pytest.fixture(scope="session")
def compile_cache(tmp_path_factory):
    """One persistent XLA compilation cache for every run the tests launch as a subprocess: a
    program compiled by one test module (the tiny tribes share their shapes) is read by the next."""
    return str(tmp_path_factory.mktemp("jax_cache"))
