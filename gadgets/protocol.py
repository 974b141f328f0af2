"""Gadgetron wire protocol (ISMRMRD 1.x message framing): ids, readers, writers, SocketStream.

Every message starts with a little-endian ``uint16`` id. The layouts used here, as Gadgetron 4
and ``gadgetron_ismrmrd_client`` write them:

==========================  =====  ===========================================================
message                     id     payload
==========================  =====  ===========================================================
config file name            1      1024 bytes, NUL-padded file name
config script               2      ``uint32`` length + XML (the client counts a trailing NUL)
header                      3      ``uint32`` length + ISMRMRD XML header (trailing NUL too)
close                       4      nothing
text                        5      ``uint32`` length + UTF-8 text (Gadgetron 4 sends errors so)
error                       8      ``uint32`` length + UTF-8 text (same layout as text)
acquisition                 1008   ``ismrmrd.Acquisition`` serialisation (header, traj, data)
image                       1022   ``ismrmrd.Image`` serialisation (header, uint64 attr, data)
recon data                  1023   Gadgetron ReconData (``gadgets.recon_data_codec``)
waveform                    1026   ``ismrmrd.Waveform`` serialisation
==========================  =====  ===========================================================

The Gadgetron *external* protocol (Gadgetron -> Python step) uses the same framing: config (2),
header (3), items, close (4). A second binding (MRD v2) would sit beside this module.
"""

from __future__ import annotations

import ctypes
import functools
import io
import select
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import ismrmrd
import ismrmrd.xsd
import numpy as np
from gadgetron.external import constants
from gadgetron.types.recon_data import ReconData

from gadgets import recon_data_codec

MESSAGE_CONFIG_FILE = constants.GADGET_MESSAGE_FILENAME
MESSAGE_CONFIG_SCRIPT = constants.GADGET_MESSAGE_CONFIG
MESSAGE_HEADER = constants.GADGET_MESSAGE_HEADER
MESSAGE_CLOSE = constants.GADGET_MESSAGE_CLOSE
MESSAGE_TEXT = constants.GADGET_MESSAGE_TEXT
MESSAGE_ERROR = constants.GADGET_MESSAGE_ERROR
MESSAGE_ACQUISITION = constants.GADGET_MESSAGE_ISMRMRD_ACQUISITION
MESSAGE_IMAGE = constants.GADGET_MESSAGE_ISMRMRD_IMAGE
MESSAGE_RECON_DATA = constants.GADGET_MESSAGE_RECON_DATA
MESSAGE_WAVEFORM = constants.GADGET_MESSAGE_ISMRMRD_WAVEFORM
# Gadgetron's answer to a dependency query (its DependencyQueryWriter): uint64 length + meta XML.
MESSAGE_DEPENDENCY_QUERY = 1019

CONFIG_FILE_NAME_BYTES = 1024
# Largest message we accept by default: a corrupt length field must not make us read (and
# hold) gigabytes. The server passes its own, smaller limit.
DEFAULT_MAX_MESSAGE_BYTES = 512 * 1024 * 1024
DEFAULT_MAX_READ_BYTES = DEFAULT_MAX_MESSAGE_BYTES  # the former name
# Bytes asked of one recv(): many small messages per system call, little memory held.
RECV_BYTES = 256 * 1024

_UINT16 = struct.Struct("<H")
_UINT32 = struct.Struct("<I")
_UINT64 = struct.Struct("<Q")

MESSAGE_NAMES = {
    MESSAGE_CONFIG_FILE: "config file",
    MESSAGE_CONFIG_SCRIPT: "config script",
    MESSAGE_HEADER: "header",
    MESSAGE_CLOSE: "close",
    MESSAGE_TEXT: "text",
    MESSAGE_ERROR: "error",
    MESSAGE_ACQUISITION: "acquisition",
    MESSAGE_IMAGE: "image",
    MESSAGE_RECON_DATA: "recon data",
    MESSAGE_WAVEFORM: "waveform",
    MESSAGE_DEPENDENCY_QUERY: "dependency query",
}


