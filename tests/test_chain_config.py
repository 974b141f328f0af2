"""One chain XML gives one :class:`ChainParams` through the gadget, the server and replay."""

from __future__ import annotations

import argparse
import xml.etree.ElementTree as ET

import pytest

from gadgetron_configs import config_path
from gadgets import chain as chain_module
from gadgets import gadgetron_adapter, passnet_gadget
from gadgets.chain_config import ChainParams, UnsupportedChainError, properties
from gadgets.client import client_session
from gadgets.recon_cli import add_arguments
from gadgets.replay import params_from_args
from gadgets.server import PassnetServer
from gadgets.server_settings import ServerSettings

CUSTOM = """<configuration><version>2</version><stream>
  <gadget><dll>gadgetron_mricore</dll><classname>NoiseAdjustGadget</classname></gadget>
  <external>
    <execute name="gadgets.passnet_gadget" target="reconstruct" type="python"/>
    <configuration>
      <property><name>output</name><value>complex</value></property>
      <property name="scale" value="2.5"/>
      <property name="method" value="lplus_s"/>
      <property name="frame_dimension" value="repetition"/>
      <property name="max_lines_per_slice" value="1000"/>
      <property name="image_series_index" value="7"/>
    </configuration>
  </external>
</stream></configuration>"""


def _chains() -> dict[str, str]:
    shipped = {
        name: config_path(name).read_text() for name in ("passnet_raw.xml", "passnet_buffered.xml")
    }
    return {**shipped, "custom": CUSTOM}


def via_gadget(xml: str, monkeypatch) -> ChainParams:
    """What the external gadget builds: Gadgetron hands it only the step's <configuration>."""
    step = ET.fromstring(xml).find("stream/external/configuration")
    wire = ET.fromstring(ET.tostring(step))  # the bytes Gadgetron sends, parsed as gadgetron does
    seen: list[ChainParams] = []

    def fake_run_chain(header, items, send, params, **_):
        seen.append(params)
        return chain_module.ChainReport()

    class Connection:
        config, header = wire, None
        socket = type("S", (), {"close": lambda self: None})()

        def send(self, item):  # pragma: no cover - nothing is sent
            raise AssertionError(item)

    monkeypatch.setattr(chain_module, "run_chain", fake_run_chain)
    monkeypatch.setattr(gadgetron_adapter, "harden_connection", lambda connection, timeout: None)
    passnet_gadget.reconstruct(Connection())
    assert len(seen) == 1
    return seen[0]


def via_server(xml: str, cine_stream, monkeypatch) -> ChainParams:
    """What ``passnet serve`` builds from the same chain sent as a config script."""
    seen: list[ChainParams] = []

    def fake_run_chain(header, items, send, params, **_):
        list(items)
        seen.append(params)
        return chain_module.ChainReport()

    monkeypatch.setattr("gadgets.server.run_chain", fake_run_chain)
    with PassnetServer(ServerSettings(port=0, allow_fallback=True, timeout=5.0)) as server:
        client_session(server.address, cine_stream.header_xml, [], config_script=xml)
    assert len(seen) == 1
    return seen[0]


def via_replay(xml: str, tmp_path) -> ChainParams:
    """What ``passnet recon --config FILE`` builds."""
    path = tmp_path / "chain.xml"
    path.write_text(xml)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return params_from_args(parser.parse_args(["in.h5", "--out", "o.h5", "--config", str(path)]))


@pytest.mark.parametrize("name", sorted(_chains()))
def test_one_chain_gives_equal_params_through_gadget_server_and_replay(
    name, cine_stream, monkeypatch, tmp_path
):
    xml = _chains()[name]
    gadget = via_gadget(xml, monkeypatch)
    assert via_server(xml, cine_stream, monkeypatch) == gadget
    assert via_replay(xml, tmp_path) == gadget
    if name == "custom":
        assert (gadget.output, gadget.scale, gadget.method) == ("complex", 2.5, "lplus_s")
        assert (gadget.frame_dimension, gadget.max_lines_per_slice) == ("repetition", 1000)


def test_properties_are_a_nodes_own_in_both_forms():
    node = ET.fromstring(
        '<gadget><property name="a" value="1"/><property><name>b</name><value> 2 </value>'
        '</property><nested><property name="c" value="3"/></nested></gadget>'
    )
    assert properties(node) == {"a": "1", "b": "2"}


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"scale": "abc"}, "cannot read 'abc' as a number"),
        ({"method": "magic"}, "method must be one of"),
        ({"bart_maps": "sense"}, "bart_maps must be one of"),
        ({"bart_lambda": "0"}, "bart_lambda must be positive"),
        ({"colour": "red"}, "unknown chain parameter 'colour'"),
        ("<configuration><stream><gadget><classname>FFTGadget</classname></gadget>"
         "</stream></configuration>", "native gadget 'FFTGadget'"),
        ("<gadgetronStreamConfiguration><gadget><classname>FFTGadget</classname></gadget>"
         "</gadgetronStreamConfiguration>", "expected a Gadgetron 4 <configuration>"),
        ("<configuration><version>2</version></configuration>", "with a <stream>"),
    ],
)  # fmt: skip
def test_bad_values_are_refused_with_the_reason(config, message):
    with pytest.raises(ValueError, match=message):
        ChainParams.from_config(config)


def test_override_ignores_unset_options_and_revalidates():
    params = ChainParams().override(device="cpu", weights=None)
    assert params.device == "cpu" and params.weights is None
    with pytest.raises(ValueError, match="output must be one of"):
        params.override(output="phase")
    assert issubclass(UnsupportedChainError, ValueError)


def test_bart_weight_defaults_to_what_the_bench_tunes_for_the_map_source():
    from gadgets.chain_config import DEFAULT_BART_LAMBDA

    # ecalib maps keep more background than the chain's and want a larger weight
    assert DEFAULT_BART_LAMBDA["ecalib"] > DEFAULT_BART_LAMBDA["chain"]
    for maps in ("ecalib", "chain"):
        for text in ("", "auto", "none"):
            params = ChainParams.from_config({"bart_maps": maps, "bart_lambda": text})
            assert params.bart_lambda is None
            assert params.bart_weight() == DEFAULT_BART_LAMBDA[maps]
        chosen = ChainParams.from_config({"bart_maps": maps, "bart_lambda": "0.0125"})
        assert chosen.bart_weight() == 0.0125  # a user's own lambda wins over the default
