"""Options of ``passnet evaluate`` (standard library only: ``--help`` loads no torch).

The families, default masks and default methods live here and the work modules import them;
method names come from the registry (:mod:`passnet_core.methods`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from passnet_core import methods
from passnet_core.cli import Command
from training.simulate_cli import DEFAULT_NOISE

FAMILIES = ("synthetic", "heldout")  # training.eval_cases builds them
DEFAULT_MASKS = ("vds_lines-8", "radial-8", "vds-8")
DEFAULT_METHODS = tuple(m for m in methods.EVALUATE_METHODS if methods.get(m).evaluate_default)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``passnet evaluate``."""
    parser.add_argument(
        "--weights", type=Path, help="PASSNet weights (default: the shipped default.safetensors)"
    )
    parser.add_argument(
        "--weights-uniform",
        type=Path,
        help="weights of the uniform-SVT ablation (default: the shipped "
        "ablation_uniform_svt.safetensors; while none is shipped, passnet-uniform is skipped)",
    )
    parser.add_argument(
        "--weights-adjoint",
        type=Path,
        help="weights of the paper-start (A^H d) variant (default: the shipped "
        "paper_start.safetensors)",
    )
    parser.add_argument(
        "--n-cases", type=int, default=8, help="test cases per family, >= 1 (default 8)"
    )
    parser.add_argument(
        "--families",
        default=",".join(FAMILIES),
        help=f"comma-separated, from {', '.join(FAMILIES)}: the training generator's held-out "
        f"cines and an independent phantom family (default {','.join(FAMILIES)})",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("evaluation"),
        help="output folder for evaluation.md, evaluation.json and the figures, created if "
        "missing (default ./evaluation)",
    )
    parser.add_argument(
        "--masks",
        default=",".join(DEFAULT_MASKS),
        help=f"comma-separated KIND-N names, KIND one of {', '.join(methods.MASK_KINDS)}; N is the "
        "acceleration (radial: lines per frame, an integer; equispaced: an integer), e.g. "
        f"vds_lines-8 (default {','.join(DEFAULT_MASKS)})",
    )
    parser.add_argument(
        "--methods",
        default=",".join(DEFAULT_METHODS),
        help=f"comma-separated, from {', '.join(methods.EVALUATE_METHODS)}; the BART methods "
        f"are skipped when bart is not installed (default {','.join(DEFAULT_METHODS)})",
    )
    parser.add_argument(
        "--size",
        default=None,
        help="T,H,W of the synthetic family, T >= 2, H and W >= 16 (default 16,128,128)",
    )
    parser.add_argument(
        "--coils",
        type=int,
        default=8,
        help="coils of the synthetic family, >= 1 (default 8)",
    )
    parser.add_argument(
        "--noise-level",
        type=float,
        default=DEFAULT_NOISE,
        help=f"k-space noise std relative to the peak, 0 <= level < 1 (default {DEFAULT_NOISE}, "
        "passnet simulate's level)",
    )
    parser.add_argument(
        "--tune-cases",
        type=int,
        default=2,
        help="validation cases for tuning BART's regularisation weight, >= 1 (default 2)",
    )
    parser.add_argument(
        "--device",
        default="auto",
        help="device for PASSNet: auto (a GPU if present, else cpu), cpu, cuda or cuda:N "
        "(default auto)",
    )
    parser.add_argument(
        "--reuse",
        metavar="JSON",
        default=None,
        help="an earlier evaluation.json of the same cases (cases, masks, noise, size, coils "
        "must match): the methods named by --reuse-methods take their scores from it instead of "
        "running again; each is still run on the first case, for the figure and to check that it "
        "reproduces the stored score (default: none)",
    )
    parser.add_argument(
        "--reuse-methods",
        default="",
        help="comma-separated methods to take from --reuse, e.g. lplus-s,bart-llr (default: none)",
    )


# Registered in pyproject.toml ([project.entry-points."passnet.commands"]).
COMMAND = Command(
    "evaluate",
    "training.evaluate",
    "evaluate PASSNet and baselines on held-out synthetic cines",
    "training.evaluate_cli:add_arguments",
)