class ProtocolError(ValueError):
    """The peer sent something that is not a valid Gadgetron message."""


class TruncatedStreamError(ProtocolError):
    """The peer closed the connection in the middle of a message."""


class Readable(Protocol):
    def read(self, n: int) -> bytes: ...


class Writable(Protocol):
    def write(self, data: Any) -> Any: ...


@dataclass(frozen=True)
class Message:
    """One decoded message: its id and item.

    ``item`` is a ``str`` for config file/script, header, text and error messages, an
    ``ismrmrd.Acquisition`` / ``ismrmrd.Image`` / ``ismrmrd.Waveform`` / ``ReconData`` for data
    messages, and ``None`` for close.
    """

    id: int
    item: Any

    @property
    def name(self) -> str:
        return MESSAGE_NAMES.get(self.id, f"message {self.id}")


class MessageTooLargeError(ProtocolError):
    """A message is larger than the receiving side accepts."""


class SocketStream:
    """Exact-size buffered reads and writes over a socket, with per-message limits.

    Limits apply to a whole message: :func:`read_message` calls :meth:`begin_message`, after
    which every read of that message shares one deadline (``timeout`` seconds from the start,
    waiting for the message included) and one byte budget (``max_message_bytes``). A peer
    trickling one byte at a time therefore cannot hold the stream longer than ``timeout`` per
    message. Reads made outside :func:`read_message` get a fresh deadline each.

    Memory is only held for bytes that have arrived: the receive buffer grows with the data,
    never to a length the peer merely declared.

    A peer that closes mid-message raises :class:`TruncatedStreamError` (``recv`` returning
    ``b""`` is end-of-stream, which ``gadgetron`` 1.4.1's own wrapper would loop on forever).
    :meth:`close` sends a close message once and is idempotent, so it can also replace the
    socket wrapper of a ``gadgetron.external.Connection``.

    Parameters
    ----------
    sock
        A connected stream socket.
    timeout
        Seconds one whole message may take; ``None`` waits forever.
    max_message_bytes
        Refuse messages larger than this (corrupt or hostile length fields).
    session_deadline
        ``time.monotonic()`` value after which no message may end (``None``: no limit).
    max_read_bytes
        Former name of ``max_message_bytes``.
    """

    def __init__(
        self,
        sock: socket.socket,
        timeout: float | None = 30.0,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        session_deadline: float | None = None,
        max_read_bytes: int | None = None,
    ) -> None:
        if max_read_bytes is not None:
            max_message_bytes = max_read_bytes
        if max_message_bytes <= 0:
            raise ValueError(f"max_message_bytes must be positive, got {max_message_bytes}")
        self.socket = sock
        self.max_message_bytes = int(max_message_bytes)
        self.session_deadline = session_deadline
        self.closed = False
        self._buffer = bytearray()  # received bytes; unread ones are [_start, _end)
        self._start = self._end = 0
        self._deadline: float | None = None  # of the current message
        self._message_bytes = 0  # read so far in the current message
        self._in_message = False
        self.set_timeout(timeout)

    def set_timeout(self, timeout: float | None) -> None:
        """Seconds one whole message may take from now on (``None``: no limit).

        For a stream that changes hands with bytes already buffered (Gadgetron's handshake,
        then the step), where a new stream on the same socket would lose them.
        """
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout must be positive seconds or None, got {timeout!r}")
        self.timeout = timeout
        self.socket.settimeout(timeout)

    @property
    def max_read_bytes(self) -> int:
        """Former name of :attr:`max_message_bytes`."""
        return self.max_message_bytes

    def begin_message(self) -> None:
        """Start a message: a fresh deadline and byte budget for the reads that follow."""
        self._in_message = True
        self._message_bytes = 0
        now = time.monotonic()
        self._deadline = None if self.timeout is None else now + self.timeout
        if self.session_deadline is not None:
            if now >= self.session_deadline:  # even when the next message is already buffered
                raise TimeoutError("session exceeded its time limit")
            limit = self.session_deadline
            self._deadline = limit if self._deadline is None else min(self._deadline, limit)

    def end_message(self) -> None:
        """End the current message (reads go back to a deadline each)."""
        self._in_message = False
        self._deadline = None

    def remaining_message_bytes(self) -> int:
        """Bytes the current message may still use."""
        return self.max_message_bytes - self._message_bytes

    def check_message_bytes(self, n: int, what: str = "message") -> None:
        """Refuse, before reading or allocating, ``n`` more bytes over the message budget."""
        if n < 0 or self._message_bytes + n > self.max_message_bytes:
            raise MessageTooLargeError(
                f"{what} of at least {self._message_bytes + n} bytes exceeds the limit of "
                f"{self.max_message_bytes} bytes per message"
            )

    def read(self, n: int) -> bytes:
        """Read exactly ``n`` bytes.

        Reads are buffered: ``recv_into`` fills one reusable buffer, and messages are sliced
        out of it, so small reads (ids, headers) cost no system call.
        """
        self.check_message_bytes(n)
        if self._end - self._start < n:
            self._fill(n)
        self._message_bytes += n
        start = self._start
        self._start = start + n
        with memoryview(self._buffer) as view:
            return bytes(view[start : start + n])

    def _fill(self, n: int) -> None:
        """Receive until ``n`` unread bytes are buffered (unread ones moved to the front).

        The buffer grows only as data arrives (at most doubling what has been received), so
        a declared length the peer never sends costs no memory.
        """
        unread = self._end - self._start
        if len(self._buffer) > 4 * max(n, RECV_BYTES):  # shrink back after a big message
            self._buffer = bytearray(self._buffer[self._start : self._end])
        elif self._start:
            self._buffer[:unread] = self._buffer[self._start : self._end]
        self._start, self._end = 0, unread
        deadline = self._deadline
        if deadline is None and self.timeout is not None:
            deadline = time.monotonic() + self.timeout
        while self._end < n:
            # room for what is still missing, but never more than the bytes held so far
            # (or one RECV_BYTES) ahead of what has actually arrived
            want = min(n, self._end + max(RECV_BYTES, self._end))
            if len(self._buffer) < want:
                self._buffer.extend(bytes(want - len(self._buffer)))
            self._recv_some(deadline, n)

    def _recv_some(self, deadline: float | None, n: int) -> None:
        # Wait with poll rather than by changing the socket timeout: a writer thread sharing
        # the socket (gadgets.client) keeps its own timeout.
        if deadline is not None and not _wait_readable(self.socket, deadline - time.monotonic()):
            raise self._timed_out(n)
        try:
            with memoryview(self._buffer) as view:
                got = self.socket.recv_into(view[self._end :])
        except TimeoutError as exc:
            raise self._timed_out(n) from exc
        if not got:
            raise TruncatedStreamError(
                f"connection closed by peer after {self._end} of {n} expected bytes"
            )
        self._end += got

    def _timed_out(self, n: int) -> TimeoutError:
        if self.session_deadline is not None and time.monotonic() >= self.session_deadline:
            return TimeoutError("session exceeded its time limit")
        if self._in_message:
            return TimeoutError(
                f"peer did not send a whole message within {self.timeout} s "
                f"({self._end} of {n} bytes of the current read received)"
            )
        return TimeoutError(
            f"peer sent nothing for {self.timeout} s ({self._end} of {n} bytes read)"
        )

    def write(self, data: Any) -> None:
        """Write all of ``data`` (bytes or any buffer, e.g. a ctypes header)."""
        self.socket.sendall(data)

    def close(self, send_close: bool = True) -> None:
        """Send a close message (best effort, once) and close the socket."""
        if self.closed:
            return
        self.closed = True
        try:
            if send_close:
                self.socket.settimeout(5.0)  # a peer that never reads cannot block the close
                write_close(self)
        except OSError:
            pass  # the peer is already gone; nothing left to tell it
        finally:
            try:
                self.socket.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.socket.close()


