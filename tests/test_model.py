"""Tests for the PASSNet model (passnet_core.model)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from passnet_core.fft import fft2c
from passnet_core.model import (
    AST,
    LSAF,
    PASS,
    Conv3d,
    PASSNet,
    PASSNetConfig,
    UniformSVT,
    count_parameters,
    position_encoding,
)
from passnet_core.operators import EncodingOp


def _problem(b=1, t=4, h=16, w=16, coils=None, seed=0, density=0.4):
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(b, t, h, w, dtype=torch.complex64, generator=g)
    mask = (torch.rand(t, h, w, generator=g) < density).float()
    mask[:, h // 2, w // 2] = 1
    if coils is None:
        return image, fft2c(image) * mask, mask, None
    maps = torch.randn(b, coils, h, w, dtype=torch.complex64, generator=g)
    maps = maps / maps.abs().pow(2).sum(1, keepdim=True).sqrt()
    kspace = fft2c(maps.unsqueeze(2) * image.unsqueeze(1)) * mask
    return image, kspace, mask, maps


def test_parameter_counts_match_paper():
    counts = {n: count_parameters(PASSNet(PASSNetConfig(n_stages=n))) for n in (9, 13, 15, 17)}
    print("parameter counts:", counts)
    assert abs(counts[15] - 1.24e6) / 1.24e6 < 0.15
    paper = {9: 0.75e6, 13: 1.09e6, 15: 1.25e6, 17: 1.42e6}
    for n, expected in paper.items():
        assert abs(counts[n] - expected) / expected < 0.05, (n, counts[n])
    # without PASS/LSAF the stage is JotlasNet's (708k for 15 stages)
    plain = PASSNet(PASSNetConfig(shrinkage="uniform_svt", fusion="fixed"))
    assert abs(count_parameters(plain) - 708e3) / 708e3 < 0.05


@pytest.mark.parametrize(
    ("b", "t", "h", "w", "coils"),
    [(1, 4, 16, 16, None), (2, 1, 12, 20, None), (1, 3, 10, 7, 3), (2, 2, 8, 8, 2)],
)
def test_output_shapes(b, t, h, w, coils):
    torch.manual_seed(0)
    _, kspace, mask, maps = _problem(b, t, h, w, coils)
    model = PASSNet(PASSNetConfig(n_stages=2, channels=4))
    with torch.no_grad():
        out = model(kspace, mask, maps)
    assert out.shape == (b, t, h, w)
    assert out.dtype == torch.complex64
    assert torch.isfinite(torch.view_as_real(out)).all()


def test_full_depth_forward_tiny():
    torch.manual_seed(0)
    _, kspace, mask, _ = _problem(1, 4, 16, 16)
    with torch.no_grad():
        out = PASSNet()(kspace, mask)
    assert out.shape == (1, 4, 16, 16)
    assert torch.isfinite(torch.view_as_real(out)).all()


def test_batched_mask_and_wrong_kspace_rank():
    torch.manual_seed(0)
    _, kspace, mask, _ = _problem(2, 2, 8, 8)
    model = PASSNet(PASSNetConfig(n_stages=1, channels=4))
    with torch.no_grad():
        a = model(kspace, mask)
        b = model(kspace, mask.expand(2, -1, -1, -1))
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="single-coil kspace must be"):
        model(kspace.unsqueeze(1), mask)


def test_model_learns_tiny_problem():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    t, h, w = 8, 24, 24
    # a smooth, low-rank-in-time target: a few moving blobs
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    frames = [
        torch.exp(-((xx - 0.3 * torch.sin(torch.tensor(i / 2))) ** 2 + yy**2) * 8) for i in range(t)
    ]
    target = torch.stack(frames).to(torch.complex64).unsqueeze(0)
    mask = (torch.rand(t, h, w, generator=g) < 0.3).float()
    mask[:, h // 2 - 2 : h // 2 + 2, :] = 1
    kspace = fft2c(target) * mask
    model = PASSNet(PASSNetConfig(n_stages=2, channels=4))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)

    def loss_fn():
        return (model(kspace, mask) - target).abs().pow(2).mean()

    with torch.no_grad():
        initial = loss_fn().item()
    for _ in range(20):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()
    with torch.no_grad():
        final = loss_fn().item()
    assert final < initial / 2, (initial, final)


def test_zero_kspace_gives_finite_output_and_gradients():
    torch.manual_seed(0)
    model = PASSNet(PASSNetConfig(n_stages=2, channels=4))
    kspace = torch.zeros(1, 3, 8, 8, dtype=torch.complex64)
    mask = torch.ones(3, 8, 8)
    out = model(kspace, mask)
    assert torch.isfinite(torch.view_as_real(out)).all()
    loss = (out - torch.ones_like(out)).abs().pow(2).mean()
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), name


def test_fully_sampled_single_coil_x0_is_the_image():
    image, _, _, _ = _problem(1, 3, 8, 10)
    mask = torch.ones(3, 8, 10)
    kspace = fft2c(image)
    model = PASSNet(PASSNetConfig(n_stages=1, channels=4))
    seen = {}
    model.stages[0].register_forward_pre_hook(lambda mod, args: seen.update(x0=args[0]))
    with torch.no_grad():
        model(kspace, mask)
        # with a full mask the data-consistency gradient at the image vanishes
        op = EncodingOp(mask)
        residual = op.adjoint(op.forward(image) - kspace)
    torch.testing.assert_close(seen["x0"], image, rtol=1e-5, atol=1e-5)
    assert residual.abs().max() < 1e-5


@pytest.mark.parametrize(
    ("start", "init"), [("lplus_s", "adjoint"), ("llr", "adjoint"), ("llr", "shared")]
)
def test_untrained_network_with_a_warm_start_is_that_start_plus_gradient_steps(start, init):
    from passnet_core.baselines import llr, lplus_s
    from passnet_core.operators import normalise

    image, kspace, mask, maps = _problem(1, 4, 16, 16, coils=3)
    op = EncodingOp(mask, maps)
    kspace = normalise(op, kspace).kspace  # the network's input units
    config = PASSNetConfig(
        n_stages=2, channels=4, start=start, start_iterations=3, start_lambda=0.2, mu_init=0.5,
        start_init=init,
    )  # fmt: skip  # start_lambda: not the default of either the model or baselines.llr
    model = PASSNet(config)
    with torch.no_grad():
        out = model(kspace, mask, maps)
    classical = {"lplus_s": lplus_s, "llr": llr}[start]
    llr_settings = {"lambda_b": config.start_lambda, "init": init, "lambda_static": None}
    settings = {"lplus_s": {"tol": 0.0}, "llr": llr_settings}
    settings = settings[start]
    x = classical(op, kspace, n_iter=3, **settings)
    for _ in range(2):  # zero-initialised residual branches: each stage is a plain step
        x = x - 0.5 * op.adjoint(op.forward(x) - kspace)
    torch.testing.assert_close(out, x, rtol=1e-4, atol=1e-5)


def test_llr_start_takes_its_static_threshold_only_where_every_frame_has_the_same_lines():
    from passnet_core.baselines import llr
    from passnet_core.masks import make_mask

    image, _, moving, maps = _problem(1, 4, 32, 32, coils=3)
    for mask, static in ((make_mask("equispaced", 4, 4, 32, 32), True), (moving, False)):
        op = EncodingOp(mask, maps)
        kspace = op.forward(image)
        starts = {}
        for lam_static in (None, 0.01):
            config = PASSNetConfig(
                n_stages=1, channels=4, start="llr", start_iterations=3, start_lambda=0.2,
                start_lambda_static=lam_static,
            )  # fmt: skip
            with torch.no_grad():
                starts[lam_static] = PASSNet(config).start(op, kspace)
        expected = llr(op, kspace, 0.01 if static else 0.2, 3, normalised=True, lambda_static=None)
        torch.testing.assert_close(starts[0.01], expected.to(kspace.dtype))
        unchanged = llr(op, kspace, 0.2, 3, normalised=True, lambda_static=None)
        torch.testing.assert_close(starts[None], unchanged.to(kspace.dtype))  # older files
        assert torch.allclose(starts[0.01], starts[None]) is not static


@pytest.mark.parametrize("mu_init", [0.1, 1.0, 1.9])
def test_softplus_step_starts_at_mu_init_and_keeps_its_gradient_when_pushed_down(mu_init):
    image, kspace, mask, maps = _problem(1, 4, 16, 16, coils=2)
    for step_param in ("softplus", "relu"):
        model = PASSNet(
            PASSNetConfig(n_stages=1, channels=4, mu_init=mu_init, step_param=step_param)
        )
        stage = model.stages[0]
        assert float(stage.step_size()) == pytest.approx(mu_init, rel=1e-6)
        with torch.no_grad():  # the optimiser drove the step below zero (as it did under relu)
            stage.mu.fill_(-0.05 if step_param == "relu" else -12.0)
        loss = (model(kspace, mask, maps) - image).abs().pow(2).mean()
        loss.backward()
        assert stage.mu.grad is not None
        if step_param == "relu":  # switched off for good: no gradient can bring it back
            assert float(stage.step_size()) == 0.0 and float(stage.mu.grad) == 0.0
        else:  # softplus: still a (tiny) positive step, and it still learns
            assert 0.0 < float(stage.step_size()) < 1e-5
            assert float(stage.mu.grad) != 0.0


@pytest.mark.parametrize("line_mask", [True, False])
def test_data_step_is_the_gradient_step_on_the_data_term(line_mask):
    """x - mu (A^H A x - A^H d) through op.normal equals x - mu A^H (A x - d), gradients too."""
    image, kspace, mask, maps = _problem(2, 5, 16, 12, coils=3)
    if line_mask:  # whole phase-encode lines: op.normal's 1-D FFT path
        mask = mask[..., :1].expand_as(mask).contiguous()
    op = EncodingOp(mask, maps)
    assert op.sampling.lines == line_mask
    stage = PASSNet(PASSNetConfig(n_stages=1, channels=4, mu_init=0.7)).stages[0]
    x = (image + 0.1 * torch.randn_like(image)).requires_grad_(True)
    reference = x - stage.step_size() * op.adjoint(op.forward(x) - kspace)
    for adjoint_data in (None, op.adjoint(kspace)):
        stepped = stage.data_step(x, op, kspace, adjoint_data)
        torch.testing.assert_close(stepped, reference, rtol=1e-5, atol=1e-6)
    (grad,) = torch.autograd.grad(stepped.abs().pow(2).sum(), x)
    (expected,) = torch.autograd.grad(reference.abs().pow(2).sum(), x)
    torch.testing.assert_close(grad, expected, rtol=1e-4, atol=1e-5)


def test_uniform_svt_threshold_and_pass_starts_there():
    sigma = torch.tensor([[[4.0, 2.0, 1.0, 0.1]]])
    tau = torch.sigmoid(torch.tensor(-2.0)) * 4.0
    expected = torch.relu(sigma - tau)
    torch.testing.assert_close(UniformSVT()(sigma), expected)
    torch.testing.assert_close(PASS(channels=4)(sigma), expected)


def test_pass_is_scale_equivariant_and_handles_zero():
    torch.manual_seed(0)
    block = PASS(channels=4)
    for p in block.parameters():
        torch.nn.init.normal_(p, std=0.5)
    sigma = torch.sort(torch.rand(2, 3, 6), dim=-1, descending=True).values
    torch.testing.assert_close(block(sigma * 7.0), block(sigma) * 7.0, rtol=1e-5, atol=1e-5)
    zero = torch.zeros(1, 2, 5, requires_grad=True)
    out = block(zero)
    out.sum().backward()
    assert torch.equal(out, torch.zeros_like(out))
    assert torch.isfinite(zero.grad).all()


def test_position_encoding_range():
    p = position_encoding(64)
    assert p.shape == (64,)
    assert p[0] > p[-1]
    assert (p >= 0).all() and (p <= 1).all()


def test_ast_soft_thresholds_per_channel():
    ast = AST(channels=2)
    feats = torch.randn(1, 2, 2, 4, 4)
    out = ast(feats)
    assert ((out == 0) | (out.sign() == feats.sign())).all()
    assert (out.abs() <= feats.abs()).all()
    assert (out == 0).any()


def test_lsaf_output_is_a_convex_combination():
    lsaf = LSAF(channels=4)
    low = torch.ones(1, 2, 4, 4, dtype=torch.complex64)
    sparse = -torch.ones(1, 2, 4, 4, dtype=torch.complex64)
    out = lsaf(low, sparse)
    assert (out.real.abs() < 1).all()
    torch.testing.assert_close(out.imag, torch.zeros_like(out.imag))


def test_ablations_and_config_roundtrip():
    cfg = PASSNetConfig(n_stages=3, shrinkage="uniform_svt", fusion="fixed")
    model = PASSNet(cfg)
    assert len(model.stages) == 3
    assert isinstance(model.stages[0].shrink, UniformSVT)
    assert not any(isinstance(m, LSAF) for m in model.modules())
    assert PASSNetConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.n_stages = 4  # type: ignore[misc]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_stages": 0},
        {"n_stages": 2.5},
        {"channels": True},
        {"shrinkage": "hard"},
        {"fusion": "sum"},
        {"fixed_fusion_weight": 1.5},
        {"mu_init": float("nan")},
        {"svd_eps_rel": -1.0},
        {"start_lambda": -0.1},
        {"start_lambda": float("nan")},
        {"start_lambda": True},
        {"start_lambda_static": -0.1},
        {"start_lambda_static": "0.02"},
        {"start_init": "zeros"},
    ],
)
def test_config_validation(kwargs):
    with pytest.raises(ValueError):
        PASSNetConfig(**kwargs)


def test_config_from_dict_rejects_unknown_keys():
    with pytest.raises(ValueError, match="unknown"):
        PASSNetConfig.from_dict({"n_stages": 2, "depth": 3})


@pytest.mark.parametrize(
    "c_in, c_out, shape",
    [
        (2, 16, (1, 5, 12, 10)),
        (16, 2, (2, 4, 9, 8)),
        (4, 16, (1, 1, 6, 7)),
        (16, 16, (1, 16, 20, 18)),  # batch 1: the backward must stay on the oneDNN path
        (16, 16, (3, 7, 9, 11)),  # odd frame count: the time split pads one frame
        (2, 16, (1, 2, 8, 8)),
    ],
)
def test_cpu_conv3d_matches_stock_conv_in_values_and_gradients(c_in, c_out, shape):
    torch.manual_seed(0)
    conv = Conv3d(c_in, c_out, kernel_size=3, padding=1, bias=True)
    x = torch.randn(shape[0], c_in, *shape[1:], requires_grad=True)
    y = conv(x)
    ref = torch.nn.functional.conv3d(x, conv.weight, conv.bias, padding=1)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
    weights = torch.randn_like(ref)
    got = torch.autograd.grad((y * weights).sum(), (x, conv.weight, conv.bias))
    want = torch.autograd.grad((ref * weights).sum(), (x, conv.weight, conv.bias))
    for g, w in zip(got, want, strict=True):  # sums over many voxels: float32 rounding
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5 * float(w.abs().max()))
    # float64 (gradcheck) and the stock module's state dict keep working
    conv64 = Conv3d(c_in, c_out, kernel_size=3, padding=1).double()
    assert torch.autograd.gradcheck(
        conv64, torch.randn(1, c_in, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    )
    assert set(conv.state_dict()) == set(torch.nn.Conv3d(c_in, c_out, 3).state_dict())


def _turn_error(reference: str, phase: torch.Tensor) -> float:
    """How far the output of ``maps * phase`` is from the output of ``maps`` times conj(phase)."""
    _, kspace, mask, maps = _problem(b=1, t=3, h=16, w=16, coils=3, seed=4)
    torch.manual_seed(0)
    config = PASSNetConfig(n_stages=2, channels=4, zero_init_residual=False)
    model = PASSNet(dataclasses.replace(config, phase_reference=reference))
    with torch.no_grad():
        out = model(kspace, mask, maps)
        turned = model(kspace, mask, maps * phase[None, None])
    return float((turned - out * phase.conj()[None, None]).abs().max() / out.abs().max())


def test_lowres_phase_reference_makes_the_stages_blind_to_the_image_phase():
    # Maps are defined up to a phase: maps * p gives the same k-space from images x * conj(p).
    # With the low-resolution phase taken out, the output turns with a constant p exactly; the
    # convolutions alone (on real and imaginary parts) do not, even untrained.
    constant = torch.exp(1j * torch.tensor(2.0)) * torch.ones(16, 16, dtype=torch.complex64)
    assert _turn_error("lowres", constant) < 1e-5 < 1e-3 < _turn_error("none", constant)


def test_phase_reference_is_validated_and_old_configs_keep_none():
    assert PASSNetConfig.from_dict({}).phase_reference == "none"
    assert PASSNetConfig.from_dict({}).start_lambda == 0.05  # what older files were trained on
    assert PASSNetConfig.from_dict({}).start_init == "adjoint"
    assert PASSNetConfig.from_dict({}).start_lambda_static is None  # one threshold for all
    with pytest.raises(ValueError, match="phase_reference"):
        PASSNetConfig(phase_reference="coil")
