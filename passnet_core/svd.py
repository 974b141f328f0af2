"""Batched SVD whose backward stays finite when singular values repeat.

``torch.linalg.svd``'s backward contains ``1 / (s_j^2 - s_i^2)`` and ``1 / s_i``; both blow up
on (nearly) repeated or zero singular values, which are common in the low-rank branch of
PASSNet (e.g. an all-zero frame, or a rank-1 latent image). :func:`stable_svd` uses the same
forward but a regularised backward:

* ``1 / E`` with ``E_ij = s_j^2 - s_i^2`` becomes ``E / (E^2 + eps_E)``, with
  ``eps_E = (eps_rel * s_1^2)^2 + tiny`` per matrix. The factor is bounded by
  ``1 / (2 eps_rel s_1^2)`` and equals ``1 / E`` to relative accuracy ``(eps_rel s_1^2 / E)^2``
  when the gap is large compared with ``eps_rel * s_1^2``.
* ``1 / s`` becomes ``s / (s^2 + eps_s)`` with ``eps_s = (eps_rel * s_1)^2 + tiny``.

``tiny`` (the dtype's smallest normal number) keeps the all-zero matrix finite (its gradient
is then ``U diag(g_S) V^H``). Tying ``eps`` to ``s_1`` makes the regularisation
scale-invariant. The complex gauge term (the imaginary diagonal of ``U^H dL/dU``) is kept, so
the gradient of any phase-invariant function of the SVD (such as ``U f(S) V^H``) is right.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.autograd.function import once_differentiable

DEFAULT_EPS_REL = 1e-3


def _skew(x: torch.Tensor) -> torch.Tensor:
    return x - x.mH


class _StableSVD(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, eps_rel: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        u, s, vh = torch.linalg.svd(x, full_matrices=False)
        ctx.save_for_backward(u, s, vh)
        ctx.eps_rel = eps_rel
        ctx.shape = x.shape
        return u, s, vh

    @staticmethod
    @once_differentiable
    def backward(
        ctx: Any, g_u: torch.Tensor | None, g_s: torch.Tensor | None, g_vh: torch.Tensor | None
    ) -> tuple[torch.Tensor, None]:
        u, s, vh = ctx.saved_tensors
        return _svd_backward(u, s, vh, g_u, g_s, g_vh, ctx.eps_rel, ctx.shape), None


def _svd_backward(
    u: torch.Tensor,
    s: torch.Tensor,
    vh: torch.Tensor,
    g_u: torch.Tensor | None,
    g_s: torch.Tensor | None,
    g_vh: torch.Tensor | None,
    eps_rel: float,
    shape: torch.Size,
) -> torch.Tensor:
    """Gradient w.r.t. ``A = U diag(s) V^H`` (thin SVD), regularised as in the module docstring."""
    m, n = shape[-2], shape[-1]
    v = vh.mH
    tiny = torch.finfo(s.dtype).tiny
    s1 = s[..., :1]  # singular values come sorted, largest first
    eps_s = (eps_rel * s1) ** 2 + tiny
    s_inv = s / (s * s + eps_s)  # guarded 1/s

    if g_u is None and g_vh is None:
        if g_s is None:
            return torch.zeros(shape, dtype=u.dtype, device=u.device)
        return (u * g_s.unsqueeze(-2).to(u.dtype)) @ vh

    s2 = s * s
    gap = s2.unsqueeze(-2) - s2.unsqueeze(-1)  # gap[i, j] = s_j^2 - s_i^2 (zero on the diagonal)
    eps_e = (eps_rel * s1.unsqueeze(-1) ** 2) ** 2 + tiny
    inv_gap = gap / (gap * gap + eps_e)  # regularised 1/gap; exactly 0 on the diagonal

    core = torch.zeros(u.shape[:-2] + (s.shape[-1], s.shape[-1]), dtype=u.dtype, device=u.device)
    uh_gu = None
    if g_u is not None:
        uh_gu = u.mH @ g_u
        core = core + _skew(uh_gu) * s.unsqueeze(-2).to(u.dtype)
    g_v = g_vh.mH if g_vh is not None else None
    if g_v is not None:
        vh_gv = vh @ g_v
        core = core + s.unsqueeze(-1).to(u.dtype) * _skew(vh_gv)
    core = core * inv_gap.to(u.dtype)

    diag = torch.zeros_like(s) if g_s is None else g_s
    diag = diag.to(u.dtype)
    if uh_gu is not None and u.is_complex():
        # Gauge term: a phase rotation of (u_i, v_i) leaves A unchanged; its share of the
        # gradient sits in the imaginary diagonal of U^H g_U.
        diag = diag + 1j * uh_gu.diagonal(dim1=-2, dim2=-1).imag * s_inv
    core = core + torch.diag_embed(diag)
    grad = u @ core @ vh

    if g_u is not None and uh_gu is not None and m > s.shape[-1]:
        # component of g_U outside span(U)
        grad = grad + ((g_u - u @ uh_gu) * s_inv.unsqueeze(-2).to(u.dtype)) @ vh
    if g_v is not None and n > s.shape[-1]:
        grad = grad + u @ ((g_v - v @ vh_gv) * s_inv.unsqueeze(-2).to(u.dtype)).mH
    return grad


def stable_svd(
    x: torch.Tensor, eps_rel: float = DEFAULT_EPS_REL
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD of a batch of matrices with a regularised, always-finite backward.

    Parameters
    ----------
    x
        Real or complex tensor ``(..., M, N)``.
    eps_rel
        Relative regularisation of the backward (see the module docstring). ``0`` gives the
        exact backward wherever it is finite (only the ``tiny`` floor remains).

    Returns
    -------
    U, S, Vh
        As ``torch.linalg.svd(x, full_matrices=False)``: ``U`` ``(..., M, K)``, real ``S``
        ``(..., K)`` in descending order, ``Vh`` ``(..., K, N)``, ``K = min(M, N)``.
    """
    if x.ndim < 2:
        raise ValueError(f"stable_svd expects (..., M, N) matrices, got shape {tuple(x.shape)}")
    if eps_rel < 0:
        raise ValueError(f"eps_rel must be >= 0, got {eps_rel}")
    return _StableSVD.apply(x, float(eps_rel))
