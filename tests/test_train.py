"""Training: a tiny configuration learns, resumes at the right epoch, refuses bad configs."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from passnet_core.cli import main as passnet_main
from passnet_core.model import PASSNet
from passnet_core.weights import load_weights, read_metadata
from training.config import load_config
from training.data import collate_cine
from training.train import (
    BEST_WEIGHTS_NAME,
    CHECKPOINT_NAME,
    load_checkpoint,
    make_datasets,
    train,
    validate,
)

TINY = Path(__file__).resolve().parents[1] / "training" / "configs" / "tiny_test.yaml"
# The untrained network is 2 gradient steps (step size 1) and zero-initialised residual
# outputs; learning is measured against it.
MIN_GAIN_DB = 0.5


def test_tiny_training_learns_and_resumes(tmp_path: Path) -> None:
    torch.set_num_threads(2)
    out = tmp_path / "run"
    first = load_config(TINY, [f"run.out_dir={out}", "optim.epochs=1"])
    torch.manual_seed(first.data.seed)  # train() seeds the same way before building its model
    untrained = validate(
        PASSNet(first.model),
        DataLoader(make_datasets(first)[1], collate_fn=collate_cine),
        torch.device("cpu"),
        magnitude=False,
    )["psnr"]
    start = time.perf_counter()
    result = train(first)
    assert [h["epoch"] for h in result.history] == [0]
    ckpt = load_checkpoint(out / CHECKPOINT_NAME)
    assert ckpt["epoch"] == 0 and set(ckpt) >= {"model", "optimizer", "scheduler", "rng", "config"}

    # same run, now allowed two epochs: resumes after epoch 0 and trains epoch 1 only
    second = load_config(TINY, [f"run.out_dir={out}"])
    result = train(second, resume=True)
    elapsed = time.perf_counter() - start
    assert result.epochs_run == 1
    assert [h["epoch"] for h in result.history] == [0, 1]
    assert load_checkpoint(out / CHECKPOINT_NAME)["epoch"] == 1
    lrs = [h["lr"] for h in result.history]
    assert lrs[1] == pytest.approx(lrs[0] * 0.95)  # scheduler state survived the resume

    gain = result.best_val_psnr - untrained
    print(f"tiny training: {elapsed:.1f} s, val PSNR gain over the untrained net {gain:.2f} dB")
    assert gain >= MIN_GAIN_DB, f"val PSNR only {gain:.2f} dB above the untrained network"
    # single coil: A^H d is already data consistent (A^H A A^H d = A^H d), so the untrained
    # network's gradient steps and zero-initialised residuals return zero-filling itself
    assert untrained == pytest.approx(result.zero_filled_val_psnr, abs=1e-4)

    weights = out / BEST_WEIGHTS_NAME
    meta = read_metadata(weights)["training"]
    assert meta["val_psnr"] == pytest.approx(result.best_val_psnr)
    assert meta["data_source"] == "synthetic" and meta["epoch"] == result.best_epoch
    assert load_weights(weights).config.channels == 8
    assert json.loads((out / "history.json").read_text())[-1]["epoch"] == 1


def test_tensorboard_logging_and_resume_refusing_another_model(tmp_path: Path) -> None:
    one_step = ["optim.epochs=1", "run.max_steps_per_epoch=1", "data.n_val=1"]
    logging_on = ["run.tensorboard=true", "run.image_every=1"]
    train(load_config(TINY, [f"run.out_dir={tmp_path}", *one_step, *logging_on]))
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    other = load_config(TINY, [f"run.out_dir={tmp_path}", "model.n_stages=3"])
    with pytest.raises(ValueError, match="differs"):
        train(other, resume=True)


def test_cli_refuses_unknown_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  learning_rate: 0.001\n")
    assert passnet_main(["train", "--config", str(bad)]) == 2
    with pytest.raises(ValueError, match=r"optim\.learning_rate: unknown key"):
        load_config(bad)


def test_pretrain_runs_the_first_stage_once_and_starts_from_its_weights(tmp_path, caplog):
    import yaml

    first_out = tmp_path / "first"
    raw = yaml.safe_load(TINY.read_text())
    raw["optim"]["epochs"] = 1
    raw["run"].update(out_dir=str(first_out), max_steps_per_epoch=2)
    first_yaml = tmp_path / "first.yaml"
    first_yaml.write_text(yaml.safe_dump(raw))
    # as the shipped recipe: the second stage switches the phase reference on and changes
    # the start (what the stages are given, not their parameters)
    second = [
        f"run.pretrain={first_yaml}", "optim.epochs=1", "run.max_steps_per_epoch=1",
        "model.phase_reference=lowres", "model.start_lambda=0.02", "model.start_iterations=3",
    ]  # fmt: skip
    caplog.set_level("INFO", logger="training.train")
    train(load_config(TINY, [*second, f"run.out_dir={tmp_path / 'a'}"]))
    assert (first_out / BEST_WEIGHTS_NAME).is_file() and "training " in caplog.text
    stamp = (first_out / BEST_WEIGHTS_NAME).stat().st_mtime_ns
    caplog.clear()
    # the second stage starts from the first stage's weights: with no step it keeps them
    result = train(
        load_config(TINY, [*second, f"run.out_dir={tmp_path / 'b'}", "optim.lr=1.0e-12"])
    )
    assert "already trained" in caplog.text
    assert (first_out / BEST_WEIGHTS_NAME).stat().st_mtime_ns == stamp
    first = load_weights(first_out / BEST_WEIGHTS_NAME).state_dict()
    for name, value in result.model.state_dict().items():
        assert torch.allclose(value, first[name], atol=1e-6), name
    with pytest.raises(ValueError, match="keep one"):
        load_config(TINY, [*second, "run.init_weights=w.safetensors"])
    with pytest.raises(ValueError, match="differs from the configured"):  # other parameters
        train(load_config(TINY, [*second, f"run.out_dir={tmp_path / 'c'}", "model.channels=3"]))
