"""Training samples exactly as the chain feeds the network: whole simulated scanner files.

``data.acquisition: chain_files``. Each sample is one ``passnet simulate`` file of a training
generator (``data.phantoms``: the cardiac phantom and the generic star-shaped objects of
:mod:`training.blob_phantom`; the independent ellipse family stays unseen) with its own draw
of generator, mask kind and R, frames, matrix, coils and noise level. The chain's own code reads it
(:func:`gadgets.assembly.assemble`: noise scan and prewhitening, readout oversampling removal,
calibration from the time average) and estimates its coil maps
(:func:`gadgets.pipeline.estimate_maps`); :func:`passnet_core.operators.normalise` puts it in
the network's units, as :func:`passnet_core.inference.reconstruct` does. Nothing here
re-implements a step of the chain, so training sees what ``passnet recon`` feeds the network,
at the size a scanner writes (the crop data sets, :mod:`training.data`, cannot: a crop has no
readout oversampling, and its maps come from a 48-64 pixel centre).

Radial masks (``radial-N``: ``N`` pseudo-radial spokes per frame on the Cartesian grid, as the
evaluation draws them) cannot be written as scanner line readouts. Their file samples every line;
the chain's ingest reads it as above, and :func:`keep_spokes` then keeps only the spokes, with
the calibration (the time average the maps come from) remade from what the spokes sampled,
before the chain's map estimation. Noise, prewhitening and oversampling removal are those of
the acquired samples, so a radial sample differs from a line file only in which samples exist.

The target is the file's truth as the chain's SENSE combination sees it: the prewhitened true
coil images ``W S rho`` combined with the estimated maps, times the one complex factor that fits
it to the acquired samples (least squares), which takes up the FFT and oversampling-removal
scalings.

Simulation, ingest, maps and the classical start (the network's first estimate; it has no
learned parameters) take seconds per file, so each sample is computed once and stored as a
safetensors file named by its draw and the start's settings: a training step runs only the
learned stages, and a second run or a resume reuses the cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import h5py
import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import Dataset

from gadgets.assembly import assemble
from gadgets.pipeline import estimate_maps
from gadgets.scoring import TRUTH_GROUP
from gadgets.slices import SliceData
from passnet_core.ismrmrd_io import RawData, read_raw
from passnet_core.masks import parse_mask_name, radial_mask
from passnet_core.model import PASSNet, PASSNetConfig
from passnet_core.operators import NORMALISATION, EncodingOp, normalise
from training.acquisition import Sample
from training.simulate import simulate_cine
from training.simulate_cli import LINE_MASK_KINDS, PHANTOMS

log = logging.getLogger(__name__)

#: bump when what a cached sample holds, or how it is made, changes
CACHE_VERSION = 1
VALIDATION_SEED_OFFSET = 1_000_000  # validation files: a disjoint seed stream
#: what ``data.masks`` may name: the line masks a scanner file holds, and pseudo-radial spokes
MASK_KINDS = (*LINE_MASK_KINDS, "radial")
#: what the scanner file of a radial sample samples (``passnet simulate`` mask and R): every
#: line, the spokes are kept after the ingest (:func:`keep_spokes`)
EVERY_LINE = ("vds_lines", 1.0)


@dataclass(frozen=True)
class FileDraw:
    """What one training file is: ``passnet simulate`` settings drawn from its seed."""

    seed: int
    mask: str  # MASK_KINDS
    accel: float  # R; for radial the spokes per frame
    frames: int
    matrix: int
    coils: int
    noise: float
    phantom: str  # PHANTOMS

    def describe(self) -> str:
        return (
            f"seed {self.seed}: {self.phantom}, {self.mask}-{self.accel:g}, {self.frames} x "
            f"{self.matrix} x {self.matrix}, {self.coils} coils, noise {self.noise:.3f}"
        )


@dataclass(frozen=True)
class FileSpace:
    """The ranges files are drawn from (``data`` settings of the training YAML)."""

    masks: tuple[str, ...]  # "vds_lines-8", "equispaced-6", ...
    frame_counts: tuple[int, ...]
    matrices: tuple[int, ...]
    coils: tuple[int, ...]
    noise_levels: tuple[float, float]
    phantoms: tuple[str, ...] = ("cardiac",)

    def __post_init__(self) -> None:
        for name in self.masks:
            kind, _ = parse_mask_name(name)
            if kind not in MASK_KINDS:
                raise ValueError(
                    f"data.masks: {name!r} is not a mask a scanner acquires cine with; "
                    f"chain_files takes {', '.join(MASK_KINDS)}"
                )
        for what, values in (
            ("frame_counts", self.frame_counts), ("matrices", self.matrices),
            ("n_coils", self.coils), ("masks", self.masks), ("phantoms", self.phantoms),
        ):  # fmt: skip
            if not values:
                raise ValueError(f"data.{what}: need at least one value")
        for name in self.phantoms:
            if name not in PHANTOMS:
                raise ValueError(f"data.phantoms: {name!r} is not one of {PHANTOMS}")
        low, high = self.noise_levels
        if not 0 < low <= high:
            raise ValueError(f"data.noise_levels: need 0 < low <= high, got {self.noise_levels}")

    def draw(self, seed: int) -> FileDraw:
        """The file of a seed (the same seed always gives the same draw)."""
        rng = np.random.default_rng([seed, 20261204])
        kind, accel = parse_mask_name(self.masks[int(rng.integers(len(self.masks)))])
        return FileDraw(
            seed=seed,
            mask=kind,
            accel=float(accel),
            frames=int(rng.choice(self.frame_counts)),
            matrix=int(rng.choice(self.matrices)),
            coils=int(rng.choice(self.coils)),
            noise=float(rng.uniform(*self.noise_levels)),
            phantom=self.phantoms[int(rng.integers(len(self.phantoms)))],  # last: the draws
        )  # above are those of a one-generator space


def _start_settings(config: PASSNetConfig) -> dict[str, object]:
    """What the cached start depends on."""
    settings: dict[str, object] = {
        "start": config.start,
        "start_iterations": config.start_iterations,
    }
    if config.start == "llr":  # the only start with a threshold and a first iterate
        settings["start_lambda"] = config.start_lambda
        settings["start_init"] = config.start_init
        if config.start_lambda_static is not None:  # absent: the cache names of before
            settings["start_lambda_static"] = config.start_lambda_static
    return settings


def cache_name(draw: FileDraw, config: PASSNetConfig) -> str:
    """File name of a sample in the cache: its draw, the start's settings and the version."""
    key = json.dumps(
        {"draw": asdict(draw), "start": _start_settings(config), "version": CACHE_VERSION},
        sort_keys=True,
    )
    return f"seed{draw.seed}-{hashlib.sha256(key.encode()).hexdigest()[:12]}.safetensors"


