"""Classical iterative reconstructions: L+S and LLR (PASSNet's warm start and its baselines).

Zero-filled ``A^H d`` sits beside the operator (:func:`passnet_core.operators.zero_filled`).
``lplus_s`` is the low-rank plus sparse decomposition of
Otazo et al. (MRM 2015): ``x = L + S`` with ``L`` low rank as a Casorati matrix
``(H*W) x T`` and ``S`` sparse in the temporal Fourier domain, solved by alternating singular
value thresholding, soft thresholding and a gradient (data-consistency) step. ``llr`` is
locally low-rank regularisation (Trzasko and Manduca 2011; Zhang et al. 2015), the model of
BART's ``pics -R L``: every ``b x b`` spatial block, read as a ``b^2 x T`` Casorati matrix, is
low rank; solved with FISTA and a random block shift per iteration.

Both take the encoding operator and the k-space it maps to (validated once by the caller,
e.g. :func:`passnet_core.operators.encoding`) and run in torch on the data's device. Shapes
follow docs/design.md: k-space ``(B, T, H, W)`` single-coil or ``(B, C, T, H, W)``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from passnet_core.fft import ifft2c
from passnet_core.operators import EncodingOp, Normalised, normalise, zero_filled

LPLUSS_LAMBDA_L = 0.01  # singular value threshold, relative to the largest singular value
LPLUSS_LAMBDA_S = 0.01  # temporal-FFT soft threshold, absolute on data with max|A^H d| = 1
# Chosen by the convergence study (docs/evaluation.md, docs/figures/convergence.png): on noisy
# (2 %) 8-coil 16 x 128 x 128 cines at R = 8 the PSNR peaks at 38-75 iterations and then slowly
# falls as noise is fitted; 60 iterations is within 0.15 dB of the peak for vds_lines-8,
# radial-8 and vds-8 alike. The old early stop (tol 2.5e-3) ended runs 1-2 dB short of it.
LPLUSS_N_ITER = 60
LPLUSS_TOL = 0.0
LLR_BLOCK = 8  # block edge in pixels (BART's default)
LLR_LAMBDA = 0.03  # block singular value threshold, absolute on data with max|A^H d| = 1
# ... where every frame samples the same k-space (equispaced lines as GRAPPA-style cine takes
# them): the aliasing is then the same in every frame, itself low rank in time, and no
# threshold removes it; a threshold sized for the incoherent aliasing of per-frame sampling
# only blurs. 0.02 had the best mean through the chain on validation files of both bench
# phantoms at R 6 and 8 (docs/method.md, "Warm start"); per-frame lines keep 0.03 there.
LLR_LAMBDA_STATIC = 0.02
STATIC_SHARE = 0.9  # static_sampling: the share of samples that every frame takes
LLR_N_ITER = 80
LLR_INIT = "adjoint"  # first iterate: A^H d ("shared": the data-shared time average)
# Chosen through the whole chain (estimated maps) on validation files of both bench phantoms,
# R 6 and 8 (docs/method.md, "Warm start"): 0.03 / 80 from A^H d had the best mean of a
# 0.015-0.03 x 60-120 grid. From the data-shared average 60 iterations scored the same on
# those files in three quarters of the time, but 0.39 dB lower on the bench's ellipse files
# at R 6, so A^H d stays the default.
LLR_INITS = {"adjoint": "A^H d", "shared": "the data-shared time average"}  # name: words


def _in_units(op: EncodingOp, kspace: torch.Tensor, normalised: bool) -> Normalised:
    """The data in :data:`~passnet_core.operators.NORMALISATION` units (as given if normalised)."""
    if not normalised:
        return normalise(op, kspace)
    ones = torch.ones(kspace.shape[0], dtype=torch.float32, device=kspace.device)
    return Normalised(kspace, zero_filled(op, kspace), ones)


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
    op: EncodingOp,
    kspace: torch.Tensor,
    lambda_l: float = LPLUSS_LAMBDA_L,
    lambda_s: float = LPLUSS_LAMBDA_S,
    n_iter: int = LPLUSS_N_ITER,
    tol: float = LPLUSS_TOL,
    monitor: Callable[[int, torch.Tensor], None] | None = None,
    normalised: bool = False,
) -> torch.Tensor:
    """Low-rank plus sparse reconstruction (Otazo et al. 2015).

    Each batch item is scaled so that ``max |A^H d| = 1`` before iterating and scaled back
    afterwards, so the thresholds do not depend on the data's units. One iteration::

        L = SVT(M - S, lambda_l * sigma_1)
        S = F_t^-1 soft(F_t (M - L_previous), lambda_s)
        M = L + S - (A^H A (L + S) - A^H d)

    stopping when ``||M - M_previous|| < tol * ||M_previous||`` or after ``n_iter``.

    Parameters
    ----------
    op, kspace
        The encoding ``A`` and the k-space ``d`` (``(B, T, H, W)`` or ``(B, C, T, H, W)``).
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
    normalised
        ``kspace`` is already in :data:`~passnet_core.operators.NORMALISATION` units (the
        network's input): iterate on it as it is.

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
    units = _in_units(op, kspace, normalised)
    m = adjoint_data = units.image
    low_rank_prev = m
    sparse = torch.zeros_like(m)
    with torch.no_grad():
        for iteration in range(n_iter):
            m_prev = m
            low_rank = _svt(m - sparse, lambda_l)
            sparse = _temporal_soft_threshold(m - low_rank_prev, lambda_s)
            estimate = low_rank + sparse
            m = estimate - (op.normal(estimate) - adjoint_data)
            low_rank_prev = low_rank
            if monitor is not None:
                monitor(iteration + 1, units.restore(estimate))
            if torch.linalg.vector_norm(m - m_prev) < tol * torch.linalg.vector_norm(m_prev):
                break
    return units.restore(low_rank + sparse)


def static_sampling(op: EncodingOp, batch: int) -> torch.Tensor:
    """``(batch,)`` bool: does every frame of batch item ``b`` sample (nearly) the same k-space?

    True where at least :data:`STATIC_SHARE` of the acquired samples lie at positions every
    frame acquires: equispaced lines with calibration lines in every frame, also with a line
    lost or the calibration lines in one frame only. False for per-frame random lines (2-9 % of
    their samples common at R 2-12, ``passnet simulate`` files 5-6 % at R 6-8) and rotating
    radial spokes (under 4 %). A mask without a batch axis answers for every item.
    """
    mask = op.sampling.mask
    mask = mask.reshape(mask.shape[0], *mask.shape[-3:]) != 0  # (B, T, H, W), no coil axis
    everywhere = mask.all(dim=1, keepdim=True)
    shared = (mask & everywhere).flatten(1).sum(1) / mask.flatten(1).sum(1).clamp(min=1)
    static = shared >= STATIC_SHARE
    return static.expand(batch) if static.shape[0] == 1 else static


def _shrink_right(blocks: torch.Tensor, lambda_b: float | torch.Tensor) -> torch.Tensor:
    """``V diag(max(1 - lambda_b / s, 0)) V^H`` of each ``(..., m, T)`` matrix ``U S V^H``.

    ``blocks @`` it is singular value soft thresholding by ``lambda_b`` (a number, or one per
    leading index broadcast against ``(..., T)``). It comes from the
    eigendecomposition of the small ``T x T`` Gram matrix (in double precision, so the small
    singular values near the threshold keep their accuracy), about half the time of an SVD
    of the ``m x T`` blocks.
    """
    gram = (blocks.mH @ blocks).to(torch.complex128)
    eigenvalues, v = torch.linalg.eigh(gram)
    s = eigenvalues.clamp(min=0).sqrt()
    gain = torch.clamp(1 - lambda_b / s.clamp(min=torch.finfo(s.dtype).tiny), min=0)
    return ((v * gain.unsqueeze(-2)) @ v.mH).to(blocks.dtype)


def _llr_shrink(
    x: torch.Tensor, lambda_b: float | torch.Tensor, block: int, shift: tuple[int, int]
) -> torch.Tensor:
    """Singular value soft thresholding of every ``block x block`` Casorati matrix, by
    ``lambda_b`` (a number, or ``(B,)``: one per batch item).

    The image is rolled by ``shift`` and zero-padded to whole blocks, so block borders move
    between calls (random shifts make the regulariser shift-invariant on average).
    """
    b, t, h, w = x.shape
    x = torch.roll(x, shifts=shift, dims=(2, 3))
    pad_h, pad_w = (-h) % block, (-w) % block
    padded = torch.zeros(b, t, h + pad_h, w + pad_w, dtype=x.dtype, device=x.device)
    padded[:, :, :h, :w] = x
    nh, nw = (h + pad_h) // block, (w + pad_w) // block
    blocks = padded.reshape(b, t, nh, block, nw, block).permute(0, 2, 4, 3, 5, 1)
    blocks = blocks.reshape(b, nh * nw, block * block, t)
    per_item = torch.as_tensor(lambda_b, dtype=torch.float64, device=x.device).reshape(-1, 1, 1)
    blocks = blocks @ _shrink_right(blocks, per_item)
    padded = blocks.reshape(b, nh, nw, block, block, t).permute(0, 5, 1, 3, 2, 4)
    x = padded.reshape(b, t, h + pad_h, w + pad_w)[:, :, :h, :w]
    return torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(2, 3))


