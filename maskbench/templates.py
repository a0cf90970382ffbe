"""Face-mask templates: parametric mask shapes drawn in the canonical face frame, and their renderer.

A template is one row of ``mask_templates/templates.csv`` (:class:`TemplateSpec`): a mask type
(surgical, cloth, N95, KN95, scarf), a style and explicit shape parameters in *canonical pixels*.
The canonical frame is a 256 x 256 image whose face has the mean iBUG-68 landmarks of
``mask_templates/mean_face_68.csv`` (:func:`canonical_landmarks`). :func:`render_template` draws the
template in that frame (scaled by ``size / 256``) and returns the mask's albedo, with its own structure
shading (pleats, seams, folds, nose wire, valve, dome, straps), and its coverage alpha. Synthesis then
warps both onto a real face piecewise-affinely through the template's anchor set (``anchors.json``).

Geometry (all canonical pixels, y grows downwards). Surgical, cloth, N95 and KN95 masks are the region
``|x - 128| <= half_width, top(x) <= y <= bottom(x)``: ``top`` rises from ``top_side_y`` at the sides to
``top_y`` over the nose; ``bottom`` is the jaw line moved ``chin_inset`` pixels inwards (an erosion of the
face region), lowered to ``bottom_side_y`` at the sides. Everything face masks draw, ear loops and head
straps included, is clipped to the convex hull of the jaw and brow landmarks shrunk by 3.5 pixels, so
loops end at the face outline. Scarves run from ``top_y`` down to the bottom of the canvas, narrowing
from ``half_width`` to ``neck_width`` at the neck.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.resources
import math
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from .dataset import MASK_TYPES

__all__ = [
    "MASK_TYPES",
    "CANONICAL_SIZE",
    "STYLES",
    "TemplateSpec",
    "TemplateSpecError",
    "canonical_landmarks",
    "data_dir",
    "face_hull",
    "library_hash",
    "load_templates",
    "render_template",
    "write_contact_sheet",
]

#: Side of the canonical frame, in pixels; template parameters are in its pixels.
CANONICAL_SIZE = 256

#: Styles each mask type may have.
STYLES: dict[str, tuple[str, ...]] = {
    "surgical": ("pleated",),
    "cloth": ("contoured", "pleated"),
    "n95": ("cup",),
    "kn95": ("folded",),
    "scarf": ("tube", "bandana"),
}

#: Strap kind each mask type has.
_STRAPS = {"surgical": "ear_loops", "cloth": "ear_loops", "n95": "head_straps", "kn95": "ear_loops", "scarf": "none"}

#: Bumped whenever :func:`render_template` draws differently; part of :func:`library_hash`.
RENDERER_VERSION = "1"

#: Shrink, in canonical pixels, of the face hull that clips face masks (the contract allows 3).
HULL_CLIP = 3.5

_CENTER_X = 128.0


class TemplateSpecError(ValueError):
    """A template table is malformed: the message names the file, the row and the column."""


@dataclass(frozen=True)
class TemplateSpec:
    """One mask template (one row of ``templates.csv``); lengths are canonical pixels (256 frame).

    Attributes:
        template_id: unique id, ``<mask_type>-NNNN``.
        mask_type: one of :data:`MASK_TYPES`.
        anchors: warp anchor set in ``anchors.json``: ``face``, or ``face_neck`` for scarves.
        style: one of ``STYLES[mask_type]`` (scarf: ``tube`` or ``bandana``; cloth: ``contoured``
            with a centre seam or ``pleated``).
        top_y: y of the top edge on the centre line (over the nose bridge).
        top_side_y: y of the top edge at the side edges (N95: y of the cup's widest point).
        top_power: exponent of the top edge's profile, ``top(u) = top_y + (top_side_y - top_y) |u|^p``
            (N95: superellipse exponent of the cup).
        half_width: half the mask's width at its top, from the centre line x = 128.
        chin_inset: how far the bottom edge stays inside the jaw line; scarves: 0.
        bottom_side_y: y the bottom edge rises to at the side edges (>= 256: follows the jaw line).
        bottom_power: exponent of the bottom edge's rise towards the sides.
        neck_width: scarves: half width at the canvas bottom; other types: equal to ``half_width``.
        pleats: number of horizontal pleats (surgical 2-4, pleated cloth 2-3, else 0).
        nose_wire: whether a nose wire strip shows along the top edge.
        straps: ``ear_loops``, ``head_straps`` (N95) or ``none`` (scarf).
        strap_width: loop or strap width.
        strap_top: where the upper loop/strap meets the face outline, as a fractional jaw landmark
            index (0 = landmark 0; mirrored on the right side).
        strap_bottom: same for the lower loop/strap.
        strap_color: ``#rrggbb``, or ``match`` for the mask's own (texture) colour.
        valve: ``none``, ``round`` or ``rect`` (N95 only).
        valve_x: valve centre's x offset from the centre line (negative: image left).
        valve_y: valve centre's y.
        valve_size: valve radius (round) or half side (rect).
        valve_color: ``#rrggbb``.
        color: default body colour ``#rrggbb`` (used when no texture is given).
        seed: seeds the template's fold phases and fabric grain.
    """

    template_id: str
    mask_type: str
    anchors: str
    style: str
    top_y: float
    top_side_y: float
    top_power: float
    half_width: float
    chin_inset: float
    bottom_side_y: float
    bottom_power: float
    neck_width: float
    pleats: int
    nose_wire: bool
    straps: str
    strap_width: float
    strap_top: float
    strap_bottom: float
    strap_color: str
    valve: str
    valve_x: float
    valve_y: float
    valve_size: float
    valve_color: str
    color: str
    seed: int


# --------------------------------------------------------------------------------------------- data


_DATA_FILES = ("mean_face_68.csv", "anchors.json", "templates.csv", "textures.csv")


def data_dir() -> Path:
    """The ``mask_templates`` data folder.

    A source checkout's ``<repo>/mask_templates`` is used when present; otherwise the installed package
    ``maskbench.mask_templates`` (the wheel ships the folder under that name).

    Returns:
        The folder's path.

    Raises:
        FileNotFoundError: neither exists (a broken installation).
    """
    import maskbench

    local = Path(maskbench.__file__).resolve().parent.parent / "mask_templates"
    if (local / "mean_face_68.csv").is_file():
        return local
    try:  # a namespace package (no __init__.py): files() is a MultiplexedPath, its children are Paths
        probe = importlib.resources.files("maskbench.mask_templates") / "mean_face_68.csv"
    except ModuleNotFoundError:
        probe = None
    installed = Path(str(probe)).parent if probe is not None else None
    if installed is None or not (installed / "mean_face_68.csv").is_file():
        raise FileNotFoundError(
            f"mask template data not found: neither {local} nor an installed maskbench.mask_templates package"
        )
    return installed


def _data_file(name: str) -> Path:
    """A file of :func:`data_dir`; FileNotFoundError names it when missing."""
    p = data_dir() / name
    if not p.is_file():
        raise FileNotFoundError(f"mask template data file {p} does not exist")
    return p


def library_hash() -> str:
    """Fingerprint of everything that decides how masks look: the data tables and the renderer version.

    Datasets record it, so a resumed run can tell whether the library changed underneath it.

    Returns:
        ``"sha256:<64 hex digits>"``.

    Raises:
        FileNotFoundError: a data file is missing.
    """
    h = hashlib.sha256(f"renderer={RENDERER_VERSION}\n".encode())
    for name in _DATA_FILES:
        h.update(f"{name}\n".encode())
        h.update(_data_file(name).read_bytes())
    return "sha256:" + h.hexdigest()


@lru_cache(maxsize=1)
def _canonical_256() -> np.ndarray:
    text = _data_file("mean_face_68.csv").read_text(encoding="utf-8")
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
    return _canonical_256() * np.float32(size / CANONICAL_SIZE)


def face_hull(size: int = CANONICAL_SIZE) -> np.ndarray:
    """Face outline of the canonical frame: convex hull of the jaw (0-16) and brow (17-26) landmarks.

    Returns:
        ``(K, 2) float32`` hull vertices in pixels, in order around the hull.
    """
    pts = canonical_landmarks(size)[:27]
    return cv2.convexHull(pts, clockwise=False)[:, 0, :].astype(np.float32)


# -------------------------------------------------------------------------------------- table loading

_COLUMNS: dict[str, tuple[type, Any]] = {
    # name: (type, (min, max) or allowed values)
    "template_id": (str, None),
    "mask_type": (str, MASK_TYPES),
    "anchors": (str, ("face", "face_neck")),
    "style": (str, None),
    "top_y": (float, (133.0, 148.0)),
    "top_side_y": (float, (128.0, 200.0)),
    "top_power": (float, (0.8, 4.0)),
    "half_width": (float, (40.0, 100.0)),
    "chin_inset": (float, (0.0, 16.0)),
    "bottom_side_y": (float, (150.0, 400.0)),
    "bottom_power": (float, (0.8, 4.0)),
    "neck_width": (float, (10.0, 110.0)),
    "pleats": (int, (0, 4)),
    "nose_wire": (bool, None),
    "straps": (str, ("ear_loops", "head_straps", "none")),
    "strap_width": (float, (0.0, 6.0)),
    "strap_top": (float, (0.0, 5.0)),
    "strap_bottom": (float, (0.0, 5.0)),
    "strap_color": (str, "color_or_match"),
    "valve": (str, ("none", "round", "rect")),
    "valve_x": (float, (-50.0, 50.0)),
    "valve_y": (float, (150.0, 215.0)),
    "valve_size": (float, (0.0, 18.0)),
    "valve_color": (str, "color"),
    "color": (str, "color"),
    "seed": (int, (0, 2**31 - 1)),
}


def _is_hex_color(s: str) -> bool:
    return len(s) == 7 and s[0] == "#" and all(c in "0123456789abcdefABCDEF" for c in s[1:])


def _parse_cell(raw: str, kind: type, rule: Any, where: str) -> Any:
    raw = raw.strip()
    if kind is bool:
        if raw.lower() in ("1", "true", "yes"):
            return True
        if raw.lower() in ("0", "false", "no"):
            return False
        raise TemplateSpecError(f"{where}: expected 0/1, got {raw!r}")
    if kind is int:
        try:
            value: Any = int(raw)
        except ValueError:
            raise TemplateSpecError(f"{where}: expected an integer, got {raw!r}") from None
    elif kind is float:
        try:
            value = float(raw)
        except ValueError:
            raise TemplateSpecError(f"{where}: expected a number, got {raw!r}") from None
        if not math.isfinite(value):
            raise TemplateSpecError(f"{where}: expected a finite number, got {raw!r}")
    else:
        value = raw
        if not value:
            raise TemplateSpecError(f"{where}: empty value")
    if rule == "color" and not _is_hex_color(value):
        raise TemplateSpecError(f"{where}: expected a colour #rrggbb, got {raw!r}")
    if rule == "color_or_match" and value != "match" and not _is_hex_color(value):
        raise TemplateSpecError(f"{where}: expected a colour #rrggbb or 'match', got {raw!r}")
    if isinstance(rule, tuple) and isinstance(rule[0], str) and value not in rule:
        raise TemplateSpecError(f"{where}: expected one of {', '.join(rule)}, got {raw!r}")
    if isinstance(rule, tuple) and not isinstance(rule[0], str) and not rule[0] <= value <= rule[1]:
        raise TemplateSpecError(f"{where}: {value} is outside [{rule[0]:g}, {rule[1]:g}]")
    return value


def _check_consistency(spec: TemplateSpec, where: str) -> None:
    """Cross-column rules; ``where`` is ``file, row N``."""
    t = spec.mask_type

    def bad(column: str, msg: str) -> TemplateSpecError:
        return TemplateSpecError(f"{where}, column {column}: {msg}")

    if not spec.template_id.startswith(f"{t}-"):
        raise bad("template_id", f"id {spec.template_id!r} should start with '{t}-'")
    if spec.style not in STYLES[t]:
        raise bad("style", f"{t} style must be one of {', '.join(STYLES[t])}, got {spec.style!r}")
    want_anchors = "face_neck" if t == "scarf" else "face"
    if spec.anchors != want_anchors:
        raise bad("anchors", f"{t} uses anchor set {want_anchors!r}, got {spec.anchors!r}")
    if spec.straps != _STRAPS[t]:
        raise bad("straps", f"{t} has straps {_STRAPS[t]!r}, got {spec.straps!r}")
    if spec.top_side_y < spec.top_y:
        raise bad("top_side_y", f"{spec.top_side_y} is above top_y {spec.top_y}")
    if t != "scarf":
        if not 44.0 <= spec.half_width <= 64.0:
            raise bad("half_width", f"{t} half width must be in [44, 64], got {spec.half_width}")
        if not 4.0 <= spec.chin_inset <= 16.0:
            raise bad("chin_inset", f"{t} chin inset must be in [4, 16], got {spec.chin_inset}")
    has_pleats = t == "surgical" or (t == "cloth" and spec.style == "pleated")
    if has_pleats and not 2 <= spec.pleats <= 4:
        raise bad("pleats", f"{t} {spec.style} needs 2-4 pleats, got {spec.pleats}")
    if not has_pleats and spec.pleats != 0:
        raise bad("pleats", f"{t} {spec.style} has no pleats, got {spec.pleats}")
    if t != "n95" and spec.valve != "none":
        raise bad("valve", f"only n95 masks have a valve, got {spec.valve!r}")
    if spec.valve != "none" and spec.valve_size < 6.0:
        raise bad("valve_size", f"a valve needs valve_size >= 6, got {spec.valve_size}")
    if spec.straps != "none" and spec.strap_width <= 0:
        raise bad("strap_width", f"straps need a positive width, got {spec.strap_width}")


def load_templates(path: str | os.PathLike | None = None) -> list[TemplateSpec]:
    """Read and validate a template table.

    Args:
        path: a ``templates.csv``; default: the one shipped in ``mask_templates/``.

    Returns:
        The templates in file order.

    Raises:
        FileNotFoundError: the file does not exist.
        TemplateSpecError: a missing or unknown column, an unparsable or out-of-range value, an
            inconsistent row or a duplicate id; the message names file, row (1 = first data row) and column.
    """
    from .io import read_spec_table

    src = _data_file("templates.csv") if path is None else path
    specs: list[TemplateSpec] = []
    for where, rec in read_spec_table(src, list(_COLUMNS), "template_id", TemplateSpecError, "template table"):
        values = {
            col: _parse_cell(rec[col], kind, rule, f"{where}, column {col}") for col, (kind, rule) in _COLUMNS.items()
        }
        spec = TemplateSpec(**values)
        _check_consistency(spec, where)
        specs.append(spec)
    return specs


# ------------------------------------------------------------------------------------ frame helpers


@dataclass(frozen=True)
class _Frame:
    """Per-size constants: pixel-centre coordinates in canonical units and the face-hull clip."""

    size: int
    scale: float  # output pixels per canonical pixel
    cx: np.ndarray  # (S,) canonical x of each column
    cy: np.ndarray  # (S,) canonical y of each row
    hull_clip: np.ndarray  # (S, S) float32 alpha of the face hull shrunk by HULL_CLIP
    grain: np.ndarray  # (S, S) float32 fabric grain, mean 0


@lru_cache(maxsize=8)
def _frame(size: int) -> _Frame:
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
    return _Frame(size, scale, c, c, hull_clip, g)


@lru_cache(maxsize=64)
def _jaw_table(inset: float) -> tuple[np.ndarray, np.ndarray]:
    """The jaw line moved ``inset`` canonical px inwards: ``(xs, ys)`` sampled every 0.25 px.

    It is the erosion of the face region ``{y <= jaw(x)}`` by a disk, so every point of the result is at
    least ``inset`` from the jaw. Columns outside the jaw's x-range get -1e4 (no face there).
    """
    lm = _canonical_256().astype(np.float64)
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


def _jaw_point(t: float, right: bool) -> np.ndarray:
    """Point on the jaw polyline at fractional landmark index ``t`` (mirrored to 16 - t on the right)."""
    lm = _canonical_256().astype(np.float64)
    if right:
        t = 16.0 - t
    i = int(min(max(math.floor(t), 0), 15))
    f = t - i
    return lm[i] * (1 - f) + lm[i + 1] * f


def _hex_rgb(color: str) -> np.ndarray:
    return np.array([int(color[i : i + 2], 16) for i in (1, 3, 5)], np.float32) / 255.0


# ------------------------------------------------------------------------------------------ geometry


@dataclass
class _Body:
    """The mask body on one frame: per-column edges and per-pixel parametrisation (canonical units)."""

    top: np.ndarray  # (S,) y of the top edge per column
    bot: np.ndarray  # (S,) y of the bottom edge per column
    dist: np.ndarray  # (S, S) distance to the body outline in OUTPUT px, > 0 inside
    d_top: np.ndarray  # (S, S) distance below the top edge, output px
    u: np.ndarray  # (S,) (x - 128) / half_width
    v: np.ndarray  # (S, S) (y - top) / (bot - top), 0 at top, 1 at bottom


def _edges(spec: TemplateSpec, cx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top and bottom edge y per column (canonical), and u = (x - 128) / half_width."""
    u = (cx - _CENTER_X) / spec.half_width
    au = np.minimum(np.abs(u), 1.0)
    if spec.mask_type == "scarf":
        rng = np.random.default_rng(spec.seed)
        ph, amp = rng.uniform(0, 2 * np.pi), rng.uniform(0.5, 1.6)
        top = spec.top_y + (spec.top_side_y - spec.top_y) * au**spec.top_power + amp * np.sin(7.0 * u + ph) * au
        bot = np.full_like(cx, CANONICAL_SIZE + 20.0)
        return top.astype(np.float32), bot.astype(np.float32), u.astype(np.float32)
    xs, jaw = _jaw_table(round(spec.chin_inset, 2))
    jd = np.interp(cx, xs, jaw)
    bc = float(np.interp(_CENTER_X, xs, jaw))
    if spec.mask_type == "n95":
        e = spec.top_power
        prof = np.clip(1.0 - au**e, 0.0, 1.0) ** (1.0 / e)
        yc = spec.top_side_y
        top = yc - (yc - spec.top_y) * prof
        bot = np.minimum(jd, yc + (bc - yc) * prof)
    else:
        top = spec.top_y + (spec.top_side_y - spec.top_y) * au**spec.top_power
        bot = np.minimum(jd, bc + (spec.bottom_side_y - bc) * au**spec.bottom_power)
    return top.astype(np.float32), bot.astype(np.float32), u.astype(np.float32)


def _body(spec: TemplateSpec, fr: _Frame) -> _Body:
    top, bot, u = _edges(spec, fr.cx)
    s = fr.scale
    cx, cy = fr.cx, fr.cy
    top_n = 1.0 / np.sqrt(1.0 + np.gradient(top, cx) ** 2)
    bot_n = 1.0 / np.sqrt(1.0 + np.gradient(bot, cx) ** 2)
    y = cy[:, None]
    d_top = ((y - top[None, :]) * (top_n[None, :] * s)).astype(np.float32)
    d_bot = (bot[None, :] - y) * (bot_n[None, :] * s)
    ax = np.abs(cx - _CENTER_X)[None, :]
    if spec.mask_type == "scarf":
        y0 = spec.top_side_y
        slope = (spec.neck_width - spec.half_width) / (CANONICAL_SIZE - y0)
        half = spec.half_width + slope * np.clip(y - y0, 0.0, None)
        d_side = (half - ax) * (s / math.sqrt(1.0 + slope * slope))
    else:
        d_side = (spec.half_width - ax) * s
    dist = np.minimum(np.minimum(d_top, d_bot), d_side).astype(np.float32)
    height = np.maximum(bot - top, 1e-3)
    v = ((y - top[None, :]) / height[None, :]).astype(np.float32)
    return _Body(top, bot, dist, d_top, u, v)


# ------------------------------------------------------------------------------------------- strokes


def _bezier(p0: np.ndarray, p1: np.ndarray, p2: np.ndarray, n: int = 14) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n)[:, None]
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2


