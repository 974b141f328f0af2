"""Reconstructed images grouped into slices, each a stack of frames in time order."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import ismrmrd
    import numpy as np


@dataclass
class SliceStack:
    """The frames of one slice in time order (``image_index`` order), with their headers."""

    slice_index: int
    images: list[ismrmrd.Image]

    def magnitudes(self) -> np.ndarray:
        """``(T, H, W)`` float32 magnitudes of the frames."""
        import numpy as np

        return np.stack([np.abs(im.data[0, 0]) for im in self.images]).astype(np.float32)


def slice_stacks(images: Sequence[ismrmrd.Image]) -> list[SliceStack]:
    """Group images by ``slice`` (ascending) and order each slice's frames by ``image_index``.

    Raises
    ------
    ValueError
        No images.
    """
    if not images:
        raise ValueError("no images to export")
    groups: dict[int, list[ismrmrd.Image]] = {}
    for image in images:
        groups.setdefault(int(image.slice), []).append(image)
    return [
        SliceStack(s, sorted(groups[s], key=lambda im: int(im.image_index))) for s in sorted(groups)
    ]


def volume(stacks: Sequence[SliceStack]) -> np.ndarray:
    """``(S, T, H, W)`` float32 magnitudes.

    Raises
    ------
    ValueError
        The slices differ in frame count or matrix size (no common array).
    """
    import numpy as np

    shapes = {(len(s.images), *s.images[0].data.shape[-2:]) for s in stacks}
    if len(shapes) != 1:
        raise ValueError(f"slices differ in (frames, rows, columns): {sorted(shapes)}")
    return np.stack([s.magnitudes() for s in stacks])
