"""Harden ``gadgetron`` 1.4.1's connection handshake in every process that imports it.

``python -m gadgetron PORT gadgets.passnet_gadget reconstruct`` builds its
``gadgetron.external.Connection`` *before* importing this package's step: the constructor
reads the step configuration and the ISMRMRD header through gadgetron's own socket wrapper,
which has no timeout and loops forever (70-95 % CPU) on ``recv`` returning ``b""`` when
Gadgetron closes mid-message. :func:`gadgets.passnet_gadget.harden_connection` comes too late
for those two reads.

So this module is imported at interpreter start-up by ``passnet_gadgetron_hardening.pth``
(installed with the package) and registers an import hook: when
``gadgetron.external.connection`` is loaded, its ``Connection.SocketWrapper`` is replaced by
:class:`HardenedSocketWrapper`, which raises on end-of-stream and gives the handshake a
timeout (``PASSNET_GADGET_TIMEOUT``, default 300 s); after the handshake reads block as
gadgetron's do (the PASSNet step then installs its own per-message timeout). Nothing else in
gadgetron changes. This module must stay cheap to import: it runs in every interpreter.

It also supplies the step's target where Gadgetron leaves it out: in distributed mode
Gadgetron forwards the chain to its workers without the ``target`` attribute of ``<execute>``
(its config serialiser writes only ``name`` and ``type``), so a worker starts
``python -m gadgetron PORT gadgets.passnet_gadget`` with no target, which gadgetron's loader
cannot run. :func:`add_missing_target` appends the step's one target (``reconstruct``).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
from typing import TYPE_CHECKING, Any  # typing is loaded by importlib.abc already

if TYPE_CHECKING:
    import socket
    import types
    from collections.abc import Sequence

TARGET = "gadgetron.external.connection"
# Modules of this package runnable by ``python -m gadgetron`` and their one target.
DEFAULT_TARGETS = {"gadgets.passnet_gadget": "reconstruct"}
_CLOSE = b"\x04\x00"  # GADGET_MESSAGE_CLOSE


def handshake_timeout() -> float | None:
    """Seconds the configuration and header may take (``PASSNET_GADGET_TIMEOUT``)."""
    try:
        value = float(os.environ.get("PASSNET_GADGET_TIMEOUT", "300"))
    except ValueError:
        return 300.0
    return value if value > 0 else None


class HardenedSocketWrapper:
    """Drop-in for ``Connection.SocketWrapper``: end-of-stream raises, reads can time out.

    Parameters
    ----------
    sock
        The connected socket gadgetron hands to ``Connection``.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.socket = sock
        self.socket.settimeout(handshake_timeout())
        self.closed = False

    def read(self, nbytes: int) -> bytes:
        """Exactly ``nbytes``; ``ConnectionError`` if the peer closes first."""
        data = bytearray()  # grows with what arrives, never to a declared length
        while len(data) < nbytes:
            chunk = self.socket.recv(min(nbytes - len(data), 1 << 20))
            if not chunk:
                raise ConnectionError(
                    f"Gadgetron closed the connection after {len(data)} of {nbytes} bytes"
                )
            data += chunk
        return bytes(data)

    def write(self, byte_array: bytes) -> None:
        """Send all of ``byte_array``."""
        self.socket.sendall(byte_array)

    def close(self) -> None:
        """Send close once (best effort) and close the socket."""
        if self.closed:
            return
        self.closed = True
        try:
            self.socket.sendall(_CLOSE)
        except OSError:
            pass
        finally:
            self.socket.close()


def patch(module: types.ModuleType) -> None:
    """Install :class:`HardenedSocketWrapper` into a loaded ``gadgetron.external.connection``."""
    connection = getattr(module, "Connection", None)
    if connection is None or getattr(connection, "_passnet_hardened", False):
        return
    if not hasattr(connection, "SocketWrapper"):
        return  # a gadgetron without the 1.4.1 wrapper: nothing to fix
    original_init = connection.__init__

    def __init__(self: Any, sock: socket.socket, *args: Any, **kwargs: Any) -> None:
        original_init(self, sock, *args, **kwargs)
        try:  # handshake done: block as gadgetron does (the step sets its own timeout)
            self.socket.socket.settimeout(None)
        except (AttributeError, OSError):
            pass

    connection.SocketWrapper = HardenedSocketWrapper
    connection.__init__ = __init__
    connection._passnet_hardened = True


class _Finder(importlib.abc.MetaPathFinder):
    """Patches :data:`TARGET` right after it executes, whoever imports it."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != TARGET:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        loader = spec.loader
        original_exec = loader.exec_module

        def exec_module(module: types.ModuleType) -> None:
            original_exec(module)
            patch(module)

        # this loader instance only (PathFinder made it for this module), not its class
        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def add_missing_target(argv: list[str], orig_argv: list[str]) -> bool:
    """Append the default target to ``python -m gadgetron PORT MODULE`` (in place).

    Parameters
    ----------
    argv
        ``sys.argv`` while ``.pth`` files run: ``["-m", PORT, MODULE, ...]``.
    orig_argv
        ``sys.orig_argv`` (the interpreter's own command line), to see that the module run is
        ``gadgetron``.

    Returns
    -------
    bool
        True when a target was added.
    """
    try:
        at = orig_argv.index("-m")
    except ValueError:
        return False
    if orig_argv[at + 1 : at + 2] != ["gadgetron"] or len(argv) != 3:
        return False
    target = DEFAULT_TARGETS.get(argv[2])
    if target is None:
        return False
    argv.append(target)
    return True


def install() -> None:
    """Register the hook (idempotent); patch at once if gadgetron is already imported."""
    add_missing_target(sys.argv, list(getattr(sys, "orig_argv", [])))
    if TARGET in sys.modules:
        patch(sys.modules[TARGET])
        return
    if not any(isinstance(finder, _Finder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
