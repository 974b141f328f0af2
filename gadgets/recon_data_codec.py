"""The payload of a ReconData message (id 1023), both ways; the framing is ``gadgets.protocol``.

``ReconData`` is what Gadgetron's ``BucketToBufferGadget`` sends: bits of a data buffer and an
optional reference buffer, each a complex k-space array, optional trajectory and density
arrays, an array of acquisition headers and a sampling description. Arrays travel as
``uint64`` ndim, ``uint64`` shape and the elements in Fortran order.

Writing is ours: gadgetron 1.4.1's writer calls ``np.array(copy=False)``, which raises on
numpy 2 whenever a cast is needed. Reading is gadgetron's own ``read_recon_data``, which has no
such problem.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import numpy as np
from gadgetron.types.recon_data import ReconData, read_recon_data

_UINT64 = struct.Struct("<Q")
_BOOL = struct.Struct("<?")

Write = Callable[[bytes], Any]


def _write_array(write: Write, array: np.ndarray, dtype: type) -> None:
    # np.asarray casts as required on numpy 1 and 2 alike
    array = np.asarray(array, dtype=dtype)
    write(_UINT64.pack(array.ndim))
    write(struct.pack(f"<{array.ndim}Q", *array.shape))
    write(array.tobytes(order="F"))


def _write_optional_array(write: Write, array: np.ndarray | None, dtype: type) -> None:
    write(_BOOL.pack(array is not None))
    if array is not None:
        _write_array(write, array, dtype)


def _write_recon_buffer(write: Write, recon_buffer: Any) -> None:
    _write_array(write, recon_buffer.data, np.complex64)
    _write_optional_array(write, recon_buffer.trajectory, np.float32)
    _write_optional_array(write, recon_buffer.density, np.float32)
    headers = np.asarray(recon_buffer.headers, dtype=object)
    write(_UINT64.pack(headers.ndim))
    write(struct.pack(f"<{headers.ndim}Q", *headers.shape))
    for header in headers.ravel(order="F"):
        write(bytes(header))
    write(bytes(recon_buffer.sampling))


def serialize_into(recon_data: ReconData, write: Write) -> None:
    """Write the payload of ``recon_data`` (without the message id) through ``write``."""
    write(_UINT64.pack(len(recon_data.bits)))
    for bit in recon_data.bits:
        _write_recon_buffer(write, bit.data)
        write(_BOOL.pack(bit.ref is not None))
        if bit.ref is not None:
            _write_recon_buffer(write, bit.ref)


def deserialize_from(read: Callable[[int], bytes]) -> ReconData:
    """Read one payload; ``read(n)`` must return exactly ``n`` bytes or raise."""
    return read_recon_data(SimpleNamespace(read=read))
