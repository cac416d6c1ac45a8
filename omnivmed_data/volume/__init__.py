"""3D volumes: read DICOM series, NIfTI files and slice folders, normalise, encode as slices.

``read_volume`` gives a :class:`Volume` in one canonical frame (LPS, array
order z, y, x); a :class:`VolumeRecipe` turns it into intensities in [0, 1]
(CT windows, MR percentiles, the M3D recipe); ``encode_volume`` stores the
slices as lossless PNG frames with the metadata a Sample carries.
"""

from omnivmed.data.volume.core import Volume, VolumeError, VolumeLimits
from omnivmed.data.volume.discover import VolumeInput, find_volume_inputs, read_volume
from omnivmed.data.volume.encode import EncodedVolume, encode_volume
from omnivmed.data.volume.presets import PRESETS, VolumeRecipe, recipe_from_options

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
