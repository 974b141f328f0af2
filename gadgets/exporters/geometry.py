"""Voxel-to-patient affines (LPS millimetres) from ISMRMRD image headers.

ISMRMRD image headers and DICOM both use the patient coordinate system LPS (+x towards the
patient's left, +y posterior, +z head). A frame is stored ``(rows, columns) = (H, W)`` with
columns along ``read_dir`` and rows along ``phase_dir`` (gadgets/images.py). With the centred
FFT used throughout (docs/design.md) the image ``position`` (centre of the field of view) is
the pixel at row ``H//2``, column ``W//2``, so voxel (column ``i``, row ``j``) lies at
``position + (i - W//2) dx read_dir + (j - H//2) dy phase_dir`` with ``dx = fov_x / W``,
``dy = fov_y / H`` (:func:`voxel_to_lps`). For an even matrix this puts the first pixel at
``position - fov_x/2 read_dir - fov_y/2 phase_dir``. NIfTI uses RAS: x and y change sign
(:data:`LPS_TO_RAS`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import ismrmrd
    import numpy as np

    from gadgets.exporters.stacks import SliceStack

log = logging.getLogger(__name__)

LPS_TO_RAS = ((-1.0, 0.0, 0.0, 0.0), (0.0, -1.0, 0.0, 0.0), (0.0, 0.0, 1.0, 0.0), (0, 0, 0, 1.0))


def vector(values: Iterable[float]) -> np.ndarray:
    """A header direction or position (``read_dir``, ``position``, ...) as float64 numbers."""
    import numpy as np

    return np.array([float(v) for v in values], dtype=np.float64)


def pixel_spacing(image: ismrmrd.Image) -> tuple[float, float]:
    """``(dx, dy)`` in mm: field of view over matrix along the readout and phase axes."""
    h, w = image.data.shape[-2:]
    return float(image.field_of_view[0]) / w, float(image.field_of_view[1]) / h


def voxel_to_lps(image: ismrmrd.Image) -> np.ndarray:
    """4x4 affine from (column ``i``, row ``j``, slice ``k``, 1) to LPS millimetres.

    The third column is ``slice thickness * slice_dir`` (``read x phase`` when the header's
    ``slice_dir`` is zero); stacks of slices replace it with the slice-to-slice step.
    """
    import numpy as np

    h, w = image.data.shape[-2:]
    dx, dy = pixel_spacing(image)
    read, phase = vector(image.read_dir), vector(image.phase_dir)
    normal = vector(image.slice_dir)
    if not np.linalg.norm(normal) > 0:
        normal = np.cross(read, phase)
    affine = np.eye(4)
    affine[:3, 0] = dx * read
    affine[:3, 1] = dy * phase
    affine[:3, 2] = float(image.field_of_view[2]) * normal
    affine[:3, 3] = vector(image.position) - (w // 2) * dx * read - (h // 2) * dy * phase
    return affine


def stack_affine_lps(stacks: Sequence[SliceStack]) -> np.ndarray:
    """Voxel (column, row, slice) -> LPS mm for slices stacked in ``stacks`` order.

    The slice axis is the mean step between the first and the last slice's positions (one
    slice: thickness along ``slice_dir``). Unequal steps or orientations cannot be written in
    one affine; they are logged.
    """
    import numpy as np

    affine = voxel_to_lps(stacks[0].images[0])
    if len(stacks) > 1:
        centres = np.array([vector(s.images[0].position) for s in stacks])
        steps = np.diff(centres, axis=0)
        step = (centres[-1] - centres[0]) / (len(stacks) - 1)
        if not np.linalg.norm(step) > 0:
            log.warning("all slices share one position; the slice axis uses the slice thickness")
            return affine
        if np.abs(steps - step).max() > 0.01 * np.linalg.norm(step):
            log.warning("slice positions are not evenly spaced; using the mean step")
        first = stacks[0].images[0]
        for s in stacks[1:]:
            im = s.images[0]
            if not (
                np.allclose(vector(im.read_dir), vector(first.read_dir), atol=1e-4)
                and np.allclose(vector(im.phase_dir), vector(first.phase_dir), atol=1e-4)
            ):
                log.warning("slices differ in orientation; the affine uses the first slice's")
                break
        affine[:3, 2] = step
    return affine
