"""An overview PNG of one reconstruction: every frame, x-t and y-t profiles, scales, truth."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from gadgets.exporters.geometry import pixel_spacing
from gadgets.exporters.stacks import slice_stacks
from gadgets.exporters.timing import frame_timing, rr_interval_ms

if TYPE_CHECKING:
    import ismrmrd
    import numpy as np
    from ismrmrd.xsd import ismrmrdHeader
    from matplotlib.axes import Axes
    from matplotlib.image import AxesImage

_ERROR_GAIN = 5.0  # |error| panels use a 5x narrower range than the images


def _grid(n: int) -> tuple[int, int]:
    """Columns and rows for ``n`` panels: few empty cells, about 1.4 times wider than tall."""
    best = min(
        range(1, n + 1),
        key=lambda c: (math.ceil(n / c) * c - n) + 2 * abs(math.log(c / math.ceil(n / c) / 1.4)),
    )
    return best, math.ceil(n / best)


def _nice_length(limit_mm: float) -> float:
    """The largest of 1, 2, 5 x 10^k mm not above ``limit_mm``."""
    if not limit_mm > 0:
        return 0.0
    exponent = 10 ** math.floor(math.log10(limit_mm))
    return max(m * exponent for m in (1, 2, 5) if m * exponent <= limit_mm)


def _scale_bar(ax: Axes, dx_mm: float, width_px: int) -> None:
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    length = _nice_length(0.3 * width_px * dx_mm)
    if length <= 0:
        return
    bar = AnchoredSizeBar(
        ax.transData, length / dx_mm, f"{length:g} mm", "lower right", pad=0.3, color="white",
        frameon=False, size_vertical=max(width_px / 100, 0.5), fontproperties={"size": 7},
    )  # fmt: skip
    ax.add_artist(bar)


def write_png(
    images: Sequence[ismrmrd.Image],
    path: str | Path,
    truth: np.ndarray | None = None,
    scores: Sequence[tuple[float, float]] | None = None,
    header: ismrmrdHeader | None = None,
    title: str = "",
) -> Path:
    """An overview PNG: per slice, every frame in a grid, x-t and y-t profiles, scales.

    Parameters
    ----------
    images
        ``ismrmrd.Image`` objects of one reconstruction.
    path
        Output file (parent folders are created).
    truth
        Optional ``(S, T, H, W)`` magnitudes of the ground truth **in the images' units**
        (one per slice of ``images``, same order): adds the truth and ``|error|`` of the middle
        frame and the x-t profiles of the truth and of the error.
    scores
        Optional ``(PSNR dB, SSIM)`` per slice for the panel titles.
    header
        The parsed ISMRMRD header (RR interval for frame times when the time stamps do not
        give them).
    title
        Figure title.

    Returns
    -------
    Path
        The written file.
    """
    import matplotlib

    matplotlib.use("Agg")  # headless
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.ticker import MaxNLocator

    stacks = slice_stacks(images)
    vols = [s.magnitudes() for s in stacks]
    n_s, n_t = len(stacks), max(v.shape[0] for v in vols)
    if truth is not None and (
        len(truth) != n_s or any(t.shape != v.shape for t, v in zip(truth, vols, strict=True))
    ):
        raise ValueError("truth does not match the images' (slices, frames, rows, columns)")
    cols, rows = _grid(n_t)
    side = 2 if truth is not None else 1
    rows_used = max(rows, 3 if truth is not None else 2)
    cell = 1.9 if n_s <= 3 else 1.4  # inches; 190 px at 100 dpi
    width = (cols + 1.3 * side) * cell + 1.2
    height = n_s * (rows_used * cell + 0.5) + (0.4 if title else 0.0)
    fig = plt.figure(figsize=(width, height), layout="constrained")
    if title:
        fig.suptitle(title, fontsize=10)
    subfigs = np.atleast_1d(fig.subfigures(n_s, 1, squeeze=False).ravel())
    vmax = float(np.percentile(np.concatenate([v.ravel() for v in vols]), 99.5)) or 1.0
    rr_ms = rr_interval_ms(header)
    for s, (stack, vol, sub) in enumerate(zip(stacks, vols, subfigs, strict=True)):
        t_len, h, w = vol.shape
        dx, dy = pixel_spacing(stack.images[0])
        timing = frame_timing(stack.images, rr_ms)
        heading = f"slice {stack.slice_index}: {t_len} frames, {h} x {w}"
        if timing.interval_ms:
            heading += f", {timing.interval_ms:.1f} ms/frame"
        if scores is not None:
            heading += f"; PSNR {scores[s][0]:.2f} dB, SSIM {scores[s][1]:.3f} vs truth"
        sub.suptitle(heading, fontsize=9)
        left, right = sub.subfigures(1, 2, width_ratios=[cols, 1.3 * side])
        axes = left.subplots(rows_used, cols, squeeze=False)
        shown = None
        for k, ax in enumerate(axes.ravel()):
            ax.set_axis_off()
            if k >= t_len:
                continue
            shown = ax.imshow(vol[k], cmap="gray", vmin=0, vmax=vmax, interpolation="nearest")
            label = f"frame {k}"
            if timing.times_ms is not None:
                label += f"  {timing.times_ms[k]:.0f} ms"
            ax.set_title(label, fontsize=7)
        axes[0, 0].axhline(h // 2, color="yellow", lw=0.6, ls="--")  # where x-t is taken
        axes[0, 0].axvline(w // 2, color="cyan", lw=0.6, ls="--")  # where y-t is taken
        _scale_bar(axes[0, 0], dx, w)
        left.colorbar(shown, ax=axes, shrink=0.6, label="magnitude (image units)")
        x_mm = ((0 - w // 2 - 0.5) * dx, (w - 1 - w // 2 + 0.5) * dx)
        y_mm = ((0 - h // 2 - 0.5) * dy, (h - 1 - h // 2 + 0.5) * dy)
        t_axis = (t_len - 0.5, -0.5)

        def profile(
            ax: Axes,
            image: np.ndarray,
            name: str,
            extent: tuple[float, float, float, float],
            xlabel: str,
            cmap: str = "gray",
            top: float = vmax,
        ) -> AxesImage:
            im = ax.imshow(image, cmap=cmap, vmin=0, vmax=top, aspect="auto", extent=extent)
            ax.set_title(name, fontsize=7)
            ax.set_xlabel(xlabel, fontsize=7)
            ax.set_ylabel("frame", fontsize=7)
            ax.tick_params(labelsize=6)
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # frames are whole
            return im

        xt, yt = (*x_mm, *t_axis), (*y_mm, *t_axis)
        if truth is None:
            ax_xt, ax_yt = right.subplots(2, 1)
            profile(ax_xt, vol[:, h // 2, :], "x-t (yellow line)", xt, "x (mm)")
            profile(ax_yt, vol[:, :, w // 2], "y-t (cyan line)", yt, "y (mm)")
            continue
        ref = truth[s]
        err = np.abs(vol - ref)
        top_err = vmax / _ERROR_GAIN
        panels = right.subplots(3, 2, squeeze=False)
        mid = t_len // 2
        for ax, image, name, cmap, top in (
            (panels[0, 0], ref[mid], f"truth, frame {mid}", "gray", vmax),
            (panels[0, 1], err[mid], f"|error|, frame {mid}", "inferno", top_err),
        ):
            ax.imshow(image, cmap=cmap, vmin=0, vmax=top, interpolation="nearest")
            ax.set_title(name, fontsize=7)
            ax.set_axis_off()
        profile(panels[1, 0], vol[:, h // 2, :], "x-t recon", xt, "x (mm)")
        profile(panels[1, 1], ref[:, h // 2, :], "x-t truth", xt, "x (mm)")
        err_im = profile(
            panels[2, 0], err[:, h // 2, :], "x-t |error|", xt, "x (mm)", "inferno", top_err
        )
        panels[2, 1].set_axis_off()
        right.colorbar(
            err_im,
            ax=panels[2, 1],
            location="left",
            shrink=0.8,
            label=f"|error| (range 1/{_ERROR_GAIN:g} of images)",
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
