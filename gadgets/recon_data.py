"""Gadgetron ReconData (from BucketToBufferGadget) -> per-slice :class:`SliceData`.

The buffers come noise-adjusted and usually without readout oversampling (the shipped
``passnet_buffered`` chain runs Gadgetron's own gadgets for both); their lines are taken off
the buffer grid and finished by :func:`gadgets.slices.finish_slice`, as acquisitions are.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import ismrmrd
import numpy as np

from gadgets.encoding import geometry_from_header
from gadgets.kspace_prep import central_run
from gadgets.slices import PlacedLines, SliceData, SliceFailure, finish_slice

if TYPE_CHECKING:
    from gadgetron.types import ReconData
    from ismrmrd.xsd import ismrmrdHeader


def slices_from_recon_data(
    recon_data: ReconData, header: ismrmrdHeader
) -> list[SliceData | SliceFailure]:
    """Convert a ``gadgetron.types.ReconData`` (from BucketToBufferGadget) to slices.

    Each bit's buffer ``data`` is ``(RO, E1, E2, CHA, N, S, LOC)``; frames are taken from
    ``N`` (or ``S`` when ``N`` is 1), slices from ``LOC``; ``E2`` must be 1 (2-D imaging).
    A line is sampled where it is non-zero; the optional ``ref`` buffer (calibration) is
    averaged with the image data into the calibration k-space. The E1 centre of the buffer
    (``sampling_limits[1].center``) is moved to ``H//2``, and readout oversampling is removed
    when the buffer still has the encoded readout length.
    """
    geo = geometry_from_header(header, "auto")
    out: list[SliceData | SliceFailure] = []
    for bit in recon_data:
        buffer = bit.data
        data = np.asarray(buffer.data)
        if data.ndim != 7:
            out.append(SliceFailure(-1, f"ReconData buffer has {data.ndim} axes, expected 7"))
            continue
        ro, e1, e2, c, n, s, loc = data.shape
        centre = int(buffer.sampling.sampling_limits[1].center)
        shift = e1 // 2 - centre
        for z in range(loc):
            slice_index = z
            try:
                heads = np.asarray(buffer.headers).reshape(e1, e2, n, s, loc)
                slice_index = int(_first_header(heads[..., z]).idx.slice)
                if e2 != 1:
                    raise ValueError(f"slice {slice_index}: 3-D buffer (E2={e2}) not supported")
                kspace = np.ascontiguousarray(_frames_of(data, z, c)).astype(np.complex64)
                kspace = np.roll(kspace, shift, axis=2)
                if not np.isfinite(kspace).all():
                    raise ValueError(f"slice {slice_index}: NaN or inf samples")
                extra = None
                if bit.ref is not None:
                    ref = _frames_of(np.asarray(bit.ref.data), z, c)
                    if ref.shape[2:] == kspace.shape[2:]:
                        # integer frame counts: the time average then divides in double precision
                        count = (np.abs(ref).sum(axis=0) > 0).sum(axis=0)
                        extra = (
                            np.roll(ref.sum(axis=1), shift, axis=1),
                            np.roll(count, shift, axis=0),
                        )
                refs = [_first_header(heads[:, :, i // s, i % s, z]) for i in range(n * s)]
                out.append(
                    finish_slice(
                        _placed_lines(kspace, centre),
                        geo,
                        slice_index,
                        refs,
                        extra_calibration=extra,
                    )
                )
            except ValueError as exc:
                out.append(SliceFailure(slice_index, str(exc)))
    return out


def _frames_of(buffer: np.ndarray, z: int, channels: int) -> np.ndarray:
    """Location ``z`` of a ``(RO, E1, 1, CHA, N, S, LOC)`` buffer as a ``(C, N*S, E1, RO)``
    view."""
    vol = buffer[:, :, 0, :, :, :, z]
    return vol.reshape(vol.shape[0], vol.shape[1], channels, -1).transpose(2, 3, 1, 0)


def _placed_lines(kspace: np.ndarray, centre_e1: int) -> PlacedLines:
    """The non-zero lines of a ``(C, T, H, W)`` grid; a sample is sampled where non-zero."""
    sampled = np.abs(kspace).sum(axis=0) > 0  # (T, H, W)
    frames, rows = np.nonzero(sampled.any(axis=2))
    return PlacedLines(
        lines=kspace[:, frames, rows],
        frames=frames,
        rows=rows,
        sampled=sampled[frames, rows],
        for_image=np.ones(len(frames), bool),
        n_frames=kspace.shape[1],
        n_rows=kspace.shape[2],
        centre_e1=centre_e1,
    )


class FrameJoiner:
    """Joins the single-frame slices Gadgetron's BucketToBuffer makes of one cine.

    A ``BucketToBufferGadget`` whose ``N_dimension`` is not the counter the frames are on
    (``N_dimension=phase`` on a real-time series along ``repetition``) sends one ReconData per
    frame. The parts of a slice are held until the header's frame count arrived (or the stream
    ends) and then joined into one :class:`SliceData`, frames in counter order; the coil
    calibration is the mean of the parts' calibrations where they sampled.

    Parameters
    ----------
    header
        Parsed ISMRMRD header.
    frame_dimension
        The chain's ``frame_dimension`` (resolved against the header here).
    """

    def __init__(self, header: ismrmrdHeader, frame_dimension: str = "auto") -> None:
        self.geometry = geometry_from_header(header, frame_dimension)
        self._parts: dict[int, dict[int, SliceData]] = {}

    def add(self, item: SliceData | SliceFailure) -> list[SliceData | SliceFailure]:
        """Pass ``item`` on, or hold it as part of a cine; returns what is complete.

        A slice whose parts cannot be joined comes back as a :class:`SliceFailure`.
        """
        total = self.geometry.n_frames or 1
        if isinstance(item, SliceFailure) or total <= 1 or item.kspace.shape[1] != 1:
            return [item]
        reference = item.reference[0]
        frame = int(getattr(reference.idx, self.geometry.frame_dimension)) if reference else 0
        parts = self._parts.setdefault(item.slice_index, {})
        parts[frame] = item
        if len(parts) < total:
            return []
        return [self._join(item.slice_index)]

    def flush(self) -> list[SliceData | SliceFailure]:
        """Join what every incomplete slice has (the stream ended)."""
        return [self._join(index) for index in sorted(self._parts)]

    def _join(self, slice_index: int) -> SliceData | SliceFailure:
        parts = [p for _, p in sorted(self._parts.pop(slice_index).items())]
        if len(parts) == 1:
            return parts[0]
        first = parts[0]
        if len({(p.kspace.shape[0], *p.kspace.shape[2:]) for p in parts}) != 1:  # C, H, W
            return SliceFailure(slice_index, "its frames have different sizes and cannot be joined")
        kspace = np.concatenate([p.kspace for p in parts], axis=1)
        calibrations = np.stack([p.calibration for p in parts])
        sampled = (np.abs(calibrations).sum(axis=1, keepdims=True) > 0).astype(np.float32)
        calibration = calibrations.sum(axis=0) / np.maximum(sampled.sum(axis=0), 1)
        return dataclasses.replace(
            first,
            kspace=kspace,
            mask=np.concatenate([p.mask for p in parts], axis=0),
            calibration=calibration.astype(np.complex64),
            reference=[r for p in parts for r in p.reference],
            frame_dimension=self.geometry.frame_dimension,
            calib_lines=central_run(np.abs(calibration).sum(axis=(0, 2)) > 0),
        )


def _first_header(heads: np.ndarray) -> ismrmrd.AcquisitionHeader:
    """The first non-empty header of an object array (BucketToBuffer leaves gaps zeroed)."""
    flat = [h for h in np.asarray(heads).ravel() if h is not None]
    for h in flat:
        if int(h.number_of_samples) > 0:
            return h
    if not flat:
        raise ValueError("ReconData buffer has no acquisition headers")
    return flat[0]
