"""The Masked-Faces dataset reader (the format itself, names and record, is :mod:`maskbench.data.format`).

A dataset folder written by ``maskbench synth`` is a Hugging Face *imagefolder* with three image columns,
so ``datasets.load_dataset(DIR)`` loads it without custom code::

    DIR/
      README.md                     dataset card
      manifest.json                 how it was made (version, arguments, seed, source, counts)
      skipped.csv                   source_id, path, reason: every input that produced no sample
      {split}/metadata.jsonl        one JSON record per sample (fields below), sorted by id
      {split}/masked/{id}.png       the masked face, (S, S, 3) uint8 RGB
      {split}/original/{id}.png     the same face without the mask
      {split}/mask/{id}.png         binary occlusion mask, (S, S) uint8, exactly 0 or 255 (255 = hole)

``split`` is ``train`` or ``test``; where identities are known no identity is in both.

Record fields (:data:`maskbench.data.format.RECORD_FIELDS`): ``id``, ``masked_file_name``, ``original_file_name``,
``mask_file_name`` (relative to the split folder), ``source``, ``source_id``, ``identity`` (int or str, or
null), ``split``, ``mask_type``, ``template_id``, ``texture_id``, ``seed``, ``landmarks`` (68 x 2 floats,
output pixels, iBUG-68 order), ``face_box`` (x0, y0, x1, y1, output pixels), ``hole_fraction`` (mask
pixels / image pixels, in [0, 1]), ``yaw`` (degrees, landmark estimate), ``num_faces``, ``width``,
``height``.

Datasets come from strangers, so every name taken from a record is checked before it touches the disk:
an ``id`` must match :data:`maskbench.data.format.ID_PATTERN` (it names output files), and each ``*_file_name`` must resolve
inside the split folder (:func:`safe_join`: no absolute path, no ``..``, no link out), and an ``id`` must
not repeat within a split (it names the sample's row and output files: a second record with the same id
would be scored twice and overwrite the first one's saved output). A record that fails is refused with
the reason (:attr:`MaskedFaces.refused`); the other records, the first of a repeated id included, stay
usable.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..core.errors import MaskbenchError
from ..core.io import ImageDecodeError, read_mask, read_png
from .format import FILE_FIELDS, ID_PATTERN, MASK_TYPES, METADATA_FILE, SPLITS

__all__ = [
    "Sample",
    "MaskedFaces",
    "DatasetFormatError",
    "SampleError",
    "UnsafePathError",
    "DuplicateIdError",
    "check_name",
    "safe_join",
    "record_problem",
]

class DatasetFormatError(MaskbenchError, ValueError):
    """A folder is not a Masked-Faces dataset, or a split is missing."""


class SampleError(DatasetFormatError):
    """One sample cannot be used (a refused record, a missing or damaged file); the others can."""


class UnsafePathError(SampleError):
    """A name taken from data would leave its folder (absolute path, ``..``, a link out) or is not safe."""


class DuplicateIdError(SampleError):
    """A record repeats the id of an earlier record of the same split."""


def check_name(name: object, what: str = "name") -> str:
    """``name`` if it is safe as one path component (:data:`ID_PATTERN`).

    Args:
        name: the value (a sample id, a method name).
        what: how messages call it.

    Returns:
        ``name`` unchanged.

    Raises:
        UnsafePathError: not a string, or not of the form ``[A-Za-z0-9_-][A-Za-z0-9_.-]*`` (1-200 chars).
    """
    if not isinstance(name, str) or not ID_PATTERN.fullmatch(name):
        raise UnsafePathError(f"{what} {name!r} is not a safe name (letters, digits, '_', '.', '-'; "
                              "no path separators, not starting with '.')")
    return name


def safe_join(root: str | os.PathLike, relative: object, what: str = "path") -> Path:
    """``root / relative``, refused unless it stays inside ``root``.

    Args:
        root: the folder the path must stay in.
        relative: a relative path from data, ``/``-separated.
        what: how messages call it (``"masked_file_name"``).

    Returns:
        The joined path (not resolved).

    Raises:
        UnsafePathError: ``relative`` is not a non-empty string, is absolute, has a ``..`` part, a
            backslash or a NUL, or resolves (following links) outside ``root``.
    """
    return Path(_PathGuard(root).join(relative, what))


_DRIVE = re.compile(r"[A-Za-z]:")


class _PathGuard:
    """:func:`safe_join` for many names under one root: folders are resolved once, files only if links
    (``os.path`` on strings: pathlib costs ~4x more on 100k-record splits)."""

    def __init__(self, root: str | os.PathLike):
        self.root = os.fspath(root)
        self.base = os.path.realpath(self.root)
        self._dirs: dict[str, bool] = {}

    def _inside(self, path: str) -> bool:
        real = os.path.realpath(path)
        return real == self.base or real.startswith(self.base.rstrip(os.sep) + os.sep)

    def join(self, relative: object, what: str) -> str:
        if not isinstance(relative, str) or not relative:
            raise UnsafePathError(f"{what} {relative!r} is not a relative file name")
        if "\\" in relative or "\0" in relative or relative.startswith("/") or _DRIVE.match(relative):
            raise UnsafePathError(f"{what} {relative!r} is absolute or not a plain relative path")
        if ".." in relative.split("/"):
            raise UnsafePathError(f"{what} {relative!r} leaves the dataset folder ('..')")
        path = os.path.join(self.root, relative)
        parent = os.path.dirname(path)
        inside = self._dirs.get(parent)
        if inside is None:
            inside = self._dirs[parent] = self._inside(parent)
        # a file that is not a link lies in its (checked) folder; a link is followed to its end
        if not inside or (os.path.islink(path) and not self._inside(path)):
            raise UnsafePathError(f"{what} {relative!r} resolves outside the dataset folder (a link out)")
        return path


def record_problem(record: object, split_dir: str | os.PathLike) -> str | None:
    """Why a metadata record cannot be used, or ``None`` if its id and file names are safe.

    Checks that it is an object, that ``id`` matches :data:`ID_PATTERN` and that every field of
    :data:`FILE_FIELDS` is present and resolves inside ``split_dir`` (:func:`safe_join`).
    """
    return _record_problem(record, _PathGuard(split_dir))


def _record_problem(record: object, guard: _PathGuard) -> str | None:
    if not isinstance(record, dict):
        return f"record is a {type(record).__name__}, not an object"
    try:
        check_name(record.get("id"), "id")
        for f in FILE_FIELDS:
            if f not in record:
                return f"record lacks {f}"
            guard.join(record[f], f)
    except UnsafePathError as e:
        return str(e)
    return None


@dataclass(frozen=True)
class Sample:
    """One evaluation sample.

    Attributes:
        masked: ``(H, W, 3) uint8`` RGB, the input with the mask drawn on.
        original: ``(H, W, 3) uint8`` RGB, the ground truth.
        mask: ``(H, W) bool``, True on the hole (occluded pixels).
        record: the sample's metadata record (see module docstring).
    """

    masked: np.ndarray
    original: np.ndarray
    mask: np.ndarray
    record: dict[str, Any]


class MaskedFaces:
    """Read one split of a Masked-Faces dataset folder.

    Records whose id or file names are unsafe (:func:`record_problem`), and every record that repeats the
    id of an earlier (usable) record of the split, are kept in :attr:`records`, so indices and the
    fingerprint do not move, but listed in :attr:`refused` and never read: indexing one raises
    :class:`UnsafePathError` (unsafe) or :class:`DuplicateIdError` (repeated id; the first record with
    that id stays usable).

    Args:
        root: the dataset folder.
        split: ``"train"`` or ``"test"``.
        limit: keep only the first ``limit`` records (in id order).

    Attributes:
        records: the metadata records, in file order.
        refused: ``{index: reason}`` of the records that are refused.

    Raises:
        DatasetFormatError: ``root/split/metadata.jsonl`` does not exist, a line is not JSON, or the
            first record lacks a field.
    """

    def __init__(self, root: str | os.PathLike, split: str = "test", limit: int | None = None):
        self.root = Path(root)
        self.split = split
        self.split_dir = self.root / split
        meta = self.split_dir / METADATA_FILE
        if not meta.is_file():
            avail = [s for s in SPLITS if (self.root / s / METADATA_FILE).is_file()]
            raise DatasetFormatError(
                f"{meta} not found: {self.root} has no '{split}' split"
                + (f" (it has: {', '.join(avail)})" if avail else " (is it a maskbench synth output?)")
            )
        self._meta_bytes = meta.read_bytes()
        records = []
        for n, line in enumerate(self._meta_bytes.decode("utf-8", errors="replace").splitlines(), start=1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise DatasetFormatError(f"{meta}, line {n}: not a JSON record ({e.msg})") from None
        for r in records[:1]:
            missing = [f for f in ("id",) + FILE_FIELDS if not isinstance(r, dict) or f not in r]
            if missing:
                raise DatasetFormatError(f"{meta}: records lack {', '.join(missing)}")
        self.records: list[dict[str, Any]] = records[:limit] if limit is not None else records
        self.refused: dict[int, str] = {}
        self._duplicates: set[int] = set()
        guard = _PathGuard(self.split_dir)
        first: dict[str, int] = {}
        for i, r in enumerate(self.records):
            problem = _record_problem(r, guard)
            if problem is not None:
                self.refused[i] = problem
                continue
            j = first.setdefault(r["id"], i)
            if j != i:
                self.refused[i] = (f"duplicate id {r['id']!r}: record {j + 1} of {METADATA_FILE} has it already "
                                   "(an id names one sample and its output files)")
                self._duplicates.add(i)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> Sample:
        """Read sample ``i``.

        Raises:
            UnsafePathError: the record is refused for an unsafe id or file name (see :attr:`refused`).
            DuplicateIdError: the record repeats an earlier record's id (see :attr:`refused`).
            SampleError: a file is missing or damaged, or the three images differ in size.
        """
        r = self.records[i]
        if i in self.refused:
            error = DuplicateIdError if i in self._duplicates else UnsafePathError
            raise error(f"refused record: {self.refused[i]}")
        d = self.split_dir
        try:
            masked = read_png(d / r["masked_file_name"])
            original = read_png(d / r["original_file_name"])
            mask = read_mask(d / r["mask_file_name"])
        except ImageDecodeError as e:
            raise SampleError(str(e).replace(f"{d}{os.sep}", "", 1)) from None
        if masked.shape != original.shape or mask.shape != masked.shape[:2]:
            raise SampleError(f"sizes differ: masked {masked.shape[:2]}, original {original.shape[:2]}, "
                              f"mask {mask.shape}")
        return Sample(masked=masked, original=original, mask=mask, record=r)

    def __iter__(self) -> Iterator[Sample]:
        for i in range(len(self)):
            yield self[i]

    def fingerprint(self) -> str:
        """A 16-hex-digit hash of the split's metadata (ids, seeds, templates, ...) and the limit.

        Two folders with the same fingerprint hold the same samples; used to key cached statistics.
        """
        h = hashlib.sha256(self._meta_bytes)
        h.update(f"|n={len(self.records)}".encode())
        return h.hexdigest()[:16]


def write_sample_sheet(
    root: str | os.PathLike, out: str | os.PathLike, split: str = "test", per_type: int = 6, tile: int = 160
) -> int:
    """Contact sheet of a dataset: one row per mask type, ``per_type`` masked faces each (first ids).

    Each row is labelled with its mask type; types with no samples are left out.

    Args:
        root: dataset folder.
        out: PNG path.
        split: which split to show.
        per_type: columns.
        tile: tile side in pixels.

    Returns:
        number of faces on the sheet.

    Raises:
        DatasetFormatError: ``root`` has no such split.
    """
    import cv2

    from ..core.io import write_png

    ds = MaskedFaces(root, split)
    rows = []
    shown = 0
    label_w = 90
    for t in MASK_TYPES:
        picks = [i for i, r in enumerate(ds.records) if i not in ds.refused and r.get("mask_type") == t]
        tiles = []
        for i in picks:
            if len(tiles) == per_type:
                break
            try:
                tiles.append(cv2.resize(ds[i].masked, (tile, tile), interpolation=cv2.INTER_AREA))
            except SampleError:  # a damaged sample is left off the sheet
                continue
        if not tiles:
            continue
        shown += len(tiles)
        tiles += [np.full((tile, tile, 3), 255, np.uint8)] * (per_type - len(tiles))
        label = np.full((tile, label_w, 3), 255, np.uint8)
        cv2.putText(label, t, (6, tile // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
        rows.append(np.hstack([label] + tiles))
    if not rows:
        raise DatasetFormatError(f"{root}/{split} has no samples")
    write_png(out, np.vstack(rows))
    return shown
