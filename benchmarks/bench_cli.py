"""Options of ``passnet bench`` (standard library only: ``--help`` loads no torch)."""

from __future__ import annotations

import argparse
from pathlib import Path

from passnet_core.cli import Command

SECTIONS = ("latency", "gpu", "streaming", "quality", "chain")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``passnet bench``."""
    parser.add_argument(
        "--sizes",
        help="comma-separated TxHxWxCOILS for the latency section "
        "(default: 16x128x128x1,20x128x128x8,30x192x156x15)",
    )
    parser.add_argument("--repeats", type=int, default=1, help="timed calls per method (median)")
    parser.add_argument("--stages", type=int, default=15, help="PASSNet stages (latency, GPU)")
    parser.add_argument(
        "--streaming-stages",
        type=int,
        default=1,
        help="PASSNet stages in the streaming section (its overhead is what is measured)",
    )
    parser.add_argument("--threads", type=int, help="pin torch and BART (OpenMP) threads")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--no-bart", action="store_true", help="leave BART out")
    parser.add_argument("--quality-cases", type=int, default=2, help="held-out cases")
    parser.add_argument(
        "--quality-coils",
        type=int,
        default=8,
        help="coils of the quality cases (default 8, as the shipped weights were trained; "
        "1 = the paper's single-coil setting)",
    )
    parser.add_argument(
        "--quality-from",
        type=Path,
        help="quality section: quote this evaluation.md of `passnet evaluate` (with its own "
        "command and machine) instead of computing a smaller table",
    )
    parser.add_argument(
        "--chain-files",
        type=int,
        default=4,
        help="chain section: simulated files per phantom (cardiac, ellipses), >= 1 (default 4)",
    )
    parser.add_argument(
        "--chain-accel",
        type=float,
        nargs="+",
        default=[6.0, 8.0],
        help="chain section: accelerations of the files' per-frame lines, each >= 1; one "
        "table per value (default 6 8)",
    )
    parser.add_argument(
        "--chain-mask",
        nargs="+",
        choices=("vds_lines", "equispaced", "radial"),
        default=["vds_lines"],
        help="chain section: `passnet simulate --mask` kinds of the files, or radial "
        "(pseudo-radial spokes kept after the chain's ingest of files of every line); one "
        "table per kind and R (default vds_lines)",
    )
    parser.add_argument(
        "--chain-figures",
        type=Path,
        help="chain section: write a PNG per phantom, mask and R into this folder (the first "
        "file, every method side by side: frame, zoom, error, x-t profile)",
    )
    parser.add_argument(
        "--weights", type=Path, help="PASSNet weights for the quality and chain sections"
    )
    parser.add_argument("--weights-uniform", type=Path, help="uniform-SVT weights (quality)")
    parser.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"), help="Markdown file")
    parser.add_argument(
        "--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}"
    )


# Registered in pyproject.toml ([project.entry-points."passnet.commands"]).
COMMAND = Command(
    "bench",
    "benchmarks.run",
    "latency/throughput/quality benchmarks -> BENCHMARKS.md",
    "benchmarks.bench_cli:add_arguments",
)
