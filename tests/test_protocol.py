"""Wire format of gadgets.protocol, byte for byte, and its error handling."""

from __future__ import annotations

import io
import socket
import struct
import threading
import time

import ismrmrd
import numpy as np
import pytest
from gadgetron.external import writers as gadgetron_writers
from gadgetron.types.recon_data import (
    ReconBit,
    ReconBuffer,
    ReconData,
    SamplingDescription,
    write_recon_data,
)

from gadgets import protocol


def _acquisition(seed: int = 0) -> ismrmrd.Acquisition:
    rng = np.random.default_rng(seed)
    data = (rng.standard_normal((3, 16)) + 1j * rng.standard_normal((3, 16))).astype(np.complex64)
    acq = ismrmrd.Acquisition.from_array(data)
    acq.idx.kspace_encode_step_1 = 7
    acq.idx.phase = 2
    acq.set_flag(ismrmrd.ACQ_LAST_IN_SLICE)
    return acq


def _image() -> ismrmrd.Image:
    image = ismrmrd.Image.from_array(np.arange(24, dtype=np.float32).reshape(4, 6))
    image.image_series_index = 3
    image.attribute_string = "<ismrmrdMeta></ismrmrdMeta>"
    return image


def _roundtrip(write, *args) -> tuple[bytes, protocol.Message]:
    sink = io.BytesIO()
    write(sink, *args)
    raw = sink.getvalue()
    return raw, protocol.read_message(io.BytesIO(raw))


class _GadgetronSink:
    """What gadgetron's own writers write to (they call .write on a socket wrapper)."""

    def __init__(self) -> None:
        self.buffer = io.BytesIO()

    def write(self, data) -> None:
        self.buffer.write(bytes(data))


def test_config_file_message_is_id_and_1024_nul_padded_bytes():
    raw, message = _roundtrip(protocol.write_config_file, "passnet_raw.xml")
    assert len(raw) == 2 + 1024
    assert raw[:2] == struct.pack("<H", 1)
    assert raw[2:17] == b"passnet_raw.xml" and set(raw[17:]) == {0}
    assert message == protocol.Message(1, "passnet_raw.xml")


def test_config_script_and_header_carry_length_with_trailing_nul():
    raw, message = _roundtrip(protocol.write_config_script, "<configuration/>")
    assert raw[:2] == struct.pack("<H", 2)
    assert struct.unpack("<I", raw[2:6])[0] == len("<configuration/>") + 1
    assert raw.endswith(b"\0") and message.item == "<configuration/>"

    raw, message = _roundtrip(protocol.write_header, "<ismrmrdHeader/>")
    assert raw[:2] == struct.pack("<H", 3) and message.id == 3
    assert message.item == "<ismrmrdHeader/>"


@pytest.mark.parametrize(
    ("write", "message_id"), [(protocol.write_text, 5), (protocol.write_error, 8)]
)
def test_text_and_error_messages_end_with_a_newline(write, message_id):
    raw, message = _roundtrip(write, "slice 0 failed: bad data")
    assert raw == struct.pack("<HI", message_id, 25) + b"slice 0 failed: bad data\n"
    assert message == protocol.Message(message_id, "slice 0 failed: bad data\n")
    assert _roundtrip(write, "already a line\n")[1].item == "already a line\n"


def test_close_is_the_bare_id():
    raw, message = _roundtrip(protocol.write_close)
    assert raw == b"\x04\x00" and message == protocol.Message(4, None)


def test_acquisition_bytes_match_gadgetron_and_roundtrip():
    acq = _acquisition()
    raw, message = _roundtrip(protocol.write_acquisition, acq)
    theirs = _GadgetronSink()
    gadgetron_writers.write_acquisition(theirs, acq)
    assert raw == theirs.buffer.getvalue()
    assert message.id == 1008
    np.testing.assert_array_equal(message.item.data, acq.data)
    assert message.item.idx.kspace_encode_step_1 == 7 and message.item.idx.phase == 2
    assert message.item.is_flag_set(ismrmrd.ACQ_LAST_IN_SLICE)


def test_image_bytes_match_gadgetron_and_roundtrip():
    image = _image()
    raw, message = _roundtrip(protocol.write_image, image)
    theirs = _GadgetronSink()
    gadgetron_writers.write_image(theirs, image)
    assert raw == theirs.buffer.getvalue()
    assert message.id == 1022 and message.item.image_series_index == 3
    np.testing.assert_array_equal(message.item.data, image.data)
    assert message.item.attribute_string == image.attribute_string


def _recon_data(dtype=np.complex64) -> ReconData:
    rng = np.random.default_rng(1)
    shape = (8, 6, 1, 2, 3, 1, 1)  # RO, E1, E2, CHA, N, S, LOC
    data = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)
    headers = np.empty((6, 1, 3, 1, 1), dtype=object)
    for index in np.ndindex(headers.shape):
        header = ismrmrd.AcquisitionHeader()
        header.idx.kspace_encode_step_1 = index[0]
        header.idx.phase = index[2]
        headers[index] = header
    sampling = SamplingDescription()
    sampling.sampling_limits[1].center = 3
    return ReconData([ReconBit(ReconBuffer(data, None, None, headers, sampling))])