def _stroke_distance(pts: np.ndarray, width: float, size: int) -> tuple[tuple[slice, slice], np.ndarray] | None:
    """Distance (output px) from each pixel of the stroke's bounding box to the polyline ``pts`` (px)."""
    pad = width / 2 + 2
    x0 = max(int(math.floor(pts[:, 0].min() - pad)), 0)
    x1 = min(int(math.ceil(pts[:, 0].max() + pad)) + 1, size)
    y0 = max(int(math.floor(pts[:, 1].min() - pad)), 0)
    y1 = min(int(math.ceil(pts[:, 1].max() + pad)) + 1, size)
    if x1 <= x0 or y1 <= y0:
        return None
    px = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5
    py = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5
    d2 = np.full((y1 - y0, x1 - x0), np.inf, np.float32)
    for a, b in zip(pts[:-1], pts[1:]):
        e = b - a
        ll = float(e @ e) or 1e-6
        t = np.clip(((px - a[0]) * e[0] + (py - a[1]) * e[1]) / ll, 0.0, 1.0)
        dx = px - (a[0] + t * e[0])
        dy = py - (a[1] + t * e[1])
        np.minimum(d2, dx * dx + dy * dy, out=d2)
    return (slice(y0, y1), slice(x0, x1)), np.sqrt(d2)


