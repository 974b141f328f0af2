"""The acquisition model: a ground-truth cine and its coil maps -> what a scanner records, and
what the chain then estimates and feeds the network.

One module for every producer of data, so training, evaluation, the benchmarks and
``passnet simulate`` cannot drift apart:

- :class:`Cine` is the one ground-truth type (a cine, its coil maps, a name and its family);
  :class:`Sample` the one type fed to the network (normalised k-space, mask, maps, target).
- :func:`record_cartesian` is the scanner of ``passnet simulate``: a cine rendered at twice the
  resolution, cropped in k-space (no inverse crime), readout oversampling, correlated coil noise
  on the acquired lines; :func:`random_coil_covariance` and :func:`noise_scan` its receiver.
- :func:`acquire` is the model with exact maps: white noise (prewhitened receiver noise) on the
  acquired samples, the true maps, the one normalisation (:func:`passnet_core.operators.
  normalise`).
- :func:`acquire_as_chain` is what the chain feeds the network: correlated noise, prewhitening
  with the covariance estimated from a noise scan (:mod:`gadgets.kspace_prep`) and coil maps
  estimated from the undersampled data by the chain's own code (:func:`gadgets.pipeline.
  estimate_maps`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from gadgets.kspace_prep import central_run, frame_sum, noise_covariance, prewhitening_matrix
from gadgets.pipeline import estimate_maps
from gadgets.slices import SliceData
from passnet_core.fft import fft2c, ifft2c
from passnet_core.operators import EncodingOp, normalise

# Noise samples of the one noise scan `passnet simulate` writes (2x-oversampled readout of a
# 128 matrix): the chain estimates its prewhitening from that many samples.
CHAIN_NOISE_SAMPLES = 256


@dataclass(frozen=True)
class Cine:
    """One ground-truth cine slice.

    Attributes
    ----------
    target
        complex64 ``(T, H, W)`` image (coil-combined for multi-coil data).
    coil_maps
        complex64 ``(C, H, W)`` with ``sum_c |S_c|^2 = 1`` on the object, or ``None``.
    name
        Unique, stable identifier (seeds validation and evaluation masks and noise).
    family
        Where it comes from, e.g. ``"synthetic"`` (the training generator) or ``"heldout"``.
    """

    target: np.ndarray
    coil_maps: np.ndarray | None
    name: str
    family: str = "synthetic"

    def __post_init__(self) -> None:
        if self.target.ndim != 3 or not np.iscomplexobj(self.target):
            raise ValueError(
                f"{self.name}: target must be complex (T, H, W), got {self.target.shape} "
                f"{self.target.dtype}"
            )
        if self.coil_maps is not None and (
            self.coil_maps.ndim != 3 or self.coil_maps.shape[1:] != self.target.shape[1:]
        ):
            raise ValueError(
                f"{self.name}: coil maps {self.coil_maps.shape} do not match target "
                f"{self.target.shape} (expected (C, H, W))"
            )

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.target.shape)


@dataclass(frozen=True)
class Sample:
    """What the network is fed, in :data:`~passnet_core.operators.NORMALISATION` units.

    Without a batch axis: ``kspace`` ``(T, H, W)`` or ``(C, T, H, W)``, ``mask`` ``(T, H, W)``
    float32, ``target`` ``(T, H, W)``, ``scale`` (the divisor ``max |A^H d|``, 0-d) and
    ``coil_maps`` ``(C, H, W)`` or ``None``, and ``start``, the network's first estimate
    ``(T, H, W)`` where it was computed ahead (:mod:`training.chain_files`), else ``None``.
    :func:`training.data.collate_cine` stacks samples
    into one with a leading batch axis on every field.
    """

    kspace: torch.Tensor
    mask: torch.Tensor
    target: torch.Tensor
    scale: torch.Tensor
    coil_maps: torch.Tensor | None = None
    start: torch.Tensor | None = None  # the network's first estimate, where cached

    def batched(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``(kspace, mask, coil_maps)`` of this one sample with a batch axis of 1."""
        maps = None if self.coil_maps is None else self.coil_maps[None]
        return self.kspace[None], self.mask, maps

    def to(self, device: torch.device | str) -> Sample:
        """A copy with every tensor on ``device``."""
        maps = None if self.coil_maps is None else self.coil_maps.to(device)
        start = None if self.start is None else self.start.to(device)
        return Sample(
            self.kspace.to(device), self.mask.to(device), self.target.to(device),
            self.scale.to(device), maps, start,
        )  # fmt: skip


