"""What an ISMRMRD header says about the first encoding: matrix sizes, k-space centre, the
frame counter, frame and slice counts, field of view (pure; no data).

Both ingest paths (:mod:`gadgets.assembly` for acquisitions, :mod:`gadgets.recon_data` for
Gadgetron's ReconData) and :class:`gadgets.recon_data.FrameJoiner` read the header only
through :func:`geometry_from_header`, so they agree on what a frame is.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gadgets.chain_config import FRAME_DIMENSIONS  # the chain's option values, defined once

if TYPE_CHECKING:
    from ismrmrd.xsd import encodingLimitsType, ismrmrdHeader

log = logging.getLogger(__name__)


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
