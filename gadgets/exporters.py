"""Viewer, PACS and analysis files from reconstructed ``ismrmrd.Image`` objects.

One job: turn the images of one reconstruction (and the raw file's ISMRMRD header) into

- a PNG overview (:func:`write_png`): every frame of every slice, x-t and y-t profiles, a
  colour bar and a mm scale bar; with ground truth also the truth, the ``|error|`` and their
  x-t profiles;
- a DICOM MR series (:func:`write_dicom`) that sorts and plays as a cine;
- a NIfTI-1 volume (:func:`write_nifti`) with the scanner geometry and the frame interval.

Geometry
    ISMRMRD image headers and DICOM both use the patient coordinate system LPS (+x towards the
    patient's left, +y posterior, +z head). A frame is stored ``(rows, columns) = (H, W)``
    with columns along ``read_dir`` and rows along ``phase_dir`` (gadgets/images.py). With the
    centred FFT used throughout (docs/design.md) the image ``position`` (centre of the field of
    view) is the pixel at row ``H//2``, column ``W//2``, so voxel (column ``i``, row ``j``) lies
    at ``position + (i - W//2) dx read_dir + (j - H//2) dy phase_dir`` with ``dx = fov_x / W``,
    ``dy = fov_y / H`` (:func:`voxel_to_lps`). For an even matrix this puts the first pixel at
    ``position - fov_x/2 read_dir - fov_y/2 phase_dir``. NIfTI uses RAS: x and y change sign.

Time
    ISMRMRD time stamps count ticks of :data:`TIME_STAMP_TICK_MS` (2.5 ms, Siemens' unit, which
    Gadgetron and ``passnet simulate`` use too). :func:`frame_timing` says where frame times
    come from: cardiac phases take their trigger delay from ``physiology_time_stamp[0]`` (or
    ``RR / frames`` when the header carries an RR interval and the stamps do not increase);
    real-time frames (repetitions) take ``acquisition_time_stamp``. Otherwise the timing is
    unknown and the outputs say so.

DICOM UIDs
    Derived UIDs live under the root :data:`UID_ROOT` = ``2.25`` (ITU-T X.667 / ISO/IEC 9834-8:
    a UID made of the decimal value of a UUID, usable without a registered organisation root).
    The UUID is a name-based (SHA-1, version 5) UUID of the input's content digest (header and
    acquisitions, :func:`input_digest`) in the namespace :data:`UID_NAMESPACE`, so UIDs are at
    most 44 characters, valid, and the same on every run over the same input. The study and
    frame of reference come from the header when it carries valid UIDs; the series adds the
    reconstruction key (method, weights, chain settings), so another method is another series.

Heavy libraries (numpy, ismrmrd, pydicom, nibabel, matplotlib) are imported inside functions:
importing this module costs nothing.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import ismrmrd
    import numpy as np
    from ismrmrd.xsd import ismrmrdHeader
    from matplotlib.axes import Axes
    from matplotlib.image import AxesImage

log = logging.getLogger(__name__)

TIME_STAMP_TICK_MS = 2.5
UID_ROOT = "2.25"
# Fixed once for this package: changing it changes every derived UID.
UID_NAMESPACE = uuid.UUID("b1f3a0e2-5c57-4d1e-9c1a-7e3a2f6d4c11")
_UID_PATTERN = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+$")
METHOD_LABELS = {
    "passnet": "PASSNet",
    "lplus_s": "L+S",
    "llr": "LLR",
    "zero_filled": "zero-filled",
    "bart_llr": "BART LLR",
}
# DICOM SeriesNumber = 100 * the scanner's initialSeriesNumber (1 if absent) + this.
_METHOD_SERIES_OFFSET = {"passnet": 1, "lplus_s": 2, "zero_filled": 3, "llr": 4, "bart_llr": 5}
_UINT16_MAX = 65535.0
_ERROR_GAIN = 5.0  # |error| panels use a 5x narrower range than the images


# ---------------------------------------------------------------------------- image grouping


@dataclass
class SliceStack:
    """The frames of one slice in time order (``image_index`` order), with their headers."""

    slice_index: int
    images: list[ismrmrd.Image]

    def magnitudes(self) -> np.ndarray:
        """``(T, H, W)`` float32 magnitudes of the frames."""
        import numpy as np

        return np.stack([np.abs(im.data[0, 0]) for im in self.images]).astype(np.float32)


def slice_stacks(images: Sequence[ismrmrd.Image]) -> list[SliceStack]:
    """Group images by ``slice`` (ascending) and order each slice's frames by ``image_index``.

    Raises
    ------
    ValueError
        No images.
    """
    if not images:
        raise ValueError("no images to export")
    groups: dict[int, list[ismrmrd.Image]] = {}
    for image in images:
        groups.setdefault(int(image.slice), []).append(image)
    return [
        SliceStack(s, sorted(groups[s], key=lambda im: int(im.image_index))) for s in sorted(groups)
    ]


def volume(stacks: Sequence[SliceStack]) -> np.ndarray:
    """``(S, T, H, W)`` float32 magnitudes.

    Raises
    ------
    ValueError
        The slices differ in frame count or matrix size (no common array).
    """
    import numpy as np

    shapes = {(len(s.images), *s.images[0].data.shape[-2:]) for s in stacks}
    if len(shapes) != 1:
        raise ValueError(f"slices differ in (frames, rows, columns): {sorted(shapes)}")
    return np.stack([s.magnitudes() for s in stacks])


# ---------------------------------------------------------------------------- geometry


def _vec(values: Iterable[float]) -> np.ndarray:
    import numpy as np

    return np.array([float(v) for v in values], dtype=np.float64)


def pixel_spacing(image: ismrmrd.Image) -> tuple[float, float]:
    """``(dx, dy)`` in mm: field of view over matrix along the readout and phase axes."""
    h, w = image.data.shape[-2:]
    return float(image.field_of_view[0]) / w, float(image.field_of_view[1]) / h


def voxel_to_lps(image: ismrmrd.Image) -> np.ndarray:
    """4x4 affine from (column ``i``, row ``j``, slice ``k``, 1) to LPS millimetres.

    The third column is ``slice thickness * slice_dir`` (``read x phase`` when the header's
    ``slice_dir`` is zero); stacks of slices replace it with the slice-to-slice step.
    """
    import numpy as np

    h, w = image.data.shape[-2:]
    dx, dy = pixel_spacing(image)
    read, phase = _vec(image.read_dir), _vec(image.phase_dir)
    normal = _vec(image.slice_dir)
    if not np.linalg.norm(normal) > 0:
        normal = np.cross(read, phase)
    affine = np.eye(4)
    affine[:3, 0] = dx * read
    affine[:3, 1] = dy * phase
    affine[:3, 2] = float(image.field_of_view[2]) * normal
    affine[:3, 3] = _vec(image.position) - (w // 2) * dx * read - (h // 2) * dy * phase
    return affine


LPS_TO_RAS = ((-1.0, 0.0, 0.0, 0.0), (0.0, -1.0, 0.0, 0.0), (0.0, 0.0, 1.0, 0.0), (0, 0, 0, 1.0))


def stack_affine_lps(stacks: Sequence[SliceStack]) -> np.ndarray:
    """Voxel (column, row, slice) -> LPS mm for slices stacked in ``stacks`` order.

    The slice axis is the mean step between the first and the last slice's positions (one
    slice: thickness along ``slice_dir``). Unequal steps or orientations cannot be written in
    one affine; they are logged.
    """
    import numpy as np

    affine = voxel_to_lps(stacks[0].images[0])
    if len(stacks) > 1:
        centres = np.array([_vec(s.images[0].position) for s in stacks])
        steps = np.diff(centres, axis=0)
        step = (centres[-1] - centres[0]) / (len(stacks) - 1)
        if not np.linalg.norm(step) > 0:
            log.warning("all slices share one position; the slice axis uses the slice thickness")
            return affine
        if np.abs(steps - step).max() > 0.01 * np.linalg.norm(step):
            log.warning("slice positions are not evenly spaced; using the mean step")
        first = stacks[0].images[0]
        for s in stacks[1:]:
            im = s.images[0]
            if not (
                np.allclose(_vec(im.read_dir), _vec(first.read_dir), atol=1e-4)
                and np.allclose(_vec(im.phase_dir), _vec(first.phase_dir), atol=1e-4)
            ):
                log.warning("slices differ in orientation; the affine uses the first slice's")
                break
        affine[:3, 2] = step
    return affine


# ---------------------------------------------------------------------------- header and timing


def parse_header_xml(header_xml: str | bytes | None) -> ismrmrdHeader | None:
    """The parsed ISMRMRD header, or ``None`` (logged) when absent or unreadable."""
    if not header_xml:
        return None
    from passnet_core.ismrmrd_io import parse_header

    try:
        return parse_header(header_xml)
    except ValueError as exc:
        log.warning("ISMRMRD header unreadable for export (%s); using placeholders", exc)
        return None


def rr_interval_ms(header: ismrmrdHeader | None) -> float | None:
    """An RR interval from the header's user parameters (``RRInterval_ms`` and alike)."""
    params = getattr(header, "userParameters", None) if header is not None else None
    if params is None:
        return None
    for entry in [*params.userParameterDouble, *params.userParameterLong]:
        key = re.sub(r"[^a-z]", "", str(entry.name).lower())
        if key.startswith("rrinterval") and float(entry.value) > 0:
            return float(entry.value)
    return None


