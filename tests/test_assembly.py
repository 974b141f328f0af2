"""gadgets.assembly: line placement, oversampling, partial Fourier, flags, bad data.

Headers and acquisitions from known k-space come from ``tests/helpers.py``.
"""

from __future__ import annotations

import dataclasses

import ismrmrd
import numpy as np
import pytest
import torch
from helpers import acquisitions, header_xml, known_cine

from gadgets.assembly import AcquisitionBuffer
from gadgets.encoding import geometry_from_header, resolve_frame_dimension
from gadgets.kspace_prep import noise_covariance, prewhitening_matrix, remove_readout_oversampling
from gadgets.recon_data import FrameJoiner, slices_from_recon_data
from gadgets.slices import SliceData, SliceFailure
from passnet_core.fft import fft2c, ifft2c
from passnet_core.ismrmrd_io import parse_header, read_raw


def assemble(header: str, acqs: list) -> list:
    buffer = AcquisitionBuffer(parse_header(header))
    out = []
    for acq in acqs:
        out += buffer.add(acq)
    return out + buffer.flush()


def test_fully_sampled_lines_reproduce_the_truth():
    image, maps, kspace = known_cine()
    rows = np.ones(kspace.shape[1:3], bool)
    (result,) = assemble(header_xml(16, 16, frames=3), acquisitions(kspace, rows))
    assert isinstance(result, SliceData)
    np.testing.assert_allclose(result.kspace, kspace, atol=1e-6)
    assert result.mask.shape == (3, 16, 16) and result.mask.all()
    combined = (ifft2c(torch.from_numpy(result.kspace)).numpy() * maps.conj()[:, None]).sum(0)
    np.testing.assert_allclose(combined, image, atol=1e-5)
    assert result.reference[2].idx.phase == 2 and result.field_of_view == (32.0, 16.0, 8.0)


def test_readout_oversampling_removal_crops_the_image():
    image, maps, _ = known_cine(t=1)
    wide = np.zeros((1, 16, 32), np.complex64)
    wide[..., 8:24] = image
    kspace = fft2c(torch.from_numpy(maps[:, None, :, :1].repeat(32, -1) * wide)).numpy()
    (result,) = assemble(
        header_xml(32, 16, recon_x=16), acquisitions(kspace, np.ones((1, 16), bool))
    )
    assert result.kspace.shape == (4, 1, 16, 16)
    expected = ifft2c(torch.from_numpy(kspace)).numpy()[..., 8:24]
    np.testing.assert_allclose(ifft2c(torch.from_numpy(result.kspace)).numpy(), expected, atol=1e-5)
    cropped = remove_readout_oversampling(np.ones((2, 8), np.complex64), 4)
    assert cropped.shape == (2, 4)


def test_partial_fourier_lines_land_around_the_centre():
    _, _, kspace = known_cine(t=1)
    rows = np.zeros((1, 16), bool)
    rows[0, 4:] = True  # the first 4 lines are never acquired: e1 0..11 with centre 4
    header = header_xml(16, 16, e1=(0, 11, 4))
    (result,) = assemble(header, acquisitions(kspace, rows, e1_centre=4))
    assert geometry_from_header(parse_header(header)).centre_e1 == 4
    np.testing.assert_array_equal(result.mask[0, :, 0], rows[0].astype(np.float32))
    np.testing.assert_allclose(result.kspace[:, 0, 4:], kspace[:, 0, 4:])
    assert not result.kspace[:, 0, :4].any()


def test_calibration_lines_feed_only_the_calibration():
    _, _, kspace = known_cine(t=2)
    rows = np.zeros((2, 16), bool)
    rows[:, ::4] = True
    calib = (6, 7, 8, 9)  # row 8 is also an imaging line
    (result,) = assemble(header_xml(16, 16, frames=2), acquisitions(kspace, rows, calib_rows=calib))
    np.testing.assert_array_equal(result.mask[0, :, 0], rows[0])
    assert not result.kspace[:, 0, 7].any() and result.kspace[:, 0, 8].any()
    np.testing.assert_allclose(result.calibration[:, 7], kspace[:, 0, 7], atol=1e-6)
    # row 8: frame 0 sent twice (calib+imaging once) and frame 1 once -> mean of the three
    np.testing.assert_allclose(
        result.calibration[:, 0], (kspace[:, 0, 0] + kspace[:, 1, 0]) / 2, atol=1e-6
    )


