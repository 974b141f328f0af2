"""Options of ``passnet simulate`` (standard library only: ``--help`` loads no torch).

The defaults live here, and :mod:`training.simulate` imports them, so the help cannot drift
from what the command does.
"""

from __future__ import annotations

import argparse

from passnet_core.cli import Command

DEFAULT_FRAMES = 20
DEFAULT_MATRIX = 128
DEFAULT_NOISE = 0.02
DEFAULT_COILS = 8
DEFAULT_ACCEL = 8.0
# What the file holds, named as passnet_core.masks and the evaluation name them.
LINE_MASK_KINDS = ("vds_lines", "equispaced")
# training.simulate: the training generator, the independent family training never sees, and
# the generic second training generator
PHANTOMS = ("cardiac", "ellipses", "blobs")
# Names passnet simulate no longer takes, with what to use: "vds" meant per-frame lines here
# but 2-D variable-density points everywhere else (passnet_core.masks), so it had to go.
RETIRED_MASK_NAMES = {
    "vds": "'vds' was passnet simulate's old name of vds_lines (per-frame variable-density "
    "lines); everywhere else 'vds' means 2-D variable-density points, which a Cartesian "
    "scanner file cannot hold: use --mask vds_lines"
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
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
        "parts, birdcage coils), which training never sees; blobs: random star-shaped objects "
        "with their own motion, the second generator the chain recipe trains on "
        f"(default {PHANTOMS[0]})",
    )


# Registered in pyproject.toml ([project.entry-points."passnet.commands"]).
COMMAND = Command(
    "simulate",
    "training.simulate",
    "write a synthetic multi-coil cardiac cine ISMRMRD file",
    "training.simulate_cli:add_arguments",
)
