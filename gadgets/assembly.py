"""Acquisitions -> per-slice k-space arrays: line placement and buffering (pure numpy; no
sockets, no network). The layout of what comes out is :class:`gadgets.slices.SliceData`'s.

Rules, in the order a line meets them:

* noise scans (``ACQ_IS_NOISE_MEASUREMENT``) feed the noise covariance; the prewhitening matrix
  ``W = L^-1`` (``cov = L L^H``, Cholesky) is applied to each slice when it is assembled;
* navigator, phase-correction, RT/HP-feedback, dummy and surface-coil scans are skipped;
* a line goes to row ``e1 - centre_e1 + H//2`` (``centre_e1`` from ``encodingLimits``), so
  partial Fourier leaves zero rows; readout samples go to ``centre_sample -> enc_x//2`` in the
  encoded readout grid (asymmetric echo zero-filled);
* ``ACQ_IS_PARALLEL_CALIBRATION`` lines feed only the calibration k-space (coil maps), lines
  flagged ``..._AND_IMAGING`` (and ordinary lines) feed both;
* the frame index is ``idx.phase`` or ``idx.repetition`` (``"auto"``: whichever the header's
  encoding limits say varies), the slice index ``idx.slice``;
* a slice is complete on ``ACQ_LAST_IN_SLICE`` in its last frame (by the header limits) or on
  ``ACQ_LAST_IN_MEASUREMENT``; :meth:`AcquisitionBuffer.flush` completes the rest.

Memory is bounded before anything is allocated: a line that arrives again for the same frame,
row and kind replaces the earlier one (with ``average_repeats``: is averaged into it); a slice
whose grid ``C*T*H*W`` would exceed ``max_matrix_elements`` (checked on every line, so a large
frame index cannot grow it later) or that collects more than ``max_lines_per_slice`` distinct
lines fails with the reason and its lines are released; all pending slices together hold at
most ``2 * max_matrix_elements`` samples; noise scans are folded into a ``C x C`` sum as they
arrive.

A completed slice's lines are finished (calibration, centre check, prewhitening, oversampling
removal, mask) by :func:`gadgets.slices.finish_slice`, the step Gadgetron's ReconData buffers
go through too (:mod:`gadgets.recon_data`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import ismrmrd
import numpy as np

from gadgets.chain_config import (  # the chain's limits, defined once
    DEFAULT_MAX_LINES_PER_SLICE,
    DEFAULT_MAX_MATRIX_ELEMENTS,
)
from gadgets.encoding import geometry_from_header
from gadgets.kspace_prep import prewhitening_matrix
from gadgets.slices import PlacedLines, SliceData, SliceFailure, finish_slice

if TYPE_CHECKING:
    from ismrmrd.xsd import ismrmrdHeader

log = logging.getLogger(__name__)

# Lines that hold no image data, by ISMRMRD flag (1-based bit numbers), with the names the
# "no images" message counts them under.
SKIPPED_FLAGS = {
    ismrmrd.ACQ_IS_NAVIGATION_DATA: "navigator",
    ismrmrd.ACQ_IS_PHASECORR_DATA: "phase correction",
    ismrmrd.ACQ_IS_HPFEEDBACK_DATA: "HP feedback",
    ismrmrd.ACQ_IS_DUMMYSCAN_DATA: "dummy scan",
    ismrmrd.ACQ_IS_RTFEEDBACK_DATA: "RT feedback",
    ismrmrd.ACQ_IS_SURFACECOILCORRECTIONSCAN_DATA: "surface coil correction",
}


def flag_set(flags: int, bit: int) -> bool:
    """True when ISMRMRD flag ``bit`` (1-based) is set in ``flags``."""
    return bool(int(flags) & (1 << (bit - 1)))


@dataclass
class _SliceBuffer:
    channels: int | None = None
    samples: int | None = None
    # (frame, row, for_image) -> (frame, row, offset, data, for_image); a repeat replaces it
    # (or is averaged into it)
    lines: dict = field(default_factory=dict)
    repeats: dict = field(default_factory=dict)  # key -> lines averaged (average_repeats)
    references: dict = field(default_factory=dict)  # frame -> (distance to centre, header)
    error: str | None = None
    elements: int = 0  # samples held in ``lines``


class AcquisitionBuffer:
    """Collects acquisitions per slice and emits :class:`SliceData` when a slice completes.

    Parameters
    ----------
    header
        Parsed ISMRMRD header.
    frame_dimension
        ``"phase"``, ``"repetition"`` or ``"auto"``.
    max_matrix_elements
        Refuse a slice whose ``C*T*H*W`` (encoded readout) exceeds this, before allocating.
    max_lines_per_slice
        Refuse a slice that collects more distinct lines than this.
    noise_covariance
        ``(C, C)`` covariance of an earlier noise measurement, used for prewhitening only when
        the stream brings no noise scans of its own.
    average_repeats
        ``False`` (streaming): a repeated line replaces the earlier one. ``True`` (fully
        sampled training files, :mod:`training.loaders`): repeats, e.g. several ``average``
        counters, are averaged in place.
    """

    def __init__(
        self,
        header: ismrmrdHeader,
        frame_dimension: str = "auto",
        max_matrix_elements: int = DEFAULT_MAX_MATRIX_ELEMENTS,
        max_lines_per_slice: int = DEFAULT_MAX_LINES_PER_SLICE,
        noise_covariance: np.ndarray | None = None,
        average_repeats: bool = False,
    ) -> None:
        if max_matrix_elements <= 0 or max_lines_per_slice <= 0:
            raise ValueError("max_matrix_elements and max_lines_per_slice must be positive")
        self.geometry = geometry_from_header(header, frame_dimension)
        self.max_matrix_elements = int(max_matrix_elements)
        self.max_lines_per_slice = int(max_lines_per_slice)
        # every pending slice together: a stream cannot spread unbounded data over many slices
        self.max_buffered_elements = 2 * self.max_matrix_elements
        self.buffered_elements = 0
        self.noise_scans = 0
        self.noise_dwell_time_us = 0.0  # sample time of the noise scans (0: unknown)
        self._noise_sum: np.ndarray | None = None  # sum of d d^H over noise samples
        self._noise_samples = 0
        self._noise_error: str | None = None
        self.whitening: np.ndarray | None = None
        # A noise covariance from an earlier measurement (the header's noise dependency),
        # used only when this stream brings no noise scans of its own.
        self._prior_noise = noise_covariance
        self.average_repeats = average_repeats
        self.skipped: dict[str, int] = {}
        self._slices: dict[int, _SliceBuffer] = {}

    # -- ingest --------------------------------------------------------------------------
    def add(self, acquisition: ismrmrd.Acquisition) -> list[SliceData | SliceFailure]:
        """Add one ``ismrmrd.Acquisition``; returns the slices it completed (often none)."""
        # ``getHead()`` deep-copies the header (~60 us); read the live one, copy only what is kept
        head = getattr(acquisition, "_head", None)
        if head is None:
            head = acquisition.getHead() if hasattr(acquisition, "getHead") else acquisition
        return self.add_line(head, acquisition.data)

    def add_line(
        self, head: ismrmrd.AcquisitionHeader, data: np.ndarray
    ) -> list[SliceData | SliceFailure]:
        """Add one line given its ``ismrmrd.AcquisitionHeader`` and ``(C, S)`` samples."""
        flags = int(head.flags)
        if flag_set(flags, ismrmrd.ACQ_IS_NOISE_MEASUREMENT):
            self._add_noise(np.asarray(data))
            if not self.noise_dwell_time_us:
                self.noise_dwell_time_us = float(getattr(head, "sample_time_us", 0.0) or 0.0)
            return []
        for bit, name in SKIPPED_FLAGS.items():
            if flag_set(flags, bit):
                self.skipped[name] = self.skipped.get(name, 0) + 1
                return []
        geo = self.geometry
        slice_index = int(head.idx.slice)
        buf = self._slices.setdefault(slice_index, _SliceBuffer())
        if buf.error is None:
            buf.error = self._check_line(head, data, buf)
        if buf.error is None:
            buf.error = self._store(head, data, buf, flags)
        if buf.error is not None and buf.lines:  # a failed slice holds no data
            self._release(buf)
        frame = int(getattr(head.idx, geo.frame_dimension))
        last_frame = geo.n_frames is None or frame >= geo.n_frames - 1
        if flag_set(flags, ismrmrd.ACQ_LAST_IN_MEASUREMENT):
            return self.flush()
        if flag_set(flags, ismrmrd.ACQ_LAST_IN_SLICE) and last_frame:
            return [self._finish(slice_index)]
        return []

    def _check_line(
        self, head: ismrmrd.AcquisitionHeader, data: np.ndarray, buf: _SliceBuffer
    ) -> str | None:
        geo = self.geometry
        channels, samples = int(head.active_channels), int(head.number_of_samples)
        where = f"slice {int(head.idx.slice)}, line e1={int(head.idx.kspace_encode_step_1)}"
        if data.shape != (channels, samples):
            return f"{where}: data shape {data.shape} != header ({channels}, {samples})"
        # every line: a large frame index grows the grid as much as a large header does
        frame = int(getattr(head.idx, geo.frame_dimension))
        frames = max(geo.n_frames or 1, frame + 1)
        elements = channels * frames * geo.enc_y * max(geo.enc_x, samples)
        if elements > self.max_matrix_elements:
            return (
                f"{where}: matrix {channels}x{frames}x{geo.enc_y}x{max(geo.enc_x, samples)} = "
                f"{elements} elements exceeds max_matrix_elements={self.max_matrix_elements}"
            )
        if buf.channels is None:
            if geo.channels is not None and channels != geo.channels:
                log.warning("%s: %d channels, header says %d", where, channels, geo.channels)
            buf.channels, buf.samples = channels, samples
        elif channels != buf.channels:
            return f"{where}: {channels} coils, earlier lines of this slice had {buf.channels}"
        elif samples != buf.samples:
            return f"{where}: {samples} samples, earlier lines of this slice had {buf.samples}"
        if samples > geo.enc_x:
            return f"{where}: {samples} samples exceed the encoded readout of {geo.enc_x}"
        row = int(head.idx.kspace_encode_step_1) - geo.centre_e1 + geo.enc_y // 2
        if not 0 <= row < geo.enc_y:
            return f"{where}: maps to row {row}, outside the encoded matrix of {geo.enc_y} lines"
        if not np.isfinite(data).all():
            return f"{where}: NaN or inf samples"
        return None

    def _store(
        self, head: ismrmrd.AcquisitionHeader, data: np.ndarray, buf: _SliceBuffer, flags: int
    ) -> str | None:
        """Keep one checked line; returns the reason when a limit refuses it."""
        geo = self.geometry
        frame = int(getattr(head.idx, geo.frame_dimension))
        e1 = int(head.idx.kspace_encode_step_1)
        row = e1 - geo.centre_e1 + geo.enc_y // 2
        offset = geo.enc_x // 2 - int(head.center_sample)
        offset = min(max(offset, 0), geo.enc_x - data.shape[1])
        calib_only = flag_set(flags, ismrmrd.ACQ_IS_PARALLEL_CALIBRATION) and not flag_set(
            flags, ismrmrd.ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING
        )
        key = (frame, row, not calib_only)
        earlier = buf.lines.get(key)
        added = data.size - (earlier[3].size if earlier is not None else 0)
        where = f"slice {int(head.idx.slice)}"
        if earlier is None and len(buf.lines) >= self.max_lines_per_slice:
            return (
                f"{where}: more than max_lines_per_slice={self.max_lines_per_slice} distinct "
                "lines without the slice ending"
            )
        if self.buffered_elements + added > self.max_buffered_elements:
            return (
                f"{where}: pending slices would hold more than {self.max_buffered_elements} "
                "samples (2 x max_matrix_elements) without a slice ending"
            )
        data = np.asarray(data, np.complex64)
        if self.average_repeats and earlier is not None:
            n = buf.repeats[key] = buf.repeats.get(key, 1) + 1
            data = earlier[3] + (data - earlier[3]) / n  # running mean: no growth per repeat
        buf.lines[key] = (frame, row, offset, data, not calib_only)
        buf.elements += added
        self.buffered_elements += added
        distance = abs(e1 - geo.centre_e1) + (geo.enc_y if calib_only else 0)
        best = buf.references.get(frame)
        if best is None or distance < best[0]:
            buf.references[frame] = (distance, _copy_header(head))
        return None

    def _release(self, buf: _SliceBuffer) -> None:
        self.buffered_elements -= buf.elements
        buf.elements = 0
        buf.lines.clear()
        buf.repeats.clear()
        buf.references.clear()

    def _add_noise(self, data: np.ndarray) -> None:
        """Fold one noise scan ``(C, S)`` into the covariance sum (memory ``C x C``)."""
        self.noise_scans += 1
        self.whitening = None
        if self._noise_error is not None:
            return
        if data.ndim != 2 or not np.isfinite(data).all():
            self._noise_error = f"noise scan {self.noise_scans} is not finite (C, S) samples"
            return
        d = data.astype(np.complex128)
        if self._noise_sum is not None and self._noise_sum.shape[0] != d.shape[0]:
            self._noise_error = (
                f"noise scans with {d.shape[0]} and {self._noise_sum.shape[0]} coils"
            )
            return
        gram = d @ d.conj().T
        self._noise_sum = gram if self._noise_sum is None else self._noise_sum + gram
        self._noise_samples += d.shape[1]

    @property
    def has_noise(self) -> bool:
        """True when noise scans arrived (even if they turned out unusable)."""
        return self.noise_scans > 0

    def noise_covariance(self) -> np.ndarray | None:
        """``(C, C)`` sample covariance of this stream's noise scans; ``None`` without any.

        Raises
        ------
        ValueError
            The noise scans were unusable (not finite, coil counts that disagree).
        """
        if self._noise_error is not None:
            raise ValueError(self._noise_error)
        if self._noise_sum is None:
            return None
        return self._noise_sum / max(self._noise_samples - 1, 1)

    def _whitening(self) -> np.ndarray | None:
        try:
            covariance = self.noise_covariance() if self.has_noise else self._prior_noise
            if covariance is None:
                raise ValueError("no noise scans to estimate a noise covariance from")
            return prewhitening_matrix(covariance)
        except ValueError as exc:
            log.warning("noise prewhitening disabled: %s", exc)
            self._noise_error = str(exc)
            return None

    # -- completion ----------------------------------------------------------------------
    def flush(self) -> list[SliceData | SliceFailure]:
        """Complete every buffered slice (end of stream)."""
        return list(self.iter_flush())

    def iter_flush(self) -> Iterator[SliceData | SliceFailure]:
        """Complete the buffered slices one at a time (only one assembled slice in memory)."""
        while self._slices:
            yield self._finish(min(self._slices))

    def _finish(self, slice_index: int) -> SliceData | SliceFailure:
        buf = self._slices.pop(slice_index)
        try:
            if buf.error is not None:
                raise ValueError(buf.error)
            return self._assemble(slice_index, buf)
        except ValueError as exc:
            return SliceFailure(slice_index, str(exc))
        except MemoryError:
            return SliceFailure(slice_index, "not enough memory to assemble the slice")
        except Exception as exc:  # one slice's failure of any kind stays with that slice
            return SliceFailure(slice_index, f"{type(exc).__name__}: {exc}")
        finally:
            self._release(buf)

    def _assemble(self, slice_index: int, buf: _SliceBuffer) -> SliceData:
        geo = self.geometry
        if not buf.lines or buf.channels is None:  # the first stored line sets the channels
            raise ValueError(f"slice {slice_index}: no imaging data")
        stored = list(buf.lines.values())
        image_frames = [ln[0] for ln in stored if ln[4]]
        if not image_frames:
            raise ValueError(f"slice {slice_index}: only calibration lines, no imaging data")
        n_frames = max(max(image_frames) + 1, geo.n_frames or 1)
        c, h, w = buf.channels, geo.enc_y, geo.enc_x
        if c * n_frames * h * w > self.max_matrix_elements:
            raise ValueError(
                f"slice {slice_index}: {c}x{n_frames}x{h}x{w} exceeds max_matrix_elements"
            )
        n = len(stored)
        lines = np.zeros((c, n, w), np.complex64)
        line_sampled = np.zeros((n, w), bool)
        for i, (_, _, offset, data, _) in enumerate(stored):
            lines[:, i, offset : offset + data.shape[1]] = data
            line_sampled[i, offset : offset + data.shape[1]] = True
        placed = PlacedLines(
            lines=lines,
            frames=np.fromiter((ln[0] for ln in stored), np.intp, n),
            rows=np.fromiter((ln[1] for ln in stored), np.intp, n),
            sampled=line_sampled,
            for_image=np.fromiter((ln[4] for ln in stored), bool, n),
            n_frames=n_frames,
            n_rows=h,
            centre_e1=geo.centre_e1,
        )
        reference = [buf.references.get(t, (0, None))[1] for t in range(n_frames)]
        return finish_slice(placed, geo, slice_index, reference, self._slice_whitening)

    def _slice_whitening(self) -> np.ndarray | None:
        """The prewhitening matrix, estimated when the first slice that passed its checks
        needs it (noise scans arrive before the imaging lines) and kept for the rest."""
        has_noise = self.has_noise or self._prior_noise is not None
        if has_noise and self.whitening is None and self._noise_error is None:
            self.whitening = self._whitening()
        return self.whitening


def assemble(
    header: ismrmrdHeader, acquisitions: Iterable[ismrmrd.Acquisition]
) -> tuple[list[SliceData | SliceFailure], np.ndarray | None]:
    """Every slice of a whole acquisition stream, as the chain assembles it with its defaults.

    Returns
    -------
    slices, whitening
        The slices in completion order and the prewhitening matrix estimated from the stream's
        noise scans (``None`` without them).
    """
    buffer = AcquisitionBuffer(header)
    slices = [s for acquisition in acquisitions for s in buffer.add(acquisition)]
    return slices + buffer.flush(), buffer.whitening


def _copy_header(head: ismrmrd.AcquisitionHeader) -> ismrmrd.AcquisitionHeader:
    """An independent copy of an ``ismrmrd.AcquisitionHeader`` (ctypes struct) or object."""
    cls = type(head)
    if hasattr(cls, "from_buffer_copy"):
        return cls.from_buffer_copy(head)
    return head
