"""Options of ``passnet serve`` (standard library only: ``--help`` loads no torch or ISMRMRD).

The defaults are :class:`gadgets.server_settings.ServerSettings`'s own; the work is
:mod:`gadgets.server`.
"""

from __future__ import annotations

import argparse

from gadgets.server_settings import ServerSettings
from passnet_core.cli import Command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``passnet serve``."""
    defaults = ServerSettings()
    parser.add_argument("--port", type=int, default=9002, help="TCP port (default 9002)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    parser.add_argument(
        "--weights", default=None, help="weights file (default: shipped); checked at start"
    )
    parser.add_argument("--device", default=None, help="auto | cpu | cuda[:n] (default: chain's)")
    parser.add_argument(
        "--allow-fallback",
        action="store_true",
        help="start even if the weights cannot be loaded (zero-filled SENSE images)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=defaults.timeout,
        help="seconds one whole client message may take, waiting for it included (default 60)",
    )
    parser.add_argument(
        "--session-timeout",
        type=float,
        default=defaults.session_timeout,
        help="seconds one whole client session may take (default 3600)",
    )
    parser.add_argument("--max-clients", type=int, default=4, help="concurrent clients")
    parser.add_argument(
        "--max-message-mb",
        type=float,
        default=defaults.max_message_bytes / 2**20,
        help="largest message accepted, MiB (default 64)",
    )
    parser.add_argument(
        "--max-matrix-elements",
        type=int,
        default=defaults.max_matrix_elements,
        help="largest slice C*T*H*W (default 64 Mi); a chain may only lower it",
    )
    parser.add_argument(
        "--max-lines-per-slice",
        type=int,
        default=defaults.max_lines_per_slice,
        help="distinct lines one slice may buffer (default 128 Ki); a chain may only lower it",
    )
    parser.add_argument(
        "--shutdown-grace",
        type=float,
        default=defaults.shutdown_grace,
        help="seconds running sessions get to finish on SIGTERM/SIGINT (default 30)",
    )


# Registered in pyproject.toml ([project.entry-points."passnet.commands"]).
COMMAND = Command(
    "serve",
    "gadgets.server",
    "serve the Gadgetron client protocol (gadgetron_ismrmrd_client)",
    "gadgets.serve_cli:add_arguments",
)
