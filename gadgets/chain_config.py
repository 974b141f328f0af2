"""The one path from chain XML to :class:`ChainParams`: parse, interpret, coerce, override.

The external gadget (``connection.config``: the PASSNet step's ``<configuration>``), the
server (a whole chain sent by a client, or a shipped chain named by it) and ``passnet recon
--config`` all go through :meth:`ChainParams.from_config`, so one XML gives one set of
parameters whatever the transport (tests/test_chain_config.py checks this).

A whole Gadgetron 4 chain (``<configuration>`` with a ``<stream>``) is *interpreted*, not
executed: the native steps Python stands in for are accepted (the PASSNet chain prewhitens,
removes oversampling and buffers by itself), readers and writers are ignored, the PASSNet
``<external>`` step contributes its ``<configuration>``, and any other native gadget is refused
with :class:`UnsupportedChainError` naming it.

Only the standard library is imported here, so command-line parsers can use it cheaply.
"""

from __future__ import annotations

import dataclasses
import logging
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from passnet_core.methods import CHAIN_METHODS, COIL_MAP_METHODS

log = logging.getLogger(__name__)

PASSNET_MODULE = "gadgets.passnet_gadget"
PASSNET_TARGET = "reconstruct"

# Values of the chain's options (checked in one place: ChainParams.__post_init__).
FRAME_DIMENSIONS = ("phase", "repetition", "auto")  # acquisition counter of the cardiac phase
OUTPUTS = ("magnitude", "complex")
FALLBACKS = ("zero_filled", "none")
# BART pics LLR weight (bart_llr) on data scaled to max |A^H d| = 1, as the project's LLR
# sees them, per map source: what the chain bench's validation files pick at R 6-8 with
# per-frame lines on passnet simulate's default size (BENCHMARKS.md; ecalib maps keep more
# background and want a larger weight). It moves with the content: tune it on your own files
DEFAULT_BART_LAMBDA = {"ecalib": 0.005, "chain": 0.002}
BART_MAPS = ("ecalib", "chain")
# Slice limits: a slice's C*T*H*W (8 bytes each, complex64) and the distinct lines it buffers.
DEFAULT_MAX_MATRIX_ELEMENTS = 64 * 1024 * 1024
DEFAULT_MAX_LINES_PER_SLICE = 128 * 1024

# Native gadgets whose job the PASSNet chain does itself (value: what stands in for it).
NATIVE_EQUIVALENTS = {
    "NoiseAdjustGadget": "noise prewhitening in the PASSNet chain",
    "RemoveROOversamplingGadget": "readout oversampling removal in the PASSNet chain",
    "AcquisitionAccumulateTriggerGadget": "per-slice buffering in the PASSNet chain",
    "BucketToBufferGadget": "per-slice buffering in the PASSNet chain",
}

# The gadget of the dependency query gadgetron_ismrmrd_client sends before a measurement
# that declares a noise dependency (see gadgets/dependency.py).
NOISE_SUMMARY_GADGET = "NoiseSummaryGadget"


class UnsupportedChainError(ValueError):
    """A chain this package cannot run (unknown native gadget, no PASSNet step, bad XML)."""


