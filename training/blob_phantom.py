"""A generic dynamic phantom of random star-shaped objects: a second training generator.

The cardiac generator (:mod:`training.phantom`) draws one anatomy, so a network trained on it
alone can learn that anatomy's shapes, contrasts and motion instead of what makes any cine
low rank and sparse. This generator draws structure with no anatomy at all, from code that
shares nothing with the held-out ellipse family (:mod:`training.heldout_phantom`):

* objects: a body and 4-10 objects inside it, each a star-shaped region whose radius is a
  random Fourier series of the angle (round, lobed or elongated), painted over each other
  with intensities drawn uniformly in ``[0, 1]`` (dark and bright), each with its own edge
  width (sharp to blurred) and its own smooth multiplicative texture;
* motion: each object dilates and translates with its own periodic waveform (one cycle over
  the frames, random harmonics: one heartbeat-like cycle per cine), many objects stay still,
  and the whole image drifts slowly;
* phase: a smooth background phase of random strength, and a phase that follows the motion
  in the moving objects (flow-like).

Images are rendered in coordinates normalised to ``[-1, 1)`` (:func:`training.phantom._axis`),
so the same seed rendered at ``(2H, 2W)`` is the same object as at ``(H, W)`` with sharper
edges; :func:`training.simulate.simulate_cine` renders at 2x and crops k-space. Coils are the
cardiac generator's Biot-Savart loops around a ring that follows the body.
"""

from __future__ import annotations

import numpy as np

from training.phantom import _axis, smooth_fields

N_OBJECTS = (4, 10)  # objects inside the body
HARMONICS = 5  # highest angular harmonic of an object's outline


def _waveform(gen: np.random.Generator, frames: int) -> np.ndarray:
    """A periodic waveform ``(T,)`` with one cycle over the frames, scaled to ``[-1, 1]``."""
    phase = 2 * np.pi * np.arange(frames) / frames
    wave = sum(gen.normal() / m * np.sin(m * phase + gen.uniform(0, 2 * np.pi)) for m in (1, 2, 3))
    wave = np.asarray(wave, np.float64)
    return wave / (np.abs(wave).max() + 1e-12)


def _star(gen: np.random.Generator, y: np.ndarray, x: np.ndarray, centre: tuple[float, float],
          size: float, drift: np.ndarray, moving: bool, edge: float) -> np.ndarray:  # fmt: skip
    """Membership ``(T, H, W)`` in ``[0, 1]`` of one star-shaped object, possibly moving.

    ``size`` is the mean radius, ``edge`` the half-width of the soft edge and ``drift``
    ``(T,)`` the whole image's shift along ``y``, all in the normalised units of ``y`` and
    ``x``.
    """
    frames = drift.size
    aspect = np.exp(gen.uniform(-0.4, 0.4))
    angle = gen.uniform(0, np.pi)
    k = np.arange(2, HARMONICS + 1)
    amps = gen.normal(0, 0.12, k.size) / k
    shifts = gen.uniform(0, 2 * np.pi, k.size)
    if moving:
        wave = _waveform(gen, frames)
        dilation = 1 + gen.uniform(0.05, 0.25) * wave
        direction = gen.uniform(0, 2 * np.pi)
        travel = gen.uniform(0, 0.04) * _waveform(gen, frames)
    else:
        dilation = np.ones(frames)
        direction, travel = 0.0, np.zeros(frames)
    cy = centre[0] + drift + travel * np.sin(direction)
    cx = centre[1] + travel * np.cos(direction)
    dy = y[None] - cy[:, None, None]
    dx = x[None] - cx[:, None, None]
    u = (dy * np.cos(angle) + dx * np.sin(angle)) * aspect
    v = (-dy * np.sin(angle) + dx * np.cos(angle)) / aspect
    theta = np.arctan2(v, u)
    outline = 1 + sum(a * np.cos(m * theta + s) for a, m, s in zip(amps, k, shifts, strict=True))
    radius = size * dilation[:, None, None] * outline
    distance = np.hypot(u, v) - radius
    return 0.5 * (1 - np.tanh(distance / edge))


def blob_cine(
    seed: int, frames: int, matrix: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, float]:
    """Render one case of the generic phantom.

    Parameters
    ----------
    seed
        Everything (objects, motion, textures, phase) follows from it.
    frames, matrix
        ``T`` and ``(H, W)`` of the rendered grid (render at twice the target size).

    Returns
    -------
    tuple
        Complex64 cine ``(T, H, W)`` with peak magnitude 1, the body's support ``(H, W)`` (its
        membership above 1e-3 in some frame) and the body's half-extent in normalised units
        (at most 0.9: the coil ring goes around it).
    """
    h, w = matrix
    gen = np.random.default_rng([seed, 7301])
    y, x = np.meshgrid(_axis(h), _axis(w), indexing="ij")
    pixel = 2.0 / max(h, w)
    fields = smooth_fields(int(gen.integers(2**31 - 1)), h, w, 2 + N_OBJECTS[1])
    drift = gen.uniform(0, 0.03) * _waveform(gen, frames)  # respiration-like, along y

    body_size = gen.uniform(0.6, 0.8)
    body_seed = int(gen.integers(2**31 - 1))
    body_edge = gen.uniform(0.5, 2.0) * pixel
    zoom = 1.0
    for _ in range(3):  # zoom out until the body stays inside 0.9 of the field of view
        body = _star(np.random.default_rng(body_seed), y * zoom, x * zoom, (0.0, 0.0),
                     body_size, drift, True, body_edge)  # fmt: skip
        inside = (body > 0.5).any(axis=0)
        extent = float(max(np.abs(y[inside]).max(), np.abs(x[inside]).max()))
        if extent <= 0.9:
            break
        zoom *= extent / 0.88
    y, x = y * zoom, x * zoom
    image = body * gen.uniform(0.2, 0.6) * (1 + gen.uniform(0, 0.3) * fields[0])
    phase = np.zeros_like(image)
    cycle = 2 * np.pi * np.arange(frames) / frames
    for i in range(int(gen.integers(N_OBJECTS[0], N_OBJECTS[1] + 1))):
        offset = body_size * np.sqrt(gen.uniform(0, 0.45))
        direction = gen.uniform(0, 2 * np.pi)
        centre = (offset * np.sin(direction), offset * np.cos(direction))
        size = body_size * np.exp(gen.uniform(np.log(0.05), np.log(0.4)))
        moving = bool(gen.random() < 0.5)
        member = _star(gen, y, x, centre, size, drift, moving, gen.uniform(0.5, 3.0) * pixel)
        value = gen.uniform(0, 1) * (1 + gen.uniform(0, 0.3) * fields[2 + i])
        image = image * (1 - member) + value * member
        if moving:  # a flow-like phase that follows the cycle
            flow = gen.uniform(0, 0.6) * np.cos(cycle + gen.uniform(0, 2 * np.pi))
            phase = phase * (1 - member) + flow[:, None, None] * member

    background = gen.uniform(0, np.pi) * fields[1]
    cine = image * np.exp(1j * (background[None] + phase))
    cine /= np.abs(cine).max() + 1e-12
    support = np.asarray((body > 1e-3).any(axis=0))
    return cine.astype(np.complex64), support, extent