def _truth_as_combined(path: Path, slice_data: SliceData, whitening: np.ndarray | None,
                       maps: np.ndarray) -> np.ndarray:  # fmt: skip
    """``sum_c conj(M_c) (W S rho)_c``: the file's truth as the chain's coil combination sees it."""
    with h5py.File(path, "r") as f:
        truth = f[f"{TRUTH_GROUP}/images"][0].astype(np.complex128)  # (T, H, W)
        true_maps = f[f"{TRUTH_GROUP}/coil_maps"][0].astype(np.complex128)  # (C, H, W)
    if whitening is not None:
        true_maps = np.einsum("ij,jhw->ihw", whitening.astype(np.complex128), true_maps)
    if truth.shape != slice_data.kspace.shape[1:]:
        raise ValueError(f"{path.name}: truth {truth.shape} vs data {slice_data.kspace.shape}")
    weights = (true_maps * maps.conj()).sum(axis=0)  # (H, W)
    return (truth * weights[None]).astype(np.complex64)


def assemble_one_slice(raw: RawData, name: str) -> tuple[SliceData, np.ndarray | None]:
    """The chain's ingest of a one-slice file: its slice and the prewhitening matrix.

    Raises
    ------
    RuntimeError
        The chain did not assemble exactly one slice (``name`` says which file).
    """
    slices, whitening = assemble(raw.header, raw.acquisitions())
    if len(slices) != 1 or not isinstance(slices[0], SliceData):
        raise RuntimeError(f"{name}: the chain did not assemble one slice")
    return slices[0], whitening


