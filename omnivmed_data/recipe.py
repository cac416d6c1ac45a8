"""Recipes: which staged sources a mix draws from, how many samples, which splits, which stage.

A recipe is a YAML file (committed under ``manifests/``)::

    name: omnivmed-instruct        # output: out/<name>/ and manifests/<name>.manifest.json
    seed: 0                        # the draw's seed
    stage: 3                       # training stage that reads this mix (1, 2 or 3)
    balance: proportional          # how a count is spread over task x modality strata (or: equal)
    on_shortfall: fail             # asking for more than a source has: fail (or: take_all)
    sources:
      pathvqa:                     # entry name; reads <staged root>/pathvqa/manifest.json
        take: all                  # all | an integer >= 1 | a fraction in (0, 1]
        splits: [train]            # default [train]
      pubmedvision_instruction:
        staged: pubmedvision_instruction   # staged folder (default: the entry name)
        manifest: other/manifest.json      # or an explicit manifest (relative to the staged root)
        tasks: [vqa]                       # keep only these tasks
        filter: {modalities: [ct, mri], answer_types: [closed], max_tokens: 2048, tokenizer: qwen2.5}
        take: 70000
        build: {source: pubmedvision, raw: pubmedvision, options: {subset: instruction}}

``build`` says how ``make instruct-dataset`` makes the staged folder (builder,
raw folder under the raw root, builder options); the mix itself never reads
it and depends only on the staged manifest and its shards. ``filter`` keeps
only the rows passing every condition it gives (:data:`FILTER_KEYS`; applied
by :mod:`omnivmed.data.filters`). Every problem (unknown key, negative count,
fraction above 1, unknown split, task, modality or tokenizer, a minimum above
its maximum) is a :class:`RecipeError` naming the file and the key, raised on
load, before any work.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from omnivmed.data.filters import RowFilter
from omnivmed.data.output import MANIFEST_NAME
from omnivmed.data.schema import ANSWER_TYPES, MODALITIES, SPLITS, TASKS, UNSPECIFIED_MODALITY, VISUAL_KINDS
from omnivmed.data.token_counts import TOKENIZERS, tokenizer_problem

TAKE_ALL = "all"
ON_SHORTFALL = ("fail", "take_all")
BALANCES = ("proportional", "equal")
STAGES = (1, 2, 3)
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_TOP_KEYS = {"name", "description", "seed", "stage", "balance", "on_shortfall", "sources"}
_ENTRY_KEYS = {"staged", "manifest", "take", "splits", "tasks", "filter", "stage", "build", "caption", "how_to_get"}
# filter key -> the closed vocabulary its values come from (None: the sources' own labels)
_FILTER_NAMES = {
    "modalities": MODALITIES + (UNSPECIFIED_MODALITY,),
    "answer_types": ANSWER_TYPES,
    "question_types": None,
    "visual_kinds": VISUAL_KINDS,
}
_FILTER_BOUNDS = (("min_frames", "max_frames"), ("min_tokens", "max_tokens"))
FILTER_KEYS = frozenset(_FILTER_NAMES) | {k for pair in _FILTER_BOUNDS for k in pair} | {"tokenizer"}
_BUILD_KEYS = {"source", "raw", "options"}
_CAPTION_KEYS = {"windows_of", "raw", "options", "step"}


class RecipeError(ValueError):
    """A recipe that cannot be used; the message names the file, the key and the reason."""


@dataclass(frozen=True)
class Take:
    """How many samples an entry takes: ``count``, a ``fraction`` of its pool, or (both None) all."""

    count: int | None = None
    fraction: float | None = None

    def wanted(self, available: int) -> int:
        """Samples asked for, given the pool size (a fraction rounds half up)."""
        if self.count is not None:
            return self.count
        if self.fraction is not None:
            return math.floor(self.fraction * available + 0.5)
        return available

    def describe(self) -> str:
        if self.count is not None:
            return str(self.count)
        if self.fraction is not None:
            return f"{self.fraction:g} of the pool"
        return TAKE_ALL


@dataclass(frozen=True)
class BuildSpec:
    """How the pipeline makes an entry's staged folder (never read by the mix)."""

    source: str
    raw: str
    options: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class CaptionSpec:
    """Judged captions: windows of ``windows_of``'s videos, captioned into the entry's staged folder."""

    windows_of: str
    raw: str
    options: tuple[tuple[str, str], ...] = ()
    step: int = 250


@dataclass(frozen=True)
class RecipeEntry:
    name: str
    staged: str
    manifest: str | None
    take: Take
    splits: tuple[str, ...]
    tasks: tuple[str, ...] | None
    stage: int
    build: BuildSpec | None = None
    caption: CaptionSpec | None = None
    how_to_get: str | None = None
    filter: RowFilter | None = None  # rows must also pass this (None: every row of the splits and tasks)

    def manifest_path(self, staged_root: Path) -> Path:
        if self.manifest is not None:
            return Path(staged_root) / self.manifest  # an absolute path stays absolute
        return Path(staged_root) / self.staged / MANIFEST_NAME


