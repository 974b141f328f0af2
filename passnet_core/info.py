"""``passnet info``: what this installation would use (options: :mod:`passnet_core.info_cli`)."""

from __future__ import annotations

import argparse
import platform

import numpy as np
import torch

from passnet_core import __version__
from passnet_core.weights import WeightsError, default_weights_path, load_weights, read_metadata


def run(args: argparse.Namespace) -> int:
    """Print versions, device and the weights' config; 1 if the weights cannot be loaded."""
    path = args.weights or default_weights_path()
    print(f"passnet_core {__version__}, torch {torch.__version__}, numpy {np.__version__}")
    print(f"python {platform.python_version()} on {platform.machine()}")
    print(f"cuda available: {torch.cuda.is_available()}")
    print(f"weights: {path}")
    try:
        model = load_weights(path)
        meta = read_metadata(path)
    except WeightsError as err:
        print(f"weights unusable: {err}")
        return 1
    print(f"config: {model.config}")
    print(f"parameters: {sum(p.numel() for p in model.parameters()):,}")
    training = meta.get("training") or {}
    for key in ("data_source", "epoch", "val_psnr", "zero_filled_val_psnr", "val_ssim"):
        if key in training:
            print(f"training {key}: {training[key]}")
    return 0
