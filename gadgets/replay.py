"""``passnet recon IN.h5 --out OUT.h5``: reconstruct an ISMRMRD raw file offline.

The file is read in one bulk h5py read, streamed through :func:`gadgets.chain.run_chain`
exactly as a Gadgetron connection would stream it, and the images are written as ISMRMRD
images (``dataset/image_<series>``); :mod:`gadgets.exporters` optionally also writes a PNG
overview, a DICOM series and a NIfTI volume. ``--method`` reconstructs with PASSNet (default)
or, for a side-by-side comparison on the same file, classical L+S or zero-filled SENSE.

The progress bar counts reconstructed slices (the slow step); every file written is announced
in one log line. When the input carries ground truth (``/passnet_truth/images``, written by
``passnet simulate``) PSNR and SSIM against it are logged per slice and overall
(:func:`compare_with_truth` states the convention).

Exit codes: 0 every slice reconstructed; 1 a slice failed or an optional output could not be
written (the good slices are written regardless); 2 nothing could be done: bad options, an
output that would overwrite the input or is a folder (checked before any work), an unreadable
input, or the output cannot be written. Those are one-line errors, never tracebacks.

Only the standard library is imported at module level: ``passnet recon --help`` builds this
parser without loading numpy or torch.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from gadgets.chain_config import METHODS
from passnet_core.cli import Command

if TYPE_CHECKING:
    from collections.abc import Callable

    import numpy as np
    from tqdm import tqdm

    from gadgets.chain_config import ChainParams
    from passnet_core.ismrmrd_io import RawData

log = logging.getLogger(__name__)

# --method spelling -> ChainParams.method (the chain's names with dashes)
METHOD_OPTIONS = {name.replace("_", "-"): name for name in METHODS}
# Ground truth of simulated files (training.simulate.TRUTH_GROUP: "images", and the true
# "coil_maps" and "noise_covariance" that put it in the chain's intensity convention).
TRUTH_GROUP = "passnet_truth"
TRUTH_DATASET = f"{TRUTH_GROUP}/images"
METRICS_CONVENTION = (
    "magnitudes; the truth weighted by the prewhitened coil sensitivity |W S| as the chain's "
    "SENSE combination weights the object; "
    "the reconstruction scaled to the truth by one least-squares factor per slice "
    "(images are in display units), both divided by max |truth| of the slice (peak 1); SSIM "
    "with an 11x11 Gaussian window (sigma 1.5), averaged over frames; overall = mean over slices"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``passnet recon`` (every option states its default and valid values)."""
    parser.add_argument("input", type=Path, help="ISMRMRD raw data file (.h5) to reconstruct")
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="OUT.h5",
        help="output ISMRMRD image file, one image per frame in dataset/image_<series> "
        "(required; must not be the input or a folder)",
    )
    parser.add_argument(
        "--method",
        choices=tuple(METHOD_OPTIONS),
        help="passnet (the network), lplus-s (classical low-rank + sparse), llr (classical "
        "locally low rank, the network's warm start), zero-filled "
        "(zero-filled SENSE, A^H d) or bart-llr (BART pics LLR with bart ecalib maps; needs "
        "the bart command) for a side-by-side comparison on the same file "
        "(default: passnet, or the method set in --config)",
    )
    parser.add_argument(
        "--weights",
        metavar="FILE",
        help="PASSNet weights file, used by --method passnet "
        "(default: the shipped passnet_core/weights/default.safetensors)",
    )
    parser.add_argument(
        "--device",
        metavar="DEVICE",
        help="auto, cpu, cuda or cuda:N (default: auto = the first CUDA GPU when there is "
        "one, else the CPU; or the device set in --config)",
    )
    parser.add_argument(
        "--frame-dimension",
        choices=("auto", "phase", "repetition"),
        help="acquisition counter holding the frames: phase (cardiac phases of a gated "
        "cine), repetition (real-time cine) or auto (from the header's encoding limits) "
        "(default: auto, or the value set in --config)",
    )
    parser.add_argument(
        "--config",
        metavar="XML",
        help="chain configuration: XML text, an XML file or a shipped chain name in "
        "gadgetron_configs (e.g. passnet_raw); the options above override it "
        "(default: none, the chain's defaults)",
    )
    parser.add_argument(
        "--png",
        type=Path,
        metavar="FILE.png",
        help="also write an overview PNG: every frame, x-t and y-t profiles, colour bar and "
        "mm scale; truth and |error| panels when the input carries /passnet_truth "
        "(default: not written)",
    )
    parser.add_argument(
        "--dicom",
        type=Path,
        metavar="FOLDER",
        help="also write a DICOM MR series, one file per image, into this folder (created "
        "if needed; needs the [io] extra) (default: not written)",
    )
    parser.add_argument(
        "--nifti",
        type=Path,
        metavar="FILE.nii[.gz]",
        help="also write the magnitudes as NIfTI-1 (x, y, slice, frame) with the scanner "
        "geometry and frame interval (needs the [io] extra) (default: not written)",
    )
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar (default: on a terminal, a bar counting reconstructed slices)",
    )


