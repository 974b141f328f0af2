"""Seconds per training step of PASSNet on the CPU, with three Conv3d back ends, in one run.

``python -m benchmarks.train_step`` times forward + backward + Adam step of one PASSNet stage
(the paper's stage, 16 channels) on a multi-coil crop at batch 1 and batch 2, with

* ``stock``: ``torch.nn.Conv3d`` (torch's dispatch; batch-1 small volumes take a native kernel),
* ``onednn-forward``: oneDNN forward, autograd's backward (what shipped before the fix),
* ``onednn-both``: :class:`passnet_core.conv.Conv3d`, oneDNN forward *and* backward.

It prints a Markdown table of the median seconds per sample and the ratio to ``stock``
measured in the same run (absolute CPU times depend on the machine and its load; ratios hold).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from unittest import mock

import torch
from torch import nn

from benchmarks.report import machine_description, provenance
from passnet_core import conv
from passnet_core.masks import make_mask
from passnet_core.model import PASSNetConfig, PASSNetStage
from passnet_core.operators import EncodingOp

BACKENDS = ("stock", "onednn-forward", "onednn-both")


def _forward_only(self: conv.Conv3d, x: torch.Tensor) -> torch.Tensor:
    if not self._fast_path(x):
        return nn.Conv3d.forward(self, x)
    return conv._onednn(x, self.weight, self.bias)  # autograd's own backward


def _patched(backend: str) -> Callable[[conv.Conv3d, torch.Tensor], torch.Tensor]:
    if backend == "stock":
        return nn.Conv3d.forward
    if backend == "onednn-forward":
        return _forward_only
    return conv.Conv3d.forward


def time_step(backend: str, batch: int, size: int, frames: int, repeats: int) -> float:
    """Median seconds per sample of one stage's forward + backward + optimiser step."""
    torch.manual_seed(0)
    stage = PASSNetStage(PASSNetConfig())
    opt = torch.optim.Adam(stage.parameters(), lr=1e-4)
    maps = torch.randn(batch, 8, size, size, dtype=torch.complex64)
    maps = maps / maps.abs().pow(2).sum(1, keepdim=True).sqrt()
    mask = make_mask("vds_lines", 8, frames, size, size, seed=0)
    op = EncodingOp(mask, maps)
    target = torch.randn(batch, frames, size, size, dtype=torch.complex64)
    kspace = op.forward(target)
    x0 = op.adjoint(kspace)
    times = []
    with mock.patch.object(conv.Conv3d, "forward", _patched(backend)):  # restored on exit
        for _ in range(repeats + 1):
            start = time.perf_counter()
            loss = (stage(x0, op, kspace) - target).abs().pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            times.append((time.perf_counter() - start) / batch)
    return statistics.median(times[1:])  # the first call warms up oneDNN


def main(argv: list[str] | None = None) -> int:
    """Print the table (and its provenance)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=64, help="crop H = W (default 64)")
    parser.add_argument("--frames", type=int, default=16, help="crop frames (default 16)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (default 3)")
    args = parser.parse_args(argv)
    print(f"machine: {machine_description()}")
    lines = [
        f"One PASSNet stage, {args.frames} x {args.size} x {args.size} crop, 8 coils: "
        "median s per sample (forward + backward + Adam), ratio to stock",
        "",
        "| batch | " + " | ".join(BACKENDS) + " |",
        "| --- | " + " | ".join("---" for _ in BACKENDS) + " |",
    ]
    for batch in (1, 2):
        secs = {b: time_step(b, batch, args.size, args.frames, args.repeats) for b in BACKENDS}
        cells = [f"{secs[b]:.3f} s ({secs[b] / secs['stock']:.2f}x)" for b in BACKENDS]
        lines.append(f"| {batch} | " + " | ".join(cells) + " |")
    print("\n".join(lines))
    print(provenance())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
