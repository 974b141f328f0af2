"""Zero-filled, L+S and LLR baselines on a small synthetic dynamic phantom.

The baselines take an operator; these tests call them through ``encoding`` (one validation
and the operator), as every caller does, so the input checks are exercised here too.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import dynamic_phantom, normalise_maps, simulated_coil_maps

from passnet_core import baselines, operators
from passnet_core.baselines import _llr_shrink
from passnet_core.fft import ifft2c
from passnet_core.masks import vds_mask
from passnet_core.metrics import psnr, ssim
from passnet_core.operators import EncodingOp, encoding, normalise


def _validated(method):
    def run(kspace, mask, maps=None, **kwargs):
        k, op = encoding(kspace, mask, maps)
        return method(op, k, **kwargs)

    return run


lplus_s, llr = _validated(baselines.lplus_s), _validated(baselines.llr)
zero_filled = _validated(operators.zero_filled)

T, H, W, C = 12, 48, 48, 4


@pytest.fixture(scope="module")
def problem():
    truth = torch.from_numpy(dynamic_phantom(T, H, W))[None]
    full_support = np.ones((H, W), dtype=bool)
    maps = torch.from_numpy(normalise_maps(simulated_coil_maps(C, H, W), full_support))[None]
    mask = vds_mask(6, T, H, W, rng=0)
    kspace = EncodingOp(mask, maps).forward(truth)
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(kspace.shape, dtype=kspace.dtype, generator=g)
    kspace = kspace + 0.002 * kspace.abs().max() * noise * mask
    return truth, maps, mask, kspace


@pytest.fixture(scope="module")
def lplus_s_recon(problem):
    truth, maps, mask, kspace = problem
    return lplus_s(kspace, mask, maps)


def test_zero_filled_is_the_adjoint(problem):
    truth, maps, mask, kspace = problem
    zf = zero_filled(kspace, mask, maps)
    assert zf.shape == (1, T, H, W) and zf.dtype == torch.complex64
    torch.testing.assert_close(zf, EncodingOp(mask, maps).adjoint(kspace))


def test_zero_filled_is_exact_for_full_sampling():
    truth = torch.from_numpy(dynamic_phantom(4, 16, 20))[None]
    full = torch.ones(4, 16, 20)
    kspace = EncodingOp(full).forward(truth)
    torch.testing.assert_close(zero_filled(kspace, full), truth, atol=1e-5, rtol=0)


def test_lplus_s_beats_zero_filled_by_several_db(problem, lplus_s_recon):
    truth, maps, mask, kspace = problem
    zf = zero_filled(kspace, mask, maps)
    psnr_zf, psnr_ls = float(psnr(zf[0], truth[0])), float(psnr(lplus_s_recon[0], truth[0]))
    assert psnr_ls > psnr_zf + 6, f"L+S {psnr_ls:.2f} dB vs zero-filled {psnr_zf:.2f} dB"
    assert float(ssim(lplus_s_recon[0], truth[0])) > float(ssim(zf[0], truth[0])) + 0.1


def test_llr_shrink_without_threshold_is_identity_for_any_size_and_shift():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 5, 13, 18, dtype=torch.complex64, generator=g)  # not whole blocks
    for shift in ((0, 0), (3, 7), (7, 2)):
        torch.testing.assert_close(_llr_shrink(x, 0.0, 8, shift), x, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("block,frames", [(4, 6), (2, 6)], ids=["tall", "wide"])
def test_llr_shrink_is_singular_value_soft_thresholding_of_every_block(block, frames):
    # Reference: an SVD of each (shifted) block, singular values minus lambda, floored at 0.
    # "wide": 4 x 6 blocks, so the T x T Gram has exact zero eigenvalues.
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, frames, 8, 8, dtype=torch.complex64, generator=g)
    x[..., :4, :4] = 0  # all-zero blocks too
    lam, shift = 1.5, (1, 3)
    rolled = torch.roll(x, shifts=shift, dims=(2, 3))
    expected = torch.empty_like(rolled)
    for i in range(0, 8, block):
        for j in range(0, 8, block):
            casorati = rolled[0, :, i : i + block, j : j + block].reshape(frames, -1).T
            u, sv, vh = torch.linalg.svd(casorati.to(torch.complex128), full_matrices=False)
            shrunk = (u * (sv - lam).clamp(min=0)) @ vh
            expected[0, :, i : i + block, j : j + block] = shrunk.T.reshape(frames, block, block)
    expected = torch.roll(expected, shifts=(-shift[0], -shift[1]), dims=(2, 3))
    torch.testing.assert_close(_llr_shrink(x, lam, block, shift), expected, atol=1e-5, rtol=1e-5)


def test_llr_shrink_makes_every_block_low_rank():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 6, 16, 16, dtype=torch.complex64, generator=g)
    y = _llr_shrink(x, 8.0, 8, (0, 0))  # singular values of a 64 x 6 block: ~5.5-10.5
    for i in (0, 8):
        for j in (0, 8):
            before = torch.linalg.matrix_rank(x[0, :, i : i + 8, j : j + 8].reshape(6, 64))
            after = torch.linalg.matrix_rank(y[0, :, i : i + 8, j : j + 8].reshape(6, 64))
            assert after < before == 6


def test_llr_beats_zero_filled_and_is_deterministic(problem):
    truth, maps, mask, kspace = problem
    zf = zero_filled(kspace, mask, maps)
    recon = llr(kspace, mask, maps, n_iter=30)
    assert recon.shape == (1, T, H, W) and recon.dtype == torch.complex64
    assert float(psnr(recon[0], truth[0])) > float(psnr(zf[0], truth[0])) + 5
    torch.testing.assert_close(recon, llr(kspace, mask, maps, n_iter=30))


def test_llr_is_scale_equivariant(problem):
    truth, maps, mask, kspace = problem
    torch.testing.assert_close(
        llr(1000 * kspace, mask, maps, n_iter=5) / 1000,
        llr(kspace, mask, maps, n_iter=5),
        rtol=1e-3,
        atol=1e-5,
    )


@pytest.mark.parametrize(
    "kwargs", [{"lambda_b": -1.0}, {"lambda_static": -0.1}, {"n_iter": 0}, {"block": 0}]
)
def test_llr_bad_parameters_raise(problem, kwargs):
    truth, maps, mask, kspace = problem
    with pytest.raises(ValueError):
        llr(kspace, mask, maps, **kwargs)


def test_lplus_s_is_scale_equivariant(problem):
    # internal normalisation by max|A^H d|: scaling the data scales the result
    _, maps, mask, kspace = problem
    scaled = lplus_s(1000 * kspace, mask, maps, n_iter=5)
    torch.testing.assert_close(
        scaled / 1000, lplus_s(kspace, mask, maps, n_iter=5), rtol=1e-3, atol=1e-5
    )


def test_lplus_s_single_coil_improves_on_zero_filled():
    truth = torch.from_numpy(dynamic_phantom(T, 32, 32))[None]
    mask = vds_mask(4, T, 32, 32, rng=1)
    kspace = EncodingOp(mask).forward(truth)
    zf = zero_filled(kspace, mask)
    recon = lplus_s(kspace, mask, n_iter=30)
    assert recon.shape == (1, T, 32, 32)
    assert float(psnr(recon[0], truth[0])) > float(psnr(zf[0], truth[0])) + 3


def test_nan_inputs_raise(problem):
    _, maps, mask, kspace = problem
    bad = kspace.clone()
    bad[0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        zero_filled(bad, mask, maps)
    with pytest.raises(ValueError, match="NaN"):
        lplus_s(bad, mask, maps)
    bad_maps = maps.clone()
    bad_maps[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        lplus_s(kspace, mask, bad_maps)


@pytest.mark.parametrize(
    "change",
    [
        lambda k, m, s: (k.abs(), m, s),  # real k-space
        lambda k, m, s: (k[0], m, s),  # unbatched multi-coil
        lambda k, m, s: (k, m[:, :-1], s),  # mask size mismatch
        lambda k, m, s: (k, m, s[:, :-1]),  # coil count mismatch
        lambda k, m, s: (k, m, None),  # multi-coil data without maps
    ],
)
def test_shape_and_dtype_errors_raise(problem, change):
    _, maps, mask, kspace = problem
    k, m, s = change(kspace, mask, maps)
    with pytest.raises(ValueError):
        zero_filled(k, m, s)


@pytest.mark.parametrize("kwargs", [{"lambda_l": -1}, {"lambda_s": float("nan")}, {"n_iter": 0}])
def test_bad_parameters_raise(problem, kwargs):
    _, maps, mask, kspace = problem
    with pytest.raises(ValueError):
        lplus_s(kspace, mask, maps, **kwargs)


@pytest.mark.parametrize("method", [baselines.llr, baselines.lplus_s])
def test_normalised_input_is_iterated_as_given(problem, method):
    # the network's start: data already in max|A^H d| = 1 units give the same result
    _, maps, mask, kspace = problem
    k, op = encoding(kspace, mask, maps)
    units = normalise(op, k)
    given = method(op, units.kspace, n_iter=4, normalised=True)
    expected = method(op, k, n_iter=4)
    atol = 1e-5 * float(expected.abs().max())  # float32 round-off of the two scalings
    torch.testing.assert_close(units.restore(given), expected, rtol=1e-3, atol=atol)


def test_all_zero_data_reconstruct_to_zeros_without_nan(problem):
    _, maps, mask, kspace = problem
    k, op = encoding(torch.zeros_like(kspace), mask, maps)
    units = normalise(op, k)
    assert float(units.scale[0]) == 0.0
    for method in (baselines.llr, baselines.lplus_s):
        out = method(op, k, n_iter=3)
        assert torch.isfinite(torch.view_as_real(out)).all() and not out.abs().any()


def test_shared_average_recovers_a_static_object_that_the_frames_cover_together():
    # a still object, every frame a different quarter of the lines: A^H d is aliased in every
    # frame, the data-shared average is the object itself (maps with sum |S|^2 = 1)
    t, h, w = 4, 16, 20
    still = torch.from_numpy(dynamic_phantom(1, h, w)).expand(t, h, w)[None]
    maps = torch.from_numpy(normalise_maps(simulated_coil_maps(3, h, w), np.ones((h, w), bool)))
    mask = torch.zeros(t, h, w)
    for frame in range(t):
        mask[frame, frame::t] = 1
    op = EncodingOp(mask, maps[None])
    kspace = op.forward(still)
    shared = baselines.shared_average(op, kspace)
    assert shared.shape == (1, t, h, w)
    torch.testing.assert_close(shared, still, atol=1e-5, rtol=0)
    assert (zero_filled(kspace, mask, maps[None]) - still).abs().max() > 0.1


@pytest.mark.parametrize("coils", [None, 3])
def test_shared_average_is_the_mean_over_the_frames_that_acquired_each_sample(coils):
    # per-batch masks, lines acquired 0, 1 or several times, and data where the mask is 0
    # (an asymmetric echo's empty readout columns after oversampling removal): ignored
    b, t, h, w = 2, 5, 12, 10
    g = torch.Generator().manual_seed(3)
    mask = (torch.rand(b, t, h, 1, generator=g) < 0.4).float().expand(b, t, h, w).clone()
    mask[:, :, 0] = 0  # a line no frame acquired
    mask[:, :, 1] = 1  # a line every frame acquired
    shape = (b, t, h, w) if coils is None else (b, coils, t, h, w)
    kspace = torch.randn(shape, dtype=torch.complex64, generator=g)  # nonzero off the mask too
    maps = None
    if coils is not None:
        maps = torch.randn(b, coils, h, w, dtype=torch.complex64, generator=g)
    op = EncodingOp(mask, maps)
    expected = torch.zeros(b, 1, h, w, dtype=torch.complex64)
    for i in range(b):
        acquired = mask[i] if coils is None else mask[i][None]
        count = mask[i].sum(dim=0)
        mean_k = (kspace[i] * acquired).sum(dim=-3) / count.clamp(min=1)
        image = ifft2c(mean_k)
        if maps is not None:
            image = (maps[i].conj() * image).sum(dim=0)
        expected[i, 0] = image
    shared = baselines.shared_average(op, kspace)
    assert shared.shape == (b, t, h, w) and shared.is_contiguous()
    torch.testing.assert_close(shared, expected.expand(b, t, h, w), atol=1e-5, rtol=1e-5)


def test_shared_average_of_the_same_lines_in_every_frame_is_the_mean_of_a_h_d(problem):
    _, maps, _, _ = problem
    lines = torch.zeros(T, H, 1)
    lines[:, ::3] = 1
    op = EncodingOp(lines.expand(T, H, W), maps)
    g = torch.Generator().manual_seed(4)
    kspace = torch.randn(1, C, T, H, W, dtype=torch.complex64, generator=g)
    mean_adjoint = op.adjoint(kspace).mean(dim=1, keepdim=True).expand(1, T, H, W)
    torch.testing.assert_close(baselines.shared_average(op, kspace), mean_adjoint)


def test_llr_from_the_shared_average_is_closer_after_few_iterations(problem):
    truth, maps, mask, kspace = problem
    db = {
        init: float(psnr(llr(kspace, mask, maps, n_iter=5, init=init)[0], truth[0]))
        for init in baselines.LLR_INITS
    }
    assert db["shared"] > db["adjoint"] + 1, db
    with pytest.raises(ValueError, match="init must be one of"):
        llr(kspace, mask, maps, init="zeros")


def test_static_sampling_tells_the_same_lines_in_every_frame_from_per_frame_sampling():
    from passnet_core.masks import equispaced_mask, make_mask

    def static(mask, maps=None):
        return baselines.static_sampling(EncodingOp(mask, maps), 2).tolist()

    fixed, moving = make_mask("equispaced", 4, 6, 32, 32), make_mask("vds_lines", 4, 6, 32, 32)
    maps = torch.ones(2, 3, 32, 32, dtype=torch.complex64) / 3**0.5
    assert static(fixed) == static(fixed, maps) == [True, True]  # with and without coils
    assert static(moving) == static(moving, maps) == [False, False]
    assert static(make_mask("radial", 8, 6, 32, 32)) == [False, False]  # rotating spokes
    assert static(torch.stack([fixed, moving])) == [True, False]  # one answer per item
    # nearly the same lines: one lost in one frame, calibration lines in the first frame only
    lost = fixed.clone()
    lost[3, int(fixed[3, :, 0].nonzero()[0])] = 0
    acs_once = equispaced_mask(6, 20, 128, 16, acs=0)  # a cine's size: 22 lines a frame
    acs_once[0] = equispaced_mask(6, 1, 128, 16)[0]  # + 20 calibration lines once
    assert static(lost) == static(acs_once) == [True, True]
    half = fixed.clone()
    half[::2] = equispaced_mask(4, 3, 32, 32, acs=0).roll(1, dims=1)  # other lines
    assert static(half) == [False, False]


def test_llr_thresholds_static_sampling_by_lambda_static_and_per_frame_sampling_by_lambda_b(
    problem,
):
    from passnet_core.masks import make_mask

    truth, maps, moving, _ = problem
    fixed = make_mask("equispaced", 4, T, H, W)
    for mask, static in ((fixed, True), (moving, False)):
        kspace = EncodingOp(mask, maps).forward(truth)
        own = llr(kspace, mask, maps, n_iter=4, lambda_b=0.05, lambda_static=0.01)
        by_b = llr(kspace, mask, maps, n_iter=4, lambda_b=0.05, lambda_static=None)
        by_static = llr(kspace, mask, maps, n_iter=4, lambda_b=0.01, lambda_static=None)
        torch.testing.assert_close(own, by_static if static else by_b)
        assert not torch.allclose(by_b, by_static)  # the two weights do differ here
    # a batch of both: each item as it would be on its own
    both = torch.stack([fixed, moving])
    kspace = EncodingOp(both, maps.expand(2, -1, -1, -1)).forward(truth.expand(2, -1, -1, -1))
    batch = llr(kspace, both, maps.expand(2, -1, -1, -1), n_iter=4, lambda_b=0.05,
                lambda_static=0.01)  # fmt: skip
    for i in range(2):
        alone = llr(kspace[i : i + 1], both[i], maps, n_iter=4, lambda_b=0.05, lambda_static=0.01)
        torch.testing.assert_close(batch[i : i + 1], alone, rtol=1e-4, atol=1e-5)
