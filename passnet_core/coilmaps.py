"""Coil sensitivity estimation from (time-averaged) multi-coil k-space.

Two methods, both returning complex64 ``(C, H, W)`` maps with ``sum_c |S_c|^2 = 1`` on the
estimated object support and 0 outside, phase-referenced to the strongest coil:

``espirit`` (Uecker et al., MRM 2014)
    Sliding ``kernel x kernel`` windows over all coils in the central ``calib x calib`` block
    form the calibration matrix; its leading right singular vectors (singular value above
    ``threshold * sigma_max``) span the signal subspace. Their projection acts as a
    convolution in k-space and hence as a ``C x C`` matrix ``G(x)`` per pixel in image space;
    the maps are the eigenvectors of ``G(x)`` with eigenvalue ~1, and pixels whose top
    eigenvalue is below ``crop`` are set to zero (outside the object). ``G`` is band-limited
    (its k-space kernel spans ``2*kernel - 1`` points), so it is built on a small grid and
    zero-padded to full size: the cost is ``C(C+1)/2`` FFTs plus a batched power iteration.
``walsh`` (Walsh et al., MRM 2000)
    Dominant eigenvector of the locally averaged coil covariance of low-resolution coil images
    (the calibration block, Hann-windowed). Cheaper, no calibration SVD; the support is where
    the low-resolution root-sum-of-squares exceeds ``WALSH_SUPPORT`` times its maximum.

Undersampled data: pass the time average of the sampled k-space, divided per point by the
number of frames that sampled it (:func:`time_average_kspace`). Points never sampled stay 0,
and ESPIRiT uses only calibration windows in which every point was sampled, so the zeros do
not enter the calibration matrix.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F

from passnet_core.fft import fft2c, ifft2c
from passnet_core.methods import COIL_MAP_METHODS

MAP_PHASES = ("lowres", "coil")  # estimate_coil_maps(phase=...): see _lowres_phase
WALSH_SUPPORT = 0.05  # fraction of the max low-res RSS that counts as object for "walsh"


def time_average_kspace(kspace: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Average multi-coil k-space over frames, counting only frames that sampled each point.

    Parameters
    ----------
    kspace
        Complex ``(C, T, H, W)`` zero-filled k-space.
    mask
        0/1 ``(T, H, W)`` sampling mask.

    Returns
    -------
    torch.Tensor
        ``(C, H, W)``: ``sum_t d_t / max(1, sum_t m_t)``; 0 where no frame sampled.
    """
    kspace, mask = torch.as_tensor(kspace), torch.as_tensor(mask)
    if kspace.ndim != 4 or not kspace.is_complex():
        raise ValueError(f"kspace must be complex (C, T, H, W), got {tuple(kspace.shape)}")
    if mask.shape != kspace.shape[1:]:
        raise ValueError(f"mask {tuple(mask.shape)} does not match kspace {tuple(kspace.shape)}")
    m = mask.to(kspace.real.dtype)
    return (kspace * m).sum(1) / m.sum(0).clamp(min=1)


def _validate(
    kspace_avg: torch.Tensor | np.ndarray,
    calib: int,
    kernel: int,
    method: str,
    crop: float,
    threshold: float,
) -> torch.Tensor:
    k = torch.as_tensor(kspace_avg)
    if k.ndim != 3 or not k.is_complex():
        raise ValueError(
            f"kspace_avg must be complex (C, H, W), got shape {tuple(k.shape)} dtype {k.dtype}"
        )
    if not bool(torch.isfinite(k).all()):
        raise ValueError("kspace_avg contains NaN or Inf")
    if method not in COIL_MAP_METHODS:
        raise ValueError(f"unknown coil map method {method!r}; expected one of {COIL_MAP_METHODS}")
    if not isinstance(kernel, (int, np.integer)) or kernel < 1:
        raise ValueError(f"kernel must be a positive integer, got {kernel!r}")
    if not isinstance(calib, (int, np.integer)) or calib <= kernel:
        raise ValueError(f"calib must be an integer larger than kernel={kernel}, got {calib!r}")
    if min(k.shape[-2:]) <= kernel:
        raise ValueError(f"k-space {tuple(k.shape[-2:])} is too small for kernel={kernel}")
    if not 0 <= crop < 1:
        raise ValueError(f"crop must be in [0, 1), got {crop!r}")
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must be in (0, 1), got {threshold!r}")
    if not bool((k != 0).any()):
        raise ValueError("kspace_avg is all zeros")
    return k.to(torch.complex64)