def _wait_readable(sock: socket.socket, seconds: float) -> bool:
    """True when ``sock`` has data (or end-of-stream) within ``seconds``."""
    if seconds <= 0:
        return False
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(sock, select.POLLIN | select.POLLPRI | select.POLLHUP | select.POLLERR)
        return bool(poller.poll(seconds * 1000.0))
    readable, _, _ = select.select([sock], [], [], seconds)
    return bool(readable)


def read_exactly(source: Readable, n: int) -> bytes:
    """Read ``n`` bytes from ``source``; a short read is a :class:`TruncatedStreamError`."""
    data = source.read(n)
    if len(data) != n:
        raise TruncatedStreamError(f"stream ended after {len(data)} of {n} expected bytes")
    return data


def _reader(source: Readable) -> Callable[[int], bytes]:
    return lambda n: read_exactly(source, n)


def _read_string(source: Readable) -> str:
    (length,) = _UINT32.unpack(read_exactly(source, _UINT32.size))
    raw = read_exactly(source, length)
    # The C++ client counts the terminating NUL in the length; drop it.
    return raw.rstrip(b"\0").decode("utf-8", errors="replace")


def _read_long_string(source: Readable) -> str:
    (length,) = _UINT64.unpack(read_exactly(source, _UINT64.size))
    _check_payload(source, length, "dependency-query answer")
    return read_exactly(source, length).decode("utf-8", errors="replace")


