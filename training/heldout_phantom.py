"""A second, independent dynamic phantom for held-out evaluation (never used for training).

Training draws cardiac cines from :mod:`training.phantom` (torso, heart, blood pool, Biot-Savart
coil loops). To check that a trained network generalises beyond that generator, this module
builds cines from different code and different physics choices:

* anatomy and contrast: a Shepp-Logan-like head of overlapping ellipses whose intensities are
  drawn per case (dark and bright structures, not bright blood in a torso), a smooth
  multiplicative bias field and a slowly varying background phase;
* motion: two inner ellipses dilate with a skewed periodic waveform (fast expansion, slow
  relaxation) and one small ellipse travels on a circle, plus a global in-plane drift;
* image formation: every ellipse is rendered in k-space analytically (its exact Fourier
  transform, a Bessel ``J1`` pattern), so the image is band-limited by construction;
* coils: a birdcage-style ring of ``n_coils`` elements with distance fall-off and a smooth
  phase that rotates with the element angle (analytic, unlike training's wire loops),
  normalised to ``sum_c |S_c|^2 = 1``;
* size: 24 frames of 112 x 144 by default (training evaluates 16 x 128 x 128).

:func:`heldout_cine` returns ``(target, maps)`` as complex64 ``(T, H, W)`` and ``(C, H, W)``,
reproducible from its seed.
"""

from __future__ import annotations

import numpy as np
from scipy.special import j1

HELDOUT_FRAMES = 24
HELDOUT_MATRIX = (112, 144)

# (centre y, centre x, semi-axis y, semi-axis x, angle) of a Shepp-Logan-like layout in a unit
# field of view [-1, 1]^2; intensities are drawn per case.
_LAYOUT = (
    (0.0, 0.0, 0.80, 0.66, 0.0),  # skull / outer shell
    (-0.02, 0.0, 0.74, 0.60, 0.0),  # brain
    (0.0, 0.20, 0.30, 0.10, -0.3),  # right ventricle-like, dilates
    (0.0, -0.20, 0.38, 0.14, 0.3),  # left ventricle-like, dilates
    (0.32, 0.0, 0.20, 0.24, 0.0),
    (-0.10, 0.0, 0.05, 0.05, 0.0),
    (-0.58, -0.08, 0.04, 0.06, 0.0),
    (-0.58, 0.06, 0.04, 0.04, 0.0),
    (0.0, 0.0, 0.06, 0.06, 0.0),  # travelling blob
)
_DILATING = (2, 3)
_TRAVELLING = 8


def _ellipse_kspace(
    ky: np.ndarray, kx: np.ndarray, cy: float, cx: float, ay: float, ax: float, angle: float
) -> np.ndarray:
    """Exact Fourier transform of a unit-intensity ellipse (``k`` in cycles per unit length)."""
    c, s = np.cos(angle), np.sin(angle)
    ry, rx = c * ky - s * kx, s * ky + c * kx  # k in the ellipse frame
    rho = np.sqrt((ay * ry) ** 2 + (ax * rx) ** 2)
    safe = np.where(rho > 1e-9, rho, 1.0)
    shape = np.where(rho > 1e-9, j1(2 * np.pi * safe) / safe, np.pi)  # limit pi at k = 0
    return ay * ax * shape * np.exp(-2j * np.pi * (ky * cy + kx * cx))


def _waveform(phase: np.ndarray, skew: float) -> np.ndarray:
    """Periodic 0..1 waveform with a fast rise (fraction ``skew`` of the cycle), slow fall."""
    p = np.mod(phase, 1.0)
    rise = 0.5 - 0.5 * np.cos(np.pi * p / skew)
    fall = 0.5 + 0.5 * np.cos(np.pi * (p - skew) / (1 - skew))
    return np.where(p < skew, rise, fall)


