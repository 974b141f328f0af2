"""Measurement dependencies: the noise store and the dependency query of Gadgetron's client.

A scanner measurement may declare that it depends on an earlier noise measurement
(``measurementInformation/measurementDependency`` with type ``Noise``). Before replaying such a
file, ``gadgetron_ismrmrd_client`` opens a separate connection and asks the server what it knows
about that noise measurement: it sends a legacy chain holding a ``NoiseSummaryGadget`` whose
``noise_file`` property names ``GadgetronNoiseCovarianceMatrix_<measurementID>``, then close,
with no header. Gadgetron answers with one dependency-query message (id 1019: a ``uint64``
length, then an ISMRMRD meta XML document) and close. The meta holds ``status`` (``success`` or
``failed``) and, on success, ``channels``, ``min_sigma``, ``max_sigma``, ``mean_sigma`` and
``noise_dwell_time_us``. The client uses the sigmas only for its optional lossy compression
and goes on with the reconstruction either way.

:class:`NoiseStore` keeps the noise covariance of each measurement a server has seen (bounded,
in memory), so a query can succeed and a dependent measurement is prewhitened with it when it
brings no noise scans of its own, as Gadgetron's noise adjustment does.
"""

from __future__ import annotations

import logging
import threading
import xml.etree.ElementTree as ET
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from gadgets.chain_config import NOISE_SUMMARY_GADGET, child_text, local_name, properties

if TYPE_CHECKING:
    from ismrmrd.xsd import ismrmrdHeader

log = logging.getLogger(__name__)

# Gadgetron's client asks for the noise of measurement X under this name.
NOISE_FILE_PREFIX = "GadgetronNoiseCovarianceMatrix_"
DEFAULT_MAX_MEASUREMENTS = 64
# Memory the store may hold in all: a client's noise scans must not make the server keep
# gigabytes after the session (a 128-channel covariance is 256 KiB).
DEFAULT_MAX_BYTES = 64 * 1024 * 1024


def noise_query_target(chain: ET.Element) -> str | None:
    """The measurement a dependency-query chain asks about; ``None`` for any other chain.

    Both chain formats are recognised (legacy ``<gadgetronStreamConfiguration>`` with
    Gadgetron's XML namespace, as the client sends it, and version 2 ``<configuration>``).
    """
    for node in chain.iter():
        if local_name(node.tag) != "gadget":
            continue
        if child_text(node, "classname") == NOISE_SUMMARY_GADGET:
            target = properties(node).get("noise_file", "")
            return (
                target[len(NOISE_FILE_PREFIX) :] if target.startswith(NOISE_FILE_PREFIX) else target
            )
    return None


@dataclass(frozen=True)
class NoiseRecord:
    """The noise of one measurement: ``(C, C)`` covariance and the noise dwell time."""

    covariance: np.ndarray
    dwell_time_us: float = 0.0

    def summary(self) -> dict[str, float | int | str]:
        """The fields of a successful dependency-query answer (sigmas per channel)."""
        sigma = np.sqrt(np.maximum(np.real(np.diag(self.covariance)), 0.0))
        return {
            "noise_dwell_time_us": float(self.dwell_time_us),
            "min_sigma": float(sigma.min()),
            "max_sigma": float(sigma.max()),
            "mean_sigma": float(sigma.mean()),
            "channels": int(sigma.size),
            "status": "success",
        }


class NoiseStore:
    """Thread-safe map ``measurementID -> NoiseRecord``, bounded in count and bytes.

    The oldest records are dropped first; a record larger than ``max_bytes`` on its own is
    not kept.
    """

    def __init__(
        self, max_measurements: int = DEFAULT_MAX_MEASUREMENTS, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> None:
        if max_measurements < 1 or max_bytes < 1:
            raise ValueError(
                f"max_measurements and max_bytes must be at least 1, got {max_measurements}, "
                f"{max_bytes}"
            )
        self.max_measurements, self.max_bytes = max_measurements, max_bytes
        self._records: OrderedDict[str, NoiseRecord] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, measurement_id: str, record: NoiseRecord) -> None:
        """Remember ``record`` for ``measurement_id`` (an empty id is not stored)."""
        if not measurement_id:
            return
        if record.covariance.nbytes > self.max_bytes:
            log.warning(
                "noise of measurement %r not stored: %d bytes exceed the store's %d",
                measurement_id, record.covariance.nbytes, self.max_bytes,
            )  # fmt: skip
            return
        with self._lock:
            self._records[measurement_id] = record
            self._records.move_to_end(measurement_id)
            while len(self._records) > self.max_measurements or self._bytes() > self.max_bytes:
                self._records.popitem(last=False)

    def _bytes(self) -> int:
        return sum(r.covariance.nbytes for r in self._records.values())

    def get(self, measurement_id: str) -> NoiseRecord | None:
        """The record of ``measurement_id``, or ``None``."""
        with self._lock:
            return self._records.get(measurement_id)

    def __len__(self) -> int:
        with self._lock:
            return len(self._records)


def query_answer(record: NoiseRecord | None) -> str:
    """ISMRMRD meta XML answering a noise dependency query (``status`` failed without data)."""
    import ismrmrd

    meta = ismrmrd.Meta()
    fields = record.summary() if record is not None else {"status": "failed"}
    for name, value in fields.items():
        meta[name] = value if isinstance(value, str) else repr(value)
    return meta.serialize()


def noise_dependency(header: ismrmrdHeader) -> str | None:
    """The ``measurementID`` of the noise measurement an ISMRMRD header depends on, if any."""
    info = getattr(header, "measurementInformation", None)
    for dependency in getattr(info, "measurementDependency", None) or []:
        if (dependency.dependencyType or "").strip().lower() == "noise":
            return (dependency.measurementID or "").strip() or None
    return None


def measurement_id(header: ismrmrdHeader) -> str | None:
    """The header's own ``measurementID``, if any."""
    info = getattr(header, "measurementInformation", None)
    return ((getattr(info, "measurementID", None) or "").strip()) or None
