"""One assembled slice -> reconstructed frames: coil maps, network (or fallback), scaling.

:class:`ReconEngine` loads the network lazily on the first slice and remembers a load failure,
so a broken weights file is reported once, not once per slice; with ``fallback="zero_filled"``
every slice is then reconstructed by zero-filled SENSE (``A^H d``) and the image comment says so.
The other methods come from the registry, :mod:`passnet_core.methods`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from gadgets.chain_config import ChainParams
from gadgets.slices import SliceData
from passnet_core import bart, methods
from passnet_core.coilmaps import espirit_kernel, estimate_coil_maps
from passnet_core.inference import cached_model, reconstruct
from passnet_core.model import PASSNet
from passnet_core.operators import EncodingOp, encoding, normalise, zero_filled

log = logging.getLogger(__name__)

# Automatic output scaling: the slice's largest magnitude becomes this value (a 12-bit range,
# what scanner DICOM viewers expect); the images stay float32.
AUTO_SCALE_MAX = 4095.0
# Side of the central k-space block the coil maps are calibrated on (BART ecalib's default)
MAP_CALIBRATION_BLOCK = 24


class ReconEngine:
    """Holds the (lazily loaded) network and the device of one chain.

    Parameters
    ----------
    params
        The chain's settings (validated there): ``weights`` (``None``: the shipped weights),
        ``device``, ``fallback`` (``"zero_filled"``: zero-filled SENSE when the network cannot
        be loaded or fails; ``"none"``: the slice fails instead) and ``method``
        (any chain method of :mod:`passnet_core.methods`; only ``"passnet"`` loads the network).
    """

    def __init__(self, params: ChainParams | None = None) -> None:
        params = params or ChainParams()
        self.weights, self.device = params.weights, params.device
        self.fallback, self.method = params.fallback, params.method
        self.bart_lambda = params.bart_weight()
        self._model: PASSNet | None = None
        self.load_error: str | None = None

    def model(self) -> PASSNet:
        """The loaded network; raises ``RuntimeError`` (logged once) if it cannot be loaded."""
        if self._model is None and self.load_error is None:
            try:
                self._model = cached_model(self.weights, self.device)
            except Exception as exc:  # missing file, bad format, bad device: all reported alike
                self.load_error = (
                    f"cannot load PASSNet weights ({self.weights or 'default'}): {exc}"
                )
                log.error(self.load_error)
        if self._model is None:
            raise RuntimeError(self.load_error)
        return self._model

    def reconstruct(
        self, kspace: np.ndarray, mask: np.ndarray, coil_maps: np.ndarray | None
    ) -> tuple[np.ndarray, str]:
        """``(C, T, H, W)`` k-space -> ``((T, H, W)`` complex64 images, image comment)``."""
        method = methods.get(self.method)
        if coil_maps is None:  # one coil: the single-coil operator
            kspace = kspace[:1]
        if method.kind == "bart":
            pics = method.load()
            sens = (
                np.ones((1, *kspace.shape[-2:]), np.complex64) if coil_maps is None else coil_maps
            )
            regulariser = (method.bart_regulariser or "").format(f"{self.bart_lambda:g}")
            # The data scaled as the project's own methods scale them (max |A^H d|), so one
            # lambda means the same on every file; BART's own estimate does not (bart.pics).
            k_t, op = encoding(kspace[None], mask, sens[None])
            data_scale = float(normalise(op, k_t).scale[0])
            images = pics(kspace, mask, sens, regulariser, data_scale=data_scale or None)
            return images, f"BART pics LLR (lambda {self.bart_lambda:g})"
        k = torch.from_numpy(kspace)[None] if coil_maps is not None else torch.from_numpy(kspace)
        mask_t = torch.from_numpy(mask)
        maps = None if coil_maps is None else torch.from_numpy(coil_maps)[None]
        if method.kind == "operator":
            k, op = encoding(k, mask_t, maps)
            images = method.load()(op, k)[0].numpy().astype(np.complex64)
            if method.name == "zero_filled":
                return images, "zero-filled SENSE"
            return images, f"{method.label} (classical)"
        try:
            images = reconstruct(k, mask_t, maps, self.model(), self.device)
            return images[0].cpu().numpy(), "PASSNet"
        except ValueError:
            raise  # bad input: the fallback would not do better
        except Exception as exc:
            if self.fallback == "none":
                raise RuntimeError(f"network failed: {exc}") from exc
            if self.load_error is None:
                log.error("network failed (%s); using zero-filled SENSE", exc)
            op = EncodingOp(mask_t.to(torch.float32), maps)  # validated above
            return zero_filled(op, k)[0].numpy(), "PASSNet fallback: zero-filled"


def estimate_maps(
    slice_data: SliceData, method: str = "espirit", phase: str = "lowres"
) -> np.ndarray | None:
    """Coil maps ``(C, H, W)`` from the slice's calibration k-space; ``None`` for one coil.

    ``phase``: the maps' phase convention (:func:`passnet_core.coilmaps.estimate_coil_maps`).
    """
    if slice_data.kspace.shape[0] == 1:
        return None
    # The central 24 x 24 block, with the largest kernel its sampled windows determine: lines
    # missing from the time average (per-frame random lines at high R) only remove windows.
    calib = MAP_CALIBRATION_BLOCK
    kernel = espirit_kernel(slice_data.calibration, calib)
    if kernel is None:  # no usable windows there: the contiguous central run, a smaller kernel
        calib = max(min(MAP_CALIBRATION_BLOCK, slice_data.calib_lines), 3)
        kernel = max(min(6, (calib + 1) // 2), 2)
        calib = max(calib, kernel + 1)
    try:
        maps = estimate_coil_maps(
            slice_data.calibration, calib=calib, kernel=kernel, method=method, phase=phase
        )
    except ValueError as exc:
        if method == "walsh":
            raise
        log.warning("slice %d: ESPIRiT failed (%s); using Walsh maps", slice_data.slice_index, exc)
        maps = estimate_coil_maps(
            slice_data.calibration, calib=calib, kernel=kernel, method="walsh", phase=phase
        )
    return maps.numpy()


def bart_maps(slice_data: SliceData) -> np.ndarray | None:
    """``bart ecalib -m1`` maps ``(C, H, W)`` from the slice's calibration; ``None`` for one coil.

    Where ``ecalib`` finds no calibration region (too few central lines), the chain's own maps
    (:func:`estimate_maps`) stand in, with a warning.

    Raises
    ------
    RuntimeError
        ``bart`` is not installed (with how to get it) or failed.
    """
    if slice_data.kspace.shape[0] == 1:
        return None
    if not bart.available():  # before the fallback below could hide it
        raise RuntimeError(f"method bart_llr: {bart.NOT_INSTALLED}")
    try:
        # BART's default region (24), smaller where fewer central lines are fully sampled: the
        # time average of per-frame random lines covers most of k-space, but only sparsely
        # away from the centre, which is no calibration data (as in estimate_maps)
        return bart.ecalib(slice_data.calibration, min(24, slice_data.calib_lines))
    except RuntimeError as exc:
        log.warning("slice %d: %s; using the chain's own maps", slice_data.slice_index, exc)
        return estimate_maps(slice_data)


def centre_crop(images: np.ndarray, h: int, w: int) -> np.ndarray:
    """Central ``(h, w)`` of the last two axes (recon matrix smaller than encoded)."""
    hh, ww = images.shape[-2:]
    top, left = (hh - h) // 2, (ww - w) // 2
    return images[..., top : top + h, left : left + w]


@dataclass
class SliceResult:
    """Reconstructed frames of one slice.

    ``frames``: ``(T, H', W')`` float32 magnitudes or complex64 (reconSpace matrix, H' = phase,
    W' = readout); ``scale``: the factor applied; ``timing``: seconds per step.
    """

    frames: np.ndarray
    comment: str
    scale: float
    timing: dict = field(default_factory=dict)


def reconstruct_slice(
    slice_data: SliceData, params: ChainParams, engine: ReconEngine
) -> SliceResult:
    """Reconstruct every frame of one slice.

    Parameters
    ----------
    slice_data
        From :mod:`gadgets.slices`.
    params
        The chain's settings (uses ``output``: ``"magnitude"`` -> float32,
        ``"complex"`` -> complex64; ``scale``: multiplies the images, ``None`` = the slice's
        largest magnitude becomes 4095; ``coil_map_method``).
    engine
        Network holder.
    """
    output, scale = params.output, params.scale
    t0 = time.perf_counter()
    if params.method == "bart_llr" and params.bart_maps == "ecalib":  # as BART users do
        maps = bart_maps(slice_data)
    else:
        maps = estimate_maps(slice_data, params.coil_map_method)
    t1 = time.perf_counter()
    images, comment = engine.reconstruct(slice_data.kspace, slice_data.mask, maps)
    t2 = time.perf_counter()
    w, h = slice_data.recon_matrix
    images = centre_crop(images, min(h, images.shape[-2]), min(w, images.shape[-1]))
    peak = float(np.abs(images).max())
    if scale is None:
        scale = AUTO_SCALE_MAX / peak if peak > 0 else 1.0
    images = images * scale
    frames = (
        np.abs(images).astype(np.float32) if output == "magnitude" else images.astype(np.complex64)
    )
    t3 = time.perf_counter()
    timing = {
        "slice": slice_data.slice_index,
        "coil_maps_s": t1 - t0,
        "network_s": t2 - t1,
        "output_s": t3 - t2,
        "total_s": t3 - t0,
    }
    c, n_t, n_h, n_w = slice_data.kspace.shape
    log.info(
        "slice %d: %d coils, %d frames, %dx%d; coil maps %.2f s, network %.2f s, "
        "output %.3f s (%s)",
        slice_data.slice_index, c, n_t, n_h, n_w, t1 - t0, t2 - t1, t3 - t2, comment,
    )  # fmt: skip
    return SliceResult(np.ascontiguousarray(frames), comment, float(scale), timing)
