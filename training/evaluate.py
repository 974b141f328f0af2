"""``passnet evaluate``: PASSNet against classical methods on a held-out synthetic set.

Cases are phantom cines from a seed stream no training run uses; every (case, mask) pair gets
a fixed mask seeded by :func:`~passnet_core.masks.seed_from_name`, so runs are comparable.
k-space is normalised as the network expects (``max |A^H d| = 1``, docs/design.md) and every
method sees the same data. Metrics follow NOTES.md section 3 (per volume, normalised by
``max |ground truth|``; PSNR on complex images for single-coil, magnitudes for multi-coil).

Output: a Markdown table (printed, ``OUT/evaluation.md``), the raw numbers
(``OUT/evaluation.json``) and one comparison figure per mask for the first case
(``OUT/fig_<mask>.png``, see :mod:`training.figures`).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from benchmarks.report import provenance
from passnet_core import bart, baselines, metrics
from passnet_core.fft import fft2c
from passnet_core.inference import reconstruct
from passnet_core.masks import make_mask, parse_mask_name, seed_from_name
from passnet_core.weights import ablation_weights_path, default_weights_path, load_weights
from training.data import SyntheticCines
from training.figures import comparison_figure

log = logging.getLogger("passnet.evaluate")

EVAL_SEED = 7_000_001  # held out: training uses seeds 0.. and 1_000_000.. (validation)
DEFAULT_MASKS = ("radial-8", "radial-16", "vds-8", "vds-10")
METHODS = ("zero-filled", "lplus-s", "bart-llr", "bart-tv", "passnet-uniform", "passnet")
BART_ARGS = {
    "bart-llr": ["-R", "L:7:7:0.003", "-i", "100"],
    "bart-tv": ["-R", "T:1024:0:0.03", "-i", "100"],
}

Recon = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


@dataclass
class MethodResult:
    """Scores of one method: per-mask lists, or the reason it did not run."""

    name: str
    skipped: str | None = None
    psnr: dict[str, list[float]] = field(default_factory=dict)
    ssim: dict[str, list[float]] = field(default_factory=dict)
    seconds: list[float] = field(default_factory=list)


# --------------------------------------------------------------------------- methods


def _bart_pics(args: Sequence[str]) -> Recon:
    """``bart pics`` on one volume; BART axes: 0 readout (W), 1 phase (H), 3 coil, 10 time."""

    def run(kspace: torch.Tensor, mask: torch.Tensor, maps: torch.Tensor | None) -> torch.Tensor:
        k = kspace[0].numpy()
        if maps is None:
            k, sens = k[None], np.ones((1, *k.shape[-2:]), np.complex64)
        else:
            sens = maps[0].numpy()
        c, t, h, w = k.shape
        k_b = np.zeros((w, h, 1, c) + (1,) * 6 + (t,), np.complex64)
        k_b[:, :, 0, :, 0, 0, 0, 0, 0, 0, :] = k.transpose(3, 2, 0, 1)
        pattern = np.zeros((w, h) + (1,) * 8 + (t,), np.complex64)
        pattern[:, :, 0, 0, 0, 0, 0, 0, 0, 0, :] = mask.numpy().transpose(2, 1, 0)
        sens_b = sens.transpose(2, 1, 0)[:, :, None, :]
        out = bart.run_bart(
            ["pics", "-d0", "-S", *args, "-p", "pattern", "kspace", "sens", "image"],
            {"kspace": k_b, "pattern": pattern, "sens": sens_b},
            ["image"],
        )["image"]
        image = out.reshape(w, h, t).transpose(2, 1, 0)
        return torch.from_numpy(np.ascontiguousarray(image))[None]

    return run


def _passnet(path: Path, device: str) -> Recon:
    model = load_weights(path, map_location="cpu")

    def run(kspace: torch.Tensor, mask: torch.Tensor, maps: torch.Tensor | None) -> torch.Tensor:
        return reconstruct(kspace, mask, maps, model=model, device=device)

    return run


def _passnet_or_reason(given: Path | None, shipped: Path, device: str) -> Recon | str:
    """PASSNet with ``given`` weights, else the ``shipped`` ones; why not, if neither exists."""
    path = given if given is not None else shipped
    return _passnet(path, device) if path.is_file() else f"no weights at {path}"


def build_methods(
    names: Sequence[str], weights: Path | None, weights_uniform: Path | None, device: str
) -> dict[str, Recon | str]:
    """Method name -> reconstruction function, or a string saying why it is skipped."""
    out: dict[str, Recon | str] = {}
    for name in names:
        if name == "zero-filled":
            out[name] = baselines.zero_filled
        elif name == "lplus-s":
            out[name] = baselines.lplus_s
        elif name in BART_ARGS:
            out[name] = _bart_pics(BART_ARGS[name]) if bart.available() else "bart not installed"
        elif name == "passnet-uniform":
            out[name] = _passnet_or_reason(weights_uniform, ablation_weights_path(), device)
        elif name == "passnet":
            out[name] = _passnet_or_reason(weights, default_weights_path(), device)
    return out


# --------------------------------------------------------------------------- evaluation


def _case_data(
    target: np.ndarray, maps: np.ndarray | None, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Undersampled k-space ``(1, [C,] T, H, W)`` normalised to ``max |A^H d| = 1``."""
    x = torch.from_numpy(target)[None]
    maps_t = None if maps is None else torch.from_numpy(maps)[None]
    coil_images = x if maps_t is None else maps_t[:, :, None] * x[:, None]
    kspace = fft2c(coil_images) * mask
    scale = baselines.zero_filled(kspace, mask, maps_t).abs().max().clamp_min(1e-12)
    return kspace / scale, maps_t, x[0] / scale


