"""What M3D-Cap and M3D-VQA share: source facts, the report-text rule, finding and loading volumes.

Both indexes (``M3D_Cap.json``, ``M3D_VQA_*.csv``) name a volume by the path
of the ``.npy`` file M3D's preparation script writes for it, e.g.
``M3D_Cap_npy/ct_case/000006/Axial_C__portal_venous_phase.npy``; the part
before ``ct_case``/``ct_quizze`` differs between copies. A user may hold those
``.npy`` files, or only the raw slice folders they were made from
(``M3D_Cap/ct_case/000006/Axial_C__portal_venous_phase/<int>.png``, whose
folder name may still carry the diacritics the script strips).
:func:`resolve_volume` finds either inside the raw folder.

An ``.npy`` file is already normalised by M3D (min-max, foreground crop,
32x256x256): it is stored as it is, only quantised to the PNG bit depth. A
slice folder goes through the configured preset (default ``m3d``, which
reproduces that preparation).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np

from omnivmed.builders.base import BuilderOptionError, SourceInfo
from omnivmed.builders.volume_samples import VolumeSettings, relative
from omnivmed.data.fileio import is_within
from omnivmed.data.volume import PRESETS, EncodedVolume, Volume, VolumeError, VolumeInput, VolumeLimits, VolumeRecipe
from omnivmed.data.volume import encode_volume, read_volume
from omnivmed.data.volume.encode import encode_normalised
from omnivmed.data.volume.presets import Normalised

HOMEPAGE = "https://github.com/BAAI-DCAI/M3D"
LICENSE = "Apache-2.0 (dataset card); M3D-Cap hub access disabled after a DMCA notice"
CITATION = (
    "Bai F, Du Y, Huang T, Meng MQ-H, Zhao B. M3D: Advancing 3D Medical Image Analysis with Multi-Modal "
    "Large Language Models. arXiv:2404.00578 (2024)"
)

# The two case collections of M3D-Cap (Radiopaedia cases and quizzes); they overlap.
GROUPS = ("ct_case", "ct_quizze")
# Where a copy keeps the volumes, tried in this order after the path as the index writes it.
VOLUME_ROOTS = ("M3D_Cap_npy", "M3D_Cap")
# The same for text.txt (the raw copy first: M3D's script writes its filtered text beside the .npy).
TEXT_ROOTS = ("M3D_Cap", "M3D_Cap_npy")

NPY_KIND = "npy"  # VolumeInput.kind of an M3D-prepared .npy file (read here, not by read_volume)
_RANGE_TOLERANCE = 1e-3  # float rounding of M3D's resize may step a hair outside [0, 1]


def source_info(name: str, description: str) -> SourceInfo:
    # hf_repo stays None: GoodBaiBai88/M3D-Cap is disabled after a DMCA notice, and
    # GoodBaiBai88/M3D-VQA holds only the CSVs, which build nothing without M3D-Cap's volumes.
    # Both builders read the user's own copy (`omnivmed-data download NAME --from PATH`).
    return SourceInfo(name=name, description=description, homepage=HOMEPAGE, license=LICENSE, citation=CITATION)


def comma_list(value: str, allowed: tuple[str, ...], what: str, source: str) -> tuple[str, ...]:
    """A comma list of names from ``allowed``, duplicates dropped, order kept; BuilderOptionError otherwise."""
    names = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n not in allowed]
    if unknown or not names:
        raise BuilderOptionError(
            f"{source}: {what} {value!r} must be a comma list of {', '.join(allowed)}"
            + (f" (unknown: {', '.join(unknown)})" if unknown else "")
        )
    return tuple(dict.fromkeys(names))


# --- text -------------------------------------------------------------------------------------


def remove_diacritics(name: str) -> str:
    """What M3D's preparation does to a series folder name to name its .npy file."""
    return "".join(c for c in unicodedata.normalize("NFD", name) if unicodedata.category(c) != "Mn")


def _flat(text: str) -> str:
    return text.replace("\n", " ").strip()


def _after(text: str, marker: str) -> str | None:
    at = text.find(marker)
    return None if at < 0 else _flat(text[at + len(marker) :])


def _too_short(text: str) -> bool:
    return len(text.replace(" ", "")) < 5


def report_text(text: str) -> str:
    """The report M3D trains on: the findings, else the discussion, else the whole text.

    Newlines become spaces. A section counts when it holds at least 5 characters
    besides spaces. Applying it to its own output changes nothing, so text.txt
    files that M3D's script already filtered come out the same.
    """
    whole = _flat(text)
    found = _after(text, "study_findings:")
    found = whole if found is None else found
    if _too_short(found):
        found = _after(text, "discussion:")
        found = whole if found is None else found
    if _too_short(found):
        found = whole
    return found


