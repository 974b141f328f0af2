"""``passnet train``: train PASSNet from a YAML configuration, on CPU, GPU or with torchrun.

One epoch: draw training volumes (fresh random masks every step), minimise the MSE between the
complex output and the target (real and imaginary parts), then validate on fixed masks, write
a checkpoint (``OUT/checkpoint.pt``: model, optimizer, scheduler, epoch, RNG state, config) and
export the best-by-validation-PSNR network with :func:`passnet_core.weights.save_weights`
(``OUT/best.safetensors``). ``--resume`` continues after the last checkpointed epoch, so an
interrupted run loses at most one epoch.

Distributed: when ``WORLD_SIZE > 1`` (set by ``torchrun``) the process group is initialised from
the environment (gloo on CPU, nccl on CUDA), the model is wrapped in DistributedDataParallel,
training volumes are split with a ``DistributedSampler``, and only rank 0 validates and writes.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import math
import os
import random
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset
from tqdm import tqdm

from passnet_core import metrics
from passnet_core.inference import resolve_device
from passnet_core.model import INPUT_SETTINGS, PASSNet
from passnet_core.operators import EncodingOp, zero_filled
from passnet_core.weights import load_weights, save_weights
from training import chain_files, loaders
from training.acquisition import Sample
from training.config import TrainConfig, load_config
from training.data import ChainCropDataset, CineCropDataset, SyntheticCines, collate_cine

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"
BEST_WEIGHTS_NAME = "best.safetensors"


@dataclass
class TrainResult:
    """What :func:`train` returns (on every rank; only rank 0 has validation numbers)."""

    best_val_psnr: float
    best_val_ssim: float
    best_epoch: int
    zero_filled_val_psnr: float
    epochs_run: int
    out_dir: Path
    weights_path: Path | None
    checkpoint_path: Path
    history: list[dict[str, float]] = field(default_factory=list)
    model: PASSNet | None = None


@dataclass(frozen=True)
class _Dist:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


# --------------------------------------------------------------------------- setup


def _setup_distributed(device_pref: str) -> _Dist:
    """Join the process group described by torchrun's environment variables, if any."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return _Dist(0, 1, resolve_device(device_pref))
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    device = resolve_device(device_pref)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return _Dist(rank, world_size, device)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - legacy global state used by third-party code
    torch.manual_seed(seed)


def _epoch_seed(base: int, epoch: int, rank: int) -> int:
    """Each (epoch, rank) gets its own stream, so a resumed epoch replays exactly."""
    return (base * 1_000_003 + epoch * 1009 + rank) % 2**63


