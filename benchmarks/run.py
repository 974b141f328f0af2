"""``passnet bench``: latency, GPU, streaming and quality benchmarks appended to BENCHMARKS.md.

Each section is measured in one run on one machine, so the ratios inside a section are
comparable; the command line and the machine are recorded with the numbers. The options live
in :mod:`benchmarks.bench_cli`.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
from pathlib import Path

import torch

from benchmarks import chain_quality, gpu, latency, streaming
from benchmarks.bench_cli import SECTIONS
from benchmarks.latency import Size
from benchmarks.report import append_section

log = logging.getLogger(__name__)

QUALITY_METHODS = ("zero-filled", "lplus-s", "bart-llr", "passnet-uniform", "passnet")


def parse_sizes(text: str) -> list[Size]:
    """``"16x128x128x1,30x192x156x15"`` -> ``[(16, 128, 128, 1), (30, 192, 156, 15)]``."""
    sizes = []
    for item in (s.strip() for s in text.split(",")):
        if not item:
            continue
        try:
            size = tuple(int(v) for v in item.lower().split("x"))
        except ValueError:
            raise ValueError(f"--sizes: {item!r} is not TxHxWxCOILS") from None
        if len(size) != 4 or min(size) < 1:
            raise ValueError(f"--sizes: {item!r} needs four positive integers TxHxWxCOILS")
        sizes.append(size)
    if not sizes:
        raise ValueError("--sizes: empty list")
    return sizes


def parse_sections(text: str) -> list[str]:
    """Comma-separated section names, checked against :data:`SECTIONS`."""
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [n for n in names if n not in SECTIONS]
    if unknown or not names:
        raise ValueError(f"--sections: unknown {unknown or 'empty'}; choose from {SECTIONS}")
    return names


def _check(args: argparse.Namespace) -> tuple[list[Size], list[str]]:
    """Validate everything before any heavy work."""
    sections = parse_sections(args.sections)
    if args.sizes:
        sizes = parse_sizes(args.sizes)
    else:
        sizes = list(latency.QUICK_SIZES if args.quick else latency.DEFAULT_SIZES)
    if min(args.chain_accel) < 1:
        raise ValueError("--chain-accel must be at least 1")
    counts = ("repeats", "stages", "streaming_stages", "quality_cases", "quality_coils")
    for name in (*counts, "chain_files"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
    if args.threads is not None and args.threads < 1:
        raise ValueError("--threads must be at least 1")
    for flag, path in (
        ("--weights", args.weights),
        ("--weights-uniform", args.weights_uniform),
        ("--quality-from", args.quality_from),
    ):
        if path is not None and not path.is_file():
            raise ValueError(f"{flag} {path}: no such file")
    return sizes, sections


def run(args: argparse.Namespace) -> int:
    """Run the chosen sections and append them to ``args.out``; 2 on bad arguments."""
    try:
        sizes, sections = _check(args)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    if args.threads is not None:
        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # inherited by the bart processes
    for section in sections:
        log.info("bench: %s", section)
        title, body, device = _SECTION_RUNNERS[section](args, sizes)
        print(f"\n## {title}\n\n{body}")
        append_section(args.out, title, body, device)
    log.info("appended %d section(s) to %s", len(sections), args.out)
    return 0


def _latency(args: argparse.Namespace, sizes: list[Size]) -> tuple[str, str, str]:
    rows = [
        latency.measure_size(s, torch.device("cpu"), args.repeats, args.stages, not args.no_bart)
        for s in sizes
    ]
    return "Inference latency per slice (CPU)", latency.latency_markdown(rows), "cpu"


def _gpu(args: argparse.Namespace, sizes: list[Size]) -> tuple[str, str, str]:
    size = sizes[-1]
    result = gpu.gpu_benchmark(size, args.stages, max(args.repeats, 3))
    device = "cuda" if gpu.cuda_available() else "cpu"
    return "GPU inference options", gpu.gpu_markdown(result, size), device


def _streaming(args: argparse.Namespace, sizes: list[Size]) -> tuple[str, str, str]:
    shape = streaming.QUICK_SLICE if args.quick else streaming.DEFAULT_SLICE
    result = streaming.measure_streaming(shape, args.streaming_stages)
    return (
        "Streaming throughput and per-slice latency split",
        streaming.streaming_markdown(result),
        "cpu",
    )


def _quality(args: argparse.Namespace, sizes: list[Size]) -> tuple[str, str, str]:
    title = "Quality on held-out synthetic cines"
    if args.quality_from is not None:
        quoted = args.quality_from.read_text()
        return title, f"Quoted from `{args.quality_from}`:\n\n" + _demote(quoted), "cpu"
    try:
        from training import evaluate
        from training.evaluate_cli import DEFAULT_MASKS
    except ImportError as exc:  # training.evaluate is an optional part of the install
        return "Quality", f"skipped: training.evaluate unavailable ({exc})\n", "cpu"
    if args.quick:
        size, coils, masks = (4, 32, 32), 2, ["vds-8"]
    else:
        size, coils, masks = (16, 128, 128), args.quality_coils, list(DEFAULT_MASKS)
    methods = [m for m in QUALITY_METHODS if not (args.no_bart and m.startswith("bart"))]
    weights = {"passnet": args.weights, "passnet-uniform": args.weights_uniform}
    lambdas = {"bart-llr": dict.fromkeys(masks, 0.005)}  # untuned: run `passnet evaluate`
    built = evaluate.build_methods(methods, weights, "cpu", lambdas)
    with tempfile.TemporaryDirectory(prefix="passnet_bench_quality_") as tmp:
        results = evaluate.evaluate_family(
            built, "synthetic", masks, args.quality_cases, 0.02, Path(tmp), size, coils
        )
    text = evaluate.markdown({"synthetic": results}, masks, ["BART lambda 0.005, not tuned."])
    return title, _demote(text), "cpu"


def _chain(args: argparse.Namespace, sizes: list[Size]) -> tuple[str, str, str]:
    shape = chain_quality.QUICK_SHAPE if args.quick else chain_quality.SHAPE
    n_files = 1 if args.quick else args.chain_files
    weights = None if args.weights is None else str(args.weights)
    # --quick's 4 x 32 x 32 files are too small for bart ecalib: BART only at full size
    no_bart = args.no_bart or args.quick
    bart = chain_quality.BART_METHODS
    methods = tuple(m for m in chain_quality.METHODS if not (no_bart and m in bart))
    tables = []
    for mask in args.chain_mask:
        for accel in args.chain_accel:
            scores = chain_quality.measure_chain_quality(
                n_files, accel, shape, methods, weights, 1 if args.quick else 2, mask,
                args.chain_figures,
            )  # fmt: skip
            heading = f"### R = {accel:g}, {mask}\n\n"
            tables.append(heading + chain_quality.chain_markdown(scores))
    title = "Whole-chain quality on simulated files (passnet recon, estimated coil maps)"
    return title, "\n".join(tables), "cpu"


def _demote(table: str) -> str:
    """evaluate's table starts with its own '# ' title: put it under this section."""
    return table.replace("# ", "### ", 1)


_SECTION_RUNNERS = {
    "latency": _latency,
    "gpu": _gpu,
    "streaming": _streaming,
    "quality": _quality,
    "chain": _chain,
}
