"""Bounded soak of ``passnet serve``: many small sessions, sequential and concurrent.

Every session must get all its images and no text, and the server process must not grow
(a leak of buffers, threads, sockets or cached models per session shows up here).
"""

from __future__ import annotations

import threading
import time

import ismrmrd
import pytest
import torch
from helpers import rss_mb

from gadgets.client import client_session
from gadgets.server import PassnetServer
from gadgets.server_settings import ServerSettings

SEQUENTIAL = 200
CONCURRENT = 8
ROUNDS = 10  # sessions per concurrent client

WALSH_CHAIN = (
    "<configuration><version>2</version><stream><external>"
    '<execute name="gadgets.passnet_gadget" target="reconstruct" type="python"/>'
    '<configuration><property name="coil_map_method" value="walsh"/></configuration>'
    "</external></stream></configuration>"
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 2-coil, 2-frame, 16 x 16 cine and a 1-stage network: ~25 ms per session."""
    from passnet_core.model import PASSNet, PASSNetConfig
    from passnet_core.weights import save_weights
    from training.simulate import simulate_cine

    folder = tmp_path_factory.mktemp("soak")
    raw = folder / "tiny.h5"
    simulate_cine(raw, seed=3, n_coils=2, frames=2, matrix=(16, 16), accel=2, oversampling=False)
    torch.manual_seed(0)
    weights = folder / "tiny.safetensors"
    save_weights(PASSNet(PASSNetConfig(n_stages=1)), weights)
    dataset = ismrmrd.Dataset(str(raw), "dataset", create_if_needed=False)
    try:
        xml = dataset.read_xml_header()
        xml = xml.decode() if isinstance(xml, bytes) else xml
        acquisitions = [
            dataset.read_acquisition(i) for i in range(dataset.number_of_acquisitions())
        ]
    finally:
        dataset.close()
    return xml, acquisitions, weights


def _session(address, tiny) -> tuple[int, list[str], bool]:
    xml, acquisitions, _ = tiny
    result = client_session(address, xml, acquisitions, config_script=WALSH_CHAIN, timeout=30)
    return len(result.images), result.texts, result.closed_cleanly


def test_soak_sequential_and_concurrent_sessions(tiny):
    settings = ServerSettings(port=0, weights=str(tiny[2]), device="cpu", max_clients=CONCURRENT)
    start = time.monotonic()
    with PassnetServer(settings) as server:
        expected = (2, [], True)
        for _ in range(20):  # warm-up: caches, allocator arenas of the session threads
            assert _session(server.address, tiny) == expected
        before = rss_mb()

        sequential = [_session(server.address, tiny) for _ in range(SEQUENTIAL)]

        concurrent: list = []
        lock = threading.Lock()

        def client() -> None:
            for _ in range(ROUNDS):
                outcome = _session(server.address, tiny)
                with lock:
                    concurrent.append(outcome)

        threads = [threading.Thread(target=client) for _ in range(CONCURRENT)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        grown = rss_mb() - before
        # a session thread deregisters just after its client has read the close message
        deadline = time.monotonic() + 10
        while server.running_sessions() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.running_sessions() == 0
    elapsed = time.monotonic() - start
    assert sequential == [expected] * SEQUENTIAL
    assert concurrent == [expected] * (CONCURRENT * ROUNDS)
    assert grown < 40, f"server process grew by {grown:.1f} MB over {SEQUENTIAL + 80} sessions"
    print(f"soak: {SEQUENTIAL + CONCURRENT * ROUNDS} sessions in {elapsed:.1f} s")
    assert threading.active_count() < 10  # no session thread left behind
