"""Run the real Gadgetron server and Gadgetron's own client from tests.

The server is the prebuilt Gadgetron 4.7.2 in ``../shared/tools/gadgetron`` (its README: what it
needs, what is known). It runs from there unchanged, with ``-G`` pointing at a temporary home
whose ``share/gadgetron/config`` holds Gadgetron's own chains and the chains a test installs,
and with this venv's ``bin`` first on ``PATH``, so ``python -m gadgetron`` (the external step)
runs this package. Everything here is what docs/gadgetron.md tells a deployer to do.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import ismrmrd
import numpy as np

SHARED_TOOLS = Path(__file__).resolve().parents[2] / "shared" / "tools"
GADGETRON_DIR = SHARED_TOOLS / "gadgetron"
GADGETRON_BINARY = GADGETRON_DIR / "bin" / "gadgetron"

# The client's known connect race (its README): the connecting thread can signal "connected"
# before the main thread waits; the client then idles for its -t timeout, closes the socket
# and fails writing ("Bad file descriptor"), or, in its dependency-query connection, gives
# up on the noise statistics and aborts. A server that answered wrongly shows "Unknown
# Message ID" instead, which is never retried.
RACE_SIGNS = ("Bad file descriptor", "Unable to retrieve noise statistics from server")
ATTEMPTS = 5


def gadgetron_unavailable() -> str | None:
    """Why the real server cannot run here, or ``None`` when it can."""
    if not GADGETRON_BINARY.is_file():
        return f"real Gadgetron not found at {GADGETRON_BINARY} (../shared is not beside the clone)"
    try:
        probe = subprocess.run(
            [str(GADGETRON_BINARY), "--info"], capture_output=True, text=True, timeout=60
        )
    except OSError as exc:
        return f"{GADGETRON_BINARY} does not start: {exc}"
    if probe.returncode != 0 or "Gadgetron" not in probe.stdout + probe.stderr:
        missing = subprocess.run(["ldd", str(GADGETRON_BINARY)], capture_output=True, text=True)
        lost = [line.strip() for line in missing.stdout.splitlines() if "not found" in line]
        return f"{GADGETRON_BINARY} does not run here (runtime packages missing? {lost})"
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def make_home(root: Path, chains: Mapping[str, str]) -> Path:
    """A Gadgetron home: Gadgetron's own chains plus ``chains`` (file name -> XML text)."""
    config = root / "share" / "gadgetron" / "config"
    shutil.copytree(GADGETRON_DIR / "share" / "gadgetron" / "config", config)
    for name, text in chains.items():
        (config / name).write_text(text, encoding="utf-8")
    return root


class GadgetronServer:
    """One real Gadgetron server process on a loopback port; a context manager.

    Parameters
    ----------
    home
        Home folder (``-G``) from :func:`make_home`.
    workdir
        Working directory (``-W``); the log is written beside it.
    storage_url
        An MRD storage server (``-E``); ``None`` starts with storage disabled (``-d true``).
    env
        Extra environment of the server (and so of the Python steps it starts).
    """

    def __init__(
        self,
        home: Path,
        workdir: Path,
        storage_url: str | None = None,
        env: Mapping[str, str] | None = None,
        port: int | None = None,
    ) -> None:
        self.home, self.workdir = home, workdir
        self.port = port or free_port()
        self.storage_url = storage_url
        self.log_path = workdir.with_name(workdir.name + ".log")
        self.env = dict(os.environ)
        # `python` on PATH decides the interpreter of the external step: this venv's.
        self.env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + self.env["PATH"]
        self.env["OMP_WAIT_POLICY"] = "PASSIVE"  # Gadgetron's own advice for shared machines
        self.env.update(env or {})
        self.process: subprocess.Popen | None = None

    def start(self) -> GadgetronServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        storage = ["-E", self.storage_url] if self.storage_url else ["-d", "true"]
        command = [str(GADGETRON_BINARY), "-p", str(self.port), "-G", str(self.home)]
        command += ["-W", str(self.workdir), *storage]
        log = open(self.log_path, "ab")  # noqa: SIM115 - the process owns it until stop()
        self.process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
        )
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Gadgetron exited at start:\n{self.log()[-3000:]}")
            if "Running on port" in self.log():
                with socket.socket() as probe:
                    if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                        return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"Gadgetron did not listen within 60 s:\n{self.log()[-3000:]}")

    def log(self) -> str:
        """Everything the server (and its Python steps) logged so far."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL the server and everything it started (its Python steps)."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.kill()

    def __enter__(self) -> GadgetronServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def replay(
    client: str,
    port: int,
    source: Path,
    out: Path,
    scratch: Path,
    chain: str = "passnet_raw.xml",
    group: str = "passnet",
    timeout: float = 300,
    host: str = "127.0.0.1",
    server_log: Callable[[], str] | None = None,
) -> str:
    """Replay a copy of ``source`` with ``gadgetron_ismrmrd_client``; retries only its race.

    The client opens its input for writing, so it always gets a copy. Returns its output;
    raises ``AssertionError`` with that output, and the tail of ``server_log()`` where given
    (what the server saw when a client is reset is only in its log), on any other failure.
    """
    for attempt in range(1, ATTEMPTS + 1):
        copy = scratch / f"in_{attempt}_{source.name}"
        shutil.copyfile(source, copy)
        run = subprocess.run(
            [client, "-a", host, "-p", str(port), "-f", str(copy), "-c", chain]
            + ["-o", str(out), "-G", group, "-t", "3000"],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        output = run.stdout + run.stderr
        if run.returncode == 0:
            return output
        race = any(sign in output for sign in RACE_SIGNS) and "Unknown Message ID" not in output
        if attempt == ATTEMPTS or not race:
            # the server logs why it ended the stream (e.g. its Python step exited before
            # connecting back) after the client has already seen the reset
            time.sleep(1.0)
            server = f"\nserver log (tail):\n{server_log()[-8000:]}" if server_log else ""
            raise AssertionError(
                f"gadgetron_ismrmrd_client failed (exit {run.returncode}):\n{output}{server}"
            )
    raise AssertionError("unreachable")


def read_images(path: Path, group: str) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Every image of ``path``'s ``group/image_*`` series as ``(N, H, W)`` float64 magnitudes,
    ordered by (slice, frame), with the (slice, frame) keys.

    The frame is the header's phase or repetition, whichever varies (0 for one image).
    """
    dataset = ismrmrd.Dataset(str(path), group, create_if_needed=False)
    try:
        images = []
        for series in dataset.list():
            if not series.startswith("image_"):
                continue
            for i in range(dataset.number_of_images(series)):
                images.append(dataset.read_image(series, i))
    finally:
        dataset.close()
    if not images:
        return np.zeros((0, 0, 0)), []
    phases = {int(im.getHead().phase) for im in images}
    use_phase = len(phases) > 1

    def key(im: ismrmrd.Image) -> tuple[int, int]:
        head = im.getHead()
        return int(head.slice), int(head.phase if use_phase else head.repetition)

    images.sort(key=key)
    data = np.stack([np.abs(np.asarray(im.data)).reshape(im.data.shape[-2:]) for im in images])
    return data.astype(np.float64), [key(im) for im in images]
