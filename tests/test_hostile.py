"""``passnet serve`` against hostile and broken clients, over real loopback sockets.

Each test reproduces one class of defect: memory reserved for bytes that never arrive, a
timeout per ``recv`` instead of per message, unbounded line buffering, client-chosen weights
paths, client-raised limits, one slice's failure losing others, the slot race, no reason
for no images, and shutdown on a signal.
"""

from __future__ import annotations

import copy
import io
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import ismrmrd
import pytest
from helpers import rss_mb
from ismrmrd import ACQ_IS_NOISE_MEASUREMENT

from gadgets import protocol
from gadgets.assembly import AcquisitionBuffer, flag_set
from gadgets.client import client_session
from gadgets.server import PassnetServer
from gadgets.server_settings import ServerSettings

REPO_ROOT = Path(__file__).resolve().parents[1]


def _encoded(write, *args) -> bytes:
    sink = io.BytesIO()
    write(sink, *args)
    return sink.getvalue()


def _prefix(header_xml: str, config: str = "passnet_raw.xml") -> bytes:
    return _encoded(protocol.write_config_file, config) + _encoded(
        protocol.write_header, header_xml
    )


def _replies(sock: socket.socket, timeout: float = 20) -> list[protocol.Message]:
    stream = protocol.SocketStream(sock, timeout=timeout)
    replies = []
    while True:
        try:
            message = protocol.read_message(stream)
        except protocol.TruncatedStreamError:
            return replies
        replies.append(message)
        if message.id == protocol.MESSAGE_CLOSE:
            return replies


def _raw_session(address, payload: bytes, timeout: float = 20) -> list[protocol.Message]:
    with socket.create_connection(address, timeout=timeout) as sock:
        try:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server may refuse and close before everything was sent
        return _replies(sock, timeout)


def _texts(replies) -> list[str]:
    return [m.item for m in replies if m.id == protocol.MESSAGE_TEXT]


def _images(replies) -> list:
    return [m.item for m in replies if m.id == protocol.MESSAGE_IMAGE]


def _settings(weights_file, **kwargs) -> ServerSettings:
    values = {"port": 0, "weights": str(weights_file), "device": "cpu", "timeout": 5.0}
    values.update(kwargs)
    return ServerSettings(**values)


def _imaging(cine_stream) -> list:
    return [a for a in cine_stream.acquisitions if not a.is_flag_set(ACQ_IS_NOISE_MEASUREMENT)]


# ------------------------------------------------------------ 1. memory for unsent bytes
def test_a_declared_length_reserves_no_memory_until_the_bytes_arrive(weights_file, cine_stream):
    settings = _settings(weights_file, timeout=3.0, max_message_bytes=2**30)
    with PassnetServer(settings) as server:
        before = rss_mb()
        with socket.create_connection(server.address, timeout=15) as sock:
            # a config script declaring 600 MB, of which 6 bytes ever come
            sock.sendall(
                struct.pack("<HI", protocol.MESSAGE_CONFIG_SCRIPT, 600_000_000) + b"<confi"
            )
            time.sleep(1.0)
            grown = rss_mb() - before
            replies = _replies(sock)
    assert grown < 50, f"server grew by {grown:.0f} MB for 6 bytes"
    (text,) = _texts(replies)
    assert "limit of 4194304 bytes" in text  # chain XML: a small fixed limit


def test_a_data_message_declared_but_not_sent_holds_no_memory(weights_file, cine_stream):
    acquisition = copy.deepcopy(_imaging(cine_stream)[0])
    head = acquisition.getHead()
    head.number_of_samples, head.active_channels = 60000, 100  # 48 MB declared
    raw = struct.pack("<H", protocol.MESSAGE_ACQUISITION) + bytes(head) + b"\0" * 1000
    settings = _settings(weights_file, timeout=3.0, max_message_bytes=2**30)
    with PassnetServer(settings) as server:
        before = rss_mb()
        with socket.create_connection(server.address, timeout=15) as sock:
            sock.sendall(_prefix(cine_stream.header_xml) + raw)
            time.sleep(1.0)
            grown = rss_mb() - before
            replies = _replies(sock)
    assert grown < 20, f"server grew by {grown:.0f} MB for 1 kB of a 48 MB message"
    assert any("whole message within 3.0 s" in t for t in _texts(replies))