# --- finding files ----------------------------------------------------------------------------


def index_parts(index_path: str) -> tuple[str, ...]:
    """The components of a path from an index; VolumeError when it could leave the raw folder."""
    text = (index_path or "").strip().replace("\\", "/")
    if not text:
        raise VolumeError("missing_volume", "<empty>", "empty path in the index")
    path = PurePosixPath(text)
    if path.is_absolute() or PureWindowsPath(text).drive or ".." in path.parts:
        raise VolumeError("path_escapes_raw", index_path, "path leaves the raw folder")
    return tuple(p for p in path.parts if p not in ("", "."))


def group_of(index_path: str) -> str | None:
    """``ct_case`` or ``ct_quizze``, from the path's own components."""
    parts = index_path.replace("\\", "/").split("/")
    return next((p for p in parts if p in GROUPS), None)


def canonical_path(index_path: str) -> str:
    """The path from its ``ct_case``/``ct_quizze`` component on: the same in every copy."""
    parts = index_path.strip().replace("\\", "/").split("/")
    at = next((i for i, p in enumerate(parts) if p in GROUPS), None)
    return "/".join(parts if at is None else parts[at:])


def _candidates(raw: Path, parts: tuple[str, ...], roots: tuple[str, ...]) -> list[Path]:
    """raw/<as given>, then raw/<root>/<tail> for each root, then raw/<tail> (tail from the group on)."""
    found = [raw.joinpath(*parts)]
    at = next((i for i, p in enumerate(parts) if p in GROUPS), None)
    if at is not None:
        tail = parts[at:]
        found += [raw.joinpath(root, *tail) for root in roots] + [raw.joinpath(*tail)]
    unique: list[Path] = []
    for path in found:
        if path not in unique:
            unique.append(path)
    return unique


def loose_name(name: str) -> str:
    """A name reduced to its ASCII letters and digits, lower case (diacritics removed first).

    Some versions of M3D's script name the .npy with ``unidecode`` instead, which also turns
    dashes, quotes and symbols into ASCII; this key matches either way for those.
    """
    return "".join(c for c in remove_diacritics(name).casefold() if c.isascii() and c.isalnum())


# How a name in the index may match an entry on disk, strictest first.
_MATCHES = (remove_diacritics, loose_name)


def _entry(path: Path, want_dir: bool) -> Path | None:
    """``path`` if it exists as a folder/file, else its one sibling whose name matches once diacritics go
    (or, failing that, once everything but ASCII letters and digits goes)."""
    if (path.is_dir() if want_dir else path.is_file()):
        return path
    parent = path.parent
    if not parent.is_dir():
        return None
    try:
        entries = sorted(p for p in parent.iterdir() if (p.is_dir() if want_dir else p.is_file()))
    except OSError:
        return None
    for key in _MATCHES:
        wanted = key(path.name)
        matches = [p for p in entries if key(p.name) == wanted] if wanted else []
        if len(matches) > 1:
            names = ", ".join(p.name for p in matches)
            raise VolumeError("ambiguous_volume", str(parent), f"several entries could be {path.name!r}: {names}")
        if matches:
            return matches[0]
    return None


def _inside(raw: Path, path: Path, index_path: str) -> Path:
    if not is_within(raw, path):
        raise VolumeError("path_escapes_raw", index_path, "resolves outside the raw folder (through a symbolic link?)")
    return path


def resolve_volume(raw: Path, index_path: str, *, prefer_slices: bool = False) -> VolumeInput:
    """The .npy file or the slice folder an index path names, inside ``raw``.

    Tried: raw/<path as given>, raw/M3D_Cap_npy/<tail>, raw/M3D_Cap/<tail> and
    raw/<tail>, where <tail> starts at ``ct_case``/``ct_quizze``; each as the
    .npy file and as the series folder (the name without ``.npy``, diacritics
    in the folder's name ignored). Every .npy location is tried before any
    folder, or the other way round with ``prefer_slices``.
    """
    parts = index_parts(index_path)
    name = parts[-1]
    stem = name[:-4] if name.lower().endswith(".npy") else name
    bases = _candidates(raw, parts, VOLUME_ROOTS)
    npys = [(b.with_name(stem + ".npy"), False) for b in bases]
    folders = [(b.with_name(stem), True) for b in bases]
    for path, is_dir in folders + npys if prefer_slices else npys + folders:
        found = _entry(path, want_dir=is_dir)
        if found is not None:
            _inside(raw, found, index_path)
            return VolumeInput("slices" if is_dir else NPY_KIND, found)
    raise VolumeError("missing_volume", index_path, "neither the .npy file nor its slice folder is in the raw folder")


