"""Run the keyer over a folder of photos and write a photo-template library (``maskbench templates harvest``).

The library's layout is :mod:`maskbench.data.masks.photo`'s. Every photo of the folder (after ``--split``'s
filter) ends either as a template or as a row of ``rejected.csv`` with its reason: unreadable, no type label,
labelled without a usable mask, a duplicate of an earlier photo (same bytes), or one of the keyer's gates
(:data:`maskbench.harvest.keying.GATES`). The library is built in ``OUT.partial`` and renamed when complete.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from ..core.io import (
    ImageDecodeError,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    decode_image,
    read_csv_rows,
)
from ..core.progress import progress_bar
from ..data.format import MASK_TYPES
from ..data.masks.photo import (
    LIBRARY_KIND,
    LIBRARY_VERSION,
    TEMPLATE_FIELDS,
    PhotoLibrary,
    PhotoTemplate,
    encode_layer,
)
from ..data.realism import RealismError, real_split_files
from ..data.sources import scan_folder
from .keying import ANCHORS, HarvestError, MaskKeyer

__all__ = ["HarvestReport", "harvest", "read_types", "write_library_sheet", "write_rejected_sheet"]

#: Labels of ``--types`` that are not a mask type: the photo is recorded as rejected with this reason.
NOT_A_TYPE = {"none": "labelled: no mask over the mouth", "unsure": "labelled: mask type unsure"}


@dataclass
class HarvestReport:
    """What :func:`harvest` did: counts, per-type templates and rejection reasons."""

    out: Path
    photos: int = 0
    excluded_by_split: int = 0
    accepted: Counter = field(default_factory=Counter)
    rejected: Counter = field(default_factory=Counter)
    seconds: float = 0.0

    def lines(self) -> list[str]:
        """A human-readable summary, one line each."""
        n = sum(self.accepted.values())
        out = [f"{self.photos} photos -> {n} templates ({n / max(self.photos, 1):.0%}) in {self.out} "
               f"({self.seconds:.0f} s)" + (f"; {self.excluded_by_split} not in the chosen half" if self.excluded_by_split else ""),
               "templates per type: " + ", ".join(f"{t} {self.accepted.get(t, 0)}" for t in MASK_TYPES)]
        out += [f"  rejected {k}: {v}" for k, v in self.rejected.most_common()]
        return out


def read_types(path: str | os.PathLike) -> dict[str, tuple[str, bool]]:
    """A types file: ``file,type[,usable]`` (``#`` lines are comments) -> ``{file: (type, usable)}``.

    ``type`` is one of :data:`MASK_TYPES`, ``none`` or ``unsure``; ``usable`` is ``yes``/``no`` (default yes).

    Raises:
        HarvestError: the file is missing, lacks the columns, or holds an unknown type.
    """
    try:
        rows = read_csv_rows(path)
    except OSError as e:
        raise HarvestError(f"{path}: cannot read the types file ({e.strerror or e})") from None
    out = {}
    for r in rows:
        if "file" not in r or "type" not in r:
            raise HarvestError(f"{path}: a types file needs the columns file,type[,usable]")
        t = r["type"].strip().lower()
        if t not in MASK_TYPES and t not in NOT_A_TYPE:
            raise HarvestError(f"{path}: {r['file']}: unknown type {t!r} (one of {', '.join(MASK_TYPES)}, none, unsure)")
        out[r["file"]] = (t, (r.get("usable") or "yes").strip().lower() != "no")
    return out


def _jpeg(path: Path, image: np.ndarray, quality: int = 82) -> None:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    atomic_write_bytes(path, buf.tobytes())


def harvest(
    photos: str | os.PathLike,
    out: str | os.PathLike,
    *,
    types: str | os.PathLike | None = None,
    split: str | os.PathLike | None = None,
    half: str = "harvest",
    segmenter: str = "landmark-gan",
    matting: str = "closed-form",
    device: str = "cpu",
    licence: str = "research use only (inherits the source photos' licence)",
    limit: int | None = None,
    force: bool = False,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    keyer: MaskKeyer | None = None,
) -> HarvestReport:
    """Key the masks out of a folder of photos into a photo-template library (module docstring).

    Args:
        photos: folder of photos of people wearing masks.
        out: the library folder to write (must not exist unless ``force``).
        types: a types file (:func:`read_types`); required: the mask type of each photo.
        split: a split file; only its ``half`` is harvested (the rest is counted, not read).
        segmenter: ``landmark-gan`` or ``3dprior`` (:class:`~maskbench.harvest.keying.MaskKeyer`).
        matting: ``closed-form`` or ``none`` (:class:`~maskbench.harvest.keying.MaskKeyer`).
        licence: the source photos' licence, written on the card.
        limit: only the first ``limit`` photos (after the split), for a quick look.
        force: replace an existing library at ``out``.

    Returns:
        :class:`HarvestReport`.

    Raises:
        HarvestError: no such folder, no photos, no types file, ``out`` exists without ``force``.
    """
    t0 = time.perf_counter()
    root, out = Path(photos).expanduser(), Path(out).expanduser()
    if not root.is_dir():
        raise HarvestError(f"{root}: no such folder of photos")
    if types is None:
        raise HarvestError("give the mask type of each photo with --types FILE.csv (file,type[,usable])")
    labels = read_types(types)
    if out.exists() and any(out.iterdir()) and not force:
        raise HarvestError(f"{out} exists; choose another --out or pass --force to replace it")
    items = scan_folder(root)
    report = HarvestReport(out)
    if split is not None:
        try:
            keep = real_split_files(split, half)
        except RealismError as e:
            raise HarvestError(str(e)) from None
        report.excluded_by_split = sum(it.source_id not in keep for it in items)
        items = [it for it in items if it.source_id in keep]
    items = items[:limit] if limit else items
    if not items:
        raise HarvestError(f"{root}: no photos to harvest")
    report.photos = len(items)
    keyer = keyer or MaskKeyer(segmenter, device, matting=matting)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "layers").mkdir(parents=True)
    templates: list[PhotoTemplate] = []
    rejected: list[dict[str, Any]] = []
    thumbs: list[tuple[np.ndarray, str, str]] = []  # rejected photos' crops for the sheet
    seen: dict[str, str] = {}
    for it in progress_bar(len(items), "harvest", enabled=progress, unit="photo", iterable=items):
        digest, reason, keyed = "", None, None
        try:
            data = it.read_bytes() if it.problem is None else None
        except OSError as e:
            data, reason = None, f"unreadable ({e.strerror or e})"
        if data is None and reason is None:
            reason = it.problem
        if data is not None:
            digest = hashlib.sha256(data).hexdigest()
            label = labels.get(it.source_id)
            if digest in seen:
                reason = f"duplicate (same bytes as {seen[digest]})"
            elif label is None:
                reason = "no type label in the types file"
            elif label[0] in NOT_A_TYPE:
                reason = NOT_A_TYPE[label[0]]
            elif not label[1]:
                reason = "labelled not usable (hands or objects over the mask, profile, tiny face or cut mask)"
            else:
                seen[digest] = it.source_id
                try:
                    keyed = keyer.key(decode_image(data, it.source_id))
                    reason = keyed.reason
                except ImageDecodeError as e:
                    reason = f"unreadable ({str(e).removeprefix(f'{it.source_id}: ')})"
        if reason is None:
            t = labels[it.source_id][0]
            tid = f"{t}-{digest[:10]}"
            atomic_write_bytes(tmp / "layers" / f"{tid}.png", encode_layer(keyed.layer))
            f = keyed.figures
            templates.append(PhotoTemplate(tid, t, ANCHORS, it.source_id, digest, f["face_px"], f["yaw"],
                                           f["matte_uncertainty"], f["border_contact"], f["coverage_lost"],
                                           keyed.landmarks))
            report.accepted[t] += 1
            continue
        kind = reason.split(" (")[0]
        report.rejected[kind] += 1
        rejected.append({"source_file": it.source_id, "source_sha256": digest, "reason": reason,
                         "figures": json.dumps({k: round(v, 4) for k, v in (keyed.figures if keyed else {}).items()})})
        if keyed is not None and keyed.crop is not None:
            thumbs.append((keyed.crop, it.source_id, reason))
    _write_table(tmp / "templates.csv", TEMPLATE_FIELDS, [t.row() for t in templates])
    _write_table(tmp / "rejected.csv", ("source_file", "source_sha256", "reason", "figures"), rejected)
    card = {
        "kind": LIBRARY_KIND,
        "version": LIBRARY_VERSION,
        "source": {"folder": root.name, "photos": report.photos, "excluded_by_split": report.excluded_by_split,
                   "split_file": Path(split).name if split else None, "half": half if split else None,
                   "types_file": Path(types).name},
        "licence": licence,
        "made_with": keyer.describe(),
        "templates": len(templates),
        "per_type": {t: report.accepted.get(t, 0) for t in MASK_TYPES},
        "rejected": dict(report.rejected.most_common()),
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    atomic_write_json(tmp / "card.json", card)
    atomic_write_text(tmp / "README.md", library_card_text(card))
    if templates:
        write_library_sheet(PhotoLibrary(tmp), tmp / "sheet.jpg")
    if thumbs:
        write_rejected_sheet(thumbs, tmp / "rejected.jpg")
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    report.seconds = time.perf_counter() - t0
    if log:
        for line in report.lines():
            log(line)
    return report


def _write_table(path: Path, columns, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def library_card_text(card: dict[str, Any]) -> str:
    """The library's README card (markdown) from its ``card.json``."""
    made = card["made_with"]
    per = ", ".join(f"{t} {n}" for t, n in card["per_type"].items())
    rej = "\n".join(f"| {k} | {v} |" for k, v in card["rejected"].items())
    return f"""# Photo-template library

Masks keyed out of real photos by `maskbench templates harvest` ({card['created']}): {card['templates']} templates
({per}) from {card['source']['photos']} photos of `{card['source']['folder']}`
(half `{card['source']['half']}` of `{card['source']['split_file']}`; mask types from `{card['source']['types_file']}`).

**Licence: {card['licence']}.** The templates are cut out of web photos collected for research; a dataset
synthesized with them inherits that restriction and says so in its card. `maskbench synth --templates procedural`
builds a dataset without them.

Each template is the mask layer only (colour from the matting's foreground estimate, alpha matte), warped
into the canonical frame (`layers/*.png`, RGBA, 256 px); `templates.csv` gives its type, source file name and
sha256, the 68 source landmarks and its quality figures. How they were made:

- face: {made['face']}
- region: {made['segmenter']}
- landmarks: {made['landmarks']}
- matte: {made['matting']}
- canonical frame: piecewise-affine through the `{made['anchors']}` anchor set

Rejected photos (`rejected.csv`, each with its reason and figures):

| reason | photos |
| --- | --- |
{rej}
"""


def _backdrop(size: int) -> np.ndarray:
    from ..data.masks import canonical_landmarks

    img = np.full((size, size, 3), 235, np.uint8)
    lm = canonical_landmarks(size)
    for a, b, closed in [(0, 17, False), (17, 22, False), (22, 27, False), (27, 36, False), (36, 42, True),
                         (42, 48, True), (48, 60, True)]:
        cv2.polylines(img, [np.round(lm[a:b] * 16).astype(np.int32)], closed, (170, 170, 170), 1, cv2.LINE_AA, shift=4)
    return img


def write_library_sheet(library: PhotoLibrary, path: str | os.PathLike, tile: int = 112, columns: int = 12,
                        limit: int | None = None, templates: list[PhotoTemplate] | None = None) -> np.ndarray:
    """The templates of a library (``templates``, default all) over the canonical face outline, labelled with
    their type, as one JPEG.

    Returns:
        The sheet ``(rows * (tile + 12), columns * tile, 3) uint8``.
    """
    ts = sorted(library.templates if templates is None else templates, key=lambda t: (MASK_TYPES.index(t.mask_type), t.template_id))[:limit]
    columns = max(1, min(columns, len(ts)))
    rows = -(-len(ts) // columns)
    sheet = np.full((rows * (tile + 12), columns * tile, 3), 255, np.uint8)
    back = _backdrop(tile).astype(np.float32) / 255.0
    for i, t in enumerate(ts):
        rgb, alpha = library.layer(t.template_id, tile)
        im = back * (1 - alpha[..., None]) + rgb * alpha[..., None]
        r, c = divmod(i, columns)
        y0, x0 = r * (tile + 12), c * tile
        sheet[y0:y0 + tile, x0:x0 + tile] = np.clip(im * 255 + 0.5, 0, 255).astype(np.uint8)
        cv2.putText(sheet, t.mask_type, (x0 + 3, y0 + tile + 9), cv2.FONT_HERSHEY_SIMPLEX, 0.3, (40, 40, 40), 1, cv2.LINE_AA)
    _jpeg(Path(path), sheet)
    return sheet


def write_rejected_sheet(thumbs: list[tuple[np.ndarray, str, str]], path: str | os.PathLike, tile: int = 128,
                         columns: int = 8, per_reason: int = 6) -> np.ndarray:
    """Rejected photos' aligned crops with their reasons (up to ``per_reason`` of each), as one JPEG.

    Args:
        thumbs: ``(crop (S, S, 3) uint8, source file, reason)``.

    Returns:
        The sheet, ``uint8`` RGB.
    """
    by: dict[str, list] = {}
    for crop, name, reason in thumbs:
        by.setdefault(reason.split(" (")[0], []).append((crop, name, reason))
    chosen = [x for k in sorted(by) for x in by[k][:per_reason]]
    columns = max(1, min(columns, len(chosen)))
    rows = -(-len(chosen) // columns)
    lh = 26
    sheet = np.full((rows * (tile + lh), columns * tile, 3), 255, np.uint8)
    for i, (crop, name, reason) in enumerate(chosen):
        r, c = divmod(i, columns)
        y0, x0 = r * (tile + lh), c * tile
        sheet[y0:y0 + tile, x0:x0 + tile] = cv2.resize(crop, (tile, tile), interpolation=cv2.INTER_AREA)
        words, line1 = reason.split(" "), ""
        while words and len(line1) + len(words[0]) < 30:
            line1 += words.pop(0) + " "
        for k, text in enumerate((line1.strip(), " ".join(words)[:30])):
            cv2.putText(sheet, text, (x0 + 2, y0 + tile + 10 + 11 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.3, (150, 20, 20),
                        1, cv2.LINE_AA)
    _jpeg(Path(path), sheet)
    return sheet