def params_from_args(args: argparse.Namespace) -> ChainParams:
    """``--config`` read by the one chain-config path, then the explicit options on top.

    ``--config`` is XML text, an XML file or a shipped chain name: a whole Gadgetron chain is
    interpreted exactly as ``passnet serve`` interprets it, a step ``<configuration>`` as the
    gadget reads it (:meth:`gadgets.chain_config.ChainParams.from_config`).
    """
    from gadgets.chain_config import ChainParams, read_config_option

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
    from passnet_core.ismrmrd_io import write_images

    partial = path.with_name(f".{path.name}.partial")
    partial.unlink(missing_ok=True)
    try:
        write_images(partial, images, header_xml)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def count_slices(raw: RawData) -> int:
    """Slices the chain will reconstruct: distinct ``idx.slice`` of the non-noise lines."""
    import ismrmrd
    import numpy as np

    noise = np.uint64(1 << (ismrmrd.ACQ_IS_NOISE_MEASUREMENT - 1))
    imaging = (raw.heads["flags"] & noise) == 0
    return int(np.unique(raw.heads["idx"]["slice"][imaging]).size)


def _progress(
    total: int, label: str, disabled: bool
) -> tuple[tqdm, contextlib.AbstractContextManager[object]]:
    """A bar over reconstructed slices; log lines are printed above it, not through it."""
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

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
            params = dataclasses.replace(params, method=METHOD_OPTIONS[args.method])
        if params.method == "bart_llr" and shutil.which("bart") is None:
            from passnet_core.bart import NOT_INSTALLED

            raise ValueError(f"--method bart-llr: {NOT_INSTALLED}")
    except (ValueError, OSError) as exc:
        log.error("%s", exc)
        return 2
    from gadgets.chain import run_chain
    from gadgets.exporters import METHOD_LABELS
    from passnet_core.ismrmrd_io import read_raw

    t0 = time.perf_counter()
    try:
        raw = read_raw(args.input)
    except Exception as exc:  # truncated/corrupt HDF5 raises OSError, KeyError, ... from h5py
        log.error("cannot read %s: %s", args.input, _one_line(exc))
        return 2
    t_read = time.perf_counter() - t0
    label = METHOD_LABELS.get(params.method, params.method)
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
        log.error("cannot write %s: %s", args.out, _one_line(exc))
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


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if isinstance(exc, ValueError) else f"{type(exc).__name__}: {text}"


# ------------------------------------------------------------------------- ground truth


def read_truth(path: str | Path) -> np.ndarray | None:
    """``(S, T, H, W)`` ground truth from ``/passnet_truth``, in the chain's intensity convention.

    The stored images are ``x = sum_c conj(S_c) (S_c x)`` with true maps ``sum_c |S_c|^2 = 1``.
    The chain prewhitens the data (``W``, from the noise scans) and combines the coils with
    maps normalised after whitening, which weights the object by ``|W S(r)|``: a smooth gain
    that varies by a factor of 2-3 over the field of view with unequal, correlated coil noise.
    When the file stores the true maps and noise covariance, the truth is weighted the same
    way, so the score measures the reconstruction rather than that gain; otherwise it is
    returned as stored. ``None`` when the file has no truth.
    """
    import h5py
    import numpy as np

    from gadgets.kspace_prep import prewhitening_matrix

    try:
        with h5py.File(path, "r") as f:
            if TRUTH_DATASET not in f:
                return None
            truth = f[TRUTH_DATASET][()]
            group = f[TRUTH_GROUP]
            if "coil_maps" not in group or "noise_covariance" not in group:
                return truth
            maps = group["coil_maps"][()]  # (S, C, H, W)
            covariance = group["noise_covariance"][()].astype(np.complex128)
    except (OSError, KeyError, ValueError) as exc:
        log.warning("cannot read the ground truth in %s: %s", path, _one_line(exc))
        return None
    try:
        whitened = np.einsum("ij,sjhw->sihw", prewhitening_matrix(covariance), maps)
    except ValueError as exc:
        log.warning("ground truth noise covariance unusable (%s): truth unweighted", exc)
        return truth
    gain = np.sqrt((np.abs(whitened) ** 2).sum(axis=1))  # (S, H, W)
    return (truth * gain[:, None]).astype(truth.dtype)


@dataclass
class TruthComparison:
    """PSNR/SSIM of each reconstructed slice against the ground truth.

    ``truth`` holds ``|truth|`` in the images' units (divided by each slice's fitted scale),
    ``(S, T, H, W)`` in the order of :func:`gadgets.exporters.slice_stacks`, for display.
    """

    slices: list[int]
    psnr: list[float]
    ssim: list[float]
    truth: np.ndarray

    @property
    def mean_psnr(self) -> float:
        return sum(self.psnr) / len(self.psnr)

    @property
    def mean_ssim(self) -> float:
        return sum(self.ssim) / len(self.ssim)


