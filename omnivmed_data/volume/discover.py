"""Find the volumes under a folder and read any one of them.

A volume input is one of: a NIfTI file, a folder of DICOM files (which may
hold several series), or an M3D-style folder of ``<int>.png|jpeg`` slices.
Discovery only looks at names and the 4-byte DICOM magic; headers are read
when a DICOM folder is expanded into its series.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from omnivmed.data.volume.core import Volume, VolumeError, VolumeLimits
from omnivmed.data.volume.dicom_series import DicomSeries, dicom_files_in, read_dicom_series, series_in_folder
from omnivmed.data.volume.nifti import is_nifti, read_nifti
from omnivmed.data.volume.slice_folder import read_slice_folder, slice_files

KINDS = ("nifti", "dicom", "slices")


@dataclass(frozen=True)
class VolumeInput:
    kind: str  # one of KINDS
    path: Path  # the NIfTI file or the folder
    series: DicomSeries | None = None  # set once a DICOM folder is expanded


def classify(path: Path) -> VolumeInput:
    """What kind of volume ``path`` holds; VolumeError when it holds none."""
    if path.is_file():
        if is_nifti(path):
            return VolumeInput("nifti", path)
        raise VolumeError("unsupported_file", str(path), "not a NIfTI file (.nii/.nii.gz); DICOM series are given as their folder")
    if not path.is_dir():
        raise VolumeError("missing_volume", str(path), "no such file or folder")
    if slice_files(path):
        return VolumeInput("slices", path)
    if dicom_files_in(path):
        return VolumeInput("dicom", path)
    raise VolumeError("empty_folder", str(path), "no DICOM files and no <int>.png/.jpeg slices")


def find_volume_inputs(root: Path) -> Iterator[VolumeInput | VolumeError]:
    """Every volume input under ``root`` in sorted order; empty leaf folders come back as errors."""
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        here = Path(folder)
        for name in sorted(files):
            if is_nifti(here / name):
                yield VolumeInput("nifti", here / name)
        non_nifti = [f for f in files if not is_nifti(here / f) and not f.startswith(".")]
        if non_nifti:
            if slice_files(here):
                yield VolumeInput("slices", here)
            elif dicom_files_in(here):
                yield VolumeInput("dicom", here)
        elif not dirs and not files and here != Path(root):
            yield VolumeError("empty_folder", str(here), "empty folder")


def expand(item: VolumeInput, four_d: str = "reject") -> list[VolumeInput]:
    """A DICOM folder becomes one input per series; other kinds are already one volume.

    ``four_d="split"`` makes each volume of a 4D series (b-values, temporal positions) an input
    of its own; by default such a series stays one input, which reading rejects as
    ``four_dimensional``.
    """
    if item.kind != "dicom" or item.series is not None:
        return [item]
    return [VolumeInput("dicom", item.path, s) for s in series_in_folder(item.path, four_d)]


def read_volume(item: VolumeInput, limits: VolumeLimits = VolumeLimits(), four_d: str = "reject") -> Volume:
    if item.kind == "nifti":
        return read_nifti(item.path, limits)
    if item.kind == "slices":
        return read_slice_folder(item.path, limits)
    if item.kind == "dicom":
        series = item.series
        if series is None:
            found = series_in_folder(item.path, four_d)
            if len(found) != 1:
                raise VolumeError("ambiguous_series", str(item.path), f"folder holds {len(found)} series; expand it first")
            series = found[0]
        return read_dicom_series(series, limits)
    raise ValueError(f"unknown volume kind {item.kind!r}")
