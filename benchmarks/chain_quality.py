"""Whole-chain quality: simulated ISMRMRD files of both phantoms, reconstructed as a user would.

``passnet evaluate`` scores the networks with the true coil maps on normalised k-space. This
section measures what a user of ``passnet recon`` gets instead: each file goes through the same
chain (noise prewhitening, readout oversampling removal, ESPIRiT maps estimated from the data,
SENSE combination, image scaling) once per method, and is scored against the file's truth by
:func:`gadgets.scoring.compare_with_truth` (its convention is printed with the table). The two
phantoms are the cardiac generator training draws from and the independent ellipse family
(``passnet simulate --phantom ellipses``), which training never sees.

Radial cine cannot be written as Cartesian line readouts. Its files sample every line; each goes
through the chain's ingest (:func:`gadgets.assembly.assemble`), then only pseudo-radial spokes
are kept (:func:`training.chain_files.keep_spokes`, which remakes the calibration from them),
and the chain's per-slice steps (maps, method, crop and scaling, images) follow as in the chain.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gadgets.assembly import assemble
from gadgets.chain import ChainParams, run_chain
from gadgets.exporters.stacks import slice_stacks
from gadgets.images import build_images
from gadgets.pipeline import ReconEngine, reconstruct_slice
from gadgets.scoring import METRICS_CONVENTION, compare_with_truth, fitted_scale, read_truth
from gadgets.slices import SliceData
from passnet_core import methods as registry
from passnet_core.ismrmrd_io import RawData, read_raw
from passnet_core.masks import radial_mask
from training.chain_files import EVERY_LINE, assemble_one_slice, keep_spokes
from training.eval_report import paired_ci
from training.simulate import simulate_cine

log = logging.getLogger(__name__)

PHANTOMS = ("cardiac", "ellipses")
METHODS = ("zero-filled", "lplus-s", "llr", "bart-llr", "bart-llr-chain-maps", "passnet")
BART_METHODS = tuple(m for m in METHODS if registry.get(m).kind == "bart")
FIRST_SEED = 9_000_001  # far from the seeds of training (0.., 1e6..) and evaluation (7e6..)
# BART's lambda is tuned on these files, disjoint from the test files (FIRST_SEED..)
VALIDATION_SEED = 9_500_001
# in the units of data scaled to max |A^H d| = 1 (passnet_core.bart.pics, data_scale)
BART_GRID = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05)
SHAPE = (20, 128, 128, 8)  # frames, H, W, coils: passnet simulate's defaults
QUICK_SHAPE = (4, 32, 32, 2)
#: the bench's mask kinds (``passnet simulate --mask``) in the words of its tables
MASK_WORDS = {
    "vds_lines": "per-frame variable-density lines",
    "equispaced": "equispaced lines (the same in every frame) with 24 calibration lines",
    "radial": "pseudo-radial spokes (rotated per frame)",
}


@dataclass
class ChainScores:
    """PSNR / SSIM / seconds per (phantom, method), one value per file, in file order."""

    accel: float
    shape: tuple[int, int, int, int]
    mask: str = "vds_lines"
    spokes: int | None = None  # radial: spokes per frame (the nearest to R = accel)
    bart_lambda: dict[str, float] = field(default_factory=dict)  # BART method -> lambda
    bart_tuning: dict[str, dict[float, float]] = field(default_factory=dict)  # -> lambda -> dB
    psnr: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    ssim: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    seconds: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    figures: list[Path] = field(default_factory=list)  # one PNG per phantom (its first file)


@dataclass(frozen=True)
class BenchFile:
    """One simulated file of the bench and how its samples are taken."""

    phantom: str
    index: int  # among the phantom's files
    seed: int
    path: Path
    spokes: int | None = None  # radial: the spokes kept after the ingest; None: the file's lines


def spokes_for(accel: float, shape: tuple[int, int, int, int]) -> int:
    """Spokes per frame whose pseudo-radial mask comes nearest to acceleration ``accel``."""
    frames, h, w, _ = shape

    def gap(n: int) -> float:
        sampled = float(radial_mask(n, frames, h, w, np.random.default_rng(0)).mean())
        return abs(1 / sampled - accel)

    return min(range(1, max(h, w) + 1), key=gap)


def _files(
    tmp: str,
    first_seed: int,
    n_files: int,
    accel: float,
    shape: tuple[int, int, int, int],
    mask: str = "vds_lines",
) -> list[BenchFile]:
    """``n_files`` simulated files per phantom (radial: files of every line, spokes kept later)."""
    frames, h, w, coils = shape
    spokes = spokes_for(accel, shape) if mask == "radial" else None
    line_mask, line_accel = EVERY_LINE if spokes else (mask, accel)
    out = []
    for phantom in PHANTOMS:
        for i in range(n_files):
            seed = first_seed + i
            path = Path(tmp) / f"{phantom}_{seed}.h5"
            simulate_cine(
                path, seed=seed, n_coils=coils, frames=frames, matrix=(h, w),
                mask=line_mask, accel=line_accel, phantom=phantom,
            )  # fmt: skip
            out.append(BenchFile(phantom, i, seed, path, spokes))
    return out


def _spokes_slice(raw: RawData, file: BenchFile) -> SliceData:
    """The file (``raw``, read from ``file.path``) through the chain's ingest, its spokes kept."""
    assert file.spokes is not None
    return keep_spokes(assemble_one_slice(raw, file.path.name)[0], file.spokes, file.seed)


