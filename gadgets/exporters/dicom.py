"""DICOM MR Image Storage files: one series per reconstruction that sorts and plays as a cine.

The study and frame of reference take their UIDs from the ISMRMRD header when it carries valid
ones, otherwise they derive from the input's content (:mod:`gadgets.exporters.uids`); the
series adds the reconstruction key (method, weights, chain settings), so another method is
another series.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gadgets.exporters.geometry import pixel_spacing, vector, voxel_to_lps
from gadgets.exporters.stacks import slice_stacks
from gadgets.exporters.timing import frame_timing, rr_interval_ms
from gadgets.exporters.uids import derived_uid, is_valid_uid
from passnet_core import methods

if TYPE_CHECKING:
    import ismrmrd
    from ismrmrd.xsd import ismrmrdHeader

log = logging.getLogger(__name__)

_UINT16_MAX = 65535.0


@dataclass(frozen=True)
class SeriesInfo:
    """What a DICOM series needs besides the images.

    Attributes
    ----------
    header
        The raw file's parsed ISMRMRD header (patient, study, measurement, sequence
        information), or ``None``: placeholders.
    input_digest
        :func:`~gadgets.exporters.uids.input_digest` of the raw input: the study, frame of
        reference and placeholder patient ID derive from it.
    recon_key
        Method, weights and chain settings: another value gives another series.
    method
        ``"passnet"``, ``"lplus_s"`` or ``"zero_filled"`` (series description and number).
    """

    header: ismrmrdHeader | None
    input_digest: str
    recon_key: str = "passnet"
    method: str = "passnet"


def _dicom_date(value: object) -> str:
    match = re.match(r"(\d{4})-?(\d{2})-?(\d{2})", str(value or ""))
    return "".join(match.groups()) if match else ""


def _dicom_time(value: object) -> str:
    match = re.match(r"(\d{2}):?(\d{2}):?(\d{2})(\.\d{1,6})?", str(value or ""))
    return "".join(g for g in match.groups() if g) if match else ""


def _text(value: object, limit: int) -> str:
    text = "" if value is None else " ".join(str(getattr(value, "value", value)).split())
    return text[:limit]


def _ds(value: float) -> str:
    """A decimal string of at most 16 characters (DICOM DS)."""
    for digits in range(10, 0, -1):
        text = f"{value:.{digits}g}"
        if len(text) <= 16:
            return text
    return f"{value:.0f}"


def study_tags(header: ismrmrdHeader | None, digest: str) -> dict[str, Any]:
    """Patient, study and equipment tags from the ISMRMRD header, placeholders where absent.

    Placeholders: ``PatientName`` ``Anonymous``, ``PatientID`` ``PASSNET-<digest>``; the other
    patient and study tags stay empty (DICOM type 2: present, value unknown).
    """
    subject = getattr(header, "subjectInformation", None)
    study = getattr(header, "studyInformation", None)
    meas = getattr(header, "measurementInformation", None)
    system = getattr(header, "acquisitionSystemInformation", None)
    sex = _text(getattr(subject, "patientGender", None), 1).upper()
    study_uid = getattr(study, "studyInstanceUID", None)
    frame_uid = getattr(meas, "frameOfReferenceUID", None)
    tags = {
        "PatientName": _text(getattr(subject, "patientName", None), 64) or "Anonymous",
        "PatientID": _text(getattr(subject, "patientID", None), 64) or f"PASSNET-{digest[:12]}",
        "PatientBirthDate": _dicom_date(getattr(subject, "patientBirthdate", None)),
        "PatientSex": sex if sex in ("M", "F", "O") else "",
        "StudyInstanceUID": study_uid if is_valid_uid(study_uid) else derived_uid(digest, "study"),
        "StudyDate": _dicom_date(getattr(study, "studyDate", None))
        or _dicom_date(getattr(meas, "seriesDate", None)),
        "StudyTime": _dicom_time(getattr(study, "studyTime", None))
        or _dicom_time(getattr(meas, "seriesTime", None)),
        "StudyID": _text(getattr(study, "studyID", None), 16),
        "AccessionNumber": _text(getattr(study, "accessionNumber", None), 16),
        "ReferringPhysicianName": _text(getattr(study, "referringPhysicianName", None), 64),
        "StudyDescription": _text(getattr(study, "studyDescription", None), 64)
        or _text(getattr(meas, "protocolName", None), 64),
        "FrameOfReferenceUID": frame_uid
        if is_valid_uid(frame_uid)
        else derived_uid(digest, "frame-of-reference"),
        "PositionReferenceIndicator": "",
        "PatientPosition": _text(getattr(meas, "patientPosition", None), 16),
        "ProtocolName": _text(getattr(meas, "protocolName", None), 64),
        "Manufacturer": _text(getattr(system, "systemVendor", None), 64),
        "ManufacturerModelName": _text(getattr(system, "systemModel", None), 64),
        "InstitutionName": _text(getattr(system, "institutionName", None), 64),
    }
    strength = getattr(system, "systemFieldStrength_T", None)
    if strength:
        tags["MagneticFieldStrength"] = _ds(float(strength))
    sequence = getattr(header, "sequenceParameters", None)
    for tag, name in (("RepetitionTime", "TR"), ("EchoTime", "TE"), ("FlipAngle", "flipAngle_deg")):
        values = getattr(sequence, name, None) or []
        tags[tag] = _ds(float(values[0])) if values else ""
    return tags


def _series_offset(method: str) -> int:
    """The registry's DICOM series offset of a method; 9 for one no chain writes."""
    try:
        offset = methods.get(method).series_offset
    except ValueError:
        offset = None
    return 9 if offset is None else offset


