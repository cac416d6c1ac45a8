"""Builders, one module per source, listed in one explicit registry.

Import as ``omnivmed.builders``; ``get_builder("vqa_rad")`` returns a builder.

Importing this package is light: the registry names each builder's module and
class, and a builder module (with the decoders it needs: pydicom, SimpleITK,
PyAV, ...) is imported only when that builder is asked for. ``Builder``,
``LayoutError`` and the other names of :mod:`omnivmed.builders.base` (which
reads the Arrow schema, so pyarrow) load on first use too.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from omnivmed.data.lazy import lazy_names

if TYPE_CHECKING:
    from omnivmed.builders.base import Builder, BuilderOptionError, LayoutError, Reject, SourceInfo

# The registry: source name -> (module under omnivmed.builders, builder class).
# The name is the class's ``info.name`` (tests/omnivmed/cli/test_startup_imports.py checks).
_BUILDERS: dict[str, tuple[str, str]] = {
    "vqa_rad": ("vqa_rad", "VqaRadBuilder"),
    "slake": ("slake", "SlakeBuilder"),
    "pathvqa": ("pathvqa", "PathVqaBuilder"),
    "volumes": ("volumes", "VolumesBuilder"),
    "m3d_cap": ("m3d_cap", "M3dCapBuilder"),
    "m3d_vqa": ("m3d_vqa", "M3dVqaBuilder"),
    "cholec80_vqa": ("cholec80_vqa", "Cholec80VqaBuilder"),
    "endovis18_vqa": ("endovis18_vqa", "EndoVis18VqaBuilder"),
    "psiava_vqa": ("psiava_vqa", "PsiAvaVqaBuilder"),
    "pubmedvision": ("pubmedvision", "PubMedVisionBuilder"),
    "mimic_cxr": ("mimic_cxr", "MimicCxrBuilder"),
}

_BASE_NAMES = ("Builder", "BuilderOptionError", "LayoutError", "Reject", "SourceInfo")


def builder_names() -> list[str]:
    """The source names, sorted; imports no builder."""
    return sorted(_BUILDERS)


def builder_class(name: str) -> type[Builder]:
    """The builder class of source ``name`` (its module is imported now); KeyError for an unknown name."""
    if name not in _BUILDERS:
        raise KeyError(f"unknown source {name!r}; known: {', '.join(builder_names())}")
    module, cls = _BUILDERS[name]
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)


def get_builder(name: str, options: dict[str, str] | None = None) -> Builder:
    """A configured builder; raises KeyError for an unknown name, BuilderOptionError for bad options."""
    return builder_class(name)(**(options or {}))


# PEP 562: the base names load on first use, so listing sources stays light.
__getattr__, __dir__ = lazy_names(__name__, dict.fromkeys(_BASE_NAMES, "base"))


__all__ = ["Builder", "BuilderOptionError", "LayoutError", "Reject", "SourceInfo", "builder_class", "builder_names", "get_builder"]
