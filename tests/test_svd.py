"""Tests for the regularised SVD backward (passnet_core.svd)."""

from __future__ import annotations

import pytest
import torch

from passnet_core.model import PASS, UniformSVT
from passnet_core.svd import stable_svd


def _rebuild(x: torch.Tensor, eps_rel: float = 0.0) -> torch.Tensor:
    """A phase-invariant function of the SVD: U tanh(S) V^H."""
    u, s, vh = stable_svd(x, eps_rel)
    return (u * torch.tanh(s).unsqueeze(-2).to(u.dtype)) @ vh


def _pass_block_loss(x: torch.Tensor, svd, block: torch.nn.Module) -> torch.Tensor:
    """Loss through the low-rank shrinkage path used by PASSNet: SVD -> shrink -> rebuild."""
    u, s, vh = svd(x)
    s_new = block(s.to(torch.float32)).to(s.dtype)
    rebuilt = (u * s_new.unsqueeze(-2).to(u.dtype)) @ vh
    target = torch.ones_like(rebuilt)
    return (rebuilt - target).abs().pow(2).sum() + (u.abs() ** 4).sum()


@pytest.mark.parametrize(
    ("shape", "dtype"),
    [
        ((2, 5, 4), torch.complex128),
        ((2, 4, 6), torch.complex128),
        ((2, 5, 5), torch.complex128),
        ((2, 5, 3), torch.float64),
    ],
)
def test_gradcheck_well_conditioned(shape, dtype):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, dtype=dtype, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(_rebuild, (x,))


def test_gradcheck_singular_values_only():
    x = torch.randn(3, 4, 5, dtype=torch.complex128, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: stable_svd(a, 0.0)[1].pow(2).sum(), (x,))


def test_matches_torch_gradient_including_gauge_term():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 6, 5, dtype=torch.complex128, generator=g, requires_grad=True)
    w = torch.randn(3, 6, 5, dtype=torch.complex128, generator=g)

    def loss(svd):
        u, s, vh = svd(x)
        rebuilt = (u * (s**2).unsqueeze(-2).to(u.dtype)) @ vh
        return (rebuilt * w.conj()).real.sum() + (u.abs() ** 4).sum() + (vh.abs() ** 4).sum()

    ours = torch.autograd.grad(loss(lambda a: stable_svd(a, 0.0)), x)[0]
    ref = torch.autograd.grad(loss(lambda a: torch.linalg.svd(a, full_matrices=False)), x)[0]
    torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-9)


def test_default_regularisation_is_small_on_separated_spectra():
    """Gaps >= 0.1 sigma_1^2: the default eps_rel changes the gradient by ~(1e-3/0.1)^2."""
    g = torch.Generator().manual_seed(3)
    q1, _ = torch.linalg.qr(torch.randn(2, 6, 5, dtype=torch.complex128, generator=g))
    q2, _ = torch.linalg.qr(torch.randn(2, 5, 5, dtype=torch.complex128, generator=g))
    s = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0], dtype=torch.complex128)
    x = ((q1 * s) @ q2.mH).requires_grad_(True)
    w = torch.randn(2, 6, 5, dtype=torch.complex128, generator=g)

    def grad(svd):
        u, s, vh = svd(x)
        rebuilt = (u * torch.relu(s - 1.5).unsqueeze(-2).to(u.dtype)) @ vh
        return torch.autograd.grad((rebuilt * w.conj()).real.sum(), x)[0]

    ref = grad(lambda a: torch.linalg.svd(a, full_matrices=False))
    torch.testing.assert_close(grad(stable_svd), ref, rtol=1e-3, atol=1e-3 * ref.abs().max())


def _degenerate_inputs() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    a = torch.randn(8, 1, dtype=torch.complex128, generator=g)
    b = torch.randn(1, 6, dtype=torch.complex128, generator=g)
    q, _ = torch.linalg.qr(torch.randn(6, 6, dtype=torch.complex128, generator=g))
    nearly = q @ torch.diag(torch.tensor([1.0, 1.0 + 1e-12, 0.5, 0.5, 1e-13, 0.0])).to(q.dtype)
    close = q @ torch.diag(torch.tensor([1.0, 0.95, 0.6, 0.55, 0.2, 0.15])).to(q.dtype)
    return {
        "close": close @ q.mH,
        "identity": torch.eye(6, dtype=torch.complex128),
        "rank1": a @ b,
        "zero": torch.zeros(5, 7, dtype=torch.complex128),
        "nearly_repeated": nearly @ q.mH,
    }


@pytest.mark.parametrize("name", list(_degenerate_inputs()))
@pytest.mark.parametrize("block_cls", [PASS, UniformSVT])
def test_gradients_finite_on_repeated_singular_values(name, block_cls):
    torch.manual_seed(0)
    x = _degenerate_inputs()[name].unsqueeze(0).repeat(2, 1, 1).unsqueeze(0)  # (1, T=2, M, N)
    x.requires_grad_(True)
    block = block_cls()
    loss = _pass_block_loss(x, stable_svd, block)
    (grad,) = torch.autograd.grad(loss, x)
    assert torch.isfinite(grad).all(), name
    # where torch's own backward is finite, ours must agree with it up to the regulariser
    x_ref = x.detach().clone().requires_grad_(True)
    loss_ref = _pass_block_loss(x_ref, lambda a: torch.linalg.svd(a, full_matrices=False), block)
    (grad_ref,) = torch.autograd.grad(loss_ref, x_ref)
    if name == "close":
        assert torch.isfinite(grad_ref).all()
    if torch.isfinite(grad_ref).all() and grad_ref.abs().max() < 1e6:
        torch.testing.assert_close(grad, grad_ref, rtol=1e-3, atol=1e-3 * grad_ref.abs().max())


def test_torch_svd_gradient_is_not_finite_on_identity():
    """Documents why stable_svd exists: the reference backward fails on repeated values."""
    x = torch.eye(4, dtype=torch.complex128).unsqueeze(0).requires_grad_(True)
    u, s, vh = torch.linalg.svd(x, full_matrices=False)
    (grad,) = torch.autograd.grad((u.abs() ** 4).sum() + s.sum(), x)
    assert not torch.isfinite(grad).all()
    u, s, vh = stable_svd(x)
    (grad,) = torch.autograd.grad((u.abs() ** 4).sum() + s.sum(), x)
    assert torch.isfinite(grad).all()


def test_forward_matches_linalg_svd_and_rejects_vectors():
    x = torch.randn(2, 3, 7, 5, dtype=torch.complex64)
    u, s, vh = stable_svd(x)
    torch.testing.assert_close(s, torch.linalg.svdvals(x))
    torch.testing.assert_close((u * s.unsqueeze(-2).to(u.dtype)) @ vh, x, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="matrices"):
        stable_svd(torch.randn(5))
    with pytest.raises(ValueError, match="eps_rel"):
        stable_svd(x, eps_rel=-1.0)
