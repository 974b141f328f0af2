"""Cartesian k-t undersampling masks for cine MRI (docs/method.md).

Every mask is a ``torch.float32`` tensor of shape ``(T, H, W)`` holding 0/1, with DC at the
centre ``(H//2, W//2)`` (never ``fftshift``ed) and DC sampled in every frame. ``H`` is the
phase-encode axis, ``W`` the readout axis.

Kinds
-----
``radial``
    Pseudo-radial (k-t SLR style): ``N`` lines through the centre per frame, at angles
    ``i*pi/N + delta`` with ``delta ~ U(0, pi/N)`` drawn per frame, rasterised onto the grid.
    In :func:`make_mask` the ``accel`` argument is the number of lines ``N`` ("radial-16" =
    16 lines), not an acceleration factor.
``vds``
    Variable density, fresh per frame: ``pdf = (1 - r)^9 + v`` (``r`` the radius normalised
    to 1 at the corners), ``v`` found by bisection so ``sum(pdf) = HW/R``; the ``HW/R``
    points with the largest ``U(0,1) * pdf`` are kept, so the acceleration is ``R`` up to
    rounding.
``vds_lines``
    Cartesian k-t sampling, what a scanner can actually acquire: whole phase-encode lines
    (full readout), drawn afresh per frame with probability ``(1 - |ky|)^2 + 0.1`` (``ky``
    normalised to 1 at the edge) plus the centre line, ``round(H/R)`` lines per frame. The
    simulator (``passnet simulate``) writes these as readouts, so networks meant for the
    Gadgetron path should see them in training.
``equispaced``
    Every ``R``-th phase-encode line plus ``acs`` central lines, full readout, identical for
    all frames. The ACS lines lower the achieved acceleration to about ``H / (H/R + acs)``
    (e.g. 3.46 for ``H=128, R=8, acs=24``); :func:`acceleration` reports the true value.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from passnet_core.methods import MASK_KINDS

VDS_POWER = 9  # exponent of the (1 - r) density profile
VDS_LINE_POWER = 2  # exponent of the (1 - |ky|) line density of ``vds_lines``
VDS_LINE_FLOOR = 0.1  # keeps outer lines visited over the frames

RngLike = np.random.Generator | int | None


def _rng(rng: RngLike) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def _check_dims(t: int, h: int, w: int) -> None:
    for name, value in (("T", t), ("H", h), ("W", w)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"mask dimension {name} must be a positive integer, got {value!r}")
    if h < 2 or w < 2:
        raise ValueError(f"mask needs H, W >= 2, got H={h}, W={w}")


def _with_dc(mask: np.ndarray) -> torch.Tensor:
    """Set DC in every frame and convert to the module's torch float32 convention."""
    h, w = mask.shape[-2:]
    mask[:, h // 2, w // 2] = 1
    return torch.from_numpy(mask.astype(np.float32))


def radial_mask(n_lines: int, t: int, h: int, w: int, rng: RngLike = None) -> torch.Tensor:
    """Pseudo-radial mask: ``n_lines`` lines through the centre, rotated randomly per frame.

    Parameters
    ----------
    n_lines
        Lines (spokes through the centre) per frame.
    t, h, w
        Frames, phase-encode lines, readout points.
    rng
        ``numpy.random.Generator``, a seed, or ``None`` for fresh entropy.

    Returns
    -------
    torch.Tensor
        ``(T, H, W)`` float32 0/1 mask. Lines are defined in coordinates normalised to the
        grid so they run corner to corner on non-square grids as well.
    """
    if not isinstance(n_lines, (int, np.integer)) or n_lines < 1:
        raise ValueError(f"radial mask needs a positive integer number of lines, got {n_lines!r}")
    _check_dims(t, h, w)
    gen = _rng(rng)
    delta = gen.uniform(0, np.pi / n_lines, size=(t, 1))
    angles = np.arange(n_lines)[None, :] * np.pi / n_lines + delta  # (T, N)
    # half-pixel steps along each line, out to the corners (radius sqrt(2) in normalised units)
    n_steps = 2 * int(np.ceil(np.sqrt(2) * max(h, w))) + 1
    s = np.linspace(-np.sqrt(2), np.sqrt(2), n_steps)  # odd count: s = 0 (DC) is included
    ky = np.rint(h // 2 + s * (h / 2) * np.sin(angles)[..., None]).astype(np.int64)
    kx = np.rint(w // 2 + s * (w / 2) * np.cos(angles)[..., None]).astype(np.int64)
    frame = np.broadcast_to(np.arange(t)[:, None, None], ky.shape)
    inside = (ky >= 0) & (ky < h) & (kx >= 0) & (kx < w)
    mask = np.zeros((t, h, w), dtype=np.float32)
    mask[frame[inside], ky[inside], kx[inside]] = 1
    return _with_dc(mask)


def _vds_pdf(h: int, w: int, n_samples: int) -> np.ndarray:
    """``clip((1 - r)^9 + v, 0, 1)`` with ``v`` bisected so the pdf sums to ``n_samples``."""
    ky, kx = np.meshgrid(
        np.linspace(-1, 1, h) if h > 1 else np.zeros(1),
        np.linspace(-1, 1, w) if w > 1 else np.zeros(1),
        indexing="ij",
    )
    r = np.sqrt(kx**2 + ky**2)
    base = (1 - r / r.max()) ** VDS_POWER
    lo, hi = -1.0, 1.0  # sum(clip(base + v)) is monotone in v: 0 at v=-1, h*w at v=1
    for _ in range(60):
        v = 0.5 * (lo + hi)
        if np.clip(base + v, 0, 1).sum() > n_samples:
            hi = v
        else:
            lo = v
    return np.clip(base + 0.5 * (lo + hi), 0, 1)


def vds_mask(accel: float, t: int, h: int, w: int, rng: RngLike = None) -> torch.Tensor:
    """Variable-density random mask, drawn afresh for every frame.

    Parameters
    ----------
    accel
        Acceleration ``R >= 1``; each frame keeps ``round(H*W/R)`` points (DC included).
    t, h, w
        Frames, phase-encode lines, readout points.
    rng
        ``numpy.random.Generator``, a seed, or ``None``.

    Returns
    -------
    torch.Tensor
        ``(T, H, W)`` float32 0/1 mask.
    """
    if not np.isfinite(accel) or accel < 1:
        raise ValueError(f"vds acceleration must be a finite number >= 1, got {accel!r}")
    _check_dims(t, h, w)
    gen = _rng(rng)
    n_samples = max(1, int(round(h * w / accel)))
    pdf = _vds_pdf(h, w, n_samples).ravel()
    score = gen.uniform(0, 1, size=(t, h * w)) * pdf
    score[:, (h // 2) * w + w // 2] = np.inf  # DC always wins a slot
    keep = np.argpartition(-score, n_samples - 1, axis=1)[:, :n_samples]
    mask = np.zeros((t, h * w), dtype=np.float32)
    np.put_along_axis(mask, keep, 1, axis=1)
    return _with_dc(mask.reshape(t, h, w))


def equispaced_mask(
    accel: int, t: int, h: int, w: int, acs: int = 24, offset: int | None = None
) -> torch.Tensor:
    """Every ``accel``-th phase-encode line plus ``acs`` central lines, the same in all frames.

    Parameters
    ----------
    accel
        Line spacing ``R`` (an integer >= 1).
    t, h, w
        Frames, phase-encode lines (the undersampled axis), readout points (fully sampled).
    acs
        Central auto-calibration lines, ``0 <= acs <= H``.
    offset
        Index of the first sampled line, ``0 <= offset < R``; ``None`` aligns the lattice so
        the centre line ``H//2`` lies on it.

    Returns
    -------
    torch.Tensor
        ``(T, H, W)`` float32 0/1 mask.
    """
    if not isinstance(accel, (int, np.integer)) or accel < 1:
        raise ValueError(f"equispaced acceleration must be an integer >= 1, got {accel!r}")
    _check_dims(t, h, w)
    if not isinstance(acs, (int, np.integer)) or not 0 <= acs <= h:
        raise ValueError(f"acs must be an integer in [0, H={h}], got {acs!r}")
    if offset is None:
        offset = (h // 2) % accel
    if not isinstance(offset, (int, np.integer)) or not 0 <= offset < accel:
        raise ValueError(f"offset must be an integer in [0, {accel}), got {offset!r}")
    lines = np.zeros(h, dtype=np.float32)
    lines[offset::accel] = 1
    start = h // 2 - acs // 2
    lines[start : start + acs] = 1
    mask = np.repeat(lines[None, :, None], t, axis=0).repeat(w, axis=2)
    mask[:, h // 2, :] = 1  # the centre line, even with acs=0 and an off-centre lattice
    return _with_dc(mask)


def vds_lines_mask(accel: float, t: int, h: int, w: int, rng: RngLike = None) -> torch.Tensor:
    """Variable-density random phase-encode lines (full readout), drawn afresh per frame.

    Each frame keeps the centre line ``H//2`` plus ``round(H/R) - 1`` other lines drawn without
    replacement with probability proportional to ``(1 - |ky|)^2 + 0.1``.
    """
    _check_dims(t, h, w)
    if not np.isfinite(accel) or accel < 1:
        raise ValueError(f"vds_lines acceleration must be a finite number >= 1, got {accel!r}")
    rng = _rng(rng)
    n_lines = min(h, max(1, int(round(h / accel))))
    ky = np.clip(np.abs(np.arange(h) - h // 2) / max(1, h // 2), 0, 1)
    density = (1 - ky) ** VDS_LINE_POWER + VDS_LINE_FLOOR
    density[h // 2] = 0  # the centre line is always acquired, not drawn
    others = density / density.sum()
    lines = np.zeros((t, h), dtype=bool)
    lines[:, h // 2] = True
    for frame in range(t):
        lines[frame, rng.choice(h, n_lines - 1, replace=False, p=others)] = True
    return _with_dc(np.repeat(lines[:, :, None], w, axis=2))


def make_mask(
    kind: str, accel: float, t: int, h: int, w: int, seed: int | None = None
) -> torch.Tensor:
    """Build a mask by name.

    Parameters
    ----------
    kind
        ``"radial"``, ``"vds"``, ``"vds_lines"`` or ``"equispaced"``.
    accel
        For ``radial`` the number of lines ``N``; for the others the
        acceleration ``R`` (``equispaced`` adds 24 ACS lines, see the module docstring).
    t, h, w
        Frames, phase-encode lines, readout points.
    seed
        Seed for a reproducible mask (e.g. :func:`seed_from_name`); ``None`` draws a fresh
        one. ``equispaced`` is deterministic and ignores it.
    """
    if kind == "radial":
        if float(accel) != int(accel):
            raise ValueError(f"radial masks need an integer number of lines, got {accel!r}")
        return radial_mask(int(accel), t, h, w, np.random.default_rng(seed))
    if kind == "vds":
        return vds_mask(float(accel), t, h, w, np.random.default_rng(seed))
    if kind == "vds_lines":
        return vds_lines_mask(float(accel), t, h, w, np.random.default_rng(seed))
    if kind == "equispaced":
        if float(accel) != int(accel):
            raise ValueError(f"equispaced masks need an integer acceleration, got {accel!r}")
        return equispaced_mask(int(accel), t, h, w)
    raise ValueError(f"unknown mask kind {kind!r}; expected one of {', '.join(MASK_KINDS)}")


def parse_mask_name(name: str) -> tuple[str, float]:
    """``"vds-8"`` -> ``("vds", 8.0)``, the ``KIND-ACCEL`` names used in configs and tables.

    ``radial-16`` means 16 lines; ``radial`` and ``equispaced`` need an integer.
    """
    kind, _, accel = str(name).rpartition("-")
    try:
        value = float(accel)
    except ValueError:
        value = float("nan")
    if kind not in MASK_KINDS or not np.isfinite(value) or value < 1:
        raise ValueError(
            f"mask name {name!r} must be KIND-ACCEL with KIND in {', '.join(MASK_KINDS)} "
            "and ACCEL >= 1, e.g. vds-8, radial-16, vds_lines-8"
        )
    if kind in ("radial", "equispaced") and value != int(value):
        raise ValueError(f"mask name {name!r}: {kind} needs an integer")
    return kind, value


def seed_from_name(name: str) -> int:
    """A deterministic 63-bit seed from a string (e.g. a file name), stable across runs.

    Uses SHA-256 rather than ``hash()``, which Python salts per process.
    """
    if not isinstance(name, str):
        raise ValueError(f"seed_from_name expects a string, got {type(name).__name__}")
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def acceleration(mask: torch.Tensor | np.ndarray) -> float:
    """Achieved acceleration: number of grid points over number of sampled points."""
    m = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask)
    sampled = float((m != 0).sum())
    if sampled == 0:
        raise ValueError("mask samples no points, acceleration is undefined")
    return m.numel() / sampled
