"""gadgets.exporters: DICOM series a PACS accepts, NIfTI with the scanner geometry, the PNG."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import ismrmrd
import numpy as np
import pytest

from gadgets.chain import run_chain
from gadgets.chain_config import ChainParams
from gadgets.exporters.dicom import SeriesInfo, study_tags, write_dicom
from gadgets.exporters.nifti import write_nifti
from gadgets.exporters.png import _grid, write_png
from gadgets.exporters.stacks import slice_stacks, volume
from gadgets.exporters.timing import frame_timing
from gadgets.exporters.uids import derived_uid, input_digest, is_valid_uid
from passnet_core.ismrmrd_io import parse_header, read_raw

pydicom = pytest.importorskip("pydicom")
nib = pytest.importorskip("nibabel")

SUBJECT = (
    "<subjectInformation><patientName>Doe^Jane</patientName><patientID>P-0042</patientID>"
    "<patientBirthdate>1970-01-02</patientBirthdate><patientGender>F</patientGender>"
    "</subjectInformation><studyInformation><studyDate>2024-05-06</studyDate>"
    "<studyTime>07:08:09</studyTime><studyID>S17</studyID>"
    "<studyDescription>cardiac cine</studyDescription></studyInformation>"
)
REQUIRED_TAGS = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
    "StudyDate", "StudyTime", "StudyID", "StudyDescription", "SeriesInstanceUID",
    "SeriesNumber", "SeriesDescription", "Modality", "FrameOfReferenceUID", "ImageType",
    "SOPInstanceUID", "SOPClassUID", "ImagePositionPatient", "ImageOrientationPatient",
    "PixelSpacing", "SliceThickness", "SliceLocation", "TriggerTime", "CardiacNumberOfImages",
    "InstanceNumber", "TemporalPositionIdentifier", "NumberOfTemporalPositions", "WindowCenter",
    "WindowWidth", "Rows", "Columns", "PixelData",
)  # fmt: skip


@pytest.fixture(scope="module")
def two_slice_recon(tmp_path_factory):
    """A simulated 2-slice cine (double-oblique geometry) reconstructed zero-filled."""
    from training.simulate import simulate_cine

    path = tmp_path_factory.mktemp("exp") / "cine2.h5"
    simulate_cine(path, seed=3, n_coils=2, frames=5, matrix=(24, 32), accel=2, n_slices=2)
    raw = read_raw(path)
    images: list = []
    report = run_chain(
        raw.header,
        raw.acquisitions(),
        images.append,
        ChainParams(device="cpu", method="zero_filled"),
    )
    assert report.slices_done == 2
    return raw, images


def _without_subject(header_xml: str) -> str:
    """The simulated header without its subject and study information."""
    return re.sub(r"\s*<(subject|study)Information>.*?</\1Information>", "", header_xml, flags=re.S)


def _with_subject(header_xml: str) -> str:
    """The simulated header with this test's subject/study information and a series number."""
    xml = _without_subject(header_xml).replace(
        "<measurementInformation>", SUBJECT + "<measurementInformation>"
    )
    return xml.replace(
        "<protocolName>", "<initialSeriesNumber>7</initialSeriesNumber><protocolName>"
    )


def _read_series(folder: Path) -> list:
    return [pydicom.dcmread(p) for p in sorted(folder.glob("*.dcm"))]


