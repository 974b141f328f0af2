"""Validated training configuration, loaded from YAML with the paper's defaults.

A configuration has four sections: ``model`` (a :class:`~passnet_core.model.PASSNetConfig`),
``data``, ``optim`` and ``run``. Every key is checked against the dataclasses below before any
heavy work starts: an unknown key or a value of the wrong type raises ``ValueError`` naming the
dotted key, e.g. ``optim.lr: expected float, got str``.
"""

from __future__ import annotations

import copy
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from passnet_core.masks import parse_mask_name
from passnet_core.model import PASSNetConfig
from training.simulate_cli import PHANTOMS

DATA_SOURCES = ("synthetic", "ocmr", "cmrxrecon")
ACQUISITIONS = ("ideal", "chain", "chain_files")
COIL_MODES = ("single", "multi")
CROP_MODES = ("multires", "fixed")
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class DataConfig:
    """Where training volumes come from and how they are cropped and undersampled.

    ``masks`` are ``"kind-accel"`` names (``radial-16`` = 16 radial lines per frame,
    ``vds-8`` / ``equispaced-4`` = acceleration); one is drawn per training step.
    ``n_train`` / ``n_val`` count source volumes (each gives several crops); synthetic volumes
    are rendered at ``synthetic_matrix`` (square) or a random 64-192 matrix when null, and
    validation uses one ``fixed_size`` crop from the middle of each volume. ``n_coils`` may be a
    list: each synthetic volume draws its coil count from it. ``noise_levels`` ``[low, high]``
    is the range of the k-space noise standard deviation relative to the volume's peak
    (``passnet simulate`` writes 0.02), drawn per training item. ``acquisition``: ``ideal``
    (true coil maps, white noise) or ``chain`` (correlated noise prewhitened with an estimated
    covariance and coil maps estimated from the undersampled data, as ``passnet recon`` feeds
    the network: :class:`training.data.ChainCropDataset`; needs ``coil_mode: multi``) or
    ``chain_files`` (whole simulated scanner files read by the chain's own code,
    :mod:`training.chain_files`: ``n_train`` / ``n_val`` files, each with a mask from
    ``masks`` (``vds_lines-R`` / ``equispaced-R``), frames from ``frame_counts``, a square
    matrix from ``matrices``, coils from ``n_coils``, a ``passnet simulate --noise`` level
    drawn from ``noise_levels`` and a generator from ``phantoms`` (``passnet simulate
    --phantom``: ``cardiac``, ``blobs``; ``ellipses`` is the held-out family); training
    items are ``frames``-frame windows; the samples and
    the network's start are cached in ``cache_dir`` (default ``<run.out_dir>/chain_cache``),
    made by ``cache_workers`` processes).
    """

    source: str = "synthetic"
    path: str | None = None
    coil_mode: str = "single"
    n_coils: int | list[int] = 8
    crop_mode: str = "multires"
    crop_sizes: list[int] = field(default_factory=lambda: [64, 96, 128, 144, 156])
    fixed_size: int = 128
    frames: int = 16
    synthetic_matrix: int | None = None
    masks: list[str] = field(default_factory=lambda: ["radial-16", "vds-8"])
    n_train: int = 800
    n_val: int = 16
    seed: int = 0
    noise_levels: list[float] = field(default_factory=lambda: [0.0, 0.0])
    acquisition: str = "ideal"
    frame_counts: list[int] = field(default_factory=lambda: [16, 20, 24])
    matrices: list[int] = field(default_factory=lambda: [96, 112, 128, 144])
    cache_dir: str | None = None
    cache_workers: int = 1
    phantoms: list[str] = field(default_factory=lambda: ["cardiac"])


LOSSES = ("mse", "rel_l2")
SCHEDULES = ("exponential", "cosine")


@dataclass
class OptimConfig:
    """Adam and its learning-rate schedule.

    ``schedule: exponential`` multiplies the rate by ``lr_decay`` after every epoch (paper
    section 4.1); ``cosine`` warms up linearly over ``warmup_steps`` optimiser steps and then
    follows a cosine to zero over the whole run, so it does not depend on how steps are cut
    into epochs. ``loss: mse`` is the paper's; ``rel_l2`` is ``||x - y|| / ||y||`` per item,
    whose gradients do not shrink with the image scale or the error (docs/method.md).
    """

    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    lr_decay: float = 0.95
    epochs: int = 50
    batch_size: int = 1
    grad_clip: float | None = 1.0
    loss: str = "mse"
    schedule: str = "exponential"
    warmup_steps: int = 0


