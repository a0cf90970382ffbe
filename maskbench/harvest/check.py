"""Check the harvest where the truth is known: key the masks out of a synthetic dataset's masked faces and
compare the alpha matte with the true hole and the predicted landmarks with the true ones."""

from __future__ import annotations

import os
from collections import defaultdict
from typing import Any

import cv2
import numpy as np

from ..core.io import read_image, read_mask
from ..core.progress import progress_bar
from ..data.dataset import MaskedFaces
from .keying import CROP_SIZE, MaskKeyer, jaw_region

__all__ = ["check_on_dataset"]


def check_on_dataset(dataset: str | os.PathLike, *, split: str = "test", limit: int | None = 200,
                     segmenter: str = "landmark-gan", keyer: MaskKeyer | None = None,
                     progress: bool = False) -> dict[str, Any]:
    """Harvest the first ``limit`` masked faces of a split and score the result against the truth.

    Every face is keyed through all steps (:meth:`MaskKeyer.key` with ``stop_at_gate=False``). Per face,
    in the aligned crop's pixels: **IoU** of ``alpha > 0.5`` with the true hole warped into the crop
    (bilinear, ``> 0.5``), over the whole crop and above the jaw line + :data:`~.keying.BELOW_JAW` (where
    templates keep the matte); the **landmark error** as the mean point-to-point distance over the 68 points
    divided by the outer-eye-corner distance (NME, iBUG 36-45), the true points being the dataset's (dlib's
    on the unmasked original).

    Returns:
        ``{"faces", "keyed", "accepted", "iou_mean", "iou_median", "iou_jaw_mean", "nme_mean", "nme_median",
        "per_type": {type: {...}}, "lines": [summary lines]}``.
    """
    ds = MaskedFaces(dataset, split)
    keyer = keyer or MaskKeyer(segmenter)
    n = len(ds.records) if limit is None else min(limit, len(ds.records))
    rows = []
    for i in progress_bar(n, "check harvest", enabled=progress, unit="face", iterable=range(n)):
        r = ds.records[i]
        masked = read_image(ds.split_dir / r["masked_file_name"])
        hole = read_mask(ds.split_dir / r["mask_file_name"]) > 0
        k = keyer.key(masked, stop_at_gate=False)
        row = {"type": r["mask_type"], "keyed": k.alpha is not None, "accepted": k.reason is None, "reason": k.reason}
        if k.alpha is not None:
            true = cv2.warpAffine(hole.astype(np.float32), k.to_crop, (CROP_SIZE, CROP_SIZE), flags=cv2.INTER_LINEAR) > 0.5
            pred = k.alpha > 0.5
            row["iou"] = float((pred & true).sum() / max((pred | true).sum(), 1))
            jaw = jaw_region(k.landmarks, CROP_SIZE) > 0.5
            row["iou_jaw"] = float((pred & true & jaw).sum() / max(((pred | true) & jaw).sum(), 1))
            lm_true = np.asarray(r["landmarks"], np.float64) @ k.to_crop[:, :2].T + k.to_crop[:, 2]
            iod = float(np.hypot(*(lm_true[45] - lm_true[36])))
            row["nme"] = float(np.linalg.norm(k.landmarks - lm_true, axis=1).mean() / max(iod, 1e-6))
        rows.append(row)
    keyed = [r for r in rows if r["keyed"]]

    def stats(rs):
        if not rs:
            return {"faces": 0}
        iou, ioj, nme = (np.array([r[k] for r in rs]) for k in ("iou", "iou_jaw", "nme"))
        return {"faces": len(rs), "iou_mean": float(iou.mean()), "iou_median": float(np.median(iou)),
                "iou_jaw_mean": float(ioj.mean()), "nme_mean": float(nme.mean()), "nme_median": float(np.median(nme)),
                "accepted": sum(r["accepted"] for r in rs)}

    by_type = defaultdict(list)
    for r in keyed:
        by_type[r["type"]].append(r)
    out = {"faces": n, "keyed": len(keyed), **{k: v for k, v in stats(keyed).items() if k != "faces"},
           "per_type": {t: stats(v) for t, v in sorted(by_type.items())}}
    lines = [f"{n} faces of {dataset} ({split}): keyed {len(keyed)}, accepted by every gate {out.get('accepted', 0)}",
             f"alpha IoU with the true hole: mean {out.get('iou_mean', float('nan')):.3f}, median "
             f"{out.get('iou_median', float('nan')):.3f}; above the jaw line: mean {out.get('iou_jaw_mean', float('nan')):.3f}",
             f"landmark NME (inter-ocular): mean {out.get('nme_mean', float('nan')):.3f}, median "
             f"{out.get('nme_median', float('nan')):.3f}"]
    lines += [f"  {t:<9} {v['faces']:>4} faces  IoU {v['iou_mean']:.3f}  above jaw {v['iou_jaw_mean']:.3f}  NME "
              f"{v['nme_mean']:.3f}" for t, v in out["per_type"].items() if v["faces"]]
    out["lines"] = lines
    return out
