"""``passnet recon IN.h5 --out OUT.h5``: reconstruct an ISMRMRD raw file offline.

The file is read in one bulk h5py read, streamed through :func:`gadgets.chain.run_chain`
exactly as a Gadgetron connection would stream it, and the images are written as ISMRMRD
images (``dataset/image_<series>``); :mod:`gadgets.exporters` optionally also writes a PNG
overview, a DICOM series and a NIfTI volume. ``--method`` reconstructs with PASSNet (default)
or, for a side-by-side comparison on the same file, classical L+S or zero-filled SENSE.

The progress bar counts reconstructed slices (the slow step); every file written is announced
in one log line. When the input carries ground truth (``/passnet_truth/images``, written by
``passnet simulate``) PSNR and SSIM against it are logged per slice and overall
(:func:`gadgets.scoring.compare_with_truth` states the convention).

Exit codes: 0 every slice reconstructed; 1 a slice failed or an optional output could not be
written (the good slices are written regardless); 2 nothing could be done: bad options, an
output that would overwrite the input or is a folder (checked before any work), an unreadable
input, or the output cannot be written. Those are one-line errors, never tracebacks.

The options and help live in :mod:`gadgets.recon_cli` (standard library only), so ``passnet
recon --help`` loads nothing of this module.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import ismrmrd
import numpy as np
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from gadgets.chain import run_chain
from gadgets.chain_config import ChainParams, read_config_option
from gadgets.exporters.dicom import SeriesInfo, write_dicom
from gadgets.exporters.nifti import write_nifti
from gadgets.exporters.png import write_png
from gadgets.exporters.uids import input_digest
from gadgets.scoring import TruthComparison, compare_with_truth, read_truth
from passnet_core import methods
from passnet_core.bart import NOT_INSTALLED
from passnet_core.cli import one_line
from passnet_core.ismrmrd_io import RawData, read_raw, write_images
from passnet_core.weights import default_weights_path

log = logging.getLogger(__name__)


def params_from_args(args: argparse.Namespace) -> ChainParams:
    """``--config`` read by the one chain-config path, then the explicit options on top.

    ``--config`` is XML text, an XML file or a shipped chain name: a whole Gadgetron chain is
    interpreted exactly as ``passnet serve`` interprets it, a step ``<configuration>`` as the
    gadget reads it (:meth:`gadgets.chain_config.ChainParams.from_config`).
    """
    params = ChainParams.from_config(read_config_option(args.config))
    return params.override(
        weights=args.weights, device=args.device, frame_dimension=args.frame_dimension
    )


def check_paths(args: argparse.Namespace) -> None:
    """Refuse, before any work, outputs that would destroy the input or cannot be files.

    Raises
    ------
    ValueError
        The input is missing or not a file; ``--out``, ``--png`` or ``--nifti`` is the input
        (also through a link), an existing folder, or in a folder that does not exist;
        ``--dicom`` is the input or an existing file; two outputs are the same file.
    """
    source = Path(args.input)
    if not source.is_file():
        raise ValueError(f"input {source}: no such file")
    files = {"--out": args.out, "--png": args.png, "--nifti": args.nifti}
    seen: dict[Path, str] = {}
    for option, value in files.items():
        if value is None:
            continue
        path = Path(value)
        if _same_file(path, source):
            raise ValueError(f"{option} {path} is the input file; refusing to overwrite it")
        if path.is_dir():
            raise ValueError(f"{option} {path} is a folder; give a file name")
        if option == "--out" and not path.parent.resolve().is_dir():
            raise ValueError(f"{option} {path}: folder {path.parent} does not exist")
        resolved = path.resolve()
        if resolved in seen:
            raise ValueError(f"{option} and {seen[resolved]} are the same file {path}")
        seen[resolved] = option
    if args.dicom is not None:
        folder = Path(args.dicom)
        if _same_file(folder, source) or folder.is_file():
            raise ValueError(f"--dicom {folder} is a file; give a folder")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def _write_atomically(path: Path, images: list, header_xml: str) -> None:
    """Write next to ``path``, then rename: a failed write never leaves half a file."""
    partial = path.with_name(f".{path.name}.partial")
    partial.unlink(missing_ok=True)
    try:
        write_images(partial, images, header_xml)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def count_slices(raw: RawData) -> int:
    """Slices the chain will reconstruct: distinct ``idx.slice`` of the non-noise lines."""
    noise = np.uint64(1 << (ismrmrd.ACQ_IS_NOISE_MEASUREMENT - 1))
    imaging = (raw.heads["flags"] & noise) == 0
    return int(np.unique(raw.heads["idx"]["slice"][imaging]).size)


def _progress(
    total: int, label: str, disabled: bool
) -> tuple[tqdm, contextlib.AbstractContextManager[object]]:
    """A bar over reconstructed slices; log lines are printed above it, not through it."""
    bar = tqdm(total=total, unit="slice", desc=f"recon {label}", disable=disabled or None)
    redirect = contextlib.nullcontext() if bar.disable else logging_redirect_tqdm()
    return bar, redirect


def run(args: argparse.Namespace) -> int:
    """Reconstruct ``args.input`` into ``args.out`` (and the optional PNG, DICOM, NIfTI).

    Returns
    -------
    int
        0 on success, 1 if any slice failed or an optional output could not be written, 2
        when nothing could be done (bad options or paths, unreadable input, output not
        writable), reported in one log line.
    """
    try:
        check_paths(args)
        params = params_from_args(args)
        if getattr(args, "method", None) is not None:
            params = dataclasses.replace(params, method=methods.get(args.method).name)
        if params.method == "bart_llr" and shutil.which("bart") is None:
            raise ValueError(f"--method bart-llr: {NOT_INSTALLED}")
    except (ValueError, OSError) as exc:
        log.error("%s", exc)
        return 2
    t0 = time.perf_counter()
    try:
        raw = read_raw(args.input)
    except Exception as exc:  # truncated/corrupt HDF5 raises OSError, KeyError, ... from h5py
        log.error("cannot read %s: %s", args.input, one_line(exc))
        return 2
    t_read = time.perf_counter() - t0
    label = methods.label(params.method)
    n_slices = count_slices(raw)
    log.info(
        "%s: %d acquisitions, %d slice(s); reconstructing with %s",
        args.input, len(raw), n_slices, label,
    )  # fmt: skip
    images: list = []
    bar, redirect = _progress(n_slices, label, args.no_progress)
    t1 = time.perf_counter()
    with bar, redirect:
        report = run_chain(
            raw.header, raw.acquisitions(), images.append, params, on_slice=lambda _: bar.update()
        )
        if report.slices_failed:
            bar.set_postfix_str(f"{report.slices_failed} failed")
    t_chain = time.perf_counter() - t1
    try:
        _write_atomically(Path(args.out), images, raw.header_xml)
    except Exception as exc:  # full disk, permissions, ...: one line, not a traceback
        log.error("cannot write %s: %s", args.out, one_line(exc))
        return 2
    compute = sum(t["total_s"] for t in report.timings)
    log.info(
        "%d acquisitions: read %.2f s, chain %.2f s (recon %.2f s); ingest %.0f acq/s",
        len(raw), t_read, t_chain, compute,
        len(raw) / max(t_read + t_chain - compute, 1e-9),
    )  # fmt: skip
    log.info("wrote %s: %d ISMRMRD images", args.out, len(images))
    for error in report.errors:
        log.error("%s", error)
    comparison = None
    if images:
        truth = read_truth(args.input)
        comparison = compare_with_truth(images, truth) if truth is not None else None
    extras_ok = _write_extras(args, images, raw, params, comparison) if images else True
    return 1 if report.slices_failed or report.errors or not extras_ok else 0


# ------------------------------------------------------------------------- optional outputs


def reconstruction_key(params: ChainParams) -> str:
    """What makes a reconstruction of one input distinct: another key, another DICOM series.

    The method and the settings that change pixel values; for PASSNet also a digest of the
    weights file's content (not its path, so a copy of the weights gives the same series).
    """
    parts = [
        f"method={params.method}",
        f"output={params.output}",
        f"scale={params.scale}",
        f"coil_maps={params.coil_map_method}",
        f"frames={params.frame_dimension}",
    ]
    if params.method == "bart_llr":
        parts.append(f"bart_lambda={params.bart_weight():g}")
    if params.method == "passnet":
        parts.append(f"weights={_weights_digest(params.weights)}")
    return ";".join(parts)


def _weights_digest(weights: str | None) -> str:
    if weights is None:
        weights = str(default_weights_path())
    try:
        return hashlib.sha256(Path(weights).read_bytes()).hexdigest()
    except OSError:
        return f"unreadable:{weights}"


def _write_extras(
    args: argparse.Namespace,
    images: list,
    raw: RawData,
    params: ChainParams,
    comparison: TruthComparison | None,
) -> bool:
    """PNG/NIfTI/DICOM outputs, each announced; False when one could not be written.

    A missing optional library (the ``[io]`` extra) skips that output with an error line but
    is not a failure of the reconstruction.
    """
    label = methods.label(params.method)
    ok = True

    def attempt(what: str, write: Callable[[], object]) -> None:
        nonlocal ok
        try:
            write()
        except ImportError as exc:
            log.error("%s skipped (install passnet-gadgetron[io]): %s", what, exc)
        except (OSError, ValueError) as exc:
            log.error("cannot write the %s: %s", what, one_line(exc))
            ok = False

    def png() -> None:
        title = f"{Path(args.input).name}: {label}"
        scores = None
        if comparison is not None:
            title += (
                f"; PSNR {comparison.mean_psnr:.2f} dB, SSIM {comparison.mean_ssim:.3f} "
                "vs truth (magnitudes, least-squares scale)"
            )
            scores = list(zip(comparison.psnr, comparison.ssim, strict=True))
        truth = comparison.truth if comparison is not None else None
        path = write_png(images, args.png, truth, scores, raw.header, title)
        frames = len(images)
        extra = ", with truth and |error|" if truth is not None else ""
        log.info("wrote PNG %s: %d frames%s", path, frames, extra)

    def nifti() -> None:
        summary = write_nifti(images, args.nifti, raw.header)
        dt = (
            f"frame interval {summary.interval_ms:.1f} ms ({summary.timing_source})"
            if summary.interval_ms
            else "frame interval unknown"
        )
        voxel = " x ".join(f"{v:.3g}" for v in summary.voxel_mm)
        log.info("wrote NIfTI %s: shape %s, voxels %s mm, %s", args.nifti, summary.shape, voxel, dt)

    def dicom() -> None:
        digest = input_digest(raw.header_xml, raw.heads, raw.data)
        info = SeriesInfo(raw.header, digest, reconstruction_key(params), params.method)
        count = write_dicom(images, args.dicom, info)
        log.info("wrote DICOM series %s/: %d files (%s)", args.dicom, count, label)

    if args.png:
        attempt("PNG", png)
    if args.nifti:
        attempt("NIfTI", nifti)
    if args.dicom:
        attempt("DICOM series", dicom)
    return ok