def _draw_stroke(
    layer_a: np.ndarray, layer_rgb: np.ndarray, pts: np.ndarray, width: float, rgb: np.ndarray, flat: bool
) -> None:
    """Paint a cord (round shading) or flat band (darker rims) of ``width`` px along ``pts`` (px)."""
    size = layer_a.shape[0]
    res = _stroke_distance(pts, width, size)
    if res is None:
        return
    sl, d = res
    r = max(width / 2, 0.35)
    a = np.clip(r + 0.5 - d, 0.0, 1.0)
    q = np.clip(d / r, 0.0, 1.0)
    shade = 1.0 - 0.35 * q**4 if flat else 0.62 + 0.38 * np.sqrt(1.0 - q * q)
    over = a > layer_a[sl]
    layer_a[sl] = np.where(over, a, layer_a[sl])
    layer_rgb[sl] = np.where(over[..., None], shade[..., None] * rgb, layer_rgb[sl])


def _strap_paths(spec: TemplateSpec, fr: _Frame) -> list[np.ndarray]:
    """Polylines (output px) of the loops/straps on both sides: attach on the body side, end beyond the
    face outline near the jaw landmark ``strap_top``/``strap_bottom`` (the hull clip cuts them there)."""
    s = fr.scale
    paths = []
    hw = spec.half_width
    for right in (False, True):
        sign = 1.0 if right else -1.0
        if spec.mask_type == "n95":
            # straps are stapled on the cup's rim, above and below its widest point
            ua, ub = 0.9, 0.84
            xa, xb = _CENTER_X + sign * ua * hw, _CENTER_X + sign * ub * hw
            ta, _ = _edges_at(spec, xa)
            _, bb = _edges_at(spec, xb)
            attach = [np.array([xa, ta + 3.0]), np.array([xb, bb - 4.0])]
        else:
            xe = _CENTER_X + sign * (hw - 1.5)
            ta, bb = _edges_at(spec, xe)
            h = max(bb - ta, 2.0)
            attach = [np.array([xe, ta + min(2.5, 0.25 * h)]), np.array([xe, bb - min(2.5, 0.25 * h)])]
        for p0, t in zip(attach, (spec.strap_top, spec.strap_bottom)):
            jp = _jaw_point(t, right)
            out = jp + sign * np.array([6.0, 0.0])  # past the outline; the hull clip ends it
            mid = 0.5 * (p0 + out) + np.array([0.0, 2.0 if spec.straps == "ear_loops" else 0.5])
            paths.append(_bezier(p0, mid, out) * s)
    return paths


