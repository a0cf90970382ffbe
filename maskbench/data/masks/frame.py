"""The canonical frame masks are drawn in, and the anchor points that tie it to a face.

The canonical frame is a 256 x 256 image whose face has the mean iBUG-68 landmarks of
``mask_templates/mean_face_68.csv`` (:func:`canonical_landmarks`), y downwards, centre line x = 128.
Templates give their shapes in its pixels; :class:`Frame` holds per-size constants the renderer and
shaders share (pixel-centre coordinates, the face-hull clip, a fabric grain); :func:`jaw_table` is the
jaw line moved inwards. Anchor sets (``anchors.json``, :class:`AnchorSet`) are the warp's control points,
evaluated on the canonical and on a detected face's landmarks.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from ...core.resources import package_data_dir

__all__ = [
    "CANONICAL_SIZE",
    "CENTER_X",
    "HULL_CLIP",
    "AnchorSet",
    "Frame",
    "canonical_landmarks",
    "data_dir",
    "data_file",
    "face_hull",
    "get_frame",
    "jaw_point",
    "jaw_table",
    "load_anchor_sets",
]

#: Side of the canonical frame, in pixels; template parameters are in its pixels.
CANONICAL_SIZE = 256

#: Shrink, in canonical pixels, of the face hull that clips face masks (the contract allows 3).
HULL_CLIP = 3.5

#: The face's centre line, canonical x.
CENTER_X = 128.0


def data_dir() -> Path:
    """The ``mask_templates`` data folder (:func:`maskbench.core.resources.package_data_dir`).

    Raises:
        FileNotFoundError: it is missing (a broken installation).
    """
    return package_data_dir()


def data_file(name: str) -> Path:
    """A file of :func:`data_dir`.

    Raises:
        FileNotFoundError: the file is missing; the message names it.
    """
    p = data_dir() / name
    if not p.is_file():
        raise FileNotFoundError(f"mask template data file {p} does not exist")
    return p


@lru_cache(maxsize=1)
def canonical_256() -> np.ndarray:
    """The canonical landmarks at 256 px, ``(68, 2) float32``, read-only (read once).

    Raises:
        FileNotFoundError: ``mean_face_68.csv`` is missing.
        ValueError: it does not list landmarks 0..67.
    """
    text = data_file("mean_face_68.csv").read_text(encoding="utf-8")
    rows = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    reader = csv.DictReader(rows)
    pts = np.zeros((68, 2), np.float32)
    seen = set()
    for rec in reader:
        i = int(rec["index"])
        pts[i] = float(rec["x"]), float(rec["y"])
        seen.add(i)
    if seen != set(range(68)):
        raise ValueError(f"mean_face_68.csv: expected landmarks 0..67, got {len(seen)} distinct indices")
    pts.setflags(write=False)
    return pts


def canonical_landmarks(size: int = CANONICAL_SIZE) -> np.ndarray:
    """The canonical (mean, FFHQ-aligned) iBUG-68 landmarks templates are drawn on.

    Args:
        size: side of the square frame in pixels; points are scaled by ``size / 256``.

    Returns:
        ``(68, 2) float32`` ``(x, y)`` pixel coordinates (a fresh, writable copy).

    Raises:
        FileNotFoundError: ``mean_face_68.csv`` is missing.
    """
    return canonical_256() * np.float32(size / CANONICAL_SIZE)


def face_hull(size: int = CANONICAL_SIZE) -> np.ndarray:
    """Face outline of the canonical frame: convex hull of the jaw (0-16) and brow (17-26) landmarks.

    Returns:
        ``(K, 2) float32`` hull vertices in pixels, in order around the hull.
    """
    pts = canonical_landmarks(size)[:27]
    return cv2.convexHull(pts, clockwise=False)[:, 0, :].astype(np.float32)


@dataclass(frozen=True)
class Frame:
    """Per-size constants: pixel-centre coordinates in canonical units and the face-hull clip (:func:`get_frame`)."""

    size: int
    scale: float  # output pixels per canonical pixel
    cx: np.ndarray  # (S,) canonical x of each column
    cy: np.ndarray  # (S,) canonical y of each row
    hull_clip: np.ndarray  # (S, S) float32 alpha of the face hull shrunk by HULL_CLIP
    grain: np.ndarray  # (S, S) float32 fabric grain, mean 0
    x0: int = 0  # a cropped frame (:meth:`crop`): its first column and row in the full frame
    y0: int = 0

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, columns)`` of this frame's arrays (``(size, size)`` unless cropped)."""
        return len(self.cy), len(self.cx)

    def crop(self, y0: int, y1: int, x0: int, x1: int) -> "Frame":
        """The rows ``y0:y1`` and columns ``x0:x1`` of this (full) frame: the same pixels, fewer of them."""
        return Frame(self.size, self.scale, self.cx[x0:x1], self.cy[y0:y1], self.hull_clip[y0:y1, x0:x1],
                     self.grain[y0:y1, x0:x1], x0, y0)


