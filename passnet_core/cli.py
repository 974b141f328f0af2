"""The ``passnet`` console script.

Each subcommand lives in the package that owns it and exposes two functions:
``add_arguments(parser)`` and ``run(args) -> int``. Modules are imported only when their
subcommand is parsed, so ``passnet --help`` stays fast and one broken optional dependency
does not take every command down.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# (name, module, one-line help). Explicit list, not a plugin registry: adding a command is a
# one-line change here plus the module.
SUBCOMMANDS: tuple[tuple[str, str, str], ...] = (
    ("simulate", "training.simulate", "write a synthetic multi-coil cardiac cine ISMRMRD file"),
    ("recon", "gadgets.replay", "reconstruct an ISMRMRD raw file offline (no server)"),
    ("serve", "gadgets.server", "serve the Gadgetron client protocol (gadgetron_ismrmrd_client)"),
    ("train", "training.train", "train PASSNet from a YAML config"),
    ("evaluate", "training.evaluate", "evaluate PASSNet and baselines on a held-out synthetic set"),
    ("bench", "benchmarks.run", "latency/throughput/quality benchmarks -> BENCHMARKS.md"),
    ("info", "passnet_core.info", "show weights, device and library versions"),
)


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser; subcommand arguments are added lazily in :func:`main`."""
    parser = argparse.ArgumentParser(
        prog="passnet",
        description="PASSNet cine MRI reconstruction for Gadgetron: simulate, reconstruct, "
        "serve, train, evaluate, benchmark.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, _module, help_text in SUBCOMMANDS:
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``passnet`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    top, rest = parser.parse_known_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if top.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if top.command is None:
        parser.print_help()
        return 0
    name, module_name, help_text = next(s for s in SUBCOMMANDS if s[0] == top.command)
    module = importlib.import_module(module_name)
    sub_parser = argparse.ArgumentParser(prog=f"passnet {name}", description=help_text)
    module.add_arguments(sub_parser)
    args = sub_parser.parse_args(rest)
    args.verbose = top.verbose
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        logging.getLogger("passnet").error("interrupted")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