def shared_average(op: EncodingOp, kspace: torch.Tensor) -> torch.Tensor:
    """The data-shared time average of the acquired k-space, repeated in every frame.

    Every k-space sample is the mean over the frames that acquired it (zero where none did),
    then coil-combined as ``A^H`` does. With masks that change from frame to frame (per-frame
    random lines) it fills most of the k-space that ``A^H d`` leaves empty in every frame;
    with the same lines in every frame it is the time average of ``A^H d``.

    Parameters
    ----------
    op
        The encoding ``A``; its mask says which frame acquired which sample.
    kspace
        ``(B, T, H, W)`` or ``(B, C, T, H, W)``; values where the mask is 0 (e.g. the readout
        columns of an asymmetric echo after oversampling removal) are ignored.

    Returns
    -------
    torch.Tensor
        Complex ``(B, T, H, W)``, the same image in every frame (a new tensor).
    """
    acquired = op.sampling.forward(kspace)  # zeros wherever the mask is 0
    counts = op.sampling.mask.to(kspace.device, kspace.real.dtype).sum(dim=-3, keepdim=True)
    average = acquired.sum(dim=-3, keepdim=True) / counts.clamp(min=1)
    image = ifft2c(average)
    if op.coils is not None:
        image = op.coils.adjoint(image)
    return image.repeat(1, kspace.shape[-3], 1, 1)


