"""NIfTI-1 magnitudes with the scanner geometry (RAS affine) and the frame interval."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from gadgets.exporters.geometry import LPS_TO_RAS, stack_affine_lps
from gadgets.exporters.stacks import slice_stacks, volume
from gadgets.exporters.timing import frame_timing, rr_interval_ms

if TYPE_CHECKING:
    import ismrmrd
    from ismrmrd.xsd import ismrmrdHeader


@dataclass(frozen=True)
class NiftiSummary:
    """What :func:`write_nifti` wrote: array shape, voxel sizes (mm), frame interval (ms)."""

    shape: tuple[int, ...]
    voxel_mm: tuple[float, float, float]
    interval_ms: float | None
    timing_source: str


def write_nifti(
    images: Sequence[ismrmrd.Image], path: str | Path, header: ismrmrdHeader | None = None
) -> NiftiSummary:
    """NIfTI-1 magnitudes ``(x, y, z, t)`` = (readout column, phase row, slice, frame).

    The affine maps voxels to RAS mm (:func:`stack_affine_lps` with x and y negated), written
    as both qform and sform with code 1 (scanner). ``pixdim[4]`` is the frame interval in
    seconds (``xyzt_units`` mm + s) when :func:`frame_timing` knows it; otherwise it is 0 with
    time unit "unknown", and ``descrip`` says so.

    Raises
    ------
    ValueError
        Slices with different frame counts or matrices.
    """
    import nibabel as nib
    import numpy as np

    stacks = slice_stacks(images)
    data = volume(stacks).transpose(3, 2, 0, 1)  # (S, T, H, W) -> (W, H, S, T)
    affine = np.array(LPS_TO_RAS) @ stack_affine_lps(stacks)
    timing = frame_timing(stacks[0].images, rr_interval_ms(header))
    image = nib.Nifti1Image(np.ascontiguousarray(data), affine)
    hdr = image.header
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    vx, vy, vz = (float(v) for v in np.linalg.norm(affine[:3, :3], axis=0))
    voxel = (vx, vy, vz)
    dt_s = timing.interval_ms / 1000 if timing.interval_ms else 0.0
    hdr.set_zooms((*voxel, dt_s))
    hdr.set_xyzt_units("mm", "sec" if dt_s else "unknown")
    if timing.times_ms is not None:
        hdr["toffset"] = timing.times_ms[0] / 1000
    what = (
        f"frame interval {timing.interval_ms:.1f} ms ({timing.source})"
        if timing.interval_ms
        else f"frame interval unknown ({timing.source})"
    )
    hdr["descrip"] = f"PASSNet magnitudes; {what}"[:79].encode()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, str(path))
    return NiftiSummary(tuple(data.shape), voxel, timing.interval_ms, timing.source)
