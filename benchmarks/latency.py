"""Per-slice inference latency: PASSNet vs its uniform-SVT ablation vs classical peers.

Every method reconstructs the same slice in the same run, so ratios are comparable even
where absolute CPU times are not. The PASSNet time is split into Conv3d, SVD, FFT and the
rest (data-consistency arithmetic, shrinkage, fusion) with torch.profiler operator self
time, not wall-clock guesses; "roll/cat" is the real/imaginary channel stacking and the
rolls of odd-sized FFTs (even sizes are centred by modulation, see passnet_core/fft.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from passnet_core import bart, baselines, methods
from passnet_core.inference import reconstruct
from passnet_core.masks import make_mask
from passnet_core.model import PASSNet, PASSNetConfig
from passnet_core.operators import encoding
from passnet_core.weights import default_weights_path, read_metadata
from training.acquisition import Sample

Size = tuple[int, int, int, int]

#: (T, H, W, coils) of the issue's three sizes
DEFAULT_SIZES: tuple[Size, ...] = ((16, 128, 128, 1), (20, 128, 128, 8), (30, 192, 156, 15))
#: tiny sizes for the smoke test (``--quick``)
QUICK_SIZES: tuple[Size, ...] = ((4, 24, 20, 1), (4, 24, 20, 3))
#: BART locally-low-rank regularisation, the issue's parameters
BART_LLR_REGULARISER, BART_LLR_ITERS = "L:7:7:0.003", 100
# Columns, in the registry's labels
PASSNET, UNIFORM, LPLUS_S, BART_LLR = (
    methods.label(name) for name in ("passnet", "passnet_uniform", "lplus_s", "bart_llr")
)
METHODS = (PASSNET, UNIFORM, LPLUS_S, BART_LLR)

# torch.profiler operator names (lower case) -> breakdown category, first match wins
_CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Conv3d", ("conv", "mkldnn", "cudnn")),
    ("SVD", ("svd", "gesvd", "eigh")),
    ("FFT", ("fft",)),
    # torch.fft.fftshift is a roll, done by concatenation: the centring of every FFT
    ("roll/cat", ("roll", "cat", "stack")),
)


def make_case(size: Size, seed: int = 0, accel: int = 8) -> Sample:
    """A noise-free phantom cine slice of ``size = (T, H, W, coils)`` with a vds-``accel`` mask,
    normalised as the network expects (:func:`training.acquisition.acquire`).
    """
    from training.acquisition import acquire
    from training.phantom import cine_phantom, coil_sensitivities

    t, h, w, coils = size
    if min(size) < 1:
        raise ValueError(f"size (T, H, W, coils) must be positive, got {size}")
    rng = np.random.default_rng(seed)
    images = torch.from_numpy(cine_phantom(t, h, w, rng=rng)).to(torch.complex64)
    mask = make_mask("vds", accel, t, h, w, seed=seed)
    maps = None
    if coils > 1:
        maps = torch.from_numpy(coil_sensitivities(coils, h, w, rng=rng)).to(torch.complex64)
    return acquire(images, maps, mask, 0.0, rng)


def median_time(fn: Callable[[], object], repeats: int, sync: Callable[[], None]) -> float:
    """Median wall time (s) of ``fn`` over ``repeats`` calls after one warm-up call."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def build_models(n_stages: int, device: torch.device) -> tuple[PASSNet, PASSNet]:
    """PASSNet and its uniform-SVT ablation with the shipped architecture, ``n_stages`` stages.

    Weights do not change the latency, so freshly initialised ones are used; the channel count
    is read from the shipped weights' metadata when they exist.
    """
    config = PASSNetConfig(n_stages=n_stages)
    path = default_weights_path()
    if path.is_file():
        try:
            stored = read_metadata(path).get("config") or {}
            config = PASSNetConfig(**{**stored, "n_stages": n_stages, "shrinkage": "pass"})
        except (ValueError, TypeError):
            pass  # unreadable metadata: the default architecture is what ships anyway
    uniform = PASSNetConfig(**{**config.to_dict(), "shrinkage": "uniform_svt"})
    return PASSNet(config).to(device).eval(), PASSNet(uniform).to(device).eval()


