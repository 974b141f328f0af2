"""The k-space physics of ingest (pure numpy): noise covariance and prewhitening, readout
oversampling removal and the readout mask that goes with it, the time-averaged calibration
(``frame_sum``) and the size of the calibration region (``central_run``).

Readout oversampling is removed in one FFT along the readout: the encoded readout is
transformed to image space, the central columns kept and transformed back.
"""

from __future__ import annotations

import numpy as np


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


def frame_sum(kspace: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(C, T, H, W)`` k-space -> its sum over frames ``(C, H, W)`` and, per ``(H, W)``
    location, how many frames sampled it: their ratio is the calibration time average."""
    return kspace.sum(axis=1), (np.abs(kspace).sum(axis=0) > 0).sum(axis=0).astype(np.float32)


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
