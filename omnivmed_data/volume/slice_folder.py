"""M3D-style slice folders: ``<int>.png|jpeg`` files, one per slice, ordered by the integer.

Read as M3D's own preparation script reads them: each slice converted to
8-bit grayscale and divided by 255, and only the slices of the most common
shape kept (M3D-Cap has series whose scout or key image differs in size).
Unlike M3D, an unreadable slice rejects the volume instead of silently
leaving a hole in it.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from omnivmed.data.volume.core import Volume, VolumeError, VolumeLimits

SLICE_NAME = re.compile(r"^(\d+)\.(png|jpe?g)$", re.IGNORECASE)


def slice_files(folder: Path) -> list[Path]:
    """Slice images of a folder, ordered by their integer names (2.png before 10.png)."""
    found = [(int(m.group(1)), p) for p in folder.iterdir() if p.is_file() and (m := SLICE_NAME.match(p.name))]
    return [p for _, p in sorted(found, key=lambda item: (item[0], item[1].name))]


def _reason(err: Exception, path: Path) -> str:
    """PIL's message without the user's folders (it quotes the full path)."""
    return str(err).replace(str(path), path.name)


def _slice_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as img:
            return img.height, img.width
    except (UnidentifiedImageError, OSError) as err:
        raise VolumeError("unreadable_slice", str(path), f"not a readable image ({_reason(err, path)})") from None


def read_slice_folder(folder: Path, limits: VolumeLimits = VolumeLimits()) -> Volume:
    files = slice_files(folder)
    if not files:
        raise VolumeError("empty_folder", str(folder), "no <int>.png/.jpeg slice files")
    sizes = [_slice_size(p) for p in files]
    common, _ = Counter(sizes).most_common(1)[0]
    kept = [p for p, s in zip(files, sizes) if s == common]
    voxels = len(kept) * common[0] * common[1]
    if voxels > limits.max_voxels:
        raise VolumeError("too_large", str(folder), f"{len(kept)}x{common[0]}x{common[1]} = {voxels:,} voxels exceeds the limit of {limits.max_voxels:,}")
    array = np.empty((len(kept), *common), dtype=np.float32)
    for i, path in enumerate(kept):
        try:
            with Image.open(path) as img:
                array[i] = np.asarray(img.convert("L"), dtype=np.float32) / 255.0
        except (UnidentifiedImageError, OSError) as err:
            raise VolumeError("unreadable_slice", str(path), f"slice cannot be decoded ({_reason(err, path)})") from None
    return Volume(
        voxels=array,
        kind="slices",
        spacing_mm=None,
        direction=None,
        original_shape=tuple(int(n) for n in array.shape),
        dropped_slices=len(files) - len(kept),
    )
