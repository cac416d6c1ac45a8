"""A normalised volume as lossless PNG slices plus the metadata a volume Sample carries."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np

from omnivmed.data.volume.threads import volume_threads
from omnivmed.data.schema import VisualMeta
from omnivmed.data.volume.core import Volume
from omnivmed.data.volume.presets import Normalised, VolumeRecipe, apply_recipe, resolve

# How slices become PNG bytes. Sample ids hash these bytes, so a change here is a format
# change of every volume sample: bump PNG_ENCODING (stored in each sample's provenance).
#   1: zlib level 3, default strategy, libpng's adaptive filter choice.
#   2: zlib run-length strategy (Z_RLE: matches at distance 1 only), Paeth filter on every row.
#      On the M3D preset's slices about 2.2x faster than 1 on one thread and 9-12% smaller.
# OpenCV resets the strategy when it reads IMWRITE_PNG_COMPRESSION, so the level comes first
# (with Z_RLE, zlib ignores the level beyond "not 0").
PNG_ENCODING = "png-2 (zlib rle, paeth)"
PNG_PARAMS = (
    cv2.IMWRITE_PNG_COMPRESSION, 1,
    cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE,
    cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_PAETH,
)  # fmt: skip

# Slices are encoded on a few threads (OpenCV releases the GIL; volume_threads()); every slice's
# bytes depend on that slice alone, so the thread count never changes the output.

# DICOM Modality -> our vocabulary (schema.MODALITIES); anything else stays unspecified.
DICOM_MODALITIES = {"CT": "ct", "MR": "mri", "PT": "pet", "US": "ultrasound", "XA": "angiography", "MG": "mammography"}


@dataclass(frozen=True)
class EncodedVolume:
    frames: tuple[bytes, ...]
    frame_format: str
    visual_meta: VisualMeta
    modality: str | None  # our vocabulary, when the header says; None otherwise
    fields: tuple[tuple[str, str], ...]  # for provenance: how it was read and normalised, allow-listed header


def quantise(values01: np.ndarray, bit_depth: int) -> np.ndarray:
    """[0, 1] floats to 8- or 16-bit integers (round to nearest), any shape."""
    top = 255 if bit_depth == 8 else 65535
    # Clipped first: a value a hair outside [0, 1] must not wrap around in the cast.
    scaled = np.clip(values01, 0.0, 1.0)
    scaled *= top
    return np.rint(scaled, out=scaled).astype(np.uint8 if bit_depth == 8 else np.uint16)


def png_bytes(pixels: np.ndarray) -> bytes:
    """One 2D uint8/uint16 array as a lossless PNG, with the project's encoder settings."""
    ok, data = cv2.imencode(".png", pixels, PNG_PARAMS)
    if not ok:
        raise RuntimeError("OpenCV could not encode a PNG slice")
    return data.tobytes()


def to_png(slice01: np.ndarray, bit_depth: int) -> bytes:
    return png_bytes(quantise(slice01, bit_depth))


_pool: tuple[int, int, ThreadPoolExecutor] | None = None  # (pid that made it, threads, pool)


def _shared_pool(threads: int) -> ThreadPoolExecutor:
    """One pool per process: builders encode volume after volume. A forked worker process
    inherits the object but not its threads, so it makes its own."""
    global _pool
    if _pool is None or _pool[0] != os.getpid() or _pool[1] != threads:
        _pool = (os.getpid(), threads, ThreadPoolExecutor(threads, thread_name_prefix="png-encode"))
    return _pool[2]


def encode_slices(pixels: np.ndarray, threads: int | None = None) -> tuple[bytes, ...]:
    """Every slice of a quantised (D, H, W) array as PNG bytes, in order, on ``threads`` threads
    (default :func:`~omnivmed.data.volume.threads.volume_threads`)."""
    default = volume_threads()
    threads = default if threads is None else threads
    if threads <= 1 or len(pixels) < 2:
        return tuple(png_bytes(s) for s in pixels)
    if threads == default:
        return tuple(_shared_pool(threads).map(png_bytes, pixels))
    with ThreadPoolExecutor(threads, thread_name_prefix="png-encode") as pool:
        return tuple(pool.map(png_bytes, pixels))


def from_png(data: bytes) -> np.ndarray:
    """Decode a stored slice back to float32 [0, 1] (8- or 16-bit)."""
    pixels = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    top = 255.0 if pixels.dtype == np.uint8 else 65535.0
    return pixels.astype(np.float32) / top


def encode_normalised(volume: Volume, normalised: Normalised, threads: int | None = None) -> EncodedVolume:
    recipe = normalised.recipe
    frames = encode_slices(quantise(normalised.voxels, recipe.bit_depth), threads)
    meta = VisualMeta(
        spacing_mm=normalised.spacing_mm,
        orientation=volume.direction,
        original_shape=volume.original_shape,
        frame_indices=normalised.slice_indices,
    )
    fields = [
        ("volume_format", volume.kind),
        ("preset", recipe.name),
        ("normalisation", recipe.describe()),
        ("frame_encoding", PNG_ENCODING),
    ]
    if volume.acquisition_plane:
        fields.append(("acquisition_plane", volume.acquisition_plane))
    if volume.dropped_slices:
        fields.append(("dropped_slices", str(volume.dropped_slices)))
    fields.extend((f"dicom.{k}", v) for k, v in volume.header)
    return EncodedVolume(frames, "png", meta, DICOM_MODALITIES.get(volume.modality or ""), tuple(fields))


def encode_volume(
    volume: Volume, recipe: VolumeRecipe | str, source: str = "<volume>", threads: int | None = None
) -> EncodedVolume:
    """Normalise with ``recipe`` (or ``"auto"``) and encode every slice (``threads``: default volume_threads())."""
    return encode_normalised(volume, apply_recipe(resolve(recipe, volume), volume, source), threads)