def test_dicom_series_has_the_tags_uids_timing_and_geometry(tmp_path, two_slice_recon):
    raw, images = two_slice_recon
    header = _with_subject(raw.header_xml)
    digest = input_digest(header, raw.heads, raw.data)
    info = SeriesInfo(parse_header(header), digest, recon_key="passnet|w1", method="passnet")
    assert write_dicom(images, tmp_path / "a", info) == 10
    assert write_dicom(images, tmp_path / "b", info) == 10
    first, second = _read_series(tmp_path / "a"), _read_series(tmp_path / "b")
    for ds in first:
        missing = [tag for tag in REQUIRED_TAGS if tag not in ds]
        assert not missing, missing
        for elem in ds:  # every value is valid for its VR (lengths, characters, UID syntax)
            if elem.VR in ("OB", "OW", "SQ", "UN"):
                continue
            values = elem.value if elem.VM > 1 else [elem.value]
            for value in values:
                if value is None or value == "":
                    continue  # type 2: present, value unknown
                text = str(value) if elem.VR in ("DS", "IS", "PN") else value
                pydicom.valuerep.validate_value(elem.VR, text, pydicom.config.RAISE)
    ds = first[0]
    assert (str(ds.PatientName), ds.PatientID, ds.PatientBirthDate, ds.PatientSex) == (
        "Doe^Jane", "P-0042", "19700102", "F",
    )  # fmt: skip
    assert (ds.StudyDate, ds.StudyTime, ds.StudyID) == ("20240506", "070809", "S17")
    assert ds.StudyDescription == "cardiac cine" and ds.Modality == "MR"
    assert ds.SeriesNumber == 701 and ds.SeriesDescription.endswith("PASSNet")
    assert list(ds.ImageType)[:2] == ["DERIVED", "PRIMARY"]

    # UIDs: valid, one study and series, distinct instances, study != series, stable
    uids = {ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID}
    sops = [d.SOPInstanceUID for d in first]
    assert len(uids) == 3 and len(set(sops)) == len(sops) == 10 and not uids & set(sops)
    for uid in [*uids, *sops]:
        assert is_valid_uid(uid) and len(uid) <= 64
    assert {d.SeriesInstanceUID for d in first} == {ds.SeriesInstanceUID}
    assert {d.StudyInstanceUID for d in first} == {ds.StudyInstanceUID}
    assert [d.SOPInstanceUID for d in second] == sops
    assert second[0].SeriesInstanceUID == ds.SeriesInstanceUID

    # cine order: within a slice, trigger time and temporal position grow with InstanceNumber
    by_instance = sorted(first, key=lambda d: int(d.InstanceNumber))
    assert [int(d.InstanceNumber) for d in by_instance] == list(range(1, 11))
    for location in {float(d.SliceLocation) for d in first}:
        cine = [d for d in by_instance if float(d.SliceLocation) == location]
        assert len(cine) == 5 and all(d.CardiacNumberOfImages == 5 for d in cine)
        triggers = [float(d.TriggerTime) for d in cine]
        assert all(b > a for a, b in zip(triggers, triggers[1:], strict=False))
        assert [int(d.TemporalPositionIdentifier) for d in cine] == [1, 2, 3, 4, 5]
    assert len({float(d.SliceLocation) for d in first}) == 2

    # geometry and window against the ISMRMRD image headers
    stacks = slice_stacks(images)
    ordered = [im for s in stacks for im in s.images]
    for d, im in zip(by_instance, ordered, strict=True):
        h, w = im.data.shape[-2:]
        dx, dy = im.field_of_view[0] / w, im.field_of_view[1] / h
        read, phase = np.array(im.read_dir), np.array(im.phase_dir)
        np.testing.assert_allclose(d.ImageOrientationPatient, [*read, *phase], atol=1e-6)
        np.testing.assert_allclose(d.PixelSpacing, [dy, dx], rtol=1e-6)
        centre = np.array(d.ImagePositionPatient, float) + (w // 2) * dx * read
        centre += (h // 2) * dy * phase
        np.testing.assert_allclose(centre, im.position, atol=1e-4)
        assert float(d.SliceThickness) == pytest.approx(im.field_of_view[2])
        assert (d.Rows, d.Columns) == (h, w)
        assert float(d.WindowCenter) == pytest.approx(float(im.meta["WindowCenter"]), rel=1e-3)
        assert float(d.TriggerTime) == pytest.approx(2.5 * im.physiology_time_stamp[0])
        np.testing.assert_allclose(d.pixel_array, np.rint(np.abs(im.data[0, 0])), atol=1)


def test_dicom_placeholders_and_one_series_per_method(tmp_path, two_slice_recon):
    raw, images = two_slice_recon
    header = _without_subject(raw.header_xml)  # a file that names no patient or study
    digest = input_digest(header, raw.heads, raw.data)
    passnet = SeriesInfo(parse_header(header), digest, "passnet|w1", "passnet")
    lplus_s = SeriesInfo(parse_header(header), digest, "lplus_s", "lplus_s")
    write_dicom(images[:1], tmp_path / "p", passnet)
    write_dicom(images[:1], tmp_path / "l", lplus_s)
    (a,), (b,) = _read_series(tmp_path / "p"), _read_series(tmp_path / "l")
    assert str(a.PatientName) == "Anonymous" and a.PatientID == f"PASSNET-{digest[:12]}"
    assert a.PatientBirthDate == "" and a.PatientSex == "" and a.StudyDate == ""
    assert a.StudyInstanceUID == b.StudyInstanceUID
    assert a.FrameOfReferenceUID == b.FrameOfReferenceUID
    assert a.SeriesInstanceUID != b.SeriesInstanceUID and a.SOPInstanceUID != b.SOPInstanceUID
    assert (a.SeriesNumber, b.SeriesNumber) == (101, 102)
    # another input is another study
    other = input_digest(header, raw.heads[:-1], raw.data[:-1])
    write_dicom(images[:1], tmp_path / "o", SeriesInfo(parse_header(header), other))
    assert _read_series(tmp_path / "o")[0].StudyInstanceUID != a.StudyInstanceUID
    # no header at all: the same placeholders
    write_dicom(images[:1], tmp_path / "n", SeriesInfo(None, digest))
    (n,) = _read_series(tmp_path / "n")
    assert str(n.PatientName) == "Anonymous" and n.StudyInstanceUID == a.StudyInstanceUID
    assert n.SeriesNumber == 101


def test_header_uids_are_used_when_valid():
    header = (
        '<?xml version="1.0"?><ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD">'
        "<studyInformation><studyInstanceUID>1.2.3.4</studyInstanceUID></studyInformation>"
        "<measurementInformation><patientPosition>HFS</patientPosition>"
        "<frameOfReferenceUID>1.2.03</frameOfReferenceUID>"
        "</measurementInformation><experimentalConditions><H1resonanceFrequency_Hz>63500000"
        "</H1resonanceFrequency_Hz></experimentalConditions><encoding><encodedSpace><matrixSize>"
        "<x>8</x><y>8</y><z>1</z></matrixSize><fieldOfView_mm><x>8</x><y>8</y><z>8</z>"
        "</fieldOfView_mm></encodedSpace><reconSpace><matrixSize><x>8</x><y>8</y><z>1</z>"
        "</matrixSize><fieldOfView_mm><x>8</x><y>8</y><z>8</z></fieldOfView_mm></reconSpace>"
        "<encodingLimits/><trajectory>cartesian</trajectory></encoding></ismrmrdHeader>"
    )
    tags = study_tags(parse_header(header), "ab" * 32)
    assert tags["StudyInstanceUID"] == "1.2.3.4"
    assert tags["FrameOfReferenceUID"].startswith("2.25.")  # 1.2.03 has a leading zero


def test_uid_syntax():
    uid = derived_uid("x" * 1000, "series")
    assert uid.startswith("2.25.") and len(uid) <= 44 and is_valid_uid(uid)
    assert uid == derived_uid("x" * 1000, "series") != derived_uid("y")
    for bad in ("", "1", "1.02", "1..2", "a.b", "1.2.", "1." + "2" * 63):
        assert not is_valid_uid(bad), bad


# ------------------------------------------------------------------------------- NIfTI

COS, SIN = math.cos(math.radians(30)), math.sin(math.radians(30))


def synthetic_images(slices=2, frames=3, stamps=(0, 20, 40), phase_counter=True):
    """(H, W) = (2, 4) frames; FOV 8 x 6 x 5 mm -> dx 2, dy 3; read rotated 30 deg about z."""
    images = []
    for s in range(slices):
        for t in range(frames):
            image = ismrmrd.Image.from_array(np.full((1, 2, 4), 10.0 * s + t + 1, np.float32))
            head = image.getHead()
            head.position[:] = (10.0, -20.0, 30.0 + 6.0 * s)
            head.read_dir[:] = (COS, SIN, 0.0)
            head.phase_dir[:] = (-SIN, COS, 0.0)
            head.slice_dir[:] = (0.0, 0.0, 1.0)
            head.field_of_view[:] = (8.0, 6.0, 5.0)
            head.slice = s
            head.image_index = 1 + s * frames + t
            head.physiology_time_stamp[0] = stamps[t] if stamps else 0
            head.acquisition_time_stamp = 100 if stamps else 7
            if phase_counter:
                head.phase = t
            else:
                head.repetition = t
            image.setHead(head)
            images.append(image)
    return images


def test_nifti_affine_of_an_oblique_stack_is_the_hand_computed_one(tmp_path):
    path = tmp_path / "v.nii.gz"
    summary = write_nifti(synthetic_images(), path)
    img = nib.load(path)
    # LPS origin = position - (W//2) dx read - (H//2) dy phase
    #            = (10, -20, 30) - 4 (cos30, sin30, 0) - 3 (-sin30, cos30, 0)
    #            = (10 - 3.4641016 + 1.5, -20 - 2 - 2.5980762, 30) = (8.0358984, -24.5980762, 30)
    # columns (LPS): 2 read = (1.7320508, 1, 0); 3 phase = (-1.5, 2.5980762, 0); slice step
    # (0, 0, 6). RAS negates the first two rows.
    expected = np.array(
        [
            [-1.7320508, 1.5, 0.0, -8.0358984],
            [-1.0, -2.5980762, 0.0, 24.5980762],
            [0.0, 0.0, 6.0, 30.0],
            [0.0, 0.0, 0.0, 1.0],
        ]
    )
    np.testing.assert_allclose(img.affine, expected, atol=1e-5)
    np.testing.assert_allclose(img.header.get_qform(), expected, atol=1e-5)
    assert int(img.header["qform_code"]) == int(img.header["sform_code"]) == 1
    assert img.shape == (4, 2, 2, 3) == summary.shape
    data = np.asarray(img.dataobj)
    assert data[0, 0, 1, 2] == 13.0  # (x=column, y=row, z=slice, t=frame)
    np.testing.assert_allclose(img.header.get_zooms(), (2.0, 3.0, 6.0, 0.05), rtol=1e-5)
    assert img.header.get_xyzt_units() == ("mm", "sec")
    assert summary.interval_ms == pytest.approx(50.0)


def test_nifti_time_spacing_unknown_is_said(tmp_path):
    path = tmp_path / "v.nii"
    summary = write_nifti(synthetic_images(slices=1, stamps=None), path)
    img = nib.load(path)
    assert summary.interval_ms is None and img.header.get_zooms()[3] == 0
    assert img.header.get_xyzt_units()[1] == "unknown"
    assert b"frame interval unknown" in img.header["descrip"].tobytes()
    # one slice: the third axis is thickness along slice_dir
    np.testing.assert_allclose(img.affine[:3, 2], (0, 0, 5.0), atol=1e-6)


def test_real_time_frames_take_acquisition_time(tmp_path):
    images = synthetic_images(slices=1, stamps=(0, 0, 0), phase_counter=False)
    for t, im in enumerate(images):
        im.acquisition_time_stamp = 1000 + 16 * t
    timing = frame_timing(images)
    assert not timing.cardiac and timing.source == "acquisition time stamps"
    assert timing.interval_ms == pytest.approx(40.0)


def test_nifti_centre_voxel_is_the_image_position(tmp_path, two_slice_recon):
    _, images = two_slice_recon
    path = tmp_path / "sim.nii.gz"
    write_nifti(images, path)
    img = nib.load(path)
    for k, stack in enumerate(slice_stacks(images)):
        im = stack.images[0]
        h, w = im.data.shape[-2:]
        ras = nib.affines.apply_affine(img.affine, (w // 2, h // 2, k))
        np.testing.assert_allclose(ras, np.array(im.position) * (-1, -1, 1), atol=1e-3)
    assert img.header.get_zooms()[3] > 0


# ------------------------------------------------------------------------------- PNG


def test_png_shows_every_frame_readably(tmp_path, two_slice_recon):
    from matplotlib.image import imread

    _, images = two_slice_recon
    vol = volume(slice_stacks(images))
    plain = write_png(images, tmp_path / "plain.png", title="plain")
    compared = write_png(images, tmp_path / "truth.png", truth=vol * 0.9, scores=[(30.0, 0.9)] * 2)
    assert _grid(20) == (5, 4) and _grid(8) == (4, 2)
    assert _grid(1) == (1, 1)
    h, w = imread(plain).shape[:2]
    assert w >= 800 and h >= 600  # 190 px panels
    assert imread(compared).shape[1] > w  # truth and error columns
    with pytest.raises(ValueError, match="truth does not match"):
        write_png(images, tmp_path / "bad.png", truth=vol[:1])


def test_importing_exporters_loads_no_heavy_library():
    modules = ("dicom", "geometry", "nifti", "png", "stacks", "timing", "uids")
    code = (
        f"import sys, {', '.join(f'gadgets.exporters.{m}' for m in modules)}\n"
        "heavy = {'numpy', 'torch', 'h5py', 'ismrmrd', 'pydicom', 'nibabel', 'matplotlib'}\n"
        "print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
