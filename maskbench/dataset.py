"""The Masked-Faces dataset format on disk, and its reader.

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

Record fields (:data:`RECORD_FIELDS`): ``id``, ``masked_file_name``, ``original_file_name``,
``mask_file_name`` (relative to the split folder), ``source``, ``source_id``, ``identity`` (int or str, or
null), ``split``, ``mask_type``, ``template_id``, ``texture_id``, ``seed``, ``landmarks`` (68 x 2 floats,
output pixels, iBUG-68 order), ``face_box`` (x0, y0, x1, y1, output pixels), ``hole_fraction`` (mask
pixels / image pixels, in [0, 1]), ``yaw`` (degrees, landmark estimate), ``num_faces``, ``width``,
``height``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .io import read_mask, read_png

__all__ = [
    "SPLITS",
    "MASK_TYPES",
    "RECORD_FIELDS",
    "Sample",
    "MaskedFaces",
    "DatasetFormatError",
]

SPLITS = ("train", "test")
#: The five mask types, in the order used for reports.
MASK_TYPES = ("surgical", "cloth", "n95", "kn95", "scarf")
RECORD_FIELDS = (
    "id",
    "masked_file_name",
    "original_file_name",
    "mask_file_name",
    "source",
    "source_id",
    "identity",
    "split",
    "mask_type",
    "template_id",
    "texture_id",
    "seed",
    "landmarks",
    "face_box",
    "hole_fraction",
    "yaw",
    "num_faces",
    "width",
    "height",
)
METADATA_FILE = "metadata.jsonl"


class DatasetFormatError(ValueError):
    """A folder is not a Masked-Faces dataset, or a split is missing."""


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

    Args:
        root: the dataset folder.
        split: ``"train"`` or ``"test"``.
        limit: keep only the first ``limit`` records (in id order).

    Raises:
        DatasetFormatError: ``root/split/metadata.jsonl`` does not exist or a record lacks a field.
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
        records = [json.loads(line) for line in self._meta_bytes.decode("utf-8").splitlines() if line.strip()]
        for r in records[:1]:
            missing = [f for f in ("id", "masked_file_name", "original_file_name", "mask_file_name") if f not in r]
            if missing:
                raise DatasetFormatError(f"{meta}: records lack {', '.join(missing)}")
        self.records: list[dict[str, Any]] = records[:limit] if limit is not None else records

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> Sample:
        r = self.records[i]
        d = self.split_dir
        return Sample(
            masked=read_png(d / r["masked_file_name"]),
            original=read_png(d / r["original_file_name"]),
            mask=read_mask(d / r["mask_file_name"]),
            record=r,
        )

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

    from .io import write_png

    ds = MaskedFaces(root, split)
    rows = []
    shown = 0
    label_w = 90
    for t in MASK_TYPES:
        picks = [i for i, r in enumerate(ds.records) if r.get("mask_type") == t][:per_type]
        if not picks:
            continue
        tiles = [cv2.resize(ds[i].masked, (tile, tile), interpolation=cv2.INTER_AREA) for i in picks]
        tiles += [np.full((tile, tile, 3), 255, np.uint8)] * (per_type - len(tiles))
        label = np.full((tile, label_w, 3), 255, np.uint8)
        cv2.putText(label, t, (6, tile // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
        rows.append(np.hstack([label] + tiles))
        shown += len(picks)
    if not rows:
        raise DatasetFormatError(f"{root}/{split} has no samples")
    write_png(out, np.vstack(rows))
    return shown