def birdcage_maps(n_coils: int, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """``(C, H, W)`` ring-array sensitivities with ``sum_c |S_c|^2 = 1`` everywhere.

    Each element's magnitude falls off with distance; its phase is the element's angle on the
    ring plus half the angle under which it sees the pixel, measured from its axis (the
    direction to the centre). That angle stays within +-90 degrees for every pixel in front
    of the element, so the phase is smooth over the field of view, as a receive field is: an
    earlier version used half the pixel's polar angle, whose branch cut put a phase jump of
    pi through the object, the same in every coil (docs/evaluation.md, "Data").
    """
    y, x = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    radius = rng.uniform(1.1, 1.4)
    offset = rng.uniform(0, 2 * np.pi)
    maps = np.empty((n_coils, h, w), np.complex128)
    for c in range(n_coils):
        angle = offset + 2 * np.pi * c / n_coils
        dy, dx = y - radius * np.sin(angle), x - radius * np.cos(angle)
        along = -(dx * np.cos(angle) + dy * np.sin(angle))  # towards the centre
        across = -dx * np.sin(angle) + dy * np.cos(angle)
        view = np.arctan2(across, along)
        maps[c] = np.exp(1j * (angle + 0.5 * view)) / (np.hypot(dy, dx) + 0.2) ** 1.5
    maps /= np.sqrt((np.abs(maps) ** 2).sum(0, keepdims=True))
    return maps.astype(np.complex64)


def heldout_cine(
    seed: int,
    frames: int = HELDOUT_FRAMES,
    matrix: tuple[int, int] = HELDOUT_MATRIX,
    n_coils: int = 12,
) -> tuple[np.ndarray, np.ndarray]:
    """One held-out cine and its coil maps.

    Parameters
    ----------
    seed
        Seeds intensities, motion, bias field and coil ring.
    frames, matrix
        Number of frames and ``(H, W)``.
    n_coils
        Coil elements of the ring.

    Returns
    -------
    tuple of numpy.ndarray
        ``target`` complex64 ``(T, H, W)`` with peak magnitude 1, and ``maps`` complex64
        ``(C, H, W)``.
    """
    rng = np.random.default_rng([seed, 0xE1])
    h, w = matrix
    # k-space grid of an image on [-1, 1]^2 sampled at h x w: spacing 1 / (field of view 2)
    ky = (np.arange(h) - h // 2)[:, None] / 2.0
    kx = (np.arange(w) - w // 2)[None, :] / 2.0
    intensity = np.concatenate(([1.0, -0.75], rng.uniform(-0.25, 0.45, len(_LAYOUT) - 2)))
    intensity[2:4] = rng.uniform(0.25, 0.5, 2)  # the dilating pair is bright
    period = rng.uniform(0.8, 1.3)  # cycles per cine
    skew, start = rng.uniform(0.25, 0.4), rng.uniform(0, 1)
    drift = rng.uniform(-0.03, 0.03, 2)
    orbit = rng.uniform(0.15, 0.3)
    yy, xx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    bias = 1 + 0.25 * np.cos(np.pi * (rng.uniform(0.3, 0.8) * yy + rng.uniform(-0.5, 0.5) * xx))
    phase_map = np.exp(1j * (rng.uniform(-1, 1) * xx + rng.uniform(-1, 1) * yy) * 0.8)

    target = np.empty((frames, h, w), np.complex64)
    for t in range(frames):
        phase = start + period * t / frames
        dilation = 1 + 0.35 * float(_waveform(np.asarray(phase), skew))
        shift = drift * np.sin(2 * np.pi * phase)
        k = np.zeros((h, w), np.complex128)
        for i, (cy, cx, ay, ax, angle) in enumerate(_LAYOUT):
            if i in _DILATING:
                ay, ax = ay * dilation, ax * dilation
            if i == _TRAVELLING:
                cy = orbit * np.sin(2 * np.pi * phase)
                cx = orbit * np.cos(2 * np.pi * phase) * 0.6
            k += intensity[i] * _ellipse_kspace(ky, kx, cy + shift[0], cx + shift[1], ay, ax, angle)
        image = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k))) * h * w / 4.0
        target[t] = (image * bias * phase_map).astype(np.complex64)
    target /= np.abs(target).max()
    return target, birdcage_maps(n_coils, h, w, rng)