def test_prewhitening_whitens_correlated_noise():
    rng = np.random.default_rng(0)
    mix = np.array([[1.0, 0.0], [0.8, 0.3]])
    white = rng.standard_normal((2, 20000)) + 1j * rng.standard_normal((2, 20000))
    noise = (mix @ white).astype(np.complex64)
    w = prewhitening_matrix(noise_covariance([noise[:, :10000], noise[:, 10000:]]))
    cov = np.cov(w @ noise)
    np.testing.assert_allclose(cov, np.eye(2), atol=0.05)
    with pytest.raises(ValueError, match="positive definite"):
        prewhitening_matrix(np.ones((2, 2)))


def test_noise_scan_is_consumed_and_applied():
    _, _, kspace = known_cine(t=1)
    rng = np.random.default_rng(1)
    noise = rng.standard_normal((4, 64)) + 1j * rng.standard_normal((4, 64))
    noise[1] += 0.7 * noise[0]  # correlated coils
    acqs = acquisitions(kspace, np.ones((1, 16), bool), noise=noise)
    (result,) = assemble(header_xml(16, 16), acqs)
    w = prewhitening_matrix(noise_covariance([noise]))
    np.testing.assert_allclose(result.kspace[:, 0, 3], w @ kspace[:, 0, 3], rtol=1e-4, atol=1e-4)


def test_repeated_lines_replace_by_default_and_average_on_request():
    _, _, kspace = known_cine(t=1)
    rows = np.ones((1, 16), bool)
    offset = np.full_like(kspace, 0.5 + 0.25j)
    first = acquisitions(kspace + offset, rows, last_in_measurement=False)
    first[-1].clear_flag(ismrmrd.ACQ_LAST_IN_SLICE)
    second = acquisitions(kspace - offset, rows)
    for acq in second:
        acq.idx.average = 1
    header = parse_header(header_xml(16, 16))
    for average, expected in ((False, kspace - offset), (True, kspace)):
        buffer = AcquisitionBuffer(header, average_repeats=average)
        out = []
        for acq in first + second:
            out += buffer.add(acq)
        (result,) = out
        np.testing.assert_allclose(result.kspace, expected, atol=1e-5)


def test_frame_dimension_auto_uses_repetition_when_phase_is_single():
    _, _, kspace = known_cine(t=3)
    header = header_xml(16, 16, frames=3, frame_limit="repetition")
    acqs = acquisitions(kspace, np.ones((3, 16), bool), frame_dimension="repetition")
    (result,) = assemble(header, acqs)
    assert result.frame_dimension == "repetition" and result.kspace.shape[1] == 3


@pytest.mark.parametrize("stated", ["phase", "repetition", "auto"])
def test_a_stated_frame_axis_with_one_value_gives_way_to_the_one_the_header_fills(stated):
    real_time = parse_header(header_xml(16, 16, frames=3, frame_limit="repetition"))
    gated = parse_header(header_xml(16, 16, frames=3, frame_limit="phase"))
    single = parse_header(header_xml(16, 16, frames=1))
    assert resolve_frame_dimension(real_time, stated) == "repetition"
    assert resolve_frame_dimension(gated, stated) == "phase"
    assert resolve_frame_dimension(single, stated) == ("phase" if stated == "auto" else stated)


def _single_frames(kspace: np.ndarray, header) -> list[SliceData]:
    """What BucketToBuffer(N_dimension=phase) makes of a real-time series: one slice a frame."""
    geometry = geometry_from_header(header, "repetition")
    parts = []
    for t in range(kspace.shape[1]):
        head = ismrmrd.AcquisitionHeader()
        head.idx.repetition = t
        frame = kspace[:, t : t + 1]
        parts.append(
            SliceData(
                kspace=frame,
                mask=(np.abs(frame).sum(axis=0) > 0).astype(np.float32),
                calibration=frame[:, 0],
                reference=[head],
                slice_index=0,
                field_of_view=geometry.fov,
                recon_matrix=(16, 16),
                frame_dimension="repetition",
            )
        )
    return parts


