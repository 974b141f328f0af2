"""`passnet gadgetron-header`: a copy whose header the real Gadgetron 4.7 can hand to the step."""

from __future__ import annotations

import shutil
import subprocess

import ismrmrd
import numpy as np
import pytest
from helpers import header_xml

from gadgets.gadgetron_header import gadgetron_ready_header, rewrite_file
from passnet_core.cli import main
from passnet_core.ismrmrd_io import parse_header


def test_version_goes_and_ids_in_gadgetrons_form_arrive():
    text = header_xml(16, 16).replace("<encoding>", "<encoding>", 1)
    text = text.replace('ISMRMRD">', 'ISMRMRD"><version>8</version>', 1)
    fixed, changes = gadgetron_ready_header(text)
    header = parse_header(fixed)  # still a valid ISMRMRD header (schema order kept)
    assert header.version is None
    device, subject, session, measurement = header.measurementInformation.measurementID.split("_")
    assert subject == header.subjectInformation.patientID and measurement
    assert len(changes) >= 3 and "dropped <version>8</version>" in changes
    assert gadgetron_ready_header(fixed) == (fixed, [])  # idempotent: nothing left to change
    assert gadgetron_ready_header(text)[0] == fixed  # the same file always gets the same IDs


def test_a_scanners_ids_are_kept(siemens_file, tmp_path):
    out = tmp_path / "fixed.h5"
    changes = rewrite_file(shutil.copyfile(siemens_file, tmp_path / "in.h5"), out)
    assert changes == []  # no version, a Siemens measurement ID: nothing to do
    dataset = ismrmrd.Dataset(str(out), "dataset", create_if_needed=False)
    try:
        header = parse_header(dataset.read_xml_header())
    finally:
        dataset.close()
    assert header.measurementInformation.measurementID == "45387_1079885_1079904_349"


def test_the_command_copies_acquisitions_unchanged(cine_file, tmp_path):
    out = tmp_path / "out.h5"
    assert main(["gadgetron-header", str(cine_file), "--out", str(out)]) == 0
    a = ismrmrd.Dataset(str(cine_file), "dataset", create_if_needed=False)
    b = ismrmrd.Dataset(str(out), "dataset", create_if_needed=False)
    try:
        assert a.number_of_acquisitions() == b.number_of_acquisitions()
        np.testing.assert_array_equal(a.read_acquisition(3).data, b.read_acquisition(3).data)
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("bad", ["not xml <", "<other/>"])
def test_a_header_that_is_not_ismrmrd_is_refused(bad):
    with pytest.raises(ValueError):
        gadgetron_ready_header(bad)


def test_the_command_refuses_to_overwrite_its_input(cine_file, tmp_path):
    source = shutil.copyfile(cine_file, tmp_path / "in.h5")
    run = subprocess.run(
        ["passnet", "gadgetron-header", str(source), "--out", str(source)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2 and "must differ" in run.stderr
