"""``passnet serve``: a server speaking Gadgetron's client protocol.

``gadgetron_ismrmrd_client -f in.h5 -c passnet_raw.xml -o out.h5 -p 9002`` (or any client of
that protocol) can talk to it instead of a full Gadgetron. Per connection it reads a chain
(config file name, id 1, looked up in ``gadgetron_configs``; or a config script, id 2), the
ISMRMRD header (id 3), acquisitions/waveforms (1008/1026) until close (4), and answers with
images (1022), a text message (5) when something went wrong, then close (4).

The chain XML is interpreted, not executed (:mod:`gadgets.chain_config`, the same path the
gadget and ``passnet recon`` use): a native gadget the PASSNet chain cannot stand in for is
refused with a text message naming it. A dependency query (the chain
``gadgetron_ismrmrd_client`` sends before a file that declares a noise dependency) is answered
as Gadgetron answers it, from the noise covariances of earlier sessions
(:mod:`gadgets.dependency`); a later session whose header depends on such a noise measurement
is prewhitened with it when it brings no noise scans of its own.

Resource limits are the operator's (:class:`ServerSettings`), never the client's: the size of
one message, the time one message may take, the time of a whole session, the slice matrix and
the lines buffered per slice. A chain may lower the slice limits, never raise them, and its
``weights`` property is ignored: the server only opens the weights file it was started with,
which it loads (and refuses to start without, unless ``allow_fallback``) before listening.
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import ismrmrd

from gadgets import protocol
from gadgets.chain import ChainReport, run_chain
from gadgets.chain_config import (
    interpret_chain,
    load_named_chain,
    parse_xml,
)
from gadgets.dependency import (
    NoiseRecord,
    NoiseStore,
    measurement_id,
    noise_dependency,
    noise_query_target,
    query_answer,
)
from gadgets.server_settings import ServerSettings, settings_from_args
from passnet_core.inference import cached_model
from passnet_core.ismrmrd_io import parse_header

if TYPE_CHECKING:
    import types


log = logging.getLogger(__name__)

# The chain and the header are XML of a few kB; a larger one is refused before it is read.
MAX_XML_BYTES = 4 * 1024 * 1024
# Connections beyond max_clients: how many are read (for a dependency query) at once, and how
# long their first message may take.
MAX_REFUSAL_THREADS = 8
REFUSAL_READ_TIMEOUT_S = 5.0


def _read_chain(stream: protocol.SocketStream) -> str:
    message = protocol.read_message(stream)
    if message.id == protocol.MESSAGE_CONFIG_FILE:
        log.info("client asked for chain %r", message.item)
        return load_named_chain(message.item)
    if message.id == protocol.MESSAGE_CONFIG_SCRIPT:
        return message.item
    raise protocol.ProtocolError(f"expected a config file or script first, got {message.name}")


def _read_header(stream: protocol.SocketStream) -> ismrmrd.xsd.ismrmrdHeader:
    message = protocol.read_message(stream)
    if message.id != protocol.MESSAGE_HEADER:
        raise protocol.ProtocolError(f"expected the ISMRMRD header, got {message.name}")
    try:
        return parse_header(message.item)
    except ValueError as exc:
        raise protocol.ProtocolError(str(exc)) from exc


def _answer_dependency_query(
    stream: protocol.SocketStream, target: str, noise_store: NoiseStore, peer: str
) -> None:
    """Answer a noise dependency query as Gadgetron does: one meta message (then close).

    The client sends close right after the chain; a header or data before it is read and
    dropped (Gadgetron's NoiseSummaryGadget ignores data too).
    """
    while protocol.read_message(stream).id != protocol.MESSAGE_CLOSE:
        pass
    record = noise_store.get(target)
    log.info(
        "%s: dependency query for noise measurement %r: %s",
        peer,
        target,
        "found" if record is not None else "not known to this server",
    )
    protocol.write_dependency_answer(stream, query_answer(record))


def _incoming_items(stream: protocol.SocketStream) -> Iterator[object]:
    while True:
        message = protocol.read_message(stream)
        if message.id == protocol.MESSAGE_CLOSE:
            return
        if message.id not in (protocol.MESSAGE_ACQUISITION, protocol.MESSAGE_WAVEFORM):
            raise protocol.ProtocolError(f"unexpected {message.name} message from the client")
        yield message.item


def serve_client(
    sock: socket.socket,
    settings: ServerSettings,
    release: Callable[[], None] | None = None,
    cancel: threading.Event | None = None,
    noise_store: NoiseStore | None = None,
) -> ChainReport | None:
    """Run one client session to the end and close the socket; never raises.

    Parameters
    ----------
    sock
        The accepted connection.
    settings
        The server's limits and overrides.
    release
        Called once when the session's work is done, *before* the close message goes out,
        so a client that connects again right after seeing close finds its slot free.
    cancel
        Set by a server that is shutting down: stop reading, skip slices not yet
        reconstructed, tell the client and close.
    noise_store
        Noise covariances by measurement ID, shared by the server's sessions: answers
        dependency queries, prewhitens measurements that depend on a stored noise
        measurement, and receives the noise of each session that brings noise scans.

    Returns
    -------
    gadgets.chain.ChainReport or None
        The chain's report, or ``None`` when the session failed before the chain ran.
    """
    stream = protocol.SocketStream(
        sock,
        timeout=settings.timeout,
        max_message_bytes=min(settings.max_message_bytes, MAX_XML_BYTES),
        session_deadline=time.monotonic() + settings.session_timeout,
    )
    peer = _peer_name(sock)
    report: ChainReport | None = None

    def send(item: object) -> None:
        # Like a Gadgetron chain with only an image writer: other items stay server-side.
        if isinstance(item, ismrmrd.Image):
            protocol.write_image(stream, item)
        else:
            log.debug("%s: not sending %s to the client", peer, type(item).__name__)

    def stopping() -> str:
        return "PASSNet server shutting down; " if cancel is not None and cancel.is_set() else ""

    noise_store = noise_store if noise_store is not None else NoiseStore()
    try:
        chain = parse_xml(_read_chain(stream))
        query = noise_query_target(chain)
        if query is not None:
            _answer_dependency_query(stream, query, noise_store, peer)
            return None
        params = settings.apply(interpret_chain(chain), peer)
        header = _read_header(stream)
        stream.max_message_bytes = settings.max_message_bytes  # data messages from here on
        depends_on = noise_dependency(header)
        prior = noise_store.get(depends_on) if depends_on else None
        if prior is not None:
            log.info("%s: noise measurement %r known: prewhitening with it", peer, depends_on)
        report = run_chain(
            header,
            _incoming_items(stream),
            send,
            params,
            cancel=cancel,
            noise_covariance=None if prior is None else prior.covariance,
        )
        own_id = measurement_id(header)
        noise = report.noise_covariance if own_id is not None else None
        if noise is not None and own_id is not None:
            noise_store.put(own_id, NoiseRecord(noise, report.noise_dwell_time_us))
        log.info(
            "%s: %d slice(s) reconstructed, %d failed, %d image(s) sent",
            peer,
            report.slices_done,
            report.slices_failed,
            report.images_sent,
        )
        stored_only = not report.slices_failed and report.stream_error is None
        if noise is not None and report.images_sent == 0 and stored_only:
            # a noise measurement replayed for the ones that depend on it: not a failure
            channels = noise.shape[0]
            _tell(
                stream,
                f"PASSNet: noise measurement {own_id!r} stored ({channels} channels) for the "
                "measurements that depend on it; it holds no images to reconstruct",
            )
        elif report.errors:
            _tell(stream, stopping() + "PASSNet: " + "; ".join(report.errors))
    except (ValueError, TimeoutError) as exc:  # bad input or a stalled client
        log.error("%s: %s", peer, exc)
        _tell(stream, f"{stopping()}PASSNet server: {exc}")
    except OSError as exc:
        log.error("%s: connection failed: %s", peer, exc)
        _tell(stream, f"{stopping()}PASSNet server: connection failed: {exc}")
    except Exception as exc:  # MemoryError included: this session ends, the server goes on
        log.exception("%s: internal error", peer)
        _tell(stream, f"{stopping()}PASSNet server internal error: {type(exc).__name__}: {exc}")
    finally:
        try:
            if release is not None:
                release()
        finally:
            stream.close()
    return report


def _tell_busy(stream: protocol.SocketStream, why: str) -> None:
    """Tell a client beyond the limit that the server is busy (the stream is closed after)."""
    log.warning("refusing %s: %s", _peer_name(stream.socket), why)
    _tell(stream, f"PASSNet server busy ({why}); try again later")


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


def check_weights(settings: ServerSettings) -> str | None:
    """Load the server's weights once; the reason they cannot be used, or ``None``.

    Never opens anything but ``settings.weights`` (or the shipped weights). The loaded
    model stays in the inference cache, so the first client does not pay for loading.
    """
    name = settings.weights or "the shipped weights"
    try:
        cached_model(settings.weights, settings.device or "auto")
    except Exception as exc:  # missing, truncated, pickle, wrong format, bad device
        return f"cannot load PASSNet weights ({name}): {type(exc).__name__}: {exc}"
    return None


class PassnetServer:
    """Threaded TCP server: one thread per client, at most ``max_clients`` at a time.

    A client beyond the limit gets a text message saying so, then close. One client's failure
    stays in its own thread and socket. :meth:`start` refuses to run with weights that cannot
    be loaded (``ValueError``) unless ``allow_fallback`` is set.
    """

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self._listener: socket.socket | None = None
        self._stopping = threading.Event()
        self._cancel = threading.Event()  # running sessions must end now
        self._stopped = False
        self._slots = threading.BoundedSemaphore(settings.max_clients)
        # Refused connections are answered in short threads (a dependency query gets its
        # answer even when the server is busy); beyond this many, they are refused at once.
        self._refusals = threading.BoundedSemaphore(MAX_REFUSAL_THREADS)
        self._threads: set[threading.Thread] = set()
        self._clients: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._accept_thread: threading.Thread | None = None
        self.noise_store = NoiseStore()  # noise covariances by measurement ID, all sessions

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port); the port is real even when 0 was asked for."""
        if self._listener is None:
            raise RuntimeError("server not started")
        return self._listener.getsockname()[:2]

    def start(self) -> tuple[str, int]:
        """Check the weights, bind, listen and accept clients in a background thread.

        Raises
        ------
        ValueError
            The weights cannot be loaded and ``allow_fallback`` is off.
        OSError
            The address cannot be bound.
        """
        problem = check_weights(self.settings)
        if problem is not None:
            if not self.settings.allow_fallback:
                raise ValueError(
                    f"{problem}; refusing to start (--allow-fallback serves zero-filled "
                    "SENSE images instead)"
                )
            log.warning("%s; serving zero-filled SENSE images (--allow-fallback)", problem)
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((self.settings.host, self.settings.port))
            listener.listen(16)
        except OSError:
            listener.close()
            raise
        listener.settimeout(0.2)  # lets the accept loop notice stop()
        self._listener = listener
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name="passnet-accept", daemon=True
        )
        self._accept_thread.start()
        log.info("passnet serve listening on %s:%d", *self.address)
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
            if self._stopping.is_set() or not self._slots.acquire(blocking=False):
                why = "shutting down" if self._stopping.is_set() else f"{self._limit} clients"
                if not self._stopping.is_set() and self._refusals.acquire(blocking=False):
                    threading.Thread(target=self._refuse, args=(sock, why), daemon=True).start()
                else:
                    busy = protocol.SocketStream(sock, timeout=5.0)
                    _tell_busy(busy, why)
                    busy.close()
                continue
            thread = threading.Thread(target=self._run_client, args=(sock,), daemon=True)
            with self._lock:
                self._threads.add(thread)
                self._clients.add(sock)
            thread.start()

    def _refuse(self, sock: socket.socket, why: str) -> None:
        """A connection beyond the limit: answer a dependency query (it costs nothing and
        Gadgetron's client aborts on anything else), tell any other client it is busy."""
        # The whole exchange is bounded, so a slow client cannot hold a refusal slot.
        stream = protocol.SocketStream(
            sock,
            timeout=REFUSAL_READ_TIMEOUT_S,
            max_message_bytes=MAX_XML_BYTES,
            session_deadline=time.monotonic() + 2 * REFUSAL_READ_TIMEOUT_S,
        )
        try:
            try:
                query = noise_query_target(parse_xml(_read_chain(stream)))
            except (ValueError, TimeoutError, OSError):
                query = None
            if query is None:
                _tell_busy(stream, why)
            else:
                try:
                    _answer_dependency_query(stream, query, self.noise_store, _peer_name(sock))
                except (ValueError, TimeoutError, OSError) as exc:
                    log.warning("dependency query while busy failed: %s", exc)
        finally:
            stream.close()
            self._refusals.release()

    @property
    def _limit(self) -> int:
        return self.settings.max_clients

    def _run_client(self, sock: socket.socket) -> None:
        released = threading.Event()

        def release() -> None:
            if not released.is_set():
                released.set()
                self._slots.release()

        try:
            serve_client(
                sock,
                self.settings,
                release=release,
                cancel=self._cancel,
                noise_store=self.noise_store,
            )
        finally:
            release()
            with self._lock:
                self._threads.discard(threading.current_thread())
                self._clients.discard(sock)

    def request_stop(self) -> None:
        """Ask :meth:`serve_forever` to stop (safe from a signal handler)."""
        self._stopping.set()

    def serve_forever(self) -> None:
        """Block until :meth:`request_stop`/:meth:`stop`, then stop with the shutdown grace."""
        if self._listener is None:
            self.start()
        try:
            while not self._stopping.wait(0.5):
                pass
        finally:
            self.stop(grace=self.settings.shutdown_grace)

    def running_sessions(self) -> int:
        """Sessions in progress."""
        with self._lock:
            return len(self._threads)

    def stop(self, join_timeout: float = 5.0, grace: float = 0.0) -> None:
        """Stop accepting; give sessions ``grace`` seconds, then end them cleanly and wait.

        A session still running after the grace period is cancelled: its reads end, slices
        not yet reconstructed are skipped, the client is told the server is shutting down and
        gets a close message. Returns within about ``grace + 2 * join_timeout`` seconds.
        """
        if self._stopped:
            return
        self._stopped = True
        self._stopping.set()
        if self._listener is not None:
            self._listener.close()
        if self._accept_thread is not None:
            self._accept_thread.join(join_timeout)
        deadline = time.monotonic() + grace
        while (
            self.running_sessions()
            and time.monotonic() < deadline
            and not self._cancel.is_set()  # a second signal: no more grace
        ):
            time.sleep(0.05)
        with self._lock:
            running = list(self._threads)
            clients = list(self._clients)
        if running:
            log.info("closing %d running session(s)", len(running))
        self._cancel.set()
        for sock in clients:  # end blocked reads; each session still writes its text + close
            _shutdown(sock, socket.SHUT_RD)
        for thread in running:
            thread.join(join_timeout)
        with self._lock:
            stuck = list(self._clients)
        for sock in stuck:  # a session still computing: its socket goes, the thread is daemon
            _shutdown(sock, socket.SHUT_RDWR)
        log.info("passnet serve stopped")

    def __enter__(self) -> PassnetServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _shutdown(sock: socket.socket, how: int) -> None:
    try:
        sock.shutdown(how)
    except OSError:
        pass


def run(args: argparse.Namespace) -> int:
    """Run ``passnet serve`` until SIGTERM/SIGINT; 2 on bad settings or weights."""
    try:
        settings = settings_from_args(args)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    server = PassnetServer(settings)
    try:
        server.start()
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", settings.host, settings.port, exc)
        return 1
    _install_signal_handlers(server)
    server.serve_forever()
    return 0


def _install_signal_handlers(server: PassnetServer) -> None:
    """SIGTERM/SIGINT: log, stop accepting, let sessions finish within the grace period."""
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be installed from the main thread

    def handle(signum: int, _frame: types.FrameType | None) -> None:
        name = signal.Signals(signum).name
        if server._stopping.is_set():
            log.warning("%s again: closing running sessions now", name)
            server._cancel.set()
            return
        log.info(
            "%s received: stopping; %d running session(s) get %g s to finish",
            name,
            server.running_sessions(),
            server.settings.shutdown_grace,
        )
        server.request_stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handle)
