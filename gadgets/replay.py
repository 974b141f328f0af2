"""``passnet recon IN.h5 --out OUT.h5``: reconstruct an ISMRMRD raw file offline.

The file is read in one bulk h5py read, streamed through :func:`gadgets.chain.run_chain`
exactly as a Gadgetron connection would stream it, and the images are written as ISMRMRD
images (``dataset/image_<series>``), optionally also as a PNG montage, DICOM or NIfTI.
Exit codes: 0 every slice reconstructed; 1 a slice failed (the good slices are written
regardless); 2 nothing could be done: bad options, an output that would overwrite the input or
is a folder (checked before any work), an unreadable input, or the output cannot be written.
Those are one-line errors, never tracebacks.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from gadgets.chain import ChainParams, run_chain
from passnet_core.ismrmrd_io import read_raw, write_images

log = logging.getLogger("passnet.replay")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``passnet recon``."""
    parser.add_argument("input", type=Path, help="ISMRMRD raw data file (.h5)")
    parser.add_argument("--out", type=Path, required=True, help="output ISMRMRD image file")
    parser.add_argument("--weights", help="PASSNet weights (default: shipped weights)")
    parser.add_argument("--device", help="auto | cpu | cuda[:n]")
    parser.add_argument("--frame-dimension", choices=("phase", "repetition", "auto"))
    parser.add_argument(
        "--config",
        help="chain configuration: XML text, an XML file, or a config name in "
        "gadgetron_configs (its <external> <configuration> is used)",
    )
    parser.add_argument("--png", type=Path, help="write a montage of the frames + x-t profile")
    parser.add_argument("--dicom", type=Path, help="write one DICOM file per image here")
    parser.add_argument("--nifti", type=Path, help="write the magnitudes as NIfTI (x, y, t, slice)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def params_from_args(args: argparse.Namespace) -> ChainParams:
    """``--config`` read by the one chain-config path, then the explicit options on top.

    ``--config`` is XML text, an XML file or a shipped chain name: a whole Gadgetron chain is
    interpreted exactly as ``passnet serve`` interprets it, a step ``<configuration>`` as the
    gadget reads it (:meth:`gadgets.chain_config.ChainParams.from_config`).
    """
    from gadgets.chain_config import ChainParams, read_config_option

    params = ChainParams.from_config(read_config_option(args.config))
    return params.override(
        weights=args.weights, device=args.device, frame_dimension=args.frame_dimension
    )


def check_paths(args: argparse.Namespace) -> None:
    """Refuse, before any work, outputs that would destroy the input or cannot be files.

    Raises
    ------
    ValueError
        The input is missing or not a file; ``--out``, ``--png`` or ``--nifti`` is the input
        (also through a link), an existing folder, or in a folder that does not exist;
        ``--dicom`` is the input or an existing file; two outputs are the same file.
    """
    source = Path(args.input)
    if not source.is_file():
        raise ValueError(f"input {source}: no such file")
    files = {"--out": args.out, "--png": args.png, "--nifti": args.nifti}
    seen: dict[Path, str] = {}
    for option, value in files.items():
        if value is None:
            continue
        path = Path(value)
        if _same_file(path, source):
            raise ValueError(f"{option} {path} is the input file; refusing to overwrite it")
        if path.is_dir():
            raise ValueError(f"{option} {path} is a folder; give a file name")
        if option == "--out" and not path.parent.resolve().is_dir():
            raise ValueError(f"{option} {path}: folder {path.parent} does not exist")
        resolved = path.resolve()
        if resolved in seen:
            raise ValueError(f"{option} and {seen[resolved]} are the same file {path}")
        seen[resolved] = option
    if args.dicom is not None:
        folder = Path(args.dicom)
        if _same_file(folder, source) or folder.is_file():
            raise ValueError(f"--dicom {folder} is a file; give a folder")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def _write_atomically(path: Path, images: list, header_xml: str) -> None:
    """Write next to ``path``, then rename: a failed write never leaves half a file."""
    partial = path.with_name(f".{path.name}.partial")
    partial.unlink(missing_ok=True)
    try:
        write_images(partial, images, header_xml)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def run(args: argparse.Namespace) -> int:
    """Reconstruct ``args.input`` into ``args.out``.

    Returns
    -------
    int
        0 on success, 1 if any slice failed, 2 when nothing could be done (bad options or
        paths, unreadable input, output not writable), reported in one log line.
    """
    try:
        check_paths(args)
        params = params_from_args(args)
    except (ValueError, OSError) as exc:
        log.error("%s", exc)
        return 2
    t0 = time.perf_counter()
    try:
        raw = read_raw(args.input)
    except Exception as exc:  # truncated/corrupt HDF5 raises OSError, KeyError, ... from h5py
        log.error("cannot read %s: %s", args.input, _one_line(exc))
        return 2
    t_read = time.perf_counter() - t0
    images: list = []
    items = tqdm(
        raw.acquisitions(),
        total=len(raw),
        unit="acq",
        desc="replay",
        disable=args.no_progress or None,
    )
    t1 = time.perf_counter()
    report = run_chain(raw.header, items, images.append, params)
    t_chain = time.perf_counter() - t1
    try:
        _write_atomically(Path(args.out), images, raw.header_xml)
    except Exception as exc:  # full disk, permissions, ...: one line, not a traceback
        log.error("cannot write %s: %s", args.out, _one_line(exc))
        return 2
    compute = sum(t["total_s"] for t in report.timings)
    log.info(
        "%d acquisitions: read %.2f s, chain %.2f s (recon %.2f s); ingest %.0f acq/s; "
        "%d images -> %s",
        len(raw), t_read, t_chain, compute,
        len(raw) / max(t_read + t_chain - compute, 1e-9), len(images), args.out,
    )  # fmt: skip
    for error in report.errors:
        log.error("%s", error)
    extras_ok = _write_extras(args, images) if images else True
    return 1 if report.slices_failed or report.errors or not extras_ok else 0


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if isinstance(exc, ValueError) else f"{type(exc).__name__}: {text}"


def _volume(images: list) -> np.ndarray:
    """Magnitudes ``(S, T, H, W)`` ordered by slice and image index."""
    by_slice: dict[int, list] = {}
    for im in sorted(images, key=lambda i: i.image_index):
        by_slice.setdefault(int(im.slice), []).append(np.abs(im.data[0, 0]))
    n_t = max(len(v) for v in by_slice.values())
    frames = [v + [np.zeros_like(v[0])] * (n_t - len(v)) for _, v in sorted(by_slice.items())]
    return np.asarray(frames, dtype=np.float32)


def _write_extras(args: argparse.Namespace, images: list) -> bool:
    """PNG/NIfTI/DICOM outputs; False (logged in one line) when one could not be written."""
    try:
        if args.png:
            write_montage(_volume(images), args.png)
        if args.nifti:
            write_nifti(_volume(images), images[0], args.nifti)
        if args.dicom:
            write_dicom(images, args.dicom)
    except ImportError as exc:
        log.error("optional output skipped (install passnet-gadgetron[io]): %s", exc)
    except (OSError, ValueError) as exc:
        log.error("cannot write an optional output: %s", _one_line(exc))
        return False
    return True


def write_montage(volume: np.ndarray, path: Path) -> None:
    """PNG: the frames of each slice in a row, then an x-t profile through the centre row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_s, n_t, h, w = volume.shape
    cols = min(n_t, 8) + 1
    fig, axes = plt.subplots(n_s, cols, figsize=(2 * cols, 2 * n_s), squeeze=False)
    vmax = float(np.percentile(volume, 99.5)) or 1.0
    for s in range(n_s):
        for t in range(cols - 1):
            axes[s, t].imshow(volume[s, t], cmap="gray", vmin=0, vmax=vmax)
            axes[s, t].set_title(f"s{s} t{t}", fontsize=7)
        axes[s, -1].imshow(volume[s, :, h // 2, :], cmap="gray", vmin=0, vmax=vmax, aspect="auto")
        axes[s, -1].set_title("x-t", fontsize=7)
    for ax in axes.ravel():
        ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def write_nifti(volume: np.ndarray, first, path: Path) -> None:
    """NIfTI of shape (W, H, T, S) = (readout, phase, frame, slice) with mm voxel sizes."""
    import nibabel as nib

    _, _, h, w = volume.shape
    fov = first.field_of_view
    affine = np.diag([fov[0] / w, fov[1] / h, fov[2], 1.0])
    data = volume.transpose(3, 2, 1, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), str(path))


def write_dicom(images: list, folder: Path) -> None:
    """One minimal secondary-capture-like MR DICOM per image (uint16 magnitudes)."""
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    series = generate_uid()
    for im in images:
        pixels = np.clip(np.abs(im.data[0, 0]), 0, 65535).astype(np.uint16)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / f"image_{int(im.slice):03d}_{int(im.image_index):04d}.dcm"
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
        ds.SeriesInstanceUID, ds.StudyInstanceUID = series, series
        ds.Modality, ds.SeriesDescription = "MR", "PASSNet"
        ds.InstanceNumber = int(im.image_index)
        ds.Rows, ds.Columns = pixels.shape
        ds.PixelSpacing = [
            float(im.field_of_view[1]) / pixels.shape[0],
            float(im.field_of_view[0]) / pixels.shape[1],
        ]
        ds.SliceThickness = float(im.field_of_view[2])
        ds.ImagePositionPatient = [float(v) for v in im.position]
        ds.ImageOrientationPatient = [float(v) for v in (*im.read_dir, *im.phase_dir)]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = pixels.tobytes()
        pydicom.dcmwrite(str(path), ds, enforce_file_format=True)
