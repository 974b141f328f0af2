"""PASSNet: a deep unfolding low-rank + sparse network with position-aware SVT (PASS).

One stage (paper section 3, docs/method.md) on a complex image ``x`` ``(B, T, H, W)``:

1. gradient step ``x~ = x - g(mu) A^H (A x - d)`` with ``g = softplus`` (``relu`` in
   weights written before format 3, see :attr:`PASSNetConfig.step_param`);
2. low-rank branch ``L = Phi^H(SVT(Phi(x~))) + x~`` with a per-frame SVD of the ``H x W``
   latent image and learned shrinkage (:class:`PASS`, or :class:`UniformSVT` for the ablation);
3. sparse branch ``S = Psi^H(AST(Psi(x~))) + x~`` (:class:`AST`, eq. 16);
4. fusion ``x = W L + (1 - W) S`` with ``W`` from :class:`LSAF` (eq. 17-18) or a fixed 0.5.

Complex images travel through the CNNs as 2 real channels (real, imag) in ``(B, 2, T, H, W)``
for 3x3x3 ``Conv3d``. The encoding operator is built per call from the mask and coil maps, so
the model holds no per-scan data.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
from torch import nn
from torch.nn import functional as F

from passnet_core.baselines import LLR_INITS, llr, lplus_s
from passnet_core.coilmaps import lowres_images, unit_phase
from passnet_core.conv import Conv3d
from passnet_core.fft import fft2c
from passnet_core.operators import EncodingOp, validate_inputs, zero_filled
from passnet_core.svd import DEFAULT_EPS_REL, stable_svd

SHRINKAGES = ("pass", "uniform_svt")
STEP_PARAMS = ("softplus", "relu")
FUSIONS = ("lsaf", "fixed")
STARTS = ("adjoint", "lplus_s", "llr")
# Settings that change what the stages are given, not their parameters: weights trained
# with one may be fine-tuned with another (training.train, run.init_weights)
INPUT_SETTINGS = (
    "start_iterations", "start_lambda", "start_lambda_static", "start_init", "phase_reference",
)  # fmt: skip
PHASE_REFERENCES = ("none", "lowres")
LOWRES_BLOCK = 24  # side of the k-space centre of lowres_phase (the chain maps' calibration block)


@dataclass(frozen=True)
class PASSNetConfig:
    """Architecture hyper-parameters of :class:`PASSNet` (stored with the weights).

    Attributes
    ----------
    n_stages
        Number of unrolled stages (weights not shared).
    channels
        Feature channels of every CNN.
    shrinkage
        ``"pass"`` (position-aware shrinkage) or ``"uniform_svt"`` (eq. 1, ablation).
    fusion
        ``"lsaf"`` (learned per-voxel weight) or ``"fixed"`` (constant ``fixed_fusion_weight``).
    mu_init
        Initial gradient step size (the step itself, whatever ``step_param``). The FFT is
        orthonormal and the coil maps satisfy ``sum_c |S_c|^2 <= 1``, so ``||A^H A|| <= 1``
        and 1 is the natural (Landweber) step; steps up to 2 are stable. From ``A^H d`` the
        old default 0.1 left each stage a tenth of a gradient step; after a classical warm
        start, which is already consistent with the data up to its regulariser, a small
        step (0.1) is right (docs/method.md, "Warm start").
    step_param
        How the learned parameter ``mu`` becomes the step: ``"softplus"`` (always positive,
        never without gradient) or ``"relu"`` (weights before format 3). Through ``relu`` a
        step the optimiser pushes below zero is switched off for good, with its gradient:
        every stage of the format-2 LLR-start weights ended that way (docs/training.md).
    start
        First estimate ``x0``: ``"adjoint"`` (``A^H d``, the paper), or a classical warm start
        the stages refine, with ``start_iterations`` iterations: ``"lplus_s"`` (L+S) or
        ``"llr"`` (locally low rank), both from :mod:`passnet_core.baselines`.
    start_iterations
        Iterations of the classical start (ignored for ``"adjoint"``).
    start_lambda
        Block singular value threshold of the ``"llr"`` start (normalised data, as
        :func:`passnet_core.baselines.llr`). The default 0.05 is what every weight file
        before this setting was trained with; the stages learn on the start they are given,
        so a file keeps its own.
    start_lambda_static
        The ``"llr"`` start's threshold where every frame samples the same k-space
        (equispaced lines; ``lambda_static`` of :func:`passnet_core.baselines.llr`).
        ``None`` (files before this setting): ``start_lambda`` for every mask.
    start_init
        First iterate of the ``"llr"`` start (:data:`passnet_core.baselines.LLR_INITS`):
        ``"adjoint"`` (``A^H d``, what weight files before this setting were trained with) or
        ``"shared"`` (the data-shared time average, which converges in fewer iterations on
        masks that change from frame to frame; docs/method.md "Warm start").
    zero_init_residual
        Start the last convolution of ``Phi^H`` and ``Psi^H`` at zero, so an untrained stage
        is exactly a gradient step (no random conv noise added to the image). Affects
        initialisation only.
    phase_reference
        ``"none"``: the stages see the start's image as it is. ``"lowres"``: they see it with
        the smooth phase of its low-resolution time average taken out (and put back at the
        end; the coil maps carry it meanwhile, so the data term is unchanged). The stages'
        convolutions act on real and imaginary parts and are not phase-equivariant: weights
        trained on images whose smooth phase is near zero (the chain's maps give them that)
        fail by 2-7 dB on images that keep the object's phase (exact maps, other map
        estimators). Multi-coil data only (one coil has no maps to carry the phase).
    svt_r_init
        Initial ``r`` of the uniform threshold ``sigmoid(r) sigma_1``; PASS starts at the
        same threshold.
    fixed_fusion_weight
        ``W`` of the fixed fusion ablation.
    svd_eps_rel
        Regularisation of the SVD backward (:func:`passnet_core.svd.stable_svd`).
    pe_base
        Base of the sinusoidal position encoding of PASS (eq. 9).
    """

    n_stages: int = 15
    channels: int = 16
    shrinkage: str = "pass"
    fusion: str = "lsaf"
    mu_init: float = 1.0
    step_param: str = "softplus"
    svt_r_init: float = -2.0
    fixed_fusion_weight: float = 0.5
    svd_eps_rel: float = DEFAULT_EPS_REL
    pe_base: float = 10000.0
    start: str = "adjoint"
    start_iterations: int = 50
    start_lambda: float = 0.05
    start_lambda_static: float | None = None
    start_init: str = "adjoint"
    zero_init_residual: bool = True
    phase_reference: str = "none"

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> ValueError:
            return ValueError(f"PASSNetConfig.{name}={getattr(self, name)!r}: {why}")

        for name in ("n_stages", "channels", "start_iterations"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise bad(name, "must be a positive integer")
        if self.shrinkage not in SHRINKAGES:
            raise bad("shrinkage", f"must be one of {SHRINKAGES}")
        if self.fusion not in FUSIONS:
            raise bad("fusion", f"must be one of {FUSIONS}")
        if self.step_param not in STEP_PARAMS:
            raise bad("step_param", f"must be one of {STEP_PARAMS}")
        if self.start not in STARTS:
            raise bad("start", f"must be one of {STARTS}")
        if self.start_init not in LLR_INITS:
            raise bad("start_init", f"must be one of {tuple(LLR_INITS)}")
        if self.phase_reference not in PHASE_REFERENCES:
            raise bad("phase_reference", f"must be one of {PHASE_REFERENCES}")
        if not isinstance(self.zero_init_residual, bool):
            raise bad("zero_init_residual", "must be true or false")
        for name in ("start_lambda", "start_lambda_static"):
            lam = getattr(self, name)
            if lam is None and name == "start_lambda_static":
                continue
            number = isinstance(lam, (int, float)) and not isinstance(lam, bool)
            if not number or not 0 <= lam < math.inf:
                raise bad(name, "must be a number >= 0")
        for name in ("mu_init", "svt_r_init", "fixed_fusion_weight", "svd_eps_rel", "pe_base"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise bad(name, "must be a number")
            if not math.isfinite(value):
                raise bad(name, "must be finite")
        if not 0.0 <= self.fixed_fusion_weight <= 1.0:
            raise bad("fixed_fusion_weight", "must lie in [0, 1]")
        if self.mu_init <= 0 or self.svd_eps_rel < 0 or self.pe_base <= 1:
            raise ValueError("PASSNetConfig: need mu_init > 0, svd_eps_rel >= 0 and pe_base > 1")

    def to_dict(self) -> dict:
        """Plain JSON-serialisable dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> PASSNetConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError`` (missing ones default)."""
        if not isinstance(data, dict):
            raise ValueError(f"PASSNetConfig.from_dict expects a dict, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown PASSNetConfig keys: {unknown}")
        return cls(**data)


# --------------------------------------------------------------------------- helpers


def complex_to_channels(x: torch.Tensor) -> torch.Tensor:
    """Complex ``(B, T, H, W)`` -> real ``(B, 2, T, H, W)`` (real, imag)."""
    return torch.stack((x.real, x.imag), dim=1)


def channels_to_complex(x: torch.Tensor) -> torch.Tensor:
    """Real ``(B, 2, T, H, W)`` -> complex ``(B, T, H, W)``."""
    return torch.complex(x[:, 0], x[:, 1])


def _conv3d(c_in: int, c_out: int, bias: bool = False) -> nn.Conv3d:
    return Conv3d(c_in, c_out, kernel_size=3, padding=1, bias=bias)


def _conv2d(c_in: int, c_out: int, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=bias)


def _cnn3d(sizes: list[int]) -> nn.Sequential:
    """Conv3d chain ``sizes[0] -> sizes[1] -> ...`` with ReLU between (not after the last)."""
    layers: list[nn.Module] = []
    for i, (c_in, c_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        if i:
            layers.append(nn.ReLU())
        layers.append(_conv3d(c_in, c_out))
    return nn.Sequential(*layers)


def position_encoding(
    k: int, base: float = 10000.0, device: torch.device | str | None = None
) -> torch.Tensor:
    """Eq. 9: ``p_j = sin(linspace(1, 0, K)_j / base^(j / K))`` for ``j = 0..K-1``, in [0, 1]."""
    j = torch.arange(k, dtype=torch.float32, device=device)
    return torch.sin(torch.linspace(1.0, 0.0, k, device=device) / base ** (j / k))


# Below this sigma_1 a frame is treated as empty: keeps the normalisation finite.
_SIGMA_FLOOR = 1e-6


# --------------------------------------------------------------------------- shrinkage


class UniformSVT(nn.Module):
    """Eq. 1: ``sigma' = relu(sigma - sigmoid(r) sigma_1)`` with one learned ``r``."""

    def __init__(self, r_init: float = -2.0) -> None:
        super().__init__()
        self.r = nn.Parameter(torch.tensor(float(r_init)))

    def forward(self, sigma: torch.Tensor) -> torch.Tensor:
        """``sigma`` ``(B, T, K)`` sorted descending -> shrunk singular values, same shape."""
        tau = torch.sigmoid(self.r) * sigma[..., :1]
        return F.relu(sigma - tau)


