"""``passnet gadgetron-header``: a copy of an ISMRMRD file whose header Gadgetron 4.7 can use.

Two header properties stop a file inside the real Gadgetron server, outside this package:

- ``<version>``: ISMRMRD ties the header schema version to its own minor release and refuses
  to serialise any other. Gadgetron 4.7 (ISMRMRD 1.14) re-serialises the header for every
  external step, so a file written by another ISMRMRD release (``<version>8</version>`` from
  ISMRMRD 1.8's ``ismrmrd_generate_cartesian_shepp_logan``) never reaches the Python step:
  "XML header version does not match library schema version". A header without the element
  is accepted by every release (siemens_to_ismrmrd writes none).
- identity: ``NoiseAdjustGadget`` stores the noise covariance in the MRD storage server under
  the subject (``patientID``) and measurement (``measurementID``, whose Siemens form
  ``DEVICE_SUBJECT_SESSION_MEASUREMENT`` Gadgetron also parses); a file with noise scans and
  neither fails there ("Unknown error.").

The command drops ``<version>`` and, unless the measurement ID already has the Siemens form,
adds a ``patientID`` and a Siemens-form ``measurementID`` where they are missing (derived from
the header's content, so the same file always gets the same IDs); everything else,
acquisitions included, is copied unchanged. ``passnet recon`` and ``passnet serve`` do not
need it: they read any version. Its options: :mod:`gadgets.gadgetron_header_cli`.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import ismrmrd

log = logging.getLogger(__name__)

NAMESPACE = "http://www.ismrm.org/ISMRMRD"
# Schema order of the elements this module adds (ismrmrd.xsd), so the header stays valid.
HEADER_ORDER = (
    "version",
    "subjectInformation",
    "studyInformation",
    "measurementInformation",
    "acquisitionSystemInformation",
)
SUBJECT_ORDER = ("patientName", "patientWeight_kg", "patientHeight_m", "patientID")
UNKNOWN_DEVICE = "UNKNOWNDEVICE"
NO_SESSION = "NOSESSION"
# DEVICE_SUBJECT_SESSION_MEASUREMENT, as Gadgetron's IsmrmrdContextVariables parses it
SIEMENS_FORM = re.compile(r"^[^_]+_[^_]+_[^_]+_[^_]+$")


def _child(parent: ET.Element, name: str) -> ET.Element | None:
    return parent.find(f"{{{NAMESPACE}}}{name}")


def _insert_in_order(parent: ET.Element, name: str, order: tuple[str, ...]) -> ET.Element:
    """A new child ``name`` placed after its schema predecessors among ``parent``'s children."""
    rank = order.index(name)
    before = {f"{{{NAMESPACE}}}{n}" for n in order[:rank]}
    position = 0
    for i, node in enumerate(parent):
        if node.tag in before:
            position = i + 1
    element = ET.Element(f"{{{NAMESPACE}}}{name}")
    parent.insert(position, element)
    return element


def _id_part(text: str | None, default: str) -> str:
    """One part of a Siemens-form ID: no underscores (Gadgetron splits on them)."""
    cleaned = re.sub(r"[^A-Za-z0-9.\-]", "", text or "")
    return cleaned or default


def gadgetron_ready_header(header_xml: str) -> tuple[str, list[str]]:
    """The header with ``<version>`` dropped and a subject and measurement ID where missing.

    Parameters
    ----------
    header_xml
        An ISMRMRD XML header.

    Returns
    -------
    tuple of (str, list of str)
        The new header and one line per change (empty when nothing had to change).

    Raises
    ------
    ValueError
        The text is not an ISMRMRD header.
    """
    ET.register_namespace("", NAMESPACE)
    try:
        root = ET.fromstring(header_xml)
    except ET.ParseError as exc:
        raise ValueError(f"header is not XML: {exc}") from exc
    if root.tag != f"{{{NAMESPACE}}}ismrmrdHeader":
        raise ValueError(f"header root is {root.tag!r}, not an ISMRMRD ismrmrdHeader")
    digest = hashlib.sha1(header_xml.encode("utf-8")).hexdigest()[:10]
    changes = []
    version = _child(root, "version")
    if version is not None:
        root.remove(version)
        changes.append(f"dropped <version>{(version.text or '').strip()}</version>")

    measurement_info = _child(root, "measurementInformation")
    measurement = None if measurement_info is None else _child(measurement_info, "measurementID")
    measurement_id = (measurement.text or "").strip() if measurement is not None else ""
    # Gadgetron takes device, subject and session from a Siemens-form ID when the header
    # lacks them: such a file already has what storage needs, and a patientID added now
    # would move its noise away from where dependent measurements look for it.
    if SIEMENS_FORM.match(measurement_id):
        return ET.tostring(root, encoding="unicode"), changes

    subject_info = _child(root, "subjectInformation")
    if subject_info is None:
        subject_info = _insert_in_order(root, "subjectInformation", HEADER_ORDER)
    patient = _child(subject_info, "patientID")
    if patient is None or not (patient.text or "").strip():
        if patient is None:
            patient = _insert_in_order(subject_info, "patientID", SUBJECT_ORDER)
        patient.text = f"P{digest}"
        changes.append(f"added patientID {patient.text}")
    if measurement_id:
        return ET.tostring(root, encoding="unicode"), changes

    if measurement_info is None:
        measurement_info = _insert_in_order(root, "measurementInformation", HEADER_ORDER)
        # the schema requires a patient position here; head first supine is the common one
        position = ET.SubElement(measurement_info, f"{{{NAMESPACE}}}patientPosition")
        position.text = "HFS"
        changes.append("added measurementInformation (patientPosition HFS)")
    if measurement is None:
        measurement = ET.Element(f"{{{NAMESPACE}}}measurementID")
        measurement_info.insert(0, measurement)  # first in measurementInformationType
    system = _child(root, "acquisitionSystemInformation")
    device = _child(system, "deviceID") if system is not None else None
    study = _child(root, "studyInformation")
    session = _child(study, "studyID") if study is not None else None
    measurement.text = "_".join(
        (
            _id_part(device.text if device is not None else None, UNKNOWN_DEVICE),
            _id_part(patient.text, "P"),
            _id_part(session.text if session is not None else None, NO_SESSION),
            digest,
        )
    )
    changes.append(f"added measurementID {measurement.text}")
    return ET.tostring(root, encoding="unicode"), changes


def rewrite_file(source: Path, out: Path, group: str = "dataset") -> list[str]:
    """Copy ``source`` to ``out`` with :func:`gadgetron_ready_header` applied to ``group``'s header.

    Returns
    -------
    list of str
        The changes made.
    """
    if source.resolve() == out.resolve():
        raise ValueError("--out must differ from the input (the input is never modified)")
    shutil.copyfile(source, out)
    dataset = ismrmrd.Dataset(str(out), group, create_if_needed=False)
    try:
        raw = dataset.read_xml_header()
        text = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
        header, changes = gadgetron_ready_header(text)
        dataset.write_xml_header(header)
    finally:
        dataset.close()
    return changes


def run(args: argparse.Namespace) -> int:
    """Write the copy and report each change; exit code 2 on a bad input."""
    try:
        changes = rewrite_file(args.input, args.out, args.group)
    except (OSError, ValueError, KeyError) as exc:
        log.error("%s: %s", args.input, exc)
        return 2
    for change in changes:
        log.info("%s: %s", args.input, change)
    log.info("wrote %s (%s)", args.out, "header changed" if changes else "header already fine")
    return 0
