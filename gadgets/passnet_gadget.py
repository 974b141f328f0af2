"""Gadgetron external Python step running the PASSNet chain.

Gadgetron starts it from a chain's ``<external>`` node as::

    python3 -m gadgetron PORT gadgets.passnet_gadget reconstruct

and calls :func:`reconstruct` with a ``gadgetron.external.Connection`` whose ``config`` is the
node's ``<configuration>`` and whose ``header`` is the parsed ISMRMRD header. The step accepts
raw acquisitions (``passnet_raw.xml``) and ReconData from a native BucketToBufferGadget
(``passnet_buffered.xml``); the chain decides what to do with each item.

For debugging, :func:`listen` serves one connection in Gadgetron's passive mode
(``<connect port="..."/>`` in the chain).
"""

from __future__ import annotations

import logging
import os
import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING, Any

from gadgetron.external import Connection
from gadgetron.external import listen as gadgetron_listen
from gadgetron.types.recon_data import ReconData

from gadgets import gadgetron_hook, protocol

if TYPE_CHECKING:
    from gadgets.chain_config import ChainParams

log = logging.getLogger(__name__)

# Installed at start-up by the package's .pth; again here for a source checkout without it
# (then only connections made after this import, e.g. by listen(), are covered).
gadgetron_hook.install()

# The server's setting for a step that receives no <configuration> (step_params).
STEP_CONFIG_ENV = "PASSNET_STEP_CONFIG"

# Seconds the step waits for the next message before giving up on Gadgetron.
DEFAULT_READ_TIMEOUT_S = float(os.environ.get("PASSNET_GADGET_TIMEOUT", "300"))


def _read_item_strict(connection: Connection) -> tuple[int, Any]:
    """Like ``Connection._read_item`` but an unknown id is an error, not a silent end."""
    message_id = connection._read_message_identifier()
    reader = connection.readers.get(message_id)
    if reader is None:
        raise protocol.ProtocolError(
            f"unknown message id {message_id} from Gadgetron (known: {sorted(connection.readers)})"
        )
    return message_id, reader(connection.socket)


def harden_connection(connection: Connection, timeout: float | None) -> None:
    """Fix three gadgetron 1.4.1 behaviours on one connection, without patching the package.

    - its socket wrapper has no timeout and loops forever when the peer closes mid-message:
      replaced by :class:`gadgets.protocol.SocketStream` (timeout, clear errors, idempotent
      close, so Gadgetron's own ``with`` block can close again harmlessly);
    - an unknown message id ends the stream silently: now a :class:`ProtocolError`;
    - its ReconData writer breaks on numpy 2: replaced by :func:`protocol.write_recon_data`.
    """
    raw_socket = connection.socket.socket
    connection.socket = protocol.SocketStream(raw_socket, timeout=timeout)
    connection._read_item = lambda: _read_item_strict(connection)
    connection.add_writer(lambda item: isinstance(item, ReconData), protocol.write_recon_data)


def step_params(config: ET.Element | None) -> ChainParams:
    """The step's settings: its ``<configuration>``, or the operator's where Gadgetron sent none.

    Gadgetron forwards a ``<distributed>`` node's stream to each worker without the external
    step's ``<configuration>`` (``Config.cpp``'s ``append_copy`` of a whole document fails), so
    a worker's step receives nothing it can parse (``config`` is ``None``). The worker's
    operator then names the settings in :data:`STEP_CONFIG_ENV`: a chain file, a shipped chain
    name (``passnet_distributed``) or XML text; the PASSNet step's configuration inside that
    chain (``<distributed>`` streams included) is used. A configuration that did arrive always
    wins. The variable belongs to the server's environment: a client cannot set it.

    Parameters
    ----------
    config
        ``connection.config``: the parsed ``<configuration>``, or ``None`` when there was none.

    Returns
    -------
    ChainParams
    """
    from gadgets.chain_config import ChainParams, read_config_option

    if config is not None:
        return ChainParams.from_config(config)
    source = os.environ.get(STEP_CONFIG_ENV, "").strip()
    if not source:
        log.warning(
            "the step received no <configuration> (Gadgetron drops it when it forwards a chain to "
            "a distributed worker) and %s is not set: running on the default settings",
            STEP_CONFIG_ENV,
        )
        return ChainParams()
    text = read_config_option(source)
    log.info("the step received no <configuration>: using %s=%s", STEP_CONFIG_ENV, source[:200])
    return ChainParams.from_config(text)


def reconstruct(connection: Connection, timeout: float | None = DEFAULT_READ_TIMEOUT_S) -> None:
    """Run the PASSNet chain over a Gadgetron connection; never raises to the host.

    Parameters
    ----------
    connection
        The ``gadgetron.external.Connection`` Gadgetron hands to the step.
    timeout
        Seconds to wait for each message before ending the stream; ``None`` waits forever.
    """
    # Imported here so that `python -m gadgetron` can load this module even when torch is slow
    # to import, and a broken chain shows up in the log rather than as an import error.
    try:
        from gadgets.chain import run_chain

        harden_connection(connection, timeout)
        params = step_params(connection.config)
        log.info("PASSNet step starting with %s", params)
        report = run_chain(connection.header, connection, connection.send, params)
        log.info(
            "PASSNet step done: %d slice(s) reconstructed, %d failed",
            report.slices_done,
            report.slices_failed,
        )
        for error in report.errors:
            log.error("PASSNet step: %s", error)
    except Exception:
        log.exception("PASSNet step failed")
    finally:
        try:
            connection.socket.close()
        except Exception:  # closing must never raise to the host
            log.debug("closing the Gadgetron connection failed", exc_info=True)


def listen(port: int, timeout: float | None = DEFAULT_READ_TIMEOUT_S) -> None:
    """Passive mode: wait for one Gadgetron connection on ``port`` and run :func:`reconstruct`.

    Pair it with ``<external><connect port="PORT"/><configuration/></external>`` in a chain.
    """
    gadgetron_listen(port, reconstruct, timeout=timeout)
