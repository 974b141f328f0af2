"""data.acquisition: chain_files: whole simulated files read by the chain's own code, cached."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from gadgets.assembly import assemble
from gadgets.pipeline import estimate_maps
from passnet_core.ismrmrd_io import read_raw
from passnet_core.masks import radial_mask
from passnet_core.model import PASSNet, PASSNetConfig
from passnet_core.operators import EncodingOp, encoding, normalise, zero_filled
from training import chain_files
from training.config import load_config
from training.simulate import simulate_cine
from training.train import train

TINY = Path(__file__).resolve().parents[1] / "training" / "configs" / "tiny_test.yaml"
SMALL = PASSNetConfig(n_stages=1, channels=4, start="llr", start_iterations=10)


def _space(**changes) -> chain_files.FileSpace:
    settings = {
        "masks": ("vds_lines-4",), "frame_counts": (8,), "matrices": (40,), "coils": (4,),
        "noise_levels": (0.02, 0.02),
    } | changes  # fmt: skip
    return chain_files.FileSpace(**settings)


def test_a_sample_is_what_the_chain_feeds_the_network(tmp_path):
    draw = _space().draw(123)
    sample = chain_files.make_sample(draw, SMALL)
    # the same file through the chain's own ingest and maps, as passnet recon reads it
    path = tmp_path / "same.h5"
    simulate_cine(
        path, seed=draw.seed, n_coils=draw.coils, frames=draw.frames, matrix=draw.matrix,
        mask=draw.mask, accel=draw.accel, noise_level=draw.noise,
    )  # fmt: skip
    raw = read_raw(path)
    (slice_data,), _ = assemble(raw.header, raw.acquisitions())
    maps = estimate_maps(slice_data)
    assert torch.equal(sample["coil_maps"], torch.from_numpy(maps))
    kspace, op = encoding(torch.from_numpy(slice_data.kspace)[None], slice_data.mask, maps[None])
    units = normalise(op, kspace)
    assert torch.allclose(sample["kspace"], units.kspace[0])
    assert torch.allclose(sample["start"], PASSNet(SMALL).start(op, units.kspace)[0], atol=1e-5)
    # the target agrees with the data up to the noise, and the start is far closer to it
    residual = (op.forward(sample["target"][None]) - units.kspace).norm() / units.kspace.norm()
    assert residual < 0.1
    target = sample["target"]

    def error(x: torch.Tensor) -> float:
        return float((x.abs() - target.abs()).norm() / target.abs().norm())

    assert error(sample["start"]) < 0.5 * error(zero_filled(op, units.kspace)[0])


def test_the_cache_name_changes_with_every_start_setting():
    import dataclasses

    draw = _space().draw(5)
    names = {
        chain_files.cache_name(draw, dataclasses.replace(SMALL, **change))
        for change in (
            {}, {"start_lambda": 0.02}, {"start_iterations": 11}, {"start": "lplus_s"},
            {"start_init": "shared"}, {"start_lambda_static": 0.02},
        )
    }  # fmt: skip
    assert len(names) == 6
    # what the stages do with the start is not part of it
    assert chain_files.cache_name(draw, dataclasses.replace(SMALL, channels=8)) in names


def test_file_space_refuses_what_a_scanner_file_cannot_hold():
    # vds: 2-D variable-density points, which no cine sequence acquires
    with pytest.raises(ValueError, match="vds-8.*vds_lines, equispaced, radial"):
        _space(masks=("vds-8",))
    assert _space(masks=("radial-8",)).draw(5).mask == "radial"
    with pytest.raises(ValueError, match="noise_levels"):
        _space(noise_levels=(0.0, 0.02))
    assert _space().draw(5) == _space().draw(5) != _space().draw(6)
    with pytest.raises(ValueError, match="phantoms.*'brain'"):
        _space(phantoms=("cardiac", "brain"))


def test_generators_are_drawn_per_file_without_moving_the_other_draws():
    import dataclasses

    one, two = _space(), _space(phantoms=("cardiac", "blobs"))
    drawn = [two.draw(seed) for seed in range(40)]
    assert {d.phantom for d in drawn} == {"cardiac", "blobs"}
    for seed, draw in enumerate(drawn):  # the generator is drawn last: the rest is unchanged
        assert dataclasses.replace(draw, phantom="cardiac") == one.draw(seed)
    blob = next(d for d in drawn if d.phantom == "blobs")
    cardiac = dataclasses.replace(blob, phantom="cardiac")
    assert chain_files.cache_name(blob, SMALL) != chain_files.cache_name(cardiac, SMALL)
    # a blob file is simulated by its own generator: its target is not the cardiac one
    sample = chain_files.make_sample(blob, SMALL)
    other = chain_files.make_sample(cardiac, SMALL)
    a, b = sample["target"].abs().flatten(), other["target"].abs().flatten()
    assert float(torch.corrcoef(torch.stack([a, b]))[0, 1]) < 0.9


def test_training_builds_the_cache_once_and_trains_on_windows(tmp_path, caplog):
    cache = tmp_path / "cache"
    settings = [
        "model.n_stages=1", "model.channels=4", "model.start=llr", "model.start_iterations=10",
        "data.coil_mode=multi", "data.acquisition=chain_files", "data.masks=[vds_lines-4]",
        "data.frame_counts=[8]", "data.matrices=[40]", "data.n_coils=[4]", "data.frames=6",
        "data.noise_levels=[0.01, 0.03]", "data.n_train=2", "data.n_val=1",
        f"data.cache_dir={cache}", "optim.epochs=1", "run.max_steps_per_epoch=2",
    ]  # fmt: skip
    result = train(load_config(TINY, [*settings, f"run.out_dir={tmp_path / 'a'}"]))
    made = sorted(cache.glob("*.safetensors"))
    assert len(made) == 3 and result.weights_path is not None
    assert result.history and result.best_val_psnr > result.zero_filled_val_psnr
    stamps = [p.stat().st_mtime_ns for p in made]
    caplog.set_level("INFO", logger="training.chain_files")
    train(load_config(TINY, [*settings, f"run.out_dir={tmp_path / 'b'}"]))
    assert [p.stat().st_mtime_ns for p in sorted(cache.glob("*.safetensors"))] == stamps
    assert "all 3 samples cached" in caplog.text
    item = chain_files.ChainFileDataset(made, frames=6, train=True)[0]
    assert item.start is not None and item.start.shape == item.target.shape == (6, 40, 40)
    assert item.kspace.shape == (4, 6, 40, 40)


def test_chain_files_config_checks_the_generators():
    base = ["data.coil_mode=multi", "data.acquisition=chain_files", "data.crop_mode=fixed"]
    assert load_config(TINY, base).data.phantoms == ["cardiac"]
    both = load_config(TINY, [*base, "data.phantoms=[cardiac, blobs]"])
    assert both.data.phantoms == ["cardiac", "blobs"]
    for bad in ("[]", "[cardiac, brain]"):
        with pytest.raises(ValueError, match="data.phantoms"):
            load_config(TINY, [*base, f"data.phantoms={bad}"])


def test_chain_files_config_needs_batch_one_and_multi_coil():
    with pytest.raises(ValueError, match="batch_size"):
        load_config(TINY, ["data.coil_mode=multi", "data.acquisition=chain_files",
                           "optim.batch_size=2", "data.crop_mode=fixed"])  # fmt: skip
    with pytest.raises(ValueError, match="coil_mode: multi"):
        load_config(TINY, ["data.acquisition=chain_files"])


def test_keep_spokes_keeps_only_the_spokes_and_remakes_the_calibration(tmp_path):
    path = tmp_path / "full.h5"
    simulate_cine(path, seed=3, n_coils=3, frames=6, matrix=32, accel=1.0, noise_level=0.02)
    raw = read_raw(path)
    (full,), _ = assemble(raw.header, raw.acquisitions())
    kept = chain_files.keep_spokes(full, 6, seed=11)
    expected = radial_mask(6, 6, 32, 32, np.random.default_rng([11, 8])).numpy()
    assert np.array_equal(kept.mask, expected) and 2 < 1 / kept.mask.mean() < 8
    assert np.array_equal(kept.kspace, full.kspace * expected[None])
    # the maps' source sees only what the spokes sampled: their time average, not the file's
    count = expected.sum(axis=0)
    average = kept.kspace.sum(axis=1) / np.maximum(count, 1)
    assert np.allclose(kept.calibration, average, atol=1e-6)
    assert not np.allclose(kept.calibration, full.calibration, atol=1e-3)
    # the calibration region is the centred square the spokes' time average covers
    side = kept.calib_lines
    assert 4 <= side < 32 and full.calib_lines == 32
    top = 16 - side // 2
    assert (count[top : top + side, top : top + side] > 0).all()
    grown = 16 - (side + 1) // 2
    assert not (count[grown : grown + side + 1, grown : grown + side + 1] > 0).all()
    with pytest.raises(ValueError, match="sampled every line"):
        chain_files.keep_spokes(kept, 6, seed=11)


def test_a_radial_sample_has_its_maps_from_the_spokes_alone():
    draw = _space(masks=("radial-8",)).draw(7)
    sample = chain_files.make_sample(draw, SMALL)
    mask = sample["mask"]
    assert mask.shape == (8, 40, 40) and not torch.equal(mask[0], mask[1])  # rotated per frame
    assert torch.all(sample["kspace"][:, mask == 0] == 0)
    op = EncodingOp(mask, sample["coil_maps"][None])
    units = sample["kspace"][None]
    residual = (op.forward(sample["target"][None]) - units).norm() / units.norm()
    assert residual < 0.1  # the target agrees with the spokes up to the noise

    def error(x: torch.Tensor) -> float:
        target = sample["target"].abs()
        return float((x.abs() - target).norm() / target.norm())

    assert error(sample["start"]) < 0.5 * error(zero_filled(op, units)[0])
    # the same file read whole gives other maps: those of the spokes are what the chain has
    other = chain_files.make_sample(replace(draw, mask="vds_lines", accel=1.0), SMALL)
    assert not torch.allclose(other["coil_maps"], sample["coil_maps"], atol=1e-3)
