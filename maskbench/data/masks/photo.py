"""Photo templates: masks keyed out of real photos (``maskbench templates harvest``) and drawn on faces.

A photo-template library is a folder (written by :mod:`maskbench.harvest`, read here):

- ``card.json``: what it is (``kind``, ``version``), where the photos came from and their licence, how it
  was made (segmenter, matting, landmarks), counts per mask type;
- ``templates.csv``: one row per template: ``template_id``, ``mask_type``, ``anchors`` (the anchor set it
  was keyed through), ``source_file``, ``source_sha256``, quality figures and the 68 source landmarks
  (crop pixels, ``x0 y0 x1 y1 ...``);
- ``layers/<template_id>.png``: the mask layer only, RGBA 8 bit in the canonical frame (256 px,
  :func:`~maskbench.data.masks.frame.canonical_landmarks`): colour = the matting's foreground (never the face
  behind it), alpha = the alpha matte;
- ``rejected.csv``: every photo not taken, with its reason.

Drawing one (:meth:`PhotoLibrary.layer`, :func:`deshade`, :func:`swap_texture`): the layer is resized to
the output's canonical frame, its own low-frequency shading (the light of the photo it was keyed from) is
divided out while folds, pleats and highlights stay, and optionally its albedo is replaced by a texture
while its shading is kept (Yin & Chen 2022 swap the fabric of their 900 keyed masks with 800 texture
patches). :func:`~maskbench.data.masks.composite.put_mask` then warps it onto a face and lights it with
the target face's skin light, exactly as a rendered template.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from ...core.errors import MaskbenchError
from ...core.io import read_csv_rows
from ...core.resources import package_data_dir

__all__ = [
    "LIBRARY_KIND",
    "LIBRARY_VERSION",
    "SHADING_SIGMA",
    "TEMPLATE_FIELDS",
    "PhotoLibrary",
    "PhotoLibraryError",
    "PhotoTemplate",
    "deshade",
    "encode_layer",
    "resolve_photo_library",
    "swap_texture",
]

LIBRARY_KIND = "maskbench photo-template library"
LIBRARY_VERSION = 1

#: Gaussian sigma, in canonical pixels (256 px frame), of the low-frequency shading :func:`deshade` divides
#: out: about a fifth of the mask's height, so the light across the face goes and pleats (3-8 px) stay.
SHADING_SIGMA = 10.0

TEMPLATE_FIELDS = ("template_id", "mask_type", "anchors", "source_file", "source_sha256", "face_px", "yaw",
                   "matte_uncertainty", "border_contact", "coverage_lost", "landmarks")


class PhotoLibraryError(MaskbenchError, ValueError):
    """A photo-template library that cannot be used: missing, of another kind or version, or damaged."""


@dataclass(frozen=True)
class PhotoTemplate:
    """One row of ``templates.csv`` (module docstring)."""

    template_id: str
    mask_type: str
    anchors: str
    source_file: str
    source_sha256: str
    face_px: float
    yaw: float
    matte_uncertainty: float
    border_contact: float
    coverage_lost: float
    landmarks: np.ndarray  # (68, 2) float32, crop pixels of the source photo's aligned crop

    def row(self) -> dict[str, str]:
        """The ``templates.csv`` row (numbers rounded as written)."""
        return {"template_id": self.template_id, "mask_type": self.mask_type, "anchors": self.anchors,
                "source_file": self.source_file, "source_sha256": self.source_sha256,
                "face_px": f"{self.face_px:.1f}", "yaw": f"{self.yaw:.1f}",
                "matte_uncertainty": f"{self.matte_uncertainty:.4f}", "border_contact": f"{self.border_contact:.4f}",
                "coverage_lost": f"{self.coverage_lost:.4f}",
                "landmarks": " ".join(f"{v:.1f}" for v in np.asarray(self.landmarks, np.float64).reshape(-1))}


def _template(rec: dict[str, str], where: str) -> PhotoTemplate:
    try:
        lm = np.array([float(v) for v in rec["landmarks"].split()], np.float32).reshape(68, 2)
        return PhotoTemplate(rec["template_id"], rec["mask_type"], rec["anchors"], rec["source_file"],
                             rec["source_sha256"], float(rec["face_px"]), float(rec["yaw"]),
                             float(rec["matte_uncertainty"]), float(rec["border_contact"]),
                             float(rec["coverage_lost"]), lm)
    except (KeyError, ValueError, TypeError) as e:
        raise PhotoLibraryError(f"{where}: malformed row {rec.get('template_id', '?')!r} ({e})") from None


class PhotoLibrary:
    """A photo-template library folder (module docstring), read once.

    Args:
        root: the folder.

    Raises:
        PhotoLibraryError: no ``card.json`` / ``templates.csv``, another kind or version, a malformed row or a
            missing layer file.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        card_path, table = self.root / "card.json", self.root / "templates.csv"
        if not card_path.is_file() or not table.is_file():
            raise PhotoLibraryError(f"{self.root}: not a photo-template library (no card.json or templates.csv; "
                                    "build one with `maskbench templates harvest PHOTOS --out DIR`)")
        try:
            self.card = json.loads(card_path.read_text(encoding="utf-8"))
        except ValueError as e:
            raise PhotoLibraryError(f"{card_path}: not JSON ({e})") from None
        if self.card.get("kind") != LIBRARY_KIND or self.card.get("version") != LIBRARY_VERSION:
            raise PhotoLibraryError(f"{card_path}: kind {self.card.get('kind')!r} version {self.card.get('version')!r}, "
                                    f"expected {LIBRARY_KIND!r} version {LIBRARY_VERSION}")
        self.templates = [_template(r, str(table)) for r in read_csv_rows(table)]
        missing = [t.template_id for t in self.templates if not self.layer_path(t.template_id).is_file()]
        if missing:
            raise PhotoLibraryError(f"{self.root}: {len(missing)} layer file(s) missing, e.g. layers/{missing[0]}.png")
        self.by_type: dict[str, list[PhotoTemplate]] = {}
        for t in self.templates:
            self.by_type.setdefault(t.mask_type, []).append(t)

    def __len__(self) -> int:
        return len(self.templates)

    def layer_path(self, template_id: str) -> Path:
        """The PNG of a template's layer."""
        return self.root / "layers" / f"{template_id}.png"

    def fingerprint(self) -> str:
        """``sha256:<hex>`` over ``templates.csv`` and every layer file (datasets record it)."""
        h = hashlib.sha256((self.root / "templates.csv").read_bytes())
        for t in self.templates:
            h.update(self.layer_path(t.template_id).read_bytes())
        return "sha256:" + h.hexdigest()

    def layer(self, template_id: str, size: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """A template's layer in the canonical frame of side ``size``.

        Returns:
            ``(rgb, alpha)``: ``(size, size, 3) float32`` colour in [0, 1] (0 where alpha is 0) and
            ``(size, size) float32`` alpha in [0, 1]; read-only (cached).

        Raises:
            PhotoLibraryError: the PNG cannot be decoded or is not RGBA.
        """
        return _read_layer(str(self.layer_path(template_id)), int(size))

    def relit_layer(self, template_id: str, size: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`layer` with its own shading divided out (:func:`deshade`), computed once per template and size.

        Returns:
            ``(flat, alpha)`` as :meth:`layer`, read-only (cached).
        """
        return _read_relit(str(self.layer_path(template_id)), int(size))


@lru_cache(maxsize=2048)
def _read_relit(path: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    rgb, alpha = _read_layer(path, size)
    flat = deshade(rgb, alpha)[0]
    flat.setflags(write=False)
    return flat, alpha


@lru_cache(maxsize=2048)
def _read_layer(path: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    raw = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if raw is None or raw.ndim != 3 or raw.shape[2] != 4:
        raise PhotoLibraryError(f"{path}: not an RGBA PNG")
    rgba = cv2.cvtColor(raw, cv2.COLOR_BGRA2RGBA).astype(np.float32) / 255.0
    if rgba.shape[0] != size:
        # premultiplied, so the colour of transparent pixels does not bleed into the edge
        pre = np.concatenate([rgba[..., :3] * rgba[..., 3:], rgba[..., 3:]], axis=2)
        pre = cv2.resize(pre, (size, size), interpolation=cv2.INTER_AREA if size < rgba.shape[0] else cv2.INTER_LINEAR)
        a = np.clip(pre[..., 3], 0.0, 1.0)
        rgb = np.where(a[..., None] > 0, pre[..., :3] / np.maximum(a, 1e-6)[..., None], 0.0)
        rgba = np.concatenate([np.clip(rgb, 0, 1), a[..., None]], axis=2).astype(np.float32)
    rgb, alpha = np.ascontiguousarray(rgba[..., :3]), np.ascontiguousarray(rgba[..., 3])
    rgb[alpha <= 0] = 0.0
    rgb.setflags(write=False)
    alpha.setflags(write=False)
    return rgb, alpha


def encode_layer(layer: np.ndarray) -> bytes:
    """A layer as written in ``layers/``: ``(S, S, 4) float32`` RGBA in [0, 1] -> 8-bit RGBA PNG bytes
    (colour zeroed where alpha rounds to 0).

    Raises:
        ValueError: not ``(S, S, 4)``, or the encoder failed.
    """
    if layer.ndim != 3 or layer.shape[2] != 4:
        raise ValueError(f"expected an (S, S, 4) RGBA layer, got {layer.shape}")
    rgba = np.clip(np.rint(layer * 255.0), 0, 255).astype(np.uint8)
    rgba[rgba[..., 3] == 0, :3] = 0
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()


def _luma(rgb: np.ndarray) -> np.ndarray:
    return (rgb @ np.array([0.299, 0.587, 0.114], np.float32)).astype(np.float32)


def deshade(rgb: np.ndarray, alpha: np.ndarray, sigma: float = SHADING_SIGMA) -> tuple[np.ndarray, np.ndarray]:
    """Divide out a keyed mask's low-frequency shading (the light of the photo it came from).

    The shading is the mask's luma smoothed by a normalised convolution over the mask only (Gaussian of
    ``sigma`` canonical px scaled to the frame, weights = alpha), divided by its median over the mask; the
    colour is divided by it, so a mask lit from one side comes out evenly lit, while detail finer than
    ``sigma`` (pleats, folds, seams, highlights) stays. :func:`~maskbench.data.masks.composite.put_mask` then
    applies the target face's light.

    Args:
        rgb: ``(S, S, 3) float32`` colour in [0, 1].
        alpha: ``(S, S) float32`` in [0, 1].
        sigma: canonical pixels (at 256 px).

    Returns:
        ``(flat, shading)``: ``(S, S, 3) float32`` colour in [0, 1] (0 where alpha is 0) and the
        ``(S, S) float32`` factor divided out (1 outside the mask).
    """
    s = sigma * rgb.shape[0] / 256.0
    w = np.clip(alpha, 0.0, 1.0).astype(np.float32)
    y = _luma(rgb) + 1.0 / 255.0
    num = cv2.GaussianBlur(y * w, (0, 0), s)
    den = cv2.GaussianBlur(w, (0, 0), s)
    low = num / np.maximum(den, 1e-4)
    inside = alpha > 0.5
    ref = float(np.median(low[inside])) if inside.any() else 1.0
    shading = np.where(alpha > 0, np.clip(low / max(ref, 1e-4), 0.25, 4.0), 1.0).astype(np.float32)
    flat = np.clip(rgb / shading[..., None], 0.0, 1.0).astype(np.float32)
    flat[alpha <= 0] = 0.0
    return flat, shading


def swap_texture(rgb: np.ndarray, alpha: np.ndarray, texture: np.ndarray) -> np.ndarray:
    """Replace a keyed mask's albedo with a texture, keeping its shading (folds, pleats, highlights).

    The mask's shading is its luma over the luma's median on the mask; the result is the texture (resized
    to the frame, float [0, 1]) times that shading.

    Args:
        rgb: ``(S, S, 3) float32`` colour in [0, 1] (e.g. :func:`deshade`'s ``flat``).
        alpha: ``(S, S) float32`` in [0, 1].
        texture: ``(S, S, 3) uint8`` RGB.

    Returns:
        ``(S, S, 3) float32`` in [0, 1], 0 where alpha is 0.

    Raises:
        ValueError: ``texture`` is not ``(S, S, 3) uint8``.
    """
    if texture.dtype != np.uint8 or texture.shape != rgb.shape:
        raise ValueError(f"texture must be {rgb.shape} uint8, got {texture.shape} {texture.dtype}")
    y = _luma(rgb)
    inside = alpha > 0.5
    ref = float(np.median(y[inside])) if inside.any() else 1.0
    detail = np.clip(y / max(ref, 1e-3), 0.2, 2.0)
    out = np.clip(texture.astype(np.float32) / 255.0 * detail[..., None], 0.0, 1.0).astype(np.float32)
    out[alpha <= 0] = 0.0
    return out


def resolve_photo_library(spec: str | os.PathLike | None = None) -> Path:
    """Find a photo-template library: an explicit folder, else the one shipped in ``mask_templates/photo/library``.

    Raises:
        PhotoLibraryError: the folder does not exist (the message says how to build one).
    """
    if spec:
        p = Path(spec).expanduser()
        if not p.is_dir():
            raise PhotoLibraryError(f"{p}: no such photo-template library folder (build one with "
                                    "`maskbench templates harvest PHOTOS --out DIR`)")
        return p
    p = package_data_dir() / "photo" / "library"
    if not (p / "card.json").is_file():
        raise PhotoLibraryError(f"no photo-template library shipped at {p} and none given; build one with "
                                "`maskbench templates harvest PHOTOS --out DIR` and pass photo:DIR")
    return p
