"""Tests for training.simulate: a real ISMRMRD file whose data reproduce the stored truth."""

from __future__ import annotations

import argparse

import h5py
import ismrmrd
import ismrmrd.xsd
import numpy as np
import pytest
import torch

from gadgets.scoring import TRUTH_GROUP
from passnet_core.fft import ifft2c
from training import simulate, simulate_cli
from training.simulate import simulate_cine

SMALL = {"n_coils": 4, "frames": 6, "matrix": (40, 48)}


def _flag(flags: np.ndarray, flag: int) -> np.ndarray:
    return (flags & np.uint64(1 << (flag - 1))) != 0


def _read(path):
    """Header, all acquisition records (one h5py read) and the truth group."""
    with h5py.File(path, "r") as f:
        records = f["dataset/data"][:]
        truth = {k: f[TRUTH_GROUP][k][:] for k in f[TRUTH_GROUP]}
        attrs = dict(f[TRUTH_GROUP].attrs)
    with ismrmrd.Dataset(str(path), "dataset", create_if_needed=False, mode="r") as dset:
        header = ismrmrd.xsd.CreateFromDocument(dset.read_xml_header())
    return header, records, truth, attrs


def _assemble(records, n_coils, t, h, ro):
    """Zero-filled (S, C, T, H, RO) k-space and (S, T, H) line mask from imaging readouts."""
    head = records["head"]
    imaging = ~_flag(head["flags"], ismrmrd.ACQ_IS_NOISE_MEASUREMENT)
    idx = head["idx"][imaging]
    n_slices = int(idx["slice"].max()) + 1
    kspace = np.zeros((n_slices, n_coils, t, h, ro), np.complex64)
    lines = np.zeros((n_slices, t, h), bool)
    for rec, i in zip(records[imaging], idx, strict=True):
        s, ph, ky = int(i["slice"]), int(i["phase"]), int(i["kspace_encode_step_1"])
        kspace[s, :, ph, ky] = rec["data"].view(np.complex64).reshape(n_coils, ro)
        lines[s, ph, ky] = True
    return kspace, lines


@pytest.fixture(scope="module")
def full_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("sim") / "full.h5"
    summary = simulate_cine(path, seed=3, mask="equispaced", accel=1, noise_level=0.01, **SMALL)
    return path, summary


@pytest.fixture(scope="module")
def vds_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("sim") / "vds.h5"
    summary = simulate_cine(path, seed=5, mask="equispaced", accel=4, n_slices=2, **SMALL)
    return path, summary


def test_header_values(full_file):
    path, _ = full_file
    header, _, _, _ = _read(path)
    enc = header.encoding[0]
    assert (enc.encodedSpace.matrixSize.x, enc.encodedSpace.matrixSize.y) == (96, 40)
    assert (enc.reconSpace.matrixSize.x, enc.reconSpace.matrixSize.y) == (48, 40)
    assert enc.encodedSpace.fieldOfView_mm.x == pytest.approx(2 * enc.reconSpace.fieldOfView_mm.x)
    lim = enc.encodingLimits
    assert (lim.kspace_encoding_step_1.minimum, lim.kspace_encoding_step_1.maximum) == (0, 39)
    assert lim.kspace_encoding_step_1.center == 20
    assert (lim.phase.minimum, lim.phase.maximum) == (0, 5)
    assert lim.slice.maximum == 0
    assert header.acquisitionSystemInformation.receiverChannels == 4
    assert header.experimentalConditions.H1resonanceFrequency_Hz > 0
    assert header.sequenceParameters.TR


def test_ismrmrd_reads_bulk_written_acquisitions(full_file):
    path, summary = full_file
    _, records, _, _ = _read(path)
    with ismrmrd.Dataset(str(path), "dataset", create_if_needed=False, mode="r") as dset:
        n = dset.number_of_acquisitions()
        assert n == summary["acquisitions"] == 6 * 40 + 1
        noise = dset.read_acquisition(0)
        assert noise.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)
        assert noise.data.shape == (4, 96)
        acq = dset.read_acquisition(7)
    assert acq.number_of_samples == 96 and acq.active_channels == 4
    assert acq.center_sample == 48 and acq.sample_time_us > 0
    np.testing.assert_array_equal(acq.data, records[7]["data"].view(np.complex64).reshape(4, 96))
    assert acq.idx.kspace_encode_step_1 == records[7]["head"]["idx"]["kspace_encode_step_1"]
    directions = np.array([acq.read_dir, acq.phase_dir, acq.slice_dir])
    np.testing.assert_allclose(directions @ directions.T, np.eye(3), atol=1e-5)