def bart_llr(case: Sample) -> torch.Tensor:
    """BART ``pics`` with locally-low-rank regularisation; returns ``(1, T, H, W)``.

    Single-coil cases use maps of ones.
    """
    k = case.kspace.numpy()
    if case.coil_maps is None:
        k, maps = k[None], np.ones((1, *k.shape[-2:]), np.complex64)
    else:
        maps = case.coil_maps.numpy()
    mask = case.mask.numpy().reshape(k.shape[1:])
    return torch.from_numpy(bart.pics(k, mask, maps, BART_LLR_REGULARISER, BART_LLR_ITERS))[None]


def stage_breakdown(model: PASSNet, case: Sample, device: torch.device) -> dict[str, float]:
    """Fraction of operator self time per category (Conv3d, SVD, FFT, other) in one forward."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    args = model_args(case, device)
    with torch.inference_mode(), profile(activities=activities) as prof:
        model(*args)
    totals = {name: 0.0 for name, _ in _CATEGORIES} | {"other": 0.0}
    attr = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    for event in prof.key_averages():
        t = float(getattr(event, attr, 0.0) or 0.0)
        name = event.key.lower()
        category = next((c for c, needles in _CATEGORIES if any(n in name for n in needles)), None)
        totals[category or "other"] += t
    total = sum(totals.values()) or 1.0
    return {k: v / total for k, v in totals.items()}


def model_args(case: Sample, device: torch.device) -> tuple:
    """``(kspace, mask, coil_maps)`` of ``case`` on ``device`` for ``PASSNet.forward``."""
    kspace, mask, maps = case.to(device).batched()
    return kspace, mask, maps


def measure_size(
    size: Size,
    device: torch.device,
    repeats: int = 1,
    n_stages: int = 15,
    with_bart: bool = True,
) -> dict:
    """Latency (median seconds) of every method on one slice of ``size``, + PASSNet breakdown.

    Returns
    -------
    dict
        ``size``, ``n_stages``, one entry per method in :data:`METHODS` (seconds, or a string
        saying why it did not run) and ``breakdown`` (category -> fraction of PASSNet time).
    """
    case = make_case(size)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    passnet, uniform = build_models(n_stages, device)
    args = model_args(case, device)

    def network(model: PASSNet) -> Callable[[], object]:
        return lambda: reconstruct(*case.batched(), model, device)

    row: dict = {"size": size, "n_stages": n_stages}
    row[PASSNET] = median_time(network(passnet), repeats, sync)
    row[UNIFORM] = median_time(network(uniform), repeats, sync)

    def lplus_s() -> torch.Tensor:
        kspace, op = encoding(*args)  # validation is part of every method's time
        return baselines.lplus_s(op, kspace)

    row[LPLUS_S] = median_time(lplus_s, repeats, sync)
    if not with_bart:
        row[BART_LLR] = "not requested"
    elif not bart.available():
        row[BART_LLR] = "bart not installed"
    else:
        row[BART_LLR] = median_time(lambda: bart_llr(case), repeats, lambda: None)
    row["breakdown"] = stage_breakdown(passnet, case, device)
    return row


def latency_markdown(rows: list[dict]) -> str:
    """Tables: seconds per slice with the ratio to BART LLR, and the PASSNet time breakdown."""
    from benchmarks.report import markdown_table

    def cell(row: dict, method: str) -> str:
        value, ref = row[method], row.get(BART_LLR)
        if isinstance(value, str):
            return value
        ratio = f" ({value / ref:.2f}x)" if isinstance(ref, float) and ref > 0 else ""
        return f"{value:.2f}{ratio}"

    labelled = [("x".join(map(str, r["size"])), r) for r in rows]
    table = markdown_table(
        ["T x H x W x coils", "stages", *(f"{m} s (/ BART)" for m in METHODS)],
        [[s, r["n_stages"], *(cell(r, m) for m in METHODS)] for s, r in labelled],
    )
    categories = [name for name, _ in _CATEGORIES] + ["other"]
    breakdown = markdown_table(
        ["T x H x W x coils", *(f"{c} %" for c in categories)],
        [[s, *(f"{100 * r['breakdown'][c]:.0f}" for c in categories)] for s, r in labelled],
    )
    return (
        "Median seconds per slice (ratio to BART LLR in brackets; target PASSNet / BART LLR "
        "<= 1.0 on CPU).\n\n" + table + "\n\nPASSNet operator self time by category "
        "(torch.profiler; 'other' = data-consistency arithmetic, shrinkage, fusion):\n\n"
        + breakdown
        + "\n"
    )