def _chain_psnr(file: BenchFile, params: ChainParams) -> tuple[float, float, float, list]:
    """PSNR, SSIM, seconds and the images of one file through the whole chain with ``params``."""
    raw, truth = read_raw(file.path), read_truth(file.path)
    assert truth is not None  # simulate_cine always stores it
    images: list = []
    start = time.perf_counter()
    if file.spokes is None:
        run_chain(raw.header, raw.acquisitions(), images.append, params)
    else:  # the chain's ingest, the spokes kept, then the chain's per-slice steps
        slice_data = _spokes_slice(raw, file)
        result = reconstruct_slice(slice_data, params, ReconEngine(params))
        images = build_images(result.frames, slice_data, 1, params.image_series_index,
                              result.comment)  # fmt: skip
    seconds = time.perf_counter() - start
    comparison = compare_with_truth(images, truth)
    if comparison is None:
        raise RuntimeError(f"{file.path.name}: {params.method} returned no images")
    return comparison.mean_psnr, comparison.mean_ssim, seconds, images


def _params(method: str, **settings: object) -> ChainParams:
    """The chain settings of a bench method name."""
    return ChainParams(**{**registry.get(method).settings(), **settings})  # type: ignore[arg-type]


def tune_bart_lambda(
    n_files: int,
    accel: float,
    shape: tuple[int, int, int, int] = SHAPE,
    grid: tuple[float, ...] = BART_GRID,
    method: str = "bart-llr",
    mask: str = "vds_lines",
) -> dict[float, float]:
    """Mean PSNR of BART pics LLR per lambda on validation files (both phantoms pooled).

    The files (seeds ``VALIDATION_SEED..``) are disjoint from the test files, so picking the
    best lambda here and scoring it on the test files is what a user tuning BART on their own
    earlier scans would get; one lambda per acceleration, as the user cannot know the anatomy.
    """
    scores: dict[float, list[float]] = {lam: [] for lam in grid}
    with tempfile.TemporaryDirectory(prefix="passnet_bench_bart_") as tmp:
        for file in _files(tmp, VALIDATION_SEED, n_files, accel, shape, mask):
            for lam in grid:
                params = _params(method, bart_lambda=lam)
                try:
                    psnr = _chain_psnr(file, params)[0]
                except RuntimeError:  # e.g. all-zero images at a far too large lambda
                    psnr = float("nan")
                scores[lam].append(psnr)
                log.info("validation %s %d: %s lambda %g: %.2f dB",
                         file.phantom, file.index, method, lam, psnr)  # fmt: skip
    return {lam: float(np.mean(values)) for lam, values in scores.items()}  # NaN: it failed


