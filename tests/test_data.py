"""Tests for training.data: samples, synthetic source, crops, masks, normalisation, collate."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from passnet_core.fft import ifft2c
from training.acquisition import Cine, Sample
from training.data import (
    ChainCropDataset,
    CineCropDataset,
    SyntheticCines,
    collate_cine,
    crop_windows,
)


def _volume(t=20, h=100, w=70, coils=None, name="vol"):
    rng = np.random.default_rng(0)
    target = (rng.normal(size=(t, h, w)) + 1j * rng.normal(size=(t, h, w))).astype(np.complex64)
    maps = None
    if coils:
        maps = (rng.normal(size=(coils, h, w)) + 1j * rng.normal(size=(coils, h, w))).astype(
            np.complex64
        )
        maps /= np.sqrt((np.abs(maps) ** 2).sum(0, keepdims=True))
    return Cine(target, maps, name)


def test_crop_windows_multires_stride_and_fallback():
    wins = crop_windows((20, 100, 70), [64, 96, 128], frames=16, stride=(32, 32, 8))
    sizes = {(w[3], w[4], w[5]) for w in wins}
    assert sizes == {(16, 64, 64), (16, 96, 70), (16, 100, 70)}  # 128 falls back to 100 x 70
    assert {w[0] for w in wins} == {0}  # 20 frames: a 16-frame window fits once with stride 8
    y64 = sorted({w[1] for w in wins if w[4] == 64})
    assert y64 == [0, 32]  # 100 - 64 = 36: starts 0, 32
    assert len(wins) == len(set(wins))
    for t0, y0, x0, ft, hs, ws in wins:
        assert t0 + ft <= 20 and y0 + hs <= 100 and x0 + ws <= 70
    short = crop_windows((10, 40, 40), [64], frames=16)
    assert short == [(0, 0, 0, 10, 40, 40)]


def test_sample_validates_shapes():
    with pytest.raises(ValueError, match="complex"):
        Cine(np.zeros((4, 8, 8), np.float32), None, "x")
    with pytest.raises(ValueError, match="coil maps"):
        Cine(np.zeros((4, 8, 8), np.complex64), np.zeros((2, 8, 9), np.complex64), "x")


def test_single_coil_item_normalised_and_consistent():
    ds = CineCropDataset([_volume()], crop_mode="fixed", fixed_size=64, masks=["vds-4"])
    item = ds[0]
    assert isinstance(item, Sample) and item.coil_maps is None
    assert item.kspace.shape == (16, 64, 64) and item.kspace.dtype == torch.complex64
    assert item.mask.dtype == torch.float32 and set(item.mask.unique().tolist()) == {0, 1}
    zero_filled = ifft2c(item.kspace)
    assert float(zero_filled.abs().max()) == pytest.approx(1.0, rel=1e-5)
    # k-space is the masked FFT of the (equally scaled) target
    from passnet_core.fft import fft2c

    np.testing.assert_allclose(
        item.kspace.numpy(), (fft2c(item.target) * item.mask).numpy(), atol=1e-5
    )
    assert float(item.scale) > 0
    assert 3 < item.mask.numel() / item.mask.sum() < 5


def test_multi_coil_item_and_forced_single_coil():
    vol = _volume(coils=3)
    ds = CineCropDataset([vol], crop_mode="fixed", fixed_size=64, masks=["equispaced-4"])
    item = ds[1]
    assert item.kspace.shape == (3, 16, 64, 64) and item.coil_maps.shape == (3, 64, 64)
    zf = (item.coil_maps.conj()[:, None] * ifft2c(item.kspace)).sum(0)
    assert float(zf.abs().max()) == pytest.approx(1.0, rel=1e-5)
    single = CineCropDataset([vol], crop_mode="fixed", fixed_size=64, use_coil_maps=False)
    assert single[0].coil_maps is None and single[0].kspace.ndim == 3


def test_chain_items_carry_estimated_maps_and_a_target_consistent_with_them():
    """data.acquisition: chain: maps estimated from the undersampled crop (not the true ones),
    prewhitened data, and a target the network's own forward model maps onto the data."""
    from passnet_core.operators import EncodingOp

    source = SyntheticCines(1, seed=3, coil_mode="multi", n_coils=[6], matrix=96)
    kwargs = {"crop_mode": "fixed", "fixed_size": 64, "masks": ["equispaced-4"], "train": False}
    ideal = CineCropDataset(source, **kwargs)
    noiseless = ChainCropDataset(source, **kwargs)
    item = noiseless[0]
    assert item.kspace.shape == (6, 16, 64, 64) and item.coil_maps.shape == (6, 64, 64)
    assert not torch.allclose(item.coil_maps, ideal[0].coil_maps)  # estimated, not true
    op = EncodingOp(item.mask, item.coil_maps[None])
    assert float(op.adjoint(item.kspace[None]).abs().max()) == pytest.approx(1.0, rel=1e-5)
    # without noise the data are the target seen through the estimated maps, up to what the
    # maps cannot represent (a few percent outside the ESPIRiT support)
    residual = op.forward(item.target[None])[0] - item.kspace
    assert float(residual.norm() / item.kspace.norm()) < 0.1
    noisy = ChainCropDataset(source, noise_levels=(0.05, 0.05), **kwargs)[0]
    noisy_residual = (
        EncodingOp(noisy.mask, noisy.coil_maps[None]).forward(noisy.target[None])[0] - noisy.kspace
    )
    assert float(noisy_residual.norm() / noisy.kspace.norm()) > float(
        residual.norm() / item.kspace.norm()
    )
    with pytest.raises(ValueError, match="multi-coil"):
        ChainCropDataset([_volume()], **kwargs)[0]


