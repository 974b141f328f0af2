"""Every shipped chain inside the real Gadgetron 4.7.2 server, replayed by Gadgetron's own client.

The server comes from ../shared/tools/gadgetron and runs against the MRD storage stand-in
(tests/mrd_storage_standin.py; deployments run the real mrd-storage-server), the client from
../shared/tools/gadgetron_ismrmrd_client. Each chain is the shipped one with only its ``weights``
property pointed at a tiny 2-stage network (what an operator edits in a chain) so the suite
stays fast; the same chain file then goes through ``passnet recon --config`` and the images
must agree. Skipped, with the reason, where ../shared (or its runtime packages) is absent.

Tolerance: images are magnitudes scaled per slice to a maximum of 4095. Inside Gadgetron the
buffered and distributed chains prewhiten and remove readout oversampling with Gadgetron's
own C++ gadgets (single precision) where ``passnet recon`` uses this package's code, so their
images agree to float32 rounding carried through ESPIRiT and the network: we require a
maximum absolute difference below 0.5 (of 4095) and a relative RMS difference below 1e-4.
The raw chain runs this package's code in both places and agrees more tightly.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import ismrmrd
import numpy as np
import pytest
from conftest import SIEMENS
from mrd_storage_standin import StorageStandIn
from real_gadgetron import (
    ATTEMPTS,
    GadgetronServer,
    gadgetron_unavailable,
    make_home,
    read_images,
    replay,
)

from gadgetron_configs import CONFIG_DIR
from gadgets.gadgetron_header import rewrite_file
from passnet_core import cli

CHAINS = ("passnet_raw.xml", "passnet_buffered.xml", "passnet_distributed.xml")
MAX_ABS_DIFF = 0.5
MAX_REL_RMS = 1e-4


def chain_with_weights(text: str, weights: Path) -> str:
    """A shipped chain with every PASSNet step's ``weights`` property set to ``weights``."""
    root = ET.fromstring(text)
    for external in root.iter("external"):
        configuration = external.find("configuration")
        assert configuration is not None
        for prop in configuration.findall("property"):
            if prop.get("name") in ("weights", "device"):
                configuration.remove(prop)
        ET.SubElement(configuration, "property", name="weights", value=str(weights))
        ET.SubElement(configuration, "property", name="device", value="cpu")
    return ET.tostring(root, encoding="unicode")


@dataclass
class Setup:
    """The running pieces a test uses."""

    client: str
    server: GadgetronServer
    storage: StorageStandIn
    chains: dict[str, Path]
    scratch: Path


@pytest.fixture(scope="module")
def gadgetron(gadgetron_client, weights_file, tmp_path_factory):
    """One real Gadgetron with the test chains, against the storage stand-in."""
    reason = gadgetron_unavailable()
    if reason:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("gadgetron")
    chains = {
        name: chain_with_weights((CONFIG_DIR / name).read_text(encoding="utf-8"), weights_file)
        for name in CHAINS
    }
    home = make_home(root / "home", chains)
    chain_files = {name: home / "share" / "gadgetron" / "config" / name for name in CHAINS}
    with StorageStandIn() as storage:
        # The local worker's step gets no <configuration> (Gadgetron drops it): the operator's
        # PASSNET_STEP_CONFIG names the chain it comes from.
        worker_settings = {"PASSNET_STEP_CONFIG": str(chain_files["passnet_distributed.xml"])}
        server = GadgetronServer(home, root / "work", storage.url, worker_settings)
        with server:
            yield Setup(gadgetron_client, server, storage, chain_files, root)


def recon_images(source: Path, chain: Path, out: Path) -> tuple[np.ndarray, list]:
    """What ``passnet recon --config CHAIN`` writes for ``source`` (in process, same CLI)."""
    copy = out.with_suffix(".in.h5")
    shutil.copyfile(source, copy)
    code = cli.main(["recon", str(copy), "--out", str(out), "--config", str(chain)])
    assert code == 0
    return read_images(out, "dataset")


