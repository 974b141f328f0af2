"""Linear MRI operators with a small forward/adjoint interface.

The encoding operator of cine MRI is ``A = U F C``: coil sensitivities ``C`` (multi-coil
only), the centred orthonormal 2-D FFT ``F`` per frame, and Cartesian sampling ``U`` (a 0/1
mask applied in place, so ``U^H = U``). Shapes follow docs/design.md: images ``(B, T, H, W)``,
multi-coil k-space ``(B, C, T, H, W)``, masks ``(T, H, W)`` or ``(B, T, H, W)``, coil maps
``(B, C, H, W)``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from passnet_core.fft import fft2c, ifft2c

ArrayLike = torch.Tensor | np.ndarray


class LinearOperator:
    """A linear map with an adjoint. Subclasses implement ``_forward`` and ``_adjoint``.

    ``forward`` and ``adjoint`` check that inputs are complex and have the trailing
    spatial size the operator was built for, so shape mistakes fail loudly and early.
    """

    #: trailing (H, W) the operator acts on; ``None`` accepts any size
    spatial_shape: tuple[int, int] | None = None

    def _check(self, x: torch.Tensor, what: str) -> None:
        if not torch.is_complex(x):
            raise ValueError(
                f"{type(self).__name__}.{what} expects a complex tensor, got {x.dtype}"
            )
        if self.spatial_shape is not None and tuple(x.shape[-2:]) != self.spatial_shape:
            raise ValueError(
                f"{type(self).__name__}.{what}: trailing shape {tuple(x.shape[-2:])} does not "
                f"match the operator's {self.spatial_shape}"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the operator."""
        self._check(x, "forward")
        return self._forward(x)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """Apply the adjoint operator."""
        self._check(y, "adjoint")
        return self._adjoint(y)

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        """``A^H A x``."""
        return self.adjoint(self.forward(x))

    __call__ = forward

    def _forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class FourierOp(LinearOperator):
    """Centred orthonormal 2-D FFT over the last two axes (unitary: adjoint = inverse)."""

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return fft2c(x)

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return ifft2c(y)


class SamplingOp(LinearOperator):
    """Cartesian sampling by a 0/1 mask, kept on the full grid (zeros where not sampled).

    Parameters
    ----------
    mask
        Real tensor ``(T, H, W)`` or ``(B, T, H, W)`` of zeros and ones.
    coil_axis
        Insert a singleton coil axis so the mask broadcasts over ``(B, C, T, H, W)``.
    """

    def __init__(self, mask: torch.Tensor, coil_axis: bool = False) -> None:
        if torch.is_complex(mask):
            raise ValueError("the sampling mask must be real (0/1), not complex")
        if mask.ndim not in (3, 4):
            raise ValueError(
                f"mask must be (T, H, W) or (B, T, H, W), got shape {tuple(mask.shape)}"
            )
        self.spatial_shape = (int(mask.shape[-2]), int(mask.shape[-1]))
        m = mask if mask.ndim == 4 else mask.unsqueeze(0)
        self.mask = m.unsqueeze(1) if coil_axis else m
        # Phase-encode lines: every readout column holds the same (T, H) pattern
        self.lines = bool((self.mask == self.mask[..., :1]).all())

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.mask.to(x.device, x.real.dtype)

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self._forward(y)  # a 0/1 mask is self-adjoint


class CoilOp(LinearOperator):
    """Multiply by coil sensitivities: ``(B, T, H, W) -> (B, C, T, H, W)``; adjoint sums coils."""

    def __init__(self, coil_maps: torch.Tensor) -> None:
        if coil_maps.ndim != 4 or not torch.is_complex(coil_maps):
            raise ValueError(
                "coil maps must be complex (B, C, H, W), "
                f"got {tuple(coil_maps.shape)} {coil_maps.dtype}"
            )
        self.spatial_shape = (int(coil_maps.shape[-2]), int(coil_maps.shape[-1]))
        self.maps = coil_maps.unsqueeze(2)  # (B, C, 1, H, W): the same maps for every frame

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.maps * x.unsqueeze(1)

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return (self.maps.conj() * y).sum(dim=1)


