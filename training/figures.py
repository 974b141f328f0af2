"""Comparison figures in the style of the paper's Fig. 3, written as PNG with matplotlib (Agg).

One column per method (ground truth first). Rows: a frame, a zoom on the centre of that frame,
the error map (the sampling mask under the ground truth), the x-t profile through the centre
line, and the x-t error (the ky-t sampling pattern under the ground truth). PSNR in the titles.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: no display on servers and CI

import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first
import numpy as np  # noqa: E402

from passnet_core import metrics  # noqa: E402

ERROR_GAIN = 5.0  # error maps are shown 5x brighter than the images


def comparison_figure(
    target: np.ndarray,
    recons: Mapping[str, np.ndarray],
    mask: np.ndarray,
    path: str | Path,
    frame: int | None = None,
    title: str = "",
    magnitude_psnr: bool = False,
) -> Path:
    """Write a method comparison figure.

    Parameters
    ----------
    target
        Complex ground truth ``(T, H, W)``.
    recons
        Method name -> complex reconstruction ``(T, H, W)`` in the same scale as ``target``.
    mask
        Sampling mask ``(T, H, W)``.
    path
        Output PNG file (parent folders are created).
    frame
        Frame to show (default: the middle one).
    title
        Figure title.
    magnitude_psnr
        Compare magnitudes in the PSNR titles (multi-coil convention).

    Returns
    -------
    Path
        The written file.
    """
    target = np.asarray(target)
    mask = np.asarray(mask, dtype=np.float32)
    if target.ndim != 3 or mask.shape != target.shape:
        raise ValueError(f"target {target.shape} and mask {mask.shape} must both be (T, H, W)")
    for name, recon in recons.items():
        if np.shape(recon) != target.shape:
            raise ValueError(f"{name}: reconstruction {np.shape(recon)} != target {target.shape}")
    t, h, w = target.shape
    frame = t // 2 if frame is None else frame
    if not 0 <= frame < t:
        raise ValueError(f"frame {frame} outside 0..{t - 1}")
    peak = float(np.abs(target).max()) or 1.0
    row = h // 2  # x-t profile through the image centre
    zy, zx = slice(h // 4, h - h // 4), slice(w // 4, w - w // 4)

    columns = [("ground truth", target)] + list(recons.items())
    fig, axes = plt.subplots(5, len(columns), figsize=(2.2 * len(columns), 10.5), squeeze=False)
    for c, (name, image) in enumerate(columns):
        image = np.asarray(image)
        mag = np.abs(image) / peak
        err = ERROR_GAIN * np.abs(image - target) / peak
        if c == 0:
            label = name
            panels = [
                mag[frame],
                mag[frame][zy, zx],
                mask[frame],
                mag[:, row, :],
                mask[:, :, w // 2],
            ]
        else:
            score = float(metrics.psnr(image, target, magnitude=magnitude_psnr))
            label = f"{name}\n{score:.2f} dB"
            panels = [mag[frame], mag[frame][zy, zx], err[frame], mag[:, row, :], err[:, row, :]]
        for r, panel in enumerate(panels):
            ax = axes[r, c]
            cmap = "inferno" if (r in (2, 4) and c > 0) else "gray"
            ax.imshow(panel, cmap=cmap, vmin=0, vmax=1, aspect="auto" if r >= 3 else "equal")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0, c].set_title(label, fontsize=9)
    for r, name in enumerate(
        ("frame", "zoom", f"error x{ERROR_GAIN:g} / mask", "x-t", "x-t error")
    ):
        axes[r, 0].set_ylabel(name, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def validation_curves(histories: Mapping[str, list[dict]], path: str | Path) -> Path:
    """PNG of validation PSNR per epoch for several runs (``history.json`` of ``passnet train``).

    Parameters
    ----------
    histories
        Run name -> the list of per-epoch records (``val_psnr``, ``zf_psnr``, ``epoch``).
    path
        Output PNG file (parent folders are created).

    Returns
    -------
    Path
        The written file.
    """
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, history in histories.items():
        epochs = [h["epoch"] + 1 for h in history]
        ax.plot(epochs, [h["val_psnr"] for h in history], "o-", label=name)
    first = next(iter(histories.values()))
    lowest = min((h["val_psnr"] for run in histories.values() for h in run), default=0.0)
    if first and first[0]["zf_psnr"] > lowest - 3:
        ax.axhline(first[0]["zf_psnr"], color="grey", ls=":", label="zero-filled")
    elif first:  # far below the curves: a line there would flatten them
        ax.set_title(f"zero-filled on the same crops: {first[0]['zf_psnr']:.2f} dB", fontsize=9)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation PSNR (dB, magnitude)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _read_histories(specs: list[str]) -> dict[str, list[dict]]:
    """``LABEL=PATH`` (a run folder or its ``history.json``) or a JSON of ``{label: history}``."""
    import json

    histories: dict[str, list[dict]] = {}
    for spec in specs:
        label, sep, where = spec.partition("=")
        path = Path(where if sep else spec)
        if path.is_dir():
            path = path / "history.json"
        data = json.loads(path.read_text())
        if sep:
            histories[label] = data
        elif isinstance(data, dict):
            histories.update(data)
        else:
            raise SystemExit(f"{spec}: give LABEL=PATH for a single run's history")
    return histories


def main(argv: list[str] | None = None) -> int:
    """``python -m training.figures OUT.png RUN [RUN ...]``: validation curves of training runs.

    Each ``RUN`` is ``LABEL=PATH`` (a ``passnet train`` run folder or its ``history.json``) or
    a JSON file of ``{label: history}`` such as the one this writes beside ``OUT.png``
    (``OUT.json``), so a figure can be redrawn after the run folders are gone.
    """
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="python -m training.figures", description=main.__doc__)
    parser.add_argument("out", type=Path, help="output PNG")
    parser.add_argument("runs", nargs="+", help="LABEL=RUN_DIR_OR_HISTORY_JSON, or a JSON")
    args = parser.parse_args(argv)
    histories = _read_histories(args.runs)
    png = validation_curves(histories, args.out)
    sidecar = args.out.with_suffix(".json")
    sidecar.write_text(json.dumps(histories, indent=1) + "\n")
    print(f"wrote {png} and {sidecar}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
