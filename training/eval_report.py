"""Statistics and Markdown for ``passnet evaluate``: per-method scores and paired differences.

Every method is scored on the same (case, mask) pairs, so the comparison that matters is the
*paired* difference ``PASSNet - baseline`` per case: its mean with a 95 % confidence interval
from Student's t distribution (``mean +/- t_{0.975, n-1} * std / sqrt(n)``). An interval that
excludes 0 says the ordering holds beyond case-to-case variation on this data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import stats


@dataclass
class MethodResult:
    """Scores of one method on one family: per-mask lists, or the reason it did not run."""

    name: str
    skipped: str | None = None
    psnr: dict[str, list[float]] = field(default_factory=dict)
    ssim: dict[str, list[float]] = field(default_factory=dict)
    seconds: list[float] = field(default_factory=list)


def paired_ci(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    """Mean of ``a - b`` and its 95 % t-interval ``(mean, low, high)``; NaN bounds for n < 2."""
    diff = np.asarray(a, float) - np.asarray(b, float)
    mean = float(diff.mean())
    if diff.size < 2:
        return mean, float("nan"), float("nan")
    half = float(stats.t.ppf(0.975, diff.size - 1) * diff.std(ddof=1) / np.sqrt(diff.size))
    return mean, mean - half, mean + half


def _cell(values: list[float], digits: int) -> str:
    std = np.std(values, ddof=1) if len(values) > 1 else 0.0
    return f"{np.mean(values):.{digits}f} ± {std:.{digits}f}"


def scores_table(results: dict[str, MethodResult], masks: Sequence[str]) -> list[str]:
    """Rows ``| method | PSNR / SSIM per mask | time |`` (mean ± sample std over cases)."""
    lines = [
        "| method | " + " | ".join(masks) + " | time / volume (s) |",
        "| --- | " + " | ".join("---" for _ in masks) + " | --- |",
    ]
    for r in results.values():
        if r.skipped:
            cells = [f"skipped: {r.skipped}"] + ["" for _ in masks[1:]] + ["-"]
        else:
            cells = [f"{_cell(r.psnr[m], 2)} / {_cell(r.ssim[m], 3)}" for m in masks]
            cells.append(f"{np.mean(r.seconds):.1f}")
        lines.append(f"| {r.name} | " + " | ".join(cells) + " |")
    return lines


def paired_table(
    results: dict[str, MethodResult], masks: Sequence[str], reference: str
) -> list[str]:
    """Rows ``| reference - method | PSNR diff [95 % CI] / SSIM diff per mask |``."""
    ref = results.get(reference)
    if ref is None or ref.skipped:
        return [f"(no paired differences: {reference} did not run)"]
    lines = [
        f"| {reference} − method | " + " | ".join(masks) + " |",
        "| --- | " + " | ".join("---" for _ in masks) + " |",
    ]
    for r in results.values():
        if r.name == reference or r.skipped:
            continue
        cells = []
        for m in masks:
            mean, lo, hi = paired_ci(ref.psnr[m], r.psnr[m])
            ssim_mean = paired_ci(ref.ssim[m], r.ssim[m])[0]
            cells.append(f"{mean:+.2f} dB [{lo:+.2f}, {hi:+.2f}] / {ssim_mean:+.3f}")
        lines.append(f"| {reference} − {r.name} | " + " | ".join(cells) + " |")
    return lines


def strongest_baseline(
    results: dict[str, MethodResult], masks: Sequence[str], baselines: Sequence[str]
) -> dict[str, str]:
    """Per mask, the classical method with the best mean PSNR among those that ran."""
    out = {}
    for m in masks:
        ran = [results[b] for b in baselines if b in results and not results[b].skipped]
        if ran:
            out[m] = max(ran, key=lambda r: float(np.mean(r.psnr[m]))).name
    return out
