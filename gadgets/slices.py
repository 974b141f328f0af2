"""One slice ready for reconstruction, and the one finishing step that makes it.

Both ingest paths end here: :class:`gadgets.assembly.AcquisitionBuffer` (acquisitions, line
by line) and :func:`gadgets.recon_data.slices_from_recon_data` (Gadgetron's ReconData
buffers). Each hands :func:`finish_slice` the slice's lines placed on the encoded grid and
gets back a :class:`SliceData`, so the conventions below hold for every transport:

* the calibration k-space is the time average of every sampled line (calibration-only lines
  included), per ``(row, readout sample)``;
* the k-space centre (row ``H//2``, readout sample ``W//2``) must have been sampled, or coil
  maps cannot be estimated;
* noise prewhitening (``W = L^-1``) is applied to the lines and the calibration;
* readout oversampling is removed to the recon matrix, and the mask follows the sampled readout
  positions onto the cropped grid (:func:`gadgets.kspace_prep.readout_mask`);
* the calibration region is the contiguous run of sampled rows through the centre.

Layout (see docs/design.md): k-space ``(C, T, H, W)`` complex64, centred, ``H`` = phase
encode, ``W`` = readout after oversampling removal; mask ``(T, H, W)`` float32 0/1.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from gadgets.encoding import Geometry
from gadgets.kspace_prep import central_run, readout_mask, remove_readout_oversampling

log = logging.getLogger(__name__)


@dataclass
class SliceData:
    """One slice ready for reconstruction.

    Attributes
    ----------
    kspace
        ``(C, T, H, W)`` complex64 image data (calibration-only lines excluded).
    mask
        ``(T, H, W)`` float32, 1 where a sample arrived.
    calibration
        ``(C, H, W)`` complex64 time average of everything sampled (ACS included), for coil maps.
    reference
        One acquisition header per frame (``ismrmrd.AcquisitionHeader``; ``None`` for a frame
        with no data) for the image geometry and time stamps.
    slice_index
        ``idx.slice``.
    field_of_view
        reconSpace field of view (mm), ``(x, y, z)``.
    recon_matrix
        reconSpace ``(x, y)``: images are cropped to ``(y, x)`` = ``(H', W')``.
    frame_dimension
        ``"phase"`` or ``"repetition"``.
    """

    kspace: np.ndarray
    mask: np.ndarray
    calibration: np.ndarray
    reference: list
    slice_index: int
    field_of_view: tuple[float, float, float]
    recon_matrix: tuple[int, int]
    frame_dimension: str = "phase"
    calib_lines: int = 0


@dataclass
class SliceFailure:
    """A slice that could not be assembled, with the reason."""

    slice_index: int
    message: str


@dataclass
class PlacedLines:
    """One slice's lines on the encoded grid: what an ingest path hands :func:`finish_slice`.

    Attributes
    ----------
    lines
        ``(C, N, W)`` complex64, one readout line per ``N`` on the encoded readout grid
        (zeros where the line holds no sample).
    frames, rows
        ``(N,)`` frame and row of each line; row ``H//2`` is the k-space centre.
    sampled
        ``(N, W)`` bool, the readout positions each line sampled.
    for_image
        ``(N,)`` bool, ``False`` for calibration-only lines (coil maps only).
    n_frames, n_rows
        The grid's ``T`` and ``H``.
    centre_e1
        The E1 counter of row ``H//2``, for the message when the centre is missing.
    """

    lines: np.ndarray
    frames: np.ndarray
    rows: np.ndarray
    sampled: np.ndarray
    for_image: np.ndarray
    n_frames: int
    n_rows: int
    centre_e1: int


def finish_slice(
    placed: PlacedLines,
    geometry: Geometry,
    slice_index: int,
    reference: list,
    whitening: Callable[[], np.ndarray | None] | None = None,
    extra_calibration: tuple[np.ndarray, np.ndarray] | None = None,
) -> SliceData:
    """Placed lines -> :class:`SliceData` by the conventions in the module docstring.

    All work runs on the stack of lines ``(C, N, W)``, much smaller than the ``(C, T, H, W)``
    grid at any acceleration and laid out so that whitening, the readout FFTs and the final
    placement all run on contiguous memory.

    Parameters
    ----------
    placed
        The slice's lines.
    geometry
        The header's geometry (recon matrix, field of view, frame counter).
    slice_index
        ``idx.slice``, also for messages.
    reference
        One acquisition header per frame (or ``None``).
    whitening
        Gives the ``(C, C)`` prewhitening matrix or ``None``; called only once the slice passed
        its checks, so a slice that fails them does not estimate it. ``None``: no whitening
        (noise adjusted upstream, as Gadgetron's chains do before ReconData).
    extra_calibration
        ``(sum (C, H, W), count (H, W))`` of calibration data kept apart from the lines
        (ReconData's ``ref`` buffer), added to the time average.

    Raises
    ------
    ValueError
        The k-space centre was never sampled.
    """
    lines, rows, line_sampled = placed.lines, placed.rows, placed.sampled
    c, n, w = lines.shape
    h = placed.n_rows
    calib_sum = np.zeros((h, c, w), np.complex64)
    np.add.at(calib_sum, rows, lines.transpose(1, 0, 2))
    calib_count = np.zeros((h, w), np.float32)
    np.add.at(calib_count, rows, line_sampled)
    total = calib_sum.transpose(1, 0, 2)
    if extra_calibration is not None:
        total = total + extra_calibration[0]
        calib_count = calib_count + extra_calibration[1]
    if calib_count[h // 2, w // 2] == 0:
        raise ValueError(
            f"slice {slice_index}: the k-space centre line (e1={placed.centre_e1}) was never "
            "acquired; coil maps cannot be estimated"
        )
    calibration = (total / np.maximum(calib_count, 1)).astype(np.complex64)
    matrix = whitening() if whitening is not None else None
    if matrix is not None and matrix.shape[0] != c:
        log.warning(
            "slice %d: %d coils but the noise covariance has %d; not prewhitened",
            slice_index, c, matrix.shape[0],
        )  # fmt: skip
    elif matrix is not None:
        # one 2-D matrix product per slice (a per-line product runs one threaded BLAS
        # call per line, which stalls for seconds when the cores are busy)
        lines = (matrix @ lines.reshape(c, -1)).reshape(c, n, w)
        calibration = (matrix @ calibration.reshape(c, -1)).reshape(c, h, w)
    out_w = min(geometry.recon_x, w)
    lines = remove_readout_oversampling(lines, out_w)
    calibration = remove_readout_oversampling(calibration, out_w)
    image = np.flatnonzero(placed.for_image)
    frames, image_rows = placed.frames[image], rows[image]
    kspace = np.zeros((c, placed.n_frames, h, out_w), np.complex64)
    kspace[:, frames, image_rows] = lines[:, image]
    sampled = np.zeros((placed.n_frames, h, out_w), bool)
    np.logical_or.at(sampled, (frames, image_rows), readout_mask(line_sampled[image], out_w))
    return SliceData(
        kspace=kspace,
        mask=sampled.astype(np.float32),
        calibration=calibration.astype(np.complex64),
        reference=reference,
        slice_index=slice_index,
        field_of_view=geometry.fov,
        recon_matrix=(out_w, min(geometry.recon_y, h)),
        frame_dimension=geometry.frame_dimension,
        calib_lines=central_run(calib_count.max(axis=1) > 0),
    )
