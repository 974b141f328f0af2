"""``passnet info``: what this installation would use."""

from __future__ import annotations

import argparse
import platform


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", default=None, help="weights file (default: shipped)")


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from passnet_core import __version__
    from passnet_core.weights import default_weights_path, load_weights

    path = args.weights or default_weights_path()
    print(f"passnet_core {__version__}, torch {torch.__version__}, numpy {np.__version__}")
    print(f"python {platform.python_version()} on {platform.machine()}")
    print(f"cuda available: {torch.cuda.is_available()}")
    model = load_weights(path)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"weights: {path}")
    print(f"config: {model.config}")
    print(f"parameters: {n_params:,}")
    return 0