class PASS(nn.Module):
    """Position-aware adaptive singular-value shrinkage (eq. 9-14).

    ``Lambda = [sigma / sigma_1, P]`` is read as a ``(B, 2, T, K)`` image and processed with
    3x3 ``Conv2d`` over ``(T, K)``, so any number of frames and singular values works:
    ``r = sigmoid(Convs(Lambda))``, ``m = GELU(Convs(sigma / sigma_1))``,
    ``gamma = sigma_1 Conv(r m)``, ``sigma' = relu(sigma - gamma)``. Working on
    ``sigma / sigma_1`` makes the block scale-equivariant. The output conv starts with zero
    weights and bias ``sigmoid(r_init)``, i.e. exactly at the uniform SVT threshold.
    """

    def __init__(self, channels: int = 16, r_init: float = -2.0, pe_base: float = 10000.0):
        super().__init__()
        self.pe_base = pe_base
        self.ratio = nn.Sequential(
            _conv2d(2, channels), nn.ReLU(), _conv2d(channels, channels), nn.Sigmoid()
        )
        self.modulation = nn.Sequential(
            _conv2d(1, channels), nn.GELU(), _conv2d(channels, channels), nn.GELU()
        )
        self.out = _conv2d(channels, 1, bias=True)
        assert self.out.bias is not None  # built with bias=True
        nn.init.zeros_(self.out.weight)
        nn.init.constant_(self.out.bias, 1.0 / (1.0 + math.exp(-r_init)))

    def forward(self, sigma: torch.Tensor) -> torch.Tensor:
        """``sigma`` ``(B, T, K)`` sorted descending -> shrunk singular values, same shape."""
        b, t, k = sigma.shape
        sigma_1 = sigma[..., :1].clamp_min(_SIGMA_FLOOR)
        rel = (sigma / sigma_1).unsqueeze(1)  # (B, 1, T, K)
        pos = position_encoding(k, self.pe_base, sigma.device).to(sigma.dtype)
        lam = torch.cat((rel, pos.expand(b, 1, t, k)), dim=1)  # (B, 2, T, K)
        gamma = self.out(self.ratio(lam) * self.modulation(rel)).squeeze(1)
        return F.relu(sigma - gamma * sigma_1)


