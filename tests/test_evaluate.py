"""Evaluation: a tiny run writes the table, the raw numbers and a figure; bart is optional."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from passnet_core.cli import main as passnet_main

TINY_ARGS = ["--n-cases", "1", "--size", "8,32,32", "--masks", "radial-8"]


def test_tiny_evaluation_writes_table_and_figure(tmp_path: Path, weights_file: Path) -> None:
    out = tmp_path / "eval"
    args = ["evaluate", *TINY_ARGS, "--methods", "zero-filled,passnet"]
    assert passnet_main([*args, "--weights", str(weights_file), "--out", str(out)]) == 0
    table = (out / "evaluation.md").read_text()
    assert "| zero-filled |" in table and "| passnet |" in table and "radial-8" in table
    assert "- command: `" in table and "- machine: CPU" in table and "8 coils" in table
    raw = json.loads((out / "evaluation.json").read_text())
    for method in ("zero-filled", "passnet"):
        scores = raw["methods"][method]
        assert scores["skipped"] is None
        assert len(scores["psnr"]["radial-8"]) == 1 and 5 < scores["psnr"]["radial-8"][0] < 60
        assert 0 < scores["ssim"]["radial-8"][0] <= 1 and scores["seconds"][0] > 0
    png = out / "fig_radial-8.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_missing_bart_and_untrained_ablation_are_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr("passnet_core.bart.available", lambda: False)
    missing = tmp_path / "none.safetensors"
    monkeypatch.setattr("training.evaluate.ablation_weights_path", lambda: missing)
    out = tmp_path / "eval"
    methods = "zero-filled,bart-llr,bart-tv,passnet-uniform"
    assert passnet_main(["evaluate", *TINY_ARGS, "--methods", methods, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "bart-llr: skipped (bart not installed)" in printed
    table = (out / "evaluation.md").read_text()
    assert "| bart-tv | skipped: bart not installed |" in table
    assert f"| passnet-uniform | skipped: no weights at {missing}" in table
    raw = json.loads((out / "evaluation.json").read_text())
    assert raw["methods"]["bart-llr"]["psnr"] == {}
    assert len(raw["methods"]["zero-filled"]["psnr"]["radial-8"]) == 1


@pytest.mark.parametrize(
    "bad",
    [
        ["--size", "8,32"],
        ["--methods", "zero-filled,magic"],
        ["--masks", "spiral-4"],
        ["--weights", "/nonexistent/w.safetensors"],
    ],
)
def test_bad_arguments_are_refused(tmp_path: Path, bad: list[str]) -> None:
    assert passnet_main(["evaluate", "--out", str(tmp_path / "x"), *bad]) == 2
    assert not (tmp_path / "x").exists()
