"""When the frames of a slice were acquired, from the image headers and the ISMRMRD header.

ISMRMRD time stamps count ticks of :data:`TIME_STAMP_TICK_MS` (2.5 ms, Siemens' unit, which
Gadgetron and ``passnet simulate`` use too). :func:`frame_timing` says where frame times come
from: cardiac phases take their trigger delay from ``physiology_time_stamp[0]`` (or
``RR / frames`` when the header carries an RR interval and the stamps do not increase);
real-time frames (repetitions) take ``acquisition_time_stamp``. Otherwise the timing is unknown
and the outputs say so.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import ismrmrd
    from ismrmrd.xsd import ismrmrdHeader

TIME_STAMP_TICK_MS = 2.5


def rr_interval_ms(header: ismrmrdHeader | None) -> float | None:
    """An RR interval from the header's user parameters (``RRInterval_ms`` and alike)."""
    params = getattr(header, "userParameters", None) if header is not None else None
    if params is None:
        return None
    for entry in [*params.userParameterDouble, *params.userParameterLong]:
        key = re.sub(r"[^a-z]", "", str(entry.name).lower())
        if key.startswith("rrinterval") and float(entry.value) > 0:
            return float(entry.value)
    return None


@dataclass(frozen=True)
class FrameTiming:
    """When the frames of one slice were acquired.

    Attributes
    ----------
    times_ms
        One time per frame, or ``None`` when unknown. Cardiac phases: delay after the R wave
        (DICOM TriggerTime); real-time frames: time since the first frame.
    interval_ms
        Mean interval between frames, or ``None``.
    source
        Where the times came from, for logs and file descriptions.
    cardiac
        The frames are cardiac phases (their ``phase`` counter changes).
    """

    times_ms: tuple[float, ...] | None
    interval_ms: float | None
    source: str
    cardiac: bool


def frame_timing(images: Sequence[ismrmrd.Image], rr_ms: float | None = None) -> FrameTiming:
    """Frame times of one slice's images (in frame order); see the module docstring."""
    import numpy as np

    n = len(images)
    cardiac = n > 1 and len({int(im.phase) for im in images}) > 1
    if n < 2:
        return FrameTiming(None, None, "single frame", cardiac)
    phys = np.array([float(im.physiology_time_stamp[0]) for im in images]) * TIME_STAMP_TICK_MS
    acq = np.array([float(im.acquisition_time_stamp) for im in images]) * TIME_STAMP_TICK_MS
    times, source = None, "unknown"
    if cardiac and np.all(np.diff(phys) > 0):
        times, source = phys, "physiology time stamps"
    elif cardiac and rr_ms:
        times, source = np.arange(n) * rr_ms / n, "RR interval / frames"
    elif not cardiac and np.all(np.diff(acq) > 0):
        times, source = acq - acq[0], "acquisition time stamps"
    if times is None:
        return FrameTiming(None, None, source, cardiac)
    interval = float(times[-1] - times[0]) / (n - 1)
    return FrameTiming(tuple(float(t) for t in times), interval, source, cardiac)
