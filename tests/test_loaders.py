"""Tests for training.loaders: OCMR-like ISMRMRD, CMRxRecon-like .mat, folder scanning."""

from __future__ import annotations

import h5py
import ismrmrd
import numpy as np
import pytest
import torch
from helpers import acquisitions, header_xml, known_cine

from gadgets.chain import ChainParams, run_chain
from gadgets.kspace_prep import noise_covariance, prewhitening_matrix
from gadgets.scoring import TRUTH_GROUP
from passnet_core.fft import fft2c, ifft2c
from passnet_core.ismrmrd_io import read_raw
from training.loaders import load_cmrxrecon, load_ocmr, ocmr_slices, scan_folder
from training.phantom import body_support, cine_phantom, coil_sensitivities, draw_params
from training.simulate import simulate_cine


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


def _file_whitening(path) -> np.ndarray:
    """The prewhitening matrix of a file's noise scans."""
    raw = read_raw(path)
    noise = [d for h, d in zip(raw.heads, raw.data, strict=True) if _is_noise(h)]
    return prewhitening_matrix(noise_covariance(noise))


def _is_noise(head) -> bool:
    return bool(int(head["flags"]) & (1 << (ismrmrd.ACQ_IS_NOISE_MEASUREMENT - 1)))


@pytest.mark.parametrize("method", ["espirit", "walsh"])
def test_ocmr_loader_matches_truth(ocmr_file, method):
    samples = load_ocmr(ocmr_file, coil_method=method)
    assert [s.name for s in samples] == ["fs_0001_slice0", "fs_0001_slice1"]
    with h5py.File(ocmr_file, "r") as f:
        truth = f[TRUTH_GROUP]["images"][:]
        ref_maps = f[TRUTH_GROUP]["coil_maps"][:]
    whitening = _file_whitening(ocmr_file)
    for s, sample in enumerate(samples):
        assert sample.target.shape == (4, 40, 48)  # readout oversampling removed
        assert sample.target.dtype == np.complex64 and sample.coil_maps.shape == (4, 40, 48)
        # prewhitened coils see the sensitivities W S: the combined image is |W S| x
        gain = np.linalg.norm(np.einsum("cd,dhw->chw", whitening, ref_maps[s]), axis=0)
        body = (np.abs(truth[s]).mean(0) > 0.2) & (np.abs(ref_maps[s]).sum(0) > 0)
        err = _magnitude_error(sample.target, gain * truth[s], body)
        print(f"{method} slice {s}: magnitude error {err:.4f}")
        assert err < 0.1


def _scanner_like_file(path, repeat: bool = False):
    """2 slices (sent 1 then 0) x 3 frames, 4 coils, 2x readout oversampling, a correlated
    noise scan and a navigator line, written with ``ismrmrd.Dataset``.

    Returns the expected k-space per slice: oversampling removed, not yet prewhitened.
    ``repeat``: every imaging line is sent twice (``average`` 0 and 1), offset by +d and -d.
    """
    image, maps, _ = known_cine(t=3)
    wide = np.zeros((3, 16, 32), np.complex64)
    wide[..., 8:24] = image
    maps_wide = np.pad(maps, ((0, 0), (0, 0), (8, 8)), mode="edge")
    rng = np.random.default_rng(3)
    noise = rng.standard_normal((4, 256)) + 1j * rng.standard_normal((4, 256))
    noise[1] += 0.6 * noise[0]
    stream, expected = [], {}
    for s in (1, 0):
        kspace = fft2c(torch.from_numpy((1 + s) * maps_wide[:, None] * wide[None]))
        cropped = ifft2c(kspace)[..., 8:24]  # the object's half of the readout field of view
        expected[s] = fft2c(cropped).numpy()
        rows = np.ones((3, 16), bool)
        acqs = acquisitions(kspace.numpy(), rows, slice_index=s, last_in_measurement=s == 0)
        if repeat:
            again = acquisitions(kspace.numpy(), rows, slice_index=s, last_in_measurement=s == 0)
            for a, b in zip(acqs, again, strict=True):
                b.idx.average = 1
                a.data[:] += 0.5
                b.data[:] -= 0.5
            acqs[-1].clear_flag(ismrmrd.ACQ_LAST_IN_SLICE)
            acqs[-1].clear_flag(ismrmrd.ACQ_LAST_IN_MEASUREMENT)
            acqs += again
        navigator = ismrmrd.Acquisition.from_array(np.full((4, 32), 1e3, np.complex64))
        navigator.set_flag(ismrmrd.ACQ_IS_NAVIGATION_DATA)
        navigator.idx.slice = s
        stream += [navigator, *acqs]
    noise_scan = ismrmrd.Acquisition.from_array(noise.astype(np.complex64))
    noise_scan.set_flag(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)
    dataset = ismrmrd.Dataset(str(path), "dataset", create_if_needed=True)
    try:
        dataset.write_xml_header(header_xml(32, 16, recon_x=16, frames=3, slices=2).encode())
        for acq in [noise_scan, *stream]:
            dataset.append_acquisition(acq)
    finally:
        dataset.close()
    return expected


