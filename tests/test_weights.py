"""Tests for weights I/O (passnet_core.weights)."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from safetensors.torch import save_file

from passnet_core.model import PASSNet, PASSNetConfig
from passnet_core.weights import (
    FORMAT_VERSION,
    METADATA_KEY,
    WeightsError,
    default_weights_path,
    load_weights,
    read_metadata,
    save_weights,
)

TINY = PASSNetConfig(n_stages=2, channels=4, shrinkage="pass", fusion="lsaf")


def _model(config=TINY, seed=0) -> PASSNet:
    torch.manual_seed(seed)
    return PASSNet(config)


def _meta(config=TINY, **overrides) -> dict:
    meta = {
        "format_version": FORMAT_VERSION,
        "config": config.to_dict(),
        "normalisation": "max_abs_zero_filled",
        "package_version": "0.1.0",
        "training": {},
    }
    meta.update(overrides)
    return meta


def test_roundtrip_preserves_tensors_config_and_meta(tmp_path):
    model = _model()
    path = save_weights(model, tmp_path / "sub" / "w.safetensors", extra_meta={"epochs": 3})
    loaded = load_weights(path)
    assert not loaded.training
    assert loaded.config == model.config
    for (name, a), (_, b) in zip(
        model.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    meta = read_metadata(path)
    assert meta["format_version"] == FORMAT_VERSION
    assert meta["normalisation"] == "max_abs_zero_filled"
    assert meta["training"] == {"epochs": 3}
    assert PASSNetConfig.from_dict(meta["config"]) == TINY


def test_missing_file(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        load_weights(tmp_path / "nope.safetensors")


def test_not_a_safetensors_file(tmp_path):
    path = tmp_path / "junk.safetensors"
    path.write_bytes(b"this is not a weights file at all")
    with pytest.raises(WeightsError, match="safetensors"):
        load_weights(path)
    assert issubclass(WeightsError, ValueError)


def test_safetensors_without_passnet_metadata(tmp_path):
    path = tmp_path / "plain.safetensors"
    save_file({"a": torch.zeros(2)}, str(path))
    with pytest.raises(WeightsError, match="metadata"):
        load_weights(path)


def _write(path, state, meta):
    save_file(state, str(path), metadata={METADATA_KEY: json.dumps(meta)})
    return path


def test_missing_extra_and_mismatched_tensors(tmp_path):
    state = {k: v.clone() for k, v in _model().state_dict().items()}
    first = next(iter(state))
    missing = dict(state)
    del missing[first]
    with pytest.raises(WeightsError, match="missing"):
        load_weights(_write(tmp_path / "m.safetensors", missing, _meta()))
    extra = dict(state, bogus=torch.zeros(3))
    with pytest.raises(WeightsError, match="unexpected"):
        load_weights(_write(tmp_path / "e.safetensors", extra, _meta()))
    bad_shape = dict(state)
    bad_shape[first] = torch.zeros(7)
    with pytest.raises(WeightsError, match="shape"):
        load_weights(_write(tmp_path / "s.safetensors", bad_shape, _meta()))
    # tensors of a 2-stage model with a 3-stage config
    three = PASSNetConfig(n_stages=3, channels=4)
    with pytest.raises(WeightsError, match="missing"):
        load_weights(_write(tmp_path / "c.safetensors", state, _meta(config=three)))


def test_unknown_format_version_and_bad_config(tmp_path):
    state = _model().state_dict()
    with pytest.raises(WeightsError, match="format version"):
        load_weights(_write(tmp_path / "v.safetensors", state, _meta(format_version=99)))
    bad = _meta()
    bad["config"] = dict(bad["config"], shrinkage="hard")
    with pytest.raises(WeightsError, match="configuration"):
        load_weights(_write(tmp_path / "b.safetensors", state, bad))
    with pytest.raises(WeightsError, match="normalisation"):
        load_weights(_write(tmp_path / "n.safetensors", state, _meta(normalisation="std")))


def test_safe_pt_file_loads(tmp_path):
    model = _model()
    path = tmp_path / "w.pt"
    torch.save({"meta": _meta(), "state_dict": model.state_dict()}, path)
    loaded = load_weights(path)
    assert loaded.config == TINY
    first = next(iter(model.state_dict()))
    assert torch.equal(loaded.state_dict()[first], model.state_dict()[first])


class _Payload:
    """Unpickling this object opens (creates) the marker file: a stand-in for malicious code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("writer", ["torch_save", "raw_pickle"])