@lru_cache(maxsize=8)
def get_frame(size: int) -> Frame:
    """The :class:`Frame` of a ``size`` x ``size`` output (cached; its arrays are read-only)."""
    scale = size / CANONICAL_SIZE
    c = ((np.arange(size, dtype=np.float32) + 0.5) / scale).astype(np.float32)
    hull = face_hull(CANONICAL_SIZE).astype(np.float64)
    # signed distance to a convex polygon (inside > 0) = min over edges of the inward edge distance
    sd = np.full((size, size), np.inf, np.float32)
    n = len(hull)
    for i in range(n):
        a, b = hull[i], hull[(i + 1) % n]
        e = b - a
        nrm = np.array([e[1], -e[0]]) / np.hypot(*e)
        if np.dot(hull.mean(0) - a, nrm) < 0:  # make it point inwards
            nrm = -nrm
        d = (c[None, :] - a[0]) * nrm[0] + (c[:, None] - a[1]) * nrm[1]
        np.minimum(sd, d.astype(np.float32), out=sd)
    hull_clip = np.clip((sd - HULL_CLIP) * scale + 0.5, 0.0, 1.0).astype(np.float32)
    rng = np.random.default_rng(20240607)
    g = rng.standard_normal((size, size)).astype(np.float32)
    g = cv2.GaussianBlur(g, (0, 0), 0.6 * max(scale, 0.5)) + 0.15 * cv2.GaussianBlur(g, (0, 0), 2.0 * scale)
    g /= max(float(g.std()), 1e-6)
    for a in (c, hull_clip, g):
        a.setflags(write=False)
    return Frame(size, scale, c, c, hull_clip, g)


@lru_cache(maxsize=64)
def jaw_table(inset: float) -> tuple[np.ndarray, np.ndarray]:
    """The jaw line moved ``inset`` canonical px inwards: ``(xs, ys)`` sampled every 0.25 px.

    It is the erosion of the face region ``{y <= jaw(x)}`` by a disk, so every point of the result is at
    least ``inset`` from the jaw. Columns outside the jaw's x-range get -1e4 (no face there).
    """
    lm = canonical_256().astype(np.float64)
    jx, jy = lm[:17, 0], lm[:17, 1]
    xs = np.arange(0.0, CANONICAL_SIZE + 0.01, 0.25)
    base = np.where((xs >= jx[0]) & (xs <= jx[-1]), np.interp(xs, jx, jy), -1e4)
    if inset <= 0:
        return xs, base
    k = int(math.ceil(inset / 0.25))
    pad = np.pad(base, k, constant_values=-1e4)
    out = np.full_like(base, np.inf)
    for j in range(-k, k + 1):
        s = j * 0.25
        if abs(s) <= inset:
            np.minimum(out, pad[k + j : k + j + len(xs)] - math.sqrt(inset * inset - s * s), out=out)
    return xs, out


def jaw_point(t: float, right: bool) -> np.ndarray:
    """Point on the jaw polyline at fractional landmark index ``t`` (mirrored to 16 - t on the right):
    ``(2,) float64``, canonical pixels."""
    lm = canonical_256().astype(np.float64)
    if right:
        t = 16.0 - t
    i = int(min(max(math.floor(t), 0), 15))
    f = t - i
    return lm[i] * (1 - f) + lm[i + 1] * f


@dataclass(frozen=True)
class AnchorSet:
    """Warp control points defined on the 68 landmarks (see ``mask_templates/anchors.json``).

    Attributes:
        name: the set's name (``face``, ``face_neck``).
        landmarks: indices of landmarks used as they are.
        extrapolated: ``(M, 3)`` rows ``(from, away, t)``: point ``lm[from] + t * (lm[from] - lm[away])``.
    """

    name: str
    landmarks: tuple[int, ...]
    extrapolated: tuple[tuple[int, int, float], ...]

    def points(self, landmarks: np.ndarray) -> np.ndarray:
        """Evaluate the set on ``(68, 2)`` landmarks; returns ``(K, 2) float64`` points, pixels."""
        lm = np.asarray(landmarks, np.float64)
        pts = [lm[list(self.landmarks)]]
        if self.extrapolated:
            e = np.array(self.extrapolated)
            a, b, t = e[:, 0].astype(int), e[:, 1].astype(int), e[:, 2:3]
            pts.append(lm[a] + t * (lm[a] - lm[b]))
        return np.concatenate(pts)


@lru_cache(maxsize=1)
def load_anchor_sets(path: str | None = None) -> dict[str, AnchorSet]:
    """Read ``mask_templates/anchors.json`` into :class:`AnchorSet` objects.

    Args:
        path: an ``anchors.json``; default: the shipped one.

    Returns:
        ``{name: AnchorSet}`` for every set (keys starting with ``_`` are comments).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: a landmark index is outside 0-67 or a set is malformed.
    """
    raw = json.loads(Path(path or data_file("anchors.json")).read_text())
    sets = {}
    for name, spec in raw.items():
        if name.startswith("_"):
            continue
        lms = tuple(int(i) for i in spec["landmarks"])
        ext = tuple((int(e["from"]), int(e["away"]), float(e["t"])) for e in spec.get("extrapolated", []))
        bad = [i for i in lms + tuple(x for e in ext for x in e[:2]) if not 0 <= i < 68]
        if bad:
            raise ValueError(f"anchors.json set {name!r}: landmark indices out of range: {bad}")
        sets[name] = AnchorSet(name, lms, ext)
    return sets