def resolve_text(raw: Path, index_path: str) -> Path | None:
    """The text.txt an index path names (same places as volumes); None when absent."""
    parts = index_parts(index_path)
    for path in _candidates(raw, parts, TEXT_ROOTS):
        found = _entry(path, want_dir=False)
        if found is not None:
            return _inside(raw, found, index_path)
    return None


# --- loading ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class NpyRecipe(VolumeRecipe):
    """The 'recipe' of an M3D .npy: none here; M3D's script already normalised it."""

    def describe(self) -> str:
        return (
            "M3D's prepared .npy stored as it is (already min-max normalised, foreground-cropped and "
            f"resized by M3D's script), {self.bit_depth}-bit PNG"
        )


def npy_recipe(bit_depth: int = 8) -> NpyRecipe:
    return NpyRecipe("m3d-npy", "minmax", bit_depth=bit_depth)


def read_npy(path: Path, limits: VolumeLimits = VolumeLimits(), source: str | None = None) -> Volume:
    """An M3D .npy: float, (1, D, H, W) or (D, H, W), finite, in [0, 1]."""
    source = source or str(path)
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)  # the header first: nothing read yet
    except (ValueError, OSError, EOFError) as err:
        raise VolumeError("unreadable_npy", source, f"not a readable .npy file ({_first_line(err)})") from None
    if not isinstance(array, np.ndarray):
        raise VolumeError("unreadable_npy", source, "not a single .npy array")
    shape = tuple(int(n) for n in array.shape)
    if len(shape) == 4 and shape[0] == 1:
        shape = shape[1:]
    if len(shape) != 3 or min(shape) < 1:
        raise VolumeError("bad_npy_shape", source, f"shape {tuple(array.shape)}; expected (1, D, H, W) or (D, H, W)")
    if array.dtype.kind != "f":
        raise VolumeError("bad_npy_dtype", source, f"dtype {array.dtype}; M3D's volumes are float")
    voxels = int(np.prod(shape))
    if voxels > limits.max_voxels:
        raise VolumeError("too_large", source, f"{'x'.join(map(str, shape))} = {voxels:,} voxels exceeds the limit of {limits.max_voxels:,}")
    try:
        data = np.array(array, dtype=np.float32).reshape(shape)
    except (ValueError, OSError) as err:
        raise VolumeError("unreadable_npy", source, f"voxel data cannot be read ({_first_line(err)})") from None
    finally:
        del array
    if not np.isfinite(data).all():
        raise VolumeError("non_finite_voxels", source, "voxels hold NaN or infinity")
    low, high = float(data.min()), float(data.max())
    if low < -_RANGE_TOLERANCE or high > 1 + _RANGE_TOLERANCE:
        raise VolumeError("npy_out_of_range", source, f"values span {low:g}..{high:g}; M3D's volumes lie in [0, 1]")
    return Volume(voxels=np.clip(data, 0.0, 1.0), kind=NPY_KIND, spacing_mm=None, direction=None, original_shape=shape)


def _first_line(err: Exception) -> str:
    return (str(err).splitlines() or [type(err).__name__])[0]


def prefers_slices(settings: VolumeSettings) -> bool:
    """True when the options ask for something else than M3D's own preparation (then raw slices win)."""
    recipe = settings.recipe
    # Either M3D version: a prepared .npy is whichever version made it, and is used as it is.
    return not (isinstance(recipe, VolumeRecipe) and replace(recipe, bit_depth=8) in (PRESETS["m3d"], PRESETS["m3d-area"]))


def load_volume(raw: Path, index_path: str, settings: VolumeSettings) -> tuple[EncodedVolume, str]:
    """Find, read and encode the volume an index path names, with the file it came from
    (relative to raw); VolumeError when it cannot be used."""
    item = resolve_volume(raw, index_path, prefer_slices=prefers_slices(settings))
    rel = relative(item.path, raw)
    try:
        if item.kind == NPY_KIND:
            bit_depth = settings.recipe.bit_depth if isinstance(settings.recipe, VolumeRecipe) else 8
            volume = read_npy(item.path, settings.limits, rel)
            normalised = Normalised(volume.voxels, None, None, npy_recipe(bit_depth))
            return encode_normalised(volume, normalised), rel
        return encode_volume(read_volume(item, settings.limits), settings.recipe, rel), rel
    except VolumeError as err:
        raise _scrubbed(err, raw) from None


def _scrubbed(err: VolumeError, raw: Path) -> VolumeError:
    """The error without the user's folders in its text (PIL names the full path of a bad slice)."""
    detail = err.detail
    for root in sorted({str(raw.resolve()), str(raw), str(raw.absolute())}, key=len, reverse=True):
        detail = detail.replace(root + "/", "").replace(root, ".")
    return VolumeError(err.reason, err.file, detail)
