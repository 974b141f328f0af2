"""Options of ``passnet simulate``, ``passnet train`` and ``passnet evaluate``.

This module imports only the standard library: ``passnet COMMAND --help`` builds its parser
from here without loading torch, numpy, h5py or ismrmrd (seconds on a cold start). The
modules that run the commands re-export these functions as their ``add_arguments``.

Values other modules define too are repeated here, not imported (importing them would load
torch); ``tests/test_cli.py`` checks that every copy equals its source.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from passnet_core import methods
from passnet_core.cli import Command

# -------------------------------------------------------------------------- simulate
DEFAULT_FRAMES = 20
DEFAULT_MATRIX = 128
DEFAULT_NOISE = 0.02
DEFAULT_COILS = 8
DEFAULT_ACCEL = 8.0
# What the file holds, named as passnet_core.masks and the evaluation name them.
LINE_MASK_KINDS = ("vds_lines", "equispaced")
PHANTOMS = ("cardiac", "ellipses")  # training.simulate: the training generator, the independent one
# Names passnet simulate no longer takes, with what to use: "vds" meant per-frame lines here
# but 2-D variable-density points everywhere else (passnet_core.masks), so it had to go.
RETIRED_MASK_NAMES = {
    "vds": "'vds' was passnet simulate's old name of vds_lines (per-frame variable-density "
    "lines); everywhere else 'vds' means 2-D variable-density points, which a Cartesian "
    "scanner file cannot hold: use --mask vds_lines"
}

# -------------------------------------------------------------------------- evaluate
# Copies of training.eval_cases.FAMILIES and passnet_core.masks.MASK_KINDS (tests/test_cli.py
# keeps them equal); the method names come from the registry, passnet_core.methods.
FAMILIES = ("synthetic", "heldout")
MASK_KINDS = ("radial", "vds", "vds_lines", "equispaced")
EVAL_DEFAULT_MASKS = ("vds_lines-8", "radial-8", "vds-8")
EVAL_METHODS = methods.EVALUATE_METHODS
EVAL_DEFAULT_METHODS = tuple(m for m in EVAL_METHODS if methods.get(m).evaluate_default)

# -------------------------------------------------------------------------- train
# Sections of training.config.TrainConfig, the SECTION of --set SECTION.KEY=VALUE.
CONFIG_SECTIONS = ("model", "data", "optim", "run")


def simulate_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``passnet simulate``."""
    parser.add_argument(
        "--out", required=True, help="output ISMRMRD .h5 file, overwritten (required)"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="any integer; seeds anatomy, coils, mask and noise, so the same seed writes the "
        "same file (default 0)",
    )
    parser.add_argument(
        "--coils",
        type=int,
        default=DEFAULT_COILS,
        help=f"receiver coils, >= 1 (default {DEFAULT_COILS})",
    )
    parser.add_argument(
        "--frames",
        type=int,
        default=DEFAULT_FRAMES,
        help=f"cardiac phases, >= 1 (default {DEFAULT_FRAMES})",
    )
    parser.add_argument(
        "--matrix",
        type=int,
        nargs="+",
        default=[DEFAULT_MATRIX],
        metavar="N",
        help=f"image matrix H W (phase encode, readout), or one size for both; each >= 8 "
        f"(default {DEFAULT_MATRIX})",
    )
    parser.add_argument(
        "--mask",
        choices=LINE_MASK_KINDS + tuple(RETIRED_MASK_NAMES),
        default=LINE_MASK_KINDS[0],
        metavar="{" + ",".join(LINE_MASK_KINDS) + "}",
        help="vds_lines: variable-density phase-encode lines drawn afresh per frame (what the "
        "evaluation calls vds_lines-R); equispaced: every R-th line plus 24 calibration lines, "
        f"the same in every frame (default {LINE_MASK_KINDS[0]})",
    )
    parser.add_argument(
        "--accel",
        type=float,
        default=DEFAULT_ACCEL,
        help="acceleration R >= 1 (1 samples every line); an integer for equispaced "
        f"(default {DEFAULT_ACCEL:g})",
    )
    parser.add_argument(
        "--no-oversampling",
        action="store_true",
        help="record the readout without 2x oversampling (default: 2x oversampled, as scanners "
        "deliver it)",
    )
    parser.add_argument(
        "--partial-fourier",
        type=float,
        default=1.0,
        help="fraction of phase-encode lines kept, 0.5 to 1; the earliest lines are skipped "
        "(default 1: full k-space)",
    )
    parser.add_argument(
        "--noise-level",
        type=float,
        default=DEFAULT_NOISE,
        help="complex noise std per coil image pixel relative to the blood signal (about 1), "
        f">= 0, before coil correlation (default {DEFAULT_NOISE})",
    )
    parser.add_argument(
        "--slices",
        type=int,
        default=1,
        help="short-axis slices, >= 1, each with its own anatomy (default 1)",
    )
    parser.add_argument(
        "--phantom",
        choices=PHANTOMS,
        default=PHANTOMS[0],
        help="cardiac: the torso-and-heart generator training draws from; ellipses: the "
        "independent family of passnet evaluate (analytic ellipses, dilating and travelling "
        f"parts, birdcage coils), which training never sees (default {PHANTOMS[0]})",
    )


def train_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``passnet train``."""
    parser.add_argument(
        "--config",
        required=True,
        help="YAML config (required); shipped: training/configs/cpu_default.yaml (the recipe "
        "of the shipped weights), paper_full.yaml (the paper's, for a GPU), tiny_test.yaml",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue after the last epoch in OUT/checkpoint.pt; without a checkpoint, start "
        "from scratch (default: start from scratch)",
    )
    parser.add_argument(
        "--out",
        help="run folder for checkpoint.pt, best.safetensors, history.json, config.yaml and "
        "TensorBoard logs (default: the config's run.out_dir)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help=f"override one config value; SECTION is one of {', '.join(CONFIG_SECTIONS)}, KEY "
        "any field of that section (training/config.py), VALUE YAML, e.g. --set "
        "optim.epochs=5 --set data.masks=[vds_lines-8]; repeatable (default: none)",
    )


def evaluate_arguments(parser: argparse.ArgumentParser) -> None:
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
        default=",".join(EVAL_DEFAULT_MASKS),
        help=f"comma-separated KIND-N names, KIND one of {', '.join(MASK_KINDS)}; N is the "
        "acceleration (radial: lines per frame, an integer; equispaced: an integer), e.g. "
        f"vds_lines-8 (default {','.join(EVAL_DEFAULT_MASKS)})",
    )
    parser.add_argument(
        "--methods",
        default=",".join(EVAL_DEFAULT_METHODS),
        help=f"comma-separated, from {', '.join(EVAL_METHODS)}; the BART methods are skipped "
        f"when bart is not installed (default {','.join(EVAL_DEFAULT_METHODS)})",
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


# -------------------------------------------------------------------------- commands
# Registered in pyproject.toml ([project.entry-points."passnet.commands"]).
SIMULATE = Command(
    "simulate",
    "training.simulate",
    "write a synthetic multi-coil cardiac cine ISMRMRD file",
    "training.cli_args:simulate_arguments",
)
TRAIN = Command(
    "train",
    "training.train",
    "train PASSNet from a YAML config",
    "training.cli_args:train_arguments",
)
EVALUATE = Command(
    "evaluate",
    "training.evaluate",
    "evaluate PASSNet and baselines on held-out synthetic cines",
    "training.cli_args:evaluate_arguments",
)