def test_recon_data_matches_gadgetron_encoding_and_decodes():
    recon = _recon_data()
    ours, message = _roundtrip(protocol.write_recon_data, recon)
    theirs = _GadgetronSink()
    write_recon_data(theirs, recon)  # works here because the data is complex64 already
    assert ours == theirs.buffer.getvalue()
    assert message.id == 1023
    decoded = message.item.bits[0].data
    np.testing.assert_array_equal(decoded.data, recon.bits[0].data.data)
    assert decoded.headers[4, 0, 2, 0, 0].idx.kspace_encode_step_1 == 4
    assert decoded.headers[4, 0, 2, 0, 0].idx.phase == 2
    assert decoded.sampling.sampling_limits[1].center == 3


def test_recon_data_encoding_casts_complex128_where_gadgetron_fails_on_numpy2():
    recon = _recon_data(np.complex128)
    with pytest.raises(ValueError):  # gadgetron 1.4.1: np.array(copy=False) cannot cast
        write_recon_data(_GadgetronSink(), recon)
    decoded = _roundtrip(protocol.write_recon_data, recon)[1].item
    np.testing.assert_allclose(decoded.bits[0].data.data, recon.bits[0].data.data, rtol=1e-6)


def test_unknown_message_id_is_a_protocol_error():
    with pytest.raises(protocol.ProtocolError, match="unknown message id 999"):
        protocol.read_message(io.BytesIO(struct.pack("<H", 999) + b"junk"))


@pytest.mark.parametrize("cut", [1, 2 + 100, 2 + 340 + 10])
def test_truncated_acquisition_is_a_truncated_stream_error(cut):
    raw, _ = _roundtrip(protocol.write_acquisition, _acquisition())
    with pytest.raises(protocol.TruncatedStreamError, match="expected"):
        protocol.read_message(io.BytesIO(raw[:cut]))


def test_malformed_payload_is_a_protocol_error():
    raw = struct.pack("<HI", 3, 4) + b"\xff\xfe\xfd\xfc"  # header with invalid UTF-8 is kept
    assert protocol.read_message(io.BytesIO(raw)).id == 3
    bad_recon = struct.pack("<HQ", 1023, 1) + struct.pack("<Q", 7) + b"\0" * 56
    with pytest.raises(protocol.ProtocolError):
        protocol.read_message(io.BytesIO(bad_recon))


def test_config_file_name_must_fit():
    with pytest.raises(ValueError, match="1..1023 bytes"):
        protocol.write_config_file(io.BytesIO(), "x" * 1024)
    with pytest.raises(ValueError, match="1..1023 bytes"):
        protocol.write_config_file(io.BytesIO(), "")


def test_write_item_refuses_unknown_types():
    with pytest.raises(TypeError, match="no Gadgetron message for items of type dict"):
        protocol.write_item(io.BytesIO(), {})


def test_socket_stream_times_out_with_a_clear_error():
    left, right = socket.socketpair()
    with left, right:
        stream = protocol.SocketStream(left, timeout=0.3)
        start = time.monotonic()
        with pytest.raises(TimeoutError, match=r"whole message within 0.3 s \(0 of 2"):
            protocol.read_message(stream)
        assert time.monotonic() - start < 3


def test_socket_stream_reports_peer_closing_mid_message():
    left, right = socket.socketpair()
    with left:
        right.sendall(struct.pack("<HI", 3, 100) + b"<ismrmrd")
        right.close()
        stream = protocol.SocketStream(left, timeout=5)
        with pytest.raises(protocol.TruncatedStreamError, match="after 8 of 100 expected bytes"):
            protocol.read_message(stream)


def test_socket_stream_buffering_returns_exact_bytes_across_refills():
    # small reads served from the buffer, reads larger than the buffer, reads that span a
    # refill, and a huge one that makes the buffer grow and later shrink back
    sizes = [2, 340, 1, 70_000, 3, protocol.RECV_BYTES + 5, 7, 5 * protocol.RECV_BYTES, 2, 11]
    rng = np.random.default_rng(0)
    chunks = [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in sizes]
    left, right = socket.socketpair()
    with left, right:
        sender = threading.Thread(target=right.sendall, args=(b"".join(chunks),))
        sender.start()
        stream = protocol.SocketStream(left, timeout=10)
        received = [stream.read(n) for n in sizes]
        sender.join()
        assert received == chunks and all(isinstance(r, bytes) for r in received)
        assert len(stream._buffer) <= 4 * protocol.RECV_BYTES  # shrunk back after the big read
        right.close()
        with pytest.raises(protocol.TruncatedStreamError, match="after 0 of 1 expected"):
            stream.read(1)


def test_socket_stream_refuses_absurd_lengths_and_closes_once():
    left, right = socket.socketpair()
    with right:
        right.sendall(struct.pack("<HI", 5, 0xFFFFFFFF))
        stream = protocol.SocketStream(left, timeout=5, max_message_bytes=1024)
        with pytest.raises(protocol.MessageTooLargeError, match="limit of 1024 bytes"):
            protocol.read_message(stream)
        stream.close()
        stream.close()  # idempotent: gadgetron's own `with` block closes again
        assert right.recv(16) == b"\x04\x00"  # exactly one close message
        assert right.recv(16) == b""


def test_socket_stream_rejects_bad_timeout():
    left, right = socket.socketpair()
    with left, right, pytest.raises(ValueError, match="timeout must be positive"):
        protocol.SocketStream(left, timeout=0)