def compare_with_truth(images: list, truth: np.ndarray) -> TruthComparison | None:
    """Score the images against the ground truth and log one line per slice and overall.

    Convention (:data:`METRICS_CONVENTION`): magnitudes, since coil maps estimated from the
    data leave an arbitrary phase; the reconstruction is multiplied by the least-squares
    factor ``a = <|x|, |y|> / <|x|, |x|>`` because the chain prewhitens and scales its
    output for display, so its units are not the truth's; then
    :func:`passnet_core.metrics.psnr` (``magnitude=True``) and :func:`~passnet_core.metrics.
    ssim` divide both by ``max |truth|`` of the slice (peak 1).

    Returns
    -------
    TruthComparison or None
        ``None`` (logged) when the truth does not match the images' slices and shapes.
    """
    import numpy as np

    from gadgets.exporters import slice_stacks
    from passnet_core import metrics

    result = TruthComparison([], [], [], np.empty(0))
    truth_units = []
    for stack in slice_stacks(images):
        x = stack.magnitudes().astype(np.float64)
        index = stack.slice_index
        if not 0 <= index < len(truth) or truth[index].shape != x.shape:
            got = truth[index].shape if 0 <= index < len(truth) else "no such slice"
            log.warning(
                "ground truth does not match slice %d (%s vs images %s): no PSNR/SSIM",
                index, got, x.shape,
            )  # fmt: skip
            return None
        y = np.abs(truth[index]).astype(np.float64)
        energy = float((x * x).sum())
        scale = float((x * y).sum()) / energy if energy > 0 else 0.0
        if not scale > 0 or not y.max() > 0:
            log.warning("slice %d: empty image or truth; no PSNR/SSIM", index)
            return None
        psnr = float(metrics.psnr(scale * x, y, magnitude=True))
        try:
            ssim = float(metrics.ssim(scale * x, y))
        except ValueError:  # smaller than the SSIM window
            ssim = math.nan
        log.info("slice %d vs /passnet_truth: PSNR %.2f dB, SSIM %.4f", index, psnr, ssim)
        result.slices.append(index)
        result.psnr.append(psnr)
        result.ssim.append(ssim)
        truth_units.append((y / scale).astype(np.float32))
    result.truth = np.stack(truth_units)
    log.info(
        "overall (%d slice(s)) vs /passnet_truth: PSNR %.2f dB, SSIM %.4f (%s)",
        len(result.slices), result.mean_psnr, result.mean_ssim, METRICS_CONVENTION,
    )  # fmt: skip
    return result


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
        parts.append(f"bart_lambda={params.bart_lambda:g}")
    if params.method == "passnet":
        parts.append(f"weights={_weights_digest(params.weights)}")
    return ";".join(parts)


def _weights_digest(weights: str | None) -> str:
    if weights is None:
        from passnet_core.weights import default_weights_path

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
    from gadgets import exporters

    label = exporters.METHOD_LABELS.get(params.method, params.method)
    ok = True

    def attempt(what: str, write: Callable[[], object]) -> None:
        nonlocal ok
        try:
            write()
        except ImportError as exc:
            log.error("%s skipped (install passnet-gadgetron[io]): %s", what, exc)
        except (OSError, ValueError) as exc:
            log.error("cannot write the %s: %s", what, _one_line(exc))
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
        path = exporters.write_png(images, args.png, truth, scores, raw.header_xml, title)
        frames = len(images)
        extra = ", with truth and |error|" if truth is not None else ""
        log.info("wrote PNG %s: %d frames%s", path, frames, extra)

    def nifti() -> None:
        summary = exporters.write_nifti(images, args.nifti, raw.header_xml)
        dt = (
            f"frame interval {summary.interval_ms:.1f} ms ({summary.timing_source})"
            if summary.interval_ms
            else "frame interval unknown"
        )
        voxel = " x ".join(f"{v:.3g}" for v in summary.voxel_mm)
        log.info("wrote NIfTI %s: shape %s, voxels %s mm, %s", args.nifti, summary.shape, voxel, dt)

    def dicom() -> None:
        digest = exporters.input_digest(raw.header_xml, raw.heads, raw.data)
        info = exporters.SeriesInfo(
            raw.header_xml, digest, reconstruction_key(params), params.method
        )
        count = exporters.write_dicom(images, args.dicom, info)
        log.info("wrote DICOM series %s/: %d files (%s)", args.dicom, count, label)

    if args.png:
        attempt("PNG", png)
    if args.nifti:
        attempt("NIfTI", nifti)
    if args.dicom:
        attempt("DICOM series", dicom)
    return ok


# Registered in pyproject.toml ([project.entry-points."passnet.commands"]).
COMMAND = Command(
    "recon",
    "gadgets.replay",
    "reconstruct an ISMRMRD raw file offline (no server)",
    "gadgets.replay:add_arguments",
)
