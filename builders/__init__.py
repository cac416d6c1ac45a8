"""Builders, one module per source, listed in one explicit registry.

Import as ``omnivmed.builders``; ``get_builder("vqa_rad")`` returns a builder.
"""

from __future__ import annotations

from omnivmed.builders.base import Builder, BuilderOptionError, LayoutError, Reject, SourceInfo


def _registry() -> dict[str, type[Builder]]:
    # Imported here so that importing one builder never pays for all of them.
    from omnivmed.builders.cholec80_vqa import Cholec80VqaBuilder
    from omnivmed.builders.endovis18_vqa import EndoVis18VqaBuilder
    from omnivmed.builders.m3d_cap import M3dCapBuilder
    from omnivmed.builders.m3d_vqa import M3dVqaBuilder
    from omnivmed.builders.mimic_cxr import MimicCxrBuilder
    from omnivmed.builders.pathvqa import PathVqaBuilder
    from omnivmed.builders.psiava_vqa import PsiAvaVqaBuilder
    from omnivmed.builders.pubmedvision import PubMedVisionBuilder
    from omnivmed.builders.slake import SlakeBuilder
    from omnivmed.builders.volumes import VolumesBuilder
    from omnivmed.builders.vqa_rad import VqaRadBuilder

    return {
        b.info.name: b
        for b in (
            VqaRadBuilder,
            SlakeBuilder,
            PathVqaBuilder,
            VolumesBuilder,
            M3dCapBuilder,
            M3dVqaBuilder,
            Cholec80VqaBuilder,
            EndoVis18VqaBuilder,
            PsiAvaVqaBuilder,
            PubMedVisionBuilder,
            MimicCxrBuilder,
        )
    }


def builder_names() -> list[str]:
    return sorted(_registry())


def get_builder(name: str, options: dict[str, str] | None = None) -> Builder:
    """A configured builder; raises KeyError for an unknown name, BuilderOptionError for bad options."""
    registry = _registry()
    if name not in registry:
        raise KeyError(f"unknown source {name!r}; known: {', '.join(sorted(registry))}")
    return registry[name](**(options or {}))


def builder_class(name: str) -> type[Builder]:
    registry = _registry()
    if name not in registry:
        raise KeyError(f"unknown source {name!r}; known: {', '.join(sorted(registry))}")
    return registry[name]


__all__ = ["Builder", "BuilderOptionError", "LayoutError", "Reject", "SourceInfo", "builder_class", "builder_names", "get_builder"]
