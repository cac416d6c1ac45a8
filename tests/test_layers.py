"""Imports go one way: the app over builders, captioner and trainer, all of them over the formats.

An AST walk over every module of the five folders (imports inside functions
included). A module may import its own package and the layers below it;
builders, captioner and trainer never import each other; the formats import
none of them; no module imports another module's private name.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# folder -> (its import name, the layers it may import besides itself)
LAYERS: dict[str, tuple[str, frozenset[str]]] = {
    "omnivmed_data": ("omnivmed.data", frozenset()),
    "builders": ("omnivmed.builders", frozenset({"omnivmed.data"})),
    "rejection_sampling": ("omnivmed.rejection_sampling", frozenset({"omnivmed.data"})),
    "trainer": ("omnivmed.trainer", frozenset({"omnivmed.data"})),
    "evaluation": ("omnivmed.evaluation", frozenset({"omnivmed.data"})),
    "omnivmed": ("omnivmed", frozenset({"*"})),
}
PACKAGES = sorted((name for name, _ in LAYERS.values() if name != "omnivmed"), key=len, reverse=True)
ROOT = "omnivmed"  # the namespace's __init__ holds only __version__; every layer may read it


def package_of(module: str) -> str | None:
    """The layer an imported ``omnivmed...`` module belongs to (``omnivmed`` is the app)."""
    for name in PACKAGES:
        if module == name or module.startswith(name + "."):
            return name
    if module == ROOT:
        return ROOT
    if module.startswith(ROOT + "."):
        return "omnivmed"
    return None


def imported(tree: ast.AST) -> list[tuple[int, str, list[str]]]:
    """(line, module, names) of every import statement in the tree."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module, [a.name for a in node.names]))
    return found


def violations(repo: Path) -> list[str]:
    problems = []
    for folder, (own, allowed) in LAYERS.items():
        for path in sorted((repo / folder).rglob("*.py")):
            rel = path.relative_to(repo).as_posix()
            for line, module, names in imported(ast.parse(path.read_text(encoding="utf-8"), rel)):
                target = package_of(module)
                if target is None:
                    continue
                private = [n for n in names if n.startswith("_") and not n.startswith("__")]
                if private:
                    problems.append(f"{rel}:{line}: imports private {', '.join(private)} from {module}")
                if own == "omnivmed" and folder == "omnivmed":
                    continue  # the app may import everything
                if target in (own, ROOT) and not (target == ROOT and module != ROOT):
                    continue
                if target in allowed:
                    continue
                problems.append(f"{rel}:{line}: {own} imports {module} (a layer above or beside it)")
    return problems


def test_imports_go_one_way():
    assert violations(REPO) == []


def test_every_package_folder_is_checked():
    tool = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    for folder, (name, _) in LAYERS.items():
        if (REPO / folder).is_dir():
            assert f'"{name}" = "{folder}"' in tool, f"{folder} is not installed as {name}"


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for folder in LAYERS:
        (tmp_path / folder).mkdir()
    for rel, text in files.items():
        (tmp_path / rel).write_text(text, encoding="utf-8")
    return tmp_path


def test_a_formats_module_importing_a_builder_is_caught(tmp_path):
    repo = _tree(tmp_path, {"omnivmed_data/schema.py": "def f():\n    from omnivmed.builders.slake import SlakeBuilder\n"})
    assert violations(repo) == ["omnivmed_data/schema.py:2: omnivmed.data imports omnivmed.builders.slake (a layer above or beside it)"]


def test_siblings_and_the_app_are_caught_and_private_names_too(tmp_path):
    repo = _tree(
        tmp_path,
        {
            "builders/a.py": "import omnivmed.trainer.train\nfrom omnivmed.data.schema import Sample\n",
            "trainer/b.py": "from omnivmed.pipeline import run\nfrom omnivmed import __version__\n",
            "rejection_sampling/c.py": "from omnivmed.data.build import _clear\n",
            "omnivmed/d.py": "from omnivmed.builders import get_builder\nfrom omnivmed.trainer import train\n",
        },
    )
    assert violations(repo) == [
        "builders/a.py:1: omnivmed.builders imports omnivmed.trainer.train (a layer above or beside it)",
        "rejection_sampling/c.py:1: imports private _clear from omnivmed.data.build",
        "trainer/b.py:1: omnivmed.trainer imports omnivmed.pipeline (a layer above or beside it)",
    ]