def _edges_at(spec: TemplateSpec, x: float) -> tuple[float, float]:
    top, bot, _ = _edges(spec, np.array([x], np.float32))
    return float(top[0]), float(bot[0])


# --------------------------------------------------------------------------------------- structure


@dataclass
class _Shading:
    """A mask's own structure: ``rgb = albedo * shade + add``; ``disp`` moves the texture (canonical px)."""

    shade: np.ndarray  # (S, S) float32 multiplier, ~[0.5, 1.2]
    add: np.ndarray  # (S, S) float32 highlight
    disp: np.ndarray | None = None  # (S, S) float32 vertical texture displacement
    two_panels: bool = False  # left and right halves are separate pieces: the texture is mirrored


def _gauss(x: np.ndarray, sigma: float) -> np.ndarray:
    return np.exp(-0.5 * (x / sigma) ** 2)


def _shade_surgical(spec: TemplateSpec, b: _Body, fr: _Frame) -> _Shading:
    """Pleats (light band, fold edge, cast shadow), bound edges, heat-sealed sides, nose wire."""
    s = fr.scale
    size = fr.size
    v = b.v
    height_px = (b.bot - b.top)[None, :] * s
    shade = np.ones((size, size), np.float32)
    add = np.zeros((size, size), np.float32)
    disp = np.zeros((size, size), np.float32)
    n = spec.pleats
    # pleats sit in the middle 64 % of the height; each fold edge casts a shadow downwards and hides a
    # strip of fabric (the texture jumps there)
    lo, hi = 0.24, 0.86
    hidden = 4.0 * np.clip(height_px / (60.0 * s), 0.3, 1.0)
    for k in range(n):
        vk = lo + (hi - lo) * (k + 0.65) / n
        t = (v - vk) * height_px  # px below the fold edge
        band = np.clip(1.0 + t / (0.55 * (hi - lo) / n * height_px + 1e-3), 0.0, 1.0) * (t < 0)
        shade += 0.07 * band - 0.05 * band**3
        shade -= 0.30 * np.exp(-np.clip(t, 0, None) / (1.1 * s + 0.3)) * (t >= 0) * (t < 6 * s)
        add += 0.05 * _gauss(t + 0.9 * s, 0.7 * s + 0.2)
        disp += hidden * np.clip(t + 0.5, 0.0, 1.0)
    # bound top and bottom edges: a flat strip with a seam line inside it
    dt = b.d_top
    db = (b.bot[None, :] - fr.cy[:, None]) * s
    for d, w in ((dt, 3.6 * s), (db, 3.0 * s)):
        shade -= 0.12 * _gauss(d - w, 0.55 * s + 0.15)
        shade += 0.03 * (d < w)
    # heat-sealed side bands with vertical embossing
    ds = (spec.half_width - np.abs(fr.cx - _CENTER_X))[None, :] * s
    side = (ds < 5.0 * s).astype(np.float32)
    emb = 0.5 + 0.5 * np.cos(fr.cy[:, None] * s * 2 * np.pi / (1.6 * s + 0.6))
    shade -= side * (0.04 + 0.05 * emb) + 0.14 * _gauss(ds - 5.0 * s, 0.5 * s + 0.15)
    # gentle curvature: the mask bends round the cheeks and under the chin
    shade *= (1.0 - 0.12 * b.u[None, :] ** 4) * (1.0 - 0.10 * np.clip(v - 0.8, 0, 1) / 0.2)
    if spec.nose_wire:
        _nose_wire(shade, add, b, fr, 0.42 * spec.half_width, 2.0, 0.6)
    return _Shading(shade, add, disp)