def _rng_state() -> dict[str, Any]:
    """RNG states as tensors and plain Python values (loadable with ``weights_only=True``)."""
    np_state = np.random.get_state(legacy=False)  # noqa: NPY002
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "cached_gaussian": float(np_state["gauss"]),
        },
        "python": list(random.getstate()[1]),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))  # noqa: NPY002
    random.setstate((3, tuple(state["python"]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _worker_init(worker_id: int) -> None:
    # DataLoader seeds torch per worker; numpy/random follow from it so workers differ.
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)  # noqa: NPY002
    random.seed(seed)


def _sources(cfg: TrainConfig) -> tuple[Sequence[Any], Sequence[Any]]:
    """Training and validation volumes (:class:`training.acquisition.Cine` sequences)."""
    d = cfg.data
    if d.source == "synthetic":

        def make(n: int, seed: int) -> SyntheticCines:
            return SyntheticCines(
                n, seed=seed, coil_mode=d.coil_mode, n_coils=d.n_coils, matrix=d.synthetic_matrix
            )

        # validation volumes come from a disjoint seed stream
        return make(d.n_train, d.seed), make(d.n_val, d.seed + 1_000_000)
    assert d.path is not None  # training.config requires data.path for file sources
    volumes = loaders.scan_folder(d.path, kind=d.source).samples
    if len(volumes) < 2:
        raise ValueError(f"data.path: need at least 2 volumes for train/val, found {len(volumes)}")
    n_val = min(d.n_val, len(volumes) // 2)
    return volumes[n_val:][: d.n_train], volumes[:n_val]


def _chain_file_datasets(cfg: TrainConfig) -> tuple[Dataset, Dataset]:
    """Cached whole-file samples (``data.acquisition: chain_files``): training and validation."""
    d = cfg.data
    space = chain_files.FileSpace(
        tuple(d.masks), tuple(d.frame_counts), tuple(d.matrices),
        tuple(d.n_coils if isinstance(d.n_coils, list) else [d.n_coils]),
        (float(d.noise_levels[0]), float(d.noise_levels[1])), tuple(d.phantoms),
    )  # fmt: skip
    train_draws = [space.draw(d.seed + i) for i in range(d.n_train)]
    val_seed = d.seed + chain_files.VALIDATION_SEED_OFFSET
    val_draws = [space.draw(val_seed + i) for i in range(d.n_val)]
    cache = Path(d.cache_dir) if d.cache_dir else Path(cfg.run.out_dir) / "chain_cache"
    paths = chain_files.build_cache(val_draws + train_draws, cfg.model, cache, d.cache_workers)
    val_paths, train_paths = paths[: d.n_val], paths[d.n_val :]
    return (
        chain_files.ChainFileDataset(train_paths, d.frames, train=True),
        chain_files.ChainFileDataset(val_paths, None, train=False),
    )


def make_datasets(cfg: TrainConfig) -> tuple[Dataset, Dataset]:
    """Training crops (fresh masks each step) and one fixed-mask validation crop per volume."""
    d = cfg.data
    if d.acquisition == "chain_files":
        return _chain_file_datasets(cfg)
    train_source, val_source = _sources(cfg)
    crops = functools.partial(  # what training and validation crops share
        ChainCropDataset if d.acquisition == "chain" else CineCropDataset,
        frames=d.frames,
        masks=d.masks,
        use_coil_maps=d.coil_mode == "multi",
        noise_levels=tuple(d.noise_levels),
    )
    train_set = crops(
        train_source,
        crop_mode=d.crop_mode,
        crop_sizes=d.crop_sizes,
        fixed_size=d.fixed_size,
        train=True,
    )
    val_windows = crops(val_source, crop_mode="fixed", fixed_size=d.fixed_size, train=False)
    per_volume: dict[int, list[int]] = {}
    for k, (i, _window) in enumerate(val_windows.index):
        per_volume.setdefault(i, []).append(k)
    middle = [ks[len(ks) // 2] for ks in per_volume.values()]
    return train_set, Subset(val_windows, middle)


# --------------------------------------------------------------------------- steps


def _forward(model: torch.nn.Module, batch: Sample) -> torch.Tensor:
    return model(batch.kspace, batch.mask, batch.coil_maps, batch.start)


def _loss(recon: torch.Tensor, target: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    """``mse`` over real and imaginary parts, or ``rel_l2``: mean of ``||x - y|| / ||y||``.

    On images normalised to ``max |A^H d| = 1`` the MSE is ~1e-3 and the per-parameter
    gradients of the small PASS/AST/LSAF blocks fall to Adam's ``eps``, which damps their
    updates; the relative L2 norm is scale-free and its gradient does not vanish as the error
    shrinks.
    """
    if kind == "mse":
        return F.mse_loss(torch.view_as_real(recon), torch.view_as_real(target))
    err = torch.linalg.vector_norm((recon - target).flatten(1), dim=1)
    ref = torch.linalg.vector_norm(target.flatten(1), dim=1).clamp_min(1e-12)
    return (err / ref).mean()


class WarmupCosine:
    """Learning-rate factor: linear warm-up over ``warmup`` steps, then a cosine to zero."""

    def __init__(self, warmup: int, total: int) -> None:
        self.warmup, self.total = warmup, max(total, 1)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        progress = min((step - self.warmup) / max(self.total - self.warmup, 1), 1.0)
        return 0.5 * (1.0 + math.cos(math.pi * progress))


def zero_filled_image(batch: Sample) -> torch.Tensor:
    """``A^H d`` of a batch (the network's input image)."""
    return zero_filled(EncodingOp(batch.mask, batch.coil_maps), batch.kspace)


def _image_panel(zf: torch.Tensor, recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Middle frame of the first volume: ``|zero-filled| | |recon| | |target| | 5 x |error|``."""
    t = target.shape[1] // 2
    peak = target[0, t].abs().max().clamp_min(1e-12)
    tiles = [zf[0, t], recon[0, t], target[0, t]]
    tiles = [x.abs() / peak for x in tiles] + [5 * (recon[0, t] - target[0, t]).abs() / peak]
    return torch.cat(tiles, dim=1).clamp(0, 1).unsqueeze(0).float().cpu()


@torch.no_grad()
def validate(
    model: torch.nn.Module, loader: DataLoader, device: torch.device, magnitude: bool
) -> dict[str, float]:
    """Mean PSNR / SSIM of the network and of the zero-filled input over ``loader``.

    PSNR compares complex images (``magnitude=False``, single-coil convention) or magnitudes
    (multi-coil convention), see :mod:`passnet_core.metrics`.
    """
    was_training = model.training
    model.eval()
    scores: dict[str, list[float]] = {"psnr": [], "ssim": [], "zf_psnr": [], "zf_ssim": []}
    for batch in loader:
        batch = batch.to(device)
        recon, zf = _forward(model, batch).cpu(), zero_filled_image(batch).cpu()
        target = batch.target.cpu()
        scores["psnr"] += metrics.psnr(recon, target, magnitude=magnitude).flatten().tolist()
        scores["ssim"] += metrics.ssim(recon, target).flatten().tolist()
        scores["zf_psnr"] += metrics.psnr(zf, target, magnitude=magnitude).flatten().tolist()
        scores["zf_ssim"] += metrics.ssim(zf, target).flatten().tolist()
    model.train(was_training)
    return {k: float(np.mean(v)) for k, v in scores.items()}


# --------------------------------------------------------------------------- checkpoints


def _save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)  # atomic: a crash mid-write never corrupts the last checkpoint


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a training checkpoint with ``torch.load(weights_only=True)`` (no pickled code)."""
    return torch.load(Path(path), map_location="cpu", weights_only=True)


@contextmanager
def _tensorboard(out_dir: Path, enabled: bool) -> Iterator[Any]:
    writer = None
    if enabled:
        try:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(out_dir / "tensorboard"))
        except ImportError:
            log.warning("tensorboard is not installed; scalars and images are not logged")
    try:
        yield writer
    finally:
        if writer is not None:
            writer.close()


# --------------------------------------------------------------------------- training


@dataclass
class _Run:
    """Mutable state of one training run (model, optimiser, bookkeeping)."""

    cfg: TrainConfig
    ctx: _Dist
    model: PASSNet
    net: torch.nn.Module  # ``model`` or its DDP wrapper
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    out_dir: Path
    best: dict[str, float] = field(
        default_factory=lambda: {"psnr": -math.inf, "ssim": math.nan, "epoch": -1}
    )
    history: list[dict[str, float]] = field(default_factory=list)
    start_epoch: int = 0

    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / CHECKPOINT_NAME

    @property
    def weights_path(self) -> Path:
        return self.out_dir / BEST_WEIGHTS_NAME

    def resume(self) -> None:
        """Load the checkpoint (if any) and continue after its epoch."""
        path = self.checkpoint_path
        if not path.is_file():
            log.warning("--resume: no checkpoint at %s, starting from scratch", path)
            return
        state = load_checkpoint(path)
        if state["config"]["model"] != self.cfg.model.to_dict():
            raise ValueError(
                f"{path}: checkpoint model {state['config']['model']} differs from the "
                f"configured model {self.cfg.model.to_dict()}"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        _restore_rng_state(state["rng"])
        self.start_epoch, self.best = state["epoch"] + 1, state["best"]
        self.history = state["history"]
        log.info("resuming after epoch %d from %s", state["epoch"], path)

    def train_epoch(self, epoch: int, loader: DataLoader, steps: int, writer: Any) -> list[float]:
        """One pass over at most ``steps`` batches; returns the losses."""
        cfg, losses = self.cfg, []
        self.net.train()
        bar = tqdm(
            total=steps,
            desc=f"epoch {epoch + 1}/{cfg.optim.epochs}",
            disable=not self.ctx.is_main,
            leave=False,
        )
        for step, batch in zip(range(steps), loader, strict=False):
            batch = batch.to(self.ctx.device)
            recon = _forward(self.net, batch)
            loss = _loss(recon, batch.target, cfg.optim.loss)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.optim.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.optim.grad_clip)
            self.optimizer.step()
            if cfg.optim.schedule == "cosine":
                self.scheduler.step()
            losses.append(float(loss.detach()))
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3g}")
            global_step = epoch * steps + step
            if writer is not None:
                writer.add_scalar("train/loss", losses[-1], global_step)
                if global_step % cfg.run.image_every == 0:
                    panel = _image_panel(zero_filled_image(batch), recon.detach(), batch.target)
                    writer.add_image("train/zf_recon_target_error", panel, global_step)
        bar.close()
        return losses

    def end_epoch(
        self, epoch: int, losses: list[float], seconds: float, lr: float, scores: dict, writer: Any
    ) -> None:
        """Rank 0: log, export the best weights, write the checkpoint and history."""
        record = {
            "epoch": epoch,
            "train_loss": float(np.mean(losses)) if losses else math.nan,
            "val_psnr": scores["psnr"],
            "val_ssim": scores["ssim"],
            "zf_psnr": scores["zf_psnr"],
            "lr": lr,
            "epoch_seconds": seconds,
            "steps": len(losses),
        }
        self.history.append(record)
        log.info(
            "epoch %d: loss %.4g, val PSNR %.2f dB (zero-filled %.2f), SSIM %.3f, %.0f s",
            *(epoch + 1, record["train_loss"], scores["psnr"], scores["zf_psnr"]),
            *(scores["ssim"], seconds),
        )
        if writer is not None:
            for key in ("psnr", "ssim", "zf_psnr"):
                writer.add_scalar(f"val/{key}", scores[key], epoch)
            writer.add_scalar("train/lr", lr, epoch)
        if scores["psnr"] > self.best["psnr"]:
            self.best = {"psnr": scores["psnr"], "ssim": scores["ssim"], "epoch": epoch}
            meta = {
                "training_config": self.cfg.to_dict(),
                "epoch": epoch + 1,
                "val_psnr": scores["psnr"],
                "val_ssim": scores["ssim"],
                "zero_filled_val_psnr": scores["zf_psnr"],
                "data_source": self.cfg.data.source,
            }
            save_weights(self.model, self.weights_path, extra_meta=meta)
        last = epoch + 1 == self.cfg.optim.epochs
        if (epoch + 1) % self.cfg.run.checkpoint_every == 0 or last:
            payload = {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "epoch": epoch,
                "rng": _rng_state(),
                "config": self.cfg.to_dict(),
                "best": self.best,
                "history": self.history,
            }
            _save_checkpoint(self.checkpoint_path, payload)
        (self.out_dir / "history.json").write_text(json.dumps(self.history, indent=1))


def _loaders(
    cfg: TrainConfig, ctx: _Dist
) -> tuple[DataLoader, DataLoader, DistributedSampler | None]:
    train_set, val_set = make_datasets(cfg)
    sampler: DistributedSampler | None = None
    if ctx.world_size > 1:
        sampler = DistributedSampler(train_set, shuffle=True, seed=cfg.data.seed)
    loader = functools.partial(  # what training and validation loaders share
        DataLoader,
        collate_fn=collate_cine,
        num_workers=cfg.run.num_workers,
        worker_init_fn=_worker_init,
    )
    train_loader = loader(
        train_set,
        batch_size=cfg.optim.batch_size,
        sampler=sampler,
        shuffle=sampler is None,
    )
    return train_loader, loader(val_set, batch_size=1), sampler


def _pretrained(config_path: str) -> Path:
    """Best weights of the ``run.pretrain`` configuration, training it first where needed."""
    first = load_config(config_path)
    weights = Path(first.run.out_dir) / BEST_WEIGHTS_NAME
    if weights.is_file():
        log.info("run.pretrain: %s already trained, starting from %s", config_path, weights)
        return weights
    log.info("run.pretrain: training %s first (out_dir %s)", config_path, first.run.out_dir)
    result = train(first, resume=(Path(first.run.out_dir) / CHECKPOINT_NAME).is_file())
    if result.weights_path is None:
        raise RuntimeError(f"run.pretrain: {config_path} wrote no weights")
    return result.weights_path


def train(cfg: TrainConfig, resume: bool = False) -> TrainResult:
    """Train PASSNet as configured and export the best network.

    Parameters
    ----------
    cfg
        A validated configuration (:func:`training.config.load_config`).
    resume
        Continue from ``cfg.run.out_dir/checkpoint.pt`` when it exists (otherwise start fresh).

    Returns
    -------
    TrainResult
        Best validation PSNR/SSIM and epoch, the zero-filled validation PSNR for comparison,
        output paths, per-epoch history and the final (unwrapped) model.
    """
    ctx = _setup_distributed(cfg.run.device)
    out_dir = Path(cfg.run.out_dir)
    if ctx.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))

    init_weights = cfg.run.init_weights
    if cfg.run.pretrain:
        init_weights = str(_pretrained(cfg.run.pretrain))
    _seed_everything(cfg.data.seed)
    model = PASSNet(cfg.model).to(ctx.device)
    if init_weights:
        initial = load_weights(init_weights, map_location="cpu")
        # a second stage may change what the stages are given (training/configs/
        # chain_files.yaml: phase reference, start), not their parameters
        given = {name: getattr(cfg.model, name) for name in INPUT_SETTINGS}
        if dataclasses.replace(initial.config, **given) != cfg.model:
            raise ValueError(
                f"start weights {init_weights}: its model {initial.config} differs from "
                f"the configured {cfg.model}"
            )
        model.load_state_dict(initial.state_dict())
    beta1, beta2 = cfg.optim.betas  # exactly two (checked by training.config)
    optimizer = torch.optim.Adam(
        model.parameters(), lr=cfg.optim.lr, betas=(beta1, beta2), eps=cfg.optim.eps
    )
    train_loader, val_loader, sampler = _loaders(cfg, ctx)
    steps = len(train_loader)
    if cfg.run.max_steps_per_epoch is not None:
        steps = min(steps, cfg.run.max_steps_per_epoch)
    scheduler: torch.optim.lr_scheduler.LRScheduler
    if cfg.optim.schedule == "cosine":
        factor = WarmupCosine(cfg.optim.warmup_steps, steps * cfg.optim.epochs)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    else:
        scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=cfg.optim.lr_decay)
    net: torch.nn.Module = model
    if ctx.world_size > 1:  # DDP broadcasts rank 0's parameters, so all ranks start equal
        net = DistributedDataParallel(
            model, device_ids=[ctx.device] if ctx.device.type == "cuda" else None
        )
    state = _Run(cfg, ctx, model, net, optimizer, scheduler, out_dir)
    if resume:
        state.resume()

    with _tensorboard(out_dir, cfg.run.tensorboard and ctx.is_main) as writer:
        for epoch in range(state.start_epoch, cfg.optim.epochs):
            _seed_everything(_epoch_seed(cfg.data.seed, epoch, ctx.rank))
            if sampler is not None:
                sampler.set_epoch(epoch)
            start = time.perf_counter()
            losses = state.train_epoch(epoch, train_loader, steps, writer)
            seconds = time.perf_counter() - start
            lr = optimizer.param_groups[0]["lr"]
            if cfg.optim.schedule == "exponential":
                scheduler.step()
            if ctx.is_main:
                scores = validate(model, val_loader, ctx.device, cfg.data.coil_mode == "multi")
                state.end_epoch(epoch, losses, seconds, lr, scores, writer)
            if ctx.world_size > 1:
                dist.barrier()  # other ranks wait for validation and checkpoint writing

    best = state.best
    return TrainResult(
        best_val_psnr=float(best["psnr"]),
        best_val_ssim=float(best["ssim"]),
        best_epoch=int(best["epoch"]) + 1,
        zero_filled_val_psnr=state.history[-1]["zf_psnr"] if state.history else math.nan,
        epochs_run=cfg.optim.epochs - state.start_epoch,
        out_dir=out_dir,
        weights_path=state.weights_path if ctx.is_main and state.weights_path.is_file() else None,
        checkpoint_path=state.checkpoint_path,
        history=state.history,
        model=model,
    )


# --------------------------------------------------------------------------- CLI


def run(args: argparse.Namespace) -> int:
    """Entry point of ``passnet train``."""
    overrides = list(args.set)
    if args.out:
        overrides.append(f"run.out_dir={json.dumps(str(args.out))}")
    try:
        cfg = load_config(args.config, overrides)
    except ValueError as err:
        log.error("%s", err)
        return 2
    try:
        result = train(cfg, resume=args.resume)
    except ValueError as err:  # bad data folder, checkpoint of another model...
        log.error("%s", err)
        return 2
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if result.weights_path is not None:
        print(
            f"best val PSNR {result.best_val_psnr:.2f} dB (zero-filled "
            f"{result.zero_filled_val_psnr:.2f} dB) at epoch {result.best_epoch}; "
            f"weights: {result.weights_path}"
        )
    return 0


__all__ = [
    "TrainResult",
    "train",
    "make_datasets",
    "validate",
    "load_checkpoint",
    "run",
]
