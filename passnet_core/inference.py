"""Run a trained PASSNet on undersampled cine k-space: validation, normalisation, batching.

:func:`reconstruct` is the one entry point the gadgets, CLI and benchmarks use. It checks the
inputs (``ValueError`` before any heavy work), scales each volume by ``s = max |A^H d|``
(``NORMALISATION = "max_abs_zero_filled"``, the convention the weights were trained with),
runs the network under ``torch.inference_mode`` in slice batches, and undoes the scaling.

Memory: slices (the batch axis) are independent, so ``slice_batch`` only changes peak memory,
not the result. The network mixes frames (3x3x3 convolutions over ``T``; the per-frame SVD
acts on ``H x W`` only), so ``frame_chunk`` — reconstructing overlapping windows of frames and
keeping each window's centre — is an approximation, useful only when a full cine does not fit.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import torch

from passnet_core.model import PASSNet
from passnet_core.operators import EncodingOp
from passnet_core.weights import default_weights_path, load_weights

ArrayLike = torch.Tensor | np.ndarray

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


def validate_inputs(kspace: ArrayLike, mask: ArrayLike, coil_maps: ArrayLike | None = None) -> None:
    """Check shapes, dtypes and values of a reconstruction request.

    Parameters
    ----------
    kspace
        Complex ``(B, T, H, W)`` (single-coil, ``coil_maps=None``) or ``(B, C, T, H, W)``.
    mask
        Real 0/1 ``(T, H, W)`` or ``(B, T, H, W)`` (``B`` equal to the k-space's or 1).
    coil_maps
        Complex ``(B, C, H, W)`` for multi-coil k-space, else ``None``.

    Raises
    ------
    ValueError
        Naming the first problem found.
    """
    k = _as_tensor(kspace, "kspace")
    m = _as_tensor(mask, "mask")
    if not torch.is_complex(k):
        raise ValueError(f"kspace must be complex, got dtype {k.dtype}")
    if coil_maps is None and k.ndim != 4:
        raise ValueError(
            f"single-coil kspace must be (B, T, H, W), got shape {tuple(k.shape)}"
            + ("; multi-coil k-space needs coil_maps" if k.ndim == 5 else "")
        )
    if coil_maps is not None and k.ndim != 5:
        raise ValueError(
            f"with coil_maps, kspace must be multi-coil (B, C, T, H, W), got {tuple(k.shape)}"
        )
    if any(n == 0 for n in k.shape):
        raise ValueError(f"kspace has an empty axis: shape {tuple(k.shape)}")
    b, (t, h, w) = k.shape[0], tuple(k.shape[-3:])
    if torch.is_complex(m):
        raise ValueError("mask must be real (0/1), not complex")
    if m.ndim not in (3, 4) or tuple(m.shape[-3:]) != (t, h, w):
        raise ValueError(
            f"mask of shape {tuple(m.shape)} does not broadcast to k-space frames "
            f"(T, H, W) = {(t, h, w)}; expected (T, H, W) or (B, T, H, W)"
        )
    if m.ndim == 4 and m.shape[0] not in (1, b):
        raise ValueError(f"mask batch size {m.shape[0]} does not match k-space batch size {b}")
    mf = m.to(torch.float32)
    if not torch.isfinite(mf).all() or not ((mf == 0) | (mf == 1)).all():
        raise ValueError("mask values must be 0 or 1")
    if not mf.any():
        raise ValueError("mask is empty: no k-space sample is acquired")
    if not torch.isfinite(torch.view_as_real(k)).all():
        raise ValueError("kspace contains NaN or inf")
    if coil_maps is not None:
        c = _as_tensor(coil_maps, "coil_maps")
        expected = (b, k.shape[1], h, w)
        if not torch.is_complex(c) or tuple(c.shape) != expected:
            raise ValueError(
                f"coil_maps must be complex (B, C, H, W) = {expected}, "
                f"got {tuple(c.shape)} {c.dtype}"
            )
        if not torch.isfinite(torch.view_as_real(c)).all():
            raise ValueError("coil_maps contain NaN or inf")


def reconstruct(
    kspace: ArrayLike,
    mask: ArrayLike,
    coil_maps: ArrayLike | None = None,
    model: PASSNet | str | Path | None = None,
    device: str | torch.device = "auto",
    frame_chunk: int | None = None,
    slice_batch: int = 1,
) -> torch.Tensor:
    """Reconstruct cine images from undersampled k-space with PASSNet.

    Parameters
    ----------
    kspace, mask, coil_maps
        As in :func:`validate_inputs` (torch tensors or numpy arrays).
    model
        A :class:`PASSNet` (moved to ``device`` in place), a weights file, or ``None`` for the
        shipped default weights. Loaded models are cached per (file, device).
    device
        ``"auto"`` (CUDA if available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
    frame_chunk
        If set and smaller than ``T``: reconstruct overlapping windows of this many frames and
        stitch their centres. Approximate (the network mixes frames); saves memory.
    slice_batch
        Slices (batch items) per network call; does not change the result.

    Returns
    -------
    torch.Tensor
        complex64 ``(B, T, H, W)`` on the CPU, in the scale of the input data.
    """
    validate_inputs(kspace, mask, coil_maps)
    if isinstance(slice_batch, bool) or not isinstance(slice_batch, int) or slice_batch < 1:
        raise ValueError(f"slice_batch must be a positive integer, got {slice_batch!r}")
    if frame_chunk is not None and (
        isinstance(frame_chunk, bool) or not isinstance(frame_chunk, int) or frame_chunk < 1
    ):
        raise ValueError(f"frame_chunk must be a positive integer or None, got {frame_chunk!r}")
    dev = resolve_device(device)
    k = _as_tensor(kspace, "kspace").to(torch.complex64)
    m = _as_tensor(mask, "mask").to(torch.float32)
    maps = None if coil_maps is None else _as_tensor(coil_maps, "coil_maps").to(torch.complex64)
    if isinstance(model, PASSNet):
        net = model.to(dev)
    else:
        net = cached_model(model, dev)

    b, t = k.shape[0], k.shape[-3]
    out = torch.zeros((b, *k.shape[-3:]), dtype=torch.complex64)
    with torch.inference_mode():
        for start in range(0, b, slice_batch):
            items = slice(start, min(start + slice_batch, b))
            k_b = k[items].to(dev)
            m_b = (m[items] if m.ndim == 4 and m.shape[0] == b else m).to(dev)
            maps_b = None if maps is None else maps[items].to(dev)
            scale = _zero_filled_scale(k_b, m_b, maps_b)  # (b,) per-volume normalisation
            safe = torch.where(scale > 0, scale, torch.ones_like(scale))
            view = (-1,) + (1,) * (k_b.ndim - 1)
            k_b = k_b / safe.view(view)
            if frame_chunk is None or frame_chunk >= t:
                x = net(k_b, m_b, maps_b)
            else:
                x = _run_frame_windows(net, k_b, m_b, maps_b, frame_chunk)
            x = x * scale.view(-1, 1, 1, 1)
            out[items] = x.to("cpu", torch.complex64)
    return out


# --------------------------------------------------------------------------- internals


def _as_tensor(x: ArrayLike, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x))
    raise ValueError(f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}")


def _zero_filled_scale(
    kspace: torch.Tensor, mask: torch.Tensor, coil_maps: torch.Tensor | None
) -> torch.Tensor:
    """``max |A^H d|`` per batch item (0 for all-zero data)."""
    x0 = EncodingOp(mask, coil_maps).adjoint(kspace)
    return x0.abs().flatten(1).amax(dim=1)


def frame_windows(n_frames: int, chunk: int) -> list[tuple[int, int, int, int]]:
    """Overlapping windows ``(w0, w1, keep0, keep1)`` covering ``range(n_frames)``.

    Each window has ``chunk`` frames (fewer only if ``n_frames < chunk``); the kept parts
    ``[keep0, keep1)`` tile the frames exactly and stay ``chunk // 4`` frames away from a
    window edge wherever the cine has frames there.
    """
    if chunk >= n_frames:
        return [(0, n_frames, 0, n_frames)]
    overlap = chunk // 4
    stride = chunk - 2 * overlap
    windows = []
    for keep0 in range(0, n_frames, stride):
        keep1 = min(keep0 + stride, n_frames)
        w0 = max(0, min(keep0 - overlap, n_frames - chunk))
        windows.append((w0, w0 + chunk, keep0, keep1))
    return windows


def _run_frame_windows(
    net: PASSNet,
    kspace: torch.Tensor,
    mask: torch.Tensor,
    coil_maps: torch.Tensor | None,
    chunk: int,
) -> torch.Tensor:
    t = kspace.shape[-3]
    out = torch.empty(
        (kspace.shape[0], *kspace.shape[-3:]), dtype=kspace.dtype, device=kspace.device
    )
    for w0, w1, keep0, keep1 in frame_windows(t, chunk):
        x = net(kspace[..., w0:w1, :, :], mask[..., w0:w1, :, :], coil_maps)
        out[:, keep0:keep1] = x[:, keep0 - w0 : keep1 - w0]
    return out
