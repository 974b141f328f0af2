"""Training samples and torch data sets for PASSNet.

Sources are plain sequences of ground-truth :class:`~training.acquisition.Cine` s:
:class:`SyntheticCines` renders phantoms on the fly, and ``training.loaders`` reads OCMR /
CMRxRecon files into lists. :class:`CineCropDataset` cuts ``size x size x 16`` windows out of
them (multi-resolution as in the paper's appendix A.2, or a fixed size), draws a mask and hands
the crop to the acquisition model (:mod:`training.acquisition`), which returns a
:class:`~training.acquisition.Sample`.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from passnet_core.fft import fft2c
from passnet_core.masks import make_mask, parse_mask_name, seed_from_name
from training.acquisition import Cine, Sample, acquire, acquire_as_chain
from training.phantom import (
    PhantomParams,
    body_support,
    cine_phantom,
    coil_sensitivities,
    draw_params,
)

MULTIRES_SIZES = (64, 96, 128, 144, 156)
CROP_FRAMES = 16
CROP_STRIDE = (32, 32, 8)  # (H, W, T) as in the paper
Window = tuple[int, int, int, int, int, int]  # (t0, y0, x0, frames, height, width)


class SyntheticCines(Sequence):
    """``n`` phantom cines rendered on demand, reproducible from ``(seed, index)``.

    Parameters
    ----------
    n
        Number of samples.
    seed
        Base seed; sample ``i`` uses ``default_rng([seed, i])``.
    coil_mode
        ``"single"`` (no maps) or ``"multi"`` (``n_coils`` Biot-Savart maps).
    n_coils
        Coil count, or a list of counts from which each sample draws one (coil geometry
        varies with the count and the per-sample coil seed).
    frames, matrix
        Fixed frame count / ``(H, W)``; drawn per sample (12-30, 64-192) when ``None``.
    upsample
        Render at ``upsample`` x the matrix and keep the central k-space (band-limited target
        with realistic Gibbs ringing); 1 renders directly (faster).
    """

    def __init__(
        self,
        n: int,
        seed: int = 0,
        coil_mode: str = "single",
        n_coils: int | Sequence[int] = 8,
        frames: int | None = None,
        matrix: int | tuple[int, int] | None = None,
        upsample: int = 2,
    ) -> None:
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        if coil_mode not in ("single", "multi"):
            raise ValueError(f"coil_mode must be 'single' or 'multi', got {coil_mode!r}")
        if upsample not in (1, 2):
            raise ValueError(f"upsample must be 1 or 2, got {upsample!r}")
        counts = [n_coils] if isinstance(n_coils, int) else list(n_coils)
        if not counts or any(
            isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in counts
        ):
            raise ValueError(
                f"n_coils must be a positive integer or a list of them, got {n_coils!r}"
            )
        self.n, self.seed, self.coil_mode, self.coil_counts = n, seed, coil_mode, counts
        self.frames, self.matrix, self.upsample = frames, matrix, upsample

    def __len__(self) -> int:
        return self.n

    def params(self, i: int) -> PhantomParams:
        """Anatomy of sample ``i`` (cheap: no rendering)."""
        return draw_params(np.random.default_rng([self.seed, i]), self.frames, self.matrix)

    def shape(self, i: int) -> tuple[int, int, int]:
        p = self.params(i)
        return p.frames, p.height, p.width

    def __getitem__(self, i: int) -> Cine:  # type: ignore[override]
        if not -self.n <= i < self.n:
            raise IndexError(f"sample {i} out of range for {self.n} samples")
        i %= self.n
        p = self.params(i)
        t, h, w = p.frames, p.height, p.width
        u = self.upsample
        image = torch.from_numpy(cine_phantom(t, u * h, u * w, params=p))
        if u > 1:  # keep the central (H, W) of k-space; dividing by u keeps the intensities
            k = fft2c(image)
            y0, x0 = (u * h) // 2 - h // 2, (u * w) // 2 - w // 2
            image = torch.fft.ifftshift(k[..., y0 : y0 + h, x0 : x0 + w], dim=(-2, -1))
            image = torch.fft.fftshift(torch.fft.ifft2(image, norm="ortho"), dim=(-2, -1)) / u
        maps = None
        if self.coil_mode == "multi":
            support = body_support(p, h, w)
            rng = np.random.default_rng([self.seed, i, 1])
            n_coils = self.coil_counts[int(rng.integers(len(self.coil_counts)))]
            maps = coil_sensitivities(n_coils, h, w, rng, p, support=support)
        target = image.numpy().astype(np.complex64)
        return Cine(target, maps, f"synthetic-{self.seed}-{i}")


def crop_windows(
    shape: tuple[int, int, int],
    sizes: Sequence[int],
    frames: int = CROP_FRAMES,
    stride: tuple[int, int, int] = CROP_STRIDE,
) -> list[Window]:
    """All crop windows ``(t0, y0, x0, frames, height, width)`` of a ``(T, H, W)`` volume.

    For every size ``s`` the window is ``min(s, H) x min(s, W) x min(frames, T)`` (smaller
    volumes fall back to their own size) placed with ``stride = (H, W, T)`` steps; duplicate
    windows from the fallback are listed once.
    """
    t, h, w = shape
    sy, sx, st = stride
    if min(sy, sx, st) < 1:
        raise ValueError(f"stride must be positive, got {stride}")
    if not sizes or min(sizes) < 1 or frames < 1:
        raise ValueError(f"crop sizes and frames must be positive, got {sizes}, {frames}")
    windows: dict[Window, None] = {}
    ft = min(frames, t)
    for s in sizes:
        hs, ws = min(s, h), min(s, w)
        for t0 in range(0, t - ft + 1, st):
            for y0 in range(0, h - hs + 1, sy):
                for x0 in range(0, w - ws + 1, sx):
                    windows[(t0, y0, x0, ft, hs, ws)] = None
    return list(windows)


class CineCropDataset(Dataset):
    """Cropped, undersampled, normalised training/validation examples.

    Parameters
    ----------
    source
        Sequence of :class:`Cine`; ``source.shape(i)`` is used when available so the
        window index is built without loading samples.
    crop_mode
        ``"multires"`` (windows of every size in ``crop_sizes``) or ``"fixed"``
        (``fixed_size`` only).
    masks
        Mask names ``KIND-NUMBER``; one is drawn per item.
    train
        ``True``: a fresh random mask every ``__getitem__``. ``False``: a deterministic mask
        seeded by :func:`~passnet_core.masks.seed_from_name` of the sample name and window.
    use_coil_maps
        Simulate multi-coil k-space when the sample has maps; ``False`` forces single-coil.
    cache_size
        Recently used source samples kept in memory (consecutive crops of one volume).
    noise_levels
        ``(low, high)``: white complex Gaussian noise is added to every acquired k-space
        sample, with standard deviation ``level * max |target volume|`` per coil and ``level``
        drawn uniformly from the range (fixed per item for validation). This is the noise
        model of ``passnet simulate`` after prewhitening (docs/method.md).

    ``__getitem__`` returns a :class:`~training.acquisition.Sample` (the true maps of
    multi-coil samples, white noise: :func:`training.acquisition.acquire`).
    """

    def __init__(
        self,
        source: Sequence[Cine],
        crop_mode: str = "multires",
        crop_sizes: Sequence[int] = MULTIRES_SIZES,
        fixed_size: int = 128,
        frames: int = CROP_FRAMES,
        stride: tuple[int, int, int] = CROP_STRIDE,
        masks: Sequence[str] = ("radial-16", "vds-8"),
        train: bool = True,
        use_coil_maps: bool = True,
        cache_size: int = 2,
        noise_levels: Sequence[float] = (0.0, 0.0),
    ) -> None:
        if len(noise_levels) != 2 or not 0 <= noise_levels[0] <= noise_levels[1]:
            raise ValueError(
                f"noise_levels must be (low, high) with 0 <= low <= high, got {noise_levels}"
            )
        self.noise_levels = (float(noise_levels[0]), float(noise_levels[1]))
        if crop_mode not in ("multires", "fixed"):
            raise ValueError(f"crop_mode must be 'multires' or 'fixed', got {crop_mode!r}")
        if not masks:
            raise ValueError("masks: need at least one mask name")
        self.masks = [parse_mask_name(m) for m in masks]
        self.mask_names = list(masks)
        sizes = list(crop_sizes) if crop_mode == "multires" else [fixed_size]
        self.source, self.train, self.use_coil_maps = source, train, use_coil_maps
        self.index: list[tuple[int, Window]] = []
        for i in range(len(source)):
            shape = source.shape(i) if hasattr(source, "shape") else source[i].shape
            self.index.extend((i, win) for win in crop_windows(shape, sizes, frames, stride))
        self._cache: OrderedDict[int, Cine] = OrderedDict()
        self._cache_size = cache_size

    def __len__(self) -> int:
        return len(self.index)

    def _sample(self, i: int) -> Cine:
        if i in self._cache:
            self._cache.move_to_end(i)
            return self._cache[i]
        sample = self.source[i]
        if self._cache_size > 0:
            self._cache[i] = sample
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return sample

    def describe(self, k: int) -> str:
        """Human-readable name of item ``k``: sample name and window."""
        i, (t0, y0, x0, ft, hs, ws) = self.index[k]
        return f"{self._sample(i).name}[t{t0}+{ft},y{y0}+{hs},x{x0}+{ws}]"

    def _rng(self, k: int) -> np.random.Generator:
        if self.train:  # fresh entropy: differs per step and per worker
            return np.random.default_rng(int(torch.randint(2**62, ()).item()))
        return np.random.default_rng(seed_from_name(self.describe(k)))

    def _mask(self, rng: np.random.Generator, shape: tuple[int, int, int]) -> torch.Tensor:
        kind, accel = self.masks[int(rng.integers(len(self.masks)))]
        return make_mask(kind, accel, *shape, seed=int(rng.integers(2**63 - 1)))

    def __getitem__(self, k: int) -> Sample:
        i, (t0, y0, x0, ft, hs, ws) = self.index[k]
        sample = self._sample(i)
        target = sample.target[t0 : t0 + ft, y0 : y0 + hs, x0 : x0 + ws]
        maps = None if sample.coil_maps is None else sample.coil_maps[:, y0 : y0 + hs, x0 : x0 + ws]
        rng = self._rng(k)
        mask = self._mask(rng, (ft, hs, ws))
        sigma = rng.uniform(*self.noise_levels) * float(np.abs(sample.target).max())
        return self._acquire(target, maps, mask, sigma, rng)

    def _acquire(
        self,
        target: np.ndarray,
        maps: np.ndarray | None,
        mask: torch.Tensor,
        sigma: float,
        rng: np.random.Generator,
    ) -> Sample:
        """One crop through the acquisition model: exact maps and white noise."""
        target_t = torch.from_numpy(np.ascontiguousarray(target)).to(torch.complex64)
        maps_t = None
        if maps is not None and self.use_coil_maps:
            maps_t = torch.from_numpy(np.ascontiguousarray(maps)).to(torch.complex64)
        return acquire(target_t, maps_t, mask, sigma, rng)


def collate_cine(batch: list[Sample]) -> Sample:
    """Stack samples into one with a leading batch axis on every field.

    Crops of different sizes cannot be stacked: use ``batch_size=1`` (as the paper does) or
    the fixed crop mode. Raises ``ValueError`` naming the mismatch.
    """
    if not batch:
        raise ValueError("cannot collate an empty batch")
    if len({item.coil_maps is None for item in batch}) > 1:
        raise ValueError("single- and multi-coil items cannot share a batch")
    stacked: dict[str, torch.Tensor | None] = {}
    for field in dataclasses.fields(Sample):
        values = [getattr(item, field.name) for item in batch]
        if values[0] is None:
            stacked[field.name] = None
            continue
        shapes = {tuple(v.shape) for v in values}
        if len(shapes) > 1:
            raise ValueError(
                f"cannot batch {field.name} of different shapes {sorted(shapes)}; use "
                "batch_size=1 with multi-resolution crops, or crop_mode='fixed'"
            )
        stacked[field.name] = torch.stack(values)
    return Sample(**stacked)  # type: ignore[arg-type]


class ChainCropDataset(CineCropDataset):
    """Crops as the replay chain feeds them to the network (``data.acquisition: chain``).

    Where :class:`CineCropDataset` gives the network the true coil maps and white noise, each
    item here goes through :func:`training.acquisition.acquire_as_chain`: correlated receiver
    noise and a noise scan, prewhitening with the estimated covariance, coil maps estimated by
    the chain's own code, and the target those maps give.
    """

    def _acquire(
        self,
        target: np.ndarray,
        maps: np.ndarray | None,
        mask: torch.Tensor,
        sigma: float,
        rng: np.random.Generator,
    ) -> Sample:
        if maps is None:
            raise ValueError("data.acquisition: chain needs multi-coil samples (coil_mode: multi)")
        mask_np = mask.numpy().astype(np.float32)
        return acquire_as_chain(
            target.astype(np.complex64), maps.astype(np.complex64), mask_np, sigma, rng
        )
