"""3D volumes: read DICOM series, NIfTI files and slice folders, normalise, encode as slices.

``read_volume`` gives a :class:`Volume` in one canonical frame (LPS, array
order z, y, x); a :class:`VolumeRecipe` turns it into intensities in [0, 1]
(CT windows, MR percentiles, the M3D recipe); ``encode_volume`` stores the
slices as lossless PNG frames with the metadata a Sample carries.

The names below load on first use (PEP 562), so importing one submodule
(``dicom_privacy``, ``core``) does not pay for SimpleITK, pydicom's series
reader and OpenCV.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from omnivmed.data.lazy import lazy_names

if TYPE_CHECKING:
    from omnivmed.data.volume.core import Volume, VolumeError, VolumeLimits
    from omnivmed.data.volume.discover import VolumeInput, find_volume_inputs, read_volume
    from omnivmed.data.volume.encode import EncodedVolume, encode_volume
    from omnivmed.data.volume.presets import PRESETS, VolumeRecipe, recipe_from_options

# public name -> the submodule defining it
_EXPORTS: dict[str, str] = {
    "Volume": "core",
    "VolumeError": "core",
    "VolumeLimits": "core",
    "VolumeInput": "discover",
    "find_volume_inputs": "discover",
    "read_volume": "discover",
    "EncodedVolume": "encode",
    "encode_volume": "encode",
    "PRESETS": "presets",
    "VolumeRecipe": "presets",
    "recipe_from_options": "presets",
}


__getattr__, __dir__ = lazy_names(__name__, _EXPORTS)


__all__ = [
    "PRESETS",
    "EncodedVolume",
    "Volume",
    "VolumeError",
    "VolumeInput",
    "VolumeLimits",
    "VolumeRecipe",
    "encode_volume",
    "find_volume_inputs",
    "read_volume",
    "recipe_from_options",
]
