"""Operators and FFT: adjointness, autograd consistency, unitarity, input checks."""

from __future__ import annotations

import pytest
import torch
from helpers import assert_adjoint, random_complex

from passnet_core.fft import fft2c, ifft2c
from passnet_core.operators import CoilOp, EncodingOp, FourierOp, SamplingOp

B, C, T, H, W = 2, 3, 4, 10, 12


def _mask(batched: bool = False) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    shape = (B, T, H, W) if batched else (T, H, W)
    return (torch.rand(*shape, generator=g) < 0.4).float()


def _maps() -> torch.Tensor:
    return random_complex((B, C, H, W), seed=2)


def _operators():
    """(name, operator, x_shape, y_shape) for every operator configuration."""
    return [
        ("fourier", FourierOp(), (B, T, H, W), (B, T, H, W)),
        ("sampling", SamplingOp(_mask()), (B, T, H, W), (B, T, H, W)),
        ("sampling_batched", SamplingOp(_mask(True)), (B, T, H, W), (B, T, H, W)),
        ("sampling_coil", SamplingOp(_mask(), coil_axis=True), (B, C, T, H, W), (B, C, T, H, W)),
        ("coil", CoilOp(_maps()), (B, T, H, W), (B, C, T, H, W)),
        ("encoding_single", EncodingOp(_mask()), (B, T, H, W), (B, T, H, W)),
        ("encoding_multi", EncodingOp(_mask(), _maps()), (B, T, H, W), (B, C, T, H, W)),
        ("encoding_multi_bmask", EncodingOp(_mask(True), _maps()), (B, T, H, W), (B, C, T, H, W)),
    ]


@pytest.mark.parametrize("name,op,x_shape,y_shape", _operators(), ids=[o[0] for o in _operators()])
def test_dot_product_adjointness(name, op, x_shape, y_shape):
    assert_adjoint(op, x_shape, y_shape, tol=1e-5)
    # complex64 too: the dtype the pipeline actually runs in
    assert_adjoint(op, x_shape, y_shape, tol=1e-5, dtype=torch.complex64)


@pytest.mark.parametrize("name,op,x_shape,y_shape", _operators(), ids=[o[0] for o in _operators()])
def test_vjp_equals_adjoint(name, op, x_shape, y_shape):
    # For a C-linear map y = A x, PyTorch's vector-Jacobian product with cotangent v is
    # A^H v (it returns the conjugate Wirtinger gradient), so autograd must agree with adjoint.
    x = random_complex(x_shape, seed=3, dtype=torch.complex128).requires_grad_(True)
    v = random_complex(y_shape, seed=4, dtype=torch.complex128)
    (grad,) = torch.autograd.grad(op.forward(x), x, grad_outputs=v)
    expected = op.adjoint(v)
    torch.testing.assert_close(grad, expected, rtol=1e-10, atol=1e-10)


def test_adjointness_detects_a_wrong_adjoint():
    class BrokenOp(FourierOp):
        def _adjoint(self, y):
            return fft2c(y)  # the forward, not the inverse

    from passnet_core.operators import adjointness_error

    assert adjointness_error(BrokenOp(), (1, 1, 8, 8), (1, 1, 8, 8)) > 1e-2