def keep_spokes(slice_data: SliceData, n_spokes: int, seed: int) -> SliceData:
    """A fully sampled slice as the chain would hold it had only pseudo-radial spokes arrived.

    Parameters
    ----------
    slice_data
        The chain's slice of a file that sampled every line.
    n_spokes
        Spokes per frame (:func:`passnet_core.masks.radial_mask`, rotated per frame).
    seed
        Seeds the rotations.

    Returns
    -------
    SliceData
        k-space and mask of the spokes only, and the calibration remade as the time average of
        what they sampled (as :func:`gadgets.slices.finish_slice` averages what arrived), so
        maps estimated from it see no sample the spokes did not acquire.
    """
    if not slice_data.mask.all():
        raise ValueError("keep_spokes needs a slice that sampled every line")
    _, t, h, w = slice_data.kspace.shape
    mask = radial_mask(n_spokes, t, h, w, np.random.default_rng([seed, 8])).numpy()
    kspace = (slice_data.kspace * mask[None]).astype(np.complex64)
    count = mask.sum(axis=0)
    calibration = (kspace.sum(axis=1) / np.maximum(count, 1)).astype(np.complex64)
    return replace(
        slice_data, kspace=kspace, mask=mask, calibration=calibration,
        calib_lines=_sampled_centre(count > 0),
    )  # fmt: skip


def _sampled_centre(sampled: np.ndarray) -> int:
    """Side of the largest centred square of ``(H, W)`` ``sampled`` that is sampled throughout.

    What ``calib_lines`` means for line masks (the contiguous central lines, each sampled
    whole), for spokes: the calibration region ``bart ecalib`` may use.
    """
    h, w = sampled.shape
    side = 0
    while side < min(h, w):
        n = side + 1
        top, left = h // 2 - n // 2, w // 2 - n // 2
        if not sampled[top : top + n, left : left + n].all():
            break
        side = n
    return side


def make_sample(draw: FileDraw, config: PASSNetConfig) -> dict[str, torch.Tensor]:
    """Simulate a draw's file, read it with the chain's code and compute start and target.

    Returns
    -------
    dict
        ``kspace`` ``(C, T, H, W)``, ``start`` and ``target`` ``(T, H, W)`` (all complex64, in
        the network's units), ``mask`` ``(T, H, W)`` float32, ``coil_maps`` ``(C, H, W)``
        complex64 and ``scale`` (the normalisation divisor), each as torch tensors.
    """
    with tempfile.TemporaryDirectory(prefix="passnet_chain_file_") as tmp:
        path = Path(tmp) / "sample.h5"
        radial = draw.mask == "radial"
        file_mask, file_accel = EVERY_LINE if radial else (draw.mask, draw.accel)
        simulate_cine(
            path, seed=draw.seed, n_coils=draw.coils, frames=draw.frames,
            matrix=draw.matrix, mask=file_mask, accel=file_accel, noise_level=draw.noise,
            phantom=draw.phantom,
        )  # fmt: skip
        slice_data, whitening = assemble_one_slice(read_raw(path), draw.describe())
        if radial:
            slice_data = keep_spokes(slice_data, int(draw.accel), draw.seed)
        maps = estimate_maps(slice_data)
        assert maps is not None  # simulated files are multi-coil
        combined = _truth_as_combined(path, slice_data, whitening, maps)
    mask = torch.from_numpy(slice_data.mask)
    coil_maps = torch.from_numpy(maps.astype(np.complex64))
    op = EncodingOp(mask, coil_maps[None])
    units = normalise(op, torch.from_numpy(slice_data.kspace)[None])
    target = torch.from_numpy(combined)[None]
    fitted = op.forward(target).flatten()
    energy = float(torch.vdot(fitted, fitted).real)
    alpha = torch.vdot(fitted, units.kspace.flatten()) / max(energy, 1e-30)
    with torch.inference_mode():
        start = PASSNet(config).start(op, units.kspace)
    return {
        "kspace": units.kspace[0],
        "mask": mask,
        "coil_maps": coil_maps,
        "start": start[0],
        "target": (alpha * target)[0],
        "scale": units.scale[0].to(torch.float32),
    }


