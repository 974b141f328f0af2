"""Every shipped Gadgetron chain parses, has Gadgetron 4's structure, and names real targets."""

from __future__ import annotations

import importlib
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from gadgetron_configs import shipped_configs
from gadgets.chain_config import NATIVE_EQUIVALENTS, interpret_chain

CONFIGS = shipped_configs()
REPO_ROOT = Path(__file__).resolve().parents[1]


def test_the_two_documented_chains_are_shipped():
    assert {p.name for p in CONFIGS} >= {"passnet_raw.xml", "passnet_buffered.xml"}


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
    for gadget in stream.findall("gadget"):
        assert gadget.findtext("dll") == "gadgetron_mricore"
        assert gadget.findtext("classname") in NATIVE_EQUIVALENTS
        for prop in gadget.findall("property"):
            assert prop.get("name") and prop.get("value") is not None
    # the Python step is last: it produces the images the writer sends
    assert stream[-1].tag == "external"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_python_targets_import_and_are_callable(path: Path):
    executes = ET.parse(path).getroot().findall("stream/external/execute")
    assert executes
    for execute in executes:
        assert execute.get("type") == "python"
        module = importlib.import_module(execute.get("name"))
        assert callable(getattr(module, execute.get("target")))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
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