@dataclass(frozen=True)
class FrameTiming:
    """When the frames of one slice were acquired.

    Attributes
    ----------
    times_ms
        One time per frame, or ``None`` when unknown. Cardiac phases: delay after the R wave
        (DICOM TriggerTime); real-time frames: time since the first frame.
    interval_ms
        Mean interval between frames, or ``None``.
    source
        Where the times came from, for logs and file descriptions.
    cardiac
        The frames are cardiac phases (their ``phase`` counter changes).
    """

    times_ms: tuple[float, ...] | None
    interval_ms: float | None
    source: str
    cardiac: bool


def frame_timing(images: Sequence[ismrmrd.Image], rr_ms: float | None = None) -> FrameTiming:
    """Frame times of one slice's images (in frame order); see the module docstring."""
    import numpy as np

    n = len(images)
    cardiac = n > 1 and len({int(im.phase) for im in images}) > 1
    if n < 2:
        return FrameTiming(None, None, "single frame", cardiac)
    phys = np.array([float(im.physiology_time_stamp[0]) for im in images]) * TIME_STAMP_TICK_MS
    acq = np.array([float(im.acquisition_time_stamp) for im in images]) * TIME_STAMP_TICK_MS
    times, source = None, "unknown"
    if cardiac and np.all(np.diff(phys) > 0):
        times, source = phys, "physiology time stamps"
    elif cardiac and rr_ms:
        times, source = np.arange(n) * rr_ms / n, "RR interval / frames"
    elif not cardiac and np.all(np.diff(acq) > 0):
        times, source = acq - acq[0], "acquisition time stamps"
    if times is None:
        return FrameTiming(None, None, source, cardiac)
    interval = float(times[-1] - times[0]) / (n - 1)
    return FrameTiming(tuple(float(t) for t in times), interval, source, cardiac)


