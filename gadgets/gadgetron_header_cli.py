"""Options of ``passnet gadgetron-header`` (standard library only); the work is
:mod:`gadgets.gadgetron_header`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from passnet_core.cli import Command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``passnet gadgetron-header``."""
    parser.add_argument("input", type=Path, help="ISMRMRD raw data file (.h5); never modified")
    parser.add_argument(
        "--out", type=Path, required=True, metavar="OUT.h5", help="the copy to write (required)"
    )
    parser.add_argument(
        "--group", default="dataset", help="HDF5 group of the data set (default: dataset)"
    )


# Registered in pyproject.toml ([project.entry-points."passnet.commands"]).
COMMAND = Command(
    "gadgetron-header",
    "gadgets.gadgetron_header",
    "copy an ISMRMRD file with a header the real Gadgetron 4.7 server can use",
    "gadgets.gadgetron_header_cli:add_arguments",
)
