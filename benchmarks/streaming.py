"""Streaming throughput: acquisitions/s through ``passnet recon`` and ``passnet serve``.

The network is the cheap part to leave out here: the streaming section uses a PASSNet with
few stages (``n_stages``, default 1) so that what is measured is the overhead around it
(reading, line ingest, slice assembly, coil maps, image building, the wire protocol).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from gadgets.assembly import AcquisitionBuffer
from gadgets.chain import ChainParams, run_chain
from gadgets.images import build_images
from gadgets.pipeline import ReconEngine, reconstruct_slice
from gadgets.slices import SliceData
from passnet_core.ismrmrd_io import RawData, read_raw
from passnet_core.model import PASSNet, PASSNetConfig
from passnet_core.weights import save_weights

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess
    from multiprocessing.queues import Queue

# What the client process reports: acquisitions, seconds streaming, seconds in all, error.
ClientReply = tuple[int, float, float, str | None]

#: the issue's streaming slice: (frames, H, W, coils)
DEFAULT_SLICE = (30, 192, 156, 15)
QUICK_SLICE = (8, 48, 40, 2)  # 8 frames: enough central lines for ESPIRiT


@dataclass
class StreamingResult:
    """Throughput (acquisitions/s) and the per-slice latency split (seconds)."""

    slice_shape: tuple[int, int, int, int]
    n_stages: int
    acquisitions: int
    split: dict[str, float] = field(default_factory=dict)
    rates: dict[str, float | str] = field(default_factory=dict)

    @property
    def overhead_fraction(self) -> float:
        """Share of the slice latency that is neither coil maps nor the network."""
        total = sum(self.split.values())
        core = self.split.get("coil maps", 0.0) + self.split.get("network", 0.0)
        return (total - core) / total if total > 0 else 0.0


def simulate_file(folder: Path, shape: tuple[int, int, int, int], seed: int = 0) -> Path:
    """A simulated single-slice cine raw file of ``shape = (frames, H, W, coils)``."""
    from training.simulate import simulate_cine

    frames, h, w, coils = shape
    path = Path(folder) / f"stream_{frames}x{h}x{w}x{coils}.h5"
    simulate_cine(path, seed=seed, n_coils=coils, frames=frames, matrix=(h, w))
    return path


def _timed(items: Iterable, marks: dict[str, float]) -> Iterator:
    """Pass ``items`` through, noting when the first is asked for and the last taken."""
    marks["first"] = time.perf_counter()
    yield from items
    marks["sent"] = time.perf_counter()


def latency_split(raw: RawData, params: ChainParams, engine: ReconEngine) -> dict[str, float]:
    """Seconds per step for the (first) slice of ``raw``, measured step by step.

    ``ingest``: every line through :meth:`AcquisitionBuffer.add` but the completing one;
    ``assembly``: the completing line (slice assembly, prewhitening, oversampling removal);
    ``coil maps``, ``network``, ``output``: from :func:`reconstruct_slice`; ``images``:
    building the ``ismrmrd.Image`` s.
    """
    acquisitions = list(raw.acquisitions())
    buffer = AcquisitionBuffer(raw.header, params.frame_dimension, params.max_matrix_elements)
    t0 = time.perf_counter()
    done: list = []
    for acq in acquisitions[:-1]:
        done += buffer.add(acq)
    t1 = time.perf_counter()
    done += buffer.add(acquisitions[-1]) + buffer.flush()
    t2 = time.perf_counter()
    slices = [s for s in done if isinstance(s, SliceData)]
    if not slices:
        raise ValueError("the simulated file produced no slice")
    result = reconstruct_slice(slices[0], params, engine)
    t3 = time.perf_counter()
    build_images(result.frames, slices[0], 1)
    t4 = time.perf_counter()
    return {
        "ingest": t1 - t0,
        "assembly": t2 - t1,
        "coil maps": result.timing["coil_maps_s"],
        "network": result.timing["network_s"],
        "output": result.timing["output_s"],
        "images": t4 - t3,
    }


def recon_rate(raw: RawData, params: ChainParams) -> float:
    """Acquisitions/s through :func:`run_chain` (in-process ``passnet recon``), compute excluded.

    Like ``passnet recon``'s own log line: wall time of the chain minus the per-slice
    reconstruction (coil maps, network, output), so line ingest, assembly and image building
    count.
    """
    t0 = time.perf_counter()
    report = run_chain(raw.header, raw.acquisitions(), lambda _: None, params)
    wall = time.perf_counter() - t0
    if report.errors or not report.slices_done:
        raise RuntimeError(f"chain failed: {report.errors}")
    compute = sum(t["total_s"] for t in report.timings)
    return len(raw) / max(wall - compute, 1e-9)


def _client_process(address: tuple[str, int], raw_path: str, replies: Queue[ClientReply]) -> None:
    """Child process: stream ``raw_path`` to the server like ``gadgetron_ismrmrd_client``."""
    from gadgets.client import client_session

    raw = read_raw(raw_path)
    marks: dict[str, float] = {}
    start = time.perf_counter()
    result = client_session(
        address,
        raw.header_xml,
        _timed(raw.acquisitions(), marks),
        config_name="passnet_raw.xml",
        timeout=600,
    )
    done = time.perf_counter()
    error = result.error or (None if result.images else f"no images: {result.texts}")
    streaming = marks.get("sent", done) - marks.get("first", start)
    replies.put((len(raw), streaming, done - start, error))


def _reply(replies: Queue[ClientReply], client: BaseProcess, timeout: float = 900.0) -> ClientReply:
    """The client's reply, or ``RuntimeError`` as soon as it died without one."""
    import queue

    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        try:
            return replies.get(timeout=0.5)
        except queue.Empty:
            if not client.is_alive():
                try:  # it may have replied just before exiting
                    return replies.get(timeout=0.5)
                except queue.Empty:
                    raise RuntimeError(
                        f"client process exited with code {client.exitcode} and no reply"
                    ) from None
    client.terminate()
    raise RuntimeError(f"client process gave no reply within {timeout:.0f} s")


