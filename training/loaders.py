"""Read fully sampled cine data sets into :class:`~training.acquisition.Cine` lists.

OCMR (any ISMRMRD raw file)
    Read with :func:`passnet_core.ismrmrd_io.read_raw` (header through ``parse_header``) and
    assembled by :class:`gadgets.assembly.AcquisitionBuffer`, the gadgets' own ingest, so a
    training target is prepared by the same code as the inference input: noise scans ->
    prewhitening, navigator/phase-correction/calibration-only readouts skipped, lines placed
    about the encoding-limit centre (partial Fourier and asymmetric echoes zero-filled),
    readout oversampling removed to ``reconSpace.matrixSize.x``. Unlike streaming, repeated
    readouts of a line (``average``) are averaged. One sample per slice.
CMRxRecon
    MATLAB v7.3 ``.mat`` (HDF5) with ``kspace_full`` shaped ``(t, slice, coil, ky, kx)`` as
    h5py sees it, a ``('real', 'imag')`` compound, centred. One sample per slice.

Both combine coils as ``sum_c conj(S_c) x_c`` with maps estimated from the time-averaged
k-space (ESPIRiT from :mod:`passnet_core.coilmaps`), and keep the maps in the sample.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import h5py
import numpy as np
import torch

from gadgets.assembly import AcquisitionBuffer
from gadgets.slices import SliceData, SliceFailure
from passnet_core.fft import fft2c, ifft2c
from passnet_core.ismrmrd_io import read_raw
from training.acquisition import Cine

log = logging.getLogger(__name__)

CALIB = 24
# Files on disk are trusted and read whole: the streaming limits protect a server from its
# clients, not a training run from its own data (fully sampled multi-coil cines exceed them).
_NO_LIMIT = 2**62


@dataclass
class FolderScan:
    """Result of :func:`scan_folder`: the samples and the files that could not be read."""

    samples: list[Cine] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def n_skipped(self) -> int:
        return len(self.skipped)


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


def ocmr_slices(path: str | Path) -> Iterator[SliceData]:
    """The slices of an ISMRMRD raw file as the reconstruction chain assembles them.

    Slices come in the order they complete; their k-space is prewhitened when the file has
    noise scans, and has no readout oversampling (see the module docstring).

    Raises
    ------
    ValueError
        Not an ISMRMRD file, a slice that cannot be assembled (the reason from
        :mod:`gadgets.assembly`), or no imaging readouts at all.
    """
    path = Path(path)
    raw = read_raw(path)
    buffer = AcquisitionBuffer(raw.header, "auto", _NO_LIMIT, _NO_LIMIT, average_repeats=True)

    def checked(items: Iterable[SliceData | SliceFailure]) -> Iterator[SliceData]:
        for item in items:
            if isinstance(item, SliceFailure):
                raise ValueError(f"{path.name}: slice {item.slice_index}: {item.message}")
            yield item

    found = False
    for acquisition in raw.acquisitions():
        for item in checked(buffer.add(acquisition)):
            found = True
            yield item
    for item in checked(buffer.iter_flush()):  # one assembled slice in memory at a time
        found = True
        yield item
    if not found:
        raise ValueError(f"{path.name}: no imaging readouts")


def load_ocmr(path: str | Path, coil_method: str = "espirit") -> list[Cine]:
    """Fully sampled ISMRMRD cine -> one :class:`Cine` per slice (see module docstring).

    Samples are in slice-index order; ``coil_method`` selects the coil map estimator
    (``"espirit"`` or ``"walsh"``).
    """
    path = Path(path)
    samples = []
    for data in ocmr_slices(path):
        rows = data.mask.any(axis=(0, 2))
        if rows.sum() < 0.5 * rows.size:
            warnings.warn(
                f"{path.name}: slice {data.slice_index}: only {rows.sum()}/{rows.size} lines "
                "sampled; is it fully sampled?",
                stacklevel=2,
            )
        target, maps = coil_combine(ifft2c(torch.from_numpy(data.kspace)), method=coil_method)
        samples.append(
            (data.slice_index, Cine(target, maps, f"{path.stem}_slice{data.slice_index}"))
        )
    return [sample for _, sample in sorted(samples, key=lambda pair: pair[0])]


def load_cmrxrecon(
    path: str | Path, key: str = "kspace_full", coil_method: str = "espirit"
) -> list[Cine]:
    """CMRxRecon ``.mat`` (v7.3) -> one :class:`Cine` per slice.

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
        samples.append(Cine(target, maps, f"{path.stem}_slice{s}"))
    return samples


class _Loader(Protocol):
    def __call__(self, path: str | Path, *, coil_method: str) -> list[Cine]: ...


LOADERS: dict[str, _Loader] = {".h5": load_ocmr, ".mat": load_cmrxrecon}


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
