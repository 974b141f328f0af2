"""Options of ``passnet info`` (standard library only); the work is :mod:`passnet_core.info`."""

from __future__ import annotations

import argparse

from passnet_core.cli import Command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``passnet info``."""
    parser.add_argument(
        "--weights",
        default=None,
        help="safetensors weights file to describe (default: the shipped "
        "passnet_core/weights/default.safetensors)",
    )


# Registered in pyproject.toml ([project.entry-points."passnet.commands"]).
COMMAND = Command(
    "info",
    "passnet_core.info",
    "show weights, device and library versions",
    "passnet_core.info_cli:add_arguments",
)
