"""The operator's settings of ``passnet serve``: the limits no client can raise.

Standard library only, so :mod:`gadgets.serve_cli` builds ``passnet serve --help`` from the
same defaults the server uses without loading numpy, ISMRMRD or torch.
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