def _nose_wire(
    shade: np.ndarray, add: np.ndarray, b: _Body, fr: _Frame, half_len: float, depth: float, width: float
) -> None:
    """A wire channel just under the top edge: a raised ridge with a highlight and a shadow line."""
    s = fr.scale
    along = np.clip(1.0 - np.abs(fr.cx - _CENTER_X) / half_len, 0.0, 1.0)[None, :]
    on = np.minimum(along * 6.0, 1.0)
    t = b.d_top - depth * s
    add += on * 0.10 * _gauss(t + 0.4 * s, width * s + 0.15)
    shade -= on * 0.16 * _gauss(t - (width + 0.9) * s, 0.5 * s + 0.15)


def _stitches(d: np.ndarray, along: np.ndarray, at: float, period: float, fr: _Frame, strength: float) -> np.ndarray:
    """Dashed stitch / dotted weld line at distance ``at`` (px) from an edge; ``along`` in px."""
    s = fr.scale
    line = _gauss(d - at, 0.55 * s + 0.12)
    dots = np.clip(np.cos(along * (2 * np.pi / (period * s))) * 2.0 + 0.4, 0.0, 1.0)
    return strength * line * dots


def _edge_along(b: _Body, fr: _Frame) -> np.ndarray:
    """Approximate arc-length coordinate (px) along the outline, for dashes and dots."""
    s = fr.scale
    topl = np.concatenate([[0.0], np.cumsum(np.hypot(1.0, np.diff(b.top)))]) * s
    botl = np.concatenate([[0.0], np.cumsum(np.hypot(1.0, np.diff(b.bot)))]) * s
    vmid = b.v < 0.5
    return np.where(vmid, topl[None, :], botl[None, :]) + np.where(
        np.abs(b.u)[None, :] > 0.97, fr.cy[:, None] * s, 0.0
    )


def _shade_cloth(spec: TemplateSpec, b: _Body, fr: _Frame) -> _Shading:
    s = fr.scale
    if spec.style == "pleated":
        return _shade_surgical(spec, b, fr)
    u = b.u[None, :]
    v = b.v
    # a contoured mask is two curved panels: rounder in the middle, turning away at the sides
    shade = (0.84 + 0.16 * np.sqrt(np.clip(1.0 - u * u, 0, 1))) * (1.0 - 0.16 * np.clip(v - 0.7, 0, 1) / 0.3)
    shade = shade.astype(np.float32)
    add = np.zeros_like(shade)
    dx = (fr.cx - _CENTER_X)[None, :] * s
    # centre seam: a groove with the seam allowance ridge on one side
    shade -= 0.32 * _gauss(dx, 0.7 * s + 0.2)
    add += 0.06 * _gauss(dx - 1.8 * s, 1.0 * s + 0.2) + 0.04 * _gauss(dx + 1.8 * s, 1.0 * s + 0.2)
    # top-stitched hem all round
    stitches = _stitches(b.dist, _edge_along(b, fr), 2.6 * s, 3.2, fr, 0.22)
    shade -= stitches
    add += 0.25 * stitches
    shade -= 0.10 * _gauss(b.dist - 4.2 * s, 0.6 * s + 0.15)
    if spec.nose_wire:
        _nose_wire(shade, add, b, fr, 0.32 * spec.half_width, 1.6, 0.8)
    return _Shading(shade, add, two_panels=True)