@dataclass(frozen=True)
class Recipe:
    name: str
    file_name: str  # recorded in the manifest (a name, never a user path)
    sha256: str  # of the file's bytes
    seed: int
    stage: int
    balance: str
    on_shortfall: str
    description: str
    entries: tuple[RecipeEntry, ...]
    origin: str  # for error messages

    def with_shortfall(self, on_shortfall: str) -> "Recipe":
        return replace(self, on_shortfall=on_shortfall)


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice (PyYAML silently keeps the last)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"key {key!r} given twice", key_node.start_mark)
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_recipe(path: Path) -> Recipe:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise RecipeError(f"{path}: no such recipe") from None
    try:
        data = yaml.load(raw.decode("utf-8"), Loader=_UniqueKeyLoader)
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise RecipeError(f"{path}: not valid YAML ({_one_line(err)})") from None
    return parse_recipe(data, origin=str(path), file_name=path.name, sha256=hashlib.sha256(raw).hexdigest())


def parse_recipe(data, *, origin: str, file_name: str, sha256: str) -> Recipe:
    if not isinstance(data, dict):
        raise RecipeError(f"{origin}: a recipe is a mapping with name, seed and sources")
    _no_unknown(data, _TOP_KEYS, origin)
    name = _required(data, "name", origin)
    if not isinstance(name, str) or not _NAME.match(name):
        raise RecipeError(f"{origin}: name {name!r} must be lower-case letters, digits, '_' or '-' (it names the output)")
    seed = data.get("seed", 0)
    if not _is_int(seed) or seed < 0:
        raise RecipeError(f"{origin}: seed {seed!r} must be a non-negative integer")
    stage = _stage(data.get("stage", 3), f"{origin}: stage")
    balance = _choice(data.get("balance", "proportional"), BALANCES, f"{origin}: balance")
    on_shortfall = _choice(data.get("on_shortfall", "fail"), ON_SHORTFALL, f"{origin}: on_shortfall")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise RecipeError(f"{origin}: description must be text")
    sources = _required(data, "sources", origin)
    if not isinstance(sources, dict) or not sources:
        raise RecipeError(f"{origin}: sources must be a non-empty mapping of entry name -> settings")
    entries = tuple(_entry(str(key), value, stage, f"{origin}: sources.{key}") for key, value in sources.items())
    _check_overlaps(entries, origin)
    return Recipe(name, file_name, sha256, seed, stage, balance, on_shortfall, description, entries, origin)


def _entry(name: str, data, default_stage: int, where: str) -> RecipeEntry:
    if not _NAME.match(name):
        raise RecipeError(f"{where}: entry names are lower-case letters, digits, '_' or '-'")
    if not isinstance(data, dict):
        raise RecipeError(f"{where}: settings must be a mapping (take, splits, ...)")
    _no_unknown(data, _ENTRY_KEYS, where)
    staged = data.get("staged", name)
    if not isinstance(staged, str) or not _NAME.match(staged):
        raise RecipeError(f"{where}.staged: {staged!r} must be a folder name under the staged root")
    manifest = data.get("manifest")
    if manifest is not None and (not isinstance(manifest, str) or not manifest.strip()):
        raise RecipeError(f"{where}.manifest: must be a path to a manifest.json")
    if "take" not in data:
        raise RecipeError(f"{where}: missing 'take' (all, a count or a fraction)")
    splits = _names(data.get("splits", ["train"]), SPLITS, f"{where}.splits")
    tasks = _names(data["tasks"], TASKS, f"{where}.tasks") if "tasks" in data else None
    how = data.get("how_to_get")
    if how is not None and not isinstance(how, str):
        raise RecipeError(f"{where}.how_to_get: must be text")
    return RecipeEntry(
        name=name,
        staged=staged,
        manifest=manifest,
        take=_take(data["take"], f"{where}.take"),
        splits=splits,
        tasks=tasks,
        stage=_stage(data.get("stage", default_stage), f"{where}.stage"),
        build=_build(data["build"], f"{where}.build") if "build" in data else None,
        caption=_caption(data["caption"], f"{where}.caption") if "caption" in data else None,
        how_to_get=how,
        filter=_row_filter(data["filter"], f"{where}.filter") if "filter" in data else None,
    )


