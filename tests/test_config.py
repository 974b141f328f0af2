"""Training configuration: paper defaults, strict validation, overrides, shipped recipes."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.config import apply_overrides, load_config

CONFIGS = Path(__file__).resolve().parents[1] / "training" / "configs"


def test_defaults_follow_the_paper() -> None:
    cfg = load_config()
    assert (cfg.model.n_stages, cfg.model.channels) == (15, 16)
    assert (cfg.optim.lr, cfg.optim.betas, cfg.optim.eps) == (1e-3, [0.9, 0.999], 1e-8)
    assert (cfg.optim.lr_decay, cfg.optim.epochs, cfg.optim.batch_size) == (0.95, 50, 1)
    assert cfg.data.crop_sizes == [64, 96, 128, 144, 156] and cfg.data.frames == 16


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"optim": {"lr": "1e-3"}}, r"optim\.lr: expected float, got str"),
        ({"optim": {"learning_rate": 0.1}}, r"optim\.learning_rate: unknown key"),
        ({"model": {"n_stages": 2.5}}, r"model\.n_stages: expected int, got float"),
        ({"run": {"tensorboard": "yes"}}, r"run\.tensorboard: expected bool, got str"),
        ({"data": {"crop_sizes": [64, "96"]}}, r"data\.crop_sizes: expected list of int"),
        ({"model": {"shrinkage": "hard"}}, r"model: .*shrinkage"),
        ({"data": {"source": "ukbb"}}, r"data\.source: 'ukbb' is not one of"),
        ({"data": {"source": "ocmr"}}, r"data\.path: required"),
        ({"data": {"masks": ["radial"]}}, r"data\.masks: "),
        ({"optim": {"batch_size": 2}}, r"optim\.batch_size: > 1 needs data\.crop_mode=fixed"),
        ({"training": {}}, r"training: unknown section"),
        ({"optim": [1, 2]}, r"optim: expected a mapping"),
        ({"data": {"acquisition": "scanner"}}, r"data\.acquisition: 'scanner' is not one of"),
        ({"data": {"acquisition": "chain"}}, r"data\.acquisition: chain needs .*multi"),
    ],
)
def test_bad_values_name_the_key(raw: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_config(raw)


def test_ints_become_floats_and_overrides_apply() -> None:
    cfg = load_config({"optim": {"lr": 1}}, ["optim.epochs=3", "data.masks=[vds-8]"])
    assert isinstance(cfg.optim.lr, float) and cfg.optim.epochs == 3
    assert cfg.data.masks == ["vds-8"]
    raw = {"optim": {"lr": 0.1}}
    assert apply_overrides(raw, ["optim.lr=0.2"]) == {"optim": {"lr": 0.2}}
    assert raw == {"optim": {"lr": 0.1}}  # input untouched
    with pytest.raises(ValueError, match="SECTION.KEY=VALUE"):
        apply_overrides({}, ["lr=0.1"])


def test_round_trip_and_missing_file(tmp_path: Path) -> None:
    cfg = load_config({"model": {"n_stages": 3}, "run": {"max_steps_per_epoch": 7}})
    assert load_config(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    "name", ["paper_full.yaml", "cpu_default.yaml", "tiny_test.yaml", "chain_finetune.yaml"]
)
def test_shipped_recipes_load(name: str) -> None:
    cfg = load_config(CONFIGS / name)
    assert cfg.optim.epochs >= 1 and cfg.model.n_stages >= 1
