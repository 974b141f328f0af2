"""gadgets.replay (`passnet recon`): files in, ISMRMRD images out, failures isolated."""

from __future__ import annotations

import ismrmrd
import numpy as np
import pytest
import torch
from helpers import acquisitions, header_xml, known_cine

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


def test_replay_writes_ismrmrd_images_and_extras(tmp_path, weights_file):
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

    from gadgets.replay import add_arguments, params_from_args

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
