"""``passnet serve``: a server speaking Gadgetron's client protocol.

``gadgetron_ismrmrd_client -f in.h5 -c passnet_raw.xml -o out.h5 -p 9002`` (or any client of
that protocol) can talk to it instead of a full Gadgetron. Per connection it reads a chain
(config file name, id 1, looked up in ``gadgetron_configs``; or a config script, id 2), the
ISMRMRD header (id 3), acquisitions/waveforms (1008/1026) until close (4), and answers with
images (1022), a text message (5) when something went wrong, then close (4).

The chain XML is interpreted, not executed: the native steps Python can stand in for are
mapped onto the PASSNet chain (which prewhitens, removes oversampling and buffers by itself),
the PASSNet ``<external>`` step contributes its ``<configuration>``, readers and writers are
ignored, and any other native gadget is refused with a text message naming it.
"""

from __future__ import annotations

import argparse
import logging
import socket
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import ismrmrd
import ismrmrd.xsd

from gadgets import protocol

LOG = logging.getLogger(__name__)

PASSNET_MODULE = "gadgets.passnet_gadget"
PASSNET_TARGET = "reconstruct"

# Native gadgets whose job the PASSNet chain does itself (value: what stands in for it).
NATIVE_EQUIVALENTS = {
    "NoiseAdjustGadget": "noise prewhitening in the PASSNet chain",
    "RemoveROOversamplingGadget": "readout oversampling removal in the PASSNet chain",
    "AcquisitionAccumulateTriggerGadget": "per-slice buffering in the PASSNet chain",
    "BucketToBufferGadget": "per-slice buffering in the PASSNet chain",
}
# BucketToBuffer's N_dimension names the frame axis; these are the ones the chain supports.
_FRAME_DIMENSIONS = {"phase", "repetition"}


class UnsupportedChainError(ValueError):
    """A chain this server cannot run (unknown native gadget, no PASSNet step, bad XML)."""


def _properties(node: ET.Element) -> dict[str, str]:
    """Properties of a chain node, in both the v2 (attribute) and the legacy (child) form."""
    found: dict[str, str] = {}
    for prop in node.findall("property"):
        name = prop.get("name", prop.findtext("name"))
        value = prop.get("value", prop.findtext("value"))
        if name:
            found[name.strip()] = (value or "").strip()
    return found


def _step_name(node: ET.Element) -> str:
    return (node.findtext("classname") or node.findtext("name") or "?").strip()


def interpret_chain(chain_xml: str) -> Any:
    """Map a Gadgetron chain (version 2 XML) onto PASSNet chain parameters.

    Parameters
    ----------
    chain_xml
        The chain as sent in a config script or read from a shipped config file.

    Returns
    -------
    gadgets.chain.ChainParams
        The PASSNet step's ``<configuration>`` properties, plus ``frame_dimension`` from a
        BucketToBufferGadget's ``N_dimension`` when the PASSNet step does not set it.

    Raises
    ------
    UnsupportedChainError
        The XML does not parse, is not a version-2 ``<configuration>``, names a native gadget
        with no Python equivalent here, an external step other than PASSNet, or no PASSNet step.
    """
    from gadgets.chain import ChainParams

    try:
        root = ET.fromstring(chain_xml.strip().rstrip("\0"))
    except ET.ParseError as exc:
        raise UnsupportedChainError(f"chain is not valid XML: {exc}") from exc
    if root.tag != "configuration" or root.find("stream") is None:
        raise UnsupportedChainError(
            f"chain root is <{root.tag}>; expected a Gadgetron 4 <configuration> with a <stream>"
        )
    version = (root.findtext("version") or "2").strip()
    if version != "2":
        raise UnsupportedChainError(f"chain format version {version} is not supported (need 2)")

    passnet_config: ET.Element | None = None
    passnet_steps = 0
    frame_dimension: str | None = None
    for node in root.find("stream"):
        if node.tag == "gadget":
            name = _step_name(node)
            if name not in NATIVE_EQUIVALENTS:
                raise UnsupportedChainError(
                    f"native gadget {name!r} has no equivalent in 'passnet serve'; supported: "
                    f"{', '.join(sorted(NATIVE_EQUIVALENTS))} and the PASSNet external step"
                )
            if name == "BucketToBufferGadget":
                n_dimension = _properties(node).get("N_dimension", "").lower()
                if n_dimension in _FRAME_DIMENSIONS:
                    frame_dimension = n_dimension
            LOG.debug("chain step %s -> %s", name, NATIVE_EQUIVALENTS[name])
        elif node.tag == "external":
            execute = node.find("execute")
            module = execute.get("name", "") if execute is not None else ""
            target = execute.get("target", "") if execute is not None else ""
            if (module, target) != (PASSNET_MODULE, PASSNET_TARGET):
                what = f"{module}.{target}" if execute is not None else "an external <connect>"
                raise UnsupportedChainError(
                    f"external step {what!r} is not the PASSNet step "
                    f"({PASSNET_MODULE}.{PASSNET_TARGET})"
                )
            passnet_steps += 1
            passnet_config = node.find("configuration")
        else:
            raise UnsupportedChainError(
                f"chain step <{node.tag}> is not supported by 'passnet serve' "
                "(only <gadget> and <external>)"
            )
    if passnet_steps != 1:
        raise UnsupportedChainError(
            f"chain must contain exactly one PASSNet external step, found {passnet_steps}"
        )
    try:
        params = ChainParams.from_config(passnet_config)
    except ValueError as exc:
        raise UnsupportedChainError(f"PASSNet step configuration: {exc}") from exc
    explicit = passnet_config is not None and "frame_dimension" in _properties(passnet_config)
    if frame_dimension is not None and not explicit:
        params = replace(params, frame_dimension=frame_dimension)
    return params


