"""The operator's settings of ``passnet serve`` and its command-line options.

Kept apart from :mod:`gadgets.server` so that ``passnet serve --help`` builds its parser from
the standard library alone (no numpy, ISMRMRD or torch import).
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, replace

from gadgets.chain_config import (
    DEFAULT_MAX_LINES_PER_SLICE,
    DEFAULT_MAX_MATRIX_ELEMENTS,
    ChainParams,
)
from passnet_core.cli import Command

log = logging.getLogger(__name__)
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class ServerSettings:
    """How ``passnet serve`` runs; every limit here is the operator's, none the client's.

    Attributes
    ----------
    host, port
        Where to listen (port 0: any free port).
    weights
        The only weights file the server opens (``None``: the shipped weights). A chain's
        ``weights`` property is ignored.
    device
        Overrides the chain's ``device`` when given.
    timeout
        Seconds one whole message may take, waiting for it included (not per ``recv``).
    max_clients
        Concurrent sessions; more are told the server is busy.
    max_message_bytes
        Largest message accepted (chain and header: at most :data:`MAX_XML_BYTES`).
    max_matrix_elements, max_lines_per_slice
        Slice limits; a chain may lower them, never raise them.
    session_timeout
        Seconds a whole session may take.
    allow_fallback
        Start even when the weights cannot be loaded (zero-filled SENSE images, said so in
        each image's comment and in a text message).
    shutdown_grace
        Seconds running sessions get to finish on SIGTERM/SIGINT before they are closed.
    """

    host: str = "127.0.0.1"
    port: int = 9002
    weights: str | None = None
    device: str | None = None
    timeout: float = 60.0
    max_clients: int = 4
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_matrix_elements: int = DEFAULT_MAX_MATRIX_ELEMENTS
    max_lines_per_slice: int = DEFAULT_MAX_LINES_PER_SLICE
    session_timeout: float = 3600.0
    allow_fallback: bool = False
    shutdown_grace: float = 30.0

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {self.port}")
        if self.timeout <= 0:
            raise ValueError(f"timeout must be positive seconds, got {self.timeout}")
        if self.max_clients < 1:
            raise ValueError(f"max_clients must be at least 1, got {self.max_clients}")
        for name in ("max_message_bytes", "max_matrix_elements", "max_lines_per_slice"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.session_timeout <= 0:
            raise ValueError(f"session_timeout must be positive, got {self.session_timeout}")
        if self.shutdown_grace < 0:
            raise ValueError(f"shutdown_grace must be >= 0, got {self.shutdown_grace}")

    def apply(self, params: ChainParams, peer: str = "client") -> ChainParams:
        """Chain parameters under the server's rules.

        The weights are always the server's (a chain's ``weights`` is ignored, without
        touching the path it names); ``device`` is overridden when the server sets one; the
        slice limits are the smaller of the chain's and the server's.
        """
        if params.weights is not None:
            log.warning("%s: ignoring the chain's 'weights' property (server decides)", peer)
        return replace(
            params,
            weights=self.weights,
            device=self.device if self.device is not None else params.device,
            max_matrix_elements=min(params.max_matrix_elements, self.max_matrix_elements),
            max_lines_per_slice=min(params.max_lines_per_slice, self.max_lines_per_slice),
        )


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


def settings_from_args(args: argparse.Namespace) -> ServerSettings:
    """:class:`ServerSettings` from parsed ``passnet serve`` arguments (``ValueError`` if bad)."""
    return ServerSettings(
        host=args.host,
        port=args.port,
        weights=args.weights,
        device=args.device,
        timeout=args.timeout,
        max_clients=args.max_clients,
        max_message_bytes=int(args.max_message_mb * 2**20),
        max_matrix_elements=args.max_matrix_elements,
        max_lines_per_slice=args.max_lines_per_slice,
        session_timeout=args.session_timeout,
        allow_fallback=args.allow_fallback,
        shutdown_grace=args.shutdown_grace,
    )


# Registered in pyproject.toml ([project.entry-points."passnet.commands"]).
COMMAND = Command(
    "serve",
    "gadgets.server",
    "serve the Gadgetron client protocol (gadgetron_ismrmrd_client)",
    "gadgets.server_settings:add_arguments",
)