def test_pickle_with_code_payload_is_refused(tmp_path, writer):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    payload = {"meta": _meta(), "state_dict": {}, "x": _Payload(marker)}
    if writer == "torch_save":
        torch.save(payload, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(payload, f)
    with pytest.raises(WeightsError, match="refused"):
        load_weights(path)
    assert not marker.exists()
    # sanity: the crafted file really would run code under an unsafe load
    if writer == "raw_pickle":
        with open(path, "rb") as f:
            obj = pickle.load(f)  # deliberate: proves the payload is live
        obj["x"].close()
        assert marker.exists()


def test_default_weights_path_location():
    path = default_weights_path()
    assert path.name == "default.safetensors"
    assert path.parent.name == "weights"
    assert path.parent.parent.name == "passnet_core"
    if path.exists():  # shipped later by the training engineer
        assert isinstance(load_weights(path), PASSNet)


def test_load_to_device_and_eval_output_matches(tmp_path):
    model = _model().eval()
    path = save_weights(model, tmp_path / "w.safetensors")
    loaded = load_weights(path, map_location="cpu")
    k = torch.randn(1, 2, 8, 8, dtype=torch.complex64)
    mask = torch.ones(2, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(loaded(k, mask), model(k, mask))


def test_save_rejects_non_json_meta(tmp_path):
    with pytest.raises(ValueError, match="JSON"):
        save_weights(_model(), tmp_path / "w.safetensors", extra_meta={"f": object()})


def test_saved_weights_follow_the_umask_not_owner_only(tmp_path):
    import os

    from passnet_core.model import PASSNet
    from passnet_core.weights import save_weights

    old = os.umask(0o022)
    try:
        path = save_weights(PASSNet(TINY), tmp_path / "w.safetensors")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("version", [1, 2])
def test_files_before_format_3_keep_their_relu_step(tmp_path, version):
    """A format-1/2 file has no ``step_param``: its ``mu`` was read through relu, and still is."""
    state = {
        k: v.clone() for k, v in _model(PASSNetConfig(n_stages=2, channels=4)).state_dict().items()
    }
    state["stages.0.mu"] = torch.tensor(-0.01)  # switched off, as in the format-2 LLR weights
    state["stages.1.mu"] = torch.tensor(0.7)
    config = PASSNetConfig(n_stages=2, channels=4).to_dict()
    del config["step_param"]
    if version == 1:
        for key in ("start", "start_iterations", "zero_init_residual"):
            del config[key]
    path = _write(
        tmp_path / "old.safetensors", state, _meta(format_version=version) | {"config": config}
    )
    loaded = load_weights(path)
    assert loaded.config.step_param == "relu"
    steps = [float(stage.step_size()) for stage in loaded.stages]
    assert steps == pytest.approx([0.0, 0.7])
    # the same tensors in a format-3 file without the key mean the new default (softplus)
    new = _write(tmp_path / "new.safetensors", state, _meta() | {"config": config})
    assert load_weights(new).config.step_param == "softplus"
    assert float(load_weights(new).stages[0].step_size()) > 0


def test_shipped_weights_load_with_the_step_they_were_trained_with():
    meta = read_metadata(default_weights_path())
    loaded = load_weights(default_weights_path())
    expected = meta["config"].get("step_param", "relu" if meta["format_version"] < 3 else None)
    assert loaded.config.step_param == expected
