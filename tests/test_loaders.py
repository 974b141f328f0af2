"""Tests for training.loaders: OCMR-like ISMRMRD, CMRxRecon-like .mat, folder scanning."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from passnet_core.fft import fft2c
from training.loaders import load_cmrxrecon, load_ocmr, parse_encoding, scan_folder
from training.phantom import body_support, cine_phantom, coil_sensitivities, draw_params
from training.simulate import TRUTH_GROUP, simulate_cine


def _magnitude_error(image: np.ndarray, ref: np.ndarray, region: np.ndarray) -> float:
    """Relative error of magnitudes inside ``region`` (maps may differ by a phase)."""
    a, b = np.abs(image)[:, region], np.abs(ref)[:, region]
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _write_cmrxrecon(path, t=5, slices=2, coils=4, h=40, w=48):
    """A .mat v7.3-like file: HDF5 with a 512-byte user block and a compound kspace_full."""
    p = draw_params(0, frames=t, matrix=(h, w))
    image = cine_phantom(t, h, w, params=p)
    maps = coil_sensitivities(coils, h, w, rng=1, params=p, support=body_support(p, h, w))
    k = fft2c(torch.from_numpy(maps[:, None] * image[None])).numpy()  # (C, T, H, W)
    k = np.stack([k] * slices).transpose(2, 0, 1, 3, 4)  # (t, slice, coil, ky, kx)
    compound = np.empty(k.shape, dtype=[("real", "<f4"), ("imag", "<f4")])
    compound["real"], compound["imag"] = k.real, k.imag
    with h5py.File(path, "w", userblock_size=512) as f:
        f.create_dataset("kspace_full", data=compound)
    return image, body_support(p, h, w)


@pytest.fixture(scope="module")
def ocmr_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ocmr")
    path = folder / "fs_0001.h5"
    simulate_cine(
        path,
        seed=2,
        n_coils=4,
        frames=4,
        matrix=(40, 48),
        mask="equispaced",
        accel=1,
        noise_level=0.002,
        n_slices=2,
    )
    return path


@pytest.mark.parametrize("method", ["espirit", "walsh"])
def test_ocmr_loader_matches_truth(ocmr_file, method):
    samples = load_ocmr(ocmr_file, coil_method=method)
    assert [s.name for s in samples] == ["fs_0001_slice0", "fs_0001_slice1"]
    with h5py.File(ocmr_file, "r") as f:
        truth = f[TRUTH_GROUP]["images"][:]
        ref_maps = f[TRUTH_GROUP]["coil_maps"][:]
    for s, sample in enumerate(samples):
        assert sample.target.shape == (4, 40, 48)  # readout oversampling removed
        assert sample.target.dtype == np.complex64 and sample.coil_maps.shape == (4, 40, 48)
        body = (np.abs(truth[s]).mean(0) > 0.2) & (np.abs(ref_maps[s]).sum(0) > 0)
        err = _magnitude_error(sample.target, truth[s], body)
        print(f"{method} slice {s}: magnitude error {err:.4f}")
        assert err < 0.1


def test_parse_encoding_tolerates_missing_sections():
    xml = (
        '<?xml version="1.0"?><ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD"><encoding>'
        "<encodedSpace><matrixSize><x>256</x><y>90</y><z>1</z></matrixSize></encodedSpace>"
        "<reconSpace><matrixSize><x>128</x><y>96</y><z>1</z></matrixSize></reconSpace>"
        "<encodingLimits><kspace_encoding_step_1><minimum>0</minimum><maximum>95</maximum>"
        "<center>48</center></kspace_encoding_step_1></encodingLimits></encoding>"
        "</ismrmrdHeader>"
    )
    info = parse_encoding(xml)
    assert (info.readout, info.recon_readout, info.lines, info.center_line) == (256, 128, 96, 48)
    with pytest.raises(ValueError, match="encoding"):
        parse_encoding("<ismrmrdHeader/>")


def test_cmrxrecon_loader(tmp_path):
    path = tmp_path / "cine_sax.mat"
    image, support = _write_cmrxrecon(path)
    samples = load_cmrxrecon(path, coil_method="walsh")
    assert len(samples) == 2 and samples[1].name == "cine_sax_slice1"
    assert samples[0].target.shape == (5, 40, 48) and samples[0].coil_maps.shape == (4, 40, 48)
    body = support & (np.abs(image).mean(0) > 0.2)
    err = _magnitude_error(samples[0].target, image, body)
    print(f"cmrxrecon magnitude error {err:.4f}")
    assert err < 0.05
    with pytest.raises(ValueError, match="kspace_sub04"):
        load_cmrxrecon(path, key="kspace_sub04")


def test_scan_folder_skips_and_counts_bad_files(tmp_path, ocmr_file):
    (tmp_path / "a.h5").write_bytes(ocmr_file.read_bytes())
    _write_cmrxrecon(tmp_path / "b.mat", slices=1)
    (tmp_path / "corrupt.h5").write_bytes(b"this is not HDF5" * 10)
    with h5py.File(tmp_path / "empty.mat", "w") as f:
        f.create_dataset("something_else", data=np.zeros(3))
    (tmp_path / "notes.txt").write_text("ignored")
    with pytest.warns(UserWarning, match="skipping unreadable"):
        scan = scan_folder(tmp_path, coil_method="walsh")
    assert len(scan.samples) == 3  # 2 slices + 1 slice
    assert scan.n_skipped == 2
    assert {p.name for p, _ in scan.skipped} == {"corrupt.h5", "empty.mat"}
    with pytest.warns(UserWarning):
        only_mat = scan_folder(tmp_path, kind="cmrxrecon", coil_method="walsh")
    assert len(only_mat.samples) == 1
    with pytest.raises(ValueError, match="does not exist"):
        scan_folder(tmp_path / "missing")
    with pytest.raises(ValueError, match="kind"):
        scan_folder(tmp_path, kind="dicom")