def test_frames_gadgetron_split_into_single_frame_buffers_are_joined_in_counter_order():
    _, _, kspace = known_cine(t=3)
    kspace = kspace.astype(np.complex64)
    kspace[:, :, ::2] = 0  # every other line: the calibration averages where sampled
    header = parse_header(header_xml(16, 16, frames=3, frame_limit="repetition"))
    first, second, third = _single_frames(kspace, header)
    joiner = FrameJoiner(header, "phase")  # the chain's N_dimension=phase
    assert joiner.add(third) == [] and joiner.add(first) == []
    (joined,) = joiner.add(second)
    np.testing.assert_array_equal(joined.kspace, kspace)
    assert [r.idx.repetition for r in joined.reference] == [0, 1, 2]
    assert joined.frame_dimension == "repetition" and joined.mask.shape == (3, 16, 16)
    np.testing.assert_allclose(joined.calibration, kspace.mean(axis=1), atol=1e-6)
    assert joiner.flush() == []


def test_a_joiner_passes_whole_cines_through_and_flushes_what_is_incomplete():
    _, _, kspace = known_cine(t=3)
    header = parse_header(header_xml(16, 16, frames=3, frame_limit="repetition"))
    joiner = FrameJoiner(header)
    whole = dataclasses.replace(_single_frames(kspace, header)[0], kspace=kspace)
    assert joiner.add(whole) == [whole]
    failure = SliceFailure(2, "bad")
    assert joiner.add(failure) == [failure]
    first, second, _ = _single_frames(kspace, header)
    assert joiner.add(first) == [] and joiner.add(second) == []
    (joined,) = joiner.flush()  # the stream ended before the last frame
    assert joined.kspace.shape[1] == 2


def test_bad_slices_fail_alone():
    _, _, kspace = known_cine(t=1)
    rows = np.ones((1, 16), bool)
    header = header_xml(16, 16, slices=4)
    good = acquisitions(kspace, rows, slice_index=0, last_in_measurement=False)
    nan = acquisitions(kspace, rows, slice_index=1, last_in_measurement=False)
    nan[3].data[0, 2] = np.nan
    coils = acquisitions(kspace, rows, slice_index=2, last_in_measurement=False)
    coils[5] = ismrmrd.Acquisition.from_array(kspace[:3, 0, 5], center_sample=8)
    coils[5].idx.slice = 2
    coils[5].idx.kspace_encode_step_1 = 5
    no_centre_rows = rows.copy()
    no_centre_rows[0, 6:11] = False
    no_centre = acquisitions(kspace, no_centre_rows, slice_index=3)
    results = {r.slice_index: r for r in assemble(header, good + nan + coils + no_centre)}
    assert isinstance(results[0], SliceData)
    assert isinstance(results[1], SliceFailure) and "NaN" in results[1].message
    assert isinstance(results[2], SliceFailure) and "3 coils" in results[2].message
    assert isinstance(results[3], SliceFailure) and "centre" in results[3].message


def test_absurd_matrix_is_refused_before_allocating():
    _, _, kspace = known_cine(t=1)
    header = parse_header(header_xml(16, 16, frames=1))
    buffer = AcquisitionBuffer(header, max_matrix_elements=1000)
    out = []
    for acq in acquisitions(kspace, np.ones((1, 16), bool)):
        out += buffer.add(acq)
    assert isinstance(out[0], SliceFailure) and "max_matrix_elements" in out[0].message


def test_recon_data_converter_matches_acquisition_path():
    from gadgetron.types.recon_data import ReconBit, ReconBuffer, ReconData, SamplingDescription

    _, _, kspace = known_cine(t=2)
    rows = np.zeros((2, 16), bool)
    rows[:, ::2] = True
    sampled = kspace * rows[None, :, :, None]
    # (C, T, H, W) -> (RO, E1, E2, CHA, N, S, LOC)
    data = sampled.transpose(3, 2, 0, 1)[:, :, None, :, :, None, None]
    heads = np.empty((16, 1, 2, 1, 1), dtype=object)
    for e1 in range(16):
        for n in range(2):
            head = ismrmrd.AcquisitionHeader()
            head.number_of_samples, head.idx.phase = 16, n
            heads[e1, 0, n, 0, 0] = head
    sampling = SamplingDescription()
    sampling.sampling_limits[1].center = 8
    bit = ReconBit(ReconBuffer(data, None, None, heads, sampling))
    (result,) = slices_from_recon_data(ReconData([bit]), parse_header(header_xml(16, 16, frames=2)))
    assert isinstance(result, SliceData)
    np.testing.assert_allclose(result.kspace, sampled, atol=1e-6)
    np.testing.assert_array_equal(result.mask[:, :, 0], rows)
    assert result.reference[1].idx.phase == 1