def serve_rate(raw_path: Path, weights: Path) -> tuple[float, float]:
    """``passnet serve`` over loopback: (acquisitions/s sent, whole session seconds).

    The client runs in its own process, as the real (C++) client does, so it does not
    compete with the server for the interpreter lock. The rate is acquisitions over the time
    from the first acquisition to the last one written (connection, config and header
    messages excluded; they are in the session time). The socket buffers hold only a small
    part of the stream, so the client soon waits for the server: this is the server's ingest
    rate with protocol parsing, plus the header parsing and chain setup the server does
    before its first read, which a short stream does not amortise.
    """
    import multiprocessing

    from gadgets.server import PassnetServer
    from gadgets.server_settings import ServerSettings

    settings = ServerSettings(host="127.0.0.1", port=0, weights=str(weights), device="cpu")
    context = multiprocessing.get_context("spawn")
    replies = context.Queue()
    with PassnetServer(settings) as server:
        client = context.Process(
            target=_client_process, args=(server.address, str(raw_path), replies)
        )
        client.start()
        try:
            n, sent, session, error = _reply(replies, client)
        finally:
            client.join(timeout=60)
    if error:
        raise RuntimeError(f"server session failed: {error}")
    return n / max(sent, 1e-9), session


def measure_streaming(
    shape: tuple[int, int, int, int] = DEFAULT_SLICE,
    n_stages: int = 1,
    with_server: bool = True,
) -> StreamingResult:
    """Simulate one slice of ``shape`` and measure the latency split and ingest rates."""
    with tempfile.TemporaryDirectory(prefix="passnet_bench_") as tmp:
        weights = Path(tmp) / f"passnet_{n_stages}stages.safetensors"
        save_weights(PASSNet(PASSNetConfig(n_stages=n_stages)), weights)
        raw_path = simulate_file(Path(tmp), shape)
        raw = read_raw(raw_path)
        params = ChainParams(weights=str(weights), device="cpu")
        engine = ReconEngine(params)
        engine.model()  # load outside the timed steps
        result = StreamingResult(shape, n_stages, len(raw))
        result.split = latency_split(raw, params, engine)
        result.rates["line ingest (AcquisitionBuffer.add)"] = len(raw) / max(
            result.split["ingest"], 1e-9
        )
        result.rates["passnet recon (chain, compute excluded)"] = recon_rate(raw, params)
        if with_server:
            rate, session = serve_rate(raw_path, weights)
            result.rates["passnet serve (loopback, until sent)"] = rate
            result.rates["passnet serve session (s, whole slice)"] = session
    return result


def streaming_markdown(result: StreamingResult) -> str:
    """The latency split and the rates as Markdown tables."""
    from benchmarks.report import markdown_table

    total = sum(result.split.values())
    split = markdown_table(
        ["step", "seconds", "% of slice"],
        [[k, f"{v:.3f}", f"{100 * v / total:.1f}"] for k, v in result.split.items()]
        + [["total", f"{total:.3f}", "100"]],
    )
    rates = markdown_table(
        ["path", "value"],
        [[k, f"{v:,.0f}" if "(s" not in k else f"{v:.2f}"] for k, v in result.rates.items()],
    )
    t, h, w, c = result.slice_shape
    return (
        f"One simulated slice: {t} frames, {h}x{w}, {c} coils, {result.acquisitions} "
        f"acquisitions; PASSNet with {result.n_stages} stage(s) (the streaming overhead is "
        "what is measured here, not the network).\n\n"
        + split
        + f"\n\nStreaming overhead (all but coil maps and network): "
        f"{100 * result.overhead_fraction:.1f} % of the slice (target <= 10 % with the full "
        "network).\n\nAcquisitions per second (target >= 20,000):\n\n" + rates + "\n"
    )