@contextmanager
def _single_thread() -> Iterator[None]:
    """Run the enclosed torch calls on one intra-op thread, then restore the thread count.

    MKL's threaded Hermitian eigensolver degrades badly when the cores are shared: on a
    2-core machine with another busy process, ``eigh`` of the ~500x500 calibration Gram
    matrix took 7.7 s with 2 threads against 0.19 s with one (measured back to back). One
    thread costs at most ~0.1 s on an idle machine, so it is the robust choice. The thread
    count is process-wide: another thread's torch work runs single-threaded meanwhile.

    Thread-safe (``passnet serve`` runs sessions in threads): the first thread to enter
    saves the count and the last to leave restores it, so overlapping sections can neither
    restore too early nor leave the process pinned to one thread.
    """
    global _PINNED, _SAVED_THREADS
    with _PIN_LOCK:
        if _PINNED == 0:
            _SAVED_THREADS = torch.get_num_threads()
            torch.set_num_threads(1)
        _PINNED += 1
    try:
        yield
    finally:
        with _PIN_LOCK:
            _PINNED -= 1
            if _PINNED == 0:
                torch.set_num_threads(_SAVED_THREADS)


_PIN_LOCK = threading.Lock()
_PINNED = 0  # threads inside _single_thread
_SAVED_THREADS = 1  # the count to restore when the last one leaves


def _centre_block(k: torch.Tensor, calib: int) -> torch.Tensor:
    """The central ``calib x calib`` block (clipped to the grid) of ``(..., H, W)``."""
    h, w = k.shape[-2:]
    ch, cw = min(calib, h), min(calib, w)
    y0, x0 = h // 2 - ch // 2, w // 2 - cw // 2
    return k[..., y0 : y0 + ch, x0 : x0 + cw]


def _full_windows(block: torch.Tensor, kernel: int) -> torch.Tensor:
    """Which ``kernel x kernel`` windows of a ``(C, h, w)`` block have every point sampled."""
    sampled = (block.abs().sum(0) > 0).to(torch.float32)[None, None]
    return F.unfold(sampled, kernel)[0].min(dim=0).values == 1


def espirit_kernel(
    kspace_avg: torch.Tensor | np.ndarray, calib: int = 24, kernels: tuple[int, ...] = (6, 5, 4, 3)
) -> int | None:
    """The largest ESPIRiT kernel the central ``calib`` block of this k-space supports.

    A kernel is supported when every window position of the block is fully sampled (a complete
    calibration region: the standard kernel 6 works even with 16 coils), or, where lines are
    missing, when the fully sampled windows are at least as many as the calibration matrix
    has columns (``C * kernel**2``). Time-averaged per-frame random lines leave such gaps near
    the centre at high R; with fewer windows than columns the signal subspace takes up noise
    and the maps fail (measured: 14-24 dB instead of 31-38 dB for LLR with these maps).

    Parameters
    ----------
    kspace_avg
        Complex ``(C, H, W)`` time-averaged k-space (unsampled points 0).
    calib
        Side of the central block (clipped to the grid).
    kernels
        Candidates, largest first.

    Returns
    -------
    int or None
        The kernel, or ``None`` when no candidate is supported (e.g. no two adjacent lines).
    """
    k = torch.as_tensor(kspace_avg)
    block = _centre_block(k, calib)
    c, h, w = block.shape
    for kernel in kernels:
        if kernel > min(h, w):
            continue
        n_full = int(_full_windows(block, kernel).sum())
        if n_full == (h - kernel + 1) * (w - kernel + 1) or n_full >= c * kernel**2:
            return kernel
    return None


def _signal_kernels(block: torch.Tensor, kernel: int, threshold: float) -> torch.Tensor:
    """Leading right singular vectors of the calibration matrix as ``(n, C, k, k)`` kernels."""
    c = block.shape[0]
    # (C*k*k, L): each column one window over all coils; unfold works on real tensors
    ri = torch.view_as_real(block).permute(0, 3, 1, 2).reshape(1, 2 * c, *block.shape[-2:])
    cols = F.unfold(ri, kernel).reshape(c, 2, kernel * kernel, -1)
    windows = torch.complex(cols[:, 0], cols[:, 1]).reshape(c * kernel * kernel, -1)
    full = _full_windows(block, kernel)
    if int(full.sum()) < kernel * kernel:
        raise ValueError(
            f"only {int(full.sum())} fully sampled {kernel}x{kernel} windows in the central "
            "calibration block; need more calibration data (or a smaller kernel)"
        )
    # Rows of the calibration matrix are windows; the windows lie in the span of its leading
    # right singular vectors, got here from the small Gram matrix (faster than a full SVD).
    calib_matrix = windows[:, full].T.to(torch.complex128)  # (L, C*k*k)
    gram = calib_matrix.T @ calib_matrix.conj()
    with _single_thread():
        evals, evecs = torch.linalg.eigh(gram)  # ascending
    sigma = evals.flip(0).clamp(min=0).sqrt()
    n_keep = int((sigma > threshold * sigma[0]).sum())
    return evecs.flip(1)[:, :n_keep].T.reshape(n_keep, c, kernel, kernel)


