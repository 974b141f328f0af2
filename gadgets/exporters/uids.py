"""Deterministic DICOM UIDs derived from the content of a raw input.

Derived UIDs live under the root :data:`UID_ROOT` = ``2.25`` (ITU-T X.667 / ISO/IEC 9834-8: a
UID made of the decimal value of a UUID, usable without a registered organisation root). The
UUID is a name-based (SHA-1, version 5) UUID of the input's content digest (header and
acquisitions, :func:`input_digest`) in the namespace :data:`UID_NAMESPACE`, so UIDs are at most
44 characters, valid, and the same on every run over the same input.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

UID_ROOT = "2.25"
# Fixed once for this package: changing it changes every derived UID.
UID_NAMESPACE = uuid.UUID("b1f3a0e2-5c57-4d1e-9c1a-7e3a2f6d4c11")
_UID_PATTERN = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+$")


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
