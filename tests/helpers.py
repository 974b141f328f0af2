"""Helpers shared by the test modules: operators, phantoms, coil maps, ISMRMRD streams.

Test modules import them as ``from helpers import ...`` (pytest puts ``tests/`` on
``sys.path``, as it has no ``__init__.py``); nothing in the installed packages uses them.
"""

from __future__ import annotations

from collections.abc import Sequence

import ismrmrd
import numpy as np
import torch

from passnet_core.fft import fft2c
from passnet_core.operators import LinearOperator, adjointness_error


def assert_adjoint(
    op: LinearOperator,
    x_shape: Sequence[int],
    y_shape: Sequence[int],
    tol: float = 1e-5,
    dtype: torch.dtype = torch.complex128,
) -> float:
    """Assert the dot-product test ``<A x, y> = <x, A^H y>`` holds to relative ``tol``.

    Returns
    -------
    float
        The measured relative error, for reporting.
    """
    err = adjointness_error(op, x_shape, y_shape, dtype=dtype)
    assert err < tol, f"{type(op).__name__}: adjointness error {err:.3e} >= {tol:.1e}"
    return err


def random_complex(shape: Sequence[int], seed: int = 0, dtype=torch.complex64) -> torch.Tensor:
    """Standard complex Gaussian tensor from a private generator."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, dtype=dtype, generator=g)


def ellipse_phantom(h: int, w: int) -> np.ndarray:
    """A smooth-edged (H, W) real phantom: a body ellipse holding two brighter ellipses.

    Zero outside the body, so tests can tell "inside the object" from background.
    """
    y, x = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    body = ((x / 0.75) ** 2 + (y / 0.85) ** 2 <= 1).astype(np.float32)
    left = (((x + 0.3) / 0.2) ** 2 + (y / 0.35) ** 2 <= 1).astype(np.float32)
    right = (((x - 0.3) / 0.25) ** 2 + ((y + 0.1) / 0.3) ** 2 <= 1).astype(np.float32)
    return 0.5 * body + 0.3 * left + 0.4 * right


def dynamic_phantom(t: int, h: int, w: int) -> np.ndarray:
    """A (T, H, W) complex64 cine-like phantom: a "heart" ellipse that beats over the frames.

    The static body plus one ellipse whose radii oscillate once per cycle, with a slow phase
    so the image is genuinely complex. Low rank in time plus a sparse moving part, which is what
    L+S style methods expect.
    """
    y, x = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    static = ellipse_phantom(h, w)
    frames = np.empty((t, h, w), dtype=np.complex64)
    for k in range(t):
        s = 1.0 + 0.25 * np.sin(2 * np.pi * k / t)
        heart = ((x - 0.05) / (0.22 * s)) ** 2 + ((y - 0.1) / (0.2 * s)) ** 2 <= 1
        phase = np.exp(1j * 0.4 * np.pi * (x + 0.5 * y))
        frames[k] = (static + 0.6 * heart) * phase
    return frames


def simulated_coil_maps(n_coils: int, h: int, w: int) -> np.ndarray:
    """Smooth (C, H, W) complex64 coil sensitivities: Gaussian blobs around a ring, phase ramps.

    Each coil's centre sits on a circle outside the field of view; its magnitude decays with
    distance and its phase is a gentle coil-specific linear ramp. Not normalised.
    """
    y, x = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    maps = np.empty((n_coils, h, w), dtype=np.complex64)
    for c in range(n_coils):
        angle = 2 * np.pi * c / n_coils
        cy, cx = 1.3 * np.sin(angle), 1.3 * np.cos(angle)
        mag = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * 0.8**2))
        phase = 0.5 * c + 0.8 * np.cos(angle) * x + 0.8 * np.sin(angle) * y
        maps[c] = mag * np.exp(1j * phase)
    return maps


def normalise_maps(maps: np.ndarray, support: np.ndarray) -> np.ndarray:
    """Scale maps so ``sum_c |S_c|^2 = 1`` on ``support`` and 0 elsewhere."""
    rss = np.sqrt((np.abs(maps) ** 2).sum(0, keepdims=True))
    return np.where(support[None], maps / np.maximum(rss, 1e-12), 0).astype(np.complex64)


def map_correlation(est: np.ndarray, ref: np.ndarray, support: np.ndarray) -> float:
    """Mean over ``support`` of ``|<S_est, S_ref>| / (|S_est| |S_ref|)`` across coils.

    The absolute value makes the comparison blind to a common per-pixel phase, which ESPIRiT
    does not determine.
    """
    inner = np.abs((est * ref.conj()).sum(0))
    norms = np.linalg.norm(est, axis=0) * np.linalg.norm(ref, axis=0)
    corr = inner / np.maximum(norms, 1e-12)
    return float(corr[support].mean())


# ---------------------------------------------------------------- ISMRMRD headers and streams
def header_xml(
    enc_x: int,
    enc_y: int,
    recon_x: int | None = None,
    e1: tuple[int, int, int] | None = None,
    frames: int = 1,
    slices: int = 1,
    coils: int = 4,
    frame_limit: str = "phase",
) -> str:
    """A minimal ISMRMRD header; ``e1`` = (min, max, centre) of kspace_encoding_step_1."""
    recon_x = recon_x or enc_x
    e1 = e1 or (0, enc_y - 1, enc_y // 2)

    def limit(name: str, n: int) -> str:
        return f"<{name}><minimum>0</minimum><maximum>{n - 1}</maximum><center>0</center></{name}>"

    other = "repetition" if frame_limit == "phase" else "phase"
    return (
        '<?xml version="1.0"?><ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD">'
        f"<acquisitionSystemInformation><receiverChannels>{coils}</receiverChannels>"
        "</acquisitionSystemInformation>"
        "<experimentalConditions><H1resonanceFrequency_Hz>63500000</H1resonanceFrequency_Hz>"
        "</experimentalConditions><encoding>"
        f"<encodedSpace><matrixSize><x>{enc_x}</x><y>{enc_y}</y><z>1</z></matrixSize>"
        f"<fieldOfView_mm><x>{2 * enc_x}</x><y>{enc_y}</y><z>8</z></fieldOfView_mm></encodedSpace>"
        f"<reconSpace><matrixSize><x>{recon_x}</x><y>{enc_y}</y><z>1</z></matrixSize>"
        f"<fieldOfView_mm><x>{2 * recon_x}</x><y>{enc_y}</y><z>8</z></fieldOfView_mm></reconSpace>"
        "<encodingLimits><kspace_encoding_step_1>"
        f"<minimum>{e1[0]}</minimum><maximum>{e1[1]}</maximum><center>{e1[2]}</center>"
        f"</kspace_encoding_step_1>{limit('slice', slices)}{limit(frame_limit, frames)}"
        f"{limit(other, 1)}</encodingLimits><trajectory>cartesian</trajectory></encoding>"
        "</ismrmrdHeader>"
    )


def acquisitions(
    kspace: np.ndarray,
    rows: np.ndarray,
    e1_centre: int | None = None,
    slice_index: int = 0,
    calib_rows: tuple[int, ...] = (),
    frame_dimension: str = "phase",
    last_in_measurement: bool = True,
    noise: np.ndarray | None = None,
) -> list[ismrmrd.Acquisition]:
    """One acquisition per sampled line of ``kspace`` ``(C, T, H, W)``.

    ``rows`` ``(T, H)`` bool: imaging lines. ``calib_rows``: rows sent in frame 0 as
    calibration; flagged ``_AND_IMAGING`` when also in ``rows[0]``, else calibration only.
    ``e1_centre``: e1 index of row ``H//2`` (partial Fourier shifts it).
    """
    c, t_frames, h, w = kspace.shape
    shift = h // 2 - (h // 2 if e1_centre is None else e1_centre)
    out = []
    if noise is not None:
        acq = ismrmrd.Acquisition.from_array(noise.astype(np.complex64))
        acq.set_flag(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)
        out.append(acq)
    for t in range(t_frames):
        todo = sorted(set(np.flatnonzero(rows[t])) | (set(calib_rows) if t == 0 else set()))
        for row in todo:
            acq = ismrmrd.Acquisition.from_array(
                np.ascontiguousarray(kspace[:, t, row]), center_sample=w // 2
            )
            acq.idx.kspace_encode_step_1 = row - shift
            acq.idx.slice = slice_index
            setattr(acq.idx, frame_dimension, t)
            acq.position[:] = (1.0, 2.0, 3.0 + slice_index)
            acq.read_dir[:] = (1.0, 0.0, 0.0)
            acq.phase_dir[:] = (0.0, 1.0, 0.0)
            acq.slice_dir[:] = (0.0, 0.0, 1.0)
            acq.acquisition_time_stamp = 1000 * t + row
            if row in calib_rows and t == 0:
                both = rows[t, row]
                acq.set_flag(
                    ismrmrd.ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING
                    if both
                    else ismrmrd.ACQ_IS_PARALLEL_CALIBRATION
                )
            out.append(acq)
    out[-1].set_flag(ismrmrd.ACQ_LAST_IN_SLICE)
    if last_in_measurement:
        out[-1].set_flag(ismrmrd.ACQ_LAST_IN_MEASUREMENT)
    return out


def known_cine(c: int = 4, t: int = 3, h: int = 16, w: int = 16):
    """(image (T,H,W), normalised maps (C,H,W), k-space (C,T,H,W)) of a small phantom."""
    image = dynamic_phantom(t, h, w)
    maps = simulated_coil_maps(c, h, w)
    maps = maps / np.sqrt((np.abs(maps) ** 2).sum(0, keepdims=True))
    kspace = fft2c(torch.from_numpy(maps[:, None] * image[None])).numpy().astype(np.complex64)
    return image, maps.astype(np.complex64), kspace


def rss_mb() -> float:
    """Resident memory of this process in MiB (Linux ``/proc``), for leak checks."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")