def _pixel_operator(kernels: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """ESPIRiT's per-pixel ``C x C`` matrix ``G(x)`` as complex64 ``(H, W, C, C)``."""
    n, c, k, _ = kernels.shape
    s = 2 * k  # >= 2k - 1: the k-space support of G, so the small grid does not alias
    pad = torch.zeros(n, c, s, s, dtype=kernels.dtype)
    pad[..., s // 2 - k // 2 : s // 2 - k // 2 + k, s // 2 - k // 2 : s // 2 - k // 2 + k] = kernels
    h_img = s * ifft2c(pad)  # un-normalised DFT of each kernel per coil
    # G = (1/k^2) sum_j h_j h_j^H on the small grid (k^2 windows cover each k-space point).
    # Small tensors: one thread avoids OpenMP barrier stalls on a shared machine.
    with _single_thread():
        g_small = torch.einsum("nauv,nbuv->abuv", h_img, h_img.conj()) / (k * k)
    conv = ifft2c(g_small) / s  # the k-space convolution kernel, support 2k-1 around s//2
    # G(x) is Hermitian at every pixel: transform only the upper triangle (c(c+1)/2 of the
    # c^2 full-size FFTs) in single precision, the precision the maps are returned in.
    rows, cols = torch.triu_indices(c, c)
    r = k - 1
    full = torch.zeros(len(rows), h, w, dtype=torch.complex64)
    full[:, h // 2 - r : h // 2 + r + 1, w // 2 - r : w // 2 + r + 1] = conv[
        rows, cols, s // 2 - r : s // 2 + r + 1, s // 2 - r : s // 2 + r + 1
    ]
    upper = (fft2c(full) * (h * w) ** 0.5).permute(1, 2, 0)  # (H, W, pairs)
    g = torch.empty(h, w, c, c, dtype=torch.complex64)
    g[:, :, cols, rows] = upper.conj()
    g[:, :, rows, cols] = upper  # written last, so the diagonal keeps the computed values
    return g


def _top_eigenpair(g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Largest eigenvalue and its unit eigenvector of Hermitian PSD ``(..., C, C)`` matrices.

    An exact Hermitian eigensolver: at the bright edge of the object the top two ESPIRiT
    eigenvalues can lie within 2 % of each other (0.998 against 0.984), where a power iteration
    of a few squarings mixes their vectors; the mixed maps cost LLR 2-4 dB on some cardiac
    files through the chain. Batched ``eigh`` of the ``C x C`` blocks took the same time
    (0.07 s at 128 x 128, 8 coils, one thread) as the power iteration it replaces.
    """
    with _single_thread():  # see there: threaded eigh degrades on shared cores
        values, vectors = torch.linalg.eigh(g.contiguous())
    return values[..., -1], vectors[..., -1]


def _phase_reference(maps: torch.Tensor) -> torch.Tensor:
    """Remove the per-pixel phase of the strongest coil (ESPIRiT fixes maps only up to it)."""
    ref = int((maps.abs() ** 2).sum(dim=(1, 2)).argmax())
    phase = maps[ref] / maps[ref].abs().clamp(min=1e-12)
    return maps * phase.conj()


def _lowres_phase(maps: torch.Tensor, k: torch.Tensor, calib: int) -> torch.Tensor:
    """Rotate the maps per pixel so that the low-resolution coil combination is real.

    Maps are defined only up to a per-pixel phase, which passes unchanged into the combined
    images. With the strongest coil as reference the images carry that coil's B1 phase, which
    varies across the field of view; learned reconstructions (PASSNet's convolutions act on
    real and imaginary parts) were trained with exact maps, on images whose phase is the
    object's own, smooth one. Taking the smooth phase of the low-resolution coil images
    (:func:`lowres_images`) into the maps leaves the images only the object's fine
    phase. Magnitudes, and every phase-blind method (L+S, LLR, zero-filled magnitudes, BART
    LLR), are unchanged.
    """
    return maps * unit_phase((maps.conj() * lowres_images(k, calib)).sum(0))


def unit_phase(z: torch.Tensor) -> torch.Tensor:
    """``z / |z|``, and 1 where ``z`` is 0."""
    mag = z.abs()
    return torch.where(mag > 0, z / mag.clamp(min=1e-30), torch.ones_like(z))


def _espirit(
    k: torch.Tensor, calib: int, kernel: int, crop: float, threshold: float
) -> torch.Tensor:
    c, h, w = k.shape
    kernels = _signal_kernels(_centre_block(k, calib), kernel, threshold)
    g = _pixel_operator(kernels, h, w)
    top_val, top_vec = _top_eigenpair(g)  # (H, W), (H, W, C)
    return top_vec.permute(2, 0, 1) * (top_val > crop)


def lowres_images(k: torch.Tensor, calib: int) -> torch.Tensor:
    """Images ``(..., H, W)`` of the Hann-windowed central ``calib x calib`` block of the
    centred k-space ``k`` ``(..., H, W)`` (coil images here; the network's phase reference
    too, :func:`passnet_core.model.lowres_phase`)."""
    low = torch.zeros_like(k)
    block = _centre_block(k, calib)
    win = torch.outer(
        torch.hann_window(block.shape[-2] + 2, periodic=False)[1:-1],
        torch.hann_window(block.shape[-1] + 2, periodic=False)[1:-1],
    )
    _centre_block(low, calib).copy_(block * win)
    return ifft2c(low)


def _walsh(k: torch.Tensor, calib: int, kernel: int) -> torch.Tensor:
    c, h, w = k.shape
    img = lowres_images(k, calib)
    cov = img[:, None] * img[None].conj()  # (C, C, H, W)
    size = 2 * kernel + 1  # local averaging window
    ri = torch.view_as_real(cov).permute(0, 1, 4, 2, 3).reshape(-1, 1, h, w)
    # separable box average (equal to the 2-D one, counts of valid pixels factorise too)
    smooth = F.avg_pool2d(ri, (size, 1), stride=1, padding=(kernel, 0), count_include_pad=False)
    smooth = F.avg_pool2d(smooth, (1, size), stride=1, padding=(0, kernel), count_include_pad=False)
    smooth = smooth.reshape(c, c, 2, h, w).permute(0, 1, 3, 4, 2).contiguous()
    cov = torch.view_as_complex(smooth).permute(2, 3, 0, 1)
    _, top_vec = _top_eigenpair(cov.to(torch.complex64))
    rss = img.abs().square().sum(0).sqrt()
    support = rss > WALSH_SUPPORT * rss.max()
    return top_vec.permute(2, 0, 1) * support


def estimate_coil_maps(
    kspace_avg: torch.Tensor | np.ndarray,
    calib: int = 24,
    kernel: int = 6,
    method: str = "espirit",
    crop: float = 0.95,
    threshold: float = 0.02,
    phase: str = "lowres",
) -> torch.Tensor:
    """Estimate coil sensitivities from time-averaged, centred multi-coil k-space.

    Parameters
    ----------
    kspace_avg
        Complex ``(C, H, W)`` k-space, DC at ``(H//2, W//2)`` (numpy or torch). For
        undersampled cine data use :func:`time_average_kspace`.
    calib
        Side of the central calibration block (clipped to the grid).
    kernel
        ESPIRiT kernel size; for ``walsh`` the half-width of the averaging window.
    method
        ``"espirit"`` or ``"walsh"``.
    crop
        ESPIRiT: zero the maps where the top eigenvalue is below this (outside the object).
    threshold
        ESPIRiT: keep calibration singular vectors with ``sigma > threshold * sigma_max``.
    phase
        The per-pixel phase the maps are fixed to (:data:`MAP_PHASES`): ``"lowres"`` makes the
        low-resolution coil combination real, so images keep only the object's own phase (what
        the network was trained on); ``"coil"`` makes the strongest coil's map real.

    Returns
    -------
    torch.Tensor
        complex64 ``(C, H, W)`` on the CPU, ``sum_c |S_c|^2 = 1`` on the support, 0 outside.
    """
    if phase not in MAP_PHASES:
        raise ValueError(f"unknown map phase {phase!r}; expected one of {MAP_PHASES}")
    k = _validate(kspace_avg, calib, kernel, method, crop, threshold).cpu()
    with torch.no_grad():
        if method == "espirit":
            maps = _espirit(k, calib, kernel, crop, threshold)
        else:
            maps = _walsh(k, calib, kernel)
        maps = _phase_reference(maps)
        if phase == "lowres":
            maps = _lowres_phase(maps, k, calib)
        return maps.to(torch.complex64)
