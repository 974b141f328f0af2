"""A numerical cardiac cine phantom (short-axis view) and Biot-Savart coil sensitivities.

The anatomy is painted as soft-edged ellipses in coordinates normalised to ``[-1, 1)`` per
axis, so the same :class:`PhantomParams` rendered at ``(2H, 2W)`` is the same anatomy as at
``(H, W)`` with sharper edges: render high, crop k-space, and the inverse crime is avoided.

Tissues (painted in order, each over the previous): torso with a subcutaneous fat layer,
lungs, liver (moves head-foot with respiration, seen as an in-plane shift), pericardial fat,
right ventricle (crescent), left-ventricular myocardium and blood pool (contracting with a
cardiac waveform that has ejection, rapid filling, diastasis and atrial kick), descending
aorta and spine. Each tissue's intensity is modulated by a smooth random texture, and the
whole image carries a smooth background phase; blood gets a small flow-like phase that
follows the waveform. Everything is vectorised over frames.

Axis convention (docs/design.md): ``H`` is phase encode (vertical), ``W`` is readout.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

RngLike = np.random.Generator | int | None
# An ellipse's centre or semi-axes: numbers, or ``(T, 1, 1)`` arrays that move with the frames.
Pair = Sequence[float | np.ndarray]

FRAME_RANGE = (12, 30)
MATRIX_RANGE = (64, 192)
TEXTURE_ORDER = 4  # highest spatial frequency (cycles per FOV) of the texture fields
EDGE_PIXELS = 0.75  # half-width of the soft tissue edges, in pixels of the rendered grid

# bSSFP-like magnitudes: blood bright, fat bright, myocardium and liver intermediate
INTENSITY = {
    "body": 0.35,
    "fat": 0.85,
    "lung": 0.04,
    "liver": 0.45,
    "pericardium": 0.55,
    "blood": 1.0,
    "myocardium": 0.3,
    "aorta": 0.9,
    "spine": 0.22,
}


@dataclass(frozen=True)
class PhantomParams:
    """Anatomy, physiology and texture of one phantom; lengths in normalised units (FOV = 2)."""

    frames: int
    height: int
    width: int
    heart_rate_bpm: float
    resp_period_s: float
    resp_phase: float
    liver_shift: float
    rotation: float
    torso_centre: tuple[float, float]
    torso_axes: tuple[float, float]
    fat_thickness: float
    heart_centre: tuple[float, float]
    lv_radius: float
    wall_thickness: float
    end_systolic_ratio: float
    rv_scale: float
    texture_seed: int
    phase_coeffs: tuple[float, ...]

    @property
    def rr_interval_s(self) -> float:
        """Length of one cardiac cycle (the cine covers exactly one)."""
        return 60.0 / self.heart_rate_bpm


def _rng(rng: RngLike) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def draw_params(
    rng: RngLike = None,
    frames: int | None = None,
    matrix: int | tuple[int, int] | None = None,
) -> PhantomParams:
    """Draw a random but plausible anatomy and physiology.

    Parameters
    ----------
    rng
        Generator or seed.
    frames
        Number of cardiac phases; drawn from 12-30 when ``None``.
    matrix
        ``(H, W)`` or a single size for both; each drawn from 64-192 (even) when ``None``.
    """
    gen = _rng(rng)
    if frames is None:
        frames = int(gen.integers(FRAME_RANGE[0], FRAME_RANGE[1] + 1))
    if matrix is None:
        h, w = (2 * int(gen.integers(MATRIX_RANGE[0] // 2, MATRIX_RANGE[1] // 2 + 1)) for _ in "hw")
    elif isinstance(matrix, (int, np.integer)):
        h = w = int(matrix)
    else:
        h, w = (int(m) for m in matrix)
    _check_positive(frames=frames, height=h, width=w)
    u = gen.uniform
    torso_axes = (u(0.6, 0.74), u(0.8, 0.92))
    return PhantomParams(
        frames=int(frames),
        height=h,
        width=w,
        heart_rate_bpm=u(55, 95),
        resp_period_s=u(3.5, 5.5),
        resp_phase=u(0, 2 * np.pi),
        liver_shift=u(0.01, 0.04),
        rotation=u(-0.25, 0.25),
        torso_centre=(u(-0.04, 0.04), u(-0.04, 0.04)),
        torso_axes=torso_axes,
        fat_thickness=u(0.03, 0.08),
        heart_centre=(u(-0.12, 0.02), u(0.05, 0.2)),
        lv_radius=u(0.12, 0.17),
        wall_thickness=u(0.045, 0.07),
        end_systolic_ratio=u(0.55, 0.72),
        rv_scale=u(0.9, 1.15),
        texture_seed=int(gen.integers(0, 2**31 - 1)),
        phase_coeffs=tuple(float(v) for v in gen.normal(0, 0.5, size=6)),
    )


def cardiac_waveform(phase: np.ndarray) -> np.ndarray:
    """LV filling state in ``[0, 1]`` (1 = end diastole, 0 = end systole) over one cycle.

    ``phase`` in ``[0, 1)``: ejection to 0.35, rapid filling to 0.55, slow diastasis to 0.8,
    atrial kick to 0.92, then end diastole. Cosine easing between the knots keeps it smooth.
    """
    knots = np.array([0.0, 0.35, 0.55, 0.8, 0.92, 1.0])
    values = np.array([1.0, 0.0, 0.75, 0.82, 1.0, 1.0])
    p = np.mod(phase, 1.0)
    seg = np.clip(np.searchsorted(knots, p, side="right") - 1, 0, len(knots) - 2)
    frac = (p - knots[seg]) / (knots[seg + 1] - knots[seg])
    ease = 0.5 - 0.5 * np.cos(np.pi * frac)
    return values[seg] + (values[seg + 1] - values[seg]) * ease


def _axis(n: int) -> np.ndarray:
    """Normalised pixel-centre coordinates; pixel ``i`` of an ``n`` grid and pixel ``2i`` of a
    ``2n`` grid map to the same point, matching centred k-space cropping."""
    return ((np.arange(n) - n // 2) / (n / 2)).astype(np.float32)


def _grid(h: int, w: int, rotation: float) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.meshgrid(_axis(h), _axis(w), indexing="ij")
    c, s = np.cos(rotation), np.sin(rotation)
    return c * y - s * x, s * y + c * x


class _Painter:
    """Blends soft-edged ellipses into a ``(T, H, W)`` image, broadcasting over frames.

    Each ellipse is evaluated only inside its bounding box, which keeps small structures
    (heart, aorta, spine) cheap at high resolution.
    """

    def __init__(self, t: int, h: int, w: int, rotation: float, texture: np.ndarray) -> None:
        self.h, self.w = h, w
        self.rotation = rotation
        self.y, self.x = _grid(h, w, rotation)
        self.pixel = np.float32(2.0 / max(h, w))  # one pixel in normalised units (finer axis)
        self.texture = texture
        self.image = np.zeros((t, h, w), np.float32)

    def _box(self, centre: Pair, radius: float) -> tuple[slice, slice]:
        """Pixel window holding a disc of ``radius`` around ``centre`` (rotated coordinates)."""
        cy, cx = (float(np.mean(c)) for c in centre)
        c, s = np.cos(self.rotation), np.sin(self.rotation)
        gy, gx = c * cy + s * cx, -s * cy + c * cx  # back to grid coordinates
        reach = radius + 3 * self.pixel
        rows = (gy - reach) * self.h / 2 + self.h // 2, (gy + reach) * self.h / 2 + self.h // 2
        cols = (gx - reach) * self.w / 2 + self.w // 2, (gx + reach) * self.w / 2 + self.w // 2
        return (
            slice(max(0, int(rows[0])), max(0, min(self.h, int(np.ceil(rows[1])) + 1))),
            slice(max(0, int(cols[0])), max(0, min(self.w, int(np.ceil(cols[1])) + 1))),
        )

    def occupancy(
        self, centre: Pair, axes: Pair, box: tuple[slice, slice] | None = None
    ) -> np.ndarray:
        """Occupancy in [0, 1] of an ellipse; centre/axes entries may be ``(T, 1, 1)`` arrays."""
        box = box or (slice(None), slice(None))
        (cy, cx), (ay, ax) = centre, axes
        y, x = self.y[box], self.x[box]
        r = np.sqrt(((y - cy) / ay) ** 2 + ((x - cx) / ax) ** 2)
        dist = (1.0 - r) * (np.minimum(ay, ax) / (2 * EDGE_PIXELS * self.pixel))
        return np.clip(dist + 0.5, 0.0, 1.0, dtype=np.float32)

    def paint(
        self,
        centre: Pair,
        axes: Pair,
        value: float,
        texture: int = 0,
        amount: float = 0.12,
        within: np.ndarray | None = None,
    ) -> tuple[np.ndarray, tuple[slice, slice]]:
        """Blend ``value * (1 + amount * texture)`` where the ellipse is.

        ``within`` is a full-size ``(T, H, W)`` occupancy that clips the ellipse. Returns the
        ellipse's occupancy inside its bounding box, and the box.
        """
        centre = tuple(np.asarray(c, np.float32) for c in centre)
        axes = tuple(np.asarray(a, np.float32) for a in axes)
        box = self._box(centre, float(max(np.max(axes[0]), np.max(axes[1]))))
        occ = self.occupancy(centre, axes, box)
        if within is not None:
            occ = occ * within[(slice(None),) + box]
        target = self.image[(slice(None),) + box]
        v = np.float32(value) * (1.0 + np.float32(amount) * self.texture[texture][box])
        target += occ * (v - target)
        return occ, box


def texture_fields(params: PhantomParams, h: int, w: int, n_fields: int = 3) -> np.ndarray:
    """Smooth real random fields ``(n_fields, H, W)`` with unit-ish amplitude.

    Low-order Fourier series with random coefficients from ``params.texture_seed``: the same
    continuous field at every resolution.
    """
    return smooth_fields(params.texture_seed, h, w, n_fields)


def smooth_fields(seed: int, h: int, w: int, n_fields: int) -> np.ndarray:
    """``n_fields`` real fields ``(n_fields, H, W)``, each scaled to peak magnitude 1.

    Fourier series up to ``TEXTURE_ORDER`` cycles per 4 FOV (so no wrap-around at the edge of
    the field of view) with Gaussian coefficients that decay with frequency, drawn from
    ``seed``: the same continuous field at every resolution.
    """
    gen = np.random.default_rng(seed)
    k = np.arange(-TEXTURE_ORDER, TEXTURE_ORDER + 1)
    decay = 1.0 / (1.0 + np.add.outer(k**2, k**2))  # favour the lowest frequencies
    coeffs = gen.normal(size=(n_fields, k.size, k.size)) + 1j * gen.normal(
        size=(n_fields, k.size, k.size)
    )
    coeffs *= decay
    ey = np.exp(1j * np.pi * np.outer(_axis(h), k) / 2)  # period 4: no wrap-around at the FOV edge
    ex = np.exp(1j * np.pi * np.outer(_axis(w), k) / 2)
    field = (ey[None] @ coeffs @ ex.T[None]).real
    field /= np.abs(field).max(axis=(1, 2), keepdims=True) + 1e-12
    return field.astype(np.float32)


def body_support(params: PhantomParams, h: int, w: int) -> np.ndarray:
    """Boolean ``(H, W)`` torso mask (largest extent over the respiratory cycle), for coil maps."""
    y, x = _grid(h, w, params.rotation)
    ay, ax = params.torso_axes
    cy, cx = params.torso_centre
    # a one-pixel margin beyond the soft edge and the respiratory expansion
    margin = 1.03 + 2 * EDGE_PIXELS * 2.0 / max(h, w) / min(ay, ax)
    return ((y - cy) / ay) ** 2 + ((x - cx) / ax) ** 2 <= margin**2


def cine_phantom(
    t: int,
    h: int,
    w: int,
    rng: RngLike = None,
    params: PhantomParams | None = None,
) -> np.ndarray:
    """Render a complex cardiac cine ``(T, H, W)`` (complex64, peak magnitude about 1).

    Parameters
    ----------
    t, h, w
        Frames and matrix of the rendered grid. Render the same ``params`` at ``(2H, 2W)`` for
        a high-resolution version of the same anatomy.
    rng
        Generator or seed used to draw ``params`` when they are not given.
    params
        Anatomy and physiology; ``params.frames/height/width`` are ignored here (``t, h, w``
        rule) so one parameter set renders at any resolution.
    """
    _check_positive(t=t, h=h, w=w)
    if params is None:
        params = draw_params(rng, frames=t, matrix=(h, w))
    tex = texture_fields(params, h, w)
    pt = _Painter(t, h, w, params.rotation, tex)

    frame_time = np.arange(t) * params.rr_interval_s / t
    resp = np.sin(2 * np.pi * frame_time / params.resp_period_s + params.resp_phase)
    fill = cardiac_waveform(np.arange(t) / t)
    resp, fill = (v.astype(np.float32)[:, None, None] for v in (resp, fill))

    ty, tx = params.torso_centre
    ay, ax = params.torso_axes
    breath = 1.0 + 0.015 * resp  # chest wall expands a little (AP more than LR)
    pt.paint((ty, tx), (ay * breath, ax * (1 + 0.005 * resp)), INTENSITY["fat"], 1, 0.05)
    inner_axes = (ay * breath - params.fat_thickness, ax - params.fat_thickness)
    inner_occ, inner_box = pt.paint((ty, tx), inner_axes, INTENSITY["body"], 0)
    inner = np.zeros((t, h, w), np.float32)
    inner[(slice(None),) + inner_box] = inner_occ

    for side in (-1.0, 1.0):
        centre = (ty - 0.05 * ay, tx + side * 0.5 * ax)
        pt.paint(centre, (0.6 * ay * breath, 0.3 * ax), INTENSITY["lung"], 2, 0.3, inner)

    shift = params.liver_shift * resp
    liver_centre = (ty + 0.55 * ay + shift, tx - 0.3 * ax)
    pt.paint(liver_centre, (0.45 * ay, 0.55 * ax), INTENSITY["liver"], 0, 0.1, inner)

    hy_rest, hx = params.heart_centre
    hy = hy_rest + 0.3 * shift  # the heart rides on the diaphragm a little
    r_ed = params.lv_radius
    r_endo = r_ed * (params.end_systolic_ratio + (1 - params.end_systolic_ratio) * fill)
    r_epi = np.sqrt(r_endo**2 + (r_ed + params.wall_thickness) ** 2 - r_ed**2)  # wall volume kept
    rv_r = params.rv_scale * r_ed * (0.8 + 0.2 * fill)
    peri_axes = (r_ed * 1.9, r_ed * 2.3)
    pt.paint((hy - 0.02, hx - 0.05), peri_axes, INTENSITY["pericardium"], 1, 0.1, inner)
    rv_centre = (hy - 0.45 * r_ed, hx - 1.25 * r_ed)
    pt.paint(rv_centre, (rv_r * 1.2, rv_r * 1.5), INTENSITY["myocardium"], 0)  # RV free wall
    rv_axes = (rv_r * 1.2 - 0.02, rv_r * 1.5 - 0.02)
    rv_blood, rv_box = pt.paint(rv_centre, rv_axes, 0.92 * INTENSITY["blood"], 2, 0.06)
    pt.paint((hy, hx), (r_epi, r_epi * 1.05), INTENSITY["myocardium"], 0, 0.15)
    lv_blood, lv_box = pt.paint((hy, hx), (r_endo, r_endo * 1.05), INTENSITY["blood"], 2, 0.06)

    aorta = (ty + 0.45 * ay, tx + 0.18 * ax)
    pt.paint(aorta, (0.055, 0.055), INTENSITY["aorta"], 2, 0.05, inner)
    pt.paint((ty + 0.78 * ay, tx), (0.09, 0.08), INTENSITY["spine"], 1, 0.2, inner)

    p = params.phase_coeffs
    ym, xm = _grid(h, w, 0.0)
    phase = p[0] + p[1] * xm + p[2] * ym + 0.5 * (p[3] * xm**2 + p[4] * ym**2 + p[5] * xm * ym)
    # blood carries a small velocity-dependent phase that follows the filling rate
    velocity = np.gradient(fill[:, 0, 0])[:, None, None] if t > 1 else np.zeros_like(fill)
    phase = np.broadcast_to(phase.astype(np.float32), (t, h, w)).copy()
    phase[(slice(None),) + rv_box] += 0.3 * velocity * rv_blood
    phase[(slice(None),) + lv_box] += 0.3 * velocity * lv_blood
    return (pt.image * np.exp(1j * phase)).astype(np.complex64)


def coil_sensitivities(
    n_coils: int,
    h: int,
    w: int,
    rng: RngLike = None,
    params: PhantomParams | None = None,
    normalise: bool = True,
    support: np.ndarray | None = None,
) -> np.ndarray:
    """Complex ``(C, H, W)`` receive sensitivities of circular loops around the torso.

    Each loop (radius ~0.25, 16 straight segments) lies on a ring just outside the torso with
    its axis pointing at the centre, alternating above and below the imaging plane
    like a two-row array; the sensitivity is ``B_x - i B_y`` of its Biot-Savart field on the
    plane. Positions, radii and heights jitter with ``rng``.

    Parameters
    ----------
    n_coils, h, w
        Coils and grid (render at ``(2H, 2W)`` for the same continuous maps at 2x resolution).
    rng
        Generator or seed for the coil geometry.
    params
        Phantom parameters; the ring follows the torso ellipse when given.
    normalise
        Scale so ``sum_c |S_c|^2 = 1`` at every pixel (the field never vanishes in the FOV).
    support
        Optional boolean ``(H, W)``: zero the maps outside it (docs/design.md convention).
    """
    _check_positive(n_coils=n_coils, h=h, w=w)
    gen = _rng(rng)
    ay, ax = params.torso_axes if params is not None else (0.7, 0.88)
    cy, cx = params.torso_centre if params is not None else (0.0, 0.0)
    rotation = params.rotation if params is not None else 0.0
    y, x = _grid(h, w, rotation)

    angles = 2 * np.pi * (np.arange(n_coils) + gen.uniform(-0.15, 0.15, n_coils)) / n_coils
    angles += gen.uniform(0, 2 * np.pi)
    ring = 1.15 + gen.uniform(0, 0.1, n_coils)
    centres = np.stack(
        [
            cx + ring * ax * np.cos(angles),
            cy + ring * ay * np.sin(angles),
            0.3 * np.where(np.arange(n_coils) % 2 == 0, 1.0, -1.0) + gen.normal(0, 0.02, n_coils),
        ],
        axis=-1,
    )  # (C, 3)
    normal = np.stack([cx - centres[:, 0], cy - centres[:, 1], np.zeros(n_coils)], axis=-1)
    normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
    tangent = np.stack([-normal[:, 1], normal[:, 0], np.zeros(n_coils)], axis=-1)
    ez = np.array([0.0, 0.0, 1.0])
    radius = gen.uniform(0.22, 0.28, n_coils)[:, None, None]

    n_seg = 16
    a = 2 * np.pi * np.arange(n_seg + 1) / n_seg
    loop = centres[:, None] + radius * (
        np.cos(a)[None, :, None] * tangent[:, None] + np.sin(a)[None, :, None] * ez
    )  # (C, n_seg+1, 3)
    mid = (0.5 * (loop[:, 1:] + loop[:, :-1])).astype(np.float32)
    dl = (loop[:, 1:] - loop[:, :-1]).astype(np.float32)
    bx = np.zeros((n_coils, h, w), np.float32)
    by = np.zeros((n_coils, h, w), np.float32)
    for s in range(n_seg):  # a loop over segments keeps memory at O(C H W)
        rx, ry = x - mid[:, s, 0, None, None], y - mid[:, s, 1, None, None]
        rz = -mid[:, s, 2, None, None]
        r2 = rx * rx + ry * ry + rz * rz
        inv_r3 = 1.0 / (r2 * np.sqrt(r2))
        dlx, dly, dlz = (dl[:, s, i, None, None] for i in range(3))
        bx += (dly * rz - dlz * ry) * inv_r3  # (dl x r)_x / |r|^3
        by += (dlz * rx - dlx * rz) * inv_r3
    maps = (bx - 1j * by).astype(np.complex64)
    maps *= np.exp(1j * gen.uniform(0, 2 * np.pi, n_coils))[:, None, None]  # receiver phases

    if normalise:
        maps /= np.sqrt(np.sum(np.abs(maps) ** 2, axis=0, keepdims=True)) + 1e-12
    if support is not None:
        if support.shape != (h, w):
            raise ValueError(f"support shape {support.shape} does not match the grid {(h, w)}")
        maps = maps * support
    return maps.astype(np.complex64)
