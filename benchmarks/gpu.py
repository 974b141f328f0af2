"""GPU options for PASSNet: SVD drivers, Gram-matrix ``eigh``, CPU offload, torch.compile,
half-precision convolutions and peak memory. Runs only where CUDA is available.

The SVD candidates are timed on the network's own matrices: one Casorati matrix per slice,
``(H*W, T)`` complex (pixels x frames), the shape PASSNet's low-rank branch decomposes.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch

from benchmarks.latency import Size, build_models, make_case, median_time, model_args

SKIPPED = "no CUDA device: skipped"


def cuda_available() -> bool:
    """True when torch sees a CUDA device."""
    return torch.cuda.is_available()


def _svd_candidates(x: torch.Tensor) -> dict[str, Callable[[], object]]:
    """Ways of getting the singular values/vectors of the batched ``(M, T)`` matrices ``x``."""

    def driver(name: str) -> Callable[[], object]:
        return lambda: torch.linalg.svd(x, full_matrices=False, driver=name)

    def gram_eigh() -> object:
        # T x T Gram matrix: eigenvalues are sigma^2, eigenvectors the right singular vectors
        evals, v = torch.linalg.eigh(x.mH @ x)
        return evals.clamp(min=0).sqrt(), v

    def cpu_offload() -> object:
        u, s, vh = torch.linalg.svd(x.cpu(), full_matrices=False)
        return u.to(x.device), s.to(x.device), vh.to(x.device)

    return {
        "svd gesvdj": driver("gesvdj"),
        "svd gesvda": driver("gesvda"),
        "svd gesvd": driver("gesvd"),
        "Gram eigh": gram_eigh,
        "CPU offload svd": cpu_offload,
    }


def half_convolutions(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` whose convolutions compute in float16 (the rest stays float32).

    Autocast cannot be used: it would also halve the complex tensors the SVD needs in full
    precision. Each convolution casts its input to half and its output back to float.
    """
    half = copy.deepcopy(model)
    for module in half.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Conv3d)):
            module.half()
            module.register_forward_pre_hook(lambda _m, inputs: tuple(x.half() for x in inputs))
            module.register_forward_hook(lambda _m, _inputs, output: output.float())
    return half


def gpu_benchmark(
    size: Size = (30, 192, 156, 15), n_stages: int = 15, repeats: int = 3, device: str = "cuda"
) -> dict[str, float | str]:
    """Seconds per variant on the first CUDA device (or a string saying why it failed).

    Variants: the SVD candidates above, PASSNet eager fp32, ``torch.compile``, half-precision
    convolutions (:func:`half_convolutions`), and the peak memory of the eager run (GiB).
    ``device="cpu"`` runs the same code for checking it where no GPU exists.
    """
    dev = torch.device(device)
    on_gpu = dev.type == "cuda"
    if on_gpu and not cuda_available():
        return {"status": SKIPPED}
    sync = torch.cuda.synchronize if on_gpu else (lambda: None)
    t, h, w, _ = size
    out: dict[str, float | str] = {
        "device": torch.cuda.get_device_name(dev) if on_gpu else str(dev)
    }
    casorati = torch.randn(1, h * w, t, dtype=torch.complex64, device=dev)
    for name, fn in _svd_candidates(casorati).items():
        try:
            out[name] = median_time(fn, repeats, sync)
        except Exception as exc:  # a driver missing from this build must not stop the rest
            out[name] = f"failed: {type(exc).__name__}: {exc}"[:120]
    case = make_case(size)  # already normalised: the network is called directly
    args = model_args(case, dev)
    model, _ = build_models(n_stages, dev)

    def run(net: Callable) -> Callable[[], object]:
        def call() -> object:
            with torch.inference_mode():
                return net(*args)

        return call

    if on_gpu:
        torch.cuda.reset_peak_memory_stats(dev)
    out["PASSNet eager fp32"] = median_time(run(model), repeats, sync)
    if on_gpu:
        out["peak memory eager (GiB)"] = torch.cuda.max_memory_allocated(dev) / 2**30
    variants = {
        "PASSNet fp16 convolutions": lambda: run(half_convolutions(model)),
        "PASSNet torch.compile": lambda: run(torch.compile(model)),
    }
    for name, make in variants.items():
        try:
            out[name] = median_time(make(), repeats, sync)
        except Exception as exc:  # e.g. complex ops without a half kernel, no compiler
            out[name] = f"failed: {type(exc).__name__}: {exc}"[:120]
    return out


def gpu_markdown(result: dict[str, float | str], size: Size) -> str:
    """The GPU results as a Markdown table, or the skip notice."""
    from benchmarks.report import markdown_table

    if result.get("status") == SKIPPED:
        return SKIPPED + "\n"
    rows = [[k, f"{v:.3f}" if isinstance(v, float) else v] for k, v in result.items()]
    return (
        f"Slice {'x'.join(map(str, size))} (T x H x W x coils); seconds unless stated "
        "(target: PASSNet <= 0.25 s per slice).\n\n"
        + markdown_table(["variant", "value"], rows)
        + "\n"
    )