def load_named_chain(name: str) -> str:
    """Text of a shipped chain (``gadgetron_configs``) named by a config-file message."""
    from gadgetron_configs import config_path

    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise UnsupportedChainError(f"config file name {name!r} must be a plain file name")
    try:
        return config_path(name).read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise UnsupportedChainError(str(exc)) from exc


@dataclass(frozen=True)
class ServerSettings:
    """How ``passnet serve`` runs.

    ``weights`` and ``device``, when given, override what a chain's PASSNet step asks for:
    the operator decides which files and hardware the server uses.
    """

    host: str = "127.0.0.1"
    port: int = 9002
    weights: str | None = None
    device: str | None = None
    timeout: float = 60.0
    max_clients: int = 4

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {self.port}")
        if self.timeout <= 0:
            raise ValueError(f"timeout must be positive seconds, got {self.timeout}")
        if self.max_clients < 1:
            raise ValueError(f"max_clients must be at least 1, got {self.max_clients}")

    def apply(self, params: Any) -> Any:
        """Chain parameters with the server's overrides applied."""
        overrides = {"weights": self.weights, "device": self.device}
        return replace(params, **{k: v for k, v in overrides.items() if v is not None})


def _read_chain(stream: protocol.SocketStream) -> str:
    message = protocol.read_message(stream)
    if message.id == protocol.MESSAGE_CONFIG_FILE:
        LOG.info("client asked for chain %r", message.item)
        return load_named_chain(message.item)
    if message.id == protocol.MESSAGE_CONFIG_SCRIPT:
        return message.item
    raise protocol.ProtocolError(f"expected a config file or script first, got {message.name}")


def _read_header(stream: protocol.SocketStream) -> Any:
    message = protocol.read_message(stream)
    if message.id != protocol.MESSAGE_HEADER:
        raise protocol.ProtocolError(f"expected the ISMRMRD header, got {message.name}")
    try:
        return ismrmrd.xsd.CreateFromDocument(message.item)
    except Exception as exc:  # xsdata raises several parser-specific types
        raise protocol.ProtocolError(f"header is not an ISMRMRD XML header: {exc}") from exc


def _incoming_items(stream: protocol.SocketStream) -> Iterator[Any]:
    while True:
        message = protocol.read_message(stream)
        if message.id == protocol.MESSAGE_CLOSE:
            return
        if message.id not in (protocol.MESSAGE_ACQUISITION, protocol.MESSAGE_WAVEFORM):
            raise protocol.ProtocolError(f"unexpected {message.name} message from the client")
        yield message.item


def serve_client(sock: socket.socket, settings: ServerSettings) -> Any:
    """Run one client session to the end and close the socket; never raises.

    Returns
    -------
    gadgets.chain.ChainReport or None
        The chain's report, or ``None`` when the session failed before the chain ran.
    """
    from gadgets.chain import run_chain

    stream = protocol.SocketStream(sock, timeout=settings.timeout)
    peer = _peer_name(sock)
    report = None

    def send(item: Any) -> None:
        # Like a Gadgetron chain with only an image writer: other items stay server-side.
        if isinstance(item, ismrmrd.Image):
            protocol.write_image(stream, item)
        else:
            LOG.debug("%s: not sending %s to the client", peer, type(item).__name__)

    try:
        params = settings.apply(interpret_chain(_read_chain(stream)))
        header = _read_header(stream)
        report = run_chain(header, _incoming_items(stream), send, params)
        LOG.info(
            "%s: %d slice(s) reconstructed, %d failed",
            peer,
            report.slices_done,
            report.slices_failed,
        )
        if report.errors:
            _tell(stream, "PASSNet: " + "; ".join(report.errors))
    except (ValueError, TimeoutError) as exc:  # bad input or a stalled client
        LOG.error("%s: %s", peer, exc)
        _tell(stream, f"PASSNet server: {exc}")
    except OSError as exc:
        LOG.error("%s: connection failed: %s", peer, exc)
    except Exception as exc:
        LOG.exception("%s: internal error", peer)
        _tell(stream, f"PASSNet server internal error: {exc}")
    finally:
        stream.close()
    return report