# ---------------------------------------------------------------------------- DICOM


def input_digest(
    header_xml: str, heads: np.ndarray | None = None, data: Sequence[np.ndarray] = ()
) -> str:
    """Content digest of a raw input: its header XML, acquisition headers and samples.

    The file name and location do not enter: a copy of a file gets the same UIDs.
    """
    digest = hashlib.sha256(header_xml.encode("utf-8"))
    if heads is not None:
        digest.update(heads.tobytes())
    for block in data:
        digest.update(block.tobytes())
    return digest.hexdigest()


def derived_uid(*parts: str) -> str:
    """``2.25.<decimal UUID>``, the UUID being name-based on ``parts`` (at most 44 chars)."""
    name = "/".join(parts)
    return f"{UID_ROOT}.{uuid.uuid5(UID_NAMESPACE, name).int}"


def is_valid_uid(value: str | None) -> bool:
    """DICOM UID syntax: dot-separated numbers without leading zeros, 64 characters at most."""
    if not value:
        return False
    return len(value) <= 64 and bool(_UID_PATTERN.match(value))


@dataclass(frozen=True)
class SeriesInfo:
    """What a DICOM series needs besides the images.

    Attributes
    ----------
    header_xml
        The raw file's ISMRMRD header (patient, study, measurement, sequence information).
    input_digest
        :func:`input_digest` of the raw input: the study, frame of reference and placeholder
        patient ID derive from it.
    recon_key
        Method, weights and chain settings: another value gives another series.
    method
        ``"passnet"``, ``"lplus_s"`` or ``"zero_filled"`` (series description and number).
    """

    header_xml: str
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


