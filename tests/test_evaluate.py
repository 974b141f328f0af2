"""Evaluation: tables with paired statistics, both phantom families, tuned BART, noise."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from passnet_core import bart
from passnet_core.cli import main as passnet_main
from training.eval_cases import case_data, make_cases
from training.eval_report import MethodResult, paired_ci, paired_table

TINY_ARGS = ["--n-cases", "2", "--size", "6,32,32", "--masks", "radial-8", "--coils", "4"]


def test_tiny_evaluation_writes_tables_notes_and_figures(
    tmp_path: Path, weights_file: Path
) -> None:
    out = tmp_path / "eval"
    args = ["evaluate", *TINY_ARGS, "--families", "synthetic", "--methods", "zero-filled,passnet"]
    assert passnet_main([*args, "--weights", str(weights_file), "--out", str(out)]) == 0
    text = (out / "evaluation.md").read_text()
    assert "## synthetic family (2 cases)" in text
    assert "| zero-filled |" in text and "| passnet |" in text and "radial-8" in text
    assert "| passnet − zero-filled |" in text and "95 % CI" in text
    assert "Noise: white complex Gaussian" in text and "- command: `" in text
    raw = json.loads((out / "evaluation.json").read_text())
    for method in ("zero-filled", "passnet"):
        scores = raw["families"]["synthetic"][method]
        assert scores["skipped"] is None and len(scores["psnr"]["radial-8"]) == 2
        assert all(5 < v < 60 for v in scores["psnr"]["radial-8"])
        assert all(0 < v <= 1 for v in scores["ssim"]["radial-8"])
    png = out / "fig_synthetic_radial-8.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_reused_methods_keep_their_scores_and_must_reproduce_them(tmp_path: Path) -> None:
    args = ["evaluate", *TINY_ARGS, "--families", "synthetic", "--methods", "zero-filled,llr"]
    first = tmp_path / "first"
    assert passnet_main([*args, "--out", str(first)]) == 0
    stored = json.loads((first / "evaluation.json").read_text())["families"]["synthetic"]
    again = tmp_path / "again"
    reuse = ["--reuse", str(first / "evaluation.json"), "--reuse-methods", "llr"]
    assert passnet_main([*args, *reuse, "--out", str(again)]) == 0
    raw = json.loads((again / "evaluation.json").read_text())
    assert raw["reused"]["methods"] == ["llr"]
    assert raw["families"]["synthetic"]["llr"] == stored["llr"]  # stored scores and times
    assert (again / "fig_synthetic_radial-8.png").is_file()  # still run on case 0 for the figure

    # other cases (noise level) or a method that no longer reproduces its score: refused
    assert passnet_main([*args, *reuse, "--noise-level", "0.05", "--out", str(again)]) == 2
    doctored = json.loads((first / "evaluation.json").read_text())
    doctored["families"]["synthetic"]["llr"]["psnr"]["radial-8"][0] += 1.0
    bad = tmp_path / "doctored.json"
    bad.write_text(json.dumps(doctored))
    reuse_bad = ["--reuse", str(bad), "--reuse-methods", "llr"]
    assert passnet_main([*args, *reuse_bad, "--out", str(again)]) == 2
    assert passnet_main([*args, "--reuse-methods", "llr", "--out", str(again)]) == 2
    assert (
        passnet_main([*args, "--reuse", str(first / "evaluation.json"), "--out", str(again)]) == 2
    )


def test_missing_bart_and_weights_are_skipped_with_reasons(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr("passnet_core.bart.available", lambda: False)
    missing = tmp_path / "none.safetensors"
    monkeypatch.setattr("passnet_core.weights.ablation_weights_path", lambda: missing)
    out = tmp_path / "eval"
    methods = "zero-filled,bart-llr,passnet-uniform"
    args = ["evaluate", *TINY_ARGS, "--families", "synthetic", "--n-cases", "1"]
    assert passnet_main([*args, "--methods", methods, "--out", str(out)]) == 0
    assert "bart-llr: skipped (bart not installed)" in capsys.readouterr().out
    text = (out / "evaluation.md").read_text()
    assert "| bart-llr | skipped: bart not installed |" in text
    assert f"| passnet-uniform | skipped: no weights at {missing}" in text


def test_paired_interval_matches_a_hand_computed_t_interval() -> None:
    a, b = [30.0, 31.0, 32.5, 29.5], [29.0, 30.5, 31.0, 29.0]
    diff = np.subtract(a, b)
    mean, lo, hi = paired_ci(a, b)
    half = 3.182446305284263 * diff.std(ddof=1) / 2.0  # t_{0.975, 3}
    assert mean == pytest.approx(diff.mean())
    assert (lo, hi) == pytest.approx((diff.mean() - half, diff.mean() + half))
    # a constant offset is exact: zero-width interval
    assert paired_ci([1.0, 2.0, 3.0], [0.0, 1.0, 2.0]) == pytest.approx((1.0, 1.0, 1.0))
    results = {
        "passnet": MethodResult("passnet", psnr={"m": a}, ssim={"m": [0.9] * 4}),
        "lplus-s": MethodResult("lplus-s", psnr={"m": b}, ssim={"m": [0.8] * 4}),
    }
    row = paired_table(results, ["m"], "passnet")[-1]
    assert row.startswith(f"| passnet − lplus-s | {mean:+.2f} dB [{lo:+.2f}, {hi:+.2f}] / +0.100")


def test_families_differ_and_noise_follows_the_level() -> None:
    synthetic = make_cases("synthetic", 1, 11, (6, 32, 32), coils=4)[0]
    heldout = make_cases("heldout", 1, 11)[0]
    assert synthetic.target.shape == (6, 32, 32) and synthetic.coil_maps.shape[0] == 4
    assert heldout.target.shape == (24, 112, 144) and heldout.coil_maps.shape == (12, 112, 144)
    np.testing.assert_allclose((np.abs(heldout.coil_maps) ** 2).sum(0), 1.0, rtol=1e-5)
    clean = case_data(heldout, "vds_lines-8", 0.0)
    noisy = case_data(heldout, "vds_lines-8", 0.05)
    again = case_data(heldout, "vds_lines-8", 0.05)
    assert np.array_equal(noisy.kspace.numpy(), again.kspace.numpy())  # deterministic
    acquired = clean.mask.bool().expand_as(clean.kspace)
    assert not noisy.kspace[~acquired].abs().any()  # noise only where sampled
    # both are normalised to max |A^H d| = 1, so compare in the units of the truth
    residual = (noisy.kspace / noisy.target.abs().max()) - (clean.kspace / clean.target.abs().max())
    sigma = float(residual[acquired].abs().pow(2).mean().sqrt())
    assert sigma == pytest.approx(0.05, rel=0.05)


@pytest.mark.skipif(not bart.available(), reason="bart is not installed (apt-get install bart)")
def test_bart_lambda_is_tuned_per_mask_on_validation_cases(tmp_path: Path) -> None:
    out = tmp_path / "eval"
    args = ["evaluate", *TINY_ARGS, "--families", "synthetic", "--n-cases", "1"]
    assert passnet_main([*args, "--methods", "bart-llr", "--out", str(out)]) == 0
    tuning = json.loads((out / "evaluation.json").read_text())["bart_tuning"]["bart-llr"]
    grid = tuning["radial-8"]["grid"]
    assert len(grid) >= 3 and float(tuning["radial-8"]["best"]) == float(
        max(grid, key=grid.__getitem__)
    )
    assert "chosen radial-8:" in (out / "evaluation.md").read_text()


@pytest.mark.parametrize(
    "bad",
    [
        ["--size", "8,32"],
        ["--methods", "zero-filled,magic"],
        ["--masks", "spiral-4"],
        ["--families", "real"],
        ["--noise-level", "-1"],
        ["--weights", "/nonexistent/w.safetensors"],
    ],
)
def test_bad_arguments_are_refused(tmp_path: Path, bad: list[str]) -> None:
    assert passnet_main(["evaluate", "--out", str(tmp_path / "x"), *bad]) == 2
    assert not (tmp_path / "x").exists()


def test_validation_curves_are_drawn_from_runs_and_redrawn_from_their_sidecar(
    tmp_path: Path,
) -> None:
    from training.figures import main as figures_main

    run = tmp_path / "run"
    run.mkdir()
    history = [
        {"epoch": e, "val_psnr": 30.0 + e, "zf_psnr": 18.0, "train_loss": 0.1} for e in range(3)
    ]
    (run / "history.json").write_text(json.dumps(history))
    (tmp_path / "other.json").write_text(json.dumps(history[:2]))
    out = tmp_path / "figs" / "curves.png"
    assert figures_main([str(out), f"default={run}", f"ablation={tmp_path / 'other.json'}"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar == {"default": history, "ablation": history[:2]}
    again = tmp_path / "again.png"
    assert figures_main([str(again), str(out.with_suffix(".json"))]) == 0
    assert json.loads(again.with_suffix(".json").read_text()) == sidecar
    with pytest.raises(SystemExit, match="LABEL=PATH"):
        figures_main([str(again), str(run / "history.json")])


@pytest.mark.parametrize("static", [None, 0.02])
def test_recipe_line_names_the_start_and_the_training_length(tmp_path, static):
    from passnet_core.model import PASSNet, PASSNetConfig
    from passnet_core.weights import save_weights
    from training.evaluate import describe_recipe

    config = PASSNetConfig(
        n_stages=2, channels=4, start="llr", start_lambda=0.03, start_lambda_static=static
    )
    run = {"optim": {"epochs": 3}, "run": {"max_steps_per_epoch": 7}}
    training = {"training_config": run}
    path = save_weights(PASSNet(config), tmp_path / "w.safetensors", training)
    line = describe_recipe(path)
    assert line.startswith("2 stages from llr (lambda 0.03")
    assert ("0.02 where every frame has the same lines" in line) == (static is not None)
    assert "21 steps (3 x 7)" in line