def test_recon_data_without_its_centre_line_fails_as_acquisitions_do():
    from gadgetron.types.recon_data import ReconBit, ReconBuffer, ReconData, SamplingDescription

    _, _, kspace = known_cine(t=1)
    rows = np.ones((1, 16), bool)
    rows[:, 8] = False  # the centre line (sampling centre 8) never arrives
    data = (kspace * rows[None, :, :, None]).transpose(3, 2, 0, 1)[:, :, None, :, :, None, None]
    heads = np.empty((16, 1, 1, 1, 1), dtype=object)
    for e1 in range(16):
        heads[e1, 0, 0, 0, 0] = ismrmrd.AcquisitionHeader()
        heads[e1, 0, 0, 0, 0].number_of_samples = 16
    sampling = SamplingDescription()
    sampling.sampling_limits[1].center = 8
    bit = ReconBit(ReconBuffer(data, None, None, heads, sampling))
    (result,) = slices_from_recon_data(ReconData([bit]), parse_header(header_xml(16, 16)))
    assert isinstance(result, SliceFailure)
    assert "k-space centre line (e1=8) was never acquired" in result.message


def test_siemens_file_assembles_with_header_shapes(siemens_file):
    raw = read_raw(siemens_file)
    buffer = AcquisitionBuffer(raw.header)
    out = []
    for acq in raw.acquisitions():
        out += buffer.add(acq)
    (result,) = out
    assert isinstance(result, SliceData), getattr(result, "message", "")
    assert result.kspace.shape == (14, 1, 144, 192)
    assert result.calibration.shape == (14, 144, 192)
    lines = np.flatnonzero(result.mask[0, :, 0])
    assert len(lines) == 36 and lines[0] == 18 and 72 in lines  # e1 0..105, centre 54 -> 72
    assert result.calib_lines >= 48
    centre_energy = np.abs(result.calibration).sum(axis=(0, 2)).argmax()
    assert centre_energy == 72
    assert result.recon_matrix == (192, 144) and result.field_of_view == (280.0, 210.0, 8.0)


def test_simulated_file_at_accel_1_reproduces_the_truth(tmp_path):
    simulate = pytest.importorskip("training.simulate")
    path = tmp_path / "sim.h5"
    simulate.simulate_cine(
        path, seed=1, n_coils=4, frames=3, matrix=24, accel=1, noise_level=0.0, n_slices=2
    )
    raw = read_raw(path)
    buffer = AcquisitionBuffer(raw.header)
    out = []
    for acq in raw.acquisitions():
        out += buffer.add(acq)
    out += buffer.flush()
    import h5py

    with h5py.File(path, "r") as f:
        truth, maps = f["passnet_truth/images"][()], f["passnet_truth/coil_maps"][()]
    assert [type(s).__name__ for s in out] == ["SliceData", "SliceData"]
    for s in out:
        assert s.kspace.shape == (4, 3, 24, 24) and s.mask.all()
        coil_images = ifft2c(torch.from_numpy(s.kspace)).numpy()
        combined = (coil_images * maps[s.slice_index].conj()[:, None]).sum(0)
        err = np.linalg.norm(combined - truth[s.slice_index]) / np.linalg.norm(truth[s.slice_index])
        assert err < 1e-3, err


def test_simulated_partial_fourier_mask_matches_truth(tmp_path):
    simulate = pytest.importorskip("training.simulate")
    path = tmp_path / "pf.h5"
    simulate.simulate_cine(
        path, seed=2, n_coils=2, frames=2, matrix=24, accel=2, partial_fourier=0.75
    )
    raw = read_raw(path)
    buffer = AcquisitionBuffer(raw.header)
    out = []
    for acq in raw.acquisitions():
        out += buffer.add(acq)
    (s,) = out + buffer.flush()
    import h5py

    with h5py.File(path, "r") as f:
        mask = f["passnet_truth/mask"][0]
    np.testing.assert_array_equal(s.mask, mask.astype(np.float32))
