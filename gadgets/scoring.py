"""How a reconstruction is scored against the ground truth of a simulated file.

``passnet simulate`` stores the truth next to the raw data in the HDF5 group
:data:`TRUTH_GROUP`: ``images``, and the true ``coil_maps`` and ``noise_covariance`` that put it
in the chain's intensity convention (:func:`read_truth`). :func:`compare_with_truth` scores
reconstructed images against it by :data:`METRICS_CONVENTION`; ``passnet recon`` and the
benchmarks score with it, so their numbers agree.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from gadgets.exporters.stacks import slice_stacks
from gadgets.kspace_prep import prewhitening_matrix
from passnet_core import metrics
from passnet_core.cli import one_line

log = logging.getLogger(__name__)

# The group passnet simulate writes (training.simulate) and this module reads.
TRUTH_GROUP = "passnet_truth"
TRUTH_DATASET = f"{TRUTH_GROUP}/images"
METRICS_CONVENTION = (
    "magnitudes; the truth weighted by the prewhitened coil sensitivity |W S| as the chain's "
    "SENSE combination weights the object; "
    "the reconstruction scaled to the truth by one least-squares factor per slice "
    "(images are in display units), both divided by max |truth| of the slice (peak 1); SSIM "
    "with an 11x11 Gaussian window (sigma 1.5), averaged over frames; overall = mean over slices"
)


def read_truth(path: str | Path) -> np.ndarray | None:
    """``(S, T, H, W)`` ground truth from ``/passnet_truth``, in the chain's intensity convention.

    The stored images are ``x = sum_c conj(S_c) (S_c x)`` with true maps ``sum_c |S_c|^2 = 1``.
    The chain prewhitens the data (``W``, from the noise scans) and combines the coils with
    maps normalised after whitening, which weights the object by ``|W S(r)|``: a smooth gain
    that varies by a factor of 2-3 over the field of view with unequal, correlated coil noise.
    When the file stores the true maps and noise covariance, the truth is weighted the same
    way, so the score measures the reconstruction rather than that gain; otherwise it is
    returned as stored. ``None`` when the file has no truth.
    """
    try:
        with h5py.File(path, "r") as f:
            if TRUTH_DATASET not in f:
                return None
            truth = f[TRUTH_DATASET][()]
            group = f[TRUTH_GROUP]
            if "coil_maps" not in group or "noise_covariance" not in group:
                return truth
            maps = group["coil_maps"][()]  # (S, C, H, W)
            covariance = group["noise_covariance"][()].astype(np.complex128)
    except (OSError, KeyError, ValueError) as exc:
        log.warning("cannot read the ground truth in %s: %s", path, one_line(exc))
        return None
    try:
        whitened = np.einsum("ij,sjhw->sihw", prewhitening_matrix(covariance), maps)
    except ValueError as exc:
        log.warning("ground truth noise covariance unusable (%s): truth unweighted", exc)
        return truth
    gain = np.sqrt((np.abs(whitened) ** 2).sum(axis=1))  # (S, H, W)
    return (truth * gain[:, None]).astype(truth.dtype)


@dataclass
class TruthComparison:
    """PSNR/SSIM of each reconstructed slice against the ground truth.

    ``truth`` holds ``|truth|`` in the images' units (divided by each slice's fitted scale),
    ``(S, T, H, W)`` in the order of :func:`gadgets.exporters.stacks.slice_stacks`, for display.
    """

    slices: list[int]
    psnr: list[float]
    ssim: list[float]
    truth: np.ndarray

    @property
    def mean_psnr(self) -> float:
        return sum(self.psnr) / len(self.psnr)

    @property
    def mean_ssim(self) -> float:
        return sum(self.ssim) / len(self.ssim)


def fitted_scale(x: np.ndarray, y: np.ndarray) -> float:
    """The least-squares factor ``a = <x, y> / <x, x>`` that brings magnitudes ``x`` to ``y``.

    The chain's images are in display units; this is the one factor per slice that
    :data:`METRICS_CONVENTION` allows before scoring. ``0.0`` for an empty image.
    """
    energy = float((x * x).sum())
    return float((x * y).sum()) / energy if energy > 0 else 0.0


def compare_with_truth(images: list, truth: np.ndarray) -> TruthComparison | None:
    """Score the images against the ground truth and log one line per slice and overall.

    Convention (:data:`METRICS_CONVENTION`): magnitudes, since coil maps estimated from the
    data leave an arbitrary phase; the reconstruction is multiplied by the least-squares
    factor ``a = <|x|, |y|> / <|x|, |x|>`` because the chain prewhitens and scales its
    output for display, so its units are not the truth's; then
    :func:`passnet_core.metrics.psnr` (``magnitude=True``) and :func:`~passnet_core.metrics.
    ssim` divide both by ``max |truth|`` of the slice (peak 1).

    Returns
    -------
    TruthComparison or None
        ``None`` (logged) when the truth does not match the images' slices and shapes.
    """
    result = TruthComparison([], [], [], np.empty(0))
    truth_units = []
    for stack in slice_stacks(images):
        x = stack.magnitudes().astype(np.float64)
        index = stack.slice_index
        if not 0 <= index < len(truth) or truth[index].shape != x.shape:
            got = truth[index].shape if 0 <= index < len(truth) else "no such slice"
            log.warning(
                "ground truth does not match slice %d (%s vs images %s): no PSNR/SSIM",
                index, got, x.shape,
            )  # fmt: skip
            return None
        y = np.abs(truth[index]).astype(np.float64)
        scale = fitted_scale(x, y)
        if not scale > 0 or not y.max() > 0:
            log.warning("slice %d: empty image or truth; no PSNR/SSIM", index)
            return None
        psnr = float(metrics.psnr(scale * x, y, magnitude=True))
        try:
            ssim = float(metrics.ssim(scale * x, y))
        except ValueError:  # smaller than the SSIM window
            ssim = math.nan
        log.info("slice %d vs /passnet_truth: PSNR %.2f dB, SSIM %.4f", index, psnr, ssim)
        result.slices.append(index)
        result.psnr.append(psnr)
        result.ssim.append(ssim)
        truth_units.append((y / scale).astype(np.float32))
    result.truth = np.stack(truth_units)
    log.info(
        "overall (%d slice(s)) vs /passnet_truth: PSNR %.2f dB, SSIM %.4f (%s)",
        len(result.slices), result.mean_psnr, result.mean_ssim, METRICS_CONVENTION,
    )  # fmt: skip
    return result