def _shade_n95(spec: TemplateSpec, b: _Body, fr: _Frame) -> _Shading:
    s = fr.scale
    u = b.u[None, :]
    w = (b.v - 0.42) / 0.58
    r2 = np.clip(u * u + w * w, 0.0, 1.0)
    dome = np.sqrt(1.0 - r2)
    shade = (0.70 + 0.32 * dome).astype(np.float32)
    add = (0.07 * _gauss(np.sqrt(u * u * 1.6 + (b.v - 0.3) ** 2 * 4.0), 0.35)).astype(np.float32)
    # moulded rim: a flat welded flange outside a groove
    d = b.dist
    shade -= 0.16 * _gauss(d - 3.4 * s, 0.6 * s + 0.15)
    add += 0.05 * _gauss(d - 1.6 * s, 0.8 * s + 0.15)
    shade -= 0.04 * (d < 3.0 * s)
    if spec.nose_wire:  # aluminium nose clip under the cover web
        half_len = 0.30 * spec.half_width
        along = np.clip(1.0 - np.abs(fr.cx - _CENTER_X) / half_len, 0.0, 1.0)[None, :]
        on = np.minimum(along * 8.0, 1.0)
        band = on * np.clip(1.6 * s + 0.5 - np.abs(b.d_top - 6.0 * s), 0.0, 1.0)
        shade -= 0.10 * band
        add += 0.06 * band * _gauss(b.d_top - 5.4 * s, 0.5 * s + 0.1)
    return _Shading(shade, add)


def _shade_kn95(spec: TemplateSpec, b: _Body, fr: _Frame) -> _Shading:
    s = fr.scale
    rng = np.random.default_rng(spec.seed)
    lit_left = rng.random() < 0.5
    u = b.u[None, :]
    au = np.abs(u)
    # each panel is a shallow cylinder; the light side panel is brighter
    panel = 0.86 + 0.14 * np.sqrt(np.clip(1.0 - ((au - 0.45) / 0.6) ** 2, 0, 1))
    side = np.where((u < 0) == lit_left, 1.0, 0.90)
    shade = np.broadcast_to(panel * side, (fr.size, fr.size)).astype(np.float32)
    add = np.zeros_like(shade)
    dx = (fr.cx - _CENTER_X)[None, :] * s
    shade -= 0.25 * _gauss(dx, 0.6 * s + 0.2)
    add += 0.07 * _gauss(dx + (1.2 if lit_left else -1.2) * s, 0.7 * s + 0.2)
    along_v = fr.cy[:, None] * s
    welds = _stitches(b.dist, _edge_along(b, fr), 2.6 * s, 2.6, fr, 0.28)
    for off in (-2.6, 2.6):  # welded seam on both sides of the fold
        welds += _stitches(np.abs(dx - off * s), along_v, 0.0, 2.6, fr, 0.22)
    shade -= welds
    add += 0.3 * welds  # embossed dots catch light: visible on dark masks too
    add += 0.03 * (side == 1.0) * panel  # sheen on the lit panel
    shade -= 0.05 * (b.dist < 4.0 * s)
    # welded ear-loop pads at the four corners
    ds = (spec.half_width - np.abs(fr.cx - _CENTER_X))[None, :] * s
    pad = (ds < 4.5 * s) & ((b.d_top < 7 * s) | ((b.bot[None, :] - fr.cy[:, None]) * s < 7 * s))
    shade -= 0.10 * pad
    if spec.nose_wire:
        _nose_wire(shade, add, b, fr, 0.30 * spec.half_width, 3.0, 0.7)
    return _Shading(shade, add, two_panels=True)


def _shade_scarf(spec: TemplateSpec, b: _Body, fr: _Frame) -> _Shading:
    """Tube: horizontal gathers; bandana: folds radiating from the hanging point; both with folds off the
    nose, a hem, and shade under the chin. The texture is displaced along the folds."""
    s = fr.scale
    rng = np.random.default_rng(spec.seed)
    cx = fr.cx[None, :]
    cy = fr.cy[:, None]
    u = b.u[None, :]
    below = np.clip((cy - b.top[None, :]) / 90.0, 0.0, 1.5)
    if spec.style == "tube":
        # horizontal gathers that deepen under the chin; cylindrical fall-off to the sides
        phase = cy.copy()
        for _ in range(3):
            f, a, p = rng.uniform(0.9, 2.2), rng.uniform(2.0, 5.0), rng.uniform(0, 2 * np.pi)
            phase = phase + a * np.sin(f * u * np.pi + p)
        f1, f2 = rng.uniform(0.08, 0.12), rng.uniform(0.16, 0.22)
        p1, p2 = rng.uniform(0, 2 * np.pi, 2)
        f3, p3 = rng.uniform(0.3, 0.42), rng.uniform(0, 2 * np.pi)
        folds = 0.55 * np.sin(f1 * phase + p1) + 0.3 * np.sin(f2 * phase + p2)
        folds = folds + 0.15 * np.sin(f3 * phase + p3 + 2.0 * u) * np.clip(below * 1.5, 0, 1)
        # sharper ridges than a sine: cloth gathers in creases
        folds = np.sign(folds) * np.abs(folds) ** 0.8
        amp = 0.06 + 0.16 * np.clip(below, 0, 1)
        shade = 1.0 + amp * folds
        shade *= 0.6 + 0.4 * np.sqrt(np.clip(1.0 - (0.93 * u) ** 2, 0, 1))
        disp = 3.0 * folds * np.clip(below, 0.1, 1)
        shade += _tension_folds(rng, cx, cy)
        # rolled top hem
        d = b.d_top
        shade = shade - 0.20 * _gauss(d - 4.5 * s, 1.0 * s + 0.2)
        add = 0.07 * _gauss(d - 2.0 * s, 1.2 * s + 0.2)
    else:
        # bandana: folds radiate from the hanging point, the top is a folded edge
        tip_y = CANONICAL_SIZE + 40.0
        theta = np.arctan2(cx - _CENTER_X, tip_y - cy)
        k1, k2 = rng.uniform(9.0, 13.0), rng.uniform(17.0, 23.0)
        p1, p2 = rng.uniform(0, 2 * np.pi, 2)
        folds = 0.7 * np.sin(k1 * theta + p1 + 0.02 * cy) + 0.3 * np.sin(k2 * theta + p2)
        folds = np.sign(folds) * np.abs(folds) ** 0.7
        amp = 0.05 + 0.14 * np.clip(below, 0, 1)
        shade = 1.0 + amp * folds
        shade *= 0.66 + 0.34 * np.sqrt(np.clip(1.0 - (0.9 * u) ** 2, 0, 1))
        shade += _tension_folds(rng, cx, cy)
        disp = 2.0 * folds * np.clip(below, 0.1, 1)
        d = b.d_top
        shade = shade + 0.05 * (d < 5.0 * s) - 0.18 * _gauss(d - 5.2 * s, 0.9 * s + 0.2)
        add = 0.05 * _gauss(d - 1.5 * s, 1.0 * s + 0.2)
        # hemmed diagonal edges
        shade -= 0.10 * _gauss(b.dist - 2.2 * s, 0.5 * s + 0.15) * (d > 6 * s)
    # soft shadow under the nose where the fabric stands off the face, and under the chin over the neck
    shade *= 1.0 - 0.10 * _gauss(cx - _CENTER_X, 22.0) * _gauss(cy - 175.0, 10.0)
    xs, jaw = _jaw_table(0.0)
    jy = np.interp(fr.cx, xs, jaw)[None, :]
    under = np.clip((cy - jy - 2.0) / 6.0, 0.0, 1.0) * np.clip(1.0 - (cy - jy - 8.0) / 30.0, 0.35, 1.0)
    shade *= 1.0 - 0.22 * np.where(jy > 0, under, 0.0)
    return _Shading(shade.astype(np.float32), add.astype(np.float32), disp.astype(np.float32))


