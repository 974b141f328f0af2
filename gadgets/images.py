"""Reconstructed frames -> ``ismrmrd.Image`` objects with geometry and meta attributes.

Axis order: a frame is ``(H, W)`` = (phase encode, readout). ISMRMRD image data is stored
``(channels, z, y, x)`` with ``matrix_size = (x, y, z)`` and ``x`` along ``read_dir``, ``y``
along ``phase_dir``, so a frame maps directly to ``data[0, 0] = frame`` (``y`` = rows = phase,
``x`` = columns = readout) with ``matrix_size = (W, H, 1)``; no transpose is needed.
"""

from __future__ import annotations

import ismrmrd
import numpy as np

from gadgets.slices import SliceData

_COPIED_FIELDS = (
    "measurement_uid",
    "position",
    "read_dir",
    "phase_dir",
    "slice_dir",
    "patient_table_position",
    "acquisition_time_stamp",
    "physiology_time_stamp",
)


def window(frames: np.ndarray) -> tuple[float, float]:
    """Display window (centre, width) covering the 1st-99th percentile of the magnitudes."""
    mag = np.abs(frames)
    lo, hi = np.percentile(mag, [1.0, 99.0]) if mag.size else (0.0, 1.0)
    width = max(float(hi - lo), 1e-6)
    return float(lo + width / 2), width


def build_images(
    frames: np.ndarray,
    slice_data: SliceData,
    first_image_index: int,
    image_series_index: int = 1,
    comment: str = "PASSNet",
) -> list[ismrmrd.Image]:
    """One ``ismrmrd.Image`` per frame of a slice.

    Parameters
    ----------
    frames
        ``(T, H, W)`` float32 magnitudes or complex64 images of the slice.
    slice_data
        The slice they came from (geometry, reference headers, field of view).
    first_image_index
        ``image_index`` of the first frame; the following frames count up.
    image_series_index
        Series number written in every header.
    comment
        ``ImageComment`` meta attribute.
    """
    complex_out = np.iscomplexobj(frames)
    image_type = ismrmrd.IMTYPE_COMPLEX if complex_out else ismrmrd.IMTYPE_MAGNITUDE
    dtype = np.complex64 if complex_out else np.float32
    centre, width = window(frames)
    fallback_ref = next((r for r in slice_data.reference if r is not None), None)
    images = []
    for t, frame in enumerate(frames):
        image = ismrmrd.Image.from_array(np.ascontiguousarray(frame, dtype=dtype)[None])
        head = image.getHead()
        ref = slice_data.reference[t] if t < len(slice_data.reference) else None
        ref = ref if ref is not None else fallback_ref
        if ref is not None:
            for name in _COPIED_FIELDS:
                setattr(head, name, getattr(ref, name))
            for name in ("average", "contrast", "set", "repetition", "phase"):
                setattr(head, name, getattr(ref.idx, name))
        setattr(head, slice_data.frame_dimension, t)
        head.slice = slice_data.slice_index
        head.field_of_view[:] = slice_data.field_of_view
        head.image_type = image_type
        head.image_index = first_image_index + t
        head.image_series_index = image_series_index
        image.setHead(head)
        meta = ismrmrd.Meta()
        meta["DataRole"] = "Image"
        meta["ImageComment"] = comment
        meta["ImageProcessingHistory"] = "PASSNET"
        meta["SequenceDescriptionAdditional"] = "PASSNet"
        # Gadgetron's own DICOM writer reads the GADGETRON_ keys, ISMRMRD viewers the plain ones
        for key in ("WindowCenter", "GADGETRON_WindowCenter"):
            meta[key] = f"{centre:.4g}"
        for key in ("WindowWidth", "GADGETRON_WindowWidth"):
            meta[key] = f"{width:.4g}"
        meta["GADGETRON_ImageNumber"] = str(first_image_index + t)
        meta["GADGETRON_DataRole"] = "Image"
        image.meta = meta
        images.append(image)
    return images
