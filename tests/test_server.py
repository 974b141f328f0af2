"""``passnet serve`` over real loopback sockets: results, concurrency, bad input, chains."""

from __future__ import annotations

import argparse
import io
import socket
import struct
import threading
import time

import numpy as np
import pytest

from gadgetron_configs import config_path
from gadgets import protocol
from gadgets.chain import ChainParams, run_chain
from gadgets.chain_config import UnsupportedChainError, interpret_chain, load_named_chain
from gadgets.client import ClientResult, client_session
from gadgets.serve_cli import add_arguments
from gadgets.server import PassnetServer
from gadgets.server_settings import ServerSettings


@pytest.fixture
def server(weights_file):
    """A running server (CPU, tiny weights, 5 s read timeout), always stopped."""
    settings = ServerSettings(port=0, weights=str(weights_file), device="cpu", timeout=5.0)
    with PassnetServer(settings) as running:
        yield running


@pytest.fixture(scope="module")
def in_process_images(cine_stream, weights_file):
    """The chain run in-process on the same acquisitions, for comparison."""
    images: list = []
    params = ChainParams(weights=str(weights_file), device="cpu")
    report = run_chain(cine_stream.header, iter(cine_stream.acquisitions), images.append, params)
    assert not report.errors, report.errors
    return images


def _ordered(images: list) -> list:
    return sorted(images, key=lambda im: (im.slice, im.phase, im.repetition, im.image_index))


def _assert_same_images(received: list, expected: list) -> None:
    assert len(received) == len(expected)
    for got, want in zip(_ordered(received), _ordered(expected), strict=True):
        assert (got.slice, got.phase, got.image_index) == (want.slice, want.phase, want.image_index)
        np.testing.assert_allclose(got.data, want.data, rtol=1e-4, atol=1e-3 * want.data.max())


def _session(server, cine_stream, **kwargs) -> ClientResult:
    return client_session(
        server.address, cine_stream.header_xml, cine_stream.acquisitions, timeout=30, **kwargs
    )


def test_config_by_name_gives_the_in_process_images(server, cine_stream, in_process_images):
    result = _session(server, cine_stream, config_name="passnet_raw.xml")
    assert result.closed_cleanly and result.error is None and result.texts == []
    assert len(result.images) == cine_stream.frames * cine_stream.slices
    _assert_same_images(result.images, in_process_images)


def test_config_script_gives_the_in_process_images(server, cine_stream, in_process_images):
    script = config_path("passnet_buffered.xml").read_text()
    result = _session(server, cine_stream, config_script=script)
    assert result.closed_cleanly and result.texts == []
    _assert_same_images(result.images, in_process_images)


def _send_garbage(address, replies: list) -> None:
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(b"\x07\x07" + np.random.default_rng(0).bytes(4000))
        stream = protocol.SocketStream(sock, timeout=10)
        try:
            while True:
                replies.append(protocol.read_message(stream))
        except (protocol.ProtocolError, OSError):
            pass


def test_a_garbage_client_does_not_disturb_a_good_one(server, cine_stream, in_process_images):
    garbage_replies: list = []
    garbage = threading.Thread(target=_send_garbage, args=(server.address, garbage_replies))
    results: list = []
    good = threading.Thread(
        target=lambda: results.append(_session(server, cine_stream, config_name="passnet_raw")),
    )
    good.start()
    garbage.start()
    good.join(60)
    garbage.join(60)
    assert not good.is_alive() and not garbage.is_alive()
    _assert_same_images(results[0].images, in_process_images)
    assert [m.id for m in garbage_replies] == [protocol.MESSAGE_TEXT, protocol.MESSAGE_CLOSE]
    assert "unknown message id 1799" in garbage_replies[0].item


def _raw_session(address, payload: bytes, timeout: float = 15) -> list[protocol.Message]:
    """Send raw bytes, half-close, and return every message the server answers with."""
    replies = []
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        stream = protocol.SocketStream(sock, timeout=timeout)
        while True:
            try:
                message = protocol.read_message(stream)
            except protocol.TruncatedStreamError:
                break
            replies.append(message)
            if message.id == protocol.MESSAGE_CLOSE:
                break
    return replies


def _encoded(write, *args) -> bytes:
    sink = io.BytesIO()
    write(sink, *args)
    return sink.getvalue()


def _prefix(cine_stream, config: str = "passnet_raw.xml") -> bytes:
    return _encoded(protocol.write_config_file, config) + _encoded(
        protocol.write_header, cine_stream.header_xml
    )


def _only_text_then_close(replies: list[protocol.Message]) -> str:
    assert [m.id for m in replies] == [protocol.MESSAGE_TEXT, protocol.MESSAGE_CLOSE], replies
    return replies[0].item


def test_truncated_stream_is_reported_and_closed(server, cine_stream):
    acquisition = _encoded(protocol.write_acquisition, cine_stream.acquisitions[1])
    replies = _raw_session(server.address, _prefix(cine_stream) + acquisition[:-100])
    text = _only_text_then_close(replies)
    assert "connection closed by peer" in text


def test_unknown_message_id_is_reported_and_closed(server, cine_stream):
    replies = _raw_session(server.address, _prefix(cine_stream) + struct.pack("<H", 999))
    assert "unknown message id 999" in _only_text_then_close(replies)


def test_header_that_is_not_ismrmrd_xml_is_refused(server):
    payload = _encoded(protocol.write_config_file, "passnet_raw.xml") + _encoded(
        protocol.write_header, "<notAnIsmrmrdHeader><x/></notAnIsmrmrdHeader>"
    )
    text = _only_text_then_close(_raw_session(server.address, payload))
    assert "header is not ISMRMRD XML" in text


