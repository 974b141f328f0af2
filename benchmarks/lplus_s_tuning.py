"""L+S at its best: thresholds and iterations tuned per mask, then scored against PASSNet.

``python -m benchmarks.lplus_s_tuning`` sweeps lambda_L x lambda_S on the synthetic validation
cases (:data:`training.eval_cases.VALIDATION_SEEDS`, disjoint from the test cases), records
PSNR at every iteration, keeps the best (lambda_L, lambda_S, iterations) per mask, runs L+S
with it on the test cases of each family and prints PASSNet's paired lead over it, taking
PASSNet's per-case scores from an evaluation.json of ``passnet evaluate`` on the same cases.
docs/evaluation.md ("L+S thresholds") quotes its output.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
import torch

from passnet_core import baselines
from passnet_core.operators import encoding
from training.eval_cases import TEST_SEEDS, case_data, make_cases
from training.eval_report import paired_ci
from training.tuning import case_psnr, lplus_s_curve, validation_data

GRID = (0.005, 0.01, 0.02, 0.04)
MASKS = ("vds_lines-8", "radial-8", "vds-8")
NOISE = 0.02


def tune(n_cases: int, n_iter: int) -> dict[str, tuple[float, float, int, float]]:
    """Best ``(lambda_l, lambda_s, iterations, mean PSNR)`` per mask on validation cases."""
    data = validation_data(MASKS, n_cases, NOISE)
    best: dict[str, tuple[float, float, int, float]] = {}
    for mask in MASKS:
        for lam_l, lam_s in itertools.product(GRID, GRID):
            mean = np.mean([lplus_s_curve(d, n_iter, lam_l, lam_s) for d in data[mask]], axis=0)
            it = int(mean.argmax())
            print(f"{mask} lambda_L {lam_l} lambda_S {lam_s}: best {mean[it]:.2f} dB at {it + 1}")
            if mask not in best or mean[it] > best[mask][3]:
                best[mask] = (lam_l, lam_s, it + 1, float(mean[it]))
    return best


def main(argv: list[str] | None = None) -> int:
    """Tune on validation cases, score on the test cases of each family, print the leads."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.lplus_s_tuning")
    parser.add_argument("--families", default="synthetic,heldout")
    parser.add_argument("--evaluation", default="docs/evaluation/{family}/evaluation.json")
    parser.add_argument("--tune-cases", type=int, default=2)
    parser.add_argument("--n-cases", type=int, default=8)
    parser.add_argument("--max-iterations", type=int, default=100)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    best = tune(args.tune_cases, args.max_iterations)
    for mask, (lam_l, lam_s, it, psnr) in best.items():
        print(f"chosen {mask}: lambda_L {lam_l}, lambda_S {lam_s}, {it} iterations ({psnr:.2f})")
    for family in args.families.split(","):
        stored = json.loads(Path(args.evaluation.format(family=family)).read_text())
        results = stored["families"][family]
        cases = make_cases(family, args.n_cases, TEST_SEEDS[family])
        for mask, (lam_l, lam_s, it, _) in best.items():
            scores = []
            for case in cases:
                d = case_data(case, mask, NOISE)
                kspace, op = encoding(*d.batched())
                x = baselines.lplus_s(
                    op, kspace, lambda_l=lam_l, lambda_s=lam_s, n_iter=it, tol=0.0
                )
                scores.append(case_psnr(x, d))
            lead, low, high = paired_ci(results["passnet"]["psnr"][mask], scores)
            shipped = np.mean(results["lplus-s"]["psnr"][mask])
            print(
                f"{family} {mask}: tuned L+S {np.mean(scores):.2f} dB (shipped {shipped:.2f}); "
                f"PASSNet - tuned L+S {lead:+.2f} [{low:+.2f}, {high:+.2f}] dB"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