def _store(sample: dict[str, torch.Tensor], path: Path) -> None:
    """Write atomically (safetensors has no complex dtype: complex tensors go as real pairs)."""
    tensors = {
        k: torch.view_as_real(v).contiguous() if v.is_complex() else v.contiguous()
        for k, v in sample.items()
    }
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    save_file(tensors, str(tmp), metadata={"normalisation": NORMALISATION})
    os.replace(tmp, path)


def _load(path: Path) -> dict[str, torch.Tensor]:
    tensors = load_file(str(path))
    complex_fields = ("kspace", "coil_maps", "start", "target")
    return {k: torch.view_as_complex(v) if k in complex_fields else v for k, v in tensors.items()}


def _build(draw: FileDraw, config: PASSNetConfig, path: Path) -> float:
    """Worker: make and store one sample; returns seconds."""
    torch.set_num_threads(1)
    start = time.perf_counter()
    _store(make_sample(draw, config), path)
    return time.perf_counter() - start


def build_cache(
    draws: Sequence[FileDraw], config: PASSNetConfig, cache_dir: Path, workers: int = 1
) -> list[Path]:
    """The cache file of every draw, making the missing ones (``workers`` processes)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    paths = [cache_dir / cache_name(d, config) for d in draws]
    missing = [(d, p) for d, p in zip(draws, paths, strict=True) if not p.is_file()]
    if not missing:
        log.info("chain files: all %d samples cached in %s", len(paths), cache_dir)
        return paths
    log.info(
        "chain files: making %d of %d samples in %s (%d worker(s))",
        len(missing), len(paths), cache_dir, workers,
    )  # fmt: skip
    began = time.perf_counter()
    if workers <= 1:
        for k, (draw, path) in enumerate(missing, 1):
            log.info("chain file %d/%d (%s) in %.1f s", k, len(missing), draw.describe(),
                     _build(draw, config, path))  # fmt: skip
    else:  # spawn: forked OpenMP/torch thread pools can deadlock
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            futures = [pool.submit(_build, d, config, p) for d, p in missing]
            for k, (future, (draw, _)) in enumerate(zip(futures, missing, strict=True), 1):
                log.info("chain file %d/%d (%s) in %.1f s", k, len(missing), draw.describe(),
                         future.result())  # fmt: skip
    log.info("chain files: cache ready in %.0f s", time.perf_counter() - began)
    return paths


class ChainFileDataset(Dataset):
    """Cached whole-file samples; training items are random ``frames``-frame windows.

    The encoding is per frame (each frame its own lines, one set of maps), so a window of
    consecutive frames is an exact sample of the same data; validation items are whole files.
    Items carry the cached start (:attr:`training.acquisition.Sample.start`).
    """

    def __init__(self, paths: Sequence[Path], frames: int | None, train: bool) -> None:
        self.paths, self.frames, self.train = list(paths), frames, train

    def __len__(self) -> int:
        return len(self.paths)

    def describe(self, k: int) -> str:
        return self.paths[k].name

    def __getitem__(self, k: int) -> Sample:
        s = _load(self.paths[k])
        t = s["mask"].shape[0]
        window = slice(None)
        if self.train and self.frames is not None and t > self.frames:
            first = int(torch.randint(t - self.frames + 1, ()).item())
            window = slice(first, first + self.frames)
        return Sample(
            s["kspace"][:, window], s["mask"][window], s["target"][window], s["scale"],
            s["coil_maps"], s["start"][window],
        )  # fmt: skip
