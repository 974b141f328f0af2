"""Which LLR threshold for which mask kind? (study script; docs/method.md "Warm start", "The
same lines in every frame", quotes its results)

On the chain bench's validation files (seeds ``VALIDATION_SEED..``, disjoint from its test
files) of both phantoms: the project's LLR at each threshold (one threshold for every mask,
``lambda_static=None``), BART ``pics -R L`` at one lambda with the same maps and data scaling
as the chain's ``bart-llr-chain-maps``, and the shipped network with its start's threshold
replaced (nothing else changed), all scored as ``passnet recon`` is.

Usage::

    OMP_NUM_THREADS=1 python -m benchmarks.start_threshold --mask equispaced --accel 6 \\
        --lambdas 0.01,0.015,0.02,0.03 --network-lambdas 0.015,0.02,0.03
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

import numpy as np
import torch

from benchmarks.chain_quality import MASK_WORDS, PHANTOMS, SHAPE, VALIDATION_SEED, BenchFile
from benchmarks.chain_quality import _chain_psnr as chain_psnr
from benchmarks.chain_quality import _params as chain_params
from benchmarks.llr_gap import bart_llr, ingest, project_llr, score
from gadgets.pipeline import estimate_maps
from gadgets.scoring import read_truth
from passnet_core import bart
from passnet_core.inference import cached_model
from passnet_core.model import PASSNet
from passnet_core.weights import save_weights
from training.simulate import simulate_cine
from training.simulate_cli import LINE_MASK_KINDS


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v]


def network_with_start_lambda(lam: float, folder: Path) -> Path:
    """The shipped weights with the start's threshold set to ``lam`` for every mask."""
    shipped = cached_model(device="cpu")
    config = dataclasses.replace(shipped.config, start_lambda=lam, start_lambda_static=None)
    model = PASSNet(config)
    model.load_state_dict(shipped.state_dict())
    return save_weights(model, folder / f"start_{lam:g}.safetensors")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mask", choices=sorted(LINE_MASK_KINDS), default="equispaced")
    parser.add_argument("--accel", type=float, default=6.0)
    parser.add_argument("--files", type=int, default=4, help="files per phantom (default 4)")
    parser.add_argument("--lambdas", default="0.01,0.015,0.02,0.03", help="LLR thresholds")
    parser.add_argument("--bart-lambda", type=float, default=0.001, help="0: no BART")
    parser.add_argument("--network-lambdas", default="0.02,0.03", help="'': no network")
    args = parser.parse_args()
    torch.set_num_threads(1)
    lambdas, net_lambdas = _floats(args.lambdas), _floats(args.network_lambdas)
    use_bart = args.bart_lambda > 0 and bart.available()
    frames, h, w, coils = SHAPE
    columns = [f"LLR {lam:g}" for lam in lambdas] + (["BART"] if use_bart else [])
    columns += [f"PASSNet {lam:g}" for lam in net_lambdas]
    scores: dict[str, dict[str, list[float]]] = {p: {c: [] for c in columns} for p in PHANTOMS}
    with tempfile.TemporaryDirectory(prefix="passnet_start_threshold_") as tmp:
        folder = Path(tmp)
        networks = {lam: network_with_start_lambda(lam, folder) for lam in net_lambdas}
        for phantom in PHANTOMS:
            for i in range(args.files):
                path = folder / f"{phantom}_{i}.h5"
                simulate_cine(
                    path, seed=VALIDATION_SEED + i, n_coils=coils, frames=frames, matrix=(h, w),
                    mask=args.mask, accel=args.accel, phantom=phantom,
                )  # fmt: skip
                truth, sd = read_truth(path), ingest(path)
                maps = estimate_maps(sd)
                assert truth is not None and maps is not None  # simulated multi-coil file
                row = scores[phantom]
                for lam in lambdas:
                    row[f"LLR {lam:g}"].append(score(project_llr(sd, maps, lam), sd, truth))
                if use_bart:
                    row["BART"].append(score(bart_llr(sd, maps, args.bart_lambda), sd, truth))
                for lam, weights in networks.items():
                    params = chain_params("passnet", weights=str(weights), fallback="none")
                    file = BenchFile(phantom, i, VALIDATION_SEED + i, path)
                    row[f"PASSNet {lam:g}"].append(chain_psnr(file, params)[0])
                print(phantom, i, {c: round(v[-1], 2) for c, v in row.items()}, flush=True)
    print(f"\n{MASK_WORDS[args.mask]}, R = {args.accel:g}, {args.files} validation file(s) per "
          f"phantom (seeds {VALIDATION_SEED}..), mean PSNR in dB through the chain"
          + (f"; BART lambda {args.bart_lambda:g}" if use_bart else ""))  # fmt: skip
    print("| phantom | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for name, rows in [*((p, [scores[p]]) for p in PHANTOMS), ("both", list(scores.values()))]:
        cells = [f"{np.mean([v for r in rows for v in r[c]]):.2f}" for c in columns]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
