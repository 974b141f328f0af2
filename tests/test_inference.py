"""Tests for passnet_core.inference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from passnet_core import inference
from passnet_core.fft import fft2c
from passnet_core.inference import reconstruct, resolve_device, validate_inputs
from passnet_core.model import PASSNet, PASSNetConfig
from passnet_core.weights import save_weights


@pytest.fixture(scope="module")
def model() -> PASSNet:
    torch.manual_seed(0)
    return PASSNet(PASSNetConfig(n_stages=2, channels=4)).eval()


def _data(b=2, t=4, h=12, w=10, coils=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(b, t, h, w, dtype=torch.complex64, generator=g)
    mask = (torch.rand(t, h, w, generator=g) < 0.5).float()
    if coils is None:
        return fft2c(image) * mask, mask, None
    maps = torch.randn(b, coils, h, w, dtype=torch.complex64, generator=g)
    maps = maps / maps.abs().pow(2).sum(1, keepdim=True).sqrt()
    return fft2c(maps.unsqueeze(2) * image.unsqueeze(1)) * mask, mask, maps


def test_output_shape_dtype_device_single_and_multicoil(model):
    for coils in (None, 3):
        kspace, mask, maps = _data(coils=coils)
        out = reconstruct(kspace, mask, maps, model=model, device="cpu")
        assert out.shape == (2, 4, 12, 10)
        assert out.dtype == torch.complex64
        assert out.device.type == "cpu"
        assert torch.isfinite(torch.view_as_real(out)).all()


def test_normalisation_makes_reconstruction_scale_equivariant(model):
    kspace, mask, _ = _data()
    a = reconstruct(kspace, mask, model=model, device="cpu")
    b = reconstruct(kspace * 1000.0, mask, model=model, device="cpu")
    torch.testing.assert_close(b, a * 1000.0, rtol=1e-4, atol=1e-4 * b.abs().max().item())
    # and it matches a manual run of the network on the normalised data
    from passnet_core.operators import EncodingOp

    s = EncodingOp(mask).adjoint(kspace[:1]).abs().max()
    with torch.no_grad():
        manual = model(kspace[:1] / s, mask) * s
    torch.testing.assert_close(a[:1], manual, rtol=1e-4, atol=1e-4 * manual.abs().max().item())


def test_zero_data_gives_zeros(model):
    kspace = torch.zeros(1, 3, 8, 8, dtype=torch.complex64)
    out = reconstruct(kspace, torch.ones(3, 8, 8), model=model, device="cpu")
    assert torch.equal(out, torch.zeros_like(out))


def test_slices_are_reconstructed_independently(model):
    kspace, mask, maps = _data(b=3, coils=2)
    batch = reconstruct(kspace, mask, maps, model=model, device="cpu")
    alone = reconstruct(kspace[1:2], mask, maps[1:2], model=model, device="cpu")
    torch.testing.assert_close(batch[1:2], alone, rtol=1e-5, atol=1e-5)


def test_numpy_inputs_and_batched_mask(model):
    kspace, mask, _ = _data()
    out_np = reconstruct(kspace.numpy(), mask.numpy(), model=model, device="cpu")
    out_b = reconstruct(kspace, mask.expand(2, -1, -1, -1), model=model, device="cpu")
    out = reconstruct(kspace, mask, model=model, device="cpu")
    torch.testing.assert_close(out_np, out)
    torch.testing.assert_close(out_b, out)


def test_default_model_is_loaded_and_cached(tmp_path, monkeypatch, model):
    path = save_weights(model, tmp_path / "default.safetensors")
    monkeypatch.setattr(inference, "default_weights_path", lambda: path)
    monkeypatch.setattr(inference, "_MODEL_CACHE", {})
    kspace, mask, _ = _data(b=1)
    out = reconstruct(kspace, mask, device="cpu")
    torch.testing.assert_close(out, reconstruct(kspace, mask, model=model, device="cpu"))
    first = inference.cached_model(None, "cpu")
    assert inference.cached_model(path, "cpu") is first
    assert len(inference._MODEL_CACHE) == 1


def test_resolve_device():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(ValueError):
        resolve_device("tpu-9000")


def _bad_cases():
    kspace, mask, _ = _data(b=1, t=2, h=6, w=6)
    mk, _, maps = _data(b=1, t=2, h=6, w=6, coils=2)
    nan_k = kspace.clone()
    nan_k[0, 0, 0, 0] = float("nan")
    return {
        "real kspace": ((kspace.real, mask, None), "complex"),
        "3-d kspace": ((kspace[0], mask, None), r"\(B, T, H, W\)"),
        "multicoil without maps": ((mk, mask, None), "coil_maps"),
        "maps with single-coil": ((kspace, mask, maps), "multi-coil"),
        "mask wrong frames": ((kspace, mask[:1], None), "broadcast"),
        "mask wrong batch": ((kspace, mask.expand(3, -1, -1, -1), None), "batch"),
        "complex mask": ((kspace, mask.to(torch.complex64), None), "real"),
        "non-binary mask": ((kspace, mask * 0.5 + 0.25, None), "0 or 1"),
        "empty mask": ((kspace, torch.zeros_like(mask), None), "empty"),
        "nan kspace": ((nan_k, mask, None), "NaN"),
        "maps wrong shape": ((mk, mask, maps[:, :1]), "coil_maps"),
        "real maps": ((mk, mask, maps.real), "coil_maps"),
        "list input": ((kspace.tolist(), mask, None), "numpy"),
        "empty axis": ((kspace[:, :0], mask[:0], None), "empty"),
    }


@pytest.mark.parametrize("case", list(_bad_cases()))
def test_validation_errors(case):
    args, message = _bad_cases()[case]
    with pytest.raises(ValueError, match=message):
        validate_inputs(*args)


def test_reconstruct_validates_before_loading_a_model(monkeypatch):
    def boom(*_args, **_kwargs):
        raise AssertionError("model loaded before validation")

    monkeypatch.setattr(inference, "cached_model", boom)
    kspace, mask, _ = _data(b=1)
    with pytest.raises(ValueError, match="complex"):
        reconstruct(kspace.real, mask)


def test_numpy_complex128_is_accepted(model):
    kspace, mask, _ = _data(b=1)
    out = reconstruct(kspace.numpy().astype(np.complex128), mask.numpy(), model=model, device="cpu")
    assert out.dtype == torch.complex64