def evaluate(
    methods: dict[str, Recon | str],
    masks: Sequence[str],
    n_cases: int,
    size: tuple[int, int, int],
    coils: int,
    out_dir: Path,
) -> dict[str, MethodResult]:
    """Run every method on every (case, mask); write one figure per mask for case 0."""
    t, h, w = size
    cases = SyntheticCines(
        n_cases,
        seed=EVAL_SEED,
        coil_mode="multi" if coils > 1 else "single",
        n_coils=max(coils, 1),
        frames=t,
        matrix=(h, w),
    )
    results = {
        name: MethodResult(name, skipped=fn if isinstance(fn, str) else None)
        for name, fn in methods.items()
    }
    for i in range(n_cases):
        case = cases[i]
        for mask_name in masks:
            kind, accel = parse_mask_name(mask_name)
            mask = make_mask(kind, accel, t, h, w, seed=seed_from_name(f"{case.name}/{mask_name}"))
            kspace, maps, target = _case_data(case.target, case.coil_maps, mask)
            shown: dict[str, np.ndarray] = {}
            for name, fn in methods.items():
                if isinstance(fn, str):
                    continue
                start = time.perf_counter()
                recon = fn(kspace, mask, maps)[0].to(torch.complex64).cpu()
                results[name].seconds.append(time.perf_counter() - start)
                results[name].psnr.setdefault(mask_name, []).append(
                    float(metrics.psnr(recon, target, magnitude=coils > 1))
                )
                results[name].ssim.setdefault(mask_name, []).append(
                    float(metrics.ssim(recon, target))
                )
                shown[name] = recon.numpy()
            if i == 0 and shown:
                comparison_figure(
                    target.numpy(),
                    shown,
                    mask.numpy(),
                    out_dir / f"fig_{mask_name}.png",
                    title=f"{case.name}, {mask_name}",
                    magnitude_psnr=coils > 1,
                )
            log.info("case %d/%d %s done", i + 1, n_cases, mask_name)
    return results


def _cell(values: list[float], digits: int) -> str:
    return f"{np.mean(values):.{digits}f} ± {np.std(values):.{digits}f}"


