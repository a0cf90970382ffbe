"""Mask IoU on real photos: a hand-checked set of mask regions on real masked photos, and the score of a
blind method's segmenter against it (``maskbench mask-iou``).

Synthetic test splits know their holes exactly; real photos do not, and a segmenter that is only ever
scored on the synthesis can look better than it is. The label set shipped in
``mask_templates/photo/real_mask_labels/`` (its ``README.md`` is the card) holds the mask region of real
photos of the *measurement* half of ``real-masked-dev`` (never used to build photo templates):

1. **Candidates, no learned segmenter** (:func:`grabcut_candidate`): each photo is detected with YuNet and
   aligned as the in-the-wild track aligns it (:func:`maskbench.faces.yunet.yunet_quad`, 256 px), and
   OpenCV's GrabCut (Rother et al., SIGGRAPH 2004) is seeded by face geometry alone: above 44 % of the
   crop's height (the eyes and up) background, the band 58-88 % x 26-74 % probably mask, a core around the
   mouth (66-78 % x 42-58 %) mask, pixels outside the photo background. Its largest part through the
   mouth is kept, opened by 5 px and its holes filled (OpenCV's generator seeded with 0 first: GrabCut's
   k-means draws from it). The segmenters under test take no part, so none of
   them is graded against its own output.
2. **Checked by eye** on contact sheets (each candidate outlined on the photo, zoomed to it): accepted
   where the outline follows the mask's edge all round, rejected otherwise; nothing is drawn or corrected
   by hand. The decisions are in ``decisions.csv``, the accepted masks in ``labels.npz``.

Scoring (:func:`score_segmenter`) re-crops each photo with its stored crop corners (no detector), runs the
method, and computes IoU between its predicted mask and the label **over the pixels inside the photo**
(the aligned crop reaches past the borders of tight photos; those pixels belong to neither).
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from ..core.errors import MaskbenchError
from ..core.io import atomic_write_bytes, decode_image, read_csv_rows

__all__ = ["LABEL_SIZE", "LabelSetError", "LabelSet", "default_label_dir", "grabcut_candidate", "photo_crop",
           "read_label_set", "write_label_set", "score_segmenter", "summarize_iou", "read_decisions"]

#: Side of the aligned crops the labels are drawn in (the in-the-wild track's).
LABEL_SIZE = 256


class LabelSetError(MaskbenchError, ValueError):
    """A label set that cannot be read, or photos that do not match it (one readable line)."""


@dataclass
class LabelSet:
    """Hand-checked mask regions of real photos.

    Attributes:
        ids: ``(K,)`` photo file names (relative to the photo folder).
        sha256: ``(K,)`` each photo's SHA-256, checked before scoring.
        quads: ``(K, 4, 2) float64`` the aligned crop's corners in photo pixels (top-left, bottom-left,
            bottom-right, top-right; :func:`maskbench.faces.landmarks.warp_quad`).
        valid: ``(K, S, S) bool`` crop pixels inside the photo.
        masks: ``(K, S, S) bool`` the mask region (within ``valid``).
    """

    ids: np.ndarray
    sha256: np.ndarray
    quads: np.ndarray
    valid: np.ndarray
    masks: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


def default_label_dir() -> Path:
    """The shipped set: ``mask_templates/photo/real_mask_labels``."""
    from ..core.resources import package_data_dir

    return package_data_dir() / "photo" / "real_mask_labels"


def photo_crop(image: np.ndarray, quad: np.ndarray, size: int = LABEL_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """The aligned crop of a photo and which of its pixels lie inside the photo.

    Args:
        image: ``(H, W, 3) uint8`` RGB.
        quad: ``(4, 2)`` crop corners in photo pixels.
        size: crop side.

    Returns:
        ``(crop, valid)``: ``(size, size, 3) uint8`` and ``(size, size) bool``.
    """
    from ..faces.landmarks import inside_photo, warp_quad

    crop, m = warp_quad(image, quad, size)
    return crop, inside_photo(image.shape[:2], m, size) > 0.999


def grabcut_candidate(crop: np.ndarray, valid: np.ndarray, iterations: int = 6) -> np.ndarray:
    """A mask-region candidate from GrabCut seeded by face geometry only (module docstring, step 1).

    Args:
        crop: ``(S, S, 3) uint8`` RGB aligned face crop (FFHQ rule).
        valid: ``(S, S) bool`` pixels inside the photo.
        iterations: GrabCut iterations.

    Returns:
        ``(S, S) bool`` (all False when GrabCut keeps nothing).
    """
    s = crop.shape[0]
    y = lambda f: int(f * s)  # noqa: E731
    seed = np.full((s, s), cv2.GC_PR_BGD, np.uint8)
    seed[y(0.58):y(0.88), y(0.26):y(0.74)] = cv2.GC_PR_FGD
    seed[:y(0.44), :] = cv2.GC_BGD
    seed[~valid] = cv2.GC_BGD
    seed[y(0.66):y(0.78), y(0.42):y(0.58)] = cv2.GC_FGD
    bgd, fgd = np.zeros((1, 65)), np.zeros((1, 65))
    cv2.setRNGSeed(0)  # GrabCut's k-means draws from OpenCV's global generator: fix it, or the result depends
    cv2.grabCut(np.ascontiguousarray(crop[..., ::-1]), seed, None, bgd, fgd, iterations, cv2.GC_INIT_WITH_MASK)
    fg = ((seed == cv2.GC_FGD) | (seed == cv2.GC_PR_FGD)).astype(np.uint8)
    fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, np.ones((5, 5), np.uint8))
    n, lab = cv2.connectedComponents(fg)
    keep = lab[y(0.72), s // 2]
    if keep == 0:
        if n < 2:
            return np.zeros((s, s), bool)
        keep = 1 + int(np.argmax([(lab == k).sum() for k in range(1, n)]))
    contours, _ = cv2.findContours((lab == keep).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    filled = np.zeros((s, s), np.uint8)
    cv2.drawContours(filled, contours, -1, 1, -1)
    return filled.astype(bool) & valid


def write_label_set(folder: str | Path, labels: LabelSet) -> Path:
    """Write ``labels.npz`` (masks and valid regions bit-packed) atomically; returns its path."""
    path = Path(folder) / "labels.npz"
    buf = io.BytesIO()
    np.savez_compressed(buf, ids=labels.ids.astype(str), sha256=labels.sha256.astype(str),
                        quads=labels.quads.astype(np.float64), size=np.int64(labels.masks.shape[-1]),
                        valid=np.packbits(labels.valid.ravel()), masks=np.packbits(labels.masks.ravel()))
    atomic_write_bytes(path, buf.getvalue())
    return path


def read_label_set(folder: str | Path | None = None) -> LabelSet:
    """Read a label set (default: the shipped one, :func:`default_label_dir`).

    Raises:
        LabelSetError: no ``labels.npz`` there, or a damaged one.
    """
    path = Path(folder or default_label_dir()) / "labels.npz"
    try:
        with np.load(path) as z:
            k, s = len(z["ids"]), int(z["size"])
            shape = (k, s, s)
            unpack = lambda a: np.unpackbits(a, count=k * s * s).reshape(shape).astype(bool)  # noqa: E731
            return LabelSet(z["ids"].astype(str), z["sha256"].astype(str), z["quads"], unpack(z["valid"]),
                            unpack(z["masks"]))
    except FileNotFoundError:
        raise LabelSetError(f"{path}: no label set there") from None
    except (OSError, ValueError, KeyError) as e:
        raise LabelSetError(f"{path}: not a label set ({e})") from None


def _read_photos(labels: LabelSet, photos: Path) -> list[np.ndarray]:
    out = []
    for name, digest in zip(labels.ids, labels.sha256):
        try:
            data = (photos / name).read_bytes()
        except OSError as e:
            raise LabelSetError(f"{photos / name}: cannot read a labelled photo ({e.strerror or e}); --photos must be "
                                "the real-masked-dev folder") from None
        if hashlib.sha256(data).hexdigest() != digest:
            raise LabelSetError(f"{photos / name}: not the photo that was labelled (SHA-256 differs)")
        out.append(decode_image(data, name))
    return out


def score_segmenter(predictor, labels: LabelSet, photos: str | Path, *, batch_size: int = 16,
                    seed: int = 0) -> pd.DataFrame:
    """Each labelled photo's mask IoU for a blind method's predicted mask.

    Args:
        predictor: a blind :class:`maskbench.methods.predictors.Predictor`.
        labels: the label set.
        photos: the folder the label set's ``ids`` are in (checked by SHA-256 first).
        batch_size: crops per predict call.
        seed: seeds the method's noise.

    Returns:
        One row per photo: ``id``, ``iou`` (over the pixels inside the photo; 1.0 where both are empty),
        ``predicted_fraction`` and ``label_fraction`` (of those pixels), ``error`` (None, or why the method
        failed on it; its IoU is then 0, an empty prediction).

    Raises:
        LabelSetError: a photo is missing or differs from the one labelled.
    """
    from .runs import predict_each

    images = _read_photos(labels, Path(photos))
    rows = []
    for start in range(0, len(labels), batch_size):
        idx = range(start, min(start + batch_size, len(labels)))
        crops = np.stack([photo_crop(images[i], labels.quads[i], labels.masks.shape[-1])[0] for i in idx])
        res = predict_each(predictor, crops, None, seed=seed, ids=[str(labels.ids[i]) for i in idx])
        for j, i in enumerate(idx):
            valid, truth = labels.valid[i], labels.masks[i]
            pred = (res.masks[j] if res.masks is not None else np.zeros_like(truth)) & valid
            union = int((pred | truth).sum())
            rows.append({"id": str(labels.ids[i]), "iou": float((pred & truth).sum() / union) if union else 1.0,
                         "predicted_fraction": float(pred.sum() / valid.sum()),
                         "label_fraction": float(truth.sum() / valid.sum()), "error": res.errors[j]})
    return pd.DataFrame(rows)


def summarize_iou(table: pd.DataFrame, seed: int = 0) -> dict[str, Any]:
    """Mean IoU with its 95 % bootstrap interval and the count (``{"value", "ci95", "n", "failed"}``)."""
    from ..measures.stats import bootstrap_ci

    iou = table["iou"].to_numpy(np.float64)
    lo, hi = bootstrap_ci(iou, seed)
    return {"value": float(iou.mean()), "ci95": [lo, hi], "n": int(len(iou)),
            "failed": int(table["error"].notna().sum())}


def read_decisions(folder: str | Path | None = None) -> list[dict[str, str]]:
    """The review's decisions (``decisions.csv``: ``file, sha256, decision``) of a label set."""
    return read_csv_rows(Path(folder or default_label_dir()) / "decisions.csv")
