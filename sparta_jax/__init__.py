"""Sparta Alignment in JAX: a tribe of language models that aligns itself through duels."""

__version__ = "0.1.0"