class EncodingOp(LinearOperator):
    """The cine encoding ``A = U F C`` (``C`` omitted for single-coil data).

    Parameters
    ----------
    mask
        0/1 sampling mask ``(T, H, W)`` or ``(B, T, H, W)``.
    coil_maps
        Complex ``(B, C, H, W)`` sensitivities, or ``None`` for single-coil data.
    """

    def __init__(self, mask: torch.Tensor, coil_maps: torch.Tensor | None = None) -> None:
        self.sampling = SamplingOp(mask, coil_axis=coil_maps is not None)
        self.coils = CoilOp(coil_maps) if coil_maps is not None else None
        self.spatial_shape = self.sampling.spatial_shape
        if self.coils is not None and self.coils.spatial_shape != self.spatial_shape:
            raise ValueError(
                f"coil maps {self.coils.spatial_shape} and mask {self.spatial_shape} "
                "disagree in (H, W)"
            )
        self.fourier = FourierOp()

    @property
    def multicoil(self) -> bool:
        return self.coils is not None

    def with_map_phase(self, phase: torch.Tensor) -> EncodingOp:
        """The same sampling with the coil maps times ``phase`` ``(B, H, W)``: it encodes
        ``x conj(phase)`` as this operator encodes ``x`` (for unit ``phase``)."""
        if self.coils is None:
            raise ValueError("with_map_phase needs coil maps (multi-coil data)")
        rotated = copy.copy(self)
        rotated.coils = CoilOp(self.coils.maps[:, :, 0] * phase[:, None])
        return rotated

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        """``A^H A x`` without the centring: ``F_c^H U F_c = F^H U' F`` with ``U'`` ifftshifted.

        ``F^H U' F`` is a circular convolution, which commutes with the rolls of the centred
        transforms, so they cancel once the mask is ifftshifted (for any H, W). Line sampling
        (a mask that does not vary along the readout W) needs one 1-D FFT per coil image:
        there the readout FFT and its inverse cancel too. Any other mask (radial spokes,
        points) takes one uncentred 2-D FFT pair, without the four checkerboard passes of
        ``fft2c`` and ``ifft2c`` (about half the time at cine sizes).
        """
        self._check(x, "normal")
        y = self.coils.forward(x) if self.coils is not None else x
        if self.sampling.lines:
            line_mask = torch.fft.ifftshift(self.sampling.mask[..., :1], dim=-2)
            line_mask = line_mask.to(y.device, y.real.dtype)
            y = torch.fft.ifft(torch.fft.fft(y, dim=-2) * line_mask, dim=-2)
        else:
            mask = torch.fft.ifftshift(self.sampling.mask, dim=(-2, -1))
            mask = mask.to(y.device, y.real.dtype)
            y = torch.fft.ifft2(torch.fft.fft2(y, norm="ortho") * mask, norm="ortho")
        return self.coils.adjoint(y) if self.coils is not None else y

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.coils is not None:
            x = self.coils.forward(x)
        return self.sampling.forward(self.fourier.forward(x))

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        x = self.fourier.adjoint(self.sampling.adjoint(y))
        return self.coils.adjoint(x) if self.coils is not None else x


# The network's and the iterative baselines' units: k-space divided by s = max |A^H d| per
# volume, so thresholds and learned weights do not depend on the scanner's scaling.
NORMALISATION = "max_abs_zero_filled"


def zero_filled(op: EncodingOp, kspace: torch.Tensor) -> torch.Tensor:
    """Zero-filled reconstruction ``A^H d`` (multi-coil: the SENSE-style coil combination)."""
    return op.adjoint(kspace)