# --------------------------------------------------------------------------- sparse + fusion


class AST(nn.Module):
    """Attention-based soft thresholding (eq. 16) on real features ``(B, C, T, H, W)``.

    ``f = GAP(|F|)`` per channel, ``alpha = sigmoid(FC(relu(FC(f))))``, ``tau = alpha f``,
    output ``sign(F) relu(|F| - tau)``.
    """

    def __init__(self, channels: int = 16) -> None:
        super().__init__()
        self.attention = nn.Sequential(
            nn.Linear(channels, channels), nn.ReLU(), nn.Linear(channels, channels), nn.Sigmoid()
        )

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        mean_abs = feats.abs().mean(dim=(2, 3, 4))  # (B, C)
        tau = (self.attention(mean_abs) * mean_abs)[:, :, None, None, None]
        return torch.sign(feats) * F.relu(feats.abs() - tau)


class _ResBlock3d(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv3d(channels, channels), nn.ReLU(), _conv3d(channels, channels)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.body(x))


class LSAF(nn.Module):
    """L & S adaptive fusion (eq. 17-18): one weight in [0, 1] per voxel from ``[L, S]``."""

    def __init__(self, channels: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(
            _conv3d(4, channels),
            nn.ReLU(),
            _ResBlock3d(channels),
            _ResBlock3d(channels),
            _conv3d(channels, 1),
        )

    def forward(self, low_rank: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        """Complex ``(B, T, H, W)`` L and S -> fused complex image."""
        feats = torch.cat((complex_to_channels(low_rank), complex_to_channels(sparse)), dim=1)
        weight = torch.sigmoid(self.net(feats)).squeeze(1)
        return weight * low_rank + (1 - weight) * sparse


class FixedFusion(nn.Module):
    """Ablation: ``x = w L + (1 - w) S`` with a constant ``w``."""

    def __init__(self, weight: float = 0.5) -> None:
        super().__init__()
        self.weight = weight

    def forward(self, low_rank: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        return self.weight * low_rank + (1 - self.weight) * sparse


# --------------------------------------------------------------------------- stage + network


class PASSNetStage(nn.Module):
    """One unrolled iteration: gradient step, low-rank and sparse branches, fusion."""

    def __init__(self, config: PASSNetConfig) -> None:
        super().__init__()
        c = config.channels
        self.eps_rel = config.svd_eps_rel
        self.step_param = config.step_param
        mu = float(config.mu_init)
        if self.step_param == "softplus":  # store softplus^-1(mu_init): the step starts at mu_init
            mu = mu + math.log(-math.expm1(-mu))
        self.mu = nn.Parameter(torch.tensor(mu))
        self.phi = _cnn3d([2, c, c, 2])
        self.phi_h = _cnn3d([2, c, c, 2])
        if config.shrinkage == "pass":
            self.shrink: nn.Module = PASS(c, config.svt_r_init, config.pe_base)
        else:
            self.shrink = UniformSVT(config.svt_r_init)
        self.psi = _cnn3d([2, c, c, c])
        self.ast = AST(c)
        self.psi_h = _cnn3d([c, c, c, 2])
        if config.fusion == "lsaf":
            self.fusion: nn.Module = LSAF(c)
        else:
            self.fusion = FixedFusion(config.fixed_fusion_weight)
        if config.zero_init_residual:  # an untrained stage is a plain gradient step
            for branch in (self.phi_h, self.psi_h):
                last = branch[-1]
                assert isinstance(last, nn.Conv3d)  # _cnn3d ends with a convolution
                nn.init.zeros_(last.weight)

    def step_size(self) -> torch.Tensor:
        """The gradient step this stage takes (``softplus(mu)`` or ``relu(mu)``)."""
        if self.step_param == "softplus":
            return F.softplus(self.mu)
        return F.relu(self.mu)

    def low_rank(self, x: torch.Tensor) -> torch.Tensor:
        """``Phi^H(SVT(Phi(x))) + x`` with one SVD per frame (``H x W`` matrix)."""
        z = channels_to_complex(self.phi(complex_to_channels(x)))  # (B, T, H, W)
        u, s, vh = stable_svd(z, self.eps_rel)  # s: (B, T, K)
        s = self.shrink(s)
        z = (u * s.unsqueeze(-2).to(u.dtype)) @ vh
        return channels_to_complex(self.phi_h(complex_to_channels(z))) + x

    def sparse(self, x: torch.Tensor) -> torch.Tensor:
        """``Psi^H(AST(Psi(x))) + x``."""
        feats = self.ast(self.psi(complex_to_channels(x)))
        return channels_to_complex(self.psi_h(feats)) + x

    def data_step(
        self, x: torch.Tensor, op: EncodingOp, kspace: torch.Tensor,
        adjoint_data: torch.Tensor | None = None,
    ) -> torch.Tensor:  # fmt: skip
        """``x - mu A^H (A x - d)``, as ``x - mu (A^H A x - A^H d)``.

        ``op.normal`` filters line-sampled data with one 1-D FFT per coil image instead of two
        2-D FFTs; ``adjoint_data`` (``A^H d``) is the same for every stage, so
        :meth:`PASSNet.refine` computes it once (``None``: computed here).
        """
        if adjoint_data is None:
            adjoint_data = op.adjoint(kspace)
        return x - self.step_size() * (op.normal(x) - adjoint_data)

    def forward(
        self, x: torch.Tensor, op: EncodingOp, kspace: torch.Tensor,
        adjoint_data: torch.Tensor | None = None,
    ) -> torch.Tensor:  # fmt: skip
        x = self.data_step(x, op, kspace, adjoint_data)
        return self.fusion(self.low_rank(x), self.sparse(x))


class PASSNet(nn.Module):
    """Cascade of ``config.n_stages`` :class:`PASSNetStage` s (``self.stages``)."""

    def __init__(self, config: PASSNetConfig | None = None) -> None:
        super().__init__()
        self.config = config or PASSNetConfig()
        self.stages = nn.ModuleList(PASSNetStage(self.config) for _ in range(self.config.n_stages))

    def forward(
        self,
        kspace: torch.Tensor,
        mask: torch.Tensor,
        coil_maps: torch.Tensor | None = None,
        start: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Reconstruct images from undersampled k-space.

        Parameters
        ----------
        kspace
            Complex centred k-space, ``(B, T, H, W)`` single-coil or ``(B, C, T, H, W)``, in
            :data:`~passnet_core.operators.NORMALISATION` units (``max |A^H d| = 1``: the
            weights and the start's thresholds were chosen there; :func:`passnet_core.
            inference.reconstruct` and the training data normalise).
        mask
            Real 0/1 mask ``(T, H, W)`` or ``(B, T, H, W)``.
        coil_maps
            Complex ``(B, C, H, W)`` or ``None`` (single-coil).
        start
            The first estimate ``(B, T, H, W)`` when it was computed ahead (training from a
            cache, :mod:`training.chain_files`); ``None``: computed here (``config.start``).

        Returns
        -------
        torch.Tensor
            Complex image ``(B, T, H, W)`` in the dtype of ``kspace``.
        """
        validate_inputs(kspace, mask, coil_maps, values=False)  # shapes only: no data pass
        op = EncodingOp(mask.to(kspace.device), coil_maps)
        if start is None:
            return self.unroll(op, kspace)
        if start.shape != (kspace.shape[0], *mask.shape[-3:]):
            raise ValueError(f"start {tuple(start.shape)} does not match the data {kspace.shape}")
        return self.refine(op, kspace, start)

    def unroll(self, op: EncodingOp, kspace: torch.Tensor) -> torch.Tensor:
        """The start and the stages on an operator built (and inputs validated) by the caller."""
        return self.refine(op, kspace, self.start(op, kspace))

    def refine(self, op: EncodingOp, kspace: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The learned stages from a first estimate ``x`` (e.g. a start computed ahead)."""
        phase = None
        if self.config.phase_reference == "lowres" and op.coils is not None:
            phase = lowres_phase(x.detach())  # (B, H, W), |phase| = 1
            # A x = A' (x conj(phase)) with maps' = maps phase: same data term, smooth phase out
            op = op.with_map_phase(phase)
            x = x * phase[:, None].conj()
        adjoint_data = op.adjoint(kspace)  # A^H d: the same in every stage's data step
        for stage in self.stages:
            x = stage(x, op, kspace, adjoint_data)
        return x if phase is None else x * phase[:, None]

    def start(self, op: EncodingOp, kspace: torch.Tensor) -> torch.Tensor:
        """The first estimate ``x0`` (``config.start``); no gradient flows through it."""
        n_iter = self.config.start_iterations
        if self.config.start == "adjoint":
            return zero_filled(op, kspace)
        if self.config.start == "llr":
            lam = float(self.config.start_lambda)
            x0 = llr(
                op, kspace, lam, n_iter, normalised=True, init=self.config.start_init,
                lambda_static=self.config.start_lambda_static,
            )  # fmt: skip
            return x0.to(kspace.dtype)
        return lplus_s(op, kspace, n_iter=n_iter, tol=0.0, normalised=True).to(kspace.dtype)


def lowres_phase(x: torch.Tensor, block: int = LOWRES_BLOCK) -> torch.Tensor:
    """``(B, H, W)`` unit phase of the low-resolution time average of ``x`` ``(B, T, H, W)``
    (the central ``block x block`` k-space, Hann-windowed, as the chain's coil maps take their
    phase); 1 where that image is 0."""
    return unit_phase(lowres_images(fft2c(x.mean(dim=1)), block))


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