def _series_number(header: ismrmrdHeader | None, method: str) -> int:
    meas = getattr(header, "measurementInformation", None)
    base = getattr(meas, "initialSeriesNumber", None) or 1
    return 100 * int(base) + _METHOD_SERIES_OFFSET.get(method, 9)


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
    header = parse_header_xml(series.header_xml)
    common = study_tags(header, series.input_digest)
    series_uid = derived_uid(series.input_digest, "series", series.recon_key)
    label = METHOD_LABELS.get(series.method, series.method)
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
            read, phase = _vec(im.read_dir), _vec(im.phase_dir)
            ds.ImagePositionPatient = [_ds(v) for v in affine[:3, 3]]
            ds.ImageOrientationPatient = [_ds(v) for v in (*read, *phase)]
            ds.PixelSpacing = [_ds(dy), _ds(dx)]  # row spacing (along phase), column spacing
            ds.SliceThickness = _ds(float(im.field_of_view[2]))
            ds.SliceLocation = _ds(float(np.dot(_vec(im.position), np.cross(read, phase))))
            window = _window(im, factor)
            if window is not None:
                ds.WindowCenter, ds.WindowWidth = window
            ds.Rows, ds.Columns = pixels.shape
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
            ds.PixelData = pixels.tobytes()
            pydicom.dcmwrite(str(path), ds, enforce_file_format=True)
    return instance


# ---------------------------------------------------------------------------- NIfTI


@dataclass(frozen=True)
class NiftiSummary:
    """What :func:`write_nifti` wrote: array shape, voxel sizes (mm), frame interval (ms)."""

    shape: tuple[int, ...]
    voxel_mm: tuple[float, float, float]
    interval_ms: float | None
    timing_source: str


def write_nifti(
    images: Sequence[ismrmrd.Image], path: str | Path, header_xml: str | None = None
) -> NiftiSummary:
    """NIfTI-1 magnitudes ``(x, y, z, t)`` = (readout column, phase row, slice, frame).

    The affine maps voxels to RAS mm (:func:`stack_affine_lps` with x and y negated), written
    as both qform and sform with code 1 (scanner). ``pixdim[4]`` is the frame interval in
    seconds (``xyzt_units`` mm + s) when :func:`frame_timing` knows it; otherwise it is 0 with
    time unit "unknown", and ``descrip`` says so.

    Raises
    ------
    ValueError
        Slices with different frame counts or matrices.
    """
    import nibabel as nib
    import numpy as np

    stacks = slice_stacks(images)
    data = volume(stacks).transpose(3, 2, 0, 1)  # (S, T, H, W) -> (W, H, S, T)
    affine = np.array(LPS_TO_RAS) @ stack_affine_lps(stacks)
    timing = frame_timing(stacks[0].images, rr_interval_ms(parse_header_xml(header_xml)))
    image = nib.Nifti1Image(np.ascontiguousarray(data), affine)
    hdr = image.header
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    vx, vy, vz = (float(v) for v in np.linalg.norm(affine[:3, :3], axis=0))
    voxel = (vx, vy, vz)
    dt_s = timing.interval_ms / 1000 if timing.interval_ms else 0.0
    hdr.set_zooms((*voxel, dt_s))
    hdr.set_xyzt_units("mm", "sec" if dt_s else "unknown")
    if timing.times_ms is not None:
        hdr["toffset"] = timing.times_ms[0] / 1000
    what = (
        f"frame interval {timing.interval_ms:.1f} ms ({timing.source})"
        if timing.interval_ms
        else f"frame interval unknown ({timing.source})"
    )
    hdr["descrip"] = f"PASSNet magnitudes; {what}"[:79].encode()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, str(path))
    return NiftiSummary(tuple(data.shape), voxel, timing.interval_ms, timing.source)


