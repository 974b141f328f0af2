"""Coil map estimation against known simulated sensitivities (and BART when installed)."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from helpers import (
    dynamic_phantom,
    ellipse_phantom,
    map_correlation,
    normalise_maps,
    simulated_coil_maps,
)

from passnet_core import bart
from passnet_core.coilmaps import espirit_kernel, estimate_coil_maps, time_average_kspace
from passnet_core.fft import fft2c
from passnet_core.masks import equispaced_mask, vds_mask

C, H, W = 6, 64, 72


def _scene(h: int = H, w: int = W, c: int = C):
    obj = ellipse_phantom(h, w)
    support = obj > 0
    maps = normalise_maps(simulated_coil_maps(c, h, w), np.ones_like(support))
    return obj, support, maps


def _kspace(obj, maps, noise: float = 0.0, seed: int = 0) -> torch.Tensor:
    k = fft2c(torch.from_numpy(maps * obj))
    if noise:
        g = torch.Generator().manual_seed(seed)
        k = k + noise * k.abs().max() * torch.randn(k.shape, dtype=k.dtype, generator=g)
    return k


def _erode(mask: np.ndarray, n: int) -> np.ndarray:
    out = mask.copy()
    for _ in range(n):
        out[1:-1, 1:-1] &= out[:-2, 1:-1] & out[2:, 1:-1] & out[1:-1, :-2] & out[1:-1, 2:]
    return out


@pytest.mark.parametrize("method,noise", [("espirit", 0.0), ("espirit", 0.005), ("walsh", 0.005)])
def test_maps_match_the_true_sensitivities(method, noise):
    obj, support, true = _scene()
    est = estimate_coil_maps(_kspace(obj, true, noise), method=method)
    assert est.dtype == torch.complex64 and est.shape == (C, H, W)
    est = est.numpy()
    assert map_correlation(est, true, support) > 0.99
    energy = (np.abs(est) ** 2).sum(0)
    covered = energy > 0
    assert covered[support].mean() > 0.99
    np.testing.assert_allclose(energy[covered], 1.0, atol=1e-4)  # unit norm where kept


def test_espirit_crops_the_background():
    obj, support, true = _scene()
    est = estimate_coil_maps(_kspace(obj, true, noise=0.005), crop=0.95).numpy()
    background = _erode(~support, 6)
    kept = (np.abs(est).sum(0) > 0)[background].mean()
    assert kept < 0.2
    # crop=0 keeps every pixel
    assert bool((estimate_coil_maps(_kspace(obj, true, 0.005), crop=0.0).abs().sum(0) > 0).all())


def test_coil_phase_references_the_strongest_coil():
    obj, support, true = _scene()
    est = estimate_coil_maps(_kspace(obj, true), phase="coil").numpy()
    ref = int((np.abs(est) ** 2).sum(axis=(1, 2)).argmax())
    inside = np.abs(est[ref]) > 1e-3
    assert np.abs(np.angle(est[ref][inside])).max() < 1e-4


def _phase_gradient(image: np.ndarray, where: np.ndarray) -> float:
    """Mean |phase difference| between horizontal neighbours inside ``where`` (rad/pixel)."""
    step = np.abs(np.angle(image[:, 1:] * image[:, :-1].conj()))
    return float(step[where[:, 1:] & where[:, :-1]].mean())


def test_lowres_phase_gives_images_the_objects_own_phase_and_keeps_magnitudes():
    # sensitivities whose phase sweeps over several radians across the field of view (as B1
    # phase does), and a real object: the coil-referenced combination carries the sweep, the
    # low-resolution reference leaves the object's own (zero) phase
    obj, support, true = _scene()
    h, w = obj.shape
    yy, xx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    sensitivities = true * np.exp(2j * (xx + yy**2))[None]
    k = _kspace(obj, sensitivities)
    coil = estimate_coil_maps(k, phase="coil").numpy()
    lowres = estimate_coil_maps(k).numpy()
    np.testing.assert_allclose(np.abs(lowres), np.abs(coil), atol=1e-5)  # only the phase moves
    coil_image = (coil.conj() * (sensitivities * obj)).sum(0)
    lowres_image = (lowres.conj() * (sensitivities * obj)).sum(0)
    inside = _erode(support, 3)
    assert _phase_gradient(coil_image, inside) > 0.03  # the sweep: about 2 / 36 rad per pixel
    assert _phase_gradient(lowres_image, inside) < 0.2 * _phase_gradient(coil_image, inside)
    assert np.abs(np.angle(lowres_image[inside])).max() < 0.2
    with pytest.raises(ValueError, match="map phase"):
        estimate_coil_maps(k, phase="random")


def test_top_eigenvector_is_exact_for_nearly_equal_eigenvalues():
    # at the bright edge of an object the top two ESPIRiT eigenvalues can differ by ~1 %: the
    # vector must still be the top one (a few power-iteration squarings mixed them)
    from passnet_core.coilmaps import _top_eigenpair

    g = torch.Generator().manual_seed(3)
    q, _ = torch.linalg.qr(torch.randn(8, 8, dtype=torch.complex128, generator=g))
    values = torch.tensor([0.998, 0.984, 0.5, 0.2, 0.1, 0.05, 0.01, 0.0], dtype=torch.float64)
    matrix = (q * values.to(q.dtype)) @ q.mH
    top_value, top_vector = _top_eigenpair(matrix[None].to(torch.complex64))
    assert float(top_value[0]) == pytest.approx(0.998, abs=1e-5)
    overlap = torch.vdot(q[:, 0].to(torch.complex64), top_vector[0]).abs()
    assert float(overlap) > 0.9999


@pytest.mark.parametrize("kind", ["equispaced", "vds"])
def test_undersampled_cine_via_time_average(kind):
    t = 12
    frames = dynamic_phantom(t, H, W)  # (T, H, W) complex
    _, support, true = _scene()
    support = np.abs(frames).mean(0) > 0
    kspace = fft2c(torch.from_numpy(true[:, None] * frames[None]))  # (C, T, H, W)
    mask = equispaced_mask(4, t, H, W, acs=24) if kind == "equispaced" else vds_mask(4, t, H, W, 0)
    avg = time_average_kspace(kspace * mask, mask)
    est = estimate_coil_maps(avg).numpy()
    assert map_correlation(est, true, support) > 0.99


def _gapped_centre(kspace: torch.Tensor) -> torch.Tensor:
    """Four lines of the central block never sampled, as per-frame random lines leave them."""
    out = kspace.clone()
    for offset in (-8, -3, 3, 7):
        out[:, H // 2 + offset] = 0
    return out


@pytest.mark.parametrize("coils", [8, 16])
def test_espirit_kernel_fits_the_windows_the_calibration_has(coils):
    obj, support, true = _scene(c=coils)
    k = _kspace(obj, true, noise=0.01)
    assert espirit_kernel(k) == 6  # a complete block: the standard kernel, even for 16 coils
    gapped = _gapped_centre(k)
    kernel = espirit_kernel(gapped)
    assert kernel == 3  # 4x4 windows (105) are fewer than the 16 C columns
    assert map_correlation(estimate_coil_maps(gapped, kernel=kernel).numpy(), true, support) > 0.99
    # what the rule avoids: the next kernel up still has windows, but too few for its columns
    assert map_correlation(estimate_coil_maps(gapped, kernel=4).numpy(), true, support) < 0.9
    assert espirit_kernel(k * equispaced_mask(2, 1, H, W, acs=0)[0]) is None  # no adjacent lines


def test_time_average_divides_by_the_sampling_count():
    k = torch.ones(2, 3, 4, 4, dtype=torch.complex64) * torch.arange(1, 4).view(1, 3, 1, 1)
    mask = torch.zeros(3, 4, 4)
    mask[0, 0, 0] = mask[2, 0, 0] = 1
    mask[1, 1, 1] = 1
    avg = time_average_kspace(k * mask, mask)
    assert avg[0, 0, 0] == 2 and avg[0, 1, 1] == 2 and avg[0, 2, 2] == 0


def test_too_little_calibration_data_raises():
    obj, _, true = _scene()
    k = _kspace(obj, true)
    mask = equispaced_mask(4, 1, H, W, acs=0)[0]  # no contiguous ACS block
    with pytest.raises(ValueError, match="fully sampled"):
        estimate_coil_maps(k * mask)


def test_numpy_input_is_accepted():
    obj, support, true = _scene()
    est = estimate_coil_maps(_kspace(obj, true).numpy().astype(np.complex128), method="walsh")
    assert est.dtype == torch.complex64
    assert map_correlation(est.numpy(), true, support) > 0.99


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kspace_avg": np.ones((C, H, W))},  # real
        {"kspace_avg": np.ones((1, C, H, W), np.complex64)},  # wrong rank
        {"kspace_avg": np.full((C, H, W), np.nan, np.complex64)},
        {"kspace_avg": np.zeros((C, H, W), np.complex64)},
        {"method": "sense"},
        {"kernel": 0},
        {"calib": 6, "kernel": 6},
        {"crop": 1.0},
        {"threshold": 0.0},
    ],
)
def test_bad_arguments_raise(kwargs):
    args = {"kspace_avg": np.ones((C, H, W), np.complex64)} | kwargs
    with pytest.raises(ValueError):
        estimate_coil_maps(**args)


def test_espirit_is_fast_enough():
    obj, _, true = _scene(128, 128, 8)
    k = _kspace(obj, true, noise=0.005)
    estimate_coil_maps(k)  # warm-up
    best = min(_timed(lambda: estimate_coil_maps(k)) for _ in range(3))
    # well under 1 s when the machine is quiet; the bound leaves room for a shared CI box
    assert best < 2.0, f"ESPIRiT on (8, 128, 128) took {best:.2f} s"


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


@pytest.mark.skipif(not bart.available(), reason="bart not installed")
def test_agrees_with_bart_ecalib():
    obj, support, true = _scene()
    k = _kspace(obj, true, noise=0.005)
    # BART axes: 0 readout (our W), 1 phase (our H), 2 partition, 3 coil
    bart_in = k.numpy().transpose(2, 1, 0)[:, :, None, :]
    out = bart.run_bart(
        ["ecalib", "-m1", "-r", "24", "kspace", "maps"], {"kspace": bart_in}, ["maps"]
    )
    bart_maps = out["maps"].reshape(W, H, C).transpose(2, 1, 0)
    ours = estimate_coil_maps(k).numpy()
    inner = _erode(support, 3)
    assert map_correlation(ours, bart_maps, inner) > 0.99
    assert map_correlation(bart_maps, true, inner) > 0.99


def test_cfl_round_trip_keeps_fortran_layout(tmp_path):
    data = (np.arange(24).reshape(2, 3, 4) + 1j * np.arange(24).reshape(2, 3, 4)).astype(
        np.complex64
    )
    bart.write_cfl(tmp_path / "x", data)
    assert (tmp_path / "x.hdr").read_text().splitlines()[1] == "2 3 4"
    # Fortran order: the first axis varies fastest on disk
    on_disk = np.fromfile(tmp_path / "x.cfl", dtype=np.complex64)
    assert on_disk[1] == data[1, 0, 0]
    np.testing.assert_array_equal(bart.read_cfl(tmp_path / "x.cfl"), data)


@pytest.mark.skipif(not bart.available(), reason="bart not installed")
def test_run_bart_reads_and_writes_what_bart_expects():
    data = (np.random.default_rng(0).standard_normal((5, 3, 1, 2)) + 0j).astype(np.complex64)
    out = bart.run_bart(["scale", "2", "a", "b"], {"a": data}, ["b"])
    np.testing.assert_allclose(out["b"].reshape(data.shape), 2 * data, rtol=1e-6)
    with pytest.raises(RuntimeError, match="failed"):
        bart.run_bart(["no_such_tool"], {}, [])