def _read_config_file_name(source: Readable) -> str:
    raw = read_exactly(source, CONFIG_FILE_NAME_BYTES)
    return raw.split(b"\0", 1)[0].decode("utf-8", errors="replace")


def _check_payload(source: Readable, n: int, what: str) -> None:
    """Refuse a payload over the message budget before anything is allocated for it."""
    check = getattr(source, "check_message_bytes", None)
    if check is not None:
        check(n, what)
    elif n > DEFAULT_MAX_MESSAGE_BYTES:
        raise MessageTooLargeError(
            f"{what} of {n} bytes exceeds the limit of {DEFAULT_MAX_MESSAGE_BYTES} bytes"
        )


def _replaying(first: bytes, source: Readable) -> Callable[[int], bytes]:
    """A reader that returns ``first`` (already read) and then reads from ``source``."""
    pending = [first]

    def read(n: int) -> bytes:
        if pending:
            head = pending.pop()
            if len(head) != n:
                raise ProtocolError("internal: header replay out of step")
            return head
        return read_exactly(source, n)

    return read


def _read_acquisition(source: Readable) -> ismrmrd.Acquisition:
    # Size the payload from the header and check it before ismrmrd allocates the arrays.
    raw = read_exactly(source, ctypes.sizeof(ismrmrd.AcquisitionHeader))
    head = ismrmrd.AcquisitionHeader.from_buffer_copy(raw)
    samples = int(head.number_of_samples)
    payload = samples * (4 * int(head.trajectory_dimensions) + 8 * int(head.active_channels))
    _check_payload(source, payload, "acquisition")
    return ismrmrd.Acquisition.deserialize_from(_replaying(raw, source))


def _read_image(source: Readable) -> ismrmrd.Image:
    from ismrmrd.image import get_dtype_from_data_type

    raw = read_exactly(source, ctypes.sizeof(ismrmrd.ImageHeader))
    head = ismrmrd.ImageHeader.from_buffer_copy(raw)
    (attribute_bytes,) = _UINT64.unpack(read_exactly(source, _UINT64.size))
    _check_payload(source, attribute_bytes, "image attributes")
    attributes = read_exactly(source, attribute_bytes)
    itemsize = get_dtype_from_data_type(head.data_type).itemsize
    payload = int(head.channels) * int(np.prod([int(v) for v in head.matrix_size])) * itemsize
    _check_payload(source, payload, "image")
    pending = [raw, _UINT64.pack(attribute_bytes), attributes]

    def read(n: int) -> bytes:
        return pending.pop(0) if pending else read_exactly(source, n)

    return ismrmrd.Image.deserialize_from(read)