def _series_number(header: ismrmrdHeader | None, method: str) -> int:
    meas = getattr(header, "measurementInformation", None)
    base = getattr(meas, "initialSeriesNumber", None) or 1
    return 100 * int(base) + _series_offset(method)


def _meta_value(image: ismrmrd.Image, key: str) -> str | None:
    """One meta attribute of an image (first value of a list), ``None`` when absent."""
    meta = getattr(image, "meta", None)
    if meta is None:
        return None
    try:
        value = meta[key]
    except (TypeError, KeyError):
        return None
    return str(value[0] if isinstance(value, (list, tuple)) else value)


def _window(image: ismrmrd.Image, factor: float) -> tuple[str, str] | None:
    # ours and Gadgetron's spelling (its images carry GADGETRON_WindowCenter/Width)
    centre_text = _meta_value(image, "WindowCenter") or _meta_value(image, "GADGETRON_WindowCenter")
    width_text = _meta_value(image, "WindowWidth") or _meta_value(image, "GADGETRON_WindowWidth")
    if centre_text is None or width_text is None:
        return None
    try:
        centre, width = float(centre_text), float(width_text)
    except ValueError:
        return None
    return _ds(centre * factor), _ds(max(width * factor, 1.0))


def write_dicom(images: Sequence[ismrmrd.Image], folder: str | Path, series: SeriesInfo) -> int:
    """Write one MR Image Storage file per image: one series that plays as a cine.

    Instances are numbered slice by slice, frame by frame; within a slice TriggerTime (cardiac
    phases) and TemporalPositionIdentifier increase with InstanceNumber. Pixels are the
    magnitudes as uint16; a series whose peak lies outside ``[1, 65535]`` is scaled to a peak of
    4095 (logged) and its window with it.

    Parameters
    ----------
    images
        ``ismrmrd.Image`` objects of one reconstruction.
    folder
        Created if needed; files are ``METHOD_slice_SSS_frame_TTT.dcm``, so the series of two
        methods can share a folder.
    series
        Header, input digest and reconstruction key (UIDs and tags).

    Returns
    -------
    int
        Files written.
    """
    import numpy as np
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import UID, ExplicitVRLittleEndian, MRImageStorage

    folder = Path(folder)
    stacks = slice_stacks(images)
    header = series.header
    common = study_tags(header, series.input_digest)
    series_uid = derived_uid(series.input_digest, "series", series.recon_key)
    label = methods.label(series.method)
    meas = getattr(header, "measurementInformation", None)
    base_description = _text(getattr(meas, "seriesDescription", None), 40) or common["ProtocolName"]
    description = f"{base_description} {label}".strip()[:64]
    peak = max(float(np.abs(im.data).max()) for im in images)
    factor = 1.0 if 1.0 <= peak <= _UINT16_MAX else (4095.0 / peak if peak > 0 else 1.0)
    if factor != 1.0:
        log.info("DICOM: magnitudes scaled by %.4g to fit uint16 (peak %.4g)", factor, peak)
    rr_ms = rr_interval_ms(header)
    folder.mkdir(parents=True, exist_ok=True)
    prefix = re.sub(r"[^A-Za-z0-9]+", "_", series.method).strip("_") or "recon"

    def file_name(slice_index: int, t: int) -> str:
        return f"{prefix}_slice_{slice_index:03d}_frame_{t:03d}.dcm"

    written = {file_name(s.slice_index, t) for s in stacks for t in range(len(s.images))}
    others = [p for p in folder.glob("*.dcm") if p.name not in written]
    if others:
        log.warning("DICOM folder %s already holds %d other .dcm files", folder, len(others))
    instance = 0
    for stack in stacks:
        timing = frame_timing(stack.images, rr_ms)
        n_t = len(stack.images)
        for t, im in enumerate(stack.images):
            instance += 1
            pixels = np.clip(np.rint(np.abs(im.data[0, 0]) * factor), 0, _UINT16_MAX)
            pixels = pixels.astype(np.uint16)
            sop_uid = derived_uid(series.input_digest, "series", series.recon_key, str(instance))
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = MRImageStorage
            meta.MediaStorageSOPInstanceUID = UID(sop_uid)
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            path = folder / file_name(stack.slice_index, t)
            ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
            ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: names from the header may need it
            ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, sop_uid
            for key, value in common.items():
                setattr(ds, key, value)
            ds.SeriesInstanceUID = series_uid
            ds.Modality = "MR"
            ds.SeriesNumber = _series_number(header, series.method)
            ds.SeriesDescription = description
            ds.SeriesDate = _dicom_date(getattr(meas, "seriesDate", None)) or common["StudyDate"]
            ds.SeriesTime = _dicom_time(getattr(meas, "seriesTime", None)) or common["StudyTime"]
            ds.ContentDate, ds.ContentTime = common["StudyDate"], common["StudyTime"]
            ds.SoftwareVersions = "passnet-gadgetron"
            kind = "M" if im.image_type == 1 else "M_FROM_COMPLEX"
            ds.ImageType = ["DERIVED", "PRIMARY", kind[:16], series.method.upper()[:16]]
            ds.ImageComments = _text(_meta_value(im, "ImageComment") or label, 10240)
            ds.ScanningSequence, ds.SequenceVariant = "RM", "NONE"  # research reconstruction
            ds.ScanOptions, ds.MRAcquisitionType = "", "2D"
            ds.EchoTrainLength = ""
            ds.InstanceNumber = instance
            ds.AcquisitionNumber = 1
            ds.TemporalPositionIdentifier = t + 1
            ds.NumberOfTemporalPositions = n_t
            if timing.cardiac:
                ds.CardiacNumberOfImages = n_t
            if timing.cardiac and timing.times_ms is not None:
                ds.TriggerTime = _ds(timing.times_ms[t])
            if rr_ms:
                ds.NominalInterval = int(round(rr_ms))
            if timing.interval_ms:
                ds.TemporalResolution = _ds(timing.interval_ms)
            affine = voxel_to_lps(im)
            dx, dy = pixel_spacing(im)
            read, phase = vector(im.read_dir), vector(im.phase_dir)
            ds.ImagePositionPatient = [_ds(v) for v in affine[:3, 3]]
            ds.ImageOrientationPatient = [_ds(v) for v in (*read, *phase)]
            ds.PixelSpacing = [_ds(dy), _ds(dx)]  # row spacing (along phase), column spacing
            ds.SliceThickness = _ds(float(im.field_of_view[2]))
            ds.SliceLocation = _ds(float(np.dot(vector(im.position), np.cross(read, phase))))
            window = _window(im, factor)
            if window is not None:
                ds.WindowCenter, ds.WindowWidth = window
            ds.Rows, ds.Columns = pixels.shape
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
            ds.PixelData = pixels.tobytes()
            pydicom.dcmwrite(str(path), ds, enforce_file_format=True)
    return instance
