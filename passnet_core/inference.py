"""Run a trained PASSNet on undersampled cine k-space: validation, normalisation, batching.

:func:`reconstruct` is the one entry point the gadgets, CLI and benchmarks use. It checks the
inputs (:func:`passnet_core.operators.validate_inputs`: ``ValueError`` before any heavy work),
scales each volume by ``s = max |A^H d|`` (``NORMALISATION = "max_abs_zero_filled"``, the
convention the weights were trained with), runs the network under ``torch.inference_mode`` one
slice (batch item) at a time, so peak memory is that of one slice, and undoes the scaling.
"""

from __future__ import annotations

import threading
from pathlib import Path

import torch

from passnet_core.model import PASSNet
from passnet_core.operators import ArrayLike, EncodingOp, as_tensor, normalise, validate_inputs
from passnet_core.weights import default_weights_path, load_weights

__all__ = ["cached_model", "reconstruct", "resolve_device", "validate_inputs"]

_MODEL_CACHE: dict[tuple[str, str], PASSNet] = {}
_MODEL_CACHE_LOCK = threading.Lock()  # server sessions run in threads: load each model once


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; other values as ``torch.device``."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"unknown device {device!r}: {exc}") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return resolved


def cached_model(path: str | Path | None = None, device: str | torch.device = "auto") -> PASSNet:
    """Load weights once per (file, device) and reuse the model (default: shipped weights)."""
    path = Path(path) if path is not None else default_weights_path()
    dev = resolve_device(device)
    key = (str(path.resolve()), str(dev))
    with _MODEL_CACHE_LOCK:
        if key not in _MODEL_CACHE:
            _MODEL_CACHE[key] = load_weights(path, map_location=dev)
        return _MODEL_CACHE[key]


def reconstruct(
    kspace: ArrayLike,
    mask: ArrayLike,
    coil_maps: ArrayLike | None = None,
    model: PASSNet | str | Path | None = None,
    device: str | torch.device = "auto",
) -> torch.Tensor:
    """Reconstruct cine images from undersampled k-space with PASSNet.

    Parameters
    ----------
    kspace, mask, coil_maps
        As in :func:`passnet_core.operators.validate_inputs` (torch tensors or numpy arrays).
    model
        A :class:`PASSNet` (moved to ``device`` in place), a weights file, or ``None`` for the
        shipped default weights. Loaded models are cached per (file, device).
    device
        ``"auto"`` (CUDA if available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...

    Returns
    -------
    torch.Tensor
        complex64 ``(B, T, H, W)`` on the CPU, in the scale of the input data.
    """
    validate_inputs(kspace, mask, coil_maps)  # the one validation of this request
    dev = resolve_device(device)
    k = as_tensor(kspace, "kspace").to(torch.complex64)
    m = as_tensor(mask, "mask").to(torch.float32)
    maps = None if coil_maps is None else as_tensor(coil_maps, "coil_maps").to(torch.complex64)
    if isinstance(model, PASSNet):
        net = model.to(dev)
    else:
        net = cached_model(model, dev)

    b = k.shape[0]
    out = torch.zeros((b, *k.shape[-3:]), dtype=torch.complex64)
    with torch.inference_mode():
        for start in range(b):  # slices are independent: one at a time bounds the memory
            items = slice(start, start + 1)
            m_b = (m[items] if m.ndim == 4 and m.shape[0] == b else m).to(dev)
            op_b = EncodingOp(m_b, None if maps is None else maps[items].to(dev))
            units = normalise(op_b, k[items].to(dev))
            x = units.restore(net.unroll(op_b, units.kspace))
            out[items] = x.to("cpu", torch.complex64)
    return out