def test_ocmr_ingest_is_the_gadget_chains(tmp_path, monkeypatch):
    path = tmp_path / "scan.h5"
    expected = _scanner_like_file(path)
    loaded = {s.slice_index: s for s in ocmr_slices(path)}
    assert sorted(loaded) == [0, 1]

    # the same file through the reconstruction chain (as `passnet recon` streams it)
    assembled = {}

    def capture(data, params, engine):
        assembled[data.slice_index] = data
        raise RuntimeError("captured")  # the chain records the failure and goes on

    monkeypatch.setattr("gadgets.chain.reconstruct_slice", capture)
    raw = read_raw(path)
    run_chain(raw.header, raw.acquisitions(), lambda item: None, ChainParams(device="cpu"))
    assert sorted(assembled) == [0, 1]

    whitening = _file_whitening(path)
    for s in (0, 1):
        np.testing.assert_array_equal(loaded[s].kspace, assembled[s].kspace)
        np.testing.assert_array_equal(loaded[s].mask, assembled[s].mask)
        assert loaded[s].kspace.shape == (4, 3, 16, 16)  # oversampling removed
        white = np.einsum("cd,dthw->cthw", whitening, expected[s])  # prewhitened
        scale = np.abs(white).max()
        np.testing.assert_allclose(loaded[s].kspace / scale, white / scale, atol=1e-5)

    samples = load_ocmr(path, coil_method="walsh")
    assert [s.name for s in samples] == ["scan_slice0", "scan_slice1"]  # slice order


def test_ocmr_loader_averages_repeated_readouts(tmp_path):
    plain, repeated = tmp_path / "plain.h5", tmp_path / "repeated.h5"
    _scanner_like_file(plain)
    _scanner_like_file(repeated, repeat=True)
    for a, b in zip(ocmr_slices(plain), ocmr_slices(repeated), strict=True):
        scale = np.abs(a.kspace).max()
        np.testing.assert_allclose(b.kspace / scale, a.kspace / scale, atol=1e-5)


def test_ocmr_loader_refuses_what_the_chain_refuses(tmp_path):
    path = tmp_path / "bad.h5"
    _, _, kspace = known_cine(t=1)
    acqs = acquisitions(kspace, np.ones((1, 16), bool))
    acqs[3].idx.kspace_encode_step_1 = 40  # outside the 16 encoded lines
    dataset = ismrmrd.Dataset(str(path), "dataset", create_if_needed=True)
    try:
        dataset.write_xml_header(header_xml(16, 16).encode())
        for acq in acqs:
            dataset.append_acquisition(acq)
    finally:
        dataset.close()
    with pytest.raises(ValueError, match="bad.h5: slice 0: .*outside the encoded matrix"):
        load_ocmr(path)


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
