"""The external gadget over real loopback sockets, the test playing Gadgetron's side.

Gadgetron's side of the external protocol: it listens, starts ``python3 -m gadgetron PORT
MODULE TARGET``, then sends the step's configuration (id 2), the ISMRMRD header (id 3), the
items and close (id 4), and reads the step's items until the step's close.
"""

from __future__ import annotations

import io
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import ismrmrd
import numpy as np
import pytest
from gadgetron.external import Connection
from gadgetron.types.recon_data import ReconBit, ReconBuffer, ReconData, SamplingDescription

from gadgets import passnet_gadget, protocol

REPO_ROOT = Path(__file__).resolve().parents[1]


def _step_config(weights: Path) -> str:
    return (
        "<configuration>"
        f'<property name="weights" value="{weights}"/>'
        '<property name="device" value="cpu"/>'
        "</configuration>"
    )


def _play_gadgetron(sock: socket.socket, config: str, header_xml: str, items) -> None:
    stream = protocol.SocketStream(sock, timeout=30)
    protocol.write_config_script(stream, config, nul_terminated=False)
    protocol.write_header(stream, header_xml, nul_terminated=False)
    for item in items:
        protocol.write_item(stream, item)
    protocol.write_close(stream)


def _collect(sock: socket.socket, timeout: float = 60) -> tuple[list, bool]:
    stream = protocol.SocketStream(sock, timeout=timeout)
    images = []
    while True:
        try:
            message = protocol.read_message(stream)
        except protocol.TruncatedStreamError:
            return images, False
        if message.id == protocol.MESSAGE_CLOSE:
            return images, True
        assert message.id == protocol.MESSAGE_IMAGE, message.name
        images.append(message.item)


def _listener() -> socket.socket:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(60)
    return listener


# A distributed Gadgetron forwards <execute> to its workers without the target attribute.
@pytest.mark.parametrize("target", [["reconstruct"], []], ids=["target", "no_target"])
def test_gadget_started_like_gadgetron_returns_one_image_per_frame(
    target, cine_stream, weights_file
):
    with _listener() as listener:
        port = listener.getsockname()[1]
        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), GADGETRON_EXTERNAL_LOG_LEVEL="INFO")
        process = subprocess.Popen(
            [sys.executable, "-m", "gadgetron", str(port), "gadgets.passnet_gadget", *target],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            sock, _ = listener.accept()
            with sock:
                sender = threading.Thread(
                    target=_play_gadgetron,
                    args=(sock, _step_config(weights_file), cine_stream.header_xml),
                    kwargs={"items": cine_stream.acquisitions},
                )
                sender.start()
                images, closed = _collect(sock)
                sender.join(30)
            output = process.communicate(timeout=60)[0].decode(errors="replace")
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(10)
    assert closed, output
    assert process.returncode == 0, output
    assert len(images) == cine_stream.frames * cine_stream.slices
    assert all(np.isfinite(im.data).all() and im.data.max() > 0 for im in images)
    # one image per (slice, frame): no frame lost or sent twice
    assert len({(im.slice, im.phase, im.repetition) for im in images}) == len(images)


def _run_gadget_in_thread(timeout: float):
    """Start reconstruct() on the step side of a socket pair; return (gadgetron side, thread)."""
    gadgetron_side, step_side = socket.socketpair()
    errors: list[BaseException] = []

    def step() -> None:
        try:
            connection = Connection(step_side)
            passnet_gadget.reconstruct(connection, timeout=timeout)
        except BaseException as exc:  # reconstruct must never raise; record it if it does
            errors.append(exc)

    thread = threading.Thread(target=step, daemon=True)
    return gadgetron_side, thread, errors


def _recon_data_from(cine_stream) -> ReconData:
    """What BucketToBufferGadget (N_dimension=phase) would send for the one simulated slice."""
    header = cine_stream.header
    encoding = header.encoding[0]
    e1 = encoding.encodingLimits.kspace_encoding_step_1.maximum + 1
    imaging = [
        a for a in cine_stream.acquisitions if not a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)
    ]
    ro, channels = imaging[0].number_of_samples, imaging[0].active_channels
    frames = max(a.idx.phase for a in imaging) + 1
    data = np.zeros((ro, e1, 1, channels, frames, 1, 1), np.complex64)
    headers = np.empty((e1, 1, frames, 1, 1), dtype=object)
    for index in np.ndindex(headers.shape):
        headers[index] = ismrmrd.AcquisitionHeader()
    for acq in imaging:
        line, phase = acq.idx.kspace_encode_step_1, acq.idx.phase
        data[:, line, 0, :, phase, 0, 0] = acq.data.T
        headers[line, 0, phase, 0, 0] = acq.getHead()
    sampling = SamplingDescription()
    sampling.sampling_limits[1].center = encoding.encodingLimits.kspace_encoding_step_1.center
    sampling.sampling_limits[1].max = e1 - 1
    return ReconData([ReconBit(ReconBuffer(data, None, None, headers, sampling))])