def test_stream_buffer_grows_with_the_data_not_the_declared_length():
    left, right = socket.socketpair()
    with left, right:
        right.sendall(struct.pack("<HI", protocol.MESSAGE_TEXT, 500_000_000) + b"abcdef")
        stream = protocol.SocketStream(left, timeout=0.5, max_message_bytes=2**30)
        with pytest.raises(TimeoutError):
            protocol.read_message(stream)
        assert len(stream._buffer) <= 2 * protocol.RECV_BYTES


def test_acquisition_header_declaring_a_huge_payload_is_refused_before_allocating(
    weights_file, cine_stream
):
    acquisition = copy.deepcopy(_imaging(cine_stream)[0])
    head = acquisition.getHead()
    head.number_of_samples, head.trajectory_dimensions = 65535, 1900
    raw = struct.pack("<H", protocol.MESSAGE_ACQUISITION) + bytes(head)
    with PassnetServer(_settings(weights_file)) as server:
        before = rss_mb()
        replies = _raw_session(server.address, _prefix(cine_stream.header_xml) + raw)
        grown = rss_mb() - before
    (text,) = _texts(replies)
    assert "acquisition of at least" in text and "exceeds the limit of 67108864" in text
    assert grown < 50
    assert replies[-1].id == protocol.MESSAGE_CLOSE


# ------------------------------------------------------------- 2. deadline per message
def _trickle(address, payload: bytes, interval: float, out: list) -> None:
    """Send one byte every ``interval`` s until the server answers (or 40 bytes went)."""
    start = time.monotonic()
    with socket.create_connection(address, timeout=30) as sock:
        try:
            for byte in payload[:40]:
                sock.sendall(bytes([byte]))
                if select.select([sock], [], [], interval)[0]:
                    break  # the server spoke: it has given up on us
        except OSError:
            pass  # closed by the server: what we want
        out.append((time.monotonic() - start, _replies(sock)))


