"""Measurement dependencies: the dependency query of Gadgetron's client, byte for byte, and
the noise a server remembers between sessions."""

from __future__ import annotations

import socket
import struct
import time
import xml.etree.ElementTree as ET

import ismrmrd
import numpy as np
import pytest

from gadgets.assembly import AcquisitionBuffer
from gadgets.chain_config import parse_xml
from gadgets.client import client_session
from gadgets.dependency import NoiseRecord, NoiseStore, noise_query_target, query_answer
from gadgets.server import PassnetServer
from gadgets.server_settings import ServerSettings

# The chain gadgetron_ismrmrd_client sends to ask for noise statistics (its
# get_noise_statistics(): legacy format, Gadgetron's namespace, NoiseSummaryGadget).
QUERY_CHAIN = """<?xml version="1.0" encoding="UTF-8"?>
      <gadgetronStreamConfiguration xsi:schemaLocation="http://gadgetron.sf.net/gadgetron {xsd}"
        xmlns="http://gadgetron.sf.net/gadgetron"
      xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">

    <writer>
      <slot>1019</slot>
      <dll>gadgetron_mricore</dll>
      <classname>DependencyQueryWriter</classname>
    </writer>

    <gadget>
      <name>NoiseSummary</name>
      <dll>gadgetron_mricore</dll>
      <classname>NoiseSummaryGadget</classname>

      <property>
         <name>noise_file</name>
         <value>GadgetronNoiseCovarianceMatrix_{id}</value>
      </property>
    </gadget>

</gadgetronStreamConfiguration>
"""


def _query_bytes(measurement: str, nul: bool = False) -> bytes:
    """What the C++ client writes: id 2, uint32 length, the XML, then close (id 4).

    The client at the commit of ../shared/tools sends the XML without a terminating NUL;
    older clients counted and sent one. Both are accepted.
    """
    xml = QUERY_CHAIN.format(id=measurement, xsd="gadgetron.xsd").encode() + (b"\0" if nul else b"")
    return struct.pack("<HI", 2, len(xml)) + xml + struct.pack("<H", 4)


def _exchange(address, payload: bytes) -> bytes:
    """Send ``payload`` and read until the server closes (everything it sent, raw)."""
    received = b""
    with socket.create_connection(address, timeout=15) as sock:
        sock.sendall(payload)
        while chunk := sock.recv(65536):
            received += chunk
    return received


def _parse_answer(raw: bytes) -> dict[str, str]:
    """Split the server's bytes as the C++ client reads them; returns the meta fields."""
    (message_id, length) = struct.unpack_from("<HQ", raw)
    assert message_id == 1019
    meta_xml = raw[10 : 10 + length]
    assert raw[10 + length :] == struct.pack("<H", 4), "close must follow, and nothing else"
    root = ET.fromstring(meta_xml)
    assert root.tag == "ismrmrdMeta"
    return {m.findtext("name"): m.findtext("value") for m in root.findall("meta")}


@pytest.fixture
def server(weights_file):
    settings = ServerSettings(port=0, weights=str(weights_file), device="cpu", timeout=5.0)
    with PassnetServer(settings) as running:
        yield running


def test_the_query_chain_is_recognised_and_others_are_not():
    chain = QUERY_CHAIN.format(id="45387_343", xsd="gadgetron.xsd")
    assert noise_query_target(parse_xml(chain)) == "45387_343"
    from gadgetron_configs import config_path

    shipped = config_path("passnet_raw.xml").read_text()
    assert noise_query_target(parse_xml(shipped)) is None


@pytest.mark.parametrize("nul", [False, True], ids=["client-2024", "nul-terminated"])
def test_unknown_noise_is_answered_failed_byte_for_byte(server, nul):
    raw = _exchange(server.address, _query_bytes("nobody_1", nul))
    assert _parse_answer(raw) == {"status": "failed"}


def test_a_busy_server_still_answers_a_dependency_query(weights_file):
    """Gadgetron's client aborts on any other message in its query connection."""
    settings = ServerSettings(
        port=0, weights=str(weights_file), device="cpu", timeout=10.0, max_clients=1
    )
    with PassnetServer(settings) as server:
        with socket.create_connection(server.address, timeout=15) as holder:  # takes the slot
            deadline = time.monotonic() + 10
            while server.running_sessions() < 1:
                assert time.monotonic() < deadline, "the first session never started"
                time.sleep(0.02)
            assert _parse_answer(_exchange(server.address, _query_bytes("x_1"))) == {
                "status": "failed"
            }
            holder.close()