def measure_chain_quality(
    n_files: int,
    accel: float,
    shape: tuple[int, int, int, int] = SHAPE,
    methods: tuple[str, ...] = METHODS,
    weights: str | None = None,
    bart_validation_files: int = 2,
    mask: str = "vds_lines",
    figure_dir: Path | None = None,
) -> ChainScores:
    """Simulate ``n_files`` files per phantom and reconstruct each with every method.

    Parameters
    ----------
    n_files
        Files per phantom (seeds ``FIRST_SEED..``), each with its own anatomy, coils, mask and
        noise.
    accel
        Acceleration of the files' phase-encode lines.
    shape
        ``(frames, H, W, coils)``.
    methods
        ``passnet recon --method`` names.
    weights
        PASSNet weights (``None``: the shipped default).
    bart_validation_files
        Validation files per phantom for :func:`tune_bart_lambda` (when ``bart-llr`` runs).
    mask
        ``passnet simulate --mask``: ``vds_lines`` (per-frame variable-density lines) or
        ``equispaced`` (every R-th line, the same in every frame, plus 24 calibration lines),
        or ``radial``: the spokes per frame nearest to R (:func:`spokes_for`), kept from files
        of every line after the chain's ingest.
    figure_dir
        Where to write, for the first file of each phantom, every method's images side by side
        (:func:`chain_figure`); ``None``: no figures.

    Returns
    -------
    ChainScores
    """
    scores = ChainScores(accel, shape, mask, spokes_for(accel, shape) if mask == "radial" else None)
    for method in (m for m in methods if m in BART_METHODS):
        tuning = tune_bart_lambda(bart_validation_files, accel, shape, BART_GRID, method, mask)
        finite = {lam: p for lam, p in tuning.items() if np.isfinite(p)}
        if not finite:
            raise RuntimeError(f"{method} gave no usable images at any lambda of {BART_GRID}")
        scores.bart_tuning[method] = tuning
        scores.bart_lambda[method] = max(finite, key=lambda lam: finite[lam])
    with tempfile.TemporaryDirectory(prefix="passnet_bench_chain_") as tmp:
        for file in _files(tmp, FIRST_SEED, n_files, accel, shape, mask):
            phantom, i = file.phantom, file.index
            shown: dict[str, list] = {}
            for method in methods:
                # no zero-filled stand-in: a network that cannot run must fail the bench
                params = _params(
                    method, weights=weights, fallback="none",
                    bart_lambda=scores.bart_lambda.get(method),
                )  # fmt: skip
                psnr, ssim, seconds, images = _chain_psnr(file, params)
                if figure_dir is not None and i == 0:
                    shown[method] = images
                key = (phantom, method)
                scores.psnr.setdefault(key, []).append(psnr)
                scores.ssim.setdefault(key, []).append(ssim)
                scores.seconds.setdefault(key, []).append(seconds)
                log.info("%s %d %s: %.2f dB in %.1f s", phantom, i, method, psnr, seconds)
            if figure_dir is not None and shown:
                name = f"chain_{mask}_R{accel:g}_{phantom}.png"
                title = (
                    f"{phantom}, {MASK_WORDS[mask]}, R = {accel:g} (seed {FIRST_SEED}); "
                    "estimated coil maps, scored as passnet recon scores"
                )
                drawn = _spokes_slice(read_raw(file.path), file).mask if file.spokes else None
                figure = chain_figure(file.path, shown, figure_dir / name, title, drawn)
                scores.figures.append(figure)
                log.info("wrote %s", scores.figures[-1])
    return scores


def chain_figure(
    path: Path,
    images: dict[str, list],
    out: Path,
    title: str = "",
    mask: np.ndarray | None = None,
) -> Path:
    """Every method's reconstruction of one simulated file side by side, as a PNG.

    Parameters
    ----------
    path
        A one-slice ``passnet simulate`` file (its truth and its sampling mask are shown).
    images
        Method name -> the ISMRMRD images the chain returned for the file.
    out
        PNG to write.
    title
        Figure title.
    mask
        ``(T, H, W)`` sampling mask to show; ``None``: the one the chain's ingest finds.

    Returns
    -------
    Path
        ``out``. Each method is brought to the truth by the same least-squares factor as its
        score (:func:`gadgets.scoring.fitted_scale`), so the titles' PSNR are the table's.
    """
    from training.figures import comparison_figure  # matplotlib: only when figures are asked

    truth = read_truth(path)
    assert truth is not None  # simulate_cine always stores it
    y = np.abs(truth[0]).astype(np.float64)
    if mask is None:
        raw = read_raw(path)
        sd = assemble(raw.header, raw.acquisitions())[0][0]
        mask = sd.mask if isinstance(sd, SliceData) else None
    if mask is None or mask.shape != y.shape:
        raise ValueError(f"{path.name}: no slice of the truth's shape {y.shape} to draw")
    recons = {}
    for method, slice_images in images.items():
        x = slice_stacks(slice_images)[0].magnitudes().astype(np.float64)
        recons[method] = fitted_scale(x, y) * x
    return comparison_figure(y, recons, mask, out, title=title, magnitude_psnr=True)


