"""The one adaptation of ``gadgetron`` 1.4.1's ``Connection``, on ``protocol.SocketStream``.

The PyPI package's ``Connection`` reads through a socket wrapper that has no timeout and loops
forever (70-95 % CPU) on ``recv`` returning ``b""`` when Gadgetron closes mid-message; it ends
the iteration silently on an unknown message id; its ReconData writer fails on numpy 2. The
step therefore reads and writes through :class:`gadgets.protocol.SocketStream`, in two steps:

- :func:`harden_handshake`: the constructor reads the step configuration and the ISMRMRD
  header, and ``python -m gadgetron`` builds the connection *before* it imports the step, so
  this has to change the class, before that: :mod:`gadgets.gadgetron_hook` calls it at the
  start of such a process, :func:`gadgets.passnet_gadget.listen` before it waits for
  Gadgetron.
- :func:`harden_connection`: the connection the step was handed, before it reads any item.

Both use the same timeout, :func:`step_timeout`. The private attributes used here
(``SocketWrapper``, ``_read_item``, ``_read_message_identifier``) are those of gadgetron 1.4.x,
which pyproject.toml pins.
"""

from __future__ import annotations

import functools
import math
import os
import socket
from typing import Any

from gadgetron.external import Connection
from gadgetron.types.recon_data import ReconData

from gadgets import protocol

TIMEOUT_ENV = "PASSNET_GADGET_TIMEOUT"
DEFAULT_TIMEOUT_S = 300.0


def step_timeout() -> float:
    """Seconds one message from Gadgetron may take: :data:`TIMEOUT_ENV`, default 300.

    Raises
    ------
    ValueError
        The variable holds anything but a positive number of seconds: an operator's typo must
        stop the step with its name, not quietly become some other limit.
    """
    text = os.environ.get(TIMEOUT_ENV, "").strip()
    if not text:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{TIMEOUT_ENV} must be a positive number of seconds, got {text!r}")
    return value


def _handshake_stream(sock: socket.socket) -> protocol.SocketStream:
    return protocol.SocketStream(sock, timeout=step_timeout())


def harden_handshake() -> None:
    """Make every ``Connection`` read its handshake through a ``SocketStream`` (idempotent).

    A truncated or stalled handshake then ends the step with an error naming it, in the
    Gadgetron log, instead of a process spinning forever.
    """
    if getattr(Connection, "_passnet_hardened", False):
        return
    original_init = Connection.__init__

    def __init__(self: Any, sock: socket.socket, *args: Any, **kwargs: Any) -> None:
        try:
            original_init(self, sock, *args, **kwargs)
        except protocol.TruncatedStreamError as exc:
            raise ConnectionError(
                f"Gadgetron closed the connection during the handshake: {exc}"
            ) from exc
        except TimeoutError as exc:
            raise TimeoutError(f"the handshake with Gadgetron timed out: {exc}") from exc

    # The constructor looks the wrapper up as Connection.SocketWrapper: a plain function works.
    Connection.SocketWrapper = _handshake_stream
    Connection.__init__ = __init__
    Connection._passnet_hardened = True


def _read_item(connection: Connection) -> tuple[int, Any]:
    """One item, read by gadgetron's reader as one message of the connection's stream.

    One deadline and one byte budget per message, as ``protocol.read_message`` gives; an
    unknown message id is a :class:`protocol.ProtocolError` (gadgetron ends the stream
    silently).
    """
    stream = connection.socket
    stream.begin_message()
    try:
        message_id = connection._read_message_identifier()
        reader = connection.readers.get(message_id)
        if reader is None:
            raise protocol.ProtocolError(
                f"unknown message id {message_id} from Gadgetron "
                f"(known: {sorted(connection.readers)})"
            )
        return message_id, reader(stream)
    finally:
        stream.end_message()


def harden_connection(connection: Connection, timeout: float | None) -> None:
    """Adapt one connection, after its handshake, for the step.

    - reads and writes go through a ``SocketStream`` with ``timeout`` seconds per message
      (the handshake's stream where :func:`harden_handshake` made one: it may already hold
      items Gadgetron sent), and a close that is sent once, so Gadgetron's own ``with`` block
      can close again harmlessly;
    - each item is one message (:func:`_read_item`); an unknown id is an error;
    - ReconData is written by :func:`protocol.write_recon_data`.

    Parameters
    ----------
    connection
        The ``gadgetron.external.Connection`` the step was handed.
    timeout
        Seconds one message may take; ``None`` waits forever.
    """
    stream = connection.socket
    if isinstance(stream, protocol.SocketStream):
        stream.set_timeout(timeout)
    else:  # gadgetron's own wrapper reads exactly what it is asked: nothing is buffered
        connection.socket = protocol.SocketStream(stream.socket, timeout=timeout)
    connection._read_item = functools.partial(_read_item, connection)
    connection.add_writer(lambda item: isinstance(item, ReconData), protocol.write_recon_data)
