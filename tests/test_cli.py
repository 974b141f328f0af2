"""The ``passnet`` console script: ``--help`` without heavy imports, every option documented.

Import checks run in a fresh interpreter (a subprocess): in the test process torch is long
loaded by other tests. They assert on what was imported, not on seconds, so they hold on a
loaded machine.
"""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from passnet_core.cli import DefaultsHelpFormatter, command_parser, main, subcommands
from passnet_core.methods import MASK_KINDS
from training import simulate_cli, train_cli

REPO_ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "numpy", "h5py", "ismrmrd")
NAMES = [c.name for c in subcommands()]
OWN_COMMANDS = ("simulate", "train", "evaluate", "info")

# In a fresh interpreter: run `passnet CMD --help` through main() (as the console script
# does), then report the help text, the exit code and which heavy modules were imported.
_PROBE = """
import contextlib, io, json, sys
from passnet_core.cli import main
out = io.StringIO()
code = None
with contextlib.redirect_stdout(out):
    try:
        main(sys.argv[1:])
    except SystemExit as exc:
        code = exc.code
heavy = [m for m in {heavy!r} if m in sys.modules]
print(json.dumps({{"code": code, "help": out.getvalue(), "heavy": heavy}}))
"""


def _help_probe(*argv: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", _PROBE.format(heavy=HEAVY), *argv],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", NAMES)
def test_help_answers_without_importing_torch(name: str):
    probe = _help_probe(name, "--help")
    assert probe["code"] == 0
    assert probe["help"].startswith(f"usage: passnet {name}")
    assert "torch" not in probe["heavy"]


@pytest.mark.parametrize("name", NAMES)
def test_help_imports_no_heavy_package(name: str):
    assert _help_probe(name, "--help")["heavy"] == []


def test_top_level_help_and_a_bad_option_import_nothing_heavy():
    top = _help_probe("--help")
    assert top["code"] == 0 and all(name in top["help"] for name in NAMES)
    bad = _help_probe("train", "--no-such-option")
    assert bad["code"] == 2 and bad["heavy"] == []


@pytest.mark.parametrize("name", OWN_COMMANDS)
def test_every_option_states_its_default(name: str):
    parser = command_parser(name)
    formatter = DefaultsHelpFormatter("passnet")
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        text = formatter._get_help_string(action)
        assert action.required or "default" in text.lower(), (name, action.option_strings)


def test_defaults_formatter_appends_only_missing_defaults():
    parser = argparse.ArgumentParser(formatter_class=DefaultsHelpFormatter)
    parser.add_argument("--a", type=int, default=0, help="zero is shown too")
    parser.add_argument("--b", type=int, default=3, help="b")
    parser.add_argument("--c", default=None, help="no default to show")
    parser.add_argument("--d", default=2, help="two (default 2)")
    text = " ".join(parser.format_help().split())
    assert "zero is shown too (default: 0)" in text
    assert "b (default: 3)" in text
    assert "no default to show --d" in text
    assert "two (default 2)" in text and "(default: 2)" not in text


def test_light_copies_equal_their_sources():
    # what the light option modules define once and the work modules import needs no check;
    # these two are copies because their sources load torch
    from training.config import TrainConfig

    assert set(train_cli.CONFIG_SECTIONS) == {f.name for f in fields(TrainConfig)}
    assert set(simulate_cli.LINE_MASK_KINDS) <= set(MASK_KINDS)


def test_every_command_has_a_light_options_module_and_an_ordinary_work_module():
    # one *_cli module per command (options, help, Command) and no add_arguments in the work
    # module: the work module imports what it needs at the top, like any module
    for command in subcommands():
        options_module = command.arguments.partition(":")[0]
        assert options_module.endswith("_cli"), command
        work = importlib.import_module(command.module)
        assert not hasattr(work, "add_arguments"), command.module
        assert callable(work.run)


def test_parse_errors_exit_2_before_the_work_module_runs(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["simulate", "--mask", "radial", "--out", "x.h5"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
