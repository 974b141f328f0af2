"""passnet_core.ismrmrd_io: bulk raw reading, image writing, clear errors for bad files."""

from __future__ import annotations

import h5py
import ismrmrd
import numpy as np
import pytest
from helpers import acquisitions, header_xml, known_cine

from passnet_core.ismrmrd_io import parse_header, read_images, read_raw, write_images, write_raw


def test_bulk_read_matches_ismrmrd_dataset(siemens_file):
    raw = read_raw(siemens_file)
    assert len(raw) == 69 and raw.header.encoding[0].encodedSpace.matrixSize.x == 384
    assert raw.data[0].shape == (14, 384) and raw.data[0].dtype == np.complex64
    with ismrmrd.Dataset(siemens_file, "dataset", mode="r") as dset:
        for i in (0, 1, 40, 68):
            ref = dset.read_acquisition(i)
            acq = raw.acquisition(i)
            np.testing.assert_array_equal(acq.data, ref.data)
            assert acq.getHead() == ref.getHead()
    assert raw.heads["idx"]["kspace_encode_step_1"][68] == ref.idx.kspace_encode_step_1


def test_write_raw_round_trip(tmp_path):
    _, _, kspace = known_cine(t=2)
    acqs = acquisitions(kspace, np.ones((2, 16), bool))
    path = tmp_path / "raw.h5"
    assert write_raw(path, header_xml(16, 16, frames=2), acqs) == 32
    raw = read_raw(path)
    assert len(raw) == 32 and raw.heads["idx"]["phase"][-1] == 1
    np.testing.assert_array_equal(raw.data[17], acqs[17].data)


def test_images_round_trip_in_series_groups(tmp_path):
    images = []
    for series in (1, 1, 2):
        im = ismrmrd.Image.from_array(np.arange(12, dtype=np.float32).reshape(1, 3, 4))
        im.image_series_index = series
        im.meta = {"DataRole": "Image"}
        images.append(im)
    path = tmp_path / "out.h5"
    counts = write_images(path, images, header_xml(4, 3))
    assert counts == {"image_1": 2, "image_2": 1}
    back = read_images(path)
    assert [len(v) for v in back.values()] == [2, 1]
    assert back["image_1"][0].matrix_size == (4, 3, 1)
    np.testing.assert_array_equal(back["image_2"][0].data, images[2].data)
    assert back["image_1"][1].meta["DataRole"] == "Image"


def test_bad_files_give_clear_errors(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ValueError, match="not an HDF5 file"):
        read_raw(text)
    with pytest.raises(ValueError, match="no such file"):
        read_raw(tmp_path / "missing.h5")
    no_xml = tmp_path / "no_xml.h5"
    with h5py.File(no_xml, "w") as f:
        f.create_group("dataset")
    with pytest.raises(ValueError, match="xml missing"):
        read_raw(no_xml)
    no_data = tmp_path / "no_data.h5"
    with h5py.File(no_data, "w") as f:
        f.create_dataset("dataset/xml", data=[header_xml(4, 4).encode()])
    with pytest.raises(ValueError, match="data missing"):
        read_raw(no_data)
    with pytest.raises(ValueError, match="not ISMRMRD XML"):
        parse_header("<html><body/></html>")
    with pytest.raises(ValueError, match="not valid ISMRMRD XML"):
        parse_header(
            '<ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD"><encoding/></ismrmrdHeader>'
        )