class Normalised(NamedTuple):
    """k-space and its zero-filled image in the units of :data:`NORMALISATION`."""

    kspace: torch.Tensor  #: ``d / s``
    image: torch.Tensor  #: ``A^H d / s``, complex ``(B, T, H, W)``
    scale: torch.Tensor  #: ``s = max |A^H d|`` per batch item, ``(B,)``; 0 for all-zero data

    def restore(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, T, H, W)`` images in normalised units -> the data's units (zeros for zero data)."""
        return images * self.scale.to(images.device).view(-1, 1, 1, 1)

    def to_units(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, T, H, W)`` images in the data's units -> normalised units, as the k-space was
        divided (a training target, say)."""
        return images / _divisor(self.scale).to(images.device).view(-1, 1, 1, 1)


def _divisor(scale: torch.Tensor) -> torch.Tensor:
    """``s``, with 1 where the data are all zero (they are left as they are)."""
    return torch.where(scale > 0, scale, torch.ones_like(scale))


def normalise(op: EncodingOp, kspace: torch.Tensor) -> Normalised:
    """Divide each batch item by ``s = max |A^H d|`` (:data:`NORMALISATION`).

    All-zero data are left as they are (divided by 1) and :meth:`Normalised.restore` maps any
    result of them back to zeros, so no caller needs a zero guard of its own.
    """
    x0 = zero_filled(op, kspace)
    scale = x0.abs().flatten(1).amax(dim=1)  # (B,)
    divisor = _divisor(scale)
    k_view = (-1,) + (1,) * (kspace.ndim - 1)
    return Normalised(kspace / divisor.view(k_view), x0 / divisor.view(-1, 1, 1, 1), scale)


def adjointness_error(
    op: LinearOperator,
    x_shape: Sequence[int],
    y_shape: Sequence[int],
    dtype: torch.dtype = torch.complex128,
    seed: int = 0,
) -> float:
    """Relative dot-product test ``|<A x, y> - <x, A^H y>| / (|<A x, y>| + tiny)``.

    Random complex ``x`` and ``y`` of the given shapes; a correct adjoint gives round-off only.
    """
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*x_shape, dtype=dtype, generator=g)
    y = torch.randn(*y_shape, dtype=dtype, generator=g)
    lhs = torch.vdot(op.forward(x).flatten(), y.flatten())
    rhs = torch.vdot(x.flatten(), op.adjoint(y).flatten())
    return float((lhs - rhs).abs() / (lhs.abs() + 1e-30))


# --------------------------------------------------------------------------- inputs


def as_tensor(x: ArrayLike, name: str) -> torch.Tensor:
    """``x`` as a tensor (numpy arrays shared, not copied); anything else is a ``ValueError``."""
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x))
    raise ValueError(f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}")


def validate_inputs(
    kspace: ArrayLike, mask: ArrayLike, coil_maps: ArrayLike | None = None, values: bool = True
) -> None:
    """Check shapes, dtypes and values of a reconstruction request (the one place).

    Used by :func:`passnet_core.inference.reconstruct`, the classical baselines and the
    model's ``forward`` (``values=False``: shapes and dtypes only, no pass over the data).

    Parameters
    ----------
    kspace
        Complex ``(B, T, H, W)`` (single-coil, ``coil_maps=None``) or ``(B, C, T, H, W)``.
    mask
        Real 0/1 ``(T, H, W)`` or ``(B, T, H, W)`` (``B`` equal to the k-space's or 1).
    coil_maps
        Complex ``(B, C, H, W)`` for multi-coil k-space, else ``None``.
    values
        Also check that the data are finite and the mask is 0/1 and not empty.

    Raises
    ------
    ValueError
        Naming the first problem found.
    """
    k = as_tensor(kspace, "kspace")
    m = as_tensor(mask, "mask")
    if not torch.is_complex(k):
        raise ValueError(f"kspace must be complex, got dtype {k.dtype}")
    if coil_maps is None and k.ndim != 4:
        raise ValueError(
            f"single-coil kspace must be (B, T, H, W), got shape {tuple(k.shape)}"
            + ("; multi-coil k-space needs coil_maps" if k.ndim == 5 else "")
        )
    if coil_maps is not None and k.ndim != 5:
        raise ValueError(
            f"with coil_maps, kspace must be multi-coil (B, C, T, H, W), got {tuple(k.shape)}"
        )
    if any(n == 0 for n in k.shape):
        raise ValueError(f"kspace has an empty axis: shape {tuple(k.shape)}")
    b, (t, h, w) = k.shape[0], tuple(k.shape[-3:])
    if torch.is_complex(m):
        raise ValueError("mask must be real (0/1), not complex")
    if m.ndim not in (3, 4) or tuple(m.shape[-3:]) != (t, h, w):
        raise ValueError(
            f"mask of shape {tuple(m.shape)} does not broadcast to k-space frames "
            f"(T, H, W) = {(t, h, w)}; expected (T, H, W) or (B, T, H, W)"
        )
    if m.ndim == 4 and m.shape[0] not in (1, b):
        raise ValueError(f"mask batch size {m.shape[0]} does not match k-space batch size {b}")
    if values:
        _check_values(k, m)
    if coil_maps is not None:
        c = as_tensor(coil_maps, "coil_maps")
        expected = (b, k.shape[1], h, w)
        if not torch.is_complex(c) or tuple(c.shape) != expected:
            raise ValueError(
                f"coil_maps must be complex (B, C, H, W) = {expected}, "
                f"got {tuple(c.shape)} {c.dtype}"
            )
        if values and not torch.isfinite(torch.view_as_real(c)).all():
            raise ValueError("coil_maps contain NaN or inf")


def encoding(
    kspace: ArrayLike, mask: ArrayLike, coil_maps: ArrayLike | None = None
) -> tuple[torch.Tensor, EncodingOp]:
    """Validate a reconstruction request once and build its operator on the k-space device.

    Returns
    -------
    tuple
        ``(kspace, op)``: the k-space as a tensor and ``EncodingOp(mask, coil_maps)``.

    Raises
    ------
    ValueError
        As :func:`validate_inputs`.
    """
    validate_inputs(kspace, mask, coil_maps)
    k = as_tensor(kspace, "kspace")
    maps = None if coil_maps is None else as_tensor(coil_maps, "coil_maps").to(k.device)
    return k, EncodingOp(as_tensor(mask, "mask").to(k.device, torch.float32), maps)


def _check_values(k: torch.Tensor, m: torch.Tensor) -> None:
    mf = m.to(torch.float32)
    if not torch.isfinite(mf).all() or not ((mf == 0) | (mf == 1)).all():
        raise ValueError("mask values must be 0 or 1")
    if not mf.any():
        raise ValueError("mask is empty: no k-space sample is acquired")
    if not torch.isfinite(torch.view_as_real(k)).all():
        raise ValueError("kspace contains NaN or inf")