@dataclass(frozen=True)
class ChainParams:
    """Settings of the chain (the PASSNet step's ``<configuration>`` properties).

    Attributes
    ----------
    weights
        Weights file; ``None``: the shipped weights (a server ignores this and uses its own).
    device
        ``"auto"``, ``"cpu"`` or ``"cuda[:n]"``.
    frame_dimension
        Acquisition counter holding the cardiac phase: one of :data:`FRAME_DIMENSIONS`
        (``"auto"``: from the header's encoding limits).
    output
        ``"magnitude"`` (float32 images) or ``"complex"`` (complex64).
    scale
        Factor applied to the images; ``None``: each slice's largest magnitude becomes 4095.
    max_matrix_elements
        Bound on ``C*T*H*W`` of one slice, checked before allocating.
    max_lines_per_slice
        Distinct lines one slice may buffer before it ends.
    image_series_index
        ``image_series_index`` of the images sent back.
    coil_map_method
        ``"espirit"`` or ``"walsh"``.
    fallback
        ``"zero_filled"``: zero-filled SENSE when the network cannot run; ``"none"``: the
        slice fails instead.
    method
        ``"passnet"`` (the product), or the classical ``"lplus_s"`` (L+S), ``"llr"`` (locally
        low rank, PASSNet's warm start), ``"zero_filled"`` or ``"bart_llr"`` (BART's
        ``pics -R L:7:7:lambda``, 100 iterations, with ``bart ecalib`` maps from the same data;
        needs the ``bart`` command) for a side-by-side comparison on the same data.
    bart_lambda
        LLR weight of ``bart_llr``, on data divided by max |A^H d| (``pics -w``), the scale
        the project's own methods use (BART's own scale estimate follows the content, and
        one lambda would then fail some files). ``None``: the default for ``bart_maps``
        (:data:`DEFAULT_BART_LAMBDA`; :meth:`bart_weight`).
    bart_maps
        Coil maps of ``bart_llr``: ``"ecalib"`` (``bart ecalib -m1``, what a BART user runs)
        or ``"chain"`` (the chain's own ESPIRiT maps, as every other method uses).
    """

    weights: str | None = None
    device: str = "auto"
    frame_dimension: str = "auto"
    output: str = "magnitude"
    scale: float | None = None
    max_matrix_elements: int = DEFAULT_MAX_MATRIX_ELEMENTS
    max_lines_per_slice: int = DEFAULT_MAX_LINES_PER_SLICE
    image_series_index: int = 1
    coil_map_method: str = "espirit"
    fallback: str = "zero_filled"
    method: str = "passnet"
    bart_lambda: float | None = None
    bart_maps: str = "ecalib"

    def __post_init__(self) -> None:
        choices = {
            "frame_dimension": FRAME_DIMENSIONS,
            "output": OUTPUTS,
            "coil_map_method": COIL_MAP_METHODS,
            "fallback": FALLBACKS,
            "method": CHAIN_METHODS,
            "bart_maps": BART_MAPS,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in ("max_matrix_elements", "max_lines_per_slice"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.bart_lambda is not None and not self.bart_lambda > 0:
            raise ValueError(f"bart_lambda must be positive, got {self.bart_lambda}")
        if self.scale is not None and not self.scale > 0:
            raise ValueError(f"scale must be positive, got {self.scale}")
        if not isinstance(self.device, str) or not self.device:
            raise ValueError(f"device must be auto, cpu or cuda[:n], got {self.device!r}")

    @classmethod
    def from_config(cls, config: ET.Element | str | bytes | dict | None) -> ChainParams:
        """Build from a whole chain, a step ``<configuration>``, a dict or ``None``.

        Parameters
        ----------
        config
            A whole Gadgetron 4 chain (element or XML text: interpreted by
            :func:`interpret_chain`), the PASSNet step's ``<configuration>`` element or text
            (what the external gadget receives), a ``{name: value}`` dict, or ``None``
            (defaults). Property values are coerced to the field types; empty strings and
            ``"none"`` for optional fields mean ``None``.

        Raises
        ------
        ValueError
            Bad XML, an unknown key, a value of the wrong type or out of range
            (:class:`UnsupportedChainError` for a whole chain this package cannot run).
        """
        if config is None:
            return cls()
        if isinstance(config, (str, bytes)):
            text = (config.decode() if isinstance(config, bytes) else config).strip().rstrip("\0")
            if not text:
                return cls()
            config = parse_xml(text)
        if isinstance(config, ET.Element):
            if local_name(config.tag) != "configuration":
                raise UnsupportedChainError(
                    f"chain root is <{local_name(config.tag)}>; expected a Gadgetron 4 "
                    "<configuration> (a whole chain, or the PASSNet step's configuration)"
                )
            if config.find("stream") is not None or config.find("version") is not None:
                return interpret_chain(config)
            config = properties(config)
        if not isinstance(config, dict):
            raise ValueError(f"unsupported configuration type {type(config).__name__}")
        types = {f.name: str(f.type) for f in dataclasses.fields(cls)}
        values = {}
        for key, raw in config.items():
            if key not in types:
                raise ValueError(f"unknown chain parameter {key!r}; known: {sorted(types)}")
            values[key] = _coerce(key, raw, types[key])
        return cls(**values)

    def bart_weight(self) -> float:
        """The LLR weight ``bart_llr`` runs with: ``bart_lambda``, or the maps' default."""
        if self.bart_lambda is not None:
            return self.bart_lambda
        return DEFAULT_BART_LAMBDA[self.bart_maps]

    def override(self, **changes: Any) -> ChainParams:
        """A copy with the given fields changed; ``None`` values leave a field as it is."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


def _coerce(key: str, raw: Any, type_name: str) -> Any:
    """A property's text as the field's type (``type_name`` is the annotation string)."""
    if not isinstance(raw, str):
        return raw
    text = raw.strip()
    if "None" in type_name and text.lower() in ("", "none", "null", "auto"):
        return None
    try:
        if "int" in type_name:
            return int(text)
        if "float" in type_name:
            return float(text)
    except ValueError as exc:
        raise ValueError(f"chain parameter {key!r}: cannot read {raw!r} as a number") from exc
    return text


# ----------------------------------------------------------------------------- XML reading


def parse_xml(text: str) -> ET.Element:
    """Parse chain XML (a trailing NUL, as ``gadgetron_ismrmrd_client`` sends, is dropped)."""
    try:
        return ET.fromstring(text.strip().rstrip("\0"))
    except ET.ParseError as exc:
        raise UnsupportedChainError(f"chain is not valid XML: {exc}") from exc


def local_name(tag: str) -> str:
    """``{namespace}name`` -> ``name`` (legacy chains carry Gadgetron's XML namespace)."""
    return tag.rsplit("}", 1)[-1]


def child_text(node: ET.Element, name: str) -> str | None:
    """Stripped text of ``node``'s first child named ``name`` (any namespace), or ``None``."""
    for child in node:
        if local_name(child.tag) == name:
            return (child.text or "").strip()
    return None


def properties(node: ET.Element) -> dict[str, str]:
    """The ``<property>`` children of one node, in the v2 (attribute) or legacy (child) form.

    Only direct children count: a step's properties, never those of nested nodes.
    """
    found: dict[str, str] = {}
    for prop in node:
        if local_name(prop.tag) != "property":
            continue
        name = prop.get("name", child_text(prop, "name"))
        value = prop.get("value", child_text(prop, "value"))
        if name:
            found[name.strip()] = (value or "").strip()
    return found


def step_name(node: ET.Element) -> str:
    """A chain node's class name (or name), for messages."""
    return child_text(node, "classname") or child_text(node, "name") or "?"


def is_whole_chain(root: ET.Element) -> bool:
    """True for a Gadgetron 4 chain (``<configuration>`` with a ``<stream>``)."""
    return local_name(root.tag) == "configuration" and root.find("stream") is not None


# ----------------------------------------------------------------------------- interpretation


def interpret_chain(chain: str | ET.Element) -> ChainParams:
    """Map a whole Gadgetron 4 chain (version 2 XML) onto :class:`ChainParams`.

    The result is the PASSNet step's ``<configuration>`` read by :meth:`ChainParams.from_config`,
    what the external gadget gets inside Gadgetron, plus ``frame_dimension`` from a
    BucketToBufferGadget's ``N_dimension`` when the step does not state it: the server and
    replay buffer raw acquisitions themselves and must use the axis Gadgetron would bucket as
    N (inside Gadgetron the step receives those buffers, so its frames follow N anyway). A
    step that states another ``frame_dimension`` keeps it, with a warning.

    Raises
    ------
    UnsupportedChainError
        The XML does not parse, is not a version-2 ``<configuration>``, names a native gadget
        with no Python equivalent here, an external step other than PASSNet, or no PASSNet
        step; or the step's configuration is invalid.
    """
    root = parse_xml(chain) if isinstance(chain, str) else chain
    if not is_whole_chain(root):
        raise UnsupportedChainError(
            f"chain root is <{local_name(root.tag)}>; expected a Gadgetron 4 <configuration> "
            "with a <stream>"
        )
    version = (root.findtext("version") or "2").strip()
    if version != "2":
        raise UnsupportedChainError(f"chain format version {version} is not supported (need 2)")
    stream = root.find("stream")
    assert stream is not None  # is_whole_chain checked it

    passnet_steps: list[ET.Element | None] = []
    n_dimension: str | None = None
    for node in _flattened(stream):
        if node.tag == "gadget":
            name = step_name(node)
            if name not in NATIVE_EQUIVALENTS:
                raise UnsupportedChainError(
                    f"native gadget {name!r} has no equivalent in the PASSNet chain; supported: "
                    f"{', '.join(sorted(NATIVE_EQUIVALENTS))} and the PASSNet external step"
                )
            if name == "BucketToBufferGadget":
                n_dimension = properties(node).get("N_dimension", "").lower() or None
            log.debug("chain step %s -> %s", name, NATIVE_EQUIVALENTS[name])
        elif node.tag == "external":
            execute = node.find("execute")
            module = execute.get("name", "") if execute is not None else ""
            target = execute.get("target", "") if execute is not None else ""
            if (module, target) != (PASSNET_MODULE, PASSNET_TARGET):
                what = f"{module}.{target}" if execute is not None else "an external <connect>"
                raise UnsupportedChainError(
                    f"external step {what!r} is not the PASSNet step "
                    f"({PASSNET_MODULE}.{PASSNET_TARGET})"
                )
            passnet_steps.append(node.find("configuration"))
        else:
            raise UnsupportedChainError(
                f"chain step <{node.tag}> is not supported "
                "(only <gadget>, <external> and <distributed>)"
            )
    if len(passnet_steps) != 1:
        raise UnsupportedChainError(
            f"chain must contain exactly one PASSNet external step, found {len(passnet_steps)}"
        )
    step = passnet_steps[0]
    step_properties = properties(step) if step is not None else {}
    try:
        params = ChainParams.from_config(step_properties)
    except ValueError as exc:
        raise UnsupportedChainError(f"PASSNet step configuration: {exc}") from exc
    stated = "frame_dimension" in step_properties
    if n_dimension in ("phase", "repetition"):
        if not stated:
            # Raw acquisitions must be buffered along the axis Gadgetron would bucket as N;
            # inside Gadgetron the step receives those buffers, so its frames follow N too.
            params = params.override(frame_dimension=n_dimension)
        elif params.frame_dimension not in ("auto", n_dimension):
            log.warning(
                "BucketToBufferGadget N_dimension=%s but the PASSNet step states "
                "frame_dimension=%s; the step's setting is used",
                n_dimension,
                params.frame_dimension,
            )
    return params


def _flattened(stream: ET.Element) -> list[ET.Element]:
    """The steps of a stream in data order, a ``<distributed>`` node replaced by its stream.

    Gadgetron's ``<distributed>`` node sends each slice to a worker that runs the node's own
    ``<stream>`` (its readers, writers and distributor only say how data crosses); for the
    images that come back, that is the same as running the inner steps in place.
    """
    steps: list[ET.Element] = []
    for node in stream:
        if node.tag == "distributed":
            inner = node.find("stream")
            if inner is None:
                raise UnsupportedChainError("<distributed> node has no <stream> for its workers")
            steps += _flattened(inner)
        else:
            steps.append(node)
    return steps


def load_named_chain(name: str) -> str:
    """Text of a shipped chain (``gadgetron_configs``) named by a config-file message.

    Only plain names are looked up, in the package's folder: a client never chooses a file
    the server opens.
    """
    from gadgetron_configs import config_path

    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise UnsupportedChainError(f"config file name {name!r} must be a plain file name")
    try:
        return config_path(name).read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise UnsupportedChainError(str(exc)) from exc


def read_config_option(value: str | None) -> str | None:
    """XML text of a command-line ``--config``: XML text, an XML file or a shipped chain name.

    Raises
    ------
    ValueError
        Neither XML text, nor an existing file, nor a shipped chain name.
    """
    if value is None or value.lstrip().startswith("<"):
        return value
    path = Path(value)
    if path.is_file():
        return path.read_text(encoding="utf-8")
    try:
        return load_named_chain(value)  # a name or a stem
    except UnsupportedChainError:
        raise ValueError(f"--config {value!r}: no such file or shipped chain name") from None
