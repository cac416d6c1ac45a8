"""Where a benchmark's ground truth comes from: a built manifest, a staged root, or a raw folder built now.

``--gt`` takes a manifest file, a folder holding ``manifest.json`` (a staged
source or a mix), or a raw source folder, which is built here through the
source's builder into ``<work>/ground-truth/<source>/`` (an up-to-date build
is reused, as ``omnivmed-data build`` does). ``--staged ROOT`` looks for
``ROOT/<source>/manifest.json``. Several benchmarks take ``--gt NAME=PATH``
each; a bare ``--gt PATH`` serves every benchmark.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from omnivmed.data.output import MANIFEST_NAME
from omnivmed.evaluation.benchmarks import BENCHMARKS, Benchmark, GtRecord, read_ground_truth
from omnivmed.evaluation.errors import EvalInputError


def parse_gt(values: Sequence[str], benchmarks: Sequence[Benchmark]) -> dict[str, Path]:
    """``NAME=PATH`` or a bare ``PATH`` (for every benchmark) -> benchmark name -> path."""
    names = {b.name for b in benchmarks}
    found: dict[str, Path] = {}
    for value in values:
        head, sep, tail = value.partition("=")
        if sep and head in BENCHMARKS:
            if head not in names:
                raise EvalInputError(f"--gt {value}: {head} is not one of the benchmarks asked for ({', '.join(sorted(names))})")
            found[head] = Path(tail)
        else:
            for name in names:
                found.setdefault(name, Path(value))
    return found


def is_manifest(path: Path) -> bool:
    return path.is_file() or (path.is_dir() and (path / MANIFEST_NAME).is_file())


def build_raw(benchmark: Benchmark, raw: Path, work: Path, progress: bool = False) -> Path:
    """Build ``raw`` with the benchmark's builder (or reuse an up-to-date build); the manifest's path."""
    from omnivmed.build import build_source
    from omnivmed.builders import LayoutError, get_builder

    try:
        result = build_source(get_builder(benchmark.source), raw, Path(work) / "ground-truth" / benchmark.source, progress=progress)
    except LayoutError as err:
        raise EvalInputError(f"{raw}: neither a manifest nor a raw {benchmark.source} folder ({str(err).splitlines()[0]})") from None
    return result.manifest_path


def gt_manifest(benchmark: Benchmark, gt: Path | None, staged: Path | None, work: Path, progress: bool = False) -> Path:
    """The manifest holding ``benchmark``'s ground truth (building a raw folder first when given one)."""
    if gt is not None:
        gt = Path(gt)
        if is_manifest(gt):
            return gt if gt.is_file() else gt / MANIFEST_NAME
        if not gt.exists():
            raise EvalInputError(f"{gt}: no such manifest or raw folder")
        return build_raw(benchmark, gt, work, progress)
    if staged is not None:
        path = Path(staged) / benchmark.source / MANIFEST_NAME
        if not path.is_file():
            raise EvalInputError(f"{path}: no such manifest (is {benchmark.source} built under {staged}?)")
        return path
    raise EvalInputError(f"no ground truth for {benchmark.name}: pass --gt MANIFEST_OR_RAW or --staged ROOT")


def load_ground_truth(benchmark: Benchmark, gt: Path | None, staged: Path | None, work: Path, split: str | None = None, progress: bool = False) -> tuple[Path, list[GtRecord]]:
    manifest = gt_manifest(benchmark, gt, staged, work, progress)
    return manifest, read_ground_truth(benchmark, manifest, split)
