"""``passnet bench`` end to end on tiny sizes, writing only into tmp_path."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from benchmarks import latency, run
from passnet_core import bart
from passnet_core.cli import main
from passnet_core.masks import radial_mask
from passnet_core.operators import encoding, zero_filled


def _correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten(), b.flatten()
    return float((a.conj() @ b).abs() / (a.norm() * b.norm()))


def test_quick_bench_writes_every_section(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may land in the repository
    out = tmp_path / "B.md"
    assert main(["bench", "--quick", "--threads", "1", "--out", str(out)]) == 0
    text = out.read_text()
    for title in ("Inference latency", "GPU inference", "Streaming throughput", "Quality"):
        assert f"## {title}" in text
    # whole chain: a row per phantom with a score for every method, and PASSNet's differences
    assert "## Whole-chain quality" in text
    for phantom in ("cardiac", "ellipses"):
        row = re.search(rf"\| {phantom} \|((?: \d+\.\d+ dB / \d\.\d+ \|){{4}})", text)
        assert row, phantom
        assert re.search(rf"\| {phantom} \|(?: [+-]\d+\.\d+ \|){{3}}", text)
    assert "- command: `" in text and "- machine: CPU" in text
    # a latency row per quick size with a positive PASSNet time
    for t, h, w, c in latency.QUICK_SIZES:
        row = re.search(rf"\| {t}x{h}x{w}x{c} \| \d+ \| (\d+\.\d+)", text)
        assert row and float(row.group(1)) > 0
    if not torch.cuda.is_available():
        assert "no CUDA device: skipped" in text
    assert re.search(r"\| line ingest \(AcquisitionBuffer.add\) \| [\d,]+ \|", text)
    assert re.search(r"\| zero-filled \| \d+\.\d+ ± ", text)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["B.md"]


def test_quality_section_can_quote_an_evaluation(tmp_path):
    evaluation = tmp_path / "evaluation.md"
    evaluation.write_text("# PASSNet evaluation: 2 cases\n\n| method | vds-8 |\n| zf | 20 |\n")
    out = tmp_path / "B.md"
    args = ["bench", "--sections", "quality", "--quality-from", str(evaluation)]
    assert main([*args, "--out", str(out)]) == 0
    text = out.read_text()
    assert f"Quoted from `{evaluation}`" in text
    assert "### PASSNet evaluation: 2 cases" in text and "| zf | 20 |" in text


def test_bad_arguments_fail_before_any_work(tmp_path):
    out = tmp_path / "B.md"
    assert main(["bench", "--quality-from", str(tmp_path / "none.md"), "--out", str(out)]) == 2
    assert main(["bench", "--sizes", "16x128x128", "--out", str(out)]) == 2
    assert main(["bench", "--sections", "latency,speed", "--out", str(out)]) == 2
    assert main(["bench", "--repeats", "0", "--out", str(out)]) == 2
    assert not out.exists()


def test_parse_sizes():
    assert run.parse_sizes("16x128x128x1, 30X192x156x15") == [(16, 128, 128, 1), (30, 192, 156, 15)]
    with pytest.raises(ValueError, match="TxHxWxCOILS"):
        run.parse_sizes("16x128xAx1")


def test_breakdown_fractions_cover_the_forward_pass():
    case = latency.make_case((4, 24, 20, 2))
    model, _ = latency.build_models(1, torch.device("cpu"))
    fractions = latency.stage_breakdown(model, case, torch.device("cpu"))
    assert set(fractions) == {"Conv3d", "SVD", "FFT", "roll/cat", "other"}
    assert sum(fractions.values()) == pytest.approx(1.0)
    assert fractions["Conv3d"] > 0 and fractions["SVD"] > 0 and fractions["FFT"] > 0


@pytest.mark.skipif(not bart.available(), reason="bart not installed")
@pytest.mark.parametrize("coils", [1, 3])
def test_bart_llr_uses_the_right_axes(coils):
    # a wrong axis order would reconstruct noise: LLR must beat zero filling clearly
    case = latency.make_case((6, 40, 32, coils), accel=4)
    truth = latency.make_case((6, 40, 32, coils), accel=1)
    kspace, op = encoding(*truth.batched())
    reference = zero_filled(op, kspace)
    kspace, op = encoding(*case.batched())
    zero_filled_image = zero_filled(op, kspace)
    recon = latency.bart_llr(case)
    assert recon.shape == reference.shape
    assert _correlation(recon, reference) > 0.99 > _correlation(zero_filled_image, reference)


@pytest.mark.skipif(not bart.available(), reason="bart not installed")
def test_bart_data_scale_fixes_what_lambda_means():
    # -w fixes the units lambda is in: data c times larger with a c times larger data scale
    # give c times the image, and a smaller data scale (the same lambda relatively stronger)
    # changes the result, so the scale reaches BART (without -w it would equal `one`)
    case = latency.make_case((6, 32, 32, 3), accel=4)
    assert case.coil_maps is not None
    k, mask, maps = case.kspace.numpy(), case.mask.numpy(), case.coil_maps.numpy()
    scale = float(np.abs(k).max())
    one = bart.pics(k, mask, maps, "L:7:7:0.002", 20, data_scale=scale)
    ten = bart.pics(10 * k, mask, maps, "L:7:7:0.002", 20, data_scale=10 * scale)
    np.testing.assert_allclose(ten, 10 * one, rtol=1e-3, atol=1e-4 * float(np.abs(ten).max()))
    stronger = bart.pics(k, mask, maps, "L:7:7:0.002", 20, data_scale=scale / 10)
    assert float(np.abs(stronger - one).max()) > 1e-2 * float(np.abs(one).max())
    with pytest.raises(ValueError, match="data_scale"):
        bart.pics(k, mask, maps, "L:7:7:0.002", 20, data_scale=0.0)


def test_lplus_s_tuning_picks_per_mask_settings_and_scores_passnet_against_them(tmp_path, capsys):
    import json

    from benchmarks import lplus_s_tuning

    evaluation = tmp_path / "evaluation.json"
    masks = {m: [30.0] for m in lplus_s_tuning.MASKS}
    evaluation.write_text(
        json.dumps(
            {"families": {"synthetic": {"passnet": {"psnr": masks}, "lplus-s": {"psnr": masks}}}}
        )
    )
    args = ["--families", "synthetic", "--evaluation", str(evaluation), "--tune-cases", "1"]
    assert lplus_s_tuning.main([*args, "--n-cases", "1", "--max-iterations", "2"]) == 0
    out = capsys.readouterr().out
    for mask in lplus_s_tuning.MASKS:
        chosen = re.search(rf"chosen {mask}: lambda_L ([\d.]+), lambda_S ([\d.]+), (\d) iter", out)
        assert chosen and float(chosen.group(1)) in lplus_s_tuning.GRID
        assert int(chosen.group(3)) in (1, 2)
        assert re.search(rf"synthetic {mask}: tuned L\+S \d+\.\d+ dB .* [+-]\d+\.\d+ \[", out)


def test_chain_section_scores_equispaced_files_and_says_so():
    from benchmarks import chain_quality

    methods = ("zero-filled", "llr")
    scores = chain_quality.measure_chain_quality(1, 4, (4, 48, 48, 2), methods, mask="equispaced")
    for phantom in chain_quality.PHANTOMS:
        zero_filled_db, llr_db = (scores.psnr[(phantom, m)][0] for m in methods)
        assert llr_db > zero_filled_db  # the files were read, undersampled and reconstructed
    text = chain_quality.chain_markdown(scores)
    assert "equispaced lines (the same in every frame) with 24 calibration lines" in text
    assert "`passnet simulate --mask equispaced --accel 4" in text


def test_chain_figures_show_what_the_table_scores(tmp_path, monkeypatch):
    from benchmarks import chain_quality
    from passnet_core import metrics
    from training import figures

    drawn: dict[str, dict] = {}
    draw = figures.comparison_figure

    def spy(target, recons, mask, path, **kwargs):
        drawn[path.name] = {"target": target, "recons": recons, "mask": mask}
        return draw(target, recons, mask, path, **kwargs)

    monkeypatch.setattr(figures, "comparison_figure", spy)
    methods = ("zero-filled", "llr")
    scores = chain_quality.measure_chain_quality(
        2, 4, (4, 48, 48, 2), methods, figure_dir=tmp_path / "figs"
    )
    # one figure per phantom, of its first file only
    names = [f"chain_vds_lines_R4_{p}.png" for p in chain_quality.PHANTOMS]
    assert [f.name for f in scores.figures] == names
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == sorted(names)
    for phantom, name in zip(chain_quality.PHANTOMS, names, strict=True):
        shown = drawn[name]
        assert shown["mask"].shape == shown["target"].shape == (4, 48, 48)
        assert 0 < shown["mask"].mean() < 1  # the file's own undersampling
        for method in methods:  # scaled as scored: the titles' PSNR are the table's
            psnr = float(metrics.psnr(shown["recons"][method], shown["target"], magnitude=True))
            assert psnr == pytest.approx(scores.psnr[(phantom, method)][0], abs=1e-6)
    assert "Figures (the first file of each phantom" in chain_quality.chain_markdown(scores)


def test_chain_section_scores_radial_spokes_kept_after_the_chain_ingest(tmp_path, monkeypatch):
    from benchmarks import chain_quality
    from training import figures

    shape = (4, 48, 48, 2)
    spokes = chain_quality.spokes_for(4, shape)

    def gap(n: int) -> float:  # from R = 4
        return abs(1 / float(radial_mask(n, 4, 48, 48, np.random.default_rng(0)).mean()) - 4)

    assert gap(spokes) <= min(gap(spokes - 1), gap(spokes + 1))
    shown: list[np.ndarray] = []
    draw = figures.comparison_figure

    def spy(target, recons, mask, path, **kwargs):
        shown.append(mask)
        return draw(target, recons, mask, path, **kwargs)

    monkeypatch.setattr(figures, "comparison_figure", spy)
    methods = ("zero-filled", "llr")
    scores = chain_quality.measure_chain_quality(
        1, 4, shape, methods, mask="radial", figure_dir=tmp_path
    )
    assert scores.spokes == spokes
    for phantom in chain_quality.PHANTOMS:
        zero_filled_db, llr_db = (scores.psnr[(phantom, m)][0] for m in methods)
        assert llr_db > zero_filled_db + 1  # reconstructed from the spokes, not every line
    # the figures show the spokes kept, rotated per frame, at about R = 4
    for mask in shown:
        assert 1 / 6 < mask.mean() < 1 / 3 and not np.array_equal(mask[0], mask[1])
    text = chain_quality.chain_markdown(scores)
    assert f"pseudo-radial spokes (rotated per frame), {spokes} per frame (R = 4)" in text
    assert "only the spokes kept" in text
