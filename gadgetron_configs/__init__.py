"""Gadgetron XML chains shipped with PASSNet."""

from __future__ import annotations

from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent


def config_path(name: str) -> Path:
    """Return the path of a shipped chain by file name (``"passnet_raw.xml"``) or stem."""
    candidate = CONFIG_DIR / (name if name.endswith(".xml") else f"{name}.xml")
    if not candidate.is_file():
        shipped = ", ".join(sorted(p.name for p in CONFIG_DIR.glob("*.xml")))
        raise FileNotFoundError(f"no shipped Gadgetron config named {name!r}; shipped: {shipped}")
    return candidate