def test_fft2c_is_unitary_and_inverted_by_ifft2c():
    x = random_complex((2, 3, 16, 20), seed=5, dtype=torch.complex128)
    k = fft2c(x)
    torch.testing.assert_close(k.norm(), x.norm(), rtol=1e-12, atol=0)
    torch.testing.assert_close(ifft2c(k), x, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("h,w", [(16, 16), (15, 17), (8, 13)])
def test_fft2c_puts_dc_at_the_centre(h, w):
    # a constant image has all its energy at DC, which must land on (H//2, W//2)
    k = fft2c(torch.ones(h, w, dtype=torch.complex64))
    peak = int(k.abs().flatten().argmax())
    assert divmod(peak, w) == (h // 2, w // 2)
    assert k[h // 2, w // 2].real == pytest.approx((h * w) ** 0.5, rel=1e-5)
    # and a delta at the image centre has flat k-space with zero phase
    d = torch.zeros(h, w, dtype=torch.complex64)
    d[h // 2, w // 2] = 1
    torch.testing.assert_close(
        fft2c(d), torch.full((h, w), (h * w) ** -0.5 + 0j), atol=1e-6, rtol=0
    )


def test_real_input_raises():
    with pytest.raises(ValueError, match="complex"):
        FourierOp().forward(torch.ones(1, 1, 4, 4))
    with pytest.raises(ValueError, match="complex"):
        EncodingOp(_mask()).adjoint(torch.ones(B, T, H, W))


def test_wrong_spatial_shape_raises():
    with pytest.raises(ValueError, match="trailing shape"):
        SamplingOp(_mask()).forward(random_complex((B, T, H + 1, W)))
    with pytest.raises(ValueError, match="trailing shape"):
        EncodingOp(_mask(), _maps()).forward(random_complex((B, T, H, W - 1)))


def test_bad_mask_and_maps_raise():
    with pytest.raises(ValueError, match="real"):
        SamplingOp(_mask().to(torch.complex64))
    with pytest.raises(ValueError, match="mask must be"):
        SamplingOp(torch.ones(H, W))
    with pytest.raises(ValueError, match="coil maps"):
        CoilOp(torch.ones(B, C, H, W))
    with pytest.raises(ValueError, match="coil maps"):
        CoilOp(random_complex((C, H, W)))
    with pytest.raises(ValueError, match="disagree"):
        EncodingOp(_mask(), random_complex((B, C, H, W + 2)))


@pytest.mark.parametrize("shape", [(8, 6), (6, 10), (7, 8), (8, 9), (5, 5), (2, 2)])
def test_centred_fft_matches_the_shift_definition_for_even_and_odd_sizes(shape):
    """The modulation shortcut for even sizes must equal fftshift(fft2(ifftshift(x)))."""
    x = torch.randn(3, *shape, dtype=torch.complex128)
    dims = (-2, -1)
    for fast, transform in ((fft2c, torch.fft.fft2), (ifft2c, torch.fft.ifft2)):
        shifted = torch.fft.ifftshift(x, dim=dims)
        expected = torch.fft.fftshift(transform(shifted, dim=dims, norm="ortho"), dim=dims)
        torch.testing.assert_close(fast(x), expected, rtol=0, atol=1e-12)


def test_fft_used_in_inference_mode_still_supports_autograd_afterwards():
    # Regression: the cached shift boards were once created as inference tensors by a
    # reconstruction and then broke backward in the next training step (same size).
    with torch.inference_mode():
        fft2c(random_complex((2, 6, 10), seed=0))
    x = random_complex((2, 6, 10), seed=1).requires_grad_()
    ifft2c(fft2c(x)).abs().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("h", [10, 9], ids=["even_H", "odd_H"])
@pytest.mark.parametrize("multicoil", [True, False], ids=["multi", "single"])
def test_normal_of_line_sampling_equals_adjoint_of_forward(h, multicoil):
    # Phase-encode lines (the same (T, H) pattern in every readout column) take the 1-D path
    g = torch.Generator().manual_seed(5)
    lines = (torch.rand(B, T, h, 1, generator=g) < 0.4).float().expand(B, T, h, W)
    maps = random_complex((B, C, h, W), seed=6) if multicoil else None
    op = EncodingOp(lines, maps)
    assert op.sampling.lines
    x = random_complex((B, T, h, W), seed=7, dtype=torch.complex128)
    torch.testing.assert_close(op.normal(x), op.adjoint(op.forward(x)), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("hw", [(10, 12), (9, 11)], ids=["even", "odd"])
@pytest.mark.parametrize("multicoil", [True, False], ids=["multi", "single"])
def test_normal_of_scattered_sampling_equals_adjoint_of_forward(hw, multicoil):
    # Any other mask takes the uncentred 2-D path: its ifftshifted mask must stand for the
    # centring of fft2c / ifft2c at odd sizes (rolls) as well as even ones (checkerboards)
    h, w = hw
    g = torch.Generator().manual_seed(8)
    mask = (torch.rand(B, T, h, w, generator=g) < 0.3).float()
    maps = random_complex((B, C, h, w), seed=9) if multicoil else None
    op = EncodingOp(mask, maps)
    assert not op.sampling.lines
    x = random_complex((B, T, h, w), seed=10, dtype=torch.complex128)
    torch.testing.assert_close(op.normal(x), op.adjoint(op.forward(x)), rtol=1e-12, atol=1e-12)


def test_normal_of_scattered_sampling_checks_the_shape():
    with pytest.raises(ValueError, match="trailing shape"):
        EncodingOp(_mask(True), _maps()).normal(random_complex((B, T, H, W + 1), seed=9))


def test_normal_of_line_sampling_checks_the_shape():
    lines = _mask(True)[..., :1].expand(B, T, H, W)
    with pytest.raises(ValueError, match="trailing shape"):
        EncodingOp(lines, _maps()).normal(random_complex((B, T, H, W + 1), seed=9))
