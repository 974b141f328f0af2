"""Evaluation cases: two phantom families, fixed masks and the noise model, one place.

* ``synthetic``: cardiac cines from the training generator (:class:`training.data.SyntheticCines`)
  drawn from a seed stream no training run uses (test) or another disjoint one (validation,
  for tuning baselines);
* ``heldout``: cines from :mod:`training.heldout_phantom`, a generator training never draws
  from (other anatomy, contrast, motion, coil geometry, matrix size and frame count).

Every (case, mask) pair gets a deterministic mask and noise draw, so methods and runs see the
same data. k-space carries white complex Gaussian noise on the acquired samples with standard
deviation ``noise_level * max |target|`` per coil (``passnet simulate`` writes 0.02, after
prewhitening its coil covariance has unit mean diagonal), then it is normalised as the network
expects (``max |A^H d| = 1``, docs/design.md).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from passnet_core.masks import make_mask, parse_mask_name, seed_from_name
from training.acquisition import Cine, Sample, acquire
from training.data import SyntheticCines
from training.evaluate_cli import FAMILIES
from training.heldout_phantom import HELDOUT_FRAMES, HELDOUT_MATRIX, heldout_cine
from training.simulate import DEFAULT_NOISE

TEST_SEEDS = {"synthetic": 7_000_001, "heldout": 8_000_001}  # training uses 0.. and 1_000_000..
VALIDATION_SEEDS = {"synthetic": 7_500_001, "heldout": 8_500_001}  # baseline tuning only
HELDOUT_COILS = 12
SIMULATE_NOISE = DEFAULT_NOISE  # evaluation noise defaults to what `passnet simulate` writes


def make_cases(
    family: str, n: int, seed: int, size: tuple[int, int, int] | None = None, coils: int = 8
) -> list[Cine]:
    """``n`` cases of ``family``.

    Parameters
    ----------
    family
        ``"synthetic"`` or ``"heldout"``.
    n, seed
        Count and seed stream.
    size
        ``(T, H, W)``; default 16 x 128 x 128 (synthetic) or 24 x 112 x 144 (heldout).
    coils
        Coils of the synthetic family (the held-out family always uses its own 12-coil ring).
    """
    if family == "synthetic":
        t, h, w = size or (16, 128, 128)
        cines = SyntheticCines(
            n, seed=seed, coil_mode="multi", n_coils=coils, frames=t, matrix=(h, w)
        )
        out = []
        for i in range(n):
            cine = cines[i]
            assert cine.coil_maps is not None
            out.append(dataclasses.replace(cine, family=family))
        return out
    if family == "heldout":
        t, h, w = size or (HELDOUT_FRAMES, *HELDOUT_MATRIX)
        cases = []
        for i in range(n):
            target, maps = heldout_cine(seed + i, frames=t, matrix=(h, w), n_coils=HELDOUT_COILS)
            cases.append(Cine(target, maps, f"heldout-{seed}-{i}", family))
        return cases
    raise ValueError(f"unknown family {family!r} (choose from {', '.join(FAMILIES)})")


def case_data(case: Cine, mask_name: str, noise_level: float) -> Sample:
    """The case under ``mask_name`` with noise, normalised to ``max |A^H d| = 1``."""
    kind, accel = parse_mask_name(mask_name)
    t, h, w = case.target.shape
    assert case.coil_maps is not None  # both families are multi-coil
    mask = make_mask(kind, accel, t, h, w, seed=seed_from_name(f"{case.name}/{mask_name}"))
    rng = np.random.default_rng(seed_from_name(f"{case.name}/{mask_name}/noise"))
    sigma = noise_level * float(np.abs(case.target).max())
    return acquire(
        torch.from_numpy(case.target), torch.from_numpy(case.coil_maps), mask, sigma, rng
    )
