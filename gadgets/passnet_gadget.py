"""Gadgetron external Python step running the PASSNet chain.

Gadgetron starts it from a chain's ``<external>`` node as::

    python3 -m gadgetron PORT gadgets.passnet_gadget reconstruct

and calls :func:`reconstruct` with a ``gadgetron.external.Connection`` whose ``config`` is the
node's ``<configuration>`` and whose ``header`` is the parsed ISMRMRD header. The step accepts
raw acquisitions (``passnet_raw.xml``) and ReconData from a native BucketToBufferGadget
(``passnet_buffered.xml``); the chain decides what to do with each item.

The connection is adapted by :mod:`gadgets.gadgetron_adapter` (timeouts, clear errors,
ReconData on numpy 2). For debugging, :func:`listen` serves one connection in Gadgetron's
passive mode (``<connect port="..."/>`` in the chain).
"""

from __future__ import annotations

import logging
import os
import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING

from gadgetron.external import Connection
from gadgetron.external import listen as gadgetron_listen

from gadgets import gadgetron_adapter

if TYPE_CHECKING:
    from gadgets.chain_config import ChainParams

log = logging.getLogger(__name__)

# The server's setting for a step that receives no <configuration> (step_params).
STEP_CONFIG_ENV = "PASSNET_STEP_CONFIG"

# Seconds the step waits for the next message before giving up on Gadgetron.
DEFAULT_READ_TIMEOUT_S = gadgetron_adapter.step_timeout()


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

        gadgetron_adapter.harden_connection(connection, timeout)
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
    The handshake is read as in a step Gadgetron starts (``harden_handshake``).
    """
    gadgetron_adapter.harden_handshake()
    gadgetron_listen(port, reconstruct, timeout=timeout)
