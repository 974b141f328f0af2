"""Read fully sampled cine data sets into :class:`~training.data.CineSample` lists.

OCMR
    ISMRMRD ``.h5`` raw files (``dataset/xml`` + ``dataset/data``). All acquisitions are read
    in one h5py call; noise, navigator, phase-correction and calibration-only readouts are
    dropped; repeated ``average`` readouts are averaged; lines are placed by
    ``idx.kspace_encode_step_1`` relative to the encoding-limit centre (partial Fourier and
    asymmetric echoes zero-filled). The readout is cropped in image space to the central
    ``reconSpace.matrixSize.x`` pixels, i.e. the central half for the usual 2x oversampling
    (the predecessors' "crop readout to the central half"). One sample per slice.
CMRxRecon
    MATLAB v7.3 ``.mat`` (HDF5) with ``kspace_full`` shaped ``(t, slice, coil, ky, kx)`` as
    h5py sees it, a ``('real', 'imag')`` compound, centred. One sample per slice.

Both combine coils as ``sum_c conj(S_c) x_c`` with maps estimated from the time-averaged
k-space (ESPIRiT from :mod:`passnet_core.coilmaps`), and keep the maps in the sample.
"""

from __future__ import annotations

import logging
import warnings
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import ismrmrd
import numpy as np
import torch

from passnet_core.fft import fft2c, ifft2c
from training.data import CineSample

log = logging.getLogger(__name__)

CALIB = 24
# readouts that are not part of the image: noise, navigators, phase correction, ACS-only
_SKIP_FLAGS = (
    ismrmrd.ACQ_IS_NOISE_MEASUREMENT,
    ismrmrd.ACQ_IS_NAVIGATION_DATA,
    ismrmrd.ACQ_IS_PHASECORR_DATA,
    ismrmrd.ACQ_IS_DUMMYSCAN_DATA,
    ismrmrd.ACQ_IS_PARALLEL_CALIBRATION,
)


@dataclass
class EncodingInfo:
    """The few header values a fully sampled Cartesian cine needs."""

    readout: int  # encoded readout samples (2x recon with oversampling)
    recon_readout: int
    lines: int  # phase-encode matrix
    center_line: int


@dataclass
class FolderScan:
    """Result of :func:`scan_folder`: the samples and the files that could not be read."""

    samples: list[CineSample] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def n_skipped(self) -> int:
        return len(self.skipped)


def _text(root: ET.Element, path: str) -> str | None:
    """Text of the first element along a namespace-free ``a/b/c`` path."""
    node = root
    for tag in path.split("/"):
        node = next((c for c in node if c.tag.rsplit("}", 1)[-1] == tag), None)
        if node is None:
            return None
    return node.text


def parse_encoding(xml: str | bytes) -> EncodingInfo:
    """Matrix sizes and line centre from an ISMRMRD XML header.

    Parsed with ElementTree and namespace-agnostic, so headers the strict schema rejects
    (older files, missing ``sequenceParameters``) still load.
    """
    root = ET.fromstring(xml)
    enc = next((c for c in root if c.tag.rsplit("}", 1)[-1] == "encoding"), None)
    if enc is None:
        raise ValueError("ISMRMRD header has no <encoding> section")
    values = {
        "readout": _text(enc, "encodedSpace/matrixSize/x"),
        "recon_readout": _text(enc, "reconSpace/matrixSize/x"),
        "lines": _text(enc, "encodedSpace/matrixSize/y"),
    }
    missing = [k for k, v in values.items() if v is None]
    if missing:
        raise ValueError(f"ISMRMRD header lacks matrix sizes: {missing}")
    info = {k: int(v) for k, v in values.items()}
    max_line = _text(enc, "encodingLimits/kspace_encoding_step_1/maximum")
    center = _text(enc, "encodingLimits/kspace_encoding_step_1/center")
    # OCMR: the line count can exceed the limits (partial Fourier); the centre anchors ky
    lines = max(info["lines"], int(max_line) + 1) if max_line is not None else info["lines"]
    center_line = int(center) if center is not None else lines // 2
    return EncodingInfo(info["readout"], info["recon_readout"], lines, center_line)


def coil_combine(
    coil_images: torch.Tensor, calib: int = CALIB, method: str = "espirit"
) -> tuple[np.ndarray, np.ndarray]:
    """Combine ``(C, T, H, W)`` coil images with maps from the time-averaged k-space.

    ``method`` is passed to :func:`passnet_core.coilmaps.estimate_coil_maps` (``"espirit"`` or
    the cheaper ``"walsh"``).

    Returns
    -------
    (np.ndarray, np.ndarray)
        complex64 ``(T, H, W)`` combined image and ``(C, H, W)`` maps.
    """
    kspace_avg = fft2c(coil_images).mean(dim=1)
    calib = min(calib, min(kspace_avg.shape[-2:]) - 1)
    try:
        from passnet_core.coilmaps import estimate_coil_maps

        maps = estimate_coil_maps(kspace_avg, calib=calib, kernel=min(6, calib - 1), method=method)
    except ImportError:  # pragma: no cover - coilmaps ships with passnet_core
        low = ifft2c(kspace_avg)
        maps = low / low.abs().square().sum(0, keepdim=True).sqrt().clamp(min=1e-12)
    combined = (maps.conj()[:, None] * coil_images).sum(0)
    return combined.numpy().astype(np.complex64), maps.numpy().astype(np.complex64)


def _flag_set(flags: np.ndarray, flag: int) -> np.ndarray:
    return (flags & np.uint64(1 << (flag - 1))) != 0


