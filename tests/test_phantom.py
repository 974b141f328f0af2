"""Tests for training.phantom: anatomy, motion, resolution consistency and coil maps."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from passnet_core.fft import fft2c, ifft2c
from training.phantom import (
    body_support,
    cardiac_waveform,
    cine_phantom,
    coil_sensitivities,
    draw_params,
)


def _lv_blood_area(params, frames: np.ndarray) -> np.ndarray:
    """Pixels brighter than 0.8 (blood) near the LV centre, per frame."""
    h, w = frames.shape[1:]
    cy, cx = params.heart_centre
    c, s = np.cos(params.rotation), np.sin(params.rotation)
    gy, gx = c * cy + s * cx, -s * cy + c * cx
    iy, ix = int(gy * h / 2 + h // 2), int(gx * w / 2 + w // 2)
    r = int(params.lv_radius * 1.2 * min(h, w) / 2)
    patch = np.abs(frames[:, iy - r : iy + r, ix - r : ix + r])
    return (patch > 0.8).sum(axis=(1, 2))


def test_params_ranges_and_determinism():
    for seed in range(20):
        p = draw_params(seed)
        assert 12 <= p.frames <= 30 and 64 <= p.height <= 192 and 64 <= p.width <= 192
        assert 55 <= p.heart_rate_bpm <= 95
    assert draw_params(3) == draw_params(3)
    assert draw_params(3) != draw_params(4)
    p = draw_params(0, frames=20, matrix=(96, 128))
    assert (p.frames, p.height, p.width) == (20, 96, 128)


def test_waveform_ejects_then_fills():
    phase = np.linspace(0, 1, 101)
    v = cardiac_waveform(phase)
    assert v[0] == pytest.approx(1) and v.min() == pytest.approx(0, abs=1e-6)
    assert 0.3 <= phase[np.argmin(v)] <= 0.4  # end systole about a third into the cycle
    assert np.all(np.diff(v[:35]) <= 1e-9) and np.all(np.diff(v[36:90]) >= -1e-9)


def test_phantom_is_complex_bounded_and_beats():
    params = draw_params(1, frames=20, matrix=96)
    img = cine_phantom(20, 96, 96, params=params)
    assert img.shape == (20, 96, 96) and img.dtype == np.complex64
    mag = np.abs(img)
    assert 0.8 < mag.max() < 1.3 and mag[:, 0, 0].max() == 0  # background outside the torso
    assert np.ptp(np.angle(img[0][mag[0] > 0.1])) > 0.1  # a real background phase
    area = _lv_blood_area(params, img)
    assert area.min() < 0.75 * area[0]  # the blood pool shrinks in systole ...
    assert area[-1] > 0.85 * area[0]  # ... and refills by the end of the cycle
    # the phantom changes from frame to frame but the body outline stays put
    assert np.abs(img[7] - img[0]).max() > 0.3


def test_resolutions_describe_the_same_anatomy():
    """Band-limiting the 2x rendering gives nearly the 1x rendering (sharper edges only)."""
    p = draw_params(2, frames=4, matrix=64)
    low = torch.from_numpy(cine_phantom(4, 64, 64, params=p))
    high = torch.from_numpy(cine_phantom(4, 128, 128, params=p))
    k = fft2c(high)[..., 32:96, 32:96]
    band_limited = ifft2c(k) / 2  # orthonormal: cropping N -> N/2 per axis scales by 2
    err = (band_limited - low).norm() / low.norm()
    assert err < 0.15


def test_high_resolution_render_is_fast():
    p = draw_params(0, frames=30, matrix=192)
    start = time.perf_counter()
    img = cine_phantom(30, 384, 384, params=p)
    elapsed = time.perf_counter() - start
    assert img.shape == (30, 384, 384)
    assert elapsed < 6.0  # about 1 s on an idle core; generous for a shared machine


def test_coil_maps_are_smooth_normalised_and_distinct():
    p = draw_params(5, frames=4, matrix=(64, 80))
    support = body_support(p, 64, 80)
    maps = coil_sensitivities(8, 64, 80, rng=0, params=p, support=support)
    assert maps.shape == (8, 64, 80) and maps.dtype == np.complex64
    rss = np.sum(np.abs(maps) ** 2, axis=0)
    np.testing.assert_allclose(rss[support], 1.0, atol=1e-5)
    assert np.all(rss[~support] == 0)
    # each coil is most sensitive in a different place, and sensitivities vary smoothly
    peaks = {np.unravel_index(np.argmax(np.abs(m)), m.shape) for m in maps}
    assert len(peaks) >= 6
    # smooth: normalised maps (no support cut) keep >90% of their energy in central 16x16 k-space
    whole = torch.from_numpy(coil_sensitivities(8, 64, 80, rng=0, params=p))
    energy = fft2c(whole).abs() ** 2
    assert float(energy[:, 24:40, 32:48].sum() / energy.sum()) > 0.9
    assert np.ptp(np.angle(maps[0][support])) > 0.5  # complex, not just magnitude


def test_phantom_support_contains_body():
    p = draw_params(6, frames=3, matrix=64)
    img = cine_phantom(3, 64, 64, params=p)
    support = body_support(p, 64, 64)
    assert np.abs(img[:, ~support]).max() < 0.05


@pytest.mark.parametrize("bad", [0, -3, 2.5])
def test_bad_sizes_raise(bad):
    with pytest.raises(ValueError, match="positive integer"):
        cine_phantom(bad, 32, 32)
    with pytest.raises(ValueError, match="positive integer"):
        coil_sensitivities(bad, 32, 32)
