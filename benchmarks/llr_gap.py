"""Where does the project LLR lose to BART ``pics -R L`` in the replay chain? (study script,
docs/evaluation.md "Through the whole chain" quotes its results)

For each simulated file: the chain's own ingest (:class:`gadgets.assembly.AcquisitionBuffer`:
prewhitening, readout oversampling removal) gives one :class:`SliceData`; its calibration
k-space gives the chain's ESPIRiT maps (:func:`gadgets.pipeline.estimate_maps`) and BART
``ecalib -m1`` maps. Project LLR (:func:`passnet_core.baselines.llr`) and BART ``pics`` LLR
run on the same k-space with either set of maps, and every result goes through the chain's
output step (centre crop, display scaling, :func:`gadgets.images.build_images`) and
:func:`gadgets.scoring.compare_with_truth`, so all variants are scored as ``passnet recon`` is.

Usage::

    OMP_NUM_THREADS=1 python -m benchmarks.llr_gap --out llr_gap_results --accel 6 --files 3
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch

from gadgets.assembly import AcquisitionBuffer
from gadgets.chain_config import ChainParams
from gadgets.images import build_images
from gadgets.pipeline import AUTO_SCALE_MAX, centre_crop, estimate_maps
from gadgets.scoring import TRUTH_GROUP, compare_with_truth, read_truth
from gadgets.slices import SliceData
from passnet_core import bart, baselines
from passnet_core.ismrmrd_io import read_raw
from passnet_core.operators import encoding, normalise
from training.chain_files import assemble_one_slice
from training.simulate import simulate_cine

FIRST_SEED = 9_100_001


def ingest(path: Path) -> SliceData:
    """The chain's assembled slice (prewhitened, oversampling removed) of a one-slice file."""
    return ingest_with_whitening(path)[0]


def ingest_with_whitening(path: Path) -> tuple[SliceData, np.ndarray | None]:
    """:func:`ingest` and the prewhitening matrix the chain estimated from the noise scan."""
    return assemble_one_slice(read_raw(path), path.name)


def ecalib_maps(sd: SliceData) -> np.ndarray:
    """BART ``ecalib -m1`` maps ``(C, H, W)`` from the slice's calibration (default region)."""
    return bart.ecalib(sd.calibration, 24)


def bart_llr(sd: SliceData, maps: np.ndarray, lam: float, iters: int = 100) -> np.ndarray:
    """``bart pics -S -R L:7:7:lam -i iters`` on the slice, the data divided by max |A^H d|
    (``-w``) as the chain's BART methods divide them; ``(T, H, W)`` complex."""
    regulariser = f"L:7:7:{lam}"
    return bart.pics(sd.kspace, sd.mask, maps, regulariser, iters, data_scale=scale_of(sd, maps))


def project_llr(
    sd: SliceData,
    maps: np.ndarray,
    lam: float = baselines.LLR_LAMBDA,
    iters: int = baselines.LLR_N_ITER,
    block: int = baselines.LLR_BLOCK,
    monitor=None,
) -> np.ndarray:
    kspace, op = encoding(sd.kspace[None], sd.mask, maps[None])
    x = baselines.llr(
        op, kspace, lambda_b=lam, n_iter=iters, block=block, monitor=monitor,
        lambda_static=None,  # the threshold studied, whatever the mask
    )  # fmt: skip
    return x[0].numpy().astype(np.complex64)


def score(images: np.ndarray, sd: SliceData, truth: np.ndarray) -> float:
    """PSNR as ``passnet recon`` + compare_with_truth would give for these complex images."""
    w, h = sd.recon_matrix
    x = centre_crop(images, min(h, images.shape[-2]), min(w, images.shape[-1]))
    x = np.abs(x * (AUTO_SCALE_MAX / float(np.abs(x).max()))).astype(np.float32)
    logging.disable(logging.INFO)
    try:
        result = compare_with_truth(build_images(x, sd, 1), truth)
    finally:
        logging.disable(logging.NOTSET)
    assert result is not None
    return result.mean_psnr