def _read_waveform(source: Readable) -> ismrmrd.Waveform:
    raw = read_exactly(source, ctypes.sizeof(ismrmrd.WaveformHeader))
    head = ismrmrd.WaveformHeader.from_buffer_copy(raw)
    _check_payload(source, 4 * int(head.channels) * int(head.number_of_samples), "waveform")
    return ismrmrd.Waveform.deserialize_from(_replaying(raw, source))


_DECODERS: dict[int, Callable[[Readable], Any]] = {
    MESSAGE_CONFIG_FILE: _read_config_file_name,
    MESSAGE_CONFIG_SCRIPT: _read_string,
    MESSAGE_HEADER: _read_string,
    MESSAGE_CLOSE: lambda _source: None,
    MESSAGE_TEXT: _read_string,
    MESSAGE_ERROR: _read_string,
    MESSAGE_ACQUISITION: _read_acquisition,
    MESSAGE_IMAGE: _read_image,
    MESSAGE_WAVEFORM: _read_waveform,
    MESSAGE_RECON_DATA: lambda source: recon_data_codec.deserialize_from(_reader(source)),
    MESSAGE_DEPENDENCY_QUERY: _read_long_string,
}


def read_message(source: Readable) -> Message:
    """Read and decode one message.

    Parameters
    ----------
    source
        A :class:`SocketStream`, ``io.BytesIO`` or anything with ``read(n)``.

    Returns
    -------
    Message

    Raises
    ------
    ProtocolError
        Unknown message id or malformed payload; :class:`MessageTooLargeError` for a message
        over the stream's ``max_message_bytes``.
    TruncatedStreamError
        The stream ended inside a message (or before any id was read).
    TimeoutError
        The message did not arrive whole within a :class:`SocketStream`'s ``timeout``.
    """
    begin, end = getattr(source, "begin_message", None), getattr(source, "end_message", None)
    if begin is not None:
        begin()  # one deadline and one byte budget for the whole message
    try:
        (message_id,) = _UINT16.unpack(read_exactly(source, _UINT16.size))
        decoder = _DECODERS.get(message_id)
        if decoder is None:
            raise ProtocolError(
                f"unknown message id {message_id} (expected one of {sorted(_DECODERS)}); "
                "the stream is not the Gadgetron protocol or is out of step"
            )
        try:
            return Message(message_id, decoder(source))
        except (ProtocolError, TimeoutError, OSError):
            raise
        except MemoryError as exc:
            raise MessageTooLargeError(
                f"{MESSAGE_NAMES[message_id]} message too large to hold in memory"
            ) from exc
        except Exception as exc:  # ctypes/numpy errors from a malformed payload
            raise ProtocolError(f"malformed {MESSAGE_NAMES[message_id]} message: {exc}") from exc
    finally:
        if end is not None:
            end()


def _write_id(sink: Writable, message_id: int) -> None:
    sink.write(_UINT16.pack(message_id))


def _write_string(sink: Writable, message_id: int, text: str, nul_terminated: bool) -> None:
    raw = text.encode("utf-8") + (b"\0" if nul_terminated else b"")
    sink.write(_UINT16.pack(message_id) + _UINT32.pack(len(raw)) + raw)


def write_config_file(sink: Writable, name: str) -> None:
    """Write a config-file-name message (id 1): the server looks the chain up by name."""
    raw = name.encode("utf-8")
    if not raw or len(raw) >= CONFIG_FILE_NAME_BYTES or b"\0" in raw:
        raise ValueError(f"config file name must be 1..1023 bytes without NUL, got {name!r}")
    sink.write(_UINT16.pack(MESSAGE_CONFIG_FILE) + raw.ljust(CONFIG_FILE_NAME_BYTES, b"\0"))


