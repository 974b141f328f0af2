"""Gadgetron's own C++ ``gadgetron_ismrmrd_client`` against ``passnet serve`` on loopback.

Skipped (with the reason) where the client is not available; CI has it in ../shared/tools.
The client opens its input for writing, so every test replays a copy.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import ismrmrd
import pytest

from gadgets.server import PassnetServer, ServerSettings

# The client's known connect race (its README): the connecting thread can signal "connected"
# before the main thread waits; the client then idles for its -t timeout, closes the socket
# and fails writing ("Bad file descriptor"), or, in its dependency-query connection, gives
# up on the noise statistics and aborts ("terminate called"). A server that answered wrongly
# shows "Unknown Message ID" instead, which is never retried.
RACE_SIGNS = ("Bad file descriptor", "Unable to retrieve noise statistics from server")
ATTEMPTS = 5


@pytest.fixture
def server(weights_file):
    settings = ServerSettings(port=0, weights=str(weights_file), device="cpu", timeout=30.0)
    with PassnetServer(settings) as running:
        yield running


def replay(client: str, server: PassnetServer, source: Path, out: Path, tmp_path: Path) -> str:
    """Replay a copy of ``source`` through ``server``; retries only the client's own race."""
    host, port = server.address
    for attempt in range(1, ATTEMPTS + 1):
        copy = tmp_path / f"in_{attempt}_{source.name}"
        shutil.copyfile(source, copy)
        run = subprocess.run(
            [client, "-a", host, "-p", str(port), "-f", str(copy), "-c", "passnet_raw.xml"]
            + ["-o", str(out), "-G", "passnet", "-t", "3000"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        output = run.stdout + run.stderr
        if run.returncode == 0:
            return output
        race = any(sign in output for sign in RACE_SIGNS) and "Unknown Message ID" not in output
        if attempt == ATTEMPTS or not race:
            pytest.fail(f"gadgetron_ismrmrd_client failed (exit {run.returncode}):\n{output}")
    raise AssertionError("unreachable")


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
