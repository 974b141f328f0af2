"""Acquisitions -> per-slice k-space arrays (pure numpy; no sockets, no network).

Layout of everything produced here (see docs/design.md):
k-space ``(C, T, H, W)`` complex64, centred (DC at ``H//2, W//2``), ``H`` = phase encode
(ISMRMRD E1), ``W`` = readout after oversampling removal; mask ``(T, H, W)`` float32 0/1.

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

Readout oversampling is removed per slice in one FFT: the encoded readout (``enc_x``) is
transformed to image space, the central ``recon_x`` columns kept and transformed back.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import ismrmrd
import numpy as np

from gadgets.chain_config import (  # the chain's option values and limits, defined once
    DEFAULT_MAX_LINES_PER_SLICE,
    DEFAULT_MAX_MATRIX_ELEMENTS,
    FRAME_DIMENSIONS,
)

if TYPE_CHECKING:
    from gadgetron.types import ReconData
    from ismrmrd.xsd import encodingLimitsType, ismrmrdHeader

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


# ----------------------------------------------------------------------------- header geometry
@dataclass(frozen=True)
class Geometry:
    """What the ISMRMRD header says about the first encoding.

    ``enc_x``/``enc_y``: encoded matrix; ``recon_x``/``recon_y``: recon matrix; ``centre_e1``:
    E1 index of the k-space centre; ``n_frames``/``n_slices``: from the encoding limits
    (``None`` when the header does not say); ``fov``: reconSpace field of view (mm).
    """

    enc_x: int
    enc_y: int
    recon_x: int
    recon_y: int
    centre_e1: int
    frame_dimension: str
    n_frames: int | None
    n_slices: int | None
    fov: tuple[float, float, float]
    channels: int | None


def _limit_count(limits: encodingLimitsType | None, name: str) -> int | None:
    lim = getattr(limits, name, None) if limits is not None else None
    if lim is None or lim.maximum is None:
        return None
    return int(lim.maximum) - int(lim.minimum or 0) + 1


def resolve_frame_dimension(header: ismrmrdHeader, choice: str = "auto") -> str:
    """The acquisition counter that holds the frames.

    ``"auto"``: phase if its encoding limit has more than one value, else repetition if that
    has, else phase. A stated ``"phase"`` or ``"repetition"`` is kept unless the header says
    that counter has a single value while the other has several: a chain written for gated
    cine (``BucketToBufferGadget N_dimension=phase``) then still reconstructs a real-time
    series as one cine instead of one single-frame image per repetition.
    """
    if choice not in FRAME_DIMENSIONS:
        raise ValueError(f"frame_dimension must be one of {FRAME_DIMENSIONS}, got {choice!r}")
    limits = header.encoding[0].encodingLimits
    counts = {name: _limit_count(limits, name) or 1 for name in ("phase", "repetition")}
    if choice != "auto":
        other = "repetition" if choice == "phase" else "phase"
        if counts[choice] == 1 and counts[other] > 1:
            log.info(
                "frame_dimension %s has one value in the header and %s has %d: frames follow %s",
                choice, other, counts[other], other,
            )  # fmt: skip
            return other
        return choice
    if counts["phase"] > 1:
        return "phase"
    if counts["repetition"] > 1:
        return "repetition"
    return "phase"


def geometry_from_header(header: ismrmrdHeader, frame_dimension: str = "auto") -> Geometry:
    """Read matrix sizes, k-space centre, frame/slice counts and FOV from a parsed header."""
    enc = header.encoding[0]
    es, rs = enc.encodedSpace, enc.reconSpace or enc.encodedSpace
    enc_x, enc_y = int(es.matrixSize.x), int(es.matrixSize.y)
    recon_x = min(int(rs.matrixSize.x), enc_x)
    recon_y = min(int(rs.matrixSize.y), enc_y)
    limits = enc.encodingLimits
    e1 = getattr(limits, "kspace_encoding_step_1", None) if limits is not None else None
    centre = int(e1.center) if e1 is not None and e1.center is not None else enc_y // 2
    dim = resolve_frame_dimension(header, frame_dimension)
    fov = rs.fieldOfView_mm
    system = header.acquisitionSystemInformation
    channels = getattr(system, "receiverChannels", None) if system is not None else None
    return Geometry(
        enc_x=enc_x,
        enc_y=enc_y,
        recon_x=recon_x,
        recon_y=recon_y,
        centre_e1=centre,
        frame_dimension=dim,
        n_frames=_limit_count(limits, dim),
        n_slices=_limit_count(limits, "slice"),
        fov=(float(fov.x), float(fov.y), float(fov.z)),
        channels=int(channels) if channels else None,
    )


# ------------------------------------------------------------------------------ noise / readout
def noise_covariance(noise_lines: list[np.ndarray]) -> np.ndarray:
    """Sample covariance ``(C, C)`` of noise scans, each ``(C, S)`` complex."""
    if not noise_lines:
        raise ValueError("no noise scans to estimate a noise covariance from")
    samples = np.concatenate([np.asarray(n, dtype=np.complex128) for n in noise_lines], axis=1)
    return (samples @ samples.conj().T) / max(samples.shape[1] - 1, 1)


def prewhitening_matrix(covariance: np.ndarray) -> np.ndarray:
    """``W = L^-1`` with ``cov = L L^H``: ``W @ data`` has identity noise covariance.

    Raises
    ------
    ValueError
        If the covariance is not Hermitian positive definite (dead or duplicated channels).
    """
    cov = np.asarray(covariance, dtype=np.complex128)
    cov = 0.5 * (cov + cov.conj().T)
    try:
        chol = np.linalg.cholesky(cov)
    except np.linalg.LinAlgError as exc:
        raise ValueError(f"noise covariance is not positive definite: {exc}") from exc
    return np.linalg.inv(chol).astype(np.complex64)


def remove_readout_oversampling(kspace: np.ndarray, n_out: int) -> np.ndarray:
    """Keep the central ``n_out`` image columns of centred k-space along the last axis.

    Cropping the image field of view keeps the k-space extent and widens the sample spacing,
    which is what the scanner's 2x readout oversampling needs undone.
    """
    n_in = kspace.shape[-1]
    if n_out == n_in:
        return kspace
    if n_out > n_in:
        raise ValueError(f"cannot crop readout of {n_in} samples to {n_out}")
    # Orthonormal transforms keep the image pixel values: ifft2c of the result equals the
    # central crop of ifft2c of the input.
    img = np.fft.fftshift(
        np.fft.ifft(np.fft.ifftshift(kspace, axes=-1), axis=-1, norm="ortho"), axes=-1
    )
    start = n_in // 2 - n_out // 2
    img = img[..., start : start + n_out]
    out = np.fft.fftshift(
        np.fft.fft(np.fft.ifftshift(img, axes=-1), axis=-1, norm="ortho"), axes=-1
    )
    return out.astype(np.complex64)


def readout_mask(sampled: np.ndarray, n_out: int) -> np.ndarray:
    """Map a boolean readout sampling pattern on the encoded grid to the cropped grid.

    Cropping keeps the k-space extent, so output column ``j`` sits at encoded position
    ``(j - n_out//2) * n_in / n_out + n_in//2``.
    """
    n_in = sampled.shape[-1]
    pos = np.round((np.arange(n_out) - n_out // 2) * n_in / n_out + n_in // 2).astype(int)
    return sampled[..., np.clip(pos, 0, n_in - 1)]


# ------------------------------------------------------------------------------------ outputs
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
        # All work is done on the stack of lines (C, N, enc_x), much smaller than the
        # (C, T, H, enc_x) grid at any acceleration and laid out so that whitening, the
        # readout FFTs and the final placement all run on contiguous memory.
        n = len(stored)
        frames = np.fromiter((ln[0] for ln in stored), np.intp, n)
        rows = np.fromiter((ln[1] for ln in stored), np.intp, n)
        for_image = np.fromiter((ln[4] for ln in stored), bool, n)
        lines = np.zeros((c, n, w), np.complex64)
        line_sampled = np.zeros((n, w), bool)
        for i, (_, _, offset, data, _) in enumerate(stored):
            lines[:, i, offset : offset + data.shape[1]] = data
            line_sampled[i, offset : offset + data.shape[1]] = True
        calib_sum = np.zeros((h, c, w), np.complex64)
        np.add.at(calib_sum, rows, lines.transpose(1, 0, 2))
        calib_count = np.zeros((h, w), np.float32)
        np.add.at(calib_count, rows, line_sampled)
        if calib_count[h // 2, w // 2] == 0:
            raise ValueError(
                f"slice {slice_index}: the k-space centre line (e1={geo.centre_e1}) was never "
                "acquired; coil maps cannot be estimated"
            )
        calibration = calib_sum.transpose(1, 0, 2) / np.maximum(calib_count, 1)
        has_noise = self.has_noise or self._prior_noise is not None
        if has_noise and self.whitening is None and self._noise_error is None:
            self.whitening = self._whitening()
        if self.whitening is not None and self.whitening.shape[0] != c:
            log.warning(
                "slice %d: %d coils but the noise covariance has %d; not prewhitened",
                slice_index, c, self.whitening.shape[0],
            )  # fmt: skip
        elif self.whitening is not None:
            # one 2-D matrix product per slice (a per-line product runs one threaded BLAS
            # call per line, which stalls for seconds when the cores are busy)
            lines = (self.whitening @ lines.reshape(c, -1)).reshape(c, n, w)
            calibration = (self.whitening @ calibration.reshape(c, -1)).reshape(c, h, w)
        out_w = geo.recon_x
        lines = remove_readout_oversampling(lines, out_w)
        calibration = remove_readout_oversampling(calibration, out_w)
        image = np.flatnonzero(for_image)
        kspace = np.zeros((c, n_frames, h, out_w), np.complex64)
        kspace[:, frames[image], rows[image]] = lines[:, image]
        sampled = np.zeros((n_frames, h, out_w), bool)
        line_mask = readout_mask(line_sampled[image], out_w)
        np.logical_or.at(sampled, (frames[image], rows[image]), line_mask)
        mask = sampled.astype(np.float32)
        calib_rows = calib_count.max(axis=1) > 0
        return SliceData(
            kspace=kspace,
            mask=mask,
            calibration=calibration.astype(np.complex64),
            reference=[buf.references.get(t, (0, None))[1] for t in range(n_frames)],
            slice_index=slice_index,
            field_of_view=geo.fov,
            recon_matrix=(geo.recon_x, geo.recon_y),
            frame_dimension=geo.frame_dimension,
            calib_lines=central_run(calib_rows),
        )


def _copy_header(head: ismrmrd.AcquisitionHeader) -> ismrmrd.AcquisitionHeader:
    """An independent copy of an ``ismrmrd.AcquisitionHeader`` (ctypes struct) or object."""
    cls = type(head)
    if hasattr(cls, "from_buffer_copy"):
        return cls.from_buffer_copy(head)
    return head


def central_run(rows: np.ndarray) -> int:
    """Length of the contiguous run of ``True`` through the centre index ``len//2``."""
    c = len(rows) // 2
    if not rows[c]:
        return 0
    lo, hi = c, c
    while lo > 0 and rows[lo - 1]:
        lo -= 1
    while hi < len(rows) - 1 and rows[hi + 1]:
        hi += 1
    return hi - lo + 1


# ------------------------------------------------------------------------- Gadgetron ReconData
def slices_from_recon_data(
    recon_data: ReconData, header: ismrmrdHeader
) -> list[SliceData | SliceFailure]:
    """Convert a ``gadgetron.types.ReconData`` (from BucketToBufferGadget) to slices.

    Each bit's buffer ``data`` is ``(RO, E1, E2, CHA, N, S, LOC)``; frames are taken from
    ``N`` (or ``S`` when ``N`` is 1), slices from ``LOC``; ``E2`` must be 1 (2-D imaging).
    The mask is where lines are non-zero; the optional ``ref`` buffer (calibration) is averaged
    with the image data into the calibration k-space. The E1 centre of the buffer
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
        for z in range(loc):
            slice_index = z
            try:
                heads = np.asarray(buffer.headers).reshape(e1, e2, n, s, loc)
                slice_index = int(_first_header(heads[..., z]).idx.slice)
                if e2 != 1:
                    raise ValueError(f"slice {slice_index}: 3-D buffer (E2={e2}) not supported")
                # (RO, E1, CHA, N, S) -> (C, T, H, RO)
                vol = data[:, :, 0, :, :, :, z].reshape(ro, e1, c, n * s)
                kspace = np.ascontiguousarray(vol.transpose(2, 3, 1, 0)).astype(np.complex64)
                if not np.isfinite(kspace).all():
                    raise ValueError(f"slice {slice_index}: NaN or inf samples")
                calib, count = frame_sum(kspace)
                if bit.ref is not None:
                    ref = np.asarray(bit.ref.data)[:, :, 0, :, :, :, z]
                    ref = ref.reshape(ref.shape[0], ref.shape[1], c, -1).transpose(2, 3, 1, 0)
                    if ref.shape[2:] == kspace.shape[2:]:
                        calib = calib + ref.sum(axis=1)
                        count = count + (np.abs(ref).sum(axis=0) > 0).sum(axis=0)
                calibration = (calib / np.maximum(count, 1)).astype(np.complex64)
                shift = e1 // 2 - int(buffer.sampling.sampling_limits[1].center)
                kspace = np.roll(kspace, shift, axis=2)
                calibration = np.roll(calibration, shift, axis=1)
                count = np.roll(count, shift, axis=0)
                if count[e1 // 2].max() == 0:
                    raise ValueError(
                        f"slice {slice_index}: the k-space centre line was never acquired; "
                        "coil maps cannot be estimated"
                    )
                out_w = min(geo.recon_x, ro)
                kspace = remove_readout_oversampling(kspace, out_w)
                calibration = remove_readout_oversampling(calibration, out_w)
                mask = (np.abs(kspace).sum(axis=0) > 0).astype(np.float32)
                refs = [_first_header(heads[:, :, i // s, i % s, z]) for i in range(n * s)]
                out.append(
                    SliceData(
                        kspace=kspace,
                        mask=mask,
                        calibration=calibration,
                        reference=refs,
                        slice_index=slice_index,
                        field_of_view=geo.fov,
                        recon_matrix=(out_w, min(geo.recon_y, e1)),
                        frame_dimension=geo.frame_dimension,
                        calib_lines=central_run(count.max(axis=1) > 0),
                    )
                )
            except ValueError as exc:
                out.append(SliceFailure(slice_index, str(exc)))
    return out


def frame_sum(kspace: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(C, T, H, W)`` k-space -> its sum over frames ``(C, H, W)`` and, per ``(H, W)``
    location, how many frames sampled it: their ratio is the calibration time average."""
    return kspace.sum(axis=1), (np.abs(kspace).sum(axis=0) > 0).sum(axis=0).astype(np.float32)


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