def write_config_script(sink: Writable, xml: str, nul_terminated: bool = True) -> None:
    """Write a config-script message (id 2), NUL-terminated as the C++ client does.

    Gadgetron sends an external step its ``<configuration>`` in the same message, without
    the NUL (``nul_terminated=False``).
    """
    _write_string(sink, MESSAGE_CONFIG_SCRIPT, xml, nul_terminated=nul_terminated)


def write_header(sink: Writable, header: str | Any, nul_terminated: bool = True) -> None:
    """Write the ISMRMRD header message (id 3); ``header`` is XML text or a parsed header.

    ``gadgetron_ismrmrd_client`` sends a trailing NUL; Gadgetron itself does not when it talks
    to an external step, and gadgetron 1.4.1's ``Connection`` cannot parse one: use
    ``nul_terminated=False`` when playing Gadgetron.
    """
    xml = header if isinstance(header, str) else ismrmrd.xsd.ToXML(header, encoding="utf-8")
    _write_string(sink, MESSAGE_HEADER, xml, nul_terminated=nul_terminated)


def write_text(sink: Writable, text: str) -> None:
    """Write a text message (id 5); Gadgetron 4 reports errors to clients this way.

    The text is sent ending in a newline: clients print it as it comes.
    """
    _write_string(sink, MESSAGE_TEXT, _line(text), nul_terminated=False)


def write_dependency_answer(sink: Writable, meta_xml: str) -> None:
    """Write a dependency-query answer (id 1019): ``uint64`` length, ISMRMRD meta XML, no NUL."""
    raw = meta_xml.encode("utf-8")
    sink.write(_UINT16.pack(MESSAGE_DEPENDENCY_QUERY) + _UINT64.pack(len(raw)) + raw)


def write_error(sink: Writable, text: str) -> None:
    """Write an error message (id 8, same layout as text, also ending in a newline)."""
    _write_string(sink, MESSAGE_ERROR, _line(text), nul_terminated=False)


def _line(text: str) -> str:
    return text if text.endswith("\n") else text + "\n"


def write_close(sink: Writable) -> None:
    """Write a close message (id 4)."""
    _write_id(sink, MESSAGE_CLOSE)


def _serialized(message_id: int, serialize_into: Callable[[Callable[[bytes], Any]], Any]) -> bytes:
    # One buffer per message: one sendall, and a failure never leaves half a message queued.
    buffer = io.BytesIO()
    buffer.write(_UINT16.pack(message_id))
    serialize_into(buffer.write)
    return buffer.getvalue()


def write_acquisition(sink: Writable, acquisition: ismrmrd.Acquisition) -> None:
    """Write an acquisition message (id 1008)."""
    sink.write(_serialized(MESSAGE_ACQUISITION, acquisition.serialize_into))


def write_image(sink: Writable, image: ismrmrd.Image) -> None:
    """Write an image message (id 1022)."""
    sink.write(_serialized(MESSAGE_IMAGE, image.serialize_into))


def write_waveform(sink: Writable, waveform: ismrmrd.Waveform) -> None:
    """Write a waveform message (id 1026)."""
    sink.write(_serialized(MESSAGE_WAVEFORM, waveform.serialize_into))


def write_recon_data(sink: Writable, recon_data: ReconData) -> None:
    """Write a ReconData message (id 1023)."""
    serialize_into = functools.partial(recon_data_codec.serialize_into, recon_data)
    sink.write(_serialized(MESSAGE_RECON_DATA, serialize_into))


def write_item(sink: Writable, item: Any) -> None:
    """Write a data item by type (acquisition, image, waveform, ReconData).

    Raises
    ------
    TypeError
        No Gadgetron message carries items of this type.
    """
    if isinstance(item, ismrmrd.Image):
        write_image(sink, item)
    elif isinstance(item, ismrmrd.Acquisition):
        write_acquisition(sink, item)
    elif isinstance(item, ismrmrd.Waveform):
        write_waveform(sink, item)
    elif isinstance(item, ReconData):
        write_recon_data(sink, item)
    else:
        raise TypeError(f"no Gadgetron message for items of type {type(item).__name__}")
