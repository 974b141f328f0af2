"""Small helpers shared by the test suite (operators, phantoms, coil maps).

They live in the package, not under ``tests/``, so tests of other packages can import them
without path tricks. Nothing here is used at run time.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

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
