"""Gadgetron's own C++ ``gadgetron_ismrmrd_client`` against ``passnet serve`` on loopback.

Skipped (with the reason) where the client is not available; CI has it in ../shared/tools.
The client opens its input for writing, so every test replays a copy.
"""

from __future__ import annotations

from pathlib import Path

import ismrmrd
import pytest
from real_gadgetron import replay as replay_file

from gadgets.server import PassnetServer
from gadgets.server_settings import ServerSettings


@pytest.fixture
def server(weights_file):
    settings = ServerSettings(port=0, weights=str(weights_file), device="cpu", timeout=30.0)
    with PassnetServer(settings) as running:
        yield running


def replay(client: str, server: PassnetServer, source: Path, out: Path, tmp_path: Path) -> str:
    """Replay a copy of ``source`` through ``server``; retries only the client's own race."""
    host, port = server.address
    try:
        return replay_file(client, port, source, out, tmp_path, host=host)
    except AssertionError as exc:
        pytest.fail(str(exc))


def images_in(out: Path) -> int:
    dataset = ismrmrd.Dataset(str(out), "passnet", create_if_needed=False)
    try:
        return dataset.number_of_images("image_1")
    finally:
        dataset.close()


def test_real_client_replays_a_simulated_cine(
    gadgetron_client, server, cine_file, cine_stream, tmp_path
):
    out = tmp_path / "out.h5"
    replay(gadgetron_client, server, cine_file, out, tmp_path)
    assert images_in(out) == cine_stream.frames * cine_stream.slices


def test_real_client_replays_a_scanner_file_with_dependencies(
    gadgetron_client, server, siemens_file, tmp_path
):
    out = tmp_path / "out.h5"
    output = replay(gadgetron_client, server, Path(siemens_file), out, tmp_path)
    # The dependency query was answered (noise unknown to a fresh server), then replayed.
    assert "Querying the Gadgetron instance for the dependent measurement" in output
    assert "Dependent noise measurement not found" in output
    assert "Unknown Message ID" not in output
    assert images_in(out) == 1


def _write_file(path: Path, header_xml: str, acquisitions: list) -> Path:
    dataset = ismrmrd.Dataset(str(path), "dataset", create_if_needed=True)
    try:
        dataset.write_xml_header(header_xml)
        for acquisition in acquisitions:
            dataset.append_acquisition(acquisition)
    finally:
        dataset.close()
    return path


def test_real_client_finds_noise_replayed_earlier(gadgetron_client, server, cine_stream, tmp_path):
    header = ismrmrd.xsd.CreateFromDocument(cine_stream.header_xml)
    header.measurementInformation.measurementID = "noise_and_cine_1"
    first = _write_file(tmp_path / "first.h5", ismrmrd.xsd.ToXML(header), cine_stream.acquisitions)
    header.measurementInformation.measurementID = "cine_2"
    header.measurementInformation.measurementDependency = [
        ismrmrd.xsd.measurementDependencyType(
            dependencyType="Noise", measurementID="noise_and_cine_1"
        )
    ]
    imaging = [
        a for a in cine_stream.acquisitions if not a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)
    ]
    second = _write_file(tmp_path / "second.h5", ismrmrd.xsd.ToXML(header), imaging)

    replay(gadgetron_client, server, first, tmp_path / "out1.h5", tmp_path)
    output = replay(gadgetron_client, server, second, tmp_path / "out2.h5", tmp_path)
    assert "Noise level: Min sigma" in output, output
    assert images_in(tmp_path / "out2.h5") == cine_stream.frames * cine_stream.slices
