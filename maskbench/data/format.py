"""The Masked-Faces format in one place: mask types, splits, file names, the sample record and its writer.

Both sides of the format use this module: ``maskbench synth`` (through :func:`write_sample` and
:func:`write_metadata`) and :mod:`maskbench.data.testing` write it, :mod:`maskbench.data.dataset` reads it. Layout
of a dataset folder::

    DIR/
      README.md                     dataset card (CARD_FILE)
      manifest.json                 how it was made (MANIFEST_FILE)
      skipped.csv                   source_id, path, reason (SKIPPED_FILE)
      {split}/metadata.jsonl        one JSON record per sample, sorted by id (METADATA_FILE)
      {split}/masked/{id}.png       the masked face, (S, S, 3) uint8 RGB
      {split}/original/{id}.png     the same face without the mask
      {split}/mask/{id}.png         binary occlusion mask, (S, S) uint8, exactly 0 or 255 (255 = hole)
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ..core.io import atomic_write_text, write_png

__all__ = [
    "MASK_TYPES",
    "SPLITS",
    "RECORD_FIELDS",
    "FILE_FIELDS",
    "ID_PATTERN",
    "METADATA_FILE",
    "MANIFEST_FILE",
    "SKIPPED_FILE",
    "CARD_FILE",
    "FORMAT_VERSION",
    "SampleRecord",
    "sample_file_names",
    "write_sample",
    "write_metadata",
]

#: The five mask types, in the order used for reports. ``mask_templates/mask_types.yaml`` gives each its
#: rules; it must name exactly these.
MASK_TYPES = ("surgical", "cloth", "n95", "kn95", "scarf")
#: The splits a dataset folder may have.
SPLITS = ("train", "test")
#: Written into ``manifest.json`` as ``format``.
FORMAT_VERSION = "maskbench-masked-faces/1"
METADATA_FILE = "metadata.jsonl"
MANIFEST_FILE = "manifest.json"
SKIPPED_FILE = "skipped.csv"
CARD_FILE = "README.md"
#: The record fields that name a file, relative to the split folder.
FILE_FIELDS = ("masked_file_name", "original_file_name", "mask_file_name")
#: A name safe to use as one path component (sample ids, method names): letters, digits, ``_ . -``, not
#: starting with a dot, at most 200 characters.
ID_PATTERN = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,199}")


@dataclass(frozen=True)
class SampleRecord:
    """One sample's metadata line (``{split}/metadata.jsonl``).

    Attributes:
        id: the sample id (:data:`ID_PATTERN`); names its three files.
        masked_file_name, original_file_name, mask_file_name: paths relative to the split folder
            (:func:`sample_file_names`).
        source: the source's name (``celeba``, ``demo``, a folder name, ...).
        source_id: the image's id in the source.
        identity: the person's id in the source (int or str), or None where unknown.
        split: ``train`` or ``test``.
        mask_type: one of :data:`MASK_TYPES`.
        template_id, texture_id: the template and texture drawn (None: the template's default look).
        seed: the sample's 63-bit seed.
        landmarks: 68 x 2 floats, iBUG-68 order, output pixels.
        face_box: ``[x0, y0, x1, y1]``, output pixels.
        hole_fraction: mask pixels / image pixels, in [0, 1].
        yaw: degrees, landmark estimate.
        num_faces: faces the detector found in the source image.
        width, height: image size in pixels.
        template_kind: ``procedural`` (a drawn template) or ``photo`` (one keyed out of a real photo).
            Written only by builds that use photo templates (``photo``, ``mix``); a drawn-only build leaves
            it out, so its records and fingerprint are those of builds made before photo templates existed;
            a missing field means ``procedural``.
    """

    id: str
    masked_file_name: str
    original_file_name: str
    mask_file_name: str
    source: str
    source_id: str
    identity: Any
    split: str
    mask_type: str
    template_id: str | None
    texture_id: str | None
    seed: int
    landmarks: list
    face_box: list
    hole_fraction: float
    yaw: float
    num_faces: int
    width: int
    height: int
    template_kind: str = "procedural"

    def as_dict(self) -> dict[str, Any]:
        """The record as a JSON-ready dict, fields in :data:`RECORD_FIELDS` order."""
        return asdict(self)


#: The record's fields, in order.
RECORD_FIELDS = tuple(f.name for f in fields(SampleRecord))


def sample_file_names(sample_id: str) -> dict[str, str]:
    """The three file fields of a sample: ``{"masked_file_name": "masked/ID.png", ...}``."""
    return {f: f"{f.removesuffix('_file_name')}/{sample_id}.png" for f in FILE_FIELDS}


def write_sample(
    split_dir: str | os.PathLike, record: SampleRecord, masked: np.ndarray, original: np.ndarray, hole: np.ndarray
) -> None:
    """Write a sample's three PNGs (atomically) where ``record`` names them.

    Args:
        split_dir: the split folder (``DIR/train``).
        record: names the files.
        masked: ``(H, W, 3) uint8`` RGB.
        original: ``(H, W, 3) uint8`` RGB.
        hole: ``(H, W) bool``, True on the hole; written as 0 / 255.

    Raises:
        OSError: a file cannot be written.
    """
    d = Path(split_dir)
    write_png(d / record.masked_file_name, masked)
    write_png(d / record.original_file_name, original)
    write_png(d / record.mask_file_name, hole.astype(np.uint8) * 255)


def write_metadata(split_dir: str | os.PathLike, records: Iterable[dict[str, Any]]) -> None:
    """Write ``split_dir/metadata.jsonl`` atomically: one JSON object per line, keys sorted, in the given
    order.

    Raises:
        OSError: the file cannot be written.
    """
    text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
    atomic_write_text(Path(split_dir) / METADATA_FILE, text)
