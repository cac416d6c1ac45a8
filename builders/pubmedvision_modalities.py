"""PubMedVision's modality tags onto the schema's 14 modalities.

PubMedVision labels each row with the free-text modality its GPT-4V pass
wrote ("Computed Tomography", "CT Scan", "Microscopy Images", ...). Tags are
compared after lower-casing and collapsing spaces; a tag outside this table
becomes ``unspecified`` (the builder counts them) rather than a guess.
"""

from __future__ import annotations

from omnivmed.data.schema import UNSPECIFIED_MODALITY

MODALITY_TAGS: dict[str, str] = {
    "computed tomography": "ct",
    "ct": "ct",
    "ct scan": "ct",
    "cta": "angiography",
    "magnetic resonance imaging": "mri",
    "mri": "mri",
    "mr": "mri",
    "mri scan": "mri",
    "x-ray": "x_ray",
    "x ray": "x_ray",
    "xray": "x_ray",
    "radiography": "x_ray",
    "digital radiography": "x_ray",
    "fluoroscopy": "x_ray",
    "ultrasound": "ultrasound",
    "ultrasonography": "ultrasound",
    "sonography": "ultrasound",
    "positron emission tomography": "pet",
    "pet": "pet",
    "pet scan": "pet",
    "pet-ct": "pet",
    "pet/ct": "pet",
    "angiography": "angiography",
    "digital subtraction angiography": "angiography",
    "mammography": "mammography",
    "mammogram": "mammography",
    "histopathology": "pathology",
    "histology": "pathology",
    "pathology": "pathology",
    "microscopy": "microscopy",
    "microscopy images": "microscopy",
    "endoscopy": "endoscopy",
    "dermoscopy": "dermoscopy",
    "dermatoscopy": "dermoscopy",
    "fundus photography": "fundus",
    "fundus": "fundus",
    "optical coherence tomography": "oct",
    "oct": "oct",
    "digital photography": "digital_photography",
    "clinical photography": "digital_photography",
    "photography": "digital_photography",
}


def normalise_tag(tag) -> str:
    return " ".join(str(tag or "").lower().split())


def map_modality(tag) -> tuple[str, bool]:
    """(schema modality, whether the tag was known)."""
    found = MODALITY_TAGS.get(normalise_tag(tag))
    return (found, True) if found else (UNSPECIFIED_MODALITY, False)