def _tension_folds(rng: np.random.Generator, cx: np.ndarray, cy: np.ndarray) -> np.ndarray:
    """Diagonal folds where fabric pulled over the nose falls to the cheeks (canonical coordinates)."""
    out = np.zeros(np.broadcast_shapes(cx.shape, cy.shape), np.float32)
    for side in (-1.0, 1.0):
        for _ in range(int(rng.integers(1, 3))):
            x0 = _CENTER_X + side * rng.uniform(6.0, 14.0)
            y0 = rng.uniform(150.0, 162.0)
            ang = math.radians(rng.uniform(30.0, 60.0))
            dx, dy = side * math.cos(ang), math.sin(ang)
            along = (cx - x0) * dx + (cy - y0) * dy
            across = -(cx - x0) * dy + (cy - y0) * dx
            length = rng.uniform(25.0, 45.0)
            fade = np.clip(along / 6.0, 0, 1) * np.clip(1.0 - along / length, 0, 1)
            ridge = 0.06 * _gauss(across, 2.2) - 0.08 * _gauss(across - side * 3.2, 1.6)
            out += (fade * ridge).astype(np.float32)
    return out


def _valve(spec: TemplateSpec, fr: _Frame, rgb: np.ndarray, alpha: np.ndarray) -> None:
    """Paint an exhalation valve (round or square, slotted cover) onto the body in place."""
    s = fr.scale
    cx0, cy0, r = _CENTER_X + spec.valve_x, spec.valve_y, spec.valve_size
    x = fr.cx[None, :] - cx0
    y = fr.cy[:, None] - cy0
    if spec.valve == "round":
        rr = np.sqrt(x * x + y * y)
        edge = (r - rr) * s
        rn = np.clip(rr / r, 0, 1)
    else:
        k = 4.0
        rr = (np.abs(x) ** k + np.abs(y) ** k) ** (1.0 / k)
        edge = (r - rr) * s
        rn = np.clip(rr / r, 0, 1)
    a = np.clip(edge + 0.5, 0.0, 1.0)
    if not a.any():
        return
    col = _hex_rgb(spec.valve_color)
    shade = 0.78 + 0.30 * np.sqrt(1.0 - rn**2) - 0.08 * (y / r)
    shade -= 0.25 * _gauss(rn - 0.66, 0.05)  # inner cover ring
    inner = rn < 0.62
    slots = np.cos(y * (2 * np.pi / max(r / 3.2, 1.5))) > 0.45
    shade = np.where(inner & slots & (np.abs(x) < 0.5 * r), shade - 0.28, shade)
    shade -= 0.25 * _gauss(edge, 0.6 * s + 0.2)
    vr = np.clip(col[None, None, :] * shade[..., None], 0, 1)
    # a dark contact shadow just outside the valve
    sh = 0.35 * np.clip(1.0 - np.abs(edge + 1.2 * s) / (1.3 * s + 0.3), 0, 1) * (edge < 0)
    rgb *= (1.0 - sh)[..., None]
    rgb[:] = rgb * (1 - a[..., None]) + vr * a[..., None]
    np.maximum(alpha, a * (alpha > 0), out=alpha)


# ------------------------------------------------------------------------------------------ render


_SHADERS = {
    "surgical": _shade_surgical, "cloth": _shade_cloth, "n95": _shade_n95, "kn95": _shade_kn95, "scarf": _shade_scarf,
}  # fmt: skip


