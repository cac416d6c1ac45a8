"""A normalised volume as lossless PNG slices plus the metadata a volume Sample carries."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from omnivmed.data.schema import VisualMeta
from omnivmed.data.volume.core import Volume
from omnivmed.data.volume.presets import Normalised, VolumeRecipe, apply_recipe, resolve

# zlib level 3: within a few per cent of level 9's size here at a fraction of the time.
PNG_COMPRESSION = 3

# DICOM Modality -> our vocabulary (schema.MODALITIES); anything else stays unspecified.
DICOM_MODALITIES = {"CT": "ct", "MR": "mri", "PT": "pet", "US": "ultrasound", "XA": "angiography", "MG": "mammography"}


@dataclass(frozen=True)
class EncodedVolume:
    frames: tuple[bytes, ...]
    frame_format: str
    visual_meta: VisualMeta
    modality: str | None  # our vocabulary, when the header says; None otherwise
    fields: tuple[tuple[str, str], ...]  # for provenance: how it was read and normalised, allow-listed header


def to_png(slice01: np.ndarray, bit_depth: int) -> bytes:
    top = 255 if bit_depth == 8 else 65535
    # Clipped first: a value a hair outside [0, 1] must not wrap around in the cast.
    pixels = np.rint(np.clip(slice01, 0.0, 1.0) * top).astype(np.uint8 if bit_depth == 8 else np.uint16)
    ok, data = cv2.imencode(".png", pixels, [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION])
    if not ok:
        raise RuntimeError("OpenCV could not encode a PNG slice")
    return data.tobytes()


def from_png(data: bytes) -> np.ndarray:
    """Decode a stored slice back to float32 [0, 1] (8- or 16-bit)."""
    pixels = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    top = 255.0 if pixels.dtype == np.uint8 else 65535.0
    return pixels.astype(np.float32) / top


def encode_normalised(volume: Volume, normalised: Normalised) -> EncodedVolume:
    recipe = normalised.recipe
    frames = tuple(to_png(s, recipe.bit_depth) for s in normalised.voxels)
    meta = VisualMeta(
        spacing_mm=normalised.spacing_mm,
        orientation=volume.direction,
        original_shape=volume.original_shape,
        frame_indices=normalised.slice_indices,
    )
    fields = [("volume_format", volume.kind), ("preset", recipe.name), ("normalisation", recipe.describe())]
    if volume.acquisition_plane:
        fields.append(("acquisition_plane", volume.acquisition_plane))
    if volume.dropped_slices:
        fields.append(("dropped_slices", str(volume.dropped_slices)))
    fields.extend((f"dicom.{k}", v) for k, v in volume.header)
    return EncodedVolume(frames, "png", meta, DICOM_MODALITIES.get(volume.modality or ""), tuple(fields))


def encode_volume(volume: Volume, recipe: VolumeRecipe | str, source: str = "<volume>") -> EncodedVolume:
    """Normalise with ``recipe`` (or ``"auto"``) and encode every slice."""
    return encode_normalised(volume, apply_recipe(resolve(recipe, volume), volume, source))
