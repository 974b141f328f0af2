"""The ``passnet`` console script.

Commands are registered by the packages that implement them, as entry points of the group
``passnet.commands`` (pyproject.toml), so this engine package names nothing above it. Each
:class:`Command` names two things: the function that adds its options (``add_arguments``-style,
in a module that imports only the standard library at module level) and the module whose
``run(args) -> int`` does the work. The work module is imported only after the command line
parsed, so ``passnet COMMAND --help`` and a mistyped option answer without loading torch,
and one broken optional dependency does not take every command down.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import logging
import sys
from collections.abc import Callable
from typing import NamedTuple


class Command(NamedTuple):
    """One subcommand of ``passnet``, registered by the package that implements it."""

    name: str
    module: str  # defines run(args) -> int
    help: str
    arguments: str  # "module:function" adding the options; its module must import light


# Entry-point group under which packages register their commands (pyproject.toml,
# [project.entry-points."passnet.commands"]): this engine package names no module above it.
ENTRY_POINT_GROUP = "passnet.commands"
# Packages whose loggers -v switches to debug.
LOGGED_PACKAGES = ("passnet_core", "gadgets", "training", "benchmarks")

log = logging.getLogger(__name__)


@functools.cache  # entry points do not change while the process runs; main asks three times
def subcommands() -> tuple[Command, ...]:
    """The registered commands, sorted by name (each entry point names a :class:`Command`).

    Raises
    ------
    SystemExit
        No command is registered (the package's metadata is missing: not installed).
    """
    from importlib.metadata import entry_points

    commands = []
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        command = entry.load()
        if not isinstance(command, Command) or command.name != entry.name:
            raise TypeError(f"entry point {entry.name!r} ({entry.value}) is not its Command")
        commands.append(command)
    if not commands:
        raise SystemExit(
            f"passnet: no commands registered under {ENTRY_POINT_GROUP!r}; "
            "install the package (pip install -e .)"
        )
    return tuple(sorted(commands, key=lambda c: c.name))


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Append ``(default: X)`` to an option's help unless the help already states a default.

    Unlike ``argparse.ArgumentDefaultsHelpFormatter`` this leaves alone help texts that spell
    out their default in words (``default: the shipped weights``) and options without a
    default worth printing (``None``, ``False``, required ones).
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            "default" in text.lower()
            or "%(default)" in text
            or action.required
            or action.default is None
            or action.default is False
            or action.default == argparse.SUPPRESS
            or not action.option_strings
        ):
            return text
        return f"{text} (default: %(default)s)"


def _resolve(spec: str) -> Callable[[argparse.ArgumentParser], None]:
    module_name, _, function = spec.partition(":")
    return getattr(importlib.import_module(module_name), function)


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser; a subcommand's options are added in :func:`command_parser`."""
    parser = argparse.ArgumentParser(
        prog="passnet",
        description="PASSNet cine MRI reconstruction for Gadgetron: simulate, reconstruct, "
        "serve, train, evaluate, benchmark.",
        epilog="passnet COMMAND --help lists a command's options.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in subcommands():
        sub.add_parser(command.name, help=command.help, add_help=False)
    return parser


def command_parser(name: str) -> argparse.ArgumentParser:
    """The parser of one subcommand, built without importing the module that runs it."""
    command = next(c for c in subcommands() if c.name == name)
    parser = argparse.ArgumentParser(
        prog=f"passnet {command.name}",
        description=command.help,
        formatter_class=DefaultsHelpFormatter,
    )
    _resolve(command.arguments)(parser)
    return parser


def one_line(exc: BaseException) -> str:
    """An exception as one log line: its message with white space folded.

    The type is named unless it is a ``ValueError``, whose messages this project writes for
    the user; a library's ``OSError`` or ``KeyError`` is unclear without it.
    """
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if isinstance(exc, ValueError) else f"{type(exc).__name__}: {text}"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``passnet`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    top, rest = parser.parse_known_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if top.verbose:  # debug for this project's packages only, not for every library
        for package in LOGGED_PACKAGES:
            logging.getLogger(package).setLevel(logging.DEBUG)
    if top.command is None:
        parser.print_help()
        return 0
    args = command_parser(top.command).parse_args(rest)  # --help and bad options exit here
    args.verbose = top.verbose
    module = importlib.import_module(next(c for c in subcommands() if c.name == top.command).module)
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130


if __name__ == "__main__":  # pragma: no cover
    # `python -m passnet_core.cli` (torchrun): run the imported module, whose Command class is
    # the one the entry points use (this file runs as __main__, a second copy of the class).
    from passnet_core.cli import main as package_main

    sys.exit(package_main())
