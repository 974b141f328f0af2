"""Every shipped Gadgetron chain parses, has Gadgetron 4's structure, and names real targets.

The structure checked for ``<distributed>`` is what Gadgetron's own source expects
(apps/gadgetron/connection/config/Config.cpp parses it, nodes/Distributed.cpp runs it,
core/distributed/AcquisitionDistributor.cpp splits the stream).
"""

from __future__ import annotations

import importlib
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from gadgetron_configs import CONFIG_DIR
from gadgets.chain_config import (
    NATIVE_EQUIVALENTS,
    ChainParams,
    UnsupportedChainError,
    interpret_chain,
    properties,
)

CONFIGS = sorted(CONFIG_DIR.glob("*.xml"))
REPO_ROOT = Path(__file__).resolve().parents[1]
DISTRIBUTED = "passnet_distributed.xml"
SINGLE_NODE = [p for p in CONFIGS if p.name != DISTRIBUTED]
# Values AcquisitionDistributor's parallel_dimension accepts (its selector table).
PARALLEL_DIMENSIONS = {
    "kspace_encode_step_1",
    "kspace_encode_step_2",
    "average",
    "slice",
    "contrast",
    "phase",
    "repetition",
    "set",
    "segment",
    *(f"user_{i}" for i in range(8)),
}


def _classes(nodes: list[ET.Element]) -> list[str]:
    return [n.findtext("classname") for n in nodes]


def test_the_documented_chains_are_shipped():
    assert {p.name for p in CONFIGS} >= {"passnet_raw.xml", "passnet_buffered.xml", DISTRIBUTED}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_chain_structure(path: Path):
    root = ET.parse(path).getroot()
    assert root.tag == "configuration"
    assert root.findtext("version").strip() == "2"
    readers = root.findall("readers/reader")
    writers = root.findall("writers/writer")
    assert readers and writers
    for node in readers + writers:
        assert node.findtext("dll").startswith("gadgetron_core_")
        assert node.findtext("classname").strip()
    assert {r.findtext("classname") for r in readers} >= {"AcquisitionReader"}
    assert {w.findtext("classname") for w in writers} >= {"ImageWriter"}
    stream = root.find("stream")
    assert stream is not None and len(stream) > 0
    for gadget in root.iter("gadget"):  # nested streams included
        assert gadget.findtext("dll") == "gadgetron_mricore"
        assert gadget.findtext("classname") in NATIVE_EQUIVALENTS
        for prop in gadget.findall("property"):
            assert prop.get("name") and prop.get("value") is not None
    # the Python step is last (here or in the distributed stream): it makes the images
    last = stream[-1]
    if last.tag == "distributed":
        last = last.find("stream")[-1]
    assert last.tag == "external"
    assert len(list(root.iter("external"))) == 1


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_python_targets_import_and_are_callable(path: Path):
    executes = list(ET.parse(path).getroot().iter("execute"))
    assert executes
    for execute in executes:
        assert execute.get("type") == "python"
        module = importlib.import_module(execute.get("name"))
        assert callable(getattr(module, execute.get("target")))


@pytest.mark.parametrize("path", SINGLE_NODE, ids=lambda p: p.name)
def test_chain_configuration_is_valid_for_the_chain_and_the_server(path: Path):
    params = interpret_chain(path.read_text(encoding="utf-8"))
    assert params.weights is None  # shipped chains use the shipped weights


def test_buffered_chain_uses_the_native_buffering_the_gadget_expects():
    root = ET.parse(next(p for p in CONFIGS if p.name == "passnet_buffered.xml")).getroot()
    classes = [g.findtext("classname") for g in root.findall("stream/gadget")]
    assert classes == [
        "NoiseAdjustGadget",
        "RemoveROOversamplingGadget",
        "AcquisitionAccumulateTriggerGadget",
        "BucketToBufferGadget",
    ]
    props = {
        p.get("name"): p.get("value")
        for p in root.findall("stream/gadget[classname='BucketToBufferGadget']/property")
    }
    assert props["N_dimension"] == "phase" and props["split_slices"] == "true"
    trigger = root.find("stream/gadget[classname='AcquisitionAccumulateTriggerGadget']")
    assert trigger.find("property[@name='trigger_dimension']").get("value") == "slice"


