"""DistributedDataParallel: two CPU processes (gloo) end a short run with identical weights."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from passnet_core.model import PASSNet
from training.config import load_config
from training.train import CHECKPOINT_NAME, train

TINY = Path(__file__).resolve().parents[1] / "training" / "configs" / "tiny_test.yaml"
WORLD_SIZE = 2


def _overrides(out: Path) -> list[str]:
    return [
        f"run.out_dir={out}",
        "optim.epochs=1",
        "run.max_steps_per_epoch=3",
        "data.n_train=4",
        "data.n_val=1",
    ]


def _worker(rank: int, out: str, port: int) -> None:
    # what torchrun would export for each process
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(WORLD_SIZE),
    )
    torch.set_num_threads(1)
    try:
        result = train(load_config(TINY, _overrides(Path(out) / "run")))
        assert dist.get_world_size() == WORLD_SIZE
        torch.save(result.model.state_dict(), Path(out) / f"rank{rank}.pt")
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_cpu_ranks_end_with_identical_parameters(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(str(tmp_path), _free_port()), nprocs=WORLD_SIZE, join=True)
    states = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD_SIZE)]
    cfg = load_config(TINY, _overrides(tmp_path / "run"))
    torch.manual_seed(cfg.data.seed)  # train() seeds the same way before building the model
    initial = PASSNet(cfg.model).state_dict()
    changed = 0
    for name, value in states[0].items():
        assert torch.equal(value, states[1][name]), f"{name} differs between ranks"
        changed += int(not torch.equal(value, initial[name]))
    assert changed > 0, "no parameter moved: the ranks did not train"
    # only rank 0 writes: one checkpoint, one history with one validated epoch
    assert (tmp_path / "run" / CHECKPOINT_NAME).is_file()
    assert len(torch.load(tmp_path / "run" / CHECKPOINT_NAME, weights_only=True)["history"]) == 1