@dataclass
class RunConfig:
    """Output, device and logging settings; ``init_weights``: start from this weights file
    (same architecture as ``model``) instead of a fresh initialisation; ``pretrain``: a
    training YAML run first (resuming in its own ``out_dir``, skipped where its best weights
    already exist), whose best weights this run starts from, so a two-stage recipe is one
    command from scratch."""

    out_dir: str = "runs/passnet"
    device: str = "auto"
    checkpoint_every: int = 1
    tensorboard: bool = True
    image_every: int = 200
    max_steps_per_epoch: int | None = None
    num_workers: int = 0
    init_weights: str | None = None
    pretrain: str | None = None


@dataclass
class TrainConfig:
    """The full training configuration (see module docstring)."""

    model: PASSNetConfig = field(default_factory=PASSNetConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict:
        """Plain nested dict (YAML/JSON serialisable); :func:`load_config` inverts it."""
        out = {name: asdict(getattr(self, name)) for name in ("data", "optim", "run")}
        out["model"] = self.model.to_dict()
        return out


_SECTIONS: dict[str, type] = {
    "model": PASSNetConfig,
    "data": DataConfig,
    "optim": OptimConfig,
    "run": RunConfig,
}


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    return tp.__name__


def _matches(value: Any, tp: Any) -> bool:
    """True when a YAML value fits the annotation ``tp`` (ints count as floats, bools don't)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in typing.get_args(tp))
    if origin is list:
        (item,) = typing.get_args(tp)
        return isinstance(value, list) and all(_matches(v, item) for v in value)
    if tp is type(None):
        return value is None
    if isinstance(value, bool):
        return tp is bool
    if tp is float:
        return isinstance(value, (int, float))
    return isinstance(value, tp)


def _coerce(value: Any, tp: Any) -> Any:
    """Turn YAML ints into floats where a float is expected (types already checked)."""
    if typing.get_origin(tp) is list:
        (item,) = typing.get_args(tp)
        return [_coerce(v, item) for v in value]
    allowed = typing.get_args(tp) or (tp,)
    if type(value) is int and float in allowed and int not in allowed:
        return float(value)
    return value


def _build_section(name: str, cls: type, values: Any) -> Any:
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ValueError(f"{name}: expected a mapping, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in known:
            raise ValueError(f"{name}.{key}: unknown key (known: {', '.join(sorted(known))})")
        tp = hints[key]
        if not _matches(value, tp):
            hint = ""
            if isinstance(value, str) and _matches(0.0, tp):
                hint = " (YAML reads 1e-3 as text: write 1.0e-3)"
            raise ValueError(
                f"{name}.{key}: expected {_type_name(tp)}, got {type(value).__name__}{hint}"
            )
        kwargs[key] = _coerce(value, tp)
    try:
        return cls(**kwargs)
    except ValueError as err:
        raise ValueError(f"{name}: {err}") from None


def _check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{key}: {value!r} is not one of {', '.join(choices)}")


def _validate(cfg: TrainConfig) -> None:
    d, o, r = cfg.data, cfg.optim, cfg.run
    _check_choice("data.source", d.source, DATA_SOURCES)
    _check_choice("data.coil_mode", d.coil_mode, COIL_MODES)
    _check_choice("data.acquisition", d.acquisition, ACQUISITIONS)
    if d.acquisition in ("chain", "chain_files") and d.coil_mode != "multi":
        raise ValueError(f"data.acquisition: {d.acquisition} needs data.coil_mode: multi")
    if d.acquisition == "chain_files":
        if d.source != "synthetic":
            raise ValueError("data.acquisition: chain_files simulates its own files (synthetic)")
        if o.batch_size != 1:
            raise ValueError("optim.batch_size: chain_files samples differ in size; use 1")
        if d.cache_workers < 1:
            raise ValueError(f"data.cache_workers: must be >= 1, got {d.cache_workers}")
        for key, values in (("data.frame_counts", d.frame_counts), ("data.matrices", d.matrices)):
            if not values or any(v < 8 for v in values):
                raise ValueError(f"{key}: need values >= 8, got {values}")
        if not d.phantoms:
            raise ValueError("data.phantoms: need at least one generator")
        for name in d.phantoms:
            _check_choice("data.phantoms", name, PHANTOMS)
    _check_choice("data.crop_mode", d.crop_mode, CROP_MODES)
    _check_choice("run.device", r.device, DEVICES)
    _check_choice("optim.loss", o.loss, LOSSES)
    _check_choice("optim.schedule", o.schedule, SCHEDULES)
    if o.warmup_steps < 0:
        raise ValueError(f"optim.warmup_steps: must be >= 0, got {o.warmup_steps}")
    coils = d.n_coils if isinstance(d.n_coils, list) else [d.n_coils]
    if not coils or any(c < 1 for c in coils):
        raise ValueError(f"data.n_coils: need positive coil counts, got {d.n_coils}")
    lo_hi = d.noise_levels
    if len(lo_hi) != 2 or not 0 <= lo_hi[0] <= lo_hi[1]:
        raise ValueError(f"data.noise_levels: need [low, high] with 0 <= low <= high, got {lo_hi}")
    if d.source != "synthetic" and not d.path:
        raise ValueError(f"data.path: required for data.source={d.source!r}")
    positive = {
        "data.fixed_size": d.fixed_size,
        "data.frames": d.frames,
        "data.n_train": d.n_train,
        "data.n_val": d.n_val,
        "optim.lr": o.lr,
        "optim.eps": o.eps,
        "optim.lr_decay": o.lr_decay,
        "optim.epochs": o.epochs,
        "optim.batch_size": o.batch_size,
        "run.checkpoint_every": r.checkpoint_every,
        "run.image_every": r.image_every,
    }
    for key, value in positive.items():
        if not value > 0:
            raise ValueError(f"{key}: must be > 0, got {value!r}")
    if d.synthetic_matrix is not None and d.synthetic_matrix < 8:
        raise ValueError(f"data.synthetic_matrix: must be >= 8 or null, got {d.synthetic_matrix}")
    if not d.crop_sizes or any(s < 8 for s in d.crop_sizes):
        raise ValueError(
            f"data.crop_sizes: need a non-empty list of sizes >= 8, got {d.crop_sizes}"
        )
    if not d.masks:
        raise ValueError("data.masks: need at least one mask name")
    for name in d.masks:
        try:
            parse_mask_name(name)
        except ValueError as err:
            raise ValueError(f"data.masks: {err}") from None
    if o.batch_size > 1 and d.crop_mode == "multires":
        raise ValueError("optim.batch_size: > 1 needs data.crop_mode=fixed (crops differ in size)")
    if len(o.betas) != 2 or not all(0 <= b < 1 for b in o.betas):
        raise ValueError(f"optim.betas: need two values in [0, 1), got {o.betas}")
    if o.lr_decay > 1:
        raise ValueError(f"optim.lr_decay: must be in (0, 1], got {o.lr_decay}")
    optional_positive = {
        "optim.grad_clip": o.grad_clip,
        "run.max_steps_per_epoch": r.max_steps_per_epoch,
    }
    for key, limit in optional_positive.items():
        if limit is not None and not limit > 0:
            raise ValueError(f"{key}: must be > 0 or null, got {limit!r}")
    if r.pretrain and r.init_weights:
        raise ValueError("run.pretrain and run.init_weights both name a start: keep one")
    if r.num_workers < 0:
        raise ValueError(f"run.num_workers: must be >= 0, got {r.num_workers}")


def apply_overrides(raw: dict, overrides: list[str] | None) -> dict:
    """Apply ``["optim.lr=0.0005", "run.out_dir=x"]`` to a nested dict (values parsed as YAML).

    Returns a new dict; the input is not modified.
    """
    out = copy.deepcopy(raw)
    for item in overrides or []:
        key, sep, text = item.partition("=")
        parts = key.strip().split(".")
        if not sep or len(parts) != 2 or not all(parts):
            raise ValueError(f"--set {item!r}: expected SECTION.KEY=VALUE (e.g. optim.lr=0.0005)")
        section, name = parts
        if section not in _SECTIONS:
            raise ValueError(f"--set {item!r}: unknown section {section!r}")
        value = yaml.safe_load(text) if text.strip() else None
        current = out.get(section)
        if current is None:
            out[section] = current = {}
        current[name] = value
    return out


def load_config(
    source: str | Path | dict | None = None, overrides: list[str] | None = None
) -> TrainConfig:
    """Build a validated :class:`TrainConfig`.

    Parameters
    ----------
    source
        Path of a YAML file, a nested dict with the same layout, or ``None`` for the defaults.
    overrides
        ``SECTION.KEY=VALUE`` strings applied on top (the CLI's ``--set``).

    Raises
    ------
    ValueError
        Missing file, unknown section or key, wrong type or out-of-range value; the message
        names the dotted key.
    """
    if source is None:
        raw: Any = {}
    elif isinstance(source, dict):
        raw = source
    else:
        path = Path(source)
        if not path.is_file():
            raise ValueError(f"config file {str(path)!r} does not exist")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ValueError(f"config file {str(path)!r} is not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"config must be a mapping of sections, got {type(raw).__name__}")
    raw = apply_overrides(raw, overrides)
    unknown = sorted(set(raw) - set(_SECTIONS))
    if unknown:
        raise ValueError(f"{unknown[0]}: unknown section (known: {', '.join(_SECTIONS)})")
    built = {name: _build_section(name, cls, raw.get(name)) for name, cls in _SECTIONS.items()}
    cfg = TrainConfig(**built)
    _validate(cfg)
    return cfg
