"""The reconstruction chain shared by every transport (external gadget, server, file replay).

:func:`run_chain` consumes a stream of items, reconstructs each slice as soon as it is
complete and calls ``send`` once per image. It never raises for bad data: problems are logged,
recorded in the :class:`ChainReport`, and every other slice is still reconstructed and sent.
Only a failing ``send`` (the connection is gone) propagates.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import ismrmrd
import numpy as np

from gadgets.assembly import AcquisitionBuffer
from gadgets.chain_config import ChainParams
from gadgets.images import build_images
from gadgets.pipeline import ReconEngine, reconstruct_slice
from gadgets.recon_data import FrameJoiner, slices_from_recon_data
from gadgets.slices import SliceData, SliceFailure

if TYPE_CHECKING:
    from ismrmrd.xsd import ismrmrdHeader

__all__ = ["ChainParams", "ChainReport", "run_chain"]

log = logging.getLogger(__name__)


@dataclass
class ChainReport:
    """What :func:`run_chain` did: slice counts, error messages, per-slice timings."""

    slices_done: int = 0
    slices_failed: int = 0
    errors: list[str] = field(default_factory=list)
    timings: list[dict] = field(default_factory=list)
    images_sent: int = 0
    acquisitions: int = 0
    noise_covariance: np.ndarray | None = None  # from this stream's noise scans, if any
    noise_dwell_time_us: float = 0.0  # their sample time (0: unknown)
    stream_error: str | None = None  # why reading the input stopped early (None: it ended)


class _Chain:
    def __init__(
        self,
        header: ismrmrdHeader,
        send: Callable[[object], None],
        params: ChainParams,
        cancel: threading.Event | None = None,
        on_slice: Callable[[dict], None] | None = None,
        noise_covariance: np.ndarray | None = None,
    ) -> None:
        self.header, self.send, self.params = header, send, params
        self.cancel, self.on_slice = cancel, on_slice
        self.prior_noise = noise_covariance
        self.report = ChainReport()
        self.engine = ReconEngine(params)
        self.next_image_index = 1
        self._buffer: AcquisitionBuffer | None = None
        self._buffer_error: str | None = None
        self._joiner: FrameJoiner | None = None  # ReconData frames BucketToBuffer split

    def buffer(self) -> AcquisitionBuffer | None:
        if self._buffer is None and self._buffer_error is None:
            try:
                self._buffer = AcquisitionBuffer(
                    self.header,
                    self.params.frame_dimension,
                    self.params.max_matrix_elements,
                    self.params.max_lines_per_slice,
                    self.prior_noise,
                )
            except Exception as exc:  # any header problem: every acquisition is refused
                self._buffer_error = f"cannot use the ISMRMRD header: {exc}"
                self.error(self._buffer_error)
        return self._buffer

    def error(self, message: str) -> None:
        log.error(message)
        self.report.errors.append(message)

    def handle(self, item: object) -> None:
        if isinstance(item, ismrmrd.Acquisition):
            self.report.acquisitions += 1
            buffer = self.buffer()
            if buffer is None:
                return
            try:
                slices = buffer.add(item)
            except Exception as exc:  # MemoryError included: this line only, not the stream
                self.error(f"acquisition {self.report.acquisitions - 1} rejected: {_why(exc)}")
                return
            self.finish(slices)
        elif _is_recon_data(item):
            try:
                if self._joiner is None:
                    self._joiner = FrameJoiner(self.header, self.params.frame_dimension)
                slices = slices_from_recon_data(item, self.header)
            except Exception as exc:
                self.report.slices_failed += 1
                self.error(f"cannot read ReconData: {_why(exc)}")
                return
            self.finish([whole for part in slices for whole in self._joiner.add(part)])
        else:
            self.send(item)

    def flush(self) -> None:
        if self._joiner is not None:
            self.finish(self._joiner.flush())
        if self._buffer is not None:
            for item in self._buffer.iter_flush():  # one assembled slice in memory at a time
                self.finish([item])

    def no_images_reason(self) -> str:
        """Why a stream that produced no error produced no image either."""
        n = self.report.acquisitions
        if n == 0:
            return "no images: the stream had no acquisitions"
        buffer = self._buffer
        parts = []
        if buffer is not None and buffer.noise_scans:
            parts.append(f"{buffer.noise_scans} noise scans")
        if buffer is not None:
            parts += [f"{count} {name} lines" for name, count in sorted(buffer.skipped.items())]
        what = ", ".join(parts) if parts else "nothing to reconstruct"
        return f"no images: the stream's {n} acquisitions held no imaging data ({what})"

    def finish(self, slices: list[SliceData | SliceFailure]) -> None:
        for item in slices:
            if self.cancel is not None and self.cancel.is_set():
                index = getattr(item, "slice_index", -1)
                self.report.slices_failed += 1
                self.error(f"slice {index} not reconstructed: the server is shutting down")
                continue
            if isinstance(item, SliceFailure):
                self.report.slices_failed += 1
                self.error(f"slice {item.slice_index} failed: {item.message}")
                continue
            try:
                result = reconstruct_slice(item, self.params, self.engine)
                images = build_images(
                    result.frames,
                    item,
                    self.next_image_index,
                    self.params.image_series_index,
                    result.comment,
                )
            except Exception as exc:  # any failure of one slice must not stop the others
                self.report.slices_failed += 1
                self.error(f"slice {item.slice_index} failed: {_why(exc)}")
                continue
            if self.engine.load_error and self.engine.load_error not in self.report.errors:
                self.report.errors.append(self.engine.load_error)  # logged by the engine
            self.next_image_index += len(images)
            self.report.timings.append(result.timing)
            for image in images:  # outside the try: a failing send means the peer is gone
                self.send(image)
            self.report.images_sent += len(images)
            self.report.slices_done += 1
            if self.on_slice is not None:
                self.on_slice(result.timing)


def _why(exc: BaseException) -> str:
    if isinstance(exc, MemoryError):
        return "not enough memory (MemoryError)"
    return f"{type(exc).__name__}: {exc}" if not isinstance(exc, ValueError) else str(exc)


def _is_recon_data(item: object) -> bool:
    try:
        from gadgetron.types import ReconData
    except ImportError:  # pragma: no cover - gadgetron is a dependency
        return False
    return isinstance(item, ReconData)


def run_chain(
    header: ismrmrdHeader,
    items: Iterable[object],
    send: Callable[[object], None],
    params: ChainParams,
    cancel: threading.Event | None = None,
    on_slice: Callable[[dict], None] | None = None,
    noise_covariance: np.ndarray | None = None,
) -> ChainReport:
    """Reconstruct a stream of items and send the images.

    Parameters
    ----------
    header
        Parsed ISMRMRD header (``ismrmrd.xsd.ismrmrdHeader``).
    items
        ``ismrmrd.Acquisition`` and/or ``gadgetron.types.ReconData``; anything else is passed
        to ``send`` unchanged. Noise scans are consumed (prewhitening).
    send
        Called with each ``ismrmrd.Image`` (one per frame) as soon as its slice is done.
    params
        Chain settings.
    cancel
        When set, stop reading and fail the slices not yet reconstructed (server shutdown).
    on_slice
        Called after each reconstructed slice with its timings (``slice``, ``network_s``,
        ...): progress that tracks the slow step, not the acquisitions read.
    noise_covariance
        ``(C, C)`` noise covariance of an earlier noise measurement, for prewhitening when the
        stream brings no noise scans of its own (Gadgetron's noise dependency).

    Returns
    -------
    ChainReport
        Exceptions raised by the iterator (truncated stream, timeouts) are recorded in
        ``errors``; the slices buffered so far are reconstructed before returning. A stream
        that yields no image and no error gets a "no images: ..." entry saying why.
        ``noise_covariance`` holds the covariance of the stream's own noise scans.
    """
    chain = _Chain(header, send, params, cancel, on_slice, noise_covariance)
    iterator = iter(items)
    while cancel is None or not cancel.is_set():
        try:
            item = next(iterator)
        except StopIteration:
            break
        except Exception as exc:  # reading failed: keep what arrived, report, stop reading
            chain.report.stream_error = f"{type(exc).__name__}: {exc}"
            chain.error(f"input stream ended with an error: {chain.report.stream_error}")
            break
        chain.handle(item)
    chain.flush()
    report = chain.report
    if report.images_sent == 0 and not report.errors:
        chain.error(chain.no_images_reason())
    if chain._buffer is not None:
        if chain._buffer.skipped:
            log.info("skipped non-imaging lines: %s", chain._buffer.skipped)
        try:
            report.noise_covariance = chain._buffer.noise_covariance()
            report.noise_dwell_time_us = chain._buffer.noise_dwell_time_us
        except ValueError:
            pass  # unusable noise scans were already reported when prewhitening

    log.info(
        "chain finished: %d slices done, %d failed, %d images sent",
        report.slices_done, report.slices_failed, report.images_sent,
    )  # fmt: skip
    return report