def load_ocmr(path: str | Path, coil_method: str = "espirit") -> list[CineSample]:
    """Fully sampled ISMRMRD cine -> one :class:`CineSample` per slice (see module docstring).

    ``coil_method`` selects the coil map estimator (``"espirit"`` or ``"walsh"``).
    """
    path = Path(path)
    with h5py.File(path, "r") as f:
        if "dataset/xml" not in f or "dataset/data" not in f:
            raise ValueError(f"{path.name}: not an ISMRMRD file (no dataset/xml + dataset/data)")
        info = parse_encoding(f["dataset/xml"][0])
        records = f["dataset/data"][:]
    head = records["head"]
    keep = np.ones(len(records), dtype=bool)
    for flag in _SKIP_FLAGS:
        keep &= ~_flag_set(head["flags"], flag)
    if not keep.any():
        raise ValueError(f"{path.name}: no imaging readouts")
    head, records = head[keep], records[keep]
    idx = head["idx"]
    n_coils = int(head["active_channels"].max())
    n_samples = int(head["number_of_samples"].max())
    ro = max(info.readout, n_samples)
    n_slices, n_frames = int(idx["slice"].max()) + 1, int(idx["phase"].max()) + 1
    kspace = np.zeros((n_slices, n_coils, n_frames, info.lines, ro), np.complex64)
    count = np.zeros((n_slices, n_frames, info.lines), np.int32)
    line_offset = info.lines // 2 - info.center_line
    for rec, h, i in zip(records, head, idx, strict=True):
        ky = int(i["kspace_encode_step_1"]) + line_offset
        ns = int(h["number_of_samples"])
        x0 = ro // 2 - int(h["center_sample"])  # asymmetric echo: align the echo centre
        if not 0 <= ky < info.lines or x0 < 0 or x0 + ns > ro:
            raise ValueError(f"{path.name}: readout outside the encoded matrix (ky={ky})")
        data = rec["data"].view(np.complex64).reshape(int(h["active_channels"]), ns)
        s, t = int(i["slice"]), int(i["phase"])
        kspace[s, : data.shape[0], t, ky, x0 : x0 + ns] += data
        count[s, t, ky] += 1
    kspace /= np.maximum(count, 1)[:, None, :, :, None]
    sampled = count.any(axis=(0, 1)).sum()
    if sampled < 0.5 * info.lines:
        warnings.warn(
            f"{path.name}: only {sampled}/{info.lines} lines sampled; is it fully sampled?",
            stacklevel=2,
        )
    w = min(info.recon_readout, ro)
    x0 = ro // 2 - w // 2
    samples = []
    for s in range(n_slices):
        coil_images = ifft2c(torch.from_numpy(kspace[s]))[..., x0 : x0 + w]
        target, maps = coil_combine(coil_images, method=coil_method)
        samples.append(CineSample(target, maps, f"{path.stem}_slice{s}"))
    return samples


def load_cmrxrecon(
    path: str | Path, key: str = "kspace_full", coil_method: str = "espirit"
) -> list[CineSample]:
    """CMRxRecon ``.mat`` (v7.3) -> one :class:`CineSample` per slice.

    ``key`` names the variable (``kspace_full``); ``coil_method`` as in :func:`load_ocmr`.
    """
    path = Path(path)
    with h5py.File(path, "r") as f:
        if key not in f:
            raise ValueError(f"{path.name}: no variable {key!r} (found {sorted(f.keys())})")
        raw = f[key][()]
    if raw.dtype.names is None or not {"real", "imag"} <= set(raw.dtype.names):
        raise ValueError(f"{path.name}: {key} is not a ('real', 'imag') compound array")
    if raw.ndim != 5:
        raise ValueError(f"{path.name}: {key} must be (t, slice, coil, ky, kx), got {raw.shape}")
    kspace = (raw["real"] + 1j * raw["imag"]).astype(np.complex64)
    samples = []
    for s in range(kspace.shape[1]):
        coil_k = torch.from_numpy(np.ascontiguousarray(kspace[:, s].transpose(1, 0, 2, 3)))
        target, maps = coil_combine(ifft2c(coil_k), method=coil_method)
        samples.append(CineSample(target, maps, f"{path.stem}_slice{s}"))
    return samples


LOADERS = {".h5": load_ocmr, ".mat": load_cmrxrecon}


def scan_folder(folder: str | Path, kind: str = "auto", coil_method: str = "espirit") -> FolderScan:
    """Load every readable file of a folder (sorted), skipping bad ones with a warning.

    Parameters
    ----------
    folder
        Directory of ``.h5`` (OCMR/ISMRMRD) and/or ``.mat`` (CMRxRecon) files.
    kind
        ``"auto"`` (by extension), ``"ocmr"`` (``.h5`` only) or ``"cmrxrecon"`` (``.mat``).
    coil_method
        Coil map estimator for the coil combination (``"espirit"`` or ``"walsh"``).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"data folder {folder} does not exist or is not a directory")
    suffixes = {"auto": (".h5", ".mat"), "ocmr": (".h5",), "cmrxrecon": (".mat",)}
    if kind not in suffixes:
        raise ValueError(f"kind must be one of {sorted(suffixes)}, got {kind!r}")
    scan = FolderScan()
    for path in sorted(p for p in folder.iterdir() if p.suffix in suffixes[kind]):
        try:
            scan.samples.extend(LOADERS[path.suffix](path, coil_method=coil_method))
        except (OSError, ValueError, KeyError, IndexError) as err:
            reason = f"{type(err).__name__}: {err}"
            scan.skipped.append((path, reason))
            warnings.warn(f"skipping unreadable {path.name}: {reason}", stacklevel=2)
    log.info("%s: %d samples, %d files skipped", folder, len(scan.samples), scan.n_skipped)
    return scan