def _with_measurement(header_xml: str, own: str, noise_dependency: str | None = None) -> str:
    header = ismrmrd.xsd.CreateFromDocument(header_xml)
    info = header.measurementInformation
    info.measurementID = own
    if noise_dependency is not None:
        info.measurementDependency = [
            ismrmrd.xsd.measurementDependencyType(
                dependencyType="Noise", measurementID=noise_dependency
            )
        ]
    return ismrmrd.xsd.ToXML(header)


def test_noise_of_a_session_answers_a_later_query(server, cine_stream):
    noise = [a for a in cine_stream.acquisitions if a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)]
    assert noise, "the simulated file carries noise scans"
    header = _with_measurement(cine_stream.header_xml, "scan_7")
    result = client_session(
        server.address, header, cine_stream.acquisitions, config_name="passnet_raw.xml"
    )
    assert result.closed_cleanly and result.images, result.texts
    fields = _parse_answer(_exchange(server.address, _query_bytes("scan_7")))
    assert fields["status"] == "success"
    assert int(fields["channels"]) == noise[0].active_channels
    samples = np.concatenate([a.data for a in noise], axis=1)
    # Gadgetron's convention: noise is zero-mean, covariance = sum d d^H / (N - 1)
    sigma = np.sqrt((abs(samples) ** 2).sum(axis=1) / (samples.shape[1] - 1))
    assert float(fields["mean_sigma"]) == pytest.approx(sigma.mean(), rel=1e-3)
    assert float(fields["min_sigma"]) <= float(fields["mean_sigma"]) <= float(fields["max_sigma"])
    # the client scales its compression tolerance by the dwell time: it must be the real one
    assert float(fields["noise_dwell_time_us"]) == pytest.approx(noise[0].sample_time_us)
    assert float(fields["noise_dwell_time_us"]) > 0


def test_a_dependent_measurement_is_prewhitened_with_the_stored_noise(cine_stream):
    acquisitions = cine_stream.acquisitions
    noise = [a for a in acquisitions if a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)]
    imaging = [a for a in acquisitions if not a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)]

    def assembled(items, prior=None):
        buffer = AcquisitionBuffer(cine_stream.header, noise_covariance=prior)
        out = [s for a in items for s in buffer.add(a)] + buffer.flush()
        return out[0].kspace, buffer

    with_scans, buffer = assembled(noise + imaging)
    from_store, _ = assembled(imaging, prior=buffer.noise_covariance())
    without, _ = assembled(imaging)
    np.testing.assert_allclose(from_store, with_scans, rtol=1e-5, atol=1e-6 * abs(with_scans).max())
    assert not np.allclose(without, with_scans, rtol=1e-3)


def test_store_is_bounded_and_answers_are_ismrmrd_meta():
    store = NoiseStore(max_measurements=2)
    for name in ("a", "b", "c"):
        store.put(name, NoiseRecord(np.diag([1.0, 4.0]).astype(np.complex128)))
    assert len(store) == 2 and store.get("a") is None and store.get("c") is not None
    meta = ismrmrd.Meta.deserialize(query_answer(store.get("c")))
    assert meta["status"] == "success" and float(meta["max_sigma"]) == pytest.approx(2.0)
    assert ismrmrd.Meta.deserialize(query_answer(None))["status"] == "failed"
    # bounded in bytes too: a client's huge noise is not kept after its session
    small = NoiseStore(max_bytes=200)
    small.put("two", NoiseRecord(np.eye(2, dtype=np.complex128)))  # 64 bytes
    small.put("three", NoiseRecord(np.eye(3, dtype=np.complex128)))  # 144 bytes: "two" goes
    assert small.get("two") is None and small.get("three") is not None
    small.put("huge", NoiseRecord(np.eye(4, dtype=np.complex128)))  # 256 bytes: not kept
    assert small.get("huge") is None and small.get("three") is not None


def test_a_noise_only_measurement_is_stored_not_reported_as_failed(server, cine_stream):
    noise = [a for a in cine_stream.acquisitions if a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)]
    header = _with_measurement(cine_stream.header_xml, "noise_only_3")
    result = client_session(server.address, header, noise, config_name="passnet_raw.xml")
    assert result.closed_cleanly and not result.images
    assert len(result.texts) == 1 and "'noise_only_3' stored" in result.texts[0], result.texts
    assert _parse_answer(_exchange(server.address, _query_bytes("noise_only_3")))["status"] == (
        "success"
    )