def test_training_masks_are_fresh_validation_masks_fixed():
    vol = _volume()
    train = CineCropDataset([vol], crop_mode="fixed", fixed_size=64, masks=["vds-8", "radial-8"])
    assert not torch.equal(train[0].mask, train[0].mask)
    val = CineCropDataset(
        [vol], crop_mode="fixed", fixed_size=64, masks=["vds-8", "radial-8"], train=False
    )
    assert torch.equal(val[0].mask, val[0].mask)
    again = CineCropDataset(
        [vol], crop_mode="fixed", fixed_size=64, masks=["vds-8", "radial-8"], train=False
    )
    assert torch.equal(val[1].mask, again[1].mask)
    assert not torch.equal(val[0].mask, val[1].mask)  # different windows differ


def test_synthetic_source_deterministic_and_multires_loader():
    src = SyntheticCines(3, seed=7, coil_mode="multi", n_coils=4, frames=12, matrix=(64, 72))
    a, b = src[1], src[1]
    np.testing.assert_array_equal(a.target, b.target)
    assert a.target.shape == (12, 64, 72) and a.coil_maps.shape == (4, 64, 72)
    assert a.name != src[2].name
    assert 0.7 < np.abs(a.target).max() < 1.5  # band-limited phantom keeps its intensities
    ds = CineCropDataset(src, crop_sizes=[48, 64, 96], frames=8, masks=["vds-6"])
    shapes = {tuple(ds[k].target.shape) for k in range(len(ds))}
    assert shapes == {(8, 48, 48), (8, 64, 64), (8, 64, 72)}
    loader = DataLoader(ds, batch_size=1, shuffle=True, collate_fn=collate_cine)
    batch = next(iter(loader))
    assert batch.kspace.ndim == 5 and batch.kspace.shape[:2] == (1, 4)
    assert batch.coil_maps.shape[0] == 1


def test_single_coil_synthetic_is_random_sized_by_default():
    src = SyntheticCines(4, seed=1, upsample=1)
    shapes = {src.shape(i) for i in range(4)}
    assert len(shapes) > 1
    for t, h, w in shapes:
        assert 12 <= t <= 30 and 64 <= h <= 192 and 64 <= w <= 192
    assert src[0].coil_maps is None and src[0].shape == src.shape(0)


def test_collate_stacks_equal_sizes_and_rejects_mixed():
    ds = CineCropDataset([_volume(t=16, h=64, w=64)], crop_mode="fixed", fixed_size=32)
    batch = collate_cine([ds[0], ds[1]])
    assert batch.kspace.shape == (2, 16, 32, 32) and batch.scale.shape == (2,)
    multi = CineCropDataset([_volume(t=16, h=96, w=96)], crop_sizes=[32, 64])
    items = [multi[0], multi[len(multi) - 1]]
    with pytest.raises(ValueError, match="batch_size=1"):
        collate_cine(items)
    mc = CineCropDataset([_volume(t=16, h=64, w=64, coils=2)], crop_mode="fixed", fixed_size=32)
    with pytest.raises(ValueError, match="single- and multi-coil"):
        collate_cine([ds[0], mc[0]])


def test_bad_configuration_raises():
    with pytest.raises(ValueError, match="crop_mode"):
        CineCropDataset([_volume()], crop_mode="random")
    with pytest.raises(ValueError, match="mask name"):
        CineCropDataset([_volume()], masks=["vds8"])
    with pytest.raises(ValueError, match="coil_mode"):
        SyntheticCines(2, coil_mode="both")


def test_make_datasets_splits_synthetic_and_folder_sources(tmp_path):
    # the one data split (training.train.make_datasets), as training uses it
    from training.config import DataConfig, TrainConfig
    from training.simulate import simulate_cine
    from training.train import make_datasets

    data = DataConfig(n_train=2, n_val=1, coil_mode="multi", n_coils=3, masks=["vds-4"])
    data.synthetic_matrix, data.crop_sizes, data.fixed_size, data.frames = 48, [32], 32, 8
    train, val = make_datasets(TrainConfig(data=data))
    assert len(train.source) == 2 and len(val) == 1 and not val.dataset.train
    assert {s.name for s in train.source}.isdisjoint({val.dataset.source[0].name})
    assert train.source.shape(0)[1:] == (48, 48)  # synthetic_matrix is honoured
    assert val[0].kspace.shape[0] == 3 and val[0].target.shape[1:] == (32, 32)

    for i in range(3):
        simulate_cine(
            tmp_path / f"f{i}.h5",
            seed=i,
            n_coils=2,
            frames=4,
            matrix=40,
            mask="equispaced",
            accel=1,
            oversampling=False,
        )
    data = DataConfig(source="ocmr", path=str(tmp_path), n_train=1, n_val=1, crop_sizes=[32])
    data.frames, data.fixed_size = 4, 32
    train, val = make_datasets(TrainConfig(data=data))
    # the first volume in name order is held out; n_train caps the rest
    assert [s.name for s in val.dataset.source] == ["f0_slice0"]
    assert [s.name for s in train.source] == ["f1_slice0"]
    item = train[0]
    assert item.kspace.shape == (4, 32, 32) and item.coil_maps is None
    for extra in ("f1.h5", "f2.h5"):
        (tmp_path / extra).unlink()
    with pytest.raises(ValueError, match="at least 2 volumes"):
        make_datasets(TrainConfig(data=data))