def test_bulk_layout_matches_ismrmrd_append(tmp_path, full_file):
    """Write two acquisitions with ismrmrd's own append and compare the HDF5 layout."""
    path, _ = full_file
    ref = tmp_path / "ref.h5"
    with ismrmrd.Dataset(str(path), "dataset", create_if_needed=False, mode="r") as src:
        acqs = [src.read_acquisition(i) for i in (0, 1)]
    with ismrmrd.Dataset(str(ref), "dataset", create_if_needed=True) as dst:
        for a in acqs:
            dst.append_acquisition(a)
    with h5py.File(ref, "r") as a, h5py.File(path, "r") as b:
        assert a["dataset/data"].dtype == b["dataset/data"].dtype
        for i in (0, 1):
            ra, rb = a["dataset/data"][i], b["dataset/data"][i]
            assert ra["head"].tobytes() == rb["head"].tobytes()
            np.testing.assert_array_equal(ra["data"], rb["data"])


def test_flags_and_indices(vds_file):
    path, summary = vds_file
    _, records, truth, attrs = _read(path)
    head = records["head"][1:]
    flags, idx = head["flags"], head["idx"]
    assert _flag(records["head"]["flags"][:1], ismrmrd.ACQ_IS_NOISE_MEASUREMENT).all()
    assert not _flag(flags, ismrmrd.ACQ_IS_NOISE_MEASUREMENT).any()
    assert len(records) == int(truth["mask"][..., 0].sum()) + 1 == summary["acquisitions"]
    # one first/last-in-phase per (slice, frame), one first/last-in-slice per slice
    assert _flag(flags, ismrmrd.ACQ_LAST_IN_PHASE).sum() == 2 * 6
    assert _flag(flags, ismrmrd.ACQ_FIRST_IN_ENCODE_STEP1).sum() == 2 * 6
    last_slice = np.nonzero(_flag(flags, ismrmrd.ACQ_LAST_IN_SLICE))[0]
    first_slice = np.nonzero(_flag(flags, ismrmrd.ACQ_FIRST_IN_SLICE))[0]
    assert list(idx["slice"][last_slice]) == [0, 1] and first_slice[0] == 0
    assert first_slice[1] == last_slice[0] + 1
    assert _flag(records["head"]["flags"][-1:], ismrmrd.ACQ_LAST_IN_MEASUREMENT).all()
    # the 24 central lines are flagged as calibration-and-imaging, others not
    acs = _flag(flags, ismrmrd.ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING)
    ky = idx["kspace_encode_step_1"].astype(int)
    np.testing.assert_array_equal(acs, np.abs(ky - 20 + 0.5) < 12)
    # line order and time stamps
    assert np.all(np.diff(head["acquisition_time_stamp"].astype(np.int64)) >= 0)
    phys = head["physiology_time_stamp"][:, 0]
    assert np.all(np.diff(phys[idx["slice"] == 0][idx["phase"][idx["slice"] == 0] == 0]) == 0)
    assert phys.max() > 0
    assert attrs["mask_kind"] == "equispaced" and attrs["accel"] == 4
    assert truth["images"].shape == (2, 6, 40, 48) and truth["coil_maps"].shape == (2, 4, 40, 48)
    assert truth["images"].dtype == np.complex64


def test_fully_sampled_zero_filled_matches_truth(full_file):
    """Assemble k-space from the readouts, remove oversampling, coil-combine: only noise left."""
    path, _ = full_file
    _, records, truth, attrs = _read(path)
    kspace, lines = _assemble(records, 4, 6, 40, 96)
    assert lines.all()
    coil_images = ifft2c(torch.from_numpy(kspace))[..., 24:72]  # central half of the readout
    maps = torch.from_numpy(truth["coil_maps"])
    combined = (maps.conj()[:, :, None] * coil_images).sum(1).numpy()
    ref = truth["images"]
    rel = np.linalg.norm(combined - ref) / np.linalg.norm(ref)
    # residual = coil-combined noise: std ~ noise_level per pixel inside the body
    body = np.abs(maps.numpy()).sum(1)[:, None] > 0
    residual_std = np.std((combined - ref)[np.broadcast_to(body, ref.shape)])
    assert 0.5 * attrs["noise_level"] < residual_std < 2 * attrs["noise_level"]
    assert rel < 0.05
    assert 0.7 < np.abs(ref).max() < 1.5  # intensities of the phantom (blood ~1) survive
    # the coil maps are normalised on the body and zero outside
    rss = np.sum(np.abs(truth["coil_maps"]) ** 2, axis=1)
    np.testing.assert_allclose(rss[rss > 0], 1.0, atol=1e-4)
    assert (rss == 0).any()