def _tell(stream: protocol.SocketStream, text: str) -> None:
    try:
        protocol.write_text(stream, text)
    except OSError:
        pass  # the client is gone; the log has the message


def _peer_name(sock: socket.socket) -> str:
    try:
        host, port = sock.getpeername()[:2]
        return f"{host}:{port}"
    except OSError:
        return "client"


class PassnetServer:
    """Threaded TCP server: one thread per client, at most ``max_clients`` at a time.

    A client beyond the limit gets a text message saying so, then close. One client's failure
    stays in its own thread and socket.
    """

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self._listener: socket.socket | None = None
        self._stopping = threading.Event()
        self._slots = threading.BoundedSemaphore(settings.max_clients)
        self._threads: set[threading.Thread] = set()
        self._clients: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._accept_thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port); the port is real even when 0 was asked for."""
        if self._listener is None:
            raise RuntimeError("server not started")
        return self._listener.getsockname()[:2]

    def start(self) -> tuple[str, int]:
        """Bind, listen and accept clients in a background thread."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.settings.host, self.settings.port))
        listener.listen(16)
        listener.settimeout(0.2)  # lets the accept loop notice stop()
        self._listener = listener
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name="passnet-accept", daemon=True
        )
        self._accept_thread.start()
        LOG.info("passnet serve listening on %s:%d", *self.address)
        return self.address

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                break  # listener closed by stop()
            if not self._slots.acquire(blocking=False):
                LOG.warning("refusing %s: %d clients busy", _peer_name(sock), self._limit)
                busy = protocol.SocketStream(sock, timeout=5.0)
                _tell(busy, f"PASSNet server busy ({self._limit} clients); try again later")
                busy.close()
                continue
            thread = threading.Thread(target=self._run_client, args=(sock,), daemon=True)
            with self._lock:
                self._threads.add(thread)
                self._clients.add(sock)
            thread.start()

    @property
    def _limit(self) -> int:
        return self.settings.max_clients

    def _run_client(self, sock: socket.socket) -> None:
        try:
            serve_client(sock, self.settings)
        finally:
            self._slots.release()
            with self._lock:
                self._threads.discard(threading.current_thread())
                self._clients.discard(sock)

    def serve_forever(self) -> None:
        """Block until :meth:`stop` is called (or Ctrl-C)."""
        if self._listener is None:
            self.start()
        try:
            while not self._stopping.wait(0.5):
                pass
        finally:
            self.stop()

    def stop(self, join_timeout: float = 5.0) -> None:
        """Stop accepting, end running sessions (their sockets are shut down) and wait."""
        self._stopping.set()
        if self._listener is not None:
            self._listener.close()
        if self._accept_thread is not None:
            self._accept_thread.join(join_timeout)
        with self._lock:
            running = list(self._threads)
            clients = list(self._clients)
        for sock in clients:  # wake sessions blocked in a read; each then closes its socket
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in running:
            thread.join(join_timeout)

    def __enter__(self) -> PassnetServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``passnet serve``."""
    parser.add_argument("--port", type=int, default=9002, help="TCP port (default 9002)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    parser.add_argument("--weights", default=None, help="weights file (default: shipped)")
    parser.add_argument("--device", default=None, help="auto | cpu | cuda[:n] (default: chain's)")
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="seconds to wait for each client message"
    )
    parser.add_argument("--max-clients", type=int, default=4, help="concurrent clients")


def run(args: argparse.Namespace) -> int:
    """Run ``passnet serve`` until interrupted."""
    try:
        settings = ServerSettings(
            host=args.host,
            port=args.port,
            weights=args.weights,
            device=args.device,
            timeout=args.timeout,
            max_clients=args.max_clients,
        )
    except ValueError as exc:
        LOG.error("%s", exc)
        return 2
    server = PassnetServer(settings)
    try:
        server.start()
    except OSError as exc:
        LOG.error("cannot listen on %s:%d: %s", settings.host, settings.port, exc)
        return 1
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        LOG.info("stopping")
    return 0
