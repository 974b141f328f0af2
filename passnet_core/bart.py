"""Thin bridge to the BART command-line tools: ``.cfl``/``.hdr`` files and a runner.

BART stores complex64 arrays in Fortran (column-major) order in ``name.cfl`` with the
dimensions as text in ``name.hdr``. Its axes are fixed: 0 readout, 1 phase, 2 partition,
3 coil, ..., 10 time; callers permute to that layout themselves.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

NOT_INSTALLED = (
    "the BART command-line tools are not installed ('bart' on PATH; Debian/Ubuntu: "
    "apt-get install bart)"
)


def available() -> bool:
    """True when a ``bart`` executable is on ``PATH``."""
    return shutil.which("bart") is not None


def _base(path: str | Path) -> Path:
    """Strip a ``.cfl``/``.hdr`` suffix: BART names a dataset by its base name."""
    p = Path(path)
    return p.with_suffix("") if p.suffix in (".cfl", ".hdr") else p


def write_cfl(path: str | Path, array: np.ndarray) -> None:
    """Write ``array`` as ``path.cfl`` + ``path.hdr`` (complex64, Fortran order)."""
    base = _base(path)
    data = np.asarray(array, dtype=np.complex64)
    dims = list(data.shape) or [1]
    with open(base.with_suffix(".hdr"), "w") as f:
        f.write("# Dimensions\n" + " ".join(str(d) for d in dims) + "\n")
    data.ravel(order="F").tofile(base.with_suffix(".cfl"))


def read_cfl(path: str | Path) -> np.ndarray:
    """Read ``path.cfl`` / ``path.hdr`` into a complex64 array (trailing singletons dropped)."""
    base = _base(path)
    lines = base.with_suffix(".hdr").read_text().splitlines()
    try:
        dims_line = next(ln for ln in lines[1:] if ln.strip() and not ln.startswith("#"))
    except StopIteration:
        raise ValueError(f"{base}.hdr has no dimensions line") from None
    dims = [int(d) for d in dims_line.split()]
    while len(dims) > 1 and dims[-1] == 1:
        dims.pop()
    data = np.fromfile(base.with_suffix(".cfl"), dtype=np.complex64)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{base}.cfl holds {data.size} values, header says {dims}")
    return data.reshape(dims, order="F")


def run_bart(
    args: Sequence[str],
    inputs: Mapping[str, np.ndarray],
    outputs: Sequence[str] = (),
    timeout: float | None = 600,
) -> dict[str, np.ndarray]:
    """Run ``bart *args`` in a temporary folder and return the named outputs.

    Parameters
    ----------
    args
        Command arguments after ``bart``; refer to inputs and outputs by their bare names,
        e.g. ``["ecalib", "-m1", "-r", "24", "kspace", "maps"]``.
    inputs
        Arrays written as ``name.cfl`` before the call.
    outputs
        Names read back after the call.
    timeout
        Seconds before the process is killed.

    BART runs with as many OpenMP threads as torch uses (``OMP_NUM_THREADS`` if the caller
    set it): its OpenMP workers busy-wait, and on a machine already loaded they slow a run
    down 10-20x (measured: 100 LLR iterations on a 6 x 32 x 32 case took 3.8 s with the
    default threads beside a training job, 0.27 s with one).

    Raises
    ------
    RuntimeError
        If ``bart`` is missing or exits with an error (its stderr is included).
    """
    if not available():
        raise RuntimeError(NOT_INSTALLED)
    with tempfile.TemporaryDirectory(prefix="passnet_bart_") as tmp:
        for name, arr in inputs.items():
            write_cfl(Path(tmp) / name, arr)
        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", str(torch.get_num_threads()))
        proc = subprocess.run(
            ["bart", *map(str, args)],
            cwd=tmp,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"bart {' '.join(map(str, args))} failed: {proc.stderr.strip()}")
        return {name: read_cfl(Path(tmp) / name) for name in outputs}


def pics(
    kspace: np.ndarray,
    mask: np.ndarray,
    maps: np.ndarray,
    regulariser: str,
    iterations: int = 100,
    data_scale: float | None = None,
) -> np.ndarray:
    """``bart pics`` of one slice: ``(C, T, H, W)`` k-space, ``(T, H, W)`` mask, ``(C, H, W)``
    maps -> ``(T, H, W)`` complex64 images.

    Runs ``pics -d0 -S -R REGULARISER -i ITERATIONS`` (``-S``: images in the data's scale)
    with the frames on BART's time axis (10); BART's axes are 0 readout (W), 1 phase (H),
    3 coil. ``regulariser`` is BART's ``-R`` text, e.g. ``"L:7:7:0.005"`` for locally low rank
    over space and time.

    ``data_scale`` (``-w``) is the number BART divides the data by before it regularises, so
    it fixes what a lambda means. ``None`` leaves it to BART's own estimate from the
    zero-filled image (its 90th percentile or its maximum, depending on the histogram), which
    follows the content: through the chain one lambda then suits some files and costs others
    8-10 dB (their best lambdas 20x apart; docs/evaluation.md).
    """
    c, t, h, w = kspace.shape
    k_b = np.zeros((w, h, 1, c) + (1,) * 6 + (t,), np.complex64)
    k_b[:, :, 0, :, 0, 0, 0, 0, 0, 0, :] = kspace.transpose(3, 2, 0, 1)
    pattern = np.zeros((w, h) + (1,) * 8 + (t,), np.complex64)
    pattern[:, :, 0, 0, 0, 0, 0, 0, 0, 0, :] = np.asarray(mask).transpose(2, 1, 0)
    sens = np.asarray(maps).transpose(2, 1, 0)[:, :, None, :]
    args = ["pics", "-d0", "-S", "-R", regulariser, "-i", str(int(iterations))]
    if data_scale is not None:
        if not (np.isfinite(data_scale) and data_scale > 0):
            raise ValueError(f"data_scale must be a positive finite number, not {data_scale}")
        args += ["-w", f"{data_scale:.9g}"]
    out = run_bart(
        [*args, "-p", "pattern", "kspace", "sens", "image"],
        {"kspace": k_b, "pattern": pattern, "sens": sens},
        ["image"],
    )["image"]
    return np.ascontiguousarray(out.reshape(w, h, t).transpose(2, 1, 0)).astype(np.complex64)


def ecalib(calibration: np.ndarray, calib_lines: int = 24) -> np.ndarray:
    """ESPIRiT maps by ``bart ecalib -m1``: ``(C, H, W)`` k-space (the ACS block fully
    sampled) -> ``(C, H, W)`` complex64 maps (one set, BART's default thresholds)."""
    c, h, w = calibration.shape
    k_b = np.asarray(calibration, np.complex64).transpose(2, 1, 0)[:, :, None, :]
    region = max(4, min(int(calib_lines), h, w))
    maps = run_bart(
        ["ecalib", "-m1", "-r", str(region), "kspace", "maps"], {"kspace": k_b}, ["maps"]
    )
    return np.ascontiguousarray(maps["maps"].reshape(w, h, c).transpose(2, 1, 0))