def test_dockerfile_installs_the_configs_where_gadgetron_looks():
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert "/usr/local/share/gadgetron/config/" in dockerfile
    assert "EXPOSE 9002" in dockerfile


def _distributed_chain() -> ET.Element:
    return ET.parse(next(p for p in CONFIGS if p.name == DISTRIBUTED)).getroot()


def test_distributed_chain_has_gadgetrons_distributed_structure():
    root = _distributed_chain()
    stream = root.find("stream")
    # noise scans carry slice 0: prewhitening must happen before the slices are split
    assert [n.tag for n in stream] == ["gadget", "gadget", "distributed"]
    assert _classes(stream.findall("gadget")) == [
        "NoiseAdjustGadget",
        "RemoveROOversamplingGadget",
    ]
    node = stream.find("distributed")
    assert [c.tag for c in node] == ["readers", "writers", "distributor", "stream"]
    # both directions cross the node: acquisitions out to a worker, images back
    readers, writers = node.findall("readers/reader"), node.findall("writers/writer")
    assert {r.findtext("dll") for r in readers} == {"gadgetron_core_readers"}
    assert {w.findtext("dll") for w in writers} == {"gadgetron_core_writers"}
    assert set(_classes(readers)) == {"AcquisitionReader", "ImageReader"}
    assert set(_classes(writers)) == {"AcquisitionWriter", "ImageWriter"}
    distributor = node.find("distributor")
    assert distributor.findtext("dll") == "gadgetron_core_distributed"
    assert distributor.findtext("classname") == "AcquisitionDistributor"
    dimension = properties(distributor)["parallel_dimension"]
    assert dimension in PARALLEL_DIMENSIONS and dimension == "slice"

    inner = node.find("stream")
    assert _classes(inner.findall("gadget")) == [
        "AcquisitionAccumulateTriggerGadget",
        "BucketToBufferGadget",
    ]
    trigger, bucket = inner.findall("gadget")
    assert properties(trigger)["trigger_dimension"] == "slice"
    assert properties(bucket)["N_dimension"] == "phase"
    assert properties(bucket)["split_slices"] == "true"
    execute = inner.find("external/execute")
    assert execute.attrib == {
        "name": "gadgets.passnet_gadget",
        "target": "reconstruct",
        "type": "python",
    }
    step = ChainParams.from_config(inner.find("external/configuration"))
    assert step.frame_dimension == "phase" and step.weights is None


def test_each_worker_gets_a_chain_the_passnet_step_runs():
    """A worker's chain is the node's readers, writers and stream (Configuration.cpp)."""
    node = _distributed_chain().find("stream/distributed")
    worker = ET.Element("configuration")
    ET.SubElement(worker, "version").text = "2"
    for part in ("readers", "writers", "stream"):
        worker.append(node.find(part))
    buffered = next(p for p in CONFIGS if p.name == "passnet_buffered.xml")
    assert interpret_chain(worker) == interpret_chain(buffered.read_text(encoding="utf-8"))


def test_one_process_runs_the_distributed_chain_as_its_workers_would():
    """`passnet serve` and `passnet recon` run the workers' stream in place (one process)."""
    text = next(p for p in CONFIGS if p.name == DISTRIBUTED).read_text(encoding="utf-8")
    buffered = next(p for p in CONFIGS if p.name == "passnet_buffered.xml")
    assert interpret_chain(text) == interpret_chain(buffered.read_text(encoding="utf-8"))


def test_a_distributed_node_without_a_worker_stream_is_refused():
    root = _distributed_chain()
    node = root.find("stream/distributed")
    node.remove(node.find("stream"))
    with pytest.raises(UnsupportedChainError, match="no <stream>"):
        interpret_chain(root)
