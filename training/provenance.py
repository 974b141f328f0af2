"""Where a number was measured: date, command and machine, for reports and benchmarks.

It sits in ``training`` so that ``passnet evaluate`` and the benchmark scripts share it
without the product importing from ``benchmarks/``.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import shlex
import sys
from pathlib import Path

import torch

__all__ = ["command_line", "machine_description", "provenance"]


def machine_description(device: torch.device | str = "cpu") -> str:
    """One line naming the hardware and software a number was measured on."""
    device = torch.device(device)
    if device.type == "cuda":
        hw = f"GPU {torch.cuda.get_device_name(device)}"
    else:
        hw = f"CPU {_cpu_model()} ({os.cpu_count()} cores, torch threads {torch.get_num_threads()})"
    return f"{hw}; torch {torch.__version__}; Python {platform.python_version()}"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def command_line() -> str:
    """The command that produced the numbers, as a user would retype it."""
    argv = sys.argv[:]
    if argv and argv[0].endswith(("passnet", "__main__.py", "cli.py")):
        argv[0] = "passnet"
    elif argv and argv[0].endswith(".py"):  # ``python -m pkg.mod``: no machine path in reports
        script = Path(argv[0]).resolve()
        try:
            parts = script.with_suffix("").relative_to(Path.cwd().resolve()).parts
        except ValueError:
            parts = (script.stem,)
        return " ".join(["python -m " + ".".join(parts), *map(shlex.quote, argv[1:])])
    return " ".join(shlex.quote(a) for a in argv)


def provenance(device: torch.device | str = "cpu") -> str:
    """Markdown list lines naming the date, the command and the machine of a measurement."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"- date: {stamp}\n"
        f"- command: `{command_line()}`\n"
        f"- machine: {machine_description(device)}\n"
    )