def assert_same_images(got: np.ndarray, want: np.ndarray, what: str) -> None:
    assert got.shape == want.shape, f"{what}: {got.shape} vs {want.shape}"
    diff = np.abs(got - want)
    rel = np.sqrt(np.mean(diff**2) / np.mean(want**2))
    assert diff.max() < MAX_ABS_DIFF and rel < MAX_REL_RMS, (
        f"{what}: max |diff| {diff.max():.3g} (of {want.max():.0f}), relative RMS {rel:.2g}"
    )


# ------------------------------------------------------------------------------ files


@pytest.fixture(scope="module")
def multislice_file(tmp_path_factory) -> Path:
    from training.simulate import simulate_cine

    path = tmp_path_factory.mktemp("multislice") / "cine_3slices.h5"
    simulate_cine(path, seed=5, n_coils=4, frames=6, matrix=(40, 40), accel=3, n_slices=3)
    return path


@pytest.fixture(scope="module")
def generator_original(tmp_path_factory) -> Path:
    """ISMRMRD's own generator (ismrmrd-tools): 4 repetitions of Shepp-Logan, R=2, noise scan."""
    tool = shutil.which("ismrmrd_generate_cartesian_shepp_logan")
    if tool is None:
        pytest.skip("ismrmrd_generate_cartesian_shepp_logan not installed (Debian ismrmrd-tools)")
    path = tmp_path_factory.mktemp("generator") / "shepp_logan.h5"
    subprocess.run(
        [tool, "-m", "48", "-c", "4", "-r", "4", "-a", "2", "-w", "16", "-C", "-o", str(path)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return path


@pytest.fixture(scope="module")
def generator_file(generator_original) -> Path:
    """The generator's file after ``passnet gadgetron-header`` (docs/gadgetron.md says why)."""
    fixed = generator_original.with_name("shepp_logan_gadgetron.h5")
    changes = rewrite_file(generator_original, fixed)
    assert any("<version>" in c for c in changes) and any("measurementID" in c for c in changes)
    return fixed


@pytest.fixture(scope="module")
def siemens_copy(tmp_path_factory) -> Path:
    if not SIEMENS.is_file():
        pytest.skip(f"real scanner file not found at {SIEMENS} (../shared is not beside the clone)")
    return SIEMENS


FILES = ("cine_file", "generator_file", "multislice_file", "siemens_copy")


@pytest.mark.parametrize("chain", CHAINS)
@pytest.mark.parametrize("file_fixture", FILES)
def test_chain_in_real_gadgetron_equals_passnet_recon(gadgetron, chain, file_fixture, request):
    source = request.getfixturevalue(file_fixture)
    scratch = gadgetron.scratch / f"{Path(chain).stem}_{file_fixture}"
    scratch.mkdir()
    out = scratch / "gadgetron.h5"
    output = replay(
        gadgetron.client,
        gadgetron.server.port,
        source,
        out,
        scratch,
        chain,
        server_log=gadgetron.server.log,
    )
    assert "Unknown Message ID" not in output
    got, got_keys = read_images(out, "passnet")
    want, want_keys = recon_images(source, gadgetron.chains[chain], scratch / "recon.h5")
    assert len(want_keys) > 0
    assert got_keys == want_keys, f"images (slice, frame): {got_keys} vs {want_keys}"
    assert_same_images(got, want, f"{chain} on {file_fixture}")


def test_a_header_of_another_ismrmrd_release_is_refused_by_gadgetron_not_by_us(
    gadgetron, generator_original
):
    """The generator's ``<version>8</version>``: Gadgetron 4.7 never hands the header to the
    step (the reason is in its log); the server lives on; ``passnet recon`` reads the file."""
    scratch = gadgetron.scratch / "version8"
    scratch.mkdir()
    out = scratch / "gadgetron.h5"
    before = len(gadgetron.server.log())
    replay(
        gadgetron.client,
        gadgetron.server.port,
        generator_original,
        out,
        scratch,
        server_log=gadgetron.server.log,
    )
    assert not out.exists()  # no image came back: the client wrote no file
    deadline = time.monotonic() + 30
    while "does not match library schema" not in gadgetron.server.log()[before:]:
        assert time.monotonic() < deadline, gadgetron.server.log()[before:][-3000:]
        time.sleep(0.2)
    assert gadgetron.server.alive()
    _, keys = recon_images(
        generator_original, gadgetron.chains["passnet_raw.xml"], scratch / "recon.h5"
    )
    dataset = ismrmrd.Dataset(str(generator_original), "dataset", create_if_needed=False)
    try:
        header = ismrmrd.xsd.CreateFromDocument(dataset.read_xml_header())
    finally:
        dataset.close()
    assert header.version == 8  # what ISMRMRD 1.8's generator writes
    repetitions = header.encoding[0].encodingLimits.repetition.maximum + 1
    assert keys == [(0, r) for r in range(repetitions)]


# ------------------------------------------------------------------------------ distributed


def _worker_list_command(folder: Path, ports: list[int]) -> str:
    """A discovery command for GADGETRON_REMOTE_WORKER_COMMAND printing the worker list."""
    script = folder / "workers.sh"
    workers = ",".join(f'"127.0.0.1:{port}"' for port in ports)
    script.write_text(f"#!/bin/sh\necho '[{workers}]'\n", encoding="utf-8")
    script.chmod(0o755)
    return str(script)


@pytest.fixture
def cluster(gadgetron, tmp_path):
    """Two worker Gadgetrons and a coordinator that sends them its slices (all on loopback)."""
    settings = {"PASSNET_STEP_CONFIG": str(gadgetron.chains["passnet_distributed.xml"])}
    workers = [
        GadgetronServer(gadgetron.server.home, tmp_path / f"worker{i}", env=settings)
        for i in range(2)
    ]
    command = _worker_list_command(tmp_path, [w.port for w in workers])
    coordinator = GadgetronServer(
        gadgetron.server.home,
        tmp_path / "coordinator",
        gadgetron.storage.url,
        {"GADGETRON_REMOTE_WORKER_COMMAND": command},
    )
    try:
        for server in (*workers, coordinator):
            server.start()
        yield coordinator, workers
    finally:
        for server in (coordinator, *workers):
            server.stop()


def _steps_done(server: GadgetronServer) -> int:
    return server.log().count("PASSNet step done: 1 slice(s) reconstructed, 0 failed")


def test_two_workers_reconstruct_every_slice_once_with_the_chains_settings(
    gadgetron, cluster, multislice_file, tmp_path
):
    coordinator, workers = cluster
    chain = "passnet_distributed.xml"
    out = tmp_path / "out.h5"
    replay(
        gadgetron.client,
        coordinator.port,
        multislice_file,
        out,
        tmp_path,
        chain,
        server_log=coordinator.log,
    )
    got, keys = read_images(out, "passnet")
    want, want_keys = recon_images(multislice_file, gadgetron.chains[chain], tmp_path / "r.h5")
    assert keys == want_keys and len({s for s, _ in keys}) == 3  # every slice, once
    assert_same_images(got, want, "two workers vs passnet recon")
    # slices 0 and 2 on the first worker, 1 on the second (round robin), each with the
    # settings of the chain (the tiny weights) although Gadgetron dropped <configuration>
    assert [_steps_done(w) for w in workers] == [2, 1]
    for worker in workers:
        assert "using PASSNET_STEP_CONFIG" in worker.log()
        assert "tiny.safetensors" in worker.log()
    assert "Remote worker list empty" not in coordinator.log()


# ------------------------------------------------------------------------------ faults


def _wait_for(
    server: GadgetronServer,
    text: str,
    since: int,
    seconds: float = 60,
    gone: subprocess.Popen | None = None,
) -> bool:
    """Wait until ``text`` is logged; ``False`` if the process ``gone`` ended first."""
    deadline = time.monotonic() + seconds
    while text not in server.log()[since:]:
        if gone is not None and gone.poll() is not None:
            return text in server.log()[since:]
        assert time.monotonic() < deadline, f"{text!r} not logged:\n{server.log()[since:][-3000:]}"
        time.sleep(0.05)
    return True


def _python_steps(server: GadgetronServer) -> list[str]:
    """Command lines of the Python steps the server started and that still run."""
    assert server.process is not None
    listing = subprocess.run(
        ["ps", "-o", "args=", "-g", str(server.process.pid)], capture_output=True, text=True
    )
    return [line for line in listing.stdout.splitlines() if "gadgets.passnet_gadget" in line]


def _still_serves(gadgetron, server: GadgetronServer, cine_file: Path, scratch: Path) -> None:
    """The next client gets its images from the same server."""
    out = scratch / "next_client.h5"
    replay(
        gadgetron.client,
        server.port,
        cine_file,
        out,
        scratch,
        "passnet_raw.xml",
        server_log=server.log,
    )
    assert read_images(out, "passnet")[0].shape[0] == 8


def _with_broken_slice(source: Path, target: Path, broken: int) -> Path:
    """A copy of ``source`` whose slice ``broken`` carries NaN samples (a step that raises)."""
    import h5py

    shutil.copyfile(source, target)
    with h5py.File(target, "r+") as f:
        records = f["dataset/data"][()]
        for row in np.nonzero(records["head"]["idx"]["slice"] == broken)[0][1:]:
            records[row]["data"][:] = np.nan
        f["dataset/data"][...] = records
    return target


@pytest.mark.parametrize("chain", CHAINS)
def test_a_slice_that_fails_costs_only_that_slice(
    gadgetron, multislice_file, cine_file, chain, tmp_path
):
    broken = _with_broken_slice(multislice_file, tmp_path / "broken.h5", broken=1)
    before = len(gadgetron.server.log())
    out = tmp_path / "out.h5"
    replay(
        gadgetron.client,
        gadgetron.server.port,
        broken,
        out,
        tmp_path,
        chain,
        server_log=gadgetron.server.log,
    )
    _, keys = read_images(out, "passnet")
    assert sorted({s for s, _ in keys}) == [0, 2] and len(keys) == 2 * 6
    _wait_for(gadgetron.server, "slice 1 failed", before)
    assert gadgetron.server.alive()
    _still_serves(gadgetron, gadgetron.server, cine_file, tmp_path)


def test_a_client_that_disconnects_mid_stream_leaves_the_server_serving(
    gadgetron, cine_file, tmp_path
):
    from training.simulate import simulate_cine

    big = tmp_path / "big.h5"
    simulate_cine(big, seed=11, n_coils=8, frames=20, matrix=(128, 128), accel=4, n_slices=2)
    for attempt in range(
        1, ATTEMPTS + 1
    ):  # the client's connect race (its README) idles, then quits
        before = len(gadgetron.server.log())
        client = subprocess.Popen(
            [gadgetron.client, "-a", "127.0.0.1", "-p", str(gadgetron.server.port), "-f", str(big)]
            + ["-c", "passnet_raw.xml", "-o", str(tmp_path / "never.h5"), "-t", "3000"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            connected = _wait_for(
                gadgetron.server, "Connected to external module", before, gone=client
            )
        finally:
            client.kill()
            client.wait(timeout=30)
        if connected:
            break
        assert attempt < ATTEMPTS, "the client never reached the Python step"
    deadline = time.monotonic() + 120
    while _python_steps(gadgetron.server):  # the orphaned step ends by itself
        assert time.monotonic() < deadline, _python_steps(gadgetron.server)
        time.sleep(0.2)
    assert gadgetron.server.alive()
    _still_serves(gadgetron, gadgetron.server, cine_file, tmp_path)


def test_a_worker_killed_mid_series_costs_only_its_slices(
    gadgetron, cluster, multislice_file, cine_file, tmp_path
):
    coordinator, (first, second) = cluster
    for attempt in range(1, ATTEMPTS + 1):  # the client's connect race: retry, as above
        since = len(second.log())
        client = subprocess.Popen(
            [gadgetron.client, "-a", "127.0.0.1", "-p", str(coordinator.port)]
            + ["-f", str(_copy(multislice_file, tmp_path)), "-c", "passnet_distributed.xml"]
            + ["-o", str(tmp_path / "out.h5"), "-G", "passnet", "-t", "3000"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        if _wait_for(second, "Started external Python module", since, gone=client):
            break
        client.communicate(timeout=30)
        assert attempt < ATTEMPTS, "the client never reached the workers"
    second.kill()  # the worker of slice 1 and its Python step, mid-series
    output, _ = client.communicate(timeout=180)  # never hangs
    got, keys = read_images(tmp_path / "out.h5", "passnet")
    assert {s for s, _ in keys} == {0, 2}, output  # the surviving worker's slices
    # Gadgetron reports the lost worker (its words depend on when the worker died)
    assert re.search(r"ERROR .*Distributed", coordinator.log()), coordinator.log()[-3000:]
    assert coordinator.alive() and first.alive()
    _still_serves(gadgetron, coordinator, cine_file, tmp_path)


def _copy(source: Path, folder: Path) -> Path:
    """The client opens its input for writing: it always gets a copy."""
    target = folder / f"copy_{source.name}"
    shutil.copyfile(source, target)
    return target


# ------------------------------------------------------------------------------ storage


def _measurement_id(path: Path) -> str:
    dataset = ismrmrd.Dataset(str(path), "dataset", create_if_needed=False)
    try:
        header = ismrmrd.xsd.CreateFromDocument(dataset.read_xml_header())
    finally:
        dataset.close()
    return header.measurementInformation.measurementID


def _without_noise_scans(source: Path, target: Path) -> Path:
    import h5py

    shutil.copyfile(source, target)
    with h5py.File(target, "r+") as f:
        records = f["dataset/data"][()]
        bit = np.uint64(1 << (ismrmrd.ACQ_IS_NOISE_MEASUREMENT - 1))
        noise = (records["head"]["flags"] & bit) > 0
        del f["dataset/data"]
        f["dataset"].create_dataset("data", data=records[~noise], maxshape=(None,), chunks=True)
    return target


def _images(gadgetron, server: GadgetronServer, source: Path, chain: str, scratch: Path):
    out = scratch / f"{Path(chain).stem}_{source.stem}.h5"
    replay(gadgetron.client, server.port, source, out, scratch, chain, server_log=server.log)
    if not out.exists():  # the client writes no file when no image came back
        return np.zeros((0, 0, 0)), []
    return read_images(out, "passnet")


def test_the_buffered_chain_prewhitens_inside_gadgetron_as_the_raw_chain_does(
    gadgetron, cine_file, tmp_path
):
    measurement = _measurement_id(cine_file)
    raw, raw_keys = _images(gadgetron, gadgetron.server, cine_file, "passnet_raw.xml", tmp_path)
    buffered, keys = _images(
        gadgetron, gadgetron.server, cine_file, "passnet_buffered.xml", tmp_path
    )
    assert keys == raw_keys
    assert_same_images(buffered, raw, "buffered (NoiseAdjustGadget) vs raw (the step)")
    # NoiseAdjustGadget gathered the noise scans and stored their covariance
    stored = [r for r in gadgetron.storage.requests if r.startswith("POST")]
    assert any("name=noise_covariance" in r and f"measurement={measurement}" in r for r in stored)
    # and it used them: without prewhitening the images differ
    unwhitened, _ = _images(
        gadgetron,
        gadgetron.server,
        _without_noise_scans(cine_file, tmp_path / "no_noise.h5"),
        "passnet_buffered.xml",
        tmp_path,
    )
    assert np.abs(unwhitened - raw).max() > 100 * MAX_ABS_DIFF


def test_without_storage_the_buffered_chain_equals_the_raw_chain_where_it_can_run(
    gadgetron, cine_file, tmp_path
):
    """``-d true``: files without noise scans run; with noise scans NoiseAdjustGadget fails
    (docs/gadgetron.md), the client gets no images and the server lives on."""
    no_noise = _without_noise_scans(cine_file, tmp_path / "no_noise.h5")
    with GadgetronServer(gadgetron.server.home, tmp_path / "nostorage") as server:
        raw, raw_keys = _images(gadgetron, server, no_noise, "passnet_raw.xml", tmp_path)
        buffered, keys = _images(gadgetron, server, no_noise, "passnet_buffered.xml", tmp_path)
        assert keys == raw_keys and len(keys) == 8
        assert_same_images(buffered, raw, "buffered vs raw, no storage")
        with_noise, _ = _images(gadgetron, server, cine_file, "passnet_buffered.xml", tmp_path)
        assert with_noise.shape[0] == 0
        _wait_for(server, "NoiseAdjustGadget] ERROR", 0)
        assert server.alive()
        raw_with_noise, _ = _images(gadgetron, server, cine_file, "passnet_raw.xml", tmp_path)
        assert raw_with_noise.shape[0] == 8  # the raw chain needs no storage
