"""Classical baselines at their best: BART regularisation tuning and a convergence study.

Both run on *validation* cases (:data:`training.eval_cases.VALIDATION_SEEDS`), disjoint from
the test cases that :mod:`training.evaluate` scores, so the baselines are tuned the way a user
would tune them and the test numbers stay honest.

* :func:`tune_bart` picks, per BART method and mask, the regularisation weight with the best
  mean PSNR over the validation cases from a fixed grid (written into the table's notes).
* ``python -m training.tuning --out docs/figures`` is the convergence study: PSNR against
  iterations for L+S (every iteration) and for BART LLR (a few iteration counts), one curve per
  mask, as ``convergence.png`` and ``convergence.json``; docs/evaluation.md quotes it and the
  iteration counts in :mod:`passnet_core.baselines` and :data:`BART_ITERS` come from it.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from passnet_core import bart, baselines, methods, metrics
from passnet_core.operators import encoding
from training.acquisition import Sample
from training.eval_cases import SIMULATE_NOISE, VALIDATION_SEEDS, case_data, make_cases

log = logging.getLogger(__name__)

BART_ITERS = 100
BART_GRIDS = {
    "bart-llr": (0.001, 0.002, 0.005, 0.01, 0.02),
    "bart-tv": (0.003, 0.01, 0.03, 0.1),
}


def bart_regulariser(method: str) -> str:
    """``pics -R`` template of a BART method (``{}`` for the weight), from the registry."""
    regulariser = methods.get(method).bart_regulariser
    if regulariser is None:
        raise ValueError(f"{method!r} is not a BART method")
    return regulariser


def bart_pics(data: Sample, regulariser: str, iterations: int = BART_ITERS) -> torch.Tensor:
    """``bart pics`` (:func:`passnet_core.bart.pics`) on one case -> ``(1, T, H, W)``."""
    assert data.coil_maps is not None  # the evaluation families are multi-coil
    k, sens, mask = data.kspace.numpy(), data.coil_maps.numpy(), data.mask.numpy()
    return torch.from_numpy(bart.pics(k, mask, sens, regulariser, iterations))[None]


def case_psnr(recon: torch.Tensor, data: Sample) -> float:
    """PSNR (magnitudes, peak of the truth) of a ``(1, T, H, W)`` reconstruction of a case."""
    return float(metrics.psnr(recon[0].to(torch.complex64), data.target, magnitude=True))


def tune_bart(
    methods: Sequence[str], masks: Sequence[str], cases: dict[str, list[Sample]]
) -> dict[str, dict[str, dict]]:
    """Best regularisation weight per BART method and mask on validation data.

    Parameters
    ----------
    methods
        BART method names (:mod:`passnet_core.methods` of kind ``"bart"``).
    masks
        Mask names.
    cases
        ``{mask: [Sample, ...]}`` validation data.

    Returns
    -------
    dict
        ``{method: {mask: {"best": lam, "grid": {lam: mean PSNR}}}}``.
    """
    out: dict[str, dict[str, dict]] = {}
    for method in methods:
        out[method] = {}
        for mask in masks:
            grid = {}
            for lam in BART_GRIDS[method]:
                reg = bart_regulariser(method).format(lam)
                grid[lam] = float(np.mean([case_psnr(bart_pics(d, reg), d) for d in cases[mask]]))
                log.info("tuning %s %s lambda %g: %.2f dB", method, mask, lam, grid[lam])
            out[method][mask] = {"best": max(grid, key=grid.__getitem__), "grid": grid}
    return out


def validation_data(
    masks: Sequence[str],
    n: int,
    noise_level: float,
    size: tuple[int, int, int] | None = None,
    coils: int = 8,
) -> dict[str, list[Sample]]:
    """``{mask: [Sample]}`` for ``n`` validation cases of the synthetic family.

    ``size`` and ``coils`` as for :func:`training.eval_cases.make_cases` (match the test
    cases, so the tuned weight fits their matrix and coil count).
    """
    cases = make_cases("synthetic", n, VALIDATION_SEEDS["synthetic"], size, coils)
    return {m: [case_data(c, m, noise_level) for c in cases] for m in masks}


def lplus_s_curve(
    data: Sample,
    n_iter: int,
    lambda_l: float = baselines.LPLUSS_LAMBDA_L,
    lambda_s: float = baselines.LPLUSS_LAMBDA_S,
) -> list[float]:
    """PSNR of L+S on one case after every one of ``n_iter`` iterations (no early stop)."""
    curve: list[float] = []
    kspace, op = encoding(*data.batched())
    baselines.lplus_s(
        op, kspace, lambda_l=lambda_l, lambda_s=lambda_s, n_iter=n_iter,
        tol=0.0, monitor=lambda _, x: curve.append(case_psnr(x, data)),
    )  # fmt: skip
    return curve


def convergence_study(
    masks: Sequence[str], n: int, noise_level: float, lplus_s_iters: int, bart_iters: Sequence[int]
) -> dict:
    """PSNR against iterations for L+S and BART LLR (its tuned weight) on validation cases."""
    data = validation_data(masks, n, noise_level)
    tuned = tune_bart(["bart-llr"], masks, data) if bart.available() else {}
    result: dict = {"n_cases": n, "noise_level": noise_level, "masks": {}}
    for mask in masks:
        curves = np.array([lplus_s_curve(d, lplus_s_iters) for d in data[mask]])
        entry: dict = {"lplus_s": curves.mean(0).tolist()}
        if tuned:
            lam = tuned["bart-llr"][mask]["best"]
            reg = bart_regulariser("bart-llr").format(lam)
            entry["bart_llr_lambda"] = lam
            entry["bart_llr"] = {
                str(k): float(np.mean([case_psnr(bart_pics(d, reg, k), d) for d in data[mask]]))
                for k in bart_iters
            }
        result["masks"][mask] = entry
        log.info("convergence %s done", mask)
    return result


def convergence_figure(result: dict, path: Path) -> Path:
    """PSNR-vs-iterations PNG of :func:`convergence_study`'s result."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for mask, entry in result["masks"].items():
        curve = entry["lplus_s"]
        (line,) = ax.plot(range(1, len(curve) + 1), curve, label=f"L+S {mask}")
        if "bart_llr" in entry:
            its = [int(k) for k in entry["bart_llr"]]
            ax.plot(
                its,
                list(entry["bart_llr"].values()),
                "o--",
                color=line.get_color(),
                label=f"BART LLR {mask} (lambda {entry['bart_llr_lambda']:g})",
            )
    ax.axvline(baselines.LPLUSS_N_ITER, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("iterations")
    ax.set_ylabel("PSNR (dB, magnitude)")
    ax.set_title(
        f"Convergence on {result['n_cases']} validation cines, noise {result['noise_level']}"
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m training.tuning``: run the convergence study and write its figure."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs/figures"), help="output folder")
    parser.add_argument("--masks", default="vds_lines-8,radial-8,vds-8", help="comma-separated")
    parser.add_argument("--n-cases", type=int, default=2, help="validation cases (default 2)")
    parser.add_argument("--noise-level", type=float, default=SIMULATE_NOISE)
    parser.add_argument("--lplus-s-iters", type=int, default=300)
    parser.add_argument("--bart-iters", default="25,50,100,200")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    masks = [m.strip() for m in args.masks.split(",") if m.strip()]
    iters = [int(v) for v in args.bart_iters.split(",")]
    result = convergence_study(masks, args.n_cases, args.noise_level, args.lplus_s_iters, iters)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "convergence.json").write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out / 'convergence.json'}")
    print(f"wrote {convergence_figure(result, args.out / 'convergence.png')}")
    for mask, entry in result["masks"].items():
        curve = np.asarray(entry["lplus_s"])
        print(
            f"{mask}: L+S best {curve.max():.2f} dB at {int(curve.argmax()) + 1} iterations, "
            f"{curve[baselines.LPLUSS_N_ITER - 1]:.2f} dB at {baselines.LPLUSS_N_ITER}; "
            f"BART LLR {entry.get('bart_llr')}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