# ---------------------------------------------------------------------------- PNG


def _grid(n: int) -> tuple[int, int]:
    """Columns and rows for ``n`` panels: few empty cells, about 1.4 times wider than tall."""
    best = min(
        range(1, n + 1),
        key=lambda c: (math.ceil(n / c) * c - n) + 2 * abs(math.log(c / math.ceil(n / c) / 1.4)),
    )
    return best, math.ceil(n / best)


def _nice_length(limit_mm: float) -> float:
    """The largest of 1, 2, 5 x 10^k mm not above ``limit_mm``."""
    if not limit_mm > 0:
        return 0.0
    exponent = 10 ** math.floor(math.log10(limit_mm))
    return max(m * exponent for m in (1, 2, 5) if m * exponent <= limit_mm)


def _scale_bar(ax: Axes, dx_mm: float, width_px: int) -> None:
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    length = _nice_length(0.3 * width_px * dx_mm)
    if length <= 0:
        return
    bar = AnchoredSizeBar(
        ax.transData, length / dx_mm, f"{length:g} mm", "lower right", pad=0.3, color="white",
        frameon=False, size_vertical=max(width_px / 100, 0.5), fontproperties={"size": 7},
    )  # fmt: skip
    ax.add_artist(bar)


def write_png(
    images: Sequence[ismrmrd.Image],
    path: str | Path,
    truth: np.ndarray | None = None,
    scores: Sequence[tuple[float, float]] | None = None,
    header_xml: str | None = None,
    title: str = "",
) -> Path:
    """An overview PNG: per slice, every frame in a grid, x-t and y-t profiles, scales.

    Parameters
    ----------
    images
        ``ismrmrd.Image`` objects of one reconstruction.
    path
        Output file (parent folders are created).
    truth
        Optional ``(S, T, H, W)`` magnitudes of the ground truth **in the images' units**
        (one per slice of ``images``, same order): adds the truth and ``|error|`` of the middle
        frame and the x-t profiles of the truth and of the error.
    scores
        Optional ``(PSNR dB, SSIM)`` per slice for the panel titles.
    header_xml
        ISMRMRD header (RR interval for frame times when the time stamps do not give them).
    title
        Figure title.

    Returns
    -------
    Path
        The written file.
    """
    import matplotlib

    matplotlib.use("Agg")  # headless
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.ticker import MaxNLocator

    stacks = slice_stacks(images)
    vols = [s.magnitudes() for s in stacks]
    n_s, n_t = len(stacks), max(v.shape[0] for v in vols)
    if truth is not None and (
        len(truth) != n_s or any(t.shape != v.shape for t, v in zip(truth, vols, strict=True))
    ):
        raise ValueError("truth does not match the images' (slices, frames, rows, columns)")
    cols, rows = _grid(n_t)
    side = 2 if truth is not None else 1
    rows_used = max(rows, 3 if truth is not None else 2)
    cell = 1.9 if n_s <= 3 else 1.4  # inches; 190 px at 100 dpi
    width = (cols + 1.3 * side) * cell + 1.2
    height = n_s * (rows_used * cell + 0.5) + (0.4 if title else 0.0)
    fig = plt.figure(figsize=(width, height), layout="constrained")
    if title:
        fig.suptitle(title, fontsize=10)
    subfigs = np.atleast_1d(fig.subfigures(n_s, 1, squeeze=False).ravel())
    vmax = float(np.percentile(np.concatenate([v.ravel() for v in vols]), 99.5)) or 1.0
    rr_ms = rr_interval_ms(parse_header_xml(header_xml))
    for s, (stack, vol, sub) in enumerate(zip(stacks, vols, subfigs, strict=True)):
        t_len, h, w = vol.shape
        dx, dy = pixel_spacing(stack.images[0])
        timing = frame_timing(stack.images, rr_ms)
        heading = f"slice {stack.slice_index}: {t_len} frames, {h} x {w}"
        if timing.interval_ms:
            heading += f", {timing.interval_ms:.1f} ms/frame"
        if scores is not None:
            heading += f"; PSNR {scores[s][0]:.2f} dB, SSIM {scores[s][1]:.3f} vs truth"
        sub.suptitle(heading, fontsize=9)
        left, right = sub.subfigures(1, 2, width_ratios=[cols, 1.3 * side])
        axes = left.subplots(rows_used, cols, squeeze=False)
        shown = None
        for k, ax in enumerate(axes.ravel()):
            ax.set_axis_off()
            if k >= t_len:
                continue
            shown = ax.imshow(vol[k], cmap="gray", vmin=0, vmax=vmax, interpolation="nearest")
            label = f"frame {k}"
            if timing.times_ms is not None:
                label += f"  {timing.times_ms[k]:.0f} ms"
            ax.set_title(label, fontsize=7)
        axes[0, 0].axhline(h // 2, color="yellow", lw=0.6, ls="--")  # where x-t is taken
        axes[0, 0].axvline(w // 2, color="cyan", lw=0.6, ls="--")  # where y-t is taken
        _scale_bar(axes[0, 0], dx, w)
        left.colorbar(shown, ax=axes, shrink=0.6, label="magnitude (image units)")
        x_mm = ((0 - w // 2 - 0.5) * dx, (w - 1 - w // 2 + 0.5) * dx)
        y_mm = ((0 - h // 2 - 0.5) * dy, (h - 1 - h // 2 + 0.5) * dy)
        t_axis = (t_len - 0.5, -0.5)

        def profile(
            ax: Axes,
            image: np.ndarray,
            name: str,
            extent: tuple[float, float, float, float],
            xlabel: str,
            cmap: str = "gray",
            top: float = vmax,
        ) -> AxesImage:
            im = ax.imshow(image, cmap=cmap, vmin=0, vmax=top, aspect="auto", extent=extent)
            ax.set_title(name, fontsize=7)
            ax.set_xlabel(xlabel, fontsize=7)
            ax.set_ylabel("frame", fontsize=7)
            ax.tick_params(labelsize=6)
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # frames are whole
            return im

        xt, yt = (*x_mm, *t_axis), (*y_mm, *t_axis)
        if truth is None:
            ax_xt, ax_yt = right.subplots(2, 1)
            profile(ax_xt, vol[:, h // 2, :], "x-t (yellow line)", xt, "x (mm)")
            profile(ax_yt, vol[:, :, w // 2], "y-t (cyan line)", yt, "y (mm)")
            continue
        ref = truth[s]
        err = np.abs(vol - ref)
        top_err = vmax / _ERROR_GAIN
        panels = right.subplots(3, 2, squeeze=False)
        mid = t_len // 2
        for ax, image, name, cmap, top in (
            (panels[0, 0], ref[mid], f"truth, frame {mid}", "gray", vmax),
            (panels[0, 1], err[mid], f"|error|, frame {mid}", "inferno", top_err),
        ):
            ax.imshow(image, cmap=cmap, vmin=0, vmax=top, interpolation="nearest")
            ax.set_title(name, fontsize=7)
            ax.set_axis_off()
        profile(panels[1, 0], vol[:, h // 2, :], "x-t recon", xt, "x (mm)")
        profile(panels[1, 1], ref[:, h // 2, :], "x-t truth", xt, "x (mm)")
        err_im = profile(
            panels[2, 0], err[:, h // 2, :], "x-t |error|", xt, "x (mm)", "inferno", top_err
        )
        panels[2, 1].set_axis_off()
        right.colorbar(
            err_im,
            ax=panels[2, 1],
            location="left",
            shrink=0.8,
            label=f"|error| (range 1/{_ERROR_GAIN:g} of images)",
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