def test_noise_scan_has_correlated_coils(full_file):
    path, _ = full_file
    _, records, truth, _ = _read(path)
    noise = records[0]["data"].view(np.complex64).reshape(4, 96)
    cov = truth["noise_covariance"]
    assert not np.allclose(cov, np.diag(np.diag(cov)))
    np.testing.assert_allclose(np.real(np.trace(cov)) / 4, 0.01**2, rtol=1e-4)
    assert np.std(noise) == pytest.approx(0.01, rel=0.5)


def test_partial_fourier_and_no_oversampling(tmp_path):
    path = tmp_path / "pf.h5"
    simulate_cine(path, seed=1, accel=4, partial_fourier=0.75, oversampling=False, **SMALL)
    header, records, truth, attrs = _read(path)
    lim = header.encoding[0].encodingLimits.kspace_encoding_step_1
    assert (lim.minimum, lim.maximum, lim.center) == (10, 39, 20)
    assert header.encoding[0].encodedSpace.matrixSize.x == 48
    ky = records["head"]["idx"]["kspace_encode_step_1"][1:]
    assert ky.min() >= 10 and records["head"]["number_of_samples"][1] == 48
    assert not truth["mask"][:, :, :10].any() and attrs["first_line"] == 10


def test_deterministic_in_the_seed(tmp_path):
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    for p in (a, b):
        simulate_cine(p, seed=9, n_coils=2, frames=3, matrix=24, accel=2, oversampling=False)
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        np.testing.assert_array_equal(fa["dataset/data"]["data"][5], fb["dataset/data"]["data"][5])
        np.testing.assert_array_equal(fa[TRUTH_GROUP]["images"][:], fb[TRUTH_GROUP]["images"][:])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"mask": "radial"}, "Cartesian"),
        ({"accel": 0.5}, "accel"),
        ({"mask": "equispaced", "accel": 2.5}, "integer"),
        ({"partial_fourier": 0.3}, "partial_fourier"),
        ({"n_coils": 0}, "n_coils"),
        ({"matrix": 4}, "matrix"),
        ({"noise_level": -1.0}, "noise_level"),
    ],
)
def test_bad_arguments_raise(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        simulate_cine(tmp_path / "x.h5", **kwargs)
    assert not (tmp_path / "x.h5").exists()


def test_cli_runs_and_prints_summary(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    simulate_cli.add_arguments(parser)
    out = tmp_path / "cli.h5"
    args = parser.parse_args(
        ["--out", str(out), "--coils", "2", "--frames", "4", "--matrix", "32", "24"]
    )
    assert simulate.run(args) == 0
    text = capsys.readouterr().out
    assert "mask vds_lines-8 (" in text and "32x24" in text and out.exists()
    with ismrmrd.Dataset(str(out), "dataset", create_if_needed=False, mode="r") as dset:
        assert dset.read_acquisition(1).number_of_samples == 48


def test_default_mask_is_named_as_the_evaluation_names_it(tmp_path):
    """The file holds per-frame random whole lines: passnet_core.masks' vds_lines, not vds."""
    small = {"n_coils": 2, "frames": 4, "matrix": 32}
    summary = simulate_cine(tmp_path / "new.h5", seed=1, **small)
    assert summary["mask"] == "vds_lines-8"
    _, _, truth, attrs = _read(tmp_path / "new.h5")
    assert attrs["mask_kind"] == "vds_lines"
    lines = truth["mask"][0, ..., 0].astype(bool)  # (T, H)
    assert (lines == simulate.line_mask("vds_lines", 8, 4, 32, 1)).all()
    assert (lines != lines[:1]).any()  # drawn afresh per frame


def test_retired_mask_name_vds_is_refused_with_what_to_use(tmp_path, caplog):
    # 'vds' meant per-frame lines here but 2-D points everywhere else: refused, not guessed
    with pytest.raises(ValueError, match="use --mask vds_lines"):
        simulate_cine(tmp_path / "old.h5", seed=2, mask="vds", n_coils=2, frames=4, matrix=32)
    assert not (tmp_path / "old.h5").exists()
    parser = argparse.ArgumentParser()
    simulate_cli.add_arguments(parser)
    args = parser.parse_args(["--out", str(tmp_path / "cli.h5"), "--mask", "vds", "--frames", "4"])
    args.coils, args.matrix = 2, [32]
    assert simulate.run(args) == 2
    assert "2-D variable-density points" in caplog.text
    assert not (tmp_path / "cli.h5").exists()


def test_cli_reports_bad_values_without_a_traceback(tmp_path, caplog):
    parser = argparse.ArgumentParser()
    simulate_cli.add_arguments(parser)
    args = parser.parse_args(["--out", str(tmp_path / "x.h5"), "--accel", "0.5"])
    assert simulate.run(args) == 2
    assert "accel" in caplog.text and not (tmp_path / "x.h5").exists()


def _fully_sampled_file_matches_its_truth(tmp_path, phantom):
    """Simulate seed 4 of ``phantom`` fully sampled; the stored maps combine its k-space into
    its stored truth up to the noise. Returns the truth group."""
    path = tmp_path / f"{phantom}.h5"
    summary = simulate_cine(
        path, seed=4, mask="equispaced", accel=1, noise_level=0.01, phantom=phantom, **SMALL
    )
    assert summary["phantom"] == phantom
    _, records, truth, attrs = _read(path)
    assert attrs["phantom"] == phantom
    kspace, lines = _assemble(records, 4, 6, 40, 96)
    assert lines.all()
    coil_images = ifft2c(torch.from_numpy(kspace))[..., 24:72]
    maps = torch.from_numpy(truth["coil_maps"])
    combined = (maps.conj()[:, :, None] * coil_images).sum(1).numpy()
    ref = truth["images"]
    assert np.linalg.norm(combined - ref) / np.linalg.norm(ref) < 0.05  # only noise left
    return truth


def test_ellipse_phantom_file_is_the_independent_family_acquired_the_same_way(tmp_path):
    """--phantom ellipses: held-out anatomy and coils, same acquisition, data match the truth."""
    from training.heldout_phantom import heldout_cine

    truth = _fully_sampled_file_matches_its_truth(tmp_path, "ellipses")
    ref = truth["images"]
    # birdcage maps cover the whole field of view (sum |S|^2 = 1 everywhere)
    np.testing.assert_allclose(np.sum(np.abs(truth["coil_maps"]) ** 2, axis=1), 1.0, atol=1e-4)
    # the anatomy is the held-out generator's (slice 0 of seed 4 is its case 4000)
    target, _ = heldout_cine(4 * 1000, frames=6, matrix=(40, 48), n_coils=4)
    assert np.corrcoef(np.abs(ref[0]).ravel(), np.abs(target).ravel())[0, 1] > 0.95
    cardiac = tmp_path / "cardiac.h5"
    simulate_cine(cardiac, seed=4, mask="equispaced", accel=1, noise_level=0.01, **SMALL)
    other = _read(cardiac)[2]["images"]
    assert np.corrcoef(np.abs(ref).ravel(), np.abs(other).ravel())[0, 1] < 0.9
    with pytest.raises(ValueError, match="phantom"):
        simulate_cine(tmp_path / "x.h5", phantom="brain", **SMALL)


def test_blob_phantom_file_is_the_generic_generator_acquired_the_same_way(tmp_path):
    """--phantom blobs: the second training generator, the same acquisition and truth."""
    from training.blob_phantom import blob_cine

    truth = _fully_sampled_file_matches_its_truth(tmp_path, "blobs")
    ref = truth["images"]
    # maps are normalised inside the body and cut to it outside
    power = np.sum(np.abs(truth["coil_maps"][0]) ** 2, axis=0)
    np.testing.assert_allclose(power[power > 0], 1.0, atol=1e-4)
    assert 0.2 < (power > 0).mean() < 1
    # the objects are the generic generator's (slice 0 of seed 4 is its case 4000)
    target = blob_cine(4 * 1000, 6, (80, 96))[0][:, ::2, ::2]
    assert np.corrcoef(np.abs(ref[0]).ravel(), np.abs(target).ravel())[0, 1] > 0.95


def test_cardiac_files_need_no_scipy_and_ellipses_say_what_they_need(tmp_path):
    """The README's first command installs [io] only (no scipy): simulate must still work."""
    import subprocess
    import sys

    script = f"""
import sys
sys.modules["scipy"] = None  # as if scipy were not installed
from training.simulate import simulate_cine
simulate_cine({str(tmp_path / "c.h5")!r}, n_coils=2, frames=3, matrix=16, accel=2)
try:
    simulate_cine({str(tmp_path / "e.h5")!r}, n_coils=2, frames=3, matrix=16, phantom="ellipses")
except ValueError as exc:
    print("refused:", exc)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "c.h5").is_file()
    assert "refused: --phantom ellipses needs scipy" in out.stdout
