"""gadgets.replay (`passnet recon`): files in, ISMRMRD images out, failures isolated."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from pathlib import Path

import ismrmrd
import numpy as np
import pytest
import torch
from helpers import acquisitions, header_xml, known_cine

from gadgets.recon_cli import add_arguments
from passnet_core import methods
from passnet_core.cli import main
from passnet_core.fft import fft2c
from passnet_core.ismrmrd_io import read_images, write_raw


def oversampled_two_slice_file(path, nan_in_second: bool = False):
    """2 slices x 3 frames, 4 coils, 16 x 32 encoded (2x readout oversampling) -> 16 x 16."""
    image, maps, _ = known_cine(t=3)
    wide = np.zeros((3, 16, 32), np.complex64)
    wide[..., 8:24] = image
    maps_wide = np.pad(maps, ((0, 0), (0, 0), (8, 8)), mode="edge")
    kspace = fft2c(torch.from_numpy(maps_wide[:, None] * wide[None])).numpy()
    rows = np.zeros((3, 16), bool)
    rows[:, ::2] = True
    rows[:, 5:12] = True
    first = acquisitions(kspace, rows, slice_index=0, last_in_measurement=False)
    second = acquisitions(kspace, rows, slice_index=1)
    if nan_in_second:
        second[2].data[0, 0] = np.nan
    write_raw(path, header_xml(32, 16, recon_x=16, frames=3, slices=2), first + second)
    return path


def recon(tmp_path, raw, weights, *extra):
    out = tmp_path / "images.h5"
    argv = ["recon", str(raw), "--out", str(out), "--weights", str(weights), "--device", "cpu"]
    return main([*argv, "--no-progress", *extra]), out


def test_replay_writes_ismrmrd_images_and_extras(tmp_path, weights_file, caplog):
    caplog.set_level(logging.INFO)
    raw = oversampled_two_slice_file(tmp_path / "raw.h5")
    png, nifti, dicom = tmp_path / "m.png", tmp_path / "v.nii.gz", tmp_path / "dcm"
    rc, out = recon(
        tmp_path, raw, weights_file, "--png", str(png), "--nifti", str(nifti), "--dicom", str(dicom)
    )
    assert rc == 0
    with ismrmrd.Dataset(str(out), "dataset", mode="r") as dset:
        assert dset.number_of_images("image_1") == 6
        images = [dset.read_image("image_1", i) for i in range(6)]
        assert b"ismrmrdHeader" in dset.read_xml_header()
    assert [(im.slice, im.phase, im.image_index) for im in images] == [
        (s, t, 1 + 3 * s + t) for s in (0, 1) for t in range(3)
    ]
    assert images[0].matrix_size == (16, 16, 1) and images[0].data.shape == (1, 1, 16, 16)
    assert tuple(images[0].field_of_view) == (32.0, 16.0, 8.0)
    assert tuple(images[3].position) == (1.0, 2.0, 4.0)
    assert tuple(images[3].read_dir) == (1.0, 0.0, 0.0)
    assert images[1].acquisition_time_stamp >= 1000  # from frame 1's raw lines
    assert png.stat().st_size > 0 and nifti.stat().st_size > 0
    assert len(list(dicom.glob("*.dcm"))) == 6
    # every file written is announced, one line each
    wrote = [r.getMessage() for r in caplog.records if r.getMessage().startswith("wrote ")]
    assert len(wrote) == 4
    assert f"wrote {out}: 6 ISMRMRD images" in wrote
    assert any(m.startswith(f"wrote PNG {png}") for m in wrote)
    assert any(m.startswith(f"wrote NIfTI {nifti}: shape (16, 16, 2, 3)") for m in wrote)
    assert any(m.startswith(f"wrote DICOM series {dicom}/: 6 files") for m in wrote)
    # a second method's series shares the DICOM folder without overwriting the first
    import pydicom

    assert (
        recon(tmp_path, raw, weights_file, "--method", "zero-filled", "--dicom", str(dicom))[0] == 0
    )
    files = sorted(dicom.glob("*.dcm"))
    assert len(files) == 12
    assert len({pydicom.dcmread(f).SeriesInstanceUID for f in files}) == 2


def test_progress_counts_reconstructed_slices(tmp_path, weights_file, monkeypatch):
    import contextlib

    from gadgets import replay

    class Bar:
        def __init__(self, total):
            self.total, self.n, self.disable = total, 0, False

        def update(self, n=1):
            self.n += n

        def set_postfix_str(self, text):
            self.postfix = text

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    bars = []

    def fake_progress(total, label, disabled):
        bars.append(Bar(total))
        return bars[-1], contextlib.nullcontext()

    monkeypatch.setattr(replay, "_progress", fake_progress)
    raw = oversampled_two_slice_file(tmp_path / "raw.h5")
    rc, _ = recon(tmp_path, raw, weights_file)
    assert rc == 0 and (bars[0].total, bars[0].n) == (2, 2)  # slices, not 24 acquisitions
    rc, _ = recon(tmp_path, oversampled_two_slice_file(tmp_path / "nan.h5", True), weights_file)
    assert rc == 1 and (bars[1].total, bars[1].n, bars[1].postfix) == (2, 1, "1 failed")


def test_failed_slice_gives_nonzero_exit_but_good_images(tmp_path, weights_file):
    raw = oversampled_two_slice_file(tmp_path / "raw.h5", nan_in_second=True)
    rc, out = recon(tmp_path, raw, weights_file)
    assert rc == 1
    images = read_images(out)["image_1"]
    assert len(images) == 3 and {im.slice for im in images} == {0}


def test_unreadable_input_fails_cleanly(tmp_path, weights_file):
    bad = tmp_path / "bad.h5"
    bad.write_text("not hdf5")
    rc, out = recon(tmp_path, bad, weights_file)
    assert rc == 2 and not out.exists()


def test_simulated_cine_file(tmp_path, weights_file, cine_stream, cine_file):
    rc, out = recon(tmp_path, cine_file, weights_file, "--frame-dimension", "auto")
    assert rc == 0
    images = read_images(out)["image_1"]
    assert len(images) == cine_stream.frames * cine_stream.slices
    assert all(np.isfinite(im.data).all() for im in images)


@pytest.mark.slow
def test_siemens_scanner_file_end_to_end(tmp_path, weights_file, siemens_file):
    rc, out = recon(tmp_path, siemens_file, weights_file)
    assert rc == 0
    (image,) = read_images(out)["image_1"]
    assert image.matrix_size == (192, 144, 1)
    assert tuple(image.field_of_view) == (280.0, 210.0, 8.0)
    assert np.isfinite(image.data).all() and image.data.max() > 0
    np.testing.assert_allclose(image.position, (20.048315, 66.570045, 0.0), rtol=1e-6)


def test_config_names_files_and_overrides(tmp_path):
    import argparse

    from gadgets.replay import params_from_args

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["in.h5", "--out", "o.h5", "--config", "passnet_raw"])
    assert params_from_args(args).fallback == "zero_filled"
    xml = '<configuration><property name="output" value="complex"/></configuration>'
    args = parser.parse_args(["in.h5", "--out", "o.h5", "--config", xml, "--device", "cpu"])
    params = params_from_args(args)
    assert params.output == "complex" and params.device == "cpu"
    args = parser.parse_args(["in.h5", "--out", "o.h5", "--config", "no_such_config"])
    with pytest.raises(ValueError, match="no such file or shipped chain name"):
        params_from_args(args)


# ------------------------------------------------------------ paths and unreadable input
def _recon_exit(argv) -> int:
    return main(["recon", *map(str, argv), "--no-progress", "--device", "cpu"])


def test_out_equal_to_the_input_is_refused_before_any_work(tmp_path, cine_file, caplog):
    raw = tmp_path / "raw.h5"
    raw.write_bytes(cine_file.read_bytes())
    before = raw.read_bytes()
    link = tmp_path / "link.h5"
    link.symlink_to(raw)
    for out in (raw, link, tmp_path / "." / "raw.h5"):
        caplog.clear()
        assert _recon_exit([raw, "--out", out]) == 2
        assert "is the input file; refusing to overwrite it" in caplog.text
        assert "chain finished" not in caplog.text
    assert raw.read_bytes() == before
    assert _recon_exit([raw, "--out", tmp_path / "x.h5", "--png", raw]) == 2
    assert raw.read_bytes() == before


def test_out_that_is_a_folder_is_refused_before_any_work(tmp_path, cine_file, caplog):
    assert _recon_exit([cine_file, "--out", tmp_path]) == 2
    assert "is a folder" in caplog.text and "chain finished" not in caplog.text
    caplog.clear()
    assert _recon_exit([cine_file, "--out", tmp_path / "missing" / "x.h5"]) == 2
    assert "does not exist" in caplog.text


@pytest.mark.parametrize("damage", ["truncated", "empty", "not_hdf5", "missing", "folder"])
def test_unreadable_input_is_one_line_and_exit_2(tmp_path, cine_file, caplog, damage):
    raw = tmp_path / "in.h5"
    content = cine_file.read_bytes()
    if damage == "truncated":
        raw.write_bytes(content[: len(content) // 2])
    elif damage == "empty":
        raw.write_bytes(b"")
    elif damage == "not_hdf5":
        raw.write_bytes(b"\x89PNG not an hdf5 file" * 100)
    elif damage == "folder":
        raw.mkdir()
    assert _recon_exit([raw, "--out", tmp_path / "out.h5"]) == 2
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "\n" not in errors[0].getMessage()
    assert "Traceback" not in caplog.text
    assert not (tmp_path / "out.h5").exists()


# ------------------------------------------------------------ methods and ground truth
def _overall_psnr(caplog) -> tuple[float, float]:
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("overall")]
    match = re.search(r"PSNR (-?[0-9.]+) dB, SSIM ([0-9.]+)", line)
    assert match and "magnitudes" in line and "max |truth|" in line, line
    return float(match[1]), float(match[2])


def test_each_method_runs_and_classical_ones_beat_zero_filled(
    tmp_path, weights_file, cine_file, caplog
):
    caplog.set_level(logging.INFO)
    scores = {}
    comments = {
        "passnet": "PASSNet",
        "lplus-s": "L+S (classical)",
        "llr": "LLR (classical)",
        "zero-filled": "zero-filled SENSE",
    }
    for method in comments:
        caplog.clear()
        rc, out = recon(tmp_path, cine_file, weights_file, "--method", method)
        assert rc == 0, caplog.text
        images = read_images(out)["image_1"]
        assert len(images) == 8 and all(np.isfinite(im.data).all() for im in images)
        assert images[0].meta["ImageComment"] == comments[method]
        assert f"reconstructing with {methods.get(method).label}" in caplog.text
        assert "slice 0 vs /passnet_truth: PSNR" in caplog.text
        scores[method] = _overall_psnr(caplog)
    for classical in ("lplus-s", "llr"):
        assert scores[classical][0] > scores["zero-filled"][0] + 1.0, scores
        assert scores[classical][1] > scores["zero-filled"][1], scores


def _parser():
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser


def test_method_names_map_to_the_chain(tmp_path):
    import argparse

    # every chain method is offered in its CLI spelling, and nothing else
    offered = next(a for a in _parser()._actions if a.dest == "method").choices
    assert {methods.get(m).name for m in offered} == set(methods.CHAIN_METHODS)
    assert all(m == methods.get(m).cli for m in offered)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["in.h5", "--out", "o.h5"])
    assert args.method is None  # the default comes from --config, else passnet
    with pytest.raises(SystemExit):
        parser.parse_args(["in.h5", "--out", "o.h5", "--method", "lplus_s"])


def test_truth_comparison_convention(cine_file):
    from gadgets.exporters.stacks import slice_stacks
    from gadgets.scoring import compare_with_truth, read_truth

    truth = read_truth(cine_file)
    assert truth is not None and truth.shape == (1, 8, 48, 48)
    # images 7x the truth's magnitude: the least-squares scale removes the factor
    images = []
    for t in range(8):
        image = ismrmrd.Image.from_array(7 * np.abs(truth[0, t]).astype(np.float32)[None])
        image.image_index, image.phase = t + 1, t
        images.append(image)
    result = compare_with_truth(images, truth)
    assert result.slices == [0] and result.psnr[0] > 100 and result.ssim[0] == pytest.approx(1)
    np.testing.assert_allclose(result.truth[0], 7 * np.abs(truth[0]), rtol=1e-4)  # image units
    assert [s.slice_index for s in slice_stacks(images)] == [0]
    assert compare_with_truth(images[:4], truth) is None  # frame count differs
    assert read_truth(Path(cine_file).with_name("absent.h5")) is None


def test_truth_is_weighted_as_the_chain_weights_the_object(tmp_path, caplog):
    """Prewhitened SENSE weights the object by |W S(r)|: fully sampled, nearly noise-free
    data must then score high (unweighted, the smooth gain alone costs about 10 dB)."""
    from training.simulate import simulate_cine

    caplog.set_level(logging.INFO)
    raw = tmp_path / "full.h5"
    simulate_cine(raw, seed=1, n_coils=6, frames=4, matrix=(48, 48), mask="equispaced",
                  accel=1, noise_level=0.001)  # fmt: skip
    out = tmp_path / "out.h5"
    assert main(["recon", str(raw), "--out", str(out), "--method", "zero-filled",
                 "--no-progress"]) == 0  # fmt: skip
    psnr, ssim = _overall_psnr(caplog)
    assert psnr > 35 and ssim > 0.98


def test_recon_without_truth_prints_no_psnr(tmp_path, weights_file, caplog):
    caplog.set_level(logging.INFO)
    raw = oversampled_two_slice_file(tmp_path / "raw.h5")
    assert recon(tmp_path, raw, weights_file)[0] == 0
    assert "PSNR" not in caplog.text


# ------------------------------------------------------------ --help and imports
def test_help_documents_every_option_with_default_and_values(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["recon", "--help"])
    assert exc.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for option in ("--out", "--method", "--weights", "--device", "--frame-dimension", "--config",
                   "--png", "--dicom", "--nifti", "--no-progress"):  # fmt: skip
        assert option in text, option
    assert text.count("(default:") >= 9  # every option but the required --out
    for values in ("{zero-filled,lplus-s,llr,bart-llr,passnet}", "auto, cpu, cuda or cuda:N",
                   "{auto,phase,repetition}", "default: passnet", "default: auto"):  # fmt: skip
        assert values in text, values


def test_importing_the_recon_options_loads_only_the_standard_library():
    code = (
        "import sys, gadgets.recon_cli\n"
        "heavy = {'numpy', 'torch', 'h5py', 'ismrmrd', 'tqdm', 'pydicom', 'nibabel', "
        "'matplotlib', 'gadgets.chain', 'passnet_core.metrics'}\n"
        "print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_bart_llr_reconstructs_through_the_chain_or_says_what_is_missing(tmp_path, cine_file):
    """``--method bart-llr``: BART's pics LLR with ecalib maps, where ``bart`` is installed."""
    import shutil

    import ismrmrd

    out = tmp_path / "bart.h5"
    if shutil.which("bart") is None:
        assert main(["recon", str(cine_file), "--out", str(out), "--method", "bart-llr"]) == 2
        assert not out.exists()
        return
    assert main(["recon", str(cine_file), "--out", str(out), "--method", "bart-llr"]) == 0
    dataset = ismrmrd.Dataset(str(out), "dataset", create_if_needed=False)
    try:
        image = dataset.read_image("image_1", 0)
        assert dataset.number_of_images("image_1") == 8
    finally:
        dataset.close()
    assert ismrmrd.Meta.deserialize(image.attribute_string)["ImageComment"].startswith(
        "BART pics LLR"
    )