def llr(
    op: EncodingOp,
    kspace: torch.Tensor,
    lambda_b: float = LLR_LAMBDA,
    n_iter: int = LLR_N_ITER,
    block: int = LLR_BLOCK,
    seed: int = 0,
    monitor: Callable[[int, torch.Tensor], None] | None = None,
    normalised: bool = False,
    init: str = LLR_INIT,
    lambda_static: float | None = LLR_LAMBDA_STATIC,
) -> torch.Tensor:
    """Locally low-rank reconstruction (FISTA, random block shifts).

    Minimises ``||A x - d||^2 / 2 + lambda_b sum_blocks ||x_block||_*`` (``lambda_static``
    where every frame samples the same k-space) with step 1
    (``||A^H A|| <= 1``). Each batch item is scaled to ``max |A^H d| = 1`` first, as in
    :func:`lplus_s`. The shifts come from a generator seeded with ``seed``, so a call is
    deterministic.

    Parameters
    ----------
    op, kspace
        The encoding ``A`` and the k-space ``d`` (``(B, T, H, W)`` or ``(B, C, T, H, W)``).
    lambda_b
        Nuclear-norm weight of every block (normalised data).
    n_iter
        FISTA iterations.
    block
        Block edge in pixels.
    seed
        Seed of the random block shifts.
    monitor
        Called as ``monitor(iteration, x)`` (1-based, data units) after every iteration.
    normalised
        As for :func:`lplus_s`.
    init
        First iterate: ``"shared"``, the data-shared time average (:func:`shared_average`),
        or ``"adjoint"``, ``A^H d``.
    lambda_static
        The weight instead of ``lambda_b`` for batch items whose mask samples the same
        k-space in every frame (:func:`static_sampling`); ``None``: ``lambda_b`` for all.

    Returns
    -------
    torch.Tensor
        Complex ``(B, T, H, W)`` reconstruction.
    """
    if init not in LLR_INITS:
        raise ValueError(f"init must be one of {tuple(LLR_INITS)}, got {init!r}")
    for name, weight in (("lambda_b", lambda_b), ("lambda_static", lambda_static)):
        if weight is not None and not weight >= 0:
            raise ValueError(f"{name} must be >= 0, got {weight}")
    for name, value in (("n_iter", n_iter), ("block", block)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    units = _in_units(op, kspace, normalised)
    adjoint_data = units.image
    # one weight per batch item, float64 as the singular values it is compared with
    thresholds = torch.full(
        (kspace.shape[0],), float(lambda_b), dtype=torch.float64, device=kspace.device
    )
    if lambda_static is not None:
        static = static_sampling(op, kspace.shape[0]).to(kspace.device)
        thresholds = torch.where(static, float(lambda_static), thresholds)
    x = adjoint_data if init == "adjoint" else shared_average(op, units.kspace)
    z, t_k = x, 1.0
    shifts = torch.randint(0, block, (n_iter, 2), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        for iteration in range(n_iter):
            shift = (int(shifts[iteration, 0]), int(shifts[iteration, 1]))
            x_new = _llr_shrink(z - (op.normal(z) - adjoint_data), thresholds, block, shift)
            t_next = (1 + (1 + 4 * t_k * t_k) ** 0.5) / 2
            z = x_new + ((t_k - 1) / t_next) * (x_new - x)
            x, t_k = x_new, t_next
            if monitor is not None:
                monitor(iteration + 1, units.restore(x))
    return units.restore(x)
