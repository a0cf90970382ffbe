"""Build the hand-checked real-photo mask label set (``maskbench.bench.real_masks``, card in
``mask_templates/photo/real_mask_labels/README.md``).

    python benchmarks/make_real_mask_labels.py sheets PHOTOS OUT_DIR [--n 100]
        GrabCut candidates of the first N photos with a face (measurement half, sorted by name), drawn on
        contact sheets of 20 (OUT_DIR/sheet-*.png) for review by eye.
    python benchmarks/make_real_mask_labels.py commit PHOTOS DECISIONS.csv [LABEL_DIR]
        Recompute the candidates of the photos DECISIONS.csv accepts and write LABEL_DIR/labels.npz
        (default: the shipped folder).

PHOTOS is the real-masked-dev folder of ../shared/data.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
from pathlib import Path

import cv2
import numpy as np

from maskbench.bench.real_masks import (
    LABEL_SIZE,
    LabelSet,
    default_label_dir,
    grabcut_candidate,
    photo_crop,
    write_label_set,
)
from maskbench.core.io import decode_image, read_csv_rows
from maskbench.data.realism import real_split_files
from maskbench.faces.yunet import YuNet, yunet_quad


def candidates(photos: Path, files: list[str], detector: YuNet):
    """Per file: ``(sha256, quad, crop, valid, candidate)`` or ``(sha256, None, ...)`` where no face is found."""
    for f in files:
        data = (photos / f).read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        image = decode_image(data, f)
        found = detector(image)
        if found is None:
            yield f, digest, None, None, None, None
            continue
        quad = yunet_quad(found.points)
        crop, valid = photo_crop(image, quad, LABEL_SIZE)
        yield f, digest, quad, crop, valid, grabcut_candidate(crop, valid)


def _tile(crop, valid, mask, side=200):
    im = crop.copy()
    im[~valid] = (im[~valid] * 0.35).astype(np.uint8)
    ys, xs = np.nonzero(valid)
    size = max(ys.max() - ys.min(), xs.max() - xs.min()) + 9
    y0 = max((ys.min() + ys.max()) // 2 - size // 2, 0)
    x0 = max((xs.min() + xs.max()) // 2 - size // 2, 0)
    box = (slice(y0, y0 + size), slice(x0, x0 + size))
    tile = cv2.resize(im[box], (side, side), interpolation=cv2.INTER_CUBIC)[..., ::-1].copy()
    m = cv2.resize(mask[box].astype(np.uint8), (side, side), interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(tile, contours, -1, (255, 0, 255), 1)
    return tile


def sheets(photos: Path, out: Path, n: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    files = sorted(real_split_files(None, "measurement"))
    tiles, rows = [], []
    for f, digest, quad, crop, valid, cand in candidates(photos, files, YuNet()):
        if quad is None:
            rows.append((f, digest, "no face"))
            continue
        tiles.append((f, _tile(crop, valid, cand)))
        rows.append((f, digest, ""))
        if len(tiles) == n:
            break
    for s in range(0, len(tiles), 20):
        sheet = np.full((4 * 218, 5 * 200, 3), 255, np.uint8)
        for k, (f, tile) in enumerate(tiles[s:s + 20]):
            r, c = divmod(k, 5)
            sheet[r * 218 + 18:r * 218 + 218, c * 200:(c + 1) * 200] = tile
            cv2.putText(sheet, f"{s + k}:{f}", (c * 200 + 3, r * 218 + 13), cv2.FONT_HERSHEY_SIMPLEX, 0.45, 0, 1)
        cv2.imwrite(str(out / f"sheet-{s:03d}.png"), sheet)
    with open(out / "decisions-template.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "sha256", "decision"])
        w.writerows(rows)
    print(f"{len(tiles)} candidates on {(len(tiles) + 19) // 20} sheets in {out}; fill in decisions-template.csv")


def commit(photos: Path, decisions: Path, folder: Path) -> None:
    rows = read_csv_rows(decisions)
    accepted = [r["file"] for r in rows if r["decision"] == "accept"]
    want = {r["file"]: r["sha256"] for r in rows}
    ids, digests, quads, valids, masks = [], [], [], [], []
    for f, digest, quad, crop, valid, cand in candidates(photos, accepted, YuNet()):
        if digest != want[f] or quad is None:
            raise SystemExit(f"{f}: the photo differs from the one reviewed")
        ids.append(f), digests.append(digest), quads.append(quad), valids.append(valid), masks.append(cand)
    path = write_label_set(folder, LabelSet(np.array(ids), np.array(digests), np.array(quads), np.array(valids),
                                            np.array(masks)))
    print(f"{len(ids)} of {len(rows)} reviewed photos accepted -> {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sheets")
    s.add_argument("photos", type=Path)
    s.add_argument("out", type=Path)
    s.add_argument("--n", type=int, default=100)
    c = sub.add_parser("commit")
    c.add_argument("photos", type=Path)
    c.add_argument("decisions", type=Path)
    c.add_argument("folder", type=Path, nargs="?", default=None)
    a = ap.parse_args()
    if a.cmd == "sheets":
        sheets(a.photos, a.out, a.n)
    else:
        commit(a.photos, a.decisions, a.folder or default_label_dir())


if __name__ == "__main__":
    main()
