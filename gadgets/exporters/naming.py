"""How the exporters name a reconstruction method: display labels and DICOM series numbers."""

from __future__ import annotations

METHOD_LABELS = {
    "passnet": "PASSNet",
    "lplus_s": "L+S",
    "llr": "LLR",
    "zero_filled": "zero-filled",
    "bart_llr": "BART LLR",
}
# DICOM SeriesNumber = 100 * the scanner's initialSeriesNumber (1 if absent) + this.
METHOD_SERIES_OFFSET = {"passnet": 1, "lplus_s": 2, "zero_filled": 3, "llr": 4, "bart_llr": 5}


def method_label(method: str) -> str:
    """The display name of a chain method (``"lplus_s"`` -> ``"L+S"``); unknown ones as given."""
    return METHOD_LABELS.get(method, method)


def series_offset(method: str) -> int:
    """The method's place in :data:`METHOD_SERIES_OFFSET`; 9 for a method not listed there."""
    return METHOD_SERIES_OFFSET.get(method, 9)
