"""Where benchmark numbers go: the BENCHMARKS.md appender and Markdown tables."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

# The stamp lives in training.provenance (passnet evaluate uses it too); re-exported here for
# the benchmark scripts.
from training.provenance import machine_description, provenance

__all__ = ["append_section", "machine_description", "markdown_table", "provenance"]


def append_section(path: Path, title: str, body: str, device: torch.device | str = "cpu") -> None:
    """Append a dated section (command, machine, body) to a Markdown file."""
    text = f"\n## {title}\n\n{provenance(device)}\n{body.rstrip()}\n"
    path = Path(path)
    if not path.exists():
        path.write_text(
            "# Benchmarks\n\nMeasured numbers, newest last. Each section names its command and "
            "machine. Ratios compare methods measured in the same run; absolute times are only "
            "meaningful for the machine named.\n"
        )
    with path.open("a") as fh:
        fh.write(text)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Render a Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    return "\n".join(lines)
