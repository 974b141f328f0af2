"""Saving and loading PASSNet weights as safetensors (never pickle).

A weights file is a safetensors file whose metadata key ``"passnet"`` holds a JSON object::

    {"format_version": 3, "config": {...PASSNetConfig...},
     "normalisation": "max_abs_zero_filled", "package_version": "0.1.0", "training": {...}}

Legacy ``.pt`` files are read only through ``torch.load(weights_only=True)`` (which refuses
arbitrary pickled objects) and must hold ``{"meta": <the same object>, "state_dict": {...}}``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from passnet_core import __version__
from passnet_core.model import PASSNet, PASSNetConfig

FORMAT_VERSION = 3
# Version 1 files predate the ``start`` / ``start_iterations`` / ``zero_init_residual`` config
# keys; their configs load with the defaults, which reproduce version 1 behaviour exactly.
# Versions 1 and 2 predate ``step_param``: their ``mu`` was always read through ``relu``.
READABLE_VERSIONS = (1, 2, 3)
_BEFORE_VERSION_3 = {"step_param": "relu"}
METADATA_KEY = "passnet"
NORMALISATION = "max_abs_zero_filled"


class WeightsError(ValueError):
    """A weights file is missing, unreadable, or does not describe a valid PASSNet."""


_SHIPPED = Path(__file__).resolve().parent / "weights"  # weight files inside the package


def default_weights_path() -> Path:
    """The weights shipped with the package: ``passnet_core/weights/default.safetensors``."""
    return _SHIPPED / "default.safetensors"


def ablation_weights_path() -> Path:
    """The uniform-SVT ablation trained like the default (``cpu_default.yaml`` with
    ``--set model.shrinkage=uniform_svt``).

    Shipped for ``passnet evaluate`` and ``passnet bench``; reconstruction never uses it.
    """
    return _SHIPPED / "ablation_uniform_svt.safetensors"


def paper_start_weights_path() -> Path:
    """The paper's ``A^H d`` start trained like the default (``model.start=adjoint``, step 1).

    Shipped for ``passnet evaluate``, which shows the default's LLR warm start beside the
    paper's variant; reconstruction never uses it.
    """
    return _SHIPPED / "paper_start.safetensors"


def save_weights(
    model: PASSNet, path: str | Path, extra_meta: dict[str, Any] | None = None
) -> Path:
    """Write ``model``'s parameters and configuration to a safetensors file.

    Parameters
    ----------
    model
        The network to save (its ``config`` is stored alongside the tensors).
    path
        Destination file; parent folders are created.
    extra_meta
        JSON-serialisable training information (dataset, epochs, losses...), stored under
        ``"training"``.

    Returns
    -------
    Path
        The written file.
    """
    meta = {
        "format_version": FORMAT_VERSION,
        "config": model.config.to_dict(),
        "normalisation": NORMALISATION,
        "package_version": __version__,
        "training": extra_meta or {},
    }
    try:
        meta_json = json.dumps(meta)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"extra_meta must be JSON-serialisable: {exc}") from exc
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={METADATA_KEY: meta_json})
    # safetensors writes owner-only (0600); weights are meant to be shared like any output file
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)
    return path


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The ``"passnet"`` metadata object of a safetensors weights file (tensors not loaded)."""
    path = _existing(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(METADATA_KEY)
    except Exception as exc:  # safetensors raises its own error types for any bad header
        raise WeightsError(f"{path} is not a readable safetensors file: {exc}") from exc
    return _parse_meta(raw, path)


def load_weights(path: str | Path, map_location: str | torch.device = "cpu") -> PASSNet:
    """Build a :class:`PASSNet` from a weights file and return it in eval mode.

    Parameters
    ----------
    path
        A ``.safetensors`` file written by :func:`save_weights`, or a ``.pt`` file holding
        ``{"meta": ..., "state_dict": ...}`` (loaded with ``weights_only=True``).
    map_location
        Device for the model.

    Raises
    ------
    WeightsError
        Missing file, not a safetensors / safe ``.pt`` file, unknown format version, bad
        configuration, or tensors that do not match the configured network.
    """
    path = _existing(path)
    if path.suffix in (".pt", ".pth"):
        meta, state = _read_torch_file(path)
    else:
        meta, state = _read_safetensors(path)
    model = PASSNet(stored_config(meta, path))
    _check_state(model, state, path)
    model.load_state_dict(state, strict=True)
    return model.to(map_location).eval()


def stored_config(meta: dict[str, Any], path: str | Path) -> PASSNetConfig:
    """The :class:`PASSNetConfig` a file's metadata describes, read as its format version says.

    Raises
    ------
    WeightsError
        The configuration is missing or invalid.
    """
    try:
        stored = meta["config"]
        if meta["format_version"] < 3 and isinstance(stored, dict):
            stored = {**_BEFORE_VERSION_3, **stored}
        return PASSNetConfig.from_dict(stored)
    except (KeyError, TypeError, ValueError) as exc:
        raise WeightsError(f"{path}: bad PASSNet configuration: {exc}") from exc


# --------------------------------------------------------------------------- internals


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    return path


def _parse_meta(raw: Any, path: Path) -> dict[str, Any]:
    if raw is None:
        raise WeightsError(f"{path} has no '{METADATA_KEY}' metadata: not a PASSNet weights file")
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise WeightsError(f"{path}: metadata is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise WeightsError(f"{path}: metadata must be a JSON object")
    version = raw.get("format_version")
    if version not in READABLE_VERSIONS:
        raise WeightsError(
            f"{path}: unknown weights format version {version!r} (this package reads "
            f"{', '.join(map(str, READABLE_VERSIONS))}); upgrade passnet_core or re-export "
            "the weights"
        )
    if raw.get("normalisation", NORMALISATION) != NORMALISATION:
        raise WeightsError(
            f"{path}: weights trained with normalisation {raw['normalisation']!r}, "
            f"this package uses {NORMALISATION!r}"
        )
    return raw


def _read_safetensors(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            raw = (f.metadata() or {}).get(METADATA_KEY)
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own error types for any bad file
        raise WeightsError(f"{path} is not a readable safetensors file: {exc}") from exc
    return _parse_meta(raw, path), state


def _read_torch_file(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    try:
        payload = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for code payloads, others for garbage
        raise WeightsError(
            f"{path}: refused to load (only plain tensors/containers are allowed): {exc}"
        ) from exc
    if not isinstance(payload, dict) or not isinstance(payload.get("state_dict"), dict):
        raise WeightsError(f"{path}: expected a dict with 'meta' and 'state_dict'")
    return _parse_meta(payload.get("meta"), path), payload["state_dict"]


def _check_state(model: PASSNet, state: dict[str, Any], path: Path) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise WeightsError(
            f"{path}: tensors do not match the configured network "
            f"(missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {extra[:5]}{'...' if len(extra) > 5 else ''})"
        )
    for name, ref in expected.items():
        got = state[name]
        if not isinstance(got, torch.Tensor) or got.shape != ref.shape:
            shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
            raise WeightsError(
                f"{path}: tensor {name} has shape {shape}, expected {tuple(ref.shape)}"
            )
        if not got.is_floating_point():
            raise WeightsError(
                f"{path}: tensor {name} has dtype {got.dtype}, expected floating point"
            )
        if not torch.isfinite(got).all():
            raise WeightsError(f"{path}: tensor {name} contains NaN or inf")
