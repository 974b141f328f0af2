"""Image quality metrics with the predecessors' conventions (docs/method.md).

Both metrics work per volume: each ``(T, H, W)`` volume (reconstruction and reference alike)
is divided by ``max |reference|`` of that volume, so the peak / data range is 1.

- :func:`psnr`: ``10 log10(1 / MSE)`` over all voxels of the volume. Complex inputs use the
  complex difference (the single-coil convention); ``magnitude=True`` compares magnitudes
  (the multi-coil convention).
- :func:`ssim`: on magnitudes, 11x11 Gaussian window with sigma 1.5, ``K1=0.01``,
  ``K2=0.03``, population (not sample) covariances, mean over the window-valid interior of
  each frame, then averaged over frames. This matches ``skimage.metrics.structural_similarity
  (gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1)`` per frame.

Inputs are ``(T, H, W)`` or ``(B, T, H, W)``, torch or numpy, real or complex. Results are
float64 torch tensors: 0-d for one volume, ``(B,)`` for a batch (``float(...)`` works on 0-d).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from passnet_core.operators import ArrayLike

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03


def _as_batched_pair(recon: ArrayLike, ref: ArrayLike) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Validate shapes, convert to float64/complex128 ``(B, T, H, W)``; report if batched."""
    x, y = torch.as_tensor(recon), torch.as_tensor(ref)
    if x.shape != y.shape:
        raise ValueError(f"recon {tuple(x.shape)} and ref {tuple(y.shape)} differ in shape")
    if x.ndim not in (3, 4):
        raise ValueError(f"metrics expect (T, H, W) or (B, T, H, W), got shape {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError("metrics got an empty array")
    batched = x.ndim == 4
    if not batched:
        x, y = x.unsqueeze(0), y.unsqueeze(0)
    dtype = torch.complex128 if (x.is_complex() or y.is_complex()) else torch.float64
    return x.to(dtype), y.to(dtype), batched


def _normalise(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Divide both volumes by ``max |y|`` per volume (an all-zero reference is an error)."""
    scale = y.abs().amax(dim=(1, 2, 3), keepdim=True)
    if bool((scale == 0).any()):
        raise ValueError("reference volume is all zeros; cannot normalise by max |ref|")
    return x / scale, y / scale


def psnr(recon: ArrayLike, ref: ArrayLike, magnitude: bool = False) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per volume, peak 1 after dividing by ``max |ref|``.

    Parameters
    ----------
    recon, ref
        ``(T, H, W)`` or ``(B, T, H, W)``, real or complex, torch or numpy.
    magnitude
        Compare ``|recon|`` with ``|ref|`` instead of the (complex) difference.

    Returns
    -------
    torch.Tensor
        0-d for one volume, ``(B,)`` for a batch; ``inf`` where the volumes are identical.
    """
    x, y, batched = _as_batched_pair(recon, ref)
    x, y = _normalise(x, y)
    if magnitude:
        x, y = x.abs(), y.abs()
    mse = (x - y).abs().square().mean(dim=(1, 2, 3))
    out = 10 * torch.log10(1.0 / mse)
    return out if batched else out[0]


def _gaussian_window(device: torch.device) -> torch.Tensor:
    radius = SSIM_WINDOW // 2
    u = torch.arange(-radius, radius + 1, dtype=torch.float64, device=device)
    g = torch.exp(-0.5 * (u / SSIM_SIGMA) ** 2)
    return g / g.sum()


def _filter_valid(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter of ``(N, 1, H, W)`` keeping only fully covered pixels."""
    x = F.conv2d(x, g.view(1, 1, -1, 1))
    return F.conv2d(x, g.view(1, 1, 1, -1))


def ssim(recon: ArrayLike, ref: ArrayLike) -> torch.Tensor:
    """Structural similarity of magnitudes per volume, averaged over frames.

    Parameters
    ----------
    recon, ref
        ``(T, H, W)`` or ``(B, T, H, W)``, real or complex, torch or numpy, with
        ``H, W >= 11``.

    Returns
    -------
    torch.Tensor
        0-d for one volume, ``(B,)`` for a batch.
    """
    x, y, batched = _as_batched_pair(recon, ref)
    b, t, h, w = x.shape
    if h < SSIM_WINDOW or w < SSIM_WINDOW:
        raise ValueError(f"ssim needs H, W >= {SSIM_WINDOW}, got {h}x{w}")
    x, y = _normalise(x, y)
    x, y = x.abs().reshape(b * t, 1, h, w), y.abs().reshape(b * t, 1, h, w)
    g = _gaussian_window(x.device)
    # filter all five moments in one batched call
    moments = _filter_valid(torch.cat([x, y, x * x, y * y, x * y]), g).chunk(5)
    mu_x, mu_y, e_xx, e_yy, e_xy = moments
    var_x, var_y, cov = e_xx - mu_x**2, e_yy - mu_y**2, e_xy - mu_x * mu_y
    c1, c2 = SSIM_K1**2, SSIM_K2**2  # data range 1
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    per_frame = (num / den).mean(dim=(1, 2, 3)).reshape(b, t)
    out = per_frame.mean(dim=1)
    return out if batched else out[0]
