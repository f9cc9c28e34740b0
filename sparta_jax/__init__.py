"""Sparta Alignment in JAX: a tribe of language models that aligns itself through duels."""

import os

__version__ = "0.1.0"

# transformers announces "PyTorch was not found. Models won't be available ..." on import when
# torch is absent. This project never needs transformers' PyTorch models (only its tokenizers and
# configs), so the notice would only alarm. Set TRANSFORMERS_NO_ADVISORY_WARNINGS="" to see it.
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