def _row_filter(data, where: str) -> RowFilter:
    if not isinstance(data, dict) or not data:
        raise RecipeError(f"{where}: must be a non-empty mapping of {', '.join(sorted(FILTER_KEYS))}")
    _no_unknown(data, set(FILTER_KEYS), where)
    names = {}
    for key, allowed in _FILTER_NAMES.items():
        if key in data:
            names[key] = _names(data[key], allowed, f"{where}.{key}") if allowed else _labels(data[key], f"{where}.{key}")
    bounds = {}
    for low, high in _FILTER_BOUNDS:
        for key in (low, high):
            if key in data:
                value = data[key]
                if not _is_int(value) or value < 0:
                    raise RecipeError(f"{where}.{key}: {value!r} must be an integer >= 0")
                bounds[key] = value
        if low in bounds and high in bounds and bounds[low] > bounds[high]:
            raise RecipeError(f"{where}: {low} {bounds[low]} is above {high} {bounds[high]}")
    tokenizer = data.get("tokenizer")
    counts_tokens = "min_tokens" in bounds or "max_tokens" in bounds
    if counts_tokens and tokenizer is None:
        raise RecipeError(f"{where}: min_tokens/max_tokens need a tokenizer (one of {', '.join(TOKENIZERS)})")
    if tokenizer is not None:
        if not counts_tokens:
            raise RecipeError(f"{where}.tokenizer: counts nothing without min_tokens or max_tokens")
        problem = tokenizer_problem(tokenizer) if isinstance(tokenizer, str) else f"{tokenizer!r} is not a tokenizer name"
        if problem:
            raise RecipeError(f"{where}.tokenizer: {problem}")
    return RowFilter(**names, **bounds, tokenizer=tokenizer, where=where)


def _labels(value, where: str) -> tuple[str, ...]:
    """Labels of an open vocabulary (the sources' own): non-empty text, compared lower-cased."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise RecipeError(f"{where}: must be a non-empty list")
    for item in value:
        if not isinstance(item, (str, int)) or isinstance(item, bool) or not str(item).strip():
            raise RecipeError(f"{where}: {item!r} is not a label (text, as the source writes it)")
    return tuple(dict.fromkeys(str(item).strip().lower() for item in value))


def _take(value, where: str) -> Take:
    if value == TAKE_ALL:
        return Take()
    if _is_int(value):
        if value < 1:
            raise RecipeError(f"{where}: count {value} must be at least 1")
        return Take(count=value)
    if isinstance(value, float):
        if not (0.0 < value <= 1.0) or math.isnan(value):
            raise RecipeError(f"{where}: fraction {value} must lie in (0, 1] (write a count as an integer)")
        return Take(fraction=value)
    raise RecipeError(f"{where}: {value!r} is not 'all', a count or a fraction")


def _build(data, where: str) -> BuildSpec:
    if not isinstance(data, dict):
        raise RecipeError(f"{where}: must be a mapping with source, raw, options")
    _no_unknown(data, _BUILD_KEYS, where)
    source = _required(data, "source", where)
    return BuildSpec(str(source), str(data.get("raw", source)), _options(data.get("options", {}), f"{where}.options"))


def _caption(data, where: str) -> CaptionSpec:
    if not isinstance(data, dict):
        raise RecipeError(f"{where}: must be a mapping with windows_of, raw, options, step")
    _no_unknown(data, _CAPTION_KEYS, where)
    source = _required(data, "windows_of", where)
    step = data.get("step", 250)
    if not _is_int(step) or step < 1:
        raise RecipeError(f"{where}.step: {step!r} must be an integer >= 1")
    return CaptionSpec(str(source), str(data.get("raw", source)), _options(data.get("options", {}), f"{where}.options"), step)


def _options(data, where: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(data, dict):
        raise RecipeError(f"{where}: must be a mapping of builder option -> value")
    return tuple(sorted((str(k), str(v)) for k, v in data.items()))


def _check_overlaps(entries: tuple[RecipeEntry, ...], origin: str) -> None:
    """Two entries reading one manifest must not be able to draw the same sample twice."""
    for i, a in enumerate(entries):
        for b in entries[i + 1 :]:
            if (a.manifest, a.staged) != (b.manifest, b.staged) or not set(a.splits) & set(b.splits):
                continue
            if a.filter is not None and b.filter is not None and a.filter.disjoint_from(b.filter):
                continue
            if a.tasks is None or b.tasks is None or set(a.tasks) & set(b.tasks):
                raise RecipeError(
                    f"{origin}: sources.{a.name} and sources.{b.name} read the same staged manifest with "
                    "overlapping splits and tasks; give them disjoint 'tasks', 'splits' or filters"
                )


def _no_unknown(data: dict, known: set[str], where: str) -> None:
    unknown = sorted(str(k) for k in set(data) - known)
    if unknown:
        raise RecipeError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")


def _required(data: dict, key: str, where: str):
    if key not in data:
        raise RecipeError(f"{where}: missing '{key}'")
    return data[key]


def _names(value, allowed: tuple[str, ...], where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise RecipeError(f"{where}: must be a non-empty list")
    for item in value:
        if item not in allowed:
            raise RecipeError(f"{where}: {item!r} is not one of {', '.join(allowed)}")
    return tuple(dict.fromkeys(value))


def _choice(value, allowed: tuple[str, ...], where: str) -> str:
    if value not in allowed:
        raise RecipeError(f"{where}: {value!r} is not one of {', '.join(allowed)}")
    return value


def _stage(value, where: str) -> int:
    if not _is_int(value) or value not in STAGES:
        raise RecipeError(f"{where}: {value!r} is not one of {', '.join(map(str, STAGES))}")
    return value


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())