# --------------------------------------------------------------------------- receiver


def random_coil_covariance(n_coils: int, rng: np.random.Generator) -> np.ndarray:
    """A random receiver-noise covariance to simulate: Hermitian positive definite ``(C, C)``,
    mean diagonal 1 (the gadgets *estimate* one from noise scans: ``gadgets.kspace_prep``).

    Unequal coil noise levels and correlations of a few tens of percent, as in real arrays.
    """
    mix = np.eye(n_coils) + 0.25 * (
        rng.normal(size=(n_coils, n_coils)) + 1j * rng.normal(size=(n_coils, n_coils))
    ) / np.sqrt(2)
    gains = np.diag(rng.uniform(0.8, 1.25, n_coils))
    cov = gains @ mix @ mix.conj().T @ gains
    return (cov / np.real(np.trace(cov)) * n_coils).astype(np.complex128)


def noise_scan(noise_chol: np.ndarray, n_samples: int, rng: np.random.Generator) -> np.ndarray:
    """``(C, n_samples)`` receiver noise with covariance ``noise_chol @ noise_chol^H``."""
    c = noise_chol.shape[0]
    white = rng.standard_normal((c, n_samples)) + 1j * rng.standard_normal((c, n_samples))
    return noise_chol @ (white / np.sqrt(2))


def add_kspace_noise(
    kspace: torch.Tensor, mask: torch.Tensor, sigma: float, rng: np.random.Generator
) -> torch.Tensor:
    """Add white complex Gaussian noise of standard deviation ``sigma`` to acquired samples.

    This is the noise model with exact maps: ``passnet simulate``'s correlated coil noise after
    prewhitening (unit mean diagonal, so ``sigma`` is its ``noise_level`` times the peak).
    ``mask`` broadcasts against ``kspace``; unacquired samples stay zero.
    """
    if sigma == 0:
        return kspace
    white = torch.from_numpy(rng.standard_normal((*kspace.shape, 2), dtype=np.float32))
    noise = torch.view_as_complex(white).to(kspace.dtype) * (sigma / np.sqrt(2))
    return kspace + noise * mask


# --------------------------------------------------------------------------- the scanner


@dataclass
class SimulatedSlice:
    """One recorded slice: acquired-grid k-space, ground truth, maps and line mask."""

    kspace: np.ndarray  # (C, T, H, RO) complex64 on the full grid, noise on acquired lines
    truth: np.ndarray  # (T, H, W) complex64
    coil_maps: np.ndarray  # (C, H, W) complex64
    lines: np.ndarray  # (T, H) bool, acquired phase-encode lines


