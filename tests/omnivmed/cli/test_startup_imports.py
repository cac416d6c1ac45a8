"""The command lines start light: their help never imports the decoders, Arrow or torch.

Each check runs in a fresh interpreter and reads ``sys.modules`` (no timing).
Listing the sources reads the builder registry's names, so the registry's
names are checked against the classes' ``info.name`` here too, and the lazy
re-exports of the packages that defer their imports are checked to resolve.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest

from omnivmed.builders import builder_class, builder_names

HEAVY = (
    "pyarrow",
    "polars",
    "datasets",
    "numpy",
    "pydicom",
    "SimpleITK",
    "av",
    "cv2",
    "matplotlib",
    "torch",
    "transformers",
    "openai",
)


def heavy_loaded_by(code: str) -> list[str]:
    """The HEAVY modules in sys.modules after a fresh interpreter runs ``code``."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps([m for m in {list(HEAVY)!r} if m in sys.modules]))"
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_importing_the_data_cli_loads_no_heavy_library():
    assert heavy_loaded_by("import omnivmed.cli.data") == []


@pytest.mark.parametrize("args", [["--help"], ["build", "--help"], ["sources", "--help"], ["stats", "--help"]])
def test_data_cli_help_loads_no_heavy_library(args):
    code = f"from omnivmed.cli.data import app\ntry:\n    app({args!r}, prog_name='omnivmed-data')\nexcept SystemExit:\n    pass"
    assert heavy_loaded_by(code) == []


def test_listing_builder_names_imports_no_builder():
    code = "import sys\nfrom omnivmed.builders import builder_names\nbuilder_names()\nassert 'omnivmed.builders.base' not in sys.modules"
    assert heavy_loaded_by(code) == []


@pytest.mark.parametrize("name", builder_names())
def test_registry_names_are_the_builders_own(name):
    assert builder_class(name).info.name == name


def test_unknown_source_is_a_key_error_naming_the_known_ones():
    with pytest.raises(KeyError, match="known: .*vqa_rad"):
        builder_class("no_such_source")


@pytest.mark.parametrize("package", ["omnivmed.builders", "omnivmed.data.video", "omnivmed.data.volume"])
def test_every_lazy_export_resolves(package):
    module = importlib.import_module(package)
    for name in module.__all__:
        assert getattr(module, name) is not None, name
    with pytest.raises(AttributeError):
        module.no_such_name