def test_gadget_reconstructs_recon_data_from_native_buffering(cine_stream, weights_file):
    gadgetron_side, thread, errors = _run_gadget_in_thread(timeout=30)
    with gadgetron_side:
        thread.start()
        sender = threading.Thread(
            target=_play_gadgetron,
            args=(gadgetron_side, _step_config(weights_file), cine_stream.header_xml),
            kwargs={"items": [_recon_data_from(cine_stream)]},
        )
        sender.start()
        images, closed = _collect(gadgetron_side)
        sender.join(30)
    thread.join(30)
    assert not thread.is_alive() and not errors
    assert closed
    assert len(images) == cine_stream.frames * cine_stream.slices


@pytest.mark.parametrize("case", ["stall", "truncated", "unknown_id"])
def test_gadget_ends_cleanly_on_bad_streams(case, cine_stream, weights_file):
    gadgetron_side, thread, errors = _run_gadget_in_thread(timeout=1.0)
    with gadgetron_side:
        thread.start()
        stream = protocol.SocketStream(gadgetron_side, timeout=30)
        protocol.write_config_script(stream, _step_config(weights_file), nul_terminated=False)
        protocol.write_header(stream, cine_stream.header_xml, nul_terminated=False)
        if case == "truncated":
            protocol.write_acquisition(stream, cine_stream.acquisitions[0])
            stream.write(struct.pack("<H", 1008) + b"\0" * 50)
            gadgetron_side.shutdown(socket.SHUT_WR)
        elif case == "unknown_id":
            stream.write(struct.pack("<H", 999) + b"\0" * 64)
        # "stall": send nothing more; the step's 1 s read timeout must end it
        images, closed = _collect(gadgetron_side, timeout=30)
    thread.join(30)
    assert not thread.is_alive(), f"step still running after a {case} stream"
    assert not errors, errors
    assert closed, f"step did not send close after a {case} stream"
    assert images == []  # nothing complete arrived


def test_passive_mode_listen_serves_one_connection(free_port, cine_stream):
    step = threading.Thread(target=passnet_gadget.listen, args=(free_port,), daemon=True)
    step.start()
    deadline = time.monotonic() + 10
    while True:  # the step binds in its thread; retry until it listens
        try:
            sock = socket.create_connection(("127.0.0.1", free_port), timeout=5)
            break
        except ConnectionRefusedError:
            assert time.monotonic() < deadline, "passive step never listened"
            time.sleep(0.05)
    with sock:
        _play_gadgetron(sock, "<configuration/>", cine_stream.header_xml, items=[])
        images, closed = _collect(sock, timeout=30)
    step.join(30)
    assert closed and images == [] and not step.is_alive()


