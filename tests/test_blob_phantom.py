"""training.blob_phantom: the generic second training generator."""

from __future__ import annotations

import numpy as np

from training.blob_phantom import blob_cine
from training.heldout_phantom import heldout_cine
from training.phantom import cine_phantom, draw_params


def test_reproducible_bounded_and_inside_the_field_of_view():
    cine, support, extent = blob_cine(3, 8, (64, 80))
    again, _, _ = blob_cine(3, 8, (64, 80))
    np.testing.assert_array_equal(cine, again)
    assert cine.shape == (8, 64, 80) and cine.dtype == np.complex64
    assert np.isclose(np.abs(cine).max(), 1.0)
    assert 0 < extent <= 0.95
    # the body stays inside: nothing on the border rows and columns, nothing outside support
    magnitude = np.abs(cine)
    for edge in (magnitude[:, 0], magnitude[:, -1], magnitude[:, :, 0], magnitude[:, :, -1]):
        assert edge.max() < 1e-2
    assert magnitude[:, ~support].max() < 1e-2
    assert not np.array_equal(cine, blob_cine(4, 8, (64, 80))[0])


def test_cases_move_differ_and_are_neither_other_generator():
    moving, correlations = 0, []
    for seed in range(6):
        cine = np.abs(blob_cine(seed, 12, (64, 64))[0])
        change = np.linalg.norm(cine - cine[:1], axis=(1, 2)).max() / np.linalg.norm(cine[0])
        moving += change > 0.02
        other = np.abs(blob_cine(seed + 1, 12, (64, 64))[0][0])
        correlations.append(np.corrcoef(cine[0].ravel(), other.ravel())[0, 1])
    assert moving >= 4  # most cases have objects that dilate or travel
    assert max(correlations) < 0.95  # cases differ from each other
    blobs = np.abs(blob_cine(0, 12, (64, 64))[0])
    cardiac = np.abs(cine_phantom(12, 64, 64, params=draw_params(0, frames=12, matrix=(64, 64))))
    ellipses = np.abs(heldout_cine(0, frames=12, matrix=(64, 64), n_coils=2)[0])
    for other in (cardiac, ellipses):
        assert np.corrcoef(blobs.ravel(), other.ravel())[0, 1] < 0.9