def markdown_table(
    results: dict[str, MethodResult], masks: Sequence[str], n_cases: int, size, coils: int
) -> str:
    """The results as one Markdown table (PSNR dB / SSIM, mean ± std over cases)."""
    convention = "magnitude" if coils > 1 else "complex"
    lines = [
        f"# PASSNet evaluation: {n_cases} synthetic case(s) of {'x'.join(map(str, size))} "
        "(T x H x W), "
        f"{'single-coil' if coils <= 1 else f'{coils} coils'}",
        "",
        f"PSNR (dB, {convention} images) / SSIM, mean ± std over cases; each volume normalised "
        "by max |ground truth|.",
        "",
        "| method | " + " | ".join(masks) + " | time / volume (s) |",
        "| --- | " + " | ".join("---" for _ in masks) + " | --- |",
    ]
    for r in results.values():
        if r.skipped:
            cells = [f"skipped: {r.skipped}"] + ["" for _ in masks[1:]] + ["-"]
        else:
            cells = [f"{_cell(r.psnr[m], 2)} / {_cell(r.ssim[m], 3)}" for m in masks]
            cells.append(f"{np.mean(r.seconds):.2f}")
        lines.append(f"| {r.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- CLI


def _parse_list(text: str, allowed: Sequence[str] | None, what: str) -> list[str]:
    items = [s.strip() for s in text.split(",") if s.strip()]
    if not items:
        raise ValueError(f"--{what}: empty list")
    for item in items:
        if allowed is not None and item not in allowed:
            raise ValueError(f"--{what}: unknown {item!r} (choose from {', '.join(allowed)})")
    return items


def _parse_size(text: str) -> tuple[int, int, int]:
    try:
        t, h, w = (int(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--size: expected T,H,W integers, got {text!r}") from None
    if t < 2 or h < 8 or w < 8:
        raise ValueError(f"--size: need T >= 2 and H, W >= 8, got {text!r}")
    return t, h, w


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``passnet evaluate``."""
    parser.add_argument("--weights", type=Path, help="PASSNet (PASS) weights; default: shipped")
    parser.add_argument(
        "--weights-uniform",
        type=Path,
        help="uniform-SVT ablation weights; default: shipped ablation",
    )
    parser.add_argument("--n-cases", type=int, default=4, help="held-out cases (default 4)")
    parser.add_argument("--out", type=Path, default=Path("evaluation"), help="output folder")
    parser.add_argument("--masks", default=",".join(DEFAULT_MASKS), help="comma-separated masks")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated methods")
    parser.add_argument("--size", default="16,128,128", help="T,H,W of the cases")
    parser.add_argument(
        "--coils",
        type=int,
        default=8,
        help="coils per case (default 8, as the shipped weights were trained; 1 = single-coil, "
        "the paper's setting)",
    )
    parser.add_argument("--device", default="auto", help="device for PASSNet")


def run(args: argparse.Namespace) -> int:
    """Entry point of ``passnet evaluate``."""
    try:
        masks = _parse_list(args.masks, None, "masks")
        for m in masks:
            parse_mask_name(m)
        names = _parse_list(args.methods, METHODS, "methods")
        size = _parse_size(args.size)
        if args.n_cases < 1 or args.coils < 1:
            raise ValueError("--n-cases and --coils must be >= 1")
        for flag, path in (
            ("--weights", args.weights),
            ("--weights-uniform", args.weights_uniform),
        ):
            if path is not None and not Path(path).is_file():
                raise ValueError(f"{flag}: no file {path}")
    except ValueError as err:
        log.error("%s", err)
        return 2
    methods = build_methods(names, args.weights, args.weights_uniform, args.device)
    for name, fn in methods.items():
        if isinstance(fn, str):
            print(f"{name}: skipped ({fn})")
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = evaluate(methods, masks, args.n_cases, size, args.coils, out_dir)
    table = markdown_table(results, masks, args.n_cases, size, args.coils)
    print(table)
    # command and machine under the table, so it can be quoted (``passnet bench --quality-from``)
    (out_dir / "evaluation.md").write_text(f"{table}\n{provenance()}")
    raw = {
        "n_cases": args.n_cases,
        "size": list(size),
        "coils": args.coils,
        "masks": masks,
        "eval_seed": EVAL_SEED,
        "methods": {
            name: {"skipped": r.skipped, "psnr": r.psnr, "ssim": r.ssim, "seconds": r.seconds}
            for name, r in results.items()
        },
    }
    (out_dir / "evaluation.json").write_text(json.dumps(raw, indent=1))
    return 0
