"""What does each learned stage add through the chain, with the chain's maps and with true ones?
(study script; docs/method.md "Coil maps from the data" quotes its results)

For each simulated file (the chain bench's test seeds): the chain's ingest
(:func:`benchmarks.llr_gap.ingest_with_whitening`) gives the slice; the shipped network runs on
it with three sets of coil maps, and the image after the start and after every stage is scored
as ``passnet recon`` scores (:func:`benchmarks.llr_gap.score`):

- ``chain``: :func:`gadgets.pipeline.estimate_maps`, the maps every chain method uses;
- ``coil-phase``: the same maps with the strongest coil's phase as reference (the convention
  before the low-resolution phase), to see what the phase alone does;
- ``true``: the file's true maps after the chain's prewhitening ``W S``, normalised per pixel.

Usage::

    OMP_NUM_THREADS=1 python -m benchmarks.stage_gain --accel 6 --files 4
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import h5py
import numpy as np
import torch

from benchmarks.chain_quality import FIRST_SEED, PHANTOMS, SHAPE
from benchmarks.llr_gap import ingest_with_whitening, score
from gadgets.pipeline import estimate_maps
from gadgets.scoring import TRUTH_GROUP, read_truth
from gadgets.slices import SliceData
from passnet_core.inference import cached_model
from passnet_core.model import PASSNet
from passnet_core.operators import EncodingOp, normalise
from training.simulate import simulate_cine

VARIANTS = ("chain", "coil-phase", "true")


def true_maps(path: Path, whitening: np.ndarray | None) -> np.ndarray:
    """The file's first-slice maps as the chain sees the coils: ``W S``, unit norm per pixel."""
    with h5py.File(path, "r") as f:
        maps = f[f"{TRUTH_GROUP}/coil_maps"][()][0].astype(np.complex128)  # (C, H, W)
    if whitening is not None:
        maps = np.einsum("ij,jhw->ihw", whitening.astype(np.complex128), maps)
    norm = np.sqrt((np.abs(maps) ** 2).sum(0))
    return np.where(norm > 0, maps / np.maximum(norm, 1e-30), 0).astype(np.complex64)


def stage_psnrs(net: PASSNet, sd: SliceData, maps: np.ndarray, truth: np.ndarray) -> list[float]:
    """PSNR after the start and after each stage (normalised as the chain normalises)."""
    op = EncodingOp(torch.from_numpy(sd.mask), torch.from_numpy(maps)[None])
    units = normalise(op, torch.from_numpy(sd.kspace)[None])
    scores = []
    with torch.inference_mode():
        x = net.start(op, units.kspace)
        scores.append(score(units.restore(x)[0].numpy(), sd, truth))
        for stage in net.stages:
            x = stage(x, op, units.kspace)
            scores.append(score(units.restore(x)[0].numpy(), sd, truth))
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accel", type=float, default=6.0, help="R of the files (default 6)")
    parser.add_argument("--files", type=int, default=4, help="files per phantom (default 4)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    net = cached_model(device="cpu")
    results: dict[tuple[str, str], list[list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for phantom in PHANTOMS:
            for i in range(args.files):
                path = Path(tmp) / f"{phantom}_{i}.h5"
                frames, h, w, coils = SHAPE
                simulate_cine(
                    path, seed=FIRST_SEED + i, n_coils=coils, frames=frames, matrix=(h, w),
                    accel=args.accel, phantom=phantom,
                )  # fmt: skip
                sd, whitening = ingest_with_whitening(path)
                truth = read_truth(path)
                assert truth is not None  # simulate_cine stores it
                maps = {
                    "chain": estimate_maps(sd),
                    "coil-phase": estimate_maps(sd, phase="coil"),
                    "true": true_maps(path, whitening),
                }
                for variant in VARIANTS:
                    chosen = maps[variant]
                    assert chosen is not None  # multi-coil files
                    row = stage_psnrs(net, sd, chosen, truth)
                    results.setdefault((phantom, variant), []).append(row)
                    print(f"{phantom} {i} {variant}: " + " ".join(f"{v:.2f}" for v in row))
    n = len(next(iter(results.values()))[0])
    print(f"\nmean PSNR (dB) over {args.files} file(s) per phantom, R = {args.accel:g}")
    print(
        "| phantom | maps | start | " + " | ".join(f"stage {k}" for k in range(1, n)) + " | gain |"
    )
    for (phantom, variant), rows in results.items():
        mean = np.mean(rows, axis=0)
        cells = " | ".join(f"{v:.2f}" for v in mean)
        print(f"| {phantom} | {variant} | {cells} | {mean[-1] - mean[0]:+.2f} |")


if __name__ == "__main__":
    main()
