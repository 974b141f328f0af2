"""training.heldout_phantom: the independent evaluation family's coil model."""

from __future__ import annotations

import numpy as np
import pytest

from training.heldout_phantom import birdcage_maps


@pytest.mark.parametrize("seed", range(4))
def test_birdcage_maps_are_normalised_and_smooth_over_the_field_of_view(seed):
    """A receive field has no phase jump: where the object lies (radius 0.9 of the field of
    view; the elements sit on a ring of radius 1.1-1.4), neighbouring pixels differ by a
    small phase in every coil."""
    n = 64
    maps = birdcage_maps(8, n, n, np.random.default_rng(seed)).astype(np.complex128)
    np.testing.assert_allclose((np.abs(maps) ** 2).sum(0), 1.0, atol=1e-5)
    y, x = np.meshgrid(np.linspace(-1, 1, n), np.linspace(-1, 1, n), indexing="ij")
    inside = np.hypot(y, x) <= 0.9
    steps = (
        np.angle(maps[:, 1:] * maps[:, :-1].conj())[:, inside[1:] & inside[:-1]],
        np.angle(maps[:, :, 1:] * maps[:, :, :-1].conj())[:, inside[:, 1:] & inside[:, :-1]],
    )
    assert max(float(np.abs(step).max()) for step in steps) < 0.3
