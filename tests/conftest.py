"""Shared fixtures: a free loopback port, a small simulated cine file, tiny random weights."""

from __future__ import annotations

import os

# One compute thread per process: the suite runs on 2-core machines and starts subprocesses
# (Gadgetron's external runner, DDP workers); oversubscribed OpenMP threads made ESPIRiT and
# SVD up to 100x slower there. Set before torch is imported so subprocesses inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import socket  # noqa: E402
from dataclasses import dataclass
from pathlib import Path

import ismrmrd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture
def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def cine_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small simulated multi-coil cine ISMRMRD file (4 coils, 8 frames, 48 x 48, VDS R=4)."""
    path = tmp_path_factory.mktemp("cine") / "cine.h5"
    from training.simulate import simulate_cine

    simulate_cine(path, seed=0, n_coils=4, frames=8, matrix=(48, 48), mask="vds_lines", accel=4)
    return path


@pytest.fixture(scope="session")
def weights_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weights PASSNet (2 stages) saved with passnet_core.weights."""
    import torch

    from passnet_core.model import PASSNet, PASSNetConfig
    from passnet_core.weights import save_weights

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    save_weights(PASSNet(PASSNetConfig(n_stages=2)), path)
    return path


@dataclass(frozen=True)
class RawStream:
    """What a client streams for one file: header XML, acquisitions, expected frame count."""

    header_xml: str
    acquisitions: list
    frames: int
    slices: int

    @property
    def header(self):
        return ismrmrd.xsd.CreateFromDocument(self.header_xml)


@pytest.fixture(scope="session")
def cine_stream(cine_file: Path) -> RawStream:
    """The simulated file read back as a header and a list of acquisitions."""
    dataset = ismrmrd.Dataset(str(cine_file), "dataset", create_if_needed=False)
    try:
        header_xml = dataset.read_xml_header()
        header_xml = header_xml.decode("utf-8") if isinstance(header_xml, bytes) else header_xml
        acquisitions = [
            dataset.read_acquisition(i) for i in range(dataset.number_of_acquisitions())
        ]
    finally:
        dataset.close()
    imaging = [a for a in acquisitions if not a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)]
    frames = len({a.idx.phase for a in imaging}) * len({a.idx.repetition for a in imaging})
    slices = len({a.idx.slice for a in imaging})
    return RawStream(header_xml, acquisitions, frames, slices)


# The real scanner file lives in ../shared beside the checkout (CI has it, a fresh clone not).
SIEMENS = Path(__file__).resolve().parents[2] / "shared" / "data" / "siemens_bssfp_phantom_R3.h5"


@pytest.fixture
def siemens_file() -> str:
    """Path of the real Siemens fixture; the test skips with the reason when it is absent."""
    if not SIEMENS.is_file():
        pytest.skip(f"real scanner file not found at {SIEMENS} (../shared is not beside the clone)")
    return str(SIEMENS)


# Gadgetron's own C++ client, prebuilt in ../shared/tools (its README: licence, build recipe,
# runtime packages); a user's own build on PATH is used first.
SHARED_CLIENT = (
    Path(__file__).resolve().parents[2]
    / "shared"
    / "tools"
    / "gadgetron_ismrmrd_client"
    / "gadgetron_ismrmrd_client"
)


@pytest.fixture(scope="session")
def gadgetron_client() -> str:
    """Path of a runnable ``gadgetron_ismrmrd_client``; skips with the reason otherwise."""
    import shutil
    import subprocess

    found = shutil.which("gadgetron_ismrmrd_client")
    path = found or (str(SHARED_CLIENT) if SHARED_CLIENT.is_file() else None)
    if path is None:
        pytest.skip(
            "gadgetron_ismrmrd_client not on PATH and not in ../shared/tools "
            "(no Debian/PyPI package; build it from Gadgetron's source)"
        )
    probe = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip(f"{path} does not run here (missing runtime libraries?): {probe.stderr[-300:]}")
    return path
