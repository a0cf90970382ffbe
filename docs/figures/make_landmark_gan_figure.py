"""Make ``docs/figures/landmark-gan.jpg``: for a few test faces, the masked input, the predicted mask outline
with the predicted landmarks (green) and dlib's on the masked face (red), the output guided by each, and
the original with its own landmarks (the target).

Usage: ``python docs/figures/make_landmark_gan_figure.py DATASET [--n 5] [--out PATH] [--weights FILE]``
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from maskbench import predictors as P
from maskbench.core.io import atomic_write_bytes, write_png
from maskbench.data.dataset import MaskedFaces


def _dots(image: np.ndarray, pts: np.ndarray, colour) -> np.ndarray:
    out = image.copy()
    for x, y in pts:
        cv2.circle(out, (int(round(x)), int(round(y))), 2, colour, -1, cv2.LINE_AA)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data")
    ap.add_argument("--n", type=int, default=5)
    ap.add_argument("--step", type=int, default=97, help="take every STEP-th test face")
    ap.add_argument("--out", default=str(Path(__file__).with_name("landmark-gan.jpg")))
    ap.add_argument("--weights", default=None, help="weights file [default: the committed one]")
    a = ap.parse_args()
    ds = MaskedFaces(a.data, "test")
    samples = [ds[i] for i in range(0, len(ds), a.step)][: a.n]
    ims = np.stack([s.masked for s in samples])
    opts = {"weights": a.weights} if a.weights else {}
    ours = P.run_predictor(P.create_predictor("landmark-gan", **opts), ims, None)
    dlib = P.run_predictor(P.create_predictor("landmark-gan", landmarks="dlib", **opts), ims, None)
    rows = []
    for i, s in enumerate(samples):
        m = ours.masks[i].astype(np.uint8)
        edge = cv2.morphologyEx(m, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
        marked = ims[i].copy()
        marked[edge] = (255, 255, 0)
        marked = _dots(_dots(marked, dlib.landmarks[i], (255, 40, 40)), ours.landmarks[i], (40, 255, 40))
        truth = _dots(s.original, np.asarray(s.record["landmarks"]), (40, 255, 40))
        rows.append(np.concatenate([ims[i], marked, ours.images[i], dlib.images[i], truth], 1))
    grid = np.concatenate(rows, 0)
    head = np.full((28, grid.shape[1], 3), 255, np.uint8)
    w = ims.shape[2]
    for k, t in enumerate(["masked input", "mask; ours (g), dlib (r)", "output (ours)", "output (dlib's)",
                           "original, its landmarks"]):
        cv2.putText(head, t, (k * w + 6, 19), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    small = cv2.resize(np.concatenate([head, grid], 0), None, fx=0.75, fy=0.75, interpolation=cv2.INTER_AREA)
    if a.out.lower().endswith((".jpg", ".jpeg")):  # the README's copy: JPEG keeps it well under 1 MB
        atomic_write_bytes(a.out, cv2.imencode(".jpg", small[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())
    else:
        write_png(a.out, small)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