def chain_markdown(scores: ChainScores) -> str:
    """Table of means and paired differences of PASSNet against every other method."""
    frames, h, w, coils = scores.shape
    methods = sorted({m for _, m in scores.psnr}, key=METHODS.index)
    n = len(next(iter(scores.psnr.values())))
    if scores.spokes is None:
        sampling = (
            f"{MASK_WORDS[scores.mask]} at R = {scores.accel:g} (`passnet simulate --mask "
            f"{scores.mask} --accel {scores.accel:g} [--phantom ellipses]`, seeds "
            f"{FIRST_SEED}..), each reconstructed by the replay chain"
        )
    else:
        sampling = (
            f"{MASK_WORDS[scores.mask]}, {scores.spokes} per frame (R = {scores.accel:g}): files "
            f"of every line (`passnet simulate --accel 1 [--phantom ellipses]`, seeds "
            f"{FIRST_SEED}..) read by the chain's ingest, only the spokes kept (the maps' "
            "calibration remade from them), then the chain's per-slice steps"
        )
    lines = [
        f"{n} simulated file(s) per phantom, {frames} frames x {h} x {w}, {coils} coils, 2x "
        f"readout oversampling, correlated coil noise (0.02) with a noise scan, {sampling}, "
        "with ESPIRiT maps from the data (bart-llr: `bart ecalib -m1` maps from the same data).",
        "",
        "| phantom | " + " | ".join(methods) + " |",
        "|---" * (len(methods) + 1) + "|",
    ]
    for phantom in PHANTOMS:
        cells = []
        for m in methods:
            p, s = scores.psnr[(phantom, m)], scores.ssim[(phantom, m)]
            cells.append(f"{np.mean(p):.2f} dB / {np.mean(s):.3f}")
        lines.append(f"| {phantom} | " + " | ".join(cells) + " |")
    if "passnet" in methods:
        others = [m for m in methods if m != "passnet"]
        lines += [
            "",
            f"PASSNet minus each method, PSNR mean over files [95 % CI, from {n} files]:",
            "",
        ]
        lines += ["| phantom | " + " | ".join(others) + " |", "|---" * (len(others) + 1) + "|"]
        for phantom in PHANTOMS:
            cells = []
            for m in others:
                mean, low, high = paired_ci(
                    scores.psnr[(phantom, "passnet")], scores.psnr[(phantom, m)]
                )
                interval = f" [{low:+.2f}, {high:+.2f}]" if np.isfinite(low) else ""
                cells.append(f"{mean:+.2f}{interval}")
            lines.append(f"| {phantom} | " + " | ".join(cells) + " |")
    for method, lam in scores.bart_lambda.items():
        tried = ", ".join(f"{k:g}: {p:.2f}" for k, p in sorted(scores.bart_tuning[method].items()))
        chain_maps = registry.get(method).settings().get("bart_maps") == "chain"
        maps = "the chain's ESPIRiT maps" if chain_maps else "`bart ecalib -m1` maps"
        lines += [
            "",
            f"{method}: BART `pics -R L:7:7:lambda -i 100` with {maps}; lambda {lam:g}, the best "
            f"mean PSNR on validation files of both phantoms (seeds {VALIDATION_SEED}.., "
            f"disjoint from the test files; dB per lambda: {tried}).",
        ]
    seconds = {m: np.mean([np.mean(scores.seconds[(p, m)]) for p in PHANTOMS]) for m in methods}
    lines += [
        "",
        "Seconds per file (whole chain, this machine): "
        + ", ".join(f"{m} {s:.1f}" for m, s in seconds.items())
        + ".",
        "",
        f"Metric: {METRICS_CONVENTION}.",
    ]
    if scores.figures:
        shown = ", ".join(f"`{f}`" for f in scores.figures)
        lines += ["", f"Figures (the first file of each phantom, every method): {shown}."]
    return "\n".join(lines) + "\n"
