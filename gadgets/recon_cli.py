"""Options of ``passnet recon`` (standard library only: ``--help`` loads no torch or numpy).

Every option states its default and valid values; the method choices and their descriptions
come from the registry (:mod:`passnet_core.methods`). The work is :mod:`gadgets.replay`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from passnet_core import methods
from passnet_core.cli import Command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``passnet recon`` (every option states its default and valid values)."""
    parser.add_argument("input", type=Path, help="ISMRMRD raw data file (.h5) to reconstruct")
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="OUT.h5",
        help="output ISMRMRD image file, one image per frame in dataset/image_<series> "
        "(required; must not be the input or a folder)",
    )
    parser.add_argument(
        "--method",
        choices=tuple(m.cli for m in _chain_methods()),
        help=", ".join(f"{m.cli} ({m.description})" for m in _chain_methods())
        + ", for a side-by-side comparison on the same file "
        "(default: passnet, or the method set in --config)",
    )
    parser.add_argument(
        "--weights",
        metavar="FILE",
        help="PASSNet weights file, used by --method passnet "
        "(default: the shipped passnet_core/weights/default.safetensors)",
    )
    parser.add_argument(
        "--device",
        metavar="DEVICE",
        help="auto, cpu, cuda or cuda:N (default: auto = the first CUDA GPU when there is "
        "one, else the CPU; or the device set in --config)",
    )
    parser.add_argument(
        "--frame-dimension",
        choices=("auto", "phase", "repetition"),
        help="acquisition counter holding the frames: phase (cardiac phases of a gated "
        "cine), repetition (real-time cine) or auto (from the header's encoding limits) "
        "(default: auto, or the value set in --config)",
    )
    parser.add_argument(
        "--config",
        metavar="XML",
        help="chain configuration: XML text, an XML file or a shipped chain name in "
        "gadgetron_configs (e.g. passnet_raw); the options above override it "
        "(default: none, the chain's defaults)",
    )
    parser.add_argument(
        "--png",
        type=Path,
        metavar="FILE.png",
        help="also write an overview PNG: every frame, x-t and y-t profiles, colour bar and "
        "mm scale; truth and |error| panels when the input carries /passnet_truth "
        "(default: not written)",
    )
    parser.add_argument(
        "--dicom",
        type=Path,
        metavar="FOLDER",
        help="also write a DICOM MR series, one file per image, into this folder (created "
        "if needed; needs the [io] extra) (default: not written)",
    )
    parser.add_argument(
        "--nifti",
        type=Path,
        metavar="FILE.nii[.gz]",
        help="also write the magnitudes as NIfTI-1 (x, y, slice, frame) with the scanner "
        "geometry and frame interval (needs the [io] extra) (default: not written)",
    )
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar (default: on a terminal, a bar counting reconstructed slices)",
    )


def _chain_methods() -> list[methods.Method]:
    return [methods.get(name) for name in methods.CHAIN_METHODS]


# Registered in pyproject.toml ([project.entry-points."passnet.commands"]).
COMMAND = Command(
    "recon",
    "gadgets.replay",
    "reconstruct an ISMRMRD raw file offline (no server)",
    "gadgets.recon_cli:add_arguments",
)