def test_unknown_native_gadget_in_a_script_is_refused_by_name(server, cine_stream):
    script = (
        config_path("passnet_raw.xml")
        .read_text()
        .replace(
            "<stream>",
            "<stream><gadget><dll>gadgetron_mricore</dll>"
            "<classname>GenericReconCartesianGrappaGadget</classname></gadget>",
        )
    )
    payload = _encoded(protocol.write_config_script, script)
    text = _only_text_then_close(_raw_session(server.address, payload))
    assert "GenericReconCartesianGrappaGadget" in text


def test_unknown_config_name_is_refused(server):
    payload = _encoded(protocol.write_config_file, "default.xml")
    assert "no shipped Gadgetron config named" in _only_text_then_close(
        _raw_session(server.address, payload)
    )


def test_stalled_client_is_timed_out_and_closed(weights_file, cine_stream):
    settings = ServerSettings(port=0, weights=str(weights_file), device="cpu", timeout=1.0)
    with PassnetServer(settings) as server:
        with socket.create_connection(server.address, timeout=15) as sock:
            sock.sendall(_prefix(cine_stream))  # then stall without closing
            start = time.monotonic()
            stream = protocol.SocketStream(sock, timeout=15)
            replies = [protocol.read_message(stream), protocol.read_message(stream)]
            waited = time.monotonic() - start
    assert [m.id for m in replies] == [protocol.MESSAGE_TEXT, protocol.MESSAGE_CLOSE]
    assert "whole message within 1.0 s" in replies[0].item and replies[0].item.endswith("\n")
    assert 0.5 < waited < 10


def test_stop_ends_sessions_blocked_on_a_silent_client(weights_file, cine_stream):
    settings = ServerSettings(port=0, weights=str(weights_file), timeout=60.0)
    server = PassnetServer(settings)
    server.start()
    with socket.create_connection(server.address, timeout=10) as sock:
        sock.sendall(_prefix(cine_stream))
        time.sleep(0.3)
        start = time.monotonic()
        server.stop(join_timeout=10)
        assert time.monotonic() - start < 5  # not the 60 s read timeout


def test_clients_beyond_the_limit_are_told_the_server_is_busy(weights_file, cine_stream):
    settings = ServerSettings(port=0, weights=str(weights_file), timeout=3.0, max_clients=1)
    with PassnetServer(settings) as server:
        with socket.create_connection(server.address, timeout=10) as holder:
            holder.sendall(_prefix(cine_stream))  # holds the only slot
            time.sleep(0.3)
            replies = _raw_session(server.address, b"")
    assert "server busy" in _only_text_then_close(replies)


# ----------------------------------------------------------------------------- chain mapping
def test_shipped_chains_are_accepted():
    assert interpret_chain(load_named_chain("passnet_raw.xml")) == ChainParams(
        device="auto", frame_dimension="auto", output="magnitude", image_series_index=1
    )
    buffered = interpret_chain(load_named_chain("passnet_buffered"))
    assert buffered.frame_dimension == "phase"


def _chain(stream_body: str) -> str:
    return f"<configuration><version>2</version><stream>{stream_body}</stream></configuration>"


PASSNET_STEP = (
    '<external><execute name="gadgets.passnet_gadget" target="reconstruct" type="python"/>'
    '<configuration><property name="output" value="complex"/></configuration></external>'
)


def test_bucket_to_buffer_n_dimension_sets_the_frame_axis_unless_the_step_states_it():
    bucket = (
        "<gadget><dll>gadgetron_mricore</dll><classname>BucketToBufferGadget</classname>"
        '<property name="N_dimension" value="repetition"/></gadget>'
    )
    params = interpret_chain(_chain(bucket + PASSNET_STEP))
    assert params.frame_dimension == "repetition" and params.output == "complex"
    phase = '<property name="frame_dimension" value="phase"/></configuration>'
    stated = interpret_chain(_chain(bucket + PASSNET_STEP.replace("</configuration>", phase)))
    assert stated.frame_dimension == "phase"


@pytest.mark.parametrize(
    ("chain", "message"),
    [
        ("<configuration>", "not valid XML"),
        ("<gadgetronStreamConfiguration/>", "expected a Gadgetron 4 <configuration>"),
        (_chain(""), "exactly one PASSNet external step, found 0"),
        (_chain(PASSNET_STEP * 2), "exactly one PASSNet external step, found 2"),
        (
            _chain('<external><execute name="other" target="run" type="python"/></external>'),
            "'other.run' is not the PASSNet step",
        ),
        (
            _chain("<gadget><classname>FFTGadget</classname></gadget>" + PASSNET_STEP),
            "native gadget 'FFTGadget' has no equivalent",
        ),
        (_chain("<parallel/>" + PASSNET_STEP), "<parallel> is not supported"),
        (
            _chain(PASSNET_STEP.replace('name="output" value="complex"', 'name="x" value="1"')),
            "unknown chain parameter 'x'",
        ),
    ],
)
def test_unsupported_chains_are_refused_with_a_reason(chain, message):
    with pytest.raises(UnsupportedChainError, match=message):
        interpret_chain(chain)


@pytest.mark.parametrize("name", ["../pyproject.toml", "/etc/passwd", ".hidden.xml", ""])
def test_config_names_cannot_leave_the_config_folder(name):
    with pytest.raises(UnsupportedChainError, match="plain file name"):
        load_named_chain(name)


def test_cli_arguments_and_settings_validation():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--port", "9100", "--max-clients", "2", "--timeout", "5"])
    assert (args.port, args.host, args.max_clients, args.timeout) == (9100, "127.0.0.1", 2, 5.0)
    with pytest.raises(ValueError, match="max_clients must be at least 1"):
        ServerSettings(max_clients=0)
    with pytest.raises(ValueError, match="port must be in"):
        ServerSettings(port=70000)
