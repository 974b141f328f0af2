"""Sampling masks: acceleration, centre coverage, time variation, reproducibility, errors."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from passnet_core.masks import (
    acceleration,
    equispaced_mask,
    make_mask,
    parse_mask_name,
    radial_mask,
    seed_from_name,
    vds_mask,
)

T, H, W = 8, 64, 48


@pytest.mark.parametrize(
    "mask",
    [
        radial_mask(8, T, H, W, 0),
        vds_mask(6, T, H, W, 0),
        equispaced_mask(4, T, H, W),
        make_mask("vds", 10, T, 33, 31, seed=1),
        make_mask("radial", 3, T, 33, 31, seed=1),
        equispaced_mask(5, T, 33, 31, acs=0, offset=1),
    ],
    ids=["radial", "vds", "equispaced", "vds_odd", "radial_odd", "equispaced_no_acs"],
)
def test_mask_format_and_dc_in_every_frame(mask):
    assert mask.dtype == torch.float32
    assert mask.ndim == 3 and mask.shape[0] == T
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    h, w = mask.shape[-2:]
    assert bool((mask[:, h // 2, w // 2] == 1).all())


@pytest.mark.parametrize("accel", [4, 6, 8, 12])
def test_vds_reaches_the_requested_acceleration(accel):
    mask = vds_mask(accel, T, H, W, rng=3)
    assert abs(acceleration(mask) - accel) / accel < 0.05
    per_frame = mask.sum(dim=(1, 2))
    assert bool((per_frame == per_frame[0]).all())  # the same budget in every frame


def test_vds_is_denser_near_the_centre():
    mask = vds_mask(8, 32, H, W, rng=4).mean(0)
    centre = mask[H // 2 - 4 : H // 2 + 4, W // 2 - 4 : W // 2 + 4].mean()
    edge = torch.cat([mask[:6].flatten(), mask[-6:].flatten()]).mean()
    assert centre > 0.8 and edge < 0.1


def test_equispaced_acceleration_includes_the_acs_lines():
    # H=128, R=8: 16 lattice lines, 24 ACS lines of which 3 are on the lattice -> 37 lines
    mask = equispaced_mask(8, 4, 128, 32, acs=24)
    lines = mask[0, :, 0]
    assert int(lines.sum()) == 37
    assert acceleration(mask) == pytest.approx(128 / 37)
    assert acceleration(mask) == pytest.approx(128 / (128 / 8 + 24), rel=0.1)
    assert bool((lines[64 - 12 : 64 + 12] == 1).all())


def test_equispaced_lattice_full_readout_identical_frames():
    mask = equispaced_mask(4, T, H, W, acs=0, offset=1)
    assert bool((mask == mask[:1]).all())
    assert bool((mask == mask[..., :1]).all())  # every sampled line has its whole readout
    sampled = set(torch.nonzero(mask[0, :, 0]).flatten().tolist())
    assert sampled == set(range(1, H, 4)) | {H // 2}
    assert acceleration(equispaced_mask(1, T, H, W)) == 1.0


@pytest.mark.parametrize("kind,accel", [("radial", 8), ("vds", 6)])
def test_random_masks_vary_over_frames(kind, accel):
    mask = make_mask(kind, accel, T, H, W, seed=0)
    assert all(not torch.equal(mask[0], mask[k]) for k in range(1, T))


def test_radial_lines_control_the_acceleration():
    accel = [acceleration(radial_mask(n, T, H, H, 0)) for n in (4, 8, 16, 32)]
    assert accel == sorted(accel, reverse=True)
    assert 4 < accel[1] < 12  # 8 lines on 64x64 sample roughly 8*64 points per frame


def test_radial_lines_pass_through_the_centre():
    # a single line is a diameter: symmetric about DC on a square odd grid
    mask = radial_mask(1, 4, 33, 33, 5)
    assert torch.equal(mask, torch.flip(mask, dims=(-2, -1)))


@pytest.mark.parametrize("kind,accel", [("radial", 12), ("vds", 8), ("equispaced", 4)])
def test_masks_are_reproducible_from_a_seed(kind, accel):
    seed = seed_from_name("case_001.h5")
    a = make_mask(kind, accel, T, H, W, seed=seed)
    b = make_mask(kind, accel, T, H, W, seed=seed)
    assert torch.equal(a, b)
    if kind != "equispaced":
        assert not torch.equal(a, make_mask(kind, accel, T, H, W, seed=seed + 1))


def test_seed_from_name_is_stable_across_interpreters():
    # another interpreter with a different str-hash salt must give the same seed
    code = "from passnet_core.masks import seed_from_name; print(seed_from_name('x/y.h5'))"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.check_output([sys.executable, "-c", code], text=True, env=env)
    assert out == f"{seed_from_name('x/y.h5')}\n"
    assert seed_from_name("a.h5") != seed_from_name("b.h5")
    assert 0 <= seed_from_name("a.h5") < 2**63


def test_acceleration_accepts_numpy_and_rejects_empty():
    assert acceleration(np.array([[[1, 0], [0, 0]]])) == 4.0
    with pytest.raises(ValueError, match="no points"):
        acceleration(torch.zeros(2, 4, 4))


@pytest.mark.parametrize(
    "call",
    [
        lambda: make_mask("spiral", 4, T, H, W),
        lambda: make_mask("radial", 2.5, T, H, W),
        lambda: make_mask("equispaced", 2.5, T, H, W),
        lambda: radial_mask(0, T, H, W),
        lambda: vds_mask(0.5, T, H, W),
        lambda: vds_mask(float("nan"), T, H, W),
        lambda: vds_mask(4, 0, H, W),
        lambda: vds_mask(4, T, 1, W),
        lambda: equispaced_mask(4, T, H, W, acs=H + 1),
        lambda: equispaced_mask(4, T, H, W, offset=4),
        lambda: seed_from_name(3),
    ],
)
def test_bad_arguments_raise(call):
    with pytest.raises(ValueError):
        call()


def test_vds_lines_are_whole_lines_random_per_frame_and_keep_the_centre():
    mask = make_mask("vds_lines", 8, 10, 128, 32, seed=0)
    lines = mask[:, :, 0].numpy() > 0
    assert (mask == mask[:, :, :1]).all()  # full readout lines
    assert lines.shape == (10, 128) and lines[:, 64].all()
    np.testing.assert_array_equal(lines.sum(1), 16)
    assert len({tuple(np.nonzero(row)[0]) for row in lines}) > 1
    assert lines[:, 48:80].mean() > 2 * lines[:, :32].mean()  # denser near the centre
    assert acceleration(mask) == pytest.approx(8.0)


def test_parse_mask_name_accepts_every_kind_and_names_the_format():
    assert parse_mask_name("vds-8") == ("vds", 8.0)
    assert parse_mask_name("radial-16") == ("radial", 16.0)
    assert parse_mask_name("vds_lines-5") == ("vds_lines", 5.0)
    for bad in ("vds", "spiral-4", "vds-x", "equispaced-0", "radial-2.5"):
        with pytest.raises(ValueError, match="mask name"):
            parse_mask_name(bad)
