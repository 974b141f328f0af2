"""Options of ``passnet train`` (standard library only: ``--help`` loads no torch)."""

from __future__ import annotations

import argparse

from passnet_core.cli import Command

# Sections of training.config.TrainConfig, the SECTION of --set SECTION.KEY=VALUE (a copy:
# training.config loads torch; tests/test_cli.py keeps it equal).
CONFIG_SECTIONS = ("model", "data", "optim", "run")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``passnet train``."""
    parser.add_argument(
        "--config",
        required=True,
        help="YAML config (required); shipped: training/configs/cpu_default.yaml (the recipe "
        "of the shipped weights), paper_full.yaml (the paper's, for a GPU), tiny_test.yaml",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue after the last epoch in OUT/checkpoint.pt; without a checkpoint, start "
        "from scratch (default: start from scratch)",
    )
    parser.add_argument(
        "--out",
        help="run folder for checkpoint.pt, best.safetensors, history.json, config.yaml and "
        "TensorBoard logs (default: the config's run.out_dir)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help=f"override one config value; SECTION is one of {', '.join(CONFIG_SECTIONS)}, KEY "
        "any field of that section (training/config.py), VALUE YAML, e.g. --set "
        "optim.epochs=5 --set data.masks=[vds_lines-8]; repeatable (default: none)",
    )


# Registered in pyproject.toml ([project.entry-points."passnet.commands"]).
COMMAND = Command(
    "train",
    "training.train",
    "train PASSNet from a YAML config",
    "training.train_cli:add_arguments",
)
