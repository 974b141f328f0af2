"""``passnet evaluate``: PASSNet against classical methods at their best, on two phantom families.

Cases (:mod:`training.eval_cases`): the training generator's cardiac cines from a held-out seed
stream (``synthetic``) and an independent generator that training never draws from
(``heldout``), both with k-space noise at ``passnet simulate``'s level unless ``--noise-level``
says otherwise. Baselines are at their best: L+S runs the iteration count of the convergence
study (:mod:`training.tuning`, docs/evaluation.md), and BART's regularisation weight is tuned
per mask on validation cases disjoint from the test cases (the grid is in the notes).

Metrics (docs/design.md): per volume, after dividing by ``max |ground truth|``: PSNR of
magnitude images (multi-coil convention) and SSIM of magnitudes averaged over frames. The table
gives mean ± sample std over cases and the paired difference of the shipped PASSNet to every
other method with a 95 % t-interval.

Output (announced on stdout): ``OUT/evaluation.md`` (tables, notes, command and machine),
``OUT/evaluation.json`` (every number) and one figure per family and mask for the first case
(``OUT/fig_<family>_<mask>.png``).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from passnet_core import bart, baselines, metrics
from passnet_core import methods as registry
from passnet_core.inference import reconstruct
from passnet_core.masks import parse_mask_name
from passnet_core.operators import encoding
from passnet_core.weights import (
    load_weights,
    read_metadata,
    stored_config,
)
from training.acquisition import Sample
from training.eval_cases import (
    TEST_SEEDS,
    case_data,
    make_cases,
)
from training.eval_report import (
    MethodResult,
    paired_table,
    scores_table,
    strongest_baseline,
)
from training.evaluate_cli import FAMILIES
from training.figures import comparison_figure
from training.provenance import provenance
from training.tuning import (
    BART_GRIDS,
    BART_ITERS,
    bart_pics,
    bart_regulariser,
    tune_bart,
    validation_data,
)

log = logging.getLogger(__name__)

CLASSICAL = tuple(n for n in registry.EVALUATE_METHODS if registry.get(n).kind != "network")
REUSE_TOLERANCE_DB = 0.01  # a reused method must reproduce its stored first-case PSNR this well

Recon = Callable[[Sample, str], torch.Tensor]  # (data, mask name) -> (1, T, H, W)


# --------------------------------------------------------------------------- methods


def _passnet(path: Path, device: str) -> Recon:
    model = load_weights(path, map_location="cpu")

    def run(data: Sample, mask_name: str) -> torch.Tensor:
        return reconstruct(*data.batched(), model=model, device=device)

    return run


def _bart(method: str, lambdas: dict[str, float]) -> Recon:
    def run(data: Sample, mask_name: str) -> torch.Tensor:
        return bart_pics(data, bart_regulariser(method).format(lambdas[mask_name]))

    return run


def build_methods(
    names: Sequence[str],
    weights: dict[str, Path | None],
    device: str,
    bart_lambdas: dict[str, dict[str, float]],
) -> dict[str, Recon | str]:
    """Method name -> reconstruction, or a string saying why it is skipped.

    ``weights`` maps PASSNet method names to a weights file (``None``: the shipped one);
    ``bart_lambdas`` maps BART methods to their tuned weight per mask.
    """
    out: dict[str, Recon | str] = {}
    for name in names:
        method = registry.get(name)
        if method.kind == "operator":
            out[name] = _on_operator(method.load())
        elif method.kind == "bart":
            if not bart.available():
                out[name] = "bart not installed"
            else:
                out[name] = _bart(name, bart_lambdas[name])
        else:
            path = weights.get(name) or method.shipped_weights()
            out[name] = _passnet(path, device) if path.is_file() else f"no weights at {path}"
    return out


def _on_operator(reconstruction: Callable[..., torch.Tensor]) -> Recon:
    def run(data: Sample, mask_name: str) -> torch.Tensor:
        kspace, op = encoding(*data.batched())
        return reconstruction(op, kspace)

    return run


def describe_recipe(path: Path) -> str:
    """One line on how a weights file was trained, from its own metadata.

    e.g. ``"5 stages from llr (lambda 0.05, 60 iterations from A^H d), pass, step softplus,
    1500 steps (15 x 100), weights format 3"``.
    """
    meta = read_metadata(path)
    config = stored_config(meta, path)
    training = meta.get("training", {}).get("training_config", {})
    epochs = training.get("optim", {}).get("epochs")
    per_epoch = training.get("run", {}).get("max_steps_per_epoch")
    steps = f"{epochs * per_epoch} steps ({epochs} x {per_epoch})" if epochs and per_epoch else ""
    start = config.start
    if start == "llr":
        static = config.start_lambda_static
        same_lines = "" if static is None else f", {static:g} where every frame has the same lines"
        start += (
            f" (lambda {config.start_lambda:g}{same_lines}, {config.start_iterations} iterations "
            f"from {baselines.LLR_INITS[config.start_init]})"
        )
    parts = [
        f"{config.n_stages} stages from {start}",
        config.shrinkage,
        f"step {config.step_param}",
        steps,
        f"weights format {meta['format_version']}",
    ]
    return ", ".join(p for p in parts if p)


# --------------------------------------------------------------------------- evaluation


def evaluate_family(
    methods: dict[str, Recon | str],
    family: str,
    masks: Sequence[str],
    n_cases: int,
    noise_level: float,
    out_dir: Path,
    size: tuple[int, int, int] | None = None,
    coils: int = 8,
    reused: dict[str, MethodResult] | None = None,
) -> dict[str, MethodResult]:
    """Run every method on every (case, mask) of ``family``; one figure per mask for case 0.

    Methods in ``reused`` (stored results of an earlier run on the same cases) run on case 0
    only, for the figure and to check that they reproduce their stored PSNR; their scores and
    times are the stored ones.
    """
    reused = reused or {}
    cases = make_cases(family, n_cases, TEST_SEEDS[family], size, coils)
    results = {
        name: reused.get(name) or MethodResult(name, skipped=fn if isinstance(fn, str) else None)
        for name, fn in methods.items()
    }
    for i, case in enumerate(cases):
        for mask_name in masks:
            data = case_data(case, mask_name, noise_level)
            shown: dict[str, np.ndarray] = {}
            line = []
            for name, fn in methods.items():
                if isinstance(fn, str) or (i > 0 and name in reused):
                    continue
                start = time.perf_counter()
                recon = fn(data, mask_name)[0].to(torch.complex64).cpu()
                seconds = time.perf_counter() - start
                psnr = float(metrics.psnr(recon, data.target, magnitude=True))
                shown[name] = recon.numpy()
                line.append(f"{name} {psnr:.2f}")
                if name in reused:
                    stored = reused[name].psnr[mask_name][0]
                    if abs(psnr - stored) > REUSE_TOLERANCE_DB:
                        raise ValueError(
                            f"--reuse: {name} scores {psnr:.3f} dB on {case.name} {mask_name}, "
                            f"the stored result {stored:.3f} dB: not the same cases or method"
                        )
                    continue
                results[name].seconds.append(seconds)
                results[name].psnr.setdefault(mask_name, []).append(psnr)
                results[name].ssim.setdefault(mask_name, []).append(
                    float(metrics.ssim(recon, data.target))
                )
            if i == 0 and shown:
                path = comparison_figure(
                    data.target.numpy(),
                    shown,
                    data.mask.numpy(),
                    out_dir / f"fig_{family}_{mask_name}.png",
                    title=f"{case.name}, {mask_name}, noise {noise_level}",
                    magnitude_psnr=True,
                )
                print(f"wrote {path}")
            log.info("%s case %d/%d %s: %s", family, i + 1, n_cases, mask_name, ", ".join(line))
    return results


def markdown(
    per_family: dict[str, dict[str, MethodResult]],
    masks: Sequence[str],
    notes: list[str],
) -> str:
    """The evaluation as Markdown: per family a score table and a paired-difference table."""
    lines = ["# PASSNet evaluation", ""]
    for family, results in per_family.items():
        n = max((len(r.psnr.get(masks[0], [])) for r in results.values()), default=0)
        lines += [f"## {family} family ({n} cases)", ""]
        lines += ["PSNR (dB) / SSIM, mean ± std over cases.", ""]
        lines += scores_table(results, masks) + [""]
        lines += ["Paired differences, mean [95 % CI] over cases (PSNR) / mean (SSIM):", ""]
        lines += paired_table(results, masks, "passnet") + [""]
        best = strongest_baseline(results, masks, CLASSICAL)
        if best and "passnet" in results and not results["passnet"].skipped:
            standing = []
            for m, b in best.items():
                gap = np.mean(results["passnet"].psnr[m]) - np.mean(results[b].psnr[m])
                standing.append(f"{m}: {gap:+.2f} dB vs {b}")
            lines += [
                "Shipped PASSNet against the strongest classical method per mask: "
                + "; ".join(standing)
                + ".",
                "",
            ]
    lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)


def _notes(
    args: argparse.Namespace,
    tuned: dict,
    families: Sequence[str],
    weights: dict[str, Path | None],
    names: Sequence[str],
) -> list[str]:
    notes = [
        "Data: `synthetic` = cardiac cines of the training generator from a held-out seed "
        f"stream (seed {TEST_SEEDS['synthetic']}, {args.size or '16,128,128'} T,H,W, "
        f"{args.coils} coils); `heldout` = the independent generator of "
        "training/heldout_phantom.py (24 x 112 x 144, 12-coil ring), which training never uses."
        if "heldout" in families
        else "Data: cardiac cines of the training generator from a held-out seed stream.",
        f"Noise: white complex Gaussian on acquired samples, std {args.noise_level} x peak per "
        "coil (passnet simulate's level after prewhitening).",
        "Masks: fixed per (case, mask), seeded by name; vds_lines = per-frame random "
        "Cartesian lines, radial-N = N lines through the centre per frame (random rotation "
        "per frame) on the grid, vds = "
        "per-frame variable-density random points (docs/method.md).",
        "Metrics: per volume after dividing by max |truth|; PSNR on magnitudes, SSIM on "
        "magnitudes averaged over frames; 95 % CI from Student's t on per-case differences.",
        f"L+S: lambda_L {baselines.LPLUSS_LAMBDA_L}, lambda_S {baselines.LPLUSS_LAMBDA_S}, "
        f"{baselines.LPLUSS_N_ITER} iterations, no early stop (convergence study, "
        "docs/evaluation.md).",
    ]
    for method, per_mask in tuned.items():
        chosen = ", ".join(f"{m}: {v['best']:g}" for m, v in per_mask.items())
        grid = ", ".join(f"{v:g}" for v in BART_GRIDS[method])
        notes.append(
            f"{method}: `pics -R {bart_regulariser(method).format('lambda')} -i {BART_ITERS}`, "
            f"lambda tuned per mask on {args.tune_cases} validation cases (seeds disjoint from "
            f"the test cases) over {{{grid}}}; chosen {chosen}."
        )
    notes.append(
        f"llr: locally low rank, {baselines.LLR_BLOCK} x {baselines.LLR_BLOCK} blocks, lambda "
        f"{baselines.LLR_LAMBDA}, {baselines.LLR_N_ITER} FISTA iterations with random block "
        f"shifts from {baselines.LLR_INITS[baselines.LLR_INIT]} (passnet_core.baselines.llr): the "
        "chain's `llr` method; where it is the shipped PASSNet's warm start (its recipe, "
        "below), `passnet − llr` is what the learned stages add."
    )
    recipes = []
    for name in ("passnet", "passnet-adjoint", "passnet-uniform"):
        path = weights.get(name) or registry.get(name).shipped_weights()
        if name in names and path.is_file():
            recipes.append(f"`{name}` ({path.name}: {describe_recipe(path)})")
    notes.append(
        "PASSNet variants: `passnet` = shipped default (LLR warm start, "
        "training/configs/chain_files.yaml), `passnet-adjoint` = the paper's A^H d start (an "
        "earlier recipe), `passnet-uniform` = uniform-SVT ablation (training/configs/"
        "cpu_default.yaml, stage 1 of the default's recipe); docs/training.md; as each file "
        "records it: " + "; ".join(recipes) + ". Times: CPU, this machine."
    )
    if args.reuse_methods:
        notes.append(
            f"Reused from the earlier run in {args.reuse} (same cases; each reproduced its "
            f"stored first-case PSNR within {REUSE_TOLERANCE_DB} dB in this run): "
            f"{args.reuse_methods}. Their times are those of the run that wrote the file."
        )
    return notes


# --------------------------------------------------------------------------- CLI


def _load_reused(
    args: argparse.Namespace, masks: Sequence[str], families: Sequence[str], names: Sequence[str]
) -> dict | None:
    """The ``--reuse`` file, checked to describe the same cases; ``None`` without ``--reuse``."""
    if not names:
        if args.reuse is not None:
            raise ValueError("--reuse needs --reuse-methods (which methods to take from it)")
        return None
    if args.reuse is None:
        raise ValueError("--reuse-methods needs --reuse FILE")
    try:
        stored = json.loads(Path(args.reuse).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"--reuse {args.reuse}: {err}") from err
    expected = {
        "n_cases": args.n_cases,
        "masks": list(masks),
        "noise_level": args.noise_level,
        "size": args.size,
        "coils": args.coils,
    }
    older = {"size": None, "coils": 8}  # files before these keys were written with the defaults
    for key, value in expected.items():
        found = stored.get(key, older.get(key))
        if found != value:
            raise ValueError(f"--reuse {args.reuse}: {key} is {found!r}, not {value!r}")
    for family in families:
        for name in names:
            entry = stored.get("families", {}).get(family, {}).get(name)
            if entry is None or entry.get("skipped"):
                raise ValueError(f"--reuse {args.reuse}: no results of {name} on {family}")
    return stored


def _reused_results(
    stored: dict | None, family: str, names: Sequence[str]
) -> dict[str, MethodResult]:
    if stored is None:
        return {}
    out = {}
    for name in names:
        entry = stored["families"][family][name]
        out[name] = MethodResult(name, None, entry["psnr"], entry["ssim"], entry["seconds"])
    return out


def _parse_list(text: str, allowed: Sequence[str] | None, what: str) -> list[str]:
    items = [s.strip() for s in text.split(",") if s.strip()]
    if not items:
        raise ValueError(f"--{what}: empty list")
    for item in items:
        if allowed is not None and item not in allowed:
            raise ValueError(f"--{what}: unknown {item!r} (choose from {', '.join(allowed)})")
    return items


def _parse_size(text: str | None) -> tuple[int, int, int] | None:
    if text is None:
        return None
    try:
        t, h, w = (int(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--size: expected T,H,W integers, got {text!r}") from None
    if t < 2 or h < 16 or w < 16:
        raise ValueError(f"--size: need T >= 2 and H, W >= 16, got {text!r}")
    return t, h, w


def run(args: argparse.Namespace) -> int:
    """Entry point of ``passnet evaluate``."""
    try:
        masks = _parse_list(args.masks, None, "masks")
        for m in masks:
            parse_mask_name(m)
        names = _parse_list(args.methods, registry.EVALUATE_METHODS, "methods")
        families = _parse_list(args.families, FAMILIES, "families")
        size = _parse_size(args.size)
        if args.n_cases < 1 or args.coils < 1 or args.tune_cases < 1:
            raise ValueError("--n-cases, --coils and --tune-cases must be >= 1")
        if not 0 <= args.noise_level < 1:
            raise ValueError(f"--noise-level: need 0 <= level < 1, got {args.noise_level}")
        weights = {
            "passnet": args.weights,
            "passnet-uniform": args.weights_uniform,
            "passnet-adjoint": args.weights_adjoint,
        }
        for name, path in weights.items():
            if path is not None and not Path(path).is_file():
                raise ValueError(f"weights for {name}: no file {path}")
        reuse_names = (
            _parse_list(args.reuse_methods, names, "reuse-methods") if args.reuse_methods else []
        )
        stored = _load_reused(args, masks, families, reuse_names)
    except ValueError as err:
        log.error("%s", err)
        return 2
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    bart_methods = [n for n in names if registry.get(n).kind == "bart" and bart.available()]
    tuned: dict = {}
    if stored and all(n in reuse_names for n in bart_methods):
        tuned = {m: v for m, v in stored.get("bart_tuning", {}).items() if m in bart_methods}
    elif bart_methods:
        log.info("tuning %s on %d validation case(s)", ", ".join(bart_methods), args.tune_cases)
        val = validation_data(masks, args.tune_cases, args.noise_level, size, args.coils)
        tuned = tune_bart(bart_methods, masks, val)
    lambdas = {m: {k: v["best"] for k, v in per.items()} for m, per in tuned.items()}
    methods = build_methods(names, weights, args.device, lambdas)
    for name, fn in methods.items():
        if isinstance(fn, str):
            if name in reuse_names:  # its stored scores could not be checked here
                log.error("--reuse-methods: %s cannot run here (%s)", name, fn)
                return 2
            print(f"{name}: skipped ({fn})")
    try:
        per_family = {
            family: evaluate_family(
                methods,
                family,
                masks,
                args.n_cases,
                args.noise_level,
                out_dir,
                size,
                args.coils,
                reused=_reused_results(stored, family, reuse_names),
            )
            for family in families
        }
    except ValueError as err:
        log.error("%s", err)
        return 2
    text = markdown(per_family, masks, _notes(args, tuned, families, weights, names))
    print(text)
    (out_dir / "evaluation.md").write_text(f"{text}\n{provenance()}")
    raw = {
        "n_cases": args.n_cases,
        "masks": masks,
        "noise_level": args.noise_level,
        "size": args.size,
        "coils": args.coils,
        "test_seeds": TEST_SEEDS,
        "reused": {"file": args.reuse, "methods": reuse_names} if stored else None,
        "bart_tuning": tuned,
        "families": {
            family: {
                name: {"skipped": r.skipped, "psnr": r.psnr, "ssim": r.ssim, "seconds": r.seconds}
                for name, r in results.items()
            }
            for family, results in per_family.items()
        },
    }
    (out_dir / "evaluation.json").write_text(json.dumps(raw, indent=1))
    print(f"wrote {out_dir / 'evaluation.md'}")
    print(f"wrote {out_dir / 'evaluation.json'}")
    return 0
