"""Centred, orthonormal 2-D Fourier transforms over the last two axes.

"Centred" means DC sits at index (H//2, W//2) in both image and k-space, the layout scanners
and ISMRMRD use; "orthonormal" makes the transform unitary so ||F x|| = ||x|| and F^H = F^-1.

For even sizes the shifts are done by modulation instead of ``roll``: with the checkerboard
``c[h, w] = (-1)^(h + w)``, ``fftshift(fft2(ifftshift(x))) = (-1)^(H/2 + W/2) c * fft2(c * x)``
(the same holds for the inverse). Two real multiplications replace four memory-bound rolls,
which cost more than the FFT itself on multi-coil cine data (benchmarks/, BENCHMARKS.md).
Odd sizes use the rolls.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

_DIMS = (-2, -1)


@functools.lru_cache(maxsize=32)
def _checkerboard(
    h: int, w: int, device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """The boards applied before and after the transform: ``c`` and ``(-1)^(H/2 + W/2) c``.

    Built outside inference mode: the cache outlives the call, and an inference tensor
    cached by one ``reconstruct`` would break autograd in a later training step.
    """
    with torch.inference_mode(False), torch.no_grad():
        return _make_boards(h, w, device, dtype)


def _make_boards(
    h: int, w: int, device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    rows = 1 - 2 * (torch.arange(h, device=device) % 2)
    cols = 1 - 2 * (torch.arange(w, device=device) % 2)
    board = (rows[:, None] * cols[None, :]).to(dtype)
    return board, board * (-1) ** ((h // 2 + w // 2) % 2)


def _centred(x: torch.Tensor, transform: Callable[..., torch.Tensor]) -> torch.Tensor:
    h, w = x.shape[-2:]
    if h % 2 or w % 2:
        x = torch.fft.ifftshift(x, dim=_DIMS)
        return torch.fft.fftshift(transform(x, dim=_DIMS, norm="ortho"), dim=_DIMS)
    before, after = _checkerboard(h, w, x.device, x.real.dtype)
    return transform(x * before, dim=_DIMS, norm="ortho") * after


def fft2c(x: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal 2-D FFT over the last two axes (image -> k-space)."""
    return _centred(x, torch.fft.fft2)


def ifft2c(k: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal 2-D inverse FFT over the last two axes (k-space -> image)."""
    return _centred(k, torch.fft.ifft2)