def scale_of(sd: SliceData, maps: np.ndarray) -> float:
    """``s = max |A^H d|``, the project LLR's normalisation (noise std is 1 after whitening)."""
    kspace, op = encoding(sd.kspace[None], sd.mask, maps[None])
    return float(normalise(op, kspace).scale[0])


def ingest_true_noise(path: Path) -> SliceData:
    """As :func:`ingest`, but whitened with the file's true noise covariance (noise scans
    dropped, the covariance given as the chain's prior noise measurement)."""
    import h5py
    import ismrmrd

    from gadgets.assembly import flag_set

    with h5py.File(path, "r") as f:
        cov = np.asarray(f[f"{TRUTH_GROUP}/noise_covariance"][()])
    raw = read_raw(path)
    p = ChainParams()
    buf = AcquisitionBuffer(
        raw.header, p.frame_dimension, p.max_matrix_elements, p.max_lines_per_slice, cov
    )
    out = []
    for acq in raw.acquisitions():
        if flag_set(int(acq.getHead().flags), ismrmrd.ACQ_IS_NOISE_MEASUREMENT):
            continue
        out += buf.add(acq)
    out += buf.flush()
    assert len(out) == 1 and isinstance(out[0], SliceData), out
    return out[0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--accel", type=float, default=6)
    parser.add_argument("--files", type=int, default=3)
    parser.add_argument("--phantoms", default="cardiac,ellipses")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--matrix", type=int, default=128)
    parser.add_argument("--coils", type=int, default=8)
    parser.add_argument("--proj-lams", default="0.01,0.02,0.05,0.1")
    parser.add_argument("--bart-lams", default="0.002,0.005,0.01,0.02")
    parser.add_argument("--iters", default="60,200")
    args = parser.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    proj_lams = [float(v) for v in args.proj_lams.split(",")]
    bart_lams = [float(v) for v in args.bart_lams.split(",")]
    iters = [int(v) for v in args.iters.split(",")]
    results = []
    for phantom in args.phantoms.split(","):
        for i in range(args.files):
            name = f"{phantom}_R{args.accel:g}_{i}"
            path = out / f"{name}.h5"
            if not path.exists():
                simulate_cine(
                    path, seed=FIRST_SEED + i, n_coils=args.coils, frames=args.frames,
                    matrix=(args.matrix, args.matrix), accel=args.accel, phantom=phantom,
                )  # fmt: skip
            truth = read_truth(path)
            sd = ingest(path)
            chain_maps = estimate_maps(sd)
            assert truth is not None and chain_maps is not None  # simulated multi-coil file
            maps = {"chain": chain_maps, "ecalib": ecalib_maps(sd)}
            rec: dict = {"file": name, "calib_lines": sd.calib_lines, "psnr": {}, "scale": {}}
            for mname, m in maps.items():
                rec["scale"][mname] = scale_of(sd, m)
                for lam in proj_lams:
                    t0 = time.perf_counter()
                    curve: dict[int, float] = {}
                    n_max = max(iters)

                    def monitor(it: int, x: torch.Tensor, curve=curve, sd=sd, truth=truth) -> None:
                        if it in iters:
                            curve[it] = score(x[0].numpy(), sd, truth)

                    project_llr(sd, m, lam, n_max, monitor=monitor)
                    for it, v in curve.items():
                        rec["psnr"][f"proj/{mname}/lam{lam:g}/it{it}"] = v
                    print(name, mname, "proj", lam, curve, f"{time.perf_counter() - t0:.0f}s",
                          flush=True)  # fmt: skip
                for lam in bart_lams:
                    t0 = time.perf_counter()
                    v = score(bart_llr(sd, m, lam), sd, truth)
                    rec["psnr"][f"bart/{mname}/lam{lam:g}/it100"] = v
                    print(name, mname, "bart", lam, f"{v:.2f}", f"{time.perf_counter() - t0:.0f}s",
                          flush=True)  # fmt: skip
            results.append(rec)
            (out / f"results_R{args.accel:g}.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
