"""What every builder is: source facts as constants, a layout check, a generator.

A builder knows one source's raw layout and turns it into Samples. It never
writes files: it yields :class:`~omnivmed.data.schema.Sample` objects, or a
:class:`~omnivmed.data.output.Reject` naming the file, the record and the reason when an input is
bad; the build pipeline counts, deduplicates and hands samples to the one
shard writer.

Order matters for deduplication: the pipeline keeps the first copy of a
duplicate, so builders yield held-out splits first (test, validation, train).
A row of train that repeats a row of test is then the one dropped, and the
test set stays intact.

Work units let an engine spread a build over processes or machines
(:mod:`omnivmed.engines`): :meth:`Builder.work_units` splits the raw folder into
small picklable pieces (N rows, one volume) and :meth:`Builder.generate_unit`
yields one piece's items. Their concatenation, unit after unit, is
:meth:`Builder.generate` item for item, so the output never depends on the
engine. The default is one unit: the whole source.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Union

from omnivmed.data.output import Reject
from omnivmed.data.schema import Sample

HELD_OUT_FIRST: tuple[str, ...] = ("test", "validation", "train")


class LayoutError(ValueError):
    """The raw folder is absent or not the layout the builder reads.

    The message is one line saying what was expected.
    """


@dataclass(frozen=True)
class DownloadFile:
    """One published file: where it lives and what it must hash to."""

    url: str
    filename: str
    sha256: str | None = None
    size: int | None = None
    extract: bool = False  # unzip into the target folder after download


@dataclass(frozen=True)
class SourceInfo:
    name: str
    description: str
    homepage: str
    license: str
    citation: str
    # Direct files (resumable HTTP download with checksum).
    downloads: tuple[DownloadFile, ...] = ()
    # Hugging Face dataset repository mirroring the source, when there is one.
    hf_repo: str | None = None
    gated: bool = False
    # sha256 of official annotation files (relative path -> digest), taken from
    # copies checked against the published counts; a build says when yours differ.
    known_sha256: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class BuilderOption:
    """A setting that changes what a builder outputs (recorded in the manifest)."""

    name: str
    default: str
    help: str


class BuilderOptionError(ValueError):
    """An unknown option or a value the builder cannot use; the message says which."""


BuilderItem = Union[Sample, Reject]

# A work unit: a small picklable value a builder gives out and takes back (row numbers, a path).
Unit = Any


@dataclass(frozen=True)
class WholeSource:
    """The default work unit: everything :meth:`Builder.generate` yields."""


@dataclass(frozen=True)
class ReadyItems:
    """A work unit whose items the driver already knows (rejects found while splitting, e.g. a bad file)."""

    items: tuple[BuilderItem, ...]


def chunks(items: list, size: int) -> list[tuple]:
    """``items`` in consecutive tuples of at most ``size``."""
    return [tuple(items[start : start + size]) for start in range(0, len(items), size)]


def runs(items: list, key) -> list[tuple]:
    """``items`` in runs of consecutive elements with the same ``key`` (e.g. rows about one volume)."""
    grouped: list[list] = []
    for item in items:
        if grouped and key(grouped[-1][0]) == key(item):
            grouped[-1].append(item)
        else:
            grouped.append([item])
    return [tuple(g) for g in grouped]


class Builder(ABC):
    """Subclasses set ``info`` and implement the three methods.

    Builders with settings list them in ``option_specs`` and read
    ``self.options`` (strings, defaults filled in) in :meth:`configure`,
    raising :class:`BuilderOptionError` for a value they cannot use.
    """

    info: SourceInfo
    option_specs: tuple[BuilderOption, ...] = ()
    # The encoding of the frames it writes, when it is the project's own (volume slices: PNG_ENCODING):
    # recorded in the manifest, so a build made with another encoder is not taken as up to date.
    frame_encoding: str = ""

    def recorded_options(self) -> dict[str, str]:
        """The options a manifest records: the builder's own, and its frame encoding when it has one."""
        return {**self.options, **({"frame_encoding": self.frame_encoding} if self.frame_encoding else {})}

    def __init__(self, **options: str):
        known = {o.name: o for o in self.option_specs}
        unknown = sorted(set(options) - set(known))
        if unknown:
            takes = ", ".join(known) or "no options"
            raise BuilderOptionError(f"{self.info.name}: unknown option(s) {', '.join(unknown)}; it takes {takes}")
        self.options: dict[str, str] = {name: str(options.get(name, o.default)) for name, o in known.items()}
        self.configure()

    def configure(self) -> None:
        """Parse ``self.options``; the default has nothing to parse."""

    def begin(self, out: Path) -> None:
        """Called once before :meth:`generate` with the build's output folder.

        Builders with expensive intermediate products (decoded video clips) keep a
        cache under it, so a re-run after a crash redoes only what is missing.
        """

    def counters(self) -> dict[str, int]:
        """Deterministic counts worth a line in the manifest (e.g. clips padded at a video's start)."""
        return {}

    @abstractmethod
    def check_layout(self, raw: Path) -> None:
        """Raise :class:`LayoutError` unless ``raw`` holds this source."""

    @abstractmethod
    def input_files(self, raw: Path) -> list[Path]:
        """Annotation files whose checksums go into the manifest."""

    @abstractmethod
    def generate(self, raw: Path) -> Iterator[BuilderItem]:
        """Yield Samples and Rejects in a deterministic order (held-out splits first)."""

    def work_units(self, raw: Path) -> list[Unit]:
        """The source split into small picklable pieces, in the order of :meth:`generate`.

        Called after :meth:`begin`, in the process that writes. A builder that
        splits keeps :meth:`counters` free of state gathered while generating
        (units may run in other processes).
        """
        return [WholeSource()]

    def generate_unit(self, raw: Path, unit: Unit) -> Iterator[BuilderItem]:
        """Yield one unit's items; over :meth:`work_units` in order, exactly :meth:`generate`."""
        if isinstance(unit, WholeSource):
            yield from self.generate(raw)
            return
        if isinstance(unit, ReadyItems):
            yield from unit.items
            return
        raise TypeError(f"{self.info.name}: not a work unit of this builder: {unit!r}")

    def estimated_records(self, raw: Path) -> int | None:
        """Total records for a progress bar, when cheap to know."""
        return None