def test_trickling_clients_are_cut_off_per_message_and_free_their_slots(weights_file, cine_stream):
    settings = _settings(weights_file, timeout=1.0, max_clients=2)
    with PassnetServer(settings) as server:
        results: list = []
        payload = _prefix(cine_stream.header_xml)
        threads = [
            threading.Thread(target=_trickle, args=(server.address, payload, 0.3, results))
            for _ in range(2)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        good = client_session(
            server.address, cine_stream.header_xml, cine_stream.acquisitions,
            config_name="passnet_raw.xml", timeout=30,
        )  # fmt: skip
    assert len(results) == 2
    for elapsed, replies in results:
        assert elapsed < 4, "a trickling client held its slot past the message deadline"
        (text,) = _texts(replies)
        assert "whole message within 1.0 s" in text
    assert len(good.images) == cine_stream.frames and not good.texts


def test_session_time_limit_bounds_a_slow_but_valid_client(weights_file, cine_stream):
    settings = _settings(weights_file, timeout=2.0, session_timeout=1.5)
    noise = [a for a in cine_stream.acquisitions if a.is_flag_set(ACQ_IS_NOISE_MEASUREMENT)]
    with PassnetServer(settings) as server:
        with socket.create_connection(server.address, timeout=15) as sock:
            sock.sendall(_prefix(cine_stream.header_xml))
            start = time.monotonic()
            try:
                for _ in range(20):  # one valid message every 0.5 s, each well within 2 s
                    sock.sendall(_encoded(protocol.write_acquisition, noise[0]))
                    time.sleep(0.5)
            except OSError:
                pass
            replies = _replies(sock)
            elapsed = time.monotonic() - start
    assert elapsed < 6
    assert any("session exceeded its time limit" in t for t in _texts(replies))


# ------------------------------------------------------ 3. unbounded line buffering
def test_repeated_lines_replace_each_other_and_do_not_accumulate(cine_stream):
    buffer = AcquisitionBuffer(cine_stream.header)
    line = _imaging(cine_stream)[0]
    line = copy.deepcopy(line)
    line.clear_flag(ismrmrd.ACQ_LAST_IN_SLICE)
    line.clear_flag(ismrmrd.ACQ_LAST_IN_MEASUREMENT)
    for _ in range(5000):
        assert buffer.add(line) == []
    assert buffer.buffered_elements == line.data.size


def test_lines_per_slice_limit_fails_the_slice_and_releases_its_data(cine_stream):
    buffer = AcquisitionBuffer(cine_stream.header, max_lines_per_slice=10)
    imaging = _imaging(cine_stream)
    for acquisition in imaging[:-1]:
        buffer.add(acquisition)
    assert buffer.buffered_elements == 0  # the failed slice holds nothing
    (failure,) = buffer.flush()
    assert "max_lines_per_slice=10" in failure.message


def test_frame_index_beyond_the_matrix_limit_is_refused_per_line(cine_stream):
    header = cine_stream.header
    buffer = AcquisitionBuffer(header, max_matrix_elements=4 * 8 * 48 * 96 + 1)
    line = copy.deepcopy(_imaging(cine_stream)[0])
    line.idx.phase = 60000  # grows T to 60001 frames
    buffer.add(line)
    (failure,) = buffer.flush()
    assert "exceeds max_matrix_elements" in failure.message and "60001" in failure.message


def test_many_lines_without_a_slice_end_over_a_socket_are_bounded(weights_file, cine_stream):
    imaging = _imaging(cine_stream)
    body = []
    for acquisition in imaging:
        acquisition = copy.deepcopy(acquisition)
        acquisition.clear_flag(ismrmrd.ACQ_LAST_IN_SLICE)
        acquisition.clear_flag(ismrmrd.ACQ_LAST_IN_MEASUREMENT)
        body.append(_encoded(protocol.write_acquisition, acquisition))
    payload = _prefix(cine_stream.header_xml) + b"".join(body) * 20  # every line 20 times
    settings = _settings(weights_file, max_lines_per_slice=len(imaging) + 1)
    with PassnetServer(settings) as server:
        replies = _raw_session(server.address, payload + _encoded(protocol.write_close))
    # duplicates replaced, so the slice stays within its line limit and reconstructs
    assert len(_images(replies)) == cine_stream.frames and not _texts(replies)


# -------------------------------------------------- 4. client-chosen weights paths
def _chain_with(properties: str) -> str:
    return (
        "<configuration><version>2</version><stream><external>"
        '<execute name="gadgets.passnet_gadget" target="reconstruct" type="python"/>'
        f"<configuration>{properties}</configuration></external></stream></configuration>"
    )


def test_a_client_weights_path_is_never_opened_nor_revealed(
    weights_file, cine_stream, tmp_path, monkeypatch
):
    # a server started without --weights: its default stands in for the shipped file
    monkeypatch.setattr("passnet_core.inference.default_weights_path", lambda: weights_file)
    garbage = tmp_path / "exists.safetensors"
    garbage.write_bytes(b"not weights")
    fifo = tmp_path / "blocks_if_opened"
    os.mkfifo(fifo)  # opening it for reading would hang the session
    answers = []
    with PassnetServer(_settings(weights_file, weights=None)) as server:
        for path in (garbage, tmp_path / "missing.safetensors", fifo):
            result = client_session(
                server.address,
                cine_stream.header_xml,
                cine_stream.acquisitions,
                config_script=_chain_with(f'<property name="weights" value="{path}"/>'),
                timeout=20,
            )
            answers.append((len(result.images), result.texts, result.closed_cleanly))
    assert answers == [(cine_stream.frames, [], True)] * 3


def test_server_without_weights_uses_its_own_never_the_chains(cine_stream):
    from gadgets.chain import ChainParams

    params = ServerSettings().apply(ChainParams(weights="/etc/passwd"))
    assert params.weights is None  # None = the shipped weights, chosen by the server


# ------------------------------------------------------- 5. client-raised limits
def test_a_chain_cannot_raise_the_servers_matrix_limit(weights_file, cine_stream):
    parsed = cine_stream.header
    matrix = parsed.encoding[0].encodedSpace.matrixSize
    matrix.x = matrix.y = 65535  # 4 x 8 x 65535 x 65535: ~1.1e11 elements, 1 TiB complex64
    header = ismrmrd.xsd.ToXML(parsed, encoding="utf-8")
    chain = _chain_with(
        '<property name="max_matrix_elements" value="1000000000000000"/>'
        '<property name="max_lines_per_slice" value="1000000000"/>'
    )
    with PassnetServer(_settings(weights_file)) as server:
        result = client_session(
            server.address, header, cine_stream.acquisitions, config_script=chain, timeout=20
        )
    assert result.closed_cleanly and not result.images
    assert any("max_matrix_elements=67108864" in t for t in result.texts), result.texts


def _two_slices(cine_stream) -> list:
    """The cine as slice 0, then again as slice 1 (same lines)."""
    imaging = _imaging(cine_stream)
    first, second = [], []
    for acquisition in imaging:
        acquisition = copy.deepcopy(acquisition)
        acquisition.clear_flag(ismrmrd.ACQ_LAST_IN_MEASUREMENT)  # slice 1 follows
        first.append(acquisition)
        acquisition = copy.deepcopy(acquisition)
        acquisition.idx.slice = 1
        second.append(acquisition)
    second[-1].set_flag(ismrmrd.ACQ_LAST_IN_MEASUREMENT)
    return first + second


def _two_slice_session(weights_file, cine_stream):
    """One client session streaming two slices of ``cine_stream`` to a fresh server."""
    with PassnetServer(_settings(weights_file)) as server:
        return client_session(
            server.address,
            cine_stream.header_xml,
            _two_slices(cine_stream),
            config_name="passnet_raw.xml",
            timeout=30,
        )


def test_memory_error_in_one_slice_keeps_the_other_slices_images(
    weights_file, cine_stream, monkeypatch
):
    from gadgets import assembly

    original = assembly.AcquisitionBuffer._assemble

    def assemble(self, slice_index, buf):
        if slice_index == 0:
            raise MemoryError
        return original(self, slice_index, buf)

    monkeypatch.setattr(assembly.AcquisitionBuffer, "_assemble", assemble)
    result = _two_slice_session(weights_file, cine_stream)
    assert result.closed_cleanly
    assert {im.slice for im in result.images} == {1}
    assert len(result.images) == cine_stream.frames
    (text,) = result.texts
    assert "slice 0 failed: not enough memory" in text


def test_memory_error_in_the_network_keeps_the_other_slices_images(
    weights_file, cine_stream, monkeypatch
):
    from gadgets import chain

    original = chain.reconstruct_slice

    def reconstruct(item, params, engine):
        if item.slice_index == 1:
            raise MemoryError("cannot allocate")
        return original(item, params, engine)

    monkeypatch.setattr(chain, "reconstruct_slice", reconstruct)
    result = _two_slice_session(weights_file, cine_stream)
    assert {im.slice for im in result.images} == {0}
    assert any("slice 1 failed: not enough memory" in t for t in result.texts)


# ----------------------------------------------------------------- 6. slot race
def test_strictly_sequential_clients_are_never_refused_with_one_slot(weights_file, cine_stream):
    with PassnetServer(_settings(weights_file, max_clients=1)) as server:
        texts = []
        for _ in range(40):
            texts += _texts(_raw_session(server.address, _prefix(cine_stream.header_xml) + b"\4\0"))
    assert not [t for t in texts if "busy" in t]
    assert len(texts) == 40  # each got its reason for no images


# ------------------------------------------------------- reasons and text format
def test_a_noise_only_stream_gets_a_reason(weights_file, cine_stream):
    """Without a measurement ID the noise cannot be stored for others: no images, and why."""
    noise = [a for a in cine_stream.acquisitions if a.is_flag_set(ACQ_IS_NOISE_MEASUREMENT)]
    header = cine_stream.header
    header.measurementInformation.measurementID = None
    with PassnetServer(_settings(weights_file)) as server:
        result = client_session(
            server.address, ismrmrd.xsd.ToXML(header), noise, config_name="passnet_raw", timeout=20
        )
    assert result.closed_cleanly and not result.images
    (text,) = result.texts
    assert f"no images: the stream's {len(noise)} acquisitions held no imaging data" in text
    assert f"{len(noise)} noise scans" in text and text.endswith("\n")


def test_noise_scans_are_folded_not_stored(cine_stream):
    buffer = AcquisitionBuffer(cine_stream.header)
    noise = next(a for a in cine_stream.acquisitions if flag_set(a.flags, ACQ_IS_NOISE_MEASUREMENT))
    for _ in range(2000):
        buffer.add(noise)
    assert buffer.noise_scans == 2000 and buffer._noise_sum.shape == (4, 4)


# ----------------------------------------------------------------- 10. bad weights
def _serve_args(*extra: str):
    import argparse

    from gadgets.serve_cli import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(["--port", "0", "--device", "cpu", *extra])


def _bad_weights(tmp_path: Path, weights_file: Path) -> dict[str, Path]:
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(weights_file.read_bytes()[:500])
    pickled = tmp_path / "pickled.pt"
    import pickle

    pickled.write_bytes(pickle.dumps({"state": os.getcwd}))  # a pickle naming a callable
    return {
        "missing": tmp_path / "missing.safetensors",
        "truncated": truncated,
        "pickle": pickled,
    }


def test_server_refuses_to_start_on_bad_weights(tmp_path, weights_file, caplog):
    from gadgets import server

    for kind, path in _bad_weights(tmp_path, weights_file).items():
        caplog.clear()
        assert server.run(_serve_args("--weights", str(path))) == 2, kind
        assert "refusing to start" in caplog.text and str(path) in caplog.text, kind


def test_allow_fallback_starts_and_says_so_to_clients(tmp_path, weights_file, cine_stream):
    path = _bad_weights(tmp_path, weights_file)["truncated"]
    settings = _settings(path, allow_fallback=True)
    with PassnetServer(settings) as server:
        result = client_session(
            server.address, cine_stream.header_xml, cine_stream.acquisitions,
            config_name="passnet_raw.xml", timeout=30,
        )  # fmt: skip
    assert len(result.images) == cine_stream.frames
    assert any("cannot load PASSNet weights" in t for t in result.texts)


# ---------------------------------------------------------------- signals
def _start_serve(weights_file: Path, *extra: str) -> tuple[subprocess.Popen, int]:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    process = subprocess.Popen(
        [sys.executable, "-m", "passnet_core.cli", "serve", "--port", "0", "--device", "cpu"]
        + ["--weights", str(weights_file), *extra],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 60
    lines = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        lines.append(line)
        if "listening on" in line:
            return process, int(line.rsplit(":", 1)[1])
        if not line and process.poll() is not None:
            break
    process.kill()
    raise AssertionError("".join(lines))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_logs_and_closes_a_running_session_cleanly(weights_file, cine_stream, sig):
    process, port = _start_serve(weights_file, "--shutdown-grace", "1", "--timeout", "60")
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
            sock.sendall(_prefix(cine_stream.header_xml))  # then idle mid-session
            time.sleep(0.5)
            start = time.monotonic()
            process.send_signal(sig)
            replies = _replies(sock)
            waited = time.monotonic() - start
        output, _ = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0
    assert f"{sig.name} received: stopping; 1 running session(s) get 1 s" in output
    assert "passnet serve stopped" in output
    assert waited < 10
    (text,) = _texts(replies)
    assert text.startswith("PASSNet server shutting down")
    assert replies[-1].id == protocol.MESSAGE_CLOSE
