"""docs/design.md matches the code: every module listed, none invented, imports point down."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DESIGN = REPO / "docs" / "design.md"
# Layer of each package (docs/design.md, "Layers"): a module may import its own package and
# lower layers only. Imports inside functions count too.
LAYERS = {"passnet_core": 1, "gadgetron_configs": 1, "gadgets": 2, "training": 3, "benchmarks": 4}


def _modules(package: str) -> list[str]:
    """Module names relative to the package; a subpackage's modules dotted (``exporters.png``)."""
    root = REPO / package
    return sorted(
        ".".join(p.relative_to(root).with_suffix("").parts)
        for p in root.rglob("*.py")
        if p.stem != "__init__"
    )


def _section(package: str) -> str:
    text = DESIGN.read_text()
    match = re.search(rf"^## {package}\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S)
    assert match, f"docs/design.md has no '## {package}' section"
    return match.group(1)


@pytest.mark.parametrize("package", ["passnet_core", "gadgets", "training", "benchmarks"])
def test_every_module_has_a_row_and_every_row_a_module(package):
    listed = set(re.findall(r"^\| `([\w.]+)` \|", _section(package), flags=re.M))
    assert listed == set(_modules(package)), (
        f"missing in docs/design.md: {sorted(set(_modules(package)) - listed)}; "
        f"no such module: {sorted(listed - set(_modules(package)))}"
    )


def _imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & set(LAYERS)


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_imports_never_point_up(package):
    upward = {
        f"{path.relative_to(REPO)} -> {other}"
        for path in (REPO / package).rglob("*.py")
        for other in _imported_packages(path)
        if LAYERS[other] > LAYERS[package]
    }
    assert not upward, f"imports pointing up the layering: {sorted(upward)}"
