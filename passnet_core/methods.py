"""The one registry of reconstruction methods: names, spellings, labels, series, factories.

It also holds the other names option parsers list (coil-map estimators, mask kinds), so
``--help`` never needs a copy of a table that lives in a torch module.

Every table of methods in the project reads this module: the chain's ``method`` option,
``passnet recon --method``, ``passnet evaluate --methods``, the benchmarks, image comments and
DICOM series. It imports only the standard library, so option parsers (``passnet COMMAND
--help``) read it without loading torch; a method's implementation is imported only when
:meth:`Method.load` is called.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# How a method reconstructs, i.e. what its factory is called with:
#   "operator": fn(op: EncodingOp, kspace) -> images (passnet_core.baselines, operators)
#   "network":  PASSNet weights through passnet_core.inference.reconstruct
#   "bart":     the BART command line (passnet_core.bart), regulariser ``bart_regulariser``
KINDS = ("operator", "network", "bart")


@dataclass(frozen=True)
class Method:
    """One reconstruction method.

    Attributes
    ----------
    name
        Key and chain-config value (``snake_case``), e.g. ``"lplus_s"``.
    label
        Human name in image comments, reports and DICOM series descriptions.
    kind
        One of :data:`KINDS`.
    factory
        ``"module:attribute"`` of the implementation (imported by :meth:`load`).
    series_offset
        DICOM ``SeriesNumber = 100 * initialSeriesNumber + offset`` of images a chain writes with
        this method; ``None`` for methods no chain runs.
    chain
        Selectable in a chain (``method`` property) and ``passnet recon --method``.
    evaluate, evaluate_default
        Offered by ``passnet evaluate``, and run there by default.
    weights
        ``"module:function"`` returning the shipped weights file (network methods).
    bart_regulariser
        ``pics -R`` template with ``{}`` for the weight (BART methods).
    chain_settings
        For a benchmark variant of a chain method: the chain settings it stands for, e.g.
        ``(("method", "bart_llr"), ("bart_maps", "chain"))``.
    description
        One phrase for ``--help``.
    """

    name: str
    label: str
    kind: str
    factory: str
    series_offset: int | None = None
    chain: bool = False
    evaluate: bool = False
    evaluate_default: bool = False
    weights: str | None = None
    bart_regulariser: str | None = None
    chain_settings: tuple[tuple[str, str], ...] = ()
    description: str = ""

    @property
    def cli(self) -> str:
        """The command-line spelling (``kebab-case``), e.g. ``"lplus-s"``."""
        return self.name.replace("_", "-")

    def load(self) -> Callable[..., Any]:
        """The implementation named by :attr:`factory` (imports its module)."""
        return _resolve(self.factory)

    def shipped_weights(self) -> Any:
        """The shipped weights file of a network method (a ``pathlib.Path``)."""
        if self.weights is None:
            raise ValueError(f"method {self.name!r} has no shipped weights")
        return _resolve(self.weights)()

    def settings(self) -> dict[str, str]:
        """The chain settings that run this method (``{"method": name}`` for chain methods)."""
        return dict(self.chain_settings) if self.chain_settings else {"method": self.name}


def _resolve(target: str) -> Callable[..., Any]:
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


_NETWORK = "passnet_core.inference:reconstruct"
_BART = "passnet_core.bart:pics"

REGISTRY: tuple[Method, ...] = (
    Method(
        "zero_filled", "zero-filled", "operator", "passnet_core.operators:zero_filled",
        series_offset=3, chain=True, evaluate=True, evaluate_default=True,
        description="zero-filled SENSE, A^H d",
    ),
    Method(
        "lplus_s", "L+S", "operator", "passnet_core.baselines:lplus_s", series_offset=2,
        chain=True, evaluate=True, evaluate_default=True,
        description="classical low-rank + sparse",
    ),
    Method(
        "llr", "LLR", "operator", "passnet_core.baselines:llr", series_offset=4, chain=True,
        evaluate=True, evaluate_default=True,
        description="classical locally low rank, the network's warm start",
    ),
    Method(
        "bart_llr", "BART LLR", "bart", _BART, series_offset=5, chain=True, evaluate=True,
        evaluate_default=True, bart_regulariser="L:7:7:{}",
        description="BART pics LLR with bart ecalib maps; needs the bart command",
    ),
    Method(
        "bart_tv", "BART TV", "bart", _BART, evaluate=True, bart_regulariser="T:1024:0:{}",
        description="BART pics temporal total variation",
    ),
    Method(
        "passnet_adjoint", "PASSNet (A^H d start)", "network", _NETWORK, evaluate=True,
        evaluate_default=True, weights="passnet_core.weights:paper_start_weights_path",
        description="the paper's start, A^H d",
    ),
    Method(
        "passnet_uniform", "PASSNet uniform SVT", "network", _NETWORK, evaluate=True,
        evaluate_default=True, weights="passnet_core.weights:ablation_weights_path",
        description="the uniform-SVT ablation",
    ),
    Method(
        "passnet", "PASSNet", "network", _NETWORK, series_offset=1, chain=True,
        evaluate=True, evaluate_default=True, weights="passnet_core.weights:default_weights_path",
        description="the network",
    ),
    Method(
        "bart_llr_chain_maps", "BART LLR (chain maps)", "bart", _BART,
        bart_regulariser="L:7:7:{}",
        chain_settings=(("method", "bart_llr"), ("bart_maps", "chain")),
        description="BART pics LLR with the chain's own ESPIRiT maps",
    ),
)  # fmt: skip

_BY_NAME = {method.name: method for method in REGISTRY}
_BY_CLI = {method.cli: method for method in REGISTRY}

#: values of the chain's ``method`` option, in registry order
CHAIN_METHODS = tuple(m.name for m in REGISTRY if m.chain)
#: ``passnet evaluate --methods`` choices (CLI spelling): the order of its tables
EVALUATE_METHODS = tuple(m.cli for m in REGISTRY if m.evaluate)
#: coil-map estimators of ``passnet_core.coilmaps`` and the chain's ``coil_map_method``
COIL_MAP_METHODS = ("espirit", "walsh")
#: sampling-mask kinds of ``passnet_core.masks`` (``KIND-ACCEL`` names), here so that option
#: parsers list them without loading torch
MASK_KINDS = ("radial", "vds", "vds_lines", "equispaced")


def get(name: str) -> Method:
    """The method of a name in either spelling (``"lplus_s"`` or ``"lplus-s"``).

    Raises
    ------
    ValueError
        For an unknown name, listing the known ones.
    """
    method = _BY_NAME.get(name) or _BY_CLI.get(name)
    if method is None:
        known = ", ".join(m.cli for m in REGISTRY)
        raise ValueError(f"unknown reconstruction method {name!r}; known: {known}")
    return method


def label(name: str) -> str:
    """The label of a method name, or the name itself where it is not a registered method."""
    method = _BY_NAME.get(name) or _BY_CLI.get(name)
    return method.label if method is not None else name