def _prepare_texture(texture: np.ndarray, size: int) -> np.ndarray:
    """Centre square crop of ``texture`` resized to ``size``, float32 [0, 1]."""
    if not (isinstance(texture, np.ndarray) and texture.ndim == 3 and texture.shape[2] == 3):
        raise ValueError(f"texture must be (H, W, 3) uint8, got {getattr(texture, 'shape', type(texture))}")
    if texture.dtype != np.uint8:
        raise ValueError(f"texture must be uint8, got {texture.dtype}")
    h, w = texture.shape[:2]
    m = min(h, w)
    crop = texture[(h - m) // 2 : (h - m) // 2 + m, (w - m) // 2 : (w - m) // 2 + m]
    if m != size:
        interp = cv2.INTER_AREA if m > size else cv2.INTER_LINEAR
        crop = cv2.resize(crop, (size, size), interpolation=interp)
    return crop.astype(np.float32) * np.float32(1 / 255)


def _albedo(
    spec: TemplateSpec, texture: np.ndarray | None, b: _Body, fr: _Frame, sh: _Shading
) -> tuple[np.ndarray, np.ndarray]:
    """The fabric colour per pixel, ``(S, S, 3) float32``, and its mean colour ``(3,)``.

    Without a texture: the template's colour with a fine non-woven grain. With one: the texture laid on
    the mask, bent along the top edge, displaced along pleats and folds, mirrored on two-panel masks.
    """
    size, s = fr.size, fr.scale
    if texture is None:
        base = _hex_rgb(spec.color)
        return (1.0 + 0.025 * fr.grain)[..., None] * base[None, None, :], base
    tex = _prepare_texture(texture, size)
    top_c = float(np.interp(_CENTER_X, fr.cx, b.top))
    bend = 0.55 * (b.top - top_c) * s  # px per column
    cols = np.arange(size, dtype=np.float32)
    if sh.two_panels:  # both halves cut from the same folded fabric
        cols = np.where(cols >= size / 2, size - 1 - cols, cols) + np.float32(size / 7)
    map_x = np.broadcast_to(cols[None, :], (size, size))
    map_y = np.arange(size, dtype=np.float32)[:, None] - bend[None, :]
    map_y = map_y + sh.disp * s if sh.disp is not None else np.broadcast_to(map_y, (size, size))
    albedo = cv2.remap(tex, np.ascontiguousarray(map_x), np.ascontiguousarray(map_y, dtype=np.float32),
                       cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    return albedo, tex.reshape(-1, 3).mean(0)


def _add_straps(
    spec: TemplateSpec, fr: _Frame, rgb: np.ndarray, alpha: np.ndarray, mean_rgb: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Loops/straps drawn under the body; returns the combined (rgb, alpha)."""
    size = fr.size
    la = np.zeros((size, size), np.float32)
    lrgb = np.zeros((size, size, 3), np.float32)
    if spec.strap_color == "match":
        colour = np.clip(mean_rgb * 0.92, 0, 1).astype(np.float32)
    else:
        colour = _hex_rgb(spec.strap_color)
    flat = spec.straps == "head_straps"
    for path in _strap_paths(spec, fr):
        _draw_stroke(la, lrgb, path.astype(np.float32), spec.strap_width * fr.scale, colour, flat)
    la *= 1.0 - alpha  # loops pass under the body
    total = alpha + la
    rgb = (rgb * alpha[..., None] + lrgb * la[..., None]) / np.maximum(total, 1e-6)[..., None]
    return rgb, total


def render_template(
    spec: TemplateSpec, texture: np.ndarray | None = None, size: int = CANONICAL_SIZE
) -> tuple[np.ndarray, np.ndarray]:
    """Draw a mask template in the canonical frame.

    Args:
        spec: the template.
        texture: ``(H, W, 3) uint8`` RGB fabric image of any size (centre-cropped square, resized to the
            frame, laid on following the mask's curvature), or None for the template's default colour.
        size: side of the square output frame in pixels (geometry is scaled by ``size / 256``).

    Returns:
        ``(rgb, alpha)``: ``rgb (size, size, 3) float32`` in [0, 1], the mask's albedo times its own
        structure shading (pleats, seams, folds, nose wire, valve, dome, loops/straps), meaningful where
        alpha > 0 (0 elsewhere); ``alpha (size, size) float32`` in [0, 1]: > 0 exactly on covered pixels,
        1 inside, anti-aliased over about one pixel at the edges. Same inputs give identical bytes.

    Raises:
        ValueError: ``size`` < 16 or ``texture`` is not an ``(H, W, 3) uint8`` array.
    """
    if not isinstance(size, (int, np.integer)) or size < 16:
        raise ValueError(f"size must be an integer >= 16, got {size!r}")
    size = int(size)
    fr = _frame(size)
    b = _body(spec, fr)
    alpha = np.clip(b.dist + 0.5, 0.0, 1.0)

    sh = _SHADERS[spec.mask_type](spec, b, fr)
    albedo, mean_rgb = _albedo(spec, texture, b, fr, sh)
    rgb = np.clip(albedo * sh.shade[..., None] + sh.add[..., None], 0.0, 1.0).astype(np.float32)
    if spec.valve != "none":
        _valve(spec, fr, rgb, alpha)
    if spec.straps != "none":
        rgb, alpha = _add_straps(spec, fr, rgb, alpha, mean_rgb)

    if spec.mask_type != "scarf":
        alpha = alpha * fr.hull_clip
    rgb = np.where(alpha[..., None] > 0, rgb, 0.0).astype(np.float32)
    return np.ascontiguousarray(rgb), np.clip(alpha, 0.0, 1.0).astype(np.float32)


# ----------------------------------------------------------------------------------- contact sheet


@lru_cache(maxsize=4)
def _face_backdrop(size: int) -> np.ndarray:
    """The canonical face outline (jaw, brows, nose, eyes, lips) in light grey on white, uint8 RGB."""
    img = np.full((size, size, 3), 250, np.uint8)
    lm = canonical_landmarks(size)
    groups = [(0, 17, False), (17, 22, False), (22, 27, False), (27, 31, False), (31, 36, False),
              (36, 42, True), (42, 48, True), (48, 60, True), (60, 68, True)]
    for a, b, closed in groups:
        pts = np.round(lm[a:b] * 16).astype(np.int32)
        cv2.polylines(img, [pts], closed, (200, 200, 200), 1, cv2.LINE_AA, shift=4)
    return img


def write_contact_sheet(
    path: str | os.PathLike,
    templates: Sequence[TemplateSpec],
    size: int = 128,
    columns: int = 10,
    textures: Sequence[np.ndarray | None] | None = None,
) -> np.ndarray:
    """Render templates side by side over the canonical face outline, labelled, as one PNG.

    Args:
        path: the PNG to write (atomically).
        templates: the templates, drawn row by row.
        size: side of each tile in pixels.
        columns: tiles per row.
        textures: optional texture per template (``(H, W, 3) uint8`` or None), same length as ``templates``.

    Returns:
        The sheet, ``(rows * (size + 14), columns * size, 3) uint8``.

    Raises:
        ValueError: no templates, ``columns`` < 1, or ``textures`` of another length.
    """
    from .io import write_png

    if not templates:
        raise ValueError("no templates to draw")
    if columns < 1:
        raise ValueError(f"columns must be >= 1, got {columns}")
    if textures is not None and len(textures) != len(templates):
        raise ValueError(f"{len(textures)} textures for {len(templates)} templates")
    columns = min(columns, len(templates))
    rows = -(-len(templates) // columns)
    label_h = 14
    sheet = np.full((rows * (size + label_h), columns * size, 3), 255, np.uint8)
    back = _face_backdrop(size).astype(np.float32) / 255.0
    for i, spec in enumerate(templates):
        rgb, alpha = render_template(spec, None if textures is None else textures[i], size)
        tile = back * (1 - alpha[..., None]) + rgb * alpha[..., None]
        r, c = divmod(i, columns)
        y0, x0 = r * (size + label_h), c * size
        sheet[y0 : y0 + size, x0 : x0 + size] = np.clip(tile * 255 + 0.5, 0, 255).astype(np.uint8)
        cv2.putText(sheet, spec.template_id, (x0 + 3, y0 + size + 10), cv2.FONT_HERSHEY_SIMPLEX,
                    0.33, (40, 40, 40), 1, cv2.LINE_AA)
    write_png(path, sheet)
    return sheet
