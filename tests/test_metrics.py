"""PSNR / SSIM against scikit-image on random data, plus conventions and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from passnet_core.metrics import psnr, ssim

skm = pytest.importorskip("skimage.metrics")

T, H, W = 5, 32, 40


def _pair(seed: int, complex_: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ref = rng.uniform(0, 3, (T, H, W))
    noise = 0.3 * rng.standard_normal((T, H, W))
    if complex_:
        ref = ref * np.exp(1j * rng.uniform(-np.pi, np.pi, (T, H, W)))
        noise = noise + 0.3j * rng.standard_normal((T, H, W))
    return (ref + noise), ref


def _sk_ssim(recon: np.ndarray, ref: np.ndarray) -> float:
    scale = np.abs(ref).max()
    x, y = np.abs(recon) / scale, np.abs(ref) / scale
    per_frame = [
        skm.structural_similarity(
            y[k], x[k], gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1
        )
        for k in range(len(x))
    ]
    return float(np.mean(per_frame))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_psnr_matches_skimage_on_real_volumes(seed):
    recon, ref = _pair(seed)
    scale = np.abs(ref).max()
    expected = skm.peak_signal_noise_ratio(ref / scale, recon / scale, data_range=1)
    assert float(psnr(recon, ref)) == pytest.approx(expected, abs=1e-4)
    assert float(psnr(torch.from_numpy(recon).float(), torch.from_numpy(ref).float())) == (
        pytest.approx(expected, abs=1e-4)
    )


def test_psnr_complex_difference_and_magnitude_option():
    recon, ref = _pair(3, complex_=True)
    scale = np.abs(ref).max()
    mse_complex = np.mean(np.abs(recon - ref) ** 2) / scale**2
    assert float(psnr(recon, ref)) == pytest.approx(10 * np.log10(1 / mse_complex), abs=1e-4)
    expected_mag = skm.peak_signal_noise_ratio(
        np.abs(ref) / scale, np.abs(recon) / scale, data_range=1
    )
    assert float(psnr(recon, ref, magnitude=True)) == pytest.approx(expected_mag, abs=1e-4)
    # a pure phase change is invisible to the magnitude PSNR but not to the complex one
    rotated = ref * np.exp(0.5j)
    assert float(psnr(rotated, ref, magnitude=True)) > 250
    assert float(psnr(rotated, ref)) < 20


@pytest.mark.parametrize("seed,complex_", [(0, False), (1, False), (2, True)])
def test_ssim_matches_skimage(seed, complex_):
    recon, ref = _pair(seed, complex_)
    assert float(ssim(recon, ref)) == pytest.approx(_sk_ssim(recon, ref), abs=1e-3)


def test_ssim_on_structured_images_matches_skimage():
    y, x = np.meshgrid(np.linspace(-1, 1, H), np.linspace(-1, 1, W), indexing="ij")
    ref = np.stack([np.exp(-(x**2 + y**2) / (0.1 + 0.05 * k)) for k in range(T)])
    recon = ref + 0.05 * np.random.default_rng(4).standard_normal(ref.shape)
    value = float(ssim(recon, ref))
    assert value == pytest.approx(_sk_ssim(recon, ref), abs=1e-3)
    assert 0.2 < value < 0.99


def test_batched_inputs_give_one_value_per_volume():
    pairs = [_pair(s) for s in range(3)]
    recon = torch.from_numpy(np.stack([p[0] for p in pairs]))
    ref = torch.from_numpy(np.stack([p[1] for p in pairs]))
    p, s = psnr(recon, ref), ssim(recon, ref)
    assert p.shape == (3,) and s.shape == (3,)
    for i, (r, g) in enumerate(pairs):
        assert float(p[i]) == pytest.approx(float(psnr(r, g)), abs=1e-9)
        assert float(s[i]) == pytest.approx(float(ssim(r, g)), abs=1e-9)


def test_metrics_are_scale_invariant_and_perfect_on_identity():
    recon, ref = _pair(5)
    assert float(psnr(7 * recon, 7 * ref)) == pytest.approx(float(psnr(recon, ref)), abs=1e-9)
    assert float(ssim(7 * recon, 7 * ref)) == pytest.approx(float(ssim(recon, ref)), abs=1e-9)
    assert float(ssim(ref, ref)) == pytest.approx(1.0, abs=1e-12)
    assert float(psnr(ref, ref)) == float("inf")


@pytest.mark.parametrize(
    "recon,ref",
    [
        (np.ones((T, H, W)), np.ones((T, H, W + 1))),
        (np.ones((H, W)), np.ones((H, W))),
        (np.ones((T, H, W)), np.zeros((T, H, W))),
    ],
)
def test_bad_inputs_raise(recon, ref):
    with pytest.raises(ValueError):
        psnr(recon, ref)
    with pytest.raises(ValueError):
        ssim(recon, ref)


def test_ssim_rejects_images_smaller_than_the_window():
    with pytest.raises(ValueError, match="H, W >= 11"):
        ssim(np.ones((2, 10, 20)), np.ones((2, 10, 20)))