def _fft_crop(x: torch.Tensor, dim: int, n_out: int, pad_to: int | None = None) -> torch.Tensor:
    """Centred orthonormal FFT along ``dim`` keeping only the ``n_out`` central samples.

    ``pad_to`` zero-pads the axis (centred) first, i.e. widens the field of view, which is how
    readout oversampling is simulated. The centring shifts become a phase ramp on the kept
    samples, so the full spectrum is never shifted. The result is scaled by ``sqrt(n_out / n)``
    so that an orthonormal inverse FFT over ``n_out`` points gives back the image intensities.
    """
    n_in = x.shape[dim]
    n = max(n_in, pad_to or n_in)
    k = torch.arange(n_out) - n_out // 2  # centred frequency indices that are kept
    spectrum = torch.fft.fft(x, n=n, dim=dim, norm="ortho")  # zero padding at the end
    kept = spectrum.index_select(dim, torch.remainder(k, n))
    # pixel j sits at coordinate j - n_in//2: undo the offset of end-padding with a phase ramp
    ramp = torch.exp(2j * torch.pi * k * (n_in // 2) / n).to(kept.dtype) * float(np.sqrt(n_out / n))
    shape = [1] * x.ndim
    shape[dim] = n_out
    return kept * ramp.reshape(shape)


def record_cartesian(
    hi: np.ndarray,
    maps_hi: np.ndarray,
    support: np.ndarray,
    lines: np.ndarray,
    oversampling: bool,
    noise_chol: np.ndarray,
    rng: np.random.Generator,
) -> SimulatedSlice:
    """Record a cine rendered at twice the target resolution, as a Cartesian scanner does.

    Keep the central ``(H, W)`` of each coil's k-space (``(H, 2W)`` with readout
    oversampling), add noise ``noise_chol @ white`` on the acquired ``lines`` only, and
    compute the ground truth ``sum_c conj(S_c) ifft2c(k_c)`` (noise-free, fully sampled,
    oversampling removed) with the maps decimated to ``(H, W)`` and multiplied by ``support``.

    Parameters
    ----------
    hi, maps_hi
        Complex cine ``(T, 2H, 2W)`` and coil maps ``(C, 2H, 2W)``.
    support
        ``(H, W)`` object support the stored maps are cut to.
    lines, oversampling, noise_chol, rng
        Acquired lines ``(T, H)``, 2x readout oversampling, the noise's Cholesky factor and
        the generator that draws it.
    """
    n_coils = maps_hi.shape[0]
    t, h, w = hi.shape[0], hi.shape[1] // 2, hi.shape[2] // 2
    image = torch.from_numpy(np.ascontiguousarray(hi, dtype=np.complex64))
    ro = 2 * w if oversampling else w
    kspace = torch.empty((n_coils, t, h, ro), dtype=torch.complex64)
    for c in range(n_coils):  # one coil at a time keeps memory at O(T H W)
        k = _fft_crop(torch.from_numpy(maps_hi[c]) * image, -2, h)
        kspace[c] = _fft_crop(k, -1, ro, pad_to=2 * ro)

    # pixel i of the target grid is pixel 2i of the 2x grid: decimate the continuous maps
    maps = maps_hi[:, ::2, ::2] * support
    coil_images = ifft2c(kspace)[..., (ro - w) // 2 : (ro - w) // 2 + w]
    truth = (torch.from_numpy(maps).conj()[:, None] * coil_images).sum(0)

    noisy = kspace.numpy()
    t_idx, ky_idx = np.nonzero(lines)
    shape = (n_coils, t_idx.size * ro)
    white = rng.standard_normal(shape, dtype=np.float32) + 1j * rng.standard_normal(
        shape, dtype=np.float32
    )
    noise = noise_chol.astype(np.complex64) @ (white / np.sqrt(2))
    noisy[:, t_idx, ky_idx] += noise.reshape(n_coils, t_idx.size, ro)
    truth_images = truth.numpy().astype(np.complex64)
    return SimulatedSlice(noisy, truth_images, maps.astype(np.complex64), lines)


# --------------------------------------------------------------------------- network input


def _normalised_sample(
    op: EncodingOp,
    kspace: torch.Tensor,
    mask: torch.Tensor,
    target: torch.Tensor,
    coil_maps: torch.Tensor | None,
) -> Sample:
    """A batch-of-one ``kspace`` and its target in the network's units (the one normalisation)."""
    units = normalise(op, kspace)
    target = units.to_units(target[None])[0]
    return Sample(units.kspace[0], mask, target, units.scale[0].to(torch.float32), coil_maps)


def acquire(
    target: torch.Tensor,
    coil_maps: torch.Tensor | None,
    mask: torch.Tensor,
    sigma: float,
    rng: np.random.Generator,
) -> Sample:
    """Undersample a cine with exact maps and white noise, normalised for the network.

    Parameters
    ----------
    target
        complex64 ``(T, H, W)`` ground truth.
    coil_maps
        complex64 ``(C, H, W)`` or ``None`` (single-coil).
    mask
        float32 0/1 ``(T, H, W)``.
    sigma
        Noise standard deviation on every acquired sample (per coil).
    rng
        Draws the noise.
    """
    op = EncodingOp(mask, None if coil_maps is None else coil_maps[None])
    kspace = add_kspace_noise(op.forward(target[None]), mask, sigma, rng)
    return _normalised_sample(op, kspace, mask, target, coil_maps)


def acquire_as_chain(
    target: np.ndarray,
    coil_maps: np.ndarray,
    mask: np.ndarray,
    sigma: float,
    rng: np.random.Generator,
) -> Sample:
    """What the chain feeds the network for a cine, with everything it estimates estimated.

    Correlated receiver noise (a random coil covariance, ``sigma`` per coil on average) on the
    acquired samples and a noise scan of :data:`CHAIN_NOISE_SAMPLES` samples; prewhitening
    with the covariance estimated from that scan; coil maps estimated from the undersampled
    data's time average by the chain's own :func:`~gadgets.pipeline.estimate_maps` (ESPIRiT,
    Walsh where the centre is too small). The target is what the chain's SENSE combination
    gives for noise-free, fully sampled data: the prewhitened coil images ``W S rho`` combined
    with the estimated maps, so target and data agree under the network's forward model, and
    ``passnet recon`` scores against the same weighting (``|W S|``). Readout oversampling is
    not simulated: the chain's FFT crop that removes it leaves white noise white.

    Parameters
    ----------
    target, coil_maps
        complex64 ``(T, H, W)`` cine and its true ``(C, H, W)`` maps.
    mask
        float32 0/1 ``(T, H, W)``.
    sigma
        Receiver noise standard deviation (mean over coils) on every acquired sample.
    rng
        Draws the coil covariance and the noise.
    """
    c = coil_maps.shape[0]
    coil_images = coil_maps[:, None] * target[None]  # (C, T, H, W)
    chol = np.linalg.cholesky(random_coil_covariance(c, rng)) * max(sigma, 1e-6)
    kspace = fft2c(torch.from_numpy(coil_images)).numpy()
    kspace = (kspace + noise_scan(chol, kspace[0].size, rng).reshape(kspace.shape)) * mask[None]
    whitening = prewhitening_matrix(noise_covariance([noise_scan(chol, CHAIN_NOISE_SAMPLES, rng)]))
    kspace = np.einsum("ij,jthw->ithw", whitening, kspace).astype(np.complex64)
    truth = np.einsum("ij,jthw->ithw", whitening, coil_images).astype(np.complex64)
    total, count = frame_sum(kspace)
    t, h, w = mask.shape
    slice_data = SliceData(
        kspace=kspace, mask=mask, calibration=(total / np.maximum(count, 1)).astype(np.complex64),
        reference=[], slice_index=0, field_of_view=(1.0, 1.0, 1.0), recon_matrix=(w, h),
        calib_lines=central_run(mask.max(axis=(0, 2)) > 0),
    )  # fmt: skip
    estimated = estimate_maps(slice_data)
    assert estimated is not None  # multi-coil
    maps = torch.from_numpy(estimated.astype(np.complex64))
    combined = torch.from_numpy((truth * estimated.conj()[:, None]).sum(axis=0))
    mask_t = torch.from_numpy(mask)
    op = EncodingOp(mask_t, maps[None])
    return _normalised_sample(op, torch.from_numpy(kspace)[None], mask_t, combined, maps)
