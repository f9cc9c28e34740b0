"""Comparing trained parameters: per tensor, since Adam amplifies float noise element-wise.

Adam's first steps move every element by about lr * g / (|g| + eps), so where a gradient is
float noise the element's update is noise of size lr. Two correct implementations therefore
agree per tensor (norm of the difference), not per element.
"""
from __future__ import annotations

import numpy as np


def assert_update_close(name, got, want, before, rel_param=1e-5, rel_update=1e-3):
    """||got - want|| small against both the parameter and the update it received."""
    got, want, before = (np.asarray(x, np.float64) for x in (got, want, before))
    diff = np.linalg.norm(got - want)
    update = np.linalg.norm(want - before)
    assert update > 0, f"{name}: the reference did not change this tensor"
    assert diff <= rel_param * np.linalg.norm(want), f"{name}: |diff| {diff:.3g} vs |param| {np.linalg.norm(want):.3g}"
    assert diff <= rel_update * update, f"{name}: |diff| {diff:.3g} vs |update| {update:.3g}"