def _start_step(port: int, **env_extra: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), GADGETRON_EXTERNAL_LOG_LEVEL="INFO")
    env.update(env_extra)
    return subprocess.Popen(
        [sys.executable, "-m", "gadgetron", str(port), "gadgets.passnet_gadget", "reconstruct"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


@pytest.mark.parametrize("case", ["truncated_config", "truncated_header", "stalled_handshake"])
def test_gadgetron_started_step_exits_on_a_broken_handshake(case, cine_stream):
    """The config and header are read by gadgetron's own wrapper before our step runs."""
    with _listener() as listener:
        process = _start_step(listener.getsockname()[1], PASSNET_GADGET_TIMEOUT="2")
        try:
            sock, _ = listener.accept()
            with sock:
                if case == "truncated_config":
                    sock.sendall(struct.pack("<HI", 2, 1000) + b"<configur")
                elif case == "truncated_header":
                    config = b"<configuration/>"
                    sock.sendall(struct.pack("<HI", 2, len(config)) + config)
                    sock.sendall(
                        struct.pack("<HI", 3, 5000) + cine_stream.header_xml[:100].encode()
                    )
                if case != "stalled_handshake":
                    sock.shutdown(socket.SHUT_WR)  # Gadgetron gone mid-message
                start = time.monotonic()
                output = process.communicate(timeout=30)[0].decode(errors="replace")
                elapsed = time.monotonic() - start
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(10)
    assert process.returncode != 0, output
    assert elapsed < 15, f"step ran {elapsed:.0f} s after a {case}"
    expected = "timed out" if case == "stalled_handshake" else "Gadgetron closed the connection"
    assert expected in output, output


@pytest.mark.parametrize(
    ("argv", "orig", "added"),
    [
        (["-m", "9", "gadgets.passnet_gadget"], ["py", "-m", "gadgetron", "9", "x"], True),
        (["-m", "9", "gadgets.passnet_gadget", "run"], ["py", "-m", "gadgetron"], False),
        (["-m", "9", "other.module"], ["py", "-m", "gadgetron", "9", "x"], False),
        (["-m", "9", "gadgets.passnet_gadget"], ["py", "-m", "json.tool"], False),
        (["script.py", "a", "b"], ["py", "script.py", "a", "b"], False),
    ],
)
def test_only_a_targetless_gadgetron_run_of_our_step_gets_a_target(argv, orig, added):
    from gadgets.gadgetron_hook import add_missing_target

    before = list(argv)
    assert add_missing_target(argv, orig) is added
    assert argv == (before + ["reconstruct"] if added else before)


@pytest.mark.parametrize(
    ("argv", "orig", "module"),
    [
        (["-m", "9", "gadgets.passnet_gadget", "reconstruct"], ["py", "-m", "gadgetron"], True),
        (["-m", "9", "gadgets.passnet_gadget"], ["py", "-X", "dev", "-m", "gadgetron"], True),
        (["-m", "9", "other.module", "run"], ["py", "-m", "gadgetron"], False),
        (["-m", "9", "gadgets.passnet_gadget"], ["py", "-m", "json.tool"], False),
        (["-c", "9", "gadgets.passnet_gadget"], ["py", "-c", "-m", "gadgetron"], False),
        (["-m"], ["py", "-m", "gadgetron"], False),
        ([""], ["py"], False),
    ],
)
def test_the_start_up_hook_acts_only_for_gadgetron_running_our_step(argv, orig, module):
    from gadgets.gadgetron_hook import step_module

    assert step_module(argv, orig) == ("gadgets.passnet_gadget" if module else None)


def test_the_start_up_hook_leaves_other_processes_alone():
    """The .pth runs the hook in every interpreter: elsewhere it must import and patch nothing."""
    code = (
        "import sys; from gadgets import gadgetron_hook; gadgetron_hook.install(); "
        "print(sorted(m for m in sys.modules if m.startswith(('gadgetron', 'gadgets.'))))"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    output = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    assert output.returncode == 0, output.stderr
    assert output.stdout.strip() == "['gadgets.gadgetron_hook']"


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(None, 300.0), ("", 300.0), ("2", 2.0), (" 0.5 ", 0.5)]
    + [(bad, None) for bad in ["abc", "0", "-1", "nan", "inf"]],
)
def test_the_step_timeout_is_a_positive_number_of_seconds(monkeypatch, value, seconds):
    from gadgets.gadgetron_adapter import TIMEOUT_ENV, step_timeout

    if value is None:
        monkeypatch.delenv(TIMEOUT_ENV, raising=False)
    else:
        monkeypatch.setenv(TIMEOUT_ENV, value)
    if seconds is None:
        with pytest.raises(ValueError, match=f"{TIMEOUT_ENV} must be a positive number"):
            step_timeout()
    else:
        assert step_timeout() == seconds


def test_a_hardened_connection_limits_each_message_not_the_session(cine_stream):
    """Every item gets its own byte budget, however much the whole stream brings."""
    from gadgets.gadgetron_adapter import harden_connection

    gadgetron_side, step_side = socket.socketpair()
    with gadgetron_side, step_side:
        stream = protocol.SocketStream(gadgetron_side, timeout=30)
        protocol.write_config_script(stream, "<configuration/>", nul_terminated=False)
        protocol.write_header(stream, cine_stream.header_xml, nul_terminated=False)
        connection = Connection(step_side)
        harden_connection(connection, timeout=5)
        acquisitions = cine_stream.acquisitions[:8]
        one = io.BytesIO()
        protocol.write_acquisition(one, acquisitions[0])
        connection.socket.max_message_bytes = 2 * len(one.getvalue())  # the stream brings 8
        sender = threading.Thread(target=_play_items, args=(stream, acquisitions))
        sender.start()
        received = list(connection)
        sender.join(30)
        assert len(received) == len(acquisitions)
        stream.write(struct.pack("<H", 999))
        with pytest.raises(protocol.ProtocolError, match="unknown message id 999"):
            next(connection)


def _play_items(stream: protocol.SocketStream, items) -> None:
    for item in items:
        protocol.write_item(stream, item)
    protocol.write_close(stream)


def test_a_step_gadgetron_sent_no_configuration_takes_the_operators_chain(monkeypatch, caplog):
    """Distributed workers get no <configuration>: PASSNET_STEP_CONFIG names the chain."""
    import xml.etree.ElementTree as ET

    from gadgets.passnet_gadget import STEP_CONFIG_ENV, step_params

    monkeypatch.delenv(STEP_CONFIG_ENV, raising=False)
    with caplog.at_level("WARNING"):
        assert step_params(None).frame_dimension == "auto"  # defaults, with a warning
    assert STEP_CONFIG_ENV in caplog.text
    monkeypatch.setenv(STEP_CONFIG_ENV, "passnet_distributed")  # a shipped chain, by name
    assert step_params(None).frame_dimension == "phase"  # the worker stream's N_dimension
    given = ET.fromstring(
        '<configuration><property name="output" value="complex"/></configuration>'
    )
    assert step_params(given).output == "complex"  # what arrived always wins
    assert step_params(given).frame_dimension == "auto"
