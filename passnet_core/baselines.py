"""Classical reconstructions to compare PASSNet against: zero-filled and L+S.

``zero_filled`` is ``A^H d`` (for multi-coil data the SENSE-style coil combination
``sum_c conj(S_c) F^H d_c``). ``lplus_s`` is the low-rank plus sparse decomposition of
Otazo et al. (MRM 2015): ``x = L + S`` with ``L`` low rank as a Casorati matrix
``(H*W) x T`` and ``S`` sparse in the temporal Fourier domain, solved by alternating singular
value thresholding, soft thresholding and a gradient (data-consistency) step.

Both run in torch on whatever device the inputs live on. Shapes follow docs/design.md:
k-space ``(B, T, H, W)`` single-coil or ``(B, C, T, H, W)`` with maps ``(B, C, H, W)``,
masks ``(T, H, W)`` or ``(B, T, H, W)``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from passnet_core.operators import ArrayLike, EncodingOp, as_tensor, validate_inputs

LPLUSS_LAMBDA_L = 0.01  # singular value threshold, relative to the largest singular value
LPLUSS_LAMBDA_S = 0.01  # temporal-FFT soft threshold, absolute on data with max|A^H d| = 1
# Chosen by the convergence study (docs/evaluation.md, docs/figures/convergence.png): on noisy
# (2 %) 8-coil 16 x 128 x 128 cines at R = 8 the PSNR peaks at 38-75 iterations and then slowly
# falls as noise is fitted; 60 iterations is within 0.15 dB of the peak for vds_lines-8,
# radial-8 and vds-8 alike. The old early stop (tol 2.5e-3) ended runs 1-2 dB short of it.
LPLUSS_N_ITER = 60
LPLUSS_TOL = 0.0


def _prepare(
    kspace: ArrayLike, mask: ArrayLike, coil_maps: ArrayLike | None
) -> tuple[torch.Tensor, EncodingOp]:
    """Validate inputs (:func:`validate_inputs`) and build the operator on the k-space device."""
    validate_inputs(kspace, mask, coil_maps)
    k = as_tensor(kspace, "kspace")
    maps = None if coil_maps is None else as_tensor(coil_maps, "coil_maps").to(k.device)
    return k, EncodingOp(as_tensor(mask, "mask").to(k.device, torch.float32), maps)


def zero_filled(
    kspace: torch.Tensor | np.ndarray,
    mask: torch.Tensor | np.ndarray,
    coil_maps: torch.Tensor | np.ndarray | None = None,
) -> torch.Tensor:
    """Zero-filled reconstruction ``A^H d``.

    Parameters
    ----------
    kspace
        ``(B, T, H, W)`` single-coil or ``(B, C, T, H, W)`` multi-coil complex k-space.
    mask
        0/1 mask ``(T, H, W)`` or ``(B, T, H, W)``.
    coil_maps
        ``(B, C, H, W)`` complex maps for multi-coil data, ``None`` for single-coil.

    Returns
    -------
    torch.Tensor
        Complex ``(B, T, H, W)`` images.
    """
    k, op = _prepare(kspace, mask, coil_maps)
    return op.adjoint(k)


def _svt(x: torch.Tensor, lambda_l: float) -> torch.Tensor:
    """Singular value soft thresholding of each ``(H*W) x T`` Casorati matrix in ``(B,T,H,W)``."""
    b, t, h, w = x.shape
    casorati = x.reshape(b, t, h * w).transpose(1, 2)
    u, s, vh = torch.linalg.svd(casorati, full_matrices=False)
    s = torch.clamp(s - lambda_l * s[:, :1], min=0)  # threshold relative to sigma_1
    low_rank = (u * s.unsqueeze(1).to(u.dtype)) @ vh
    return low_rank.transpose(1, 2).reshape(b, t, h, w)


def _temporal_soft_threshold(x: torch.Tensor, lambda_s: float) -> torch.Tensor:
    """Complex soft thresholding in the orthonormal temporal Fourier domain."""
    spectrum = torch.fft.fft(x, dim=1, norm="ortho")
    mag = spectrum.abs()
    shrink = torch.clamp(mag - lambda_s, min=0) / mag.clamp(min=1e-12)
    return torch.fft.ifft(spectrum * shrink, dim=1, norm="ortho")


def lplus_s(
    kspace: torch.Tensor | np.ndarray,
    mask: torch.Tensor | np.ndarray,
    coil_maps: torch.Tensor | np.ndarray | None = None,
    lambda_l: float = LPLUSS_LAMBDA_L,
    lambda_s: float = LPLUSS_LAMBDA_S,
    n_iter: int = LPLUSS_N_ITER,
    tol: float = LPLUSS_TOL,
    monitor: Callable[[int, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Low-rank plus sparse reconstruction (Otazo et al. 2015).

    Each batch item is scaled so that ``max |A^H d| = 1`` before iterating and scaled back
    afterwards, so the thresholds do not depend on the data's units. One iteration::

        L = SVT(M - S, lambda_l * sigma_1)
        S = F_t^-1 soft(F_t (M - L_previous), lambda_s)
        M = L + S - A^H (A (L + S) - d)

    stopping when ``||M - M_previous|| < tol * ||M_previous||`` or after ``n_iter``.

    Parameters
    ----------
    kspace, mask, coil_maps
        As for :func:`zero_filled`.
    lambda_l
        Singular value threshold as a fraction of the largest singular value.
    lambda_s
        Soft threshold on the orthonormal temporal FFT of ``S`` (normalised data).
    n_iter
        Maximum number of iterations.
    tol
        Relative change that stops the iteration early (0: always run ``n_iter``).
    monitor
        Called as ``monitor(iteration, L + S)`` (1-based, data units) after every iteration,
        e.g. for a convergence study.

    Returns
    -------
    torch.Tensor
        Complex ``(B, T, H, W)`` reconstruction ``L + S``.
    """
    if not (lambda_l >= 0 and lambda_s >= 0):
        raise ValueError(f"thresholds must be >= 0, got lambda_l={lambda_l}, lambda_s={lambda_s}")
    if not isinstance(n_iter, int) or n_iter < 1:
        raise ValueError(f"n_iter must be a positive integer, got {n_iter!r}")
    if not tol >= 0:
        raise ValueError(f"tol must be >= 0, got {tol!r}")
    k, op = _prepare(kspace, mask, coil_maps)
    x0 = op.adjoint(k)
    scale = x0.abs().flatten(1).amax(dim=1).clamp(min=1e-30)  # (B,)
    scale_img = scale.view(-1, 1, 1, 1)
    scale_k = scale.view(-1, *([1] * (k.ndim - 1)))
    d = k / scale_k
    m = x0 / scale_img
    low_rank_prev = m
    sparse = torch.zeros_like(m)
    with torch.no_grad():
        for iteration in range(n_iter):
            m_prev = m
            low_rank = _svt(m - sparse, lambda_l)
            sparse = _temporal_soft_threshold(m - low_rank_prev, lambda_s)
            estimate = low_rank + sparse
            m = estimate - op.adjoint(op.forward(estimate) - d)
            low_rank_prev = low_rank
            if monitor is not None:
                monitor(iteration + 1, estimate * scale_img)
            if torch.linalg.vector_norm(m - m_prev) < tol * torch.linalg.vector_norm(m_prev):
                break
    return (low_rank + sparse) * scale_img
