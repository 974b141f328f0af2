"""A reference client: plays ``gadgetron_ismrmrd_client`` against a server (tests, benchmarks)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from gadgets import protocol


@dataclass
class ClientResult:
    """What a client got back from a server: images, text messages, and how it ended."""

    images: list = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    closed_cleanly: bool = False
    error: str | None = None


def client_session(
    address: tuple[str, int],
    header_xml: str,
    items: Iterable[Any],
    config_name: str | None = None,
    config_script: str | None = None,
    timeout: float = 30.0,
) -> ClientResult:
    """Play ``gadgetron_ismrmrd_client``: send a chain, header, items and close; collect replies.

    Replies are read in a second thread while sending, as the C++ client does, so a server
    that answers early cannot deadlock on full socket buffers.

    Parameters
    ----------
    address
        ``(host, port)`` of the server.
    header_xml
        The ISMRMRD XML header.
    items
        Acquisitions / waveforms to stream.
    config_name, config_script
        Exactly one: a chain name (id 1) or chain XML (id 2).
    timeout
        Seconds any single socket operation may wait.
    """
    if (config_name is None) == (config_script is None):
        raise ValueError("give exactly one of config_name and config_script")
    result = ClientResult()
    with socket.create_connection(address, timeout=timeout) as sock:
        stream = protocol.SocketStream(sock, timeout=timeout)

        def collect() -> None:
            try:
                while True:
                    message = protocol.read_message(stream)
                    if message.id == protocol.MESSAGE_CLOSE:
                        result.closed_cleanly = True
                        return
                    if message.id == protocol.MESSAGE_IMAGE:
                        result.images.append(message.item)
                    elif message.id in (protocol.MESSAGE_TEXT, protocol.MESSAGE_ERROR):
                        result.texts.append(message.item)
            except (protocol.ProtocolError, TimeoutError, OSError) as exc:
                result.error = str(exc)

        reader = threading.Thread(target=collect, name="passnet-client-reader", daemon=True)
        reader.start()
        try:
            if config_name is not None:
                protocol.write_config_file(stream, config_name)
            else:
                assert config_script is not None  # exactly one of the two, checked above
                protocol.write_config_script(stream, config_script)
            protocol.write_header(stream, header_xml)
            for item in items:
                protocol.write_item(stream, item)
            protocol.write_close(stream)
        except OSError as exc:  # the server may close early on bad input; keep its reply
            result.error = f"send failed: {exc}"
        reader.join(timeout * 2)
    return result
