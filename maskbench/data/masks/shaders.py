"""The five structure shaders: each turns a mask body into ``rgb = albedo * shade + add`` terms.

A shader draws what a real mask of its type is made of: pleats with their cast shadows, bound edges and
heat-sealed sides (surgical), a centre seam and top-stitched hem (contoured cloth), a moulded dome and
rim (N95), two welded panels (KN95), gathers or radiating folds (scarves); nose wires where the template
has one. :data:`SHADERS` maps the names ``mask_types.yaml`` uses (``shader:``) to the functions; each takes
``(spec, body, frame)`` and returns a :class:`Shading` of ``(S, S) float32`` arrays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .body import Body, scarf_half_width
from .frame import CANONICAL_SIZE, CENTER_X, Frame, jaw_table
from .spec import TemplateSpec

__all__ = ["SHADERS", "Shading", "gauss"]


@dataclass
class Shading:
    """A mask's own structure: ``rgb = albedo * shade + add``; ``disp`` moves the texture (canonical px)."""

    shade: np.ndarray  # (S, S) float32 multiplier, ~[0.5, 1.2]
    add: np.ndarray  # (S, S) float32 highlight
    disp: np.ndarray | None = None  # (S, S) float32 vertical texture displacement
    two_panels: bool = False  # left and right halves are separate pieces: the texture is mirrored


def gauss(x: np.ndarray, sigma: float) -> np.ndarray:
    """Unnormalised Gaussian ``exp(-x^2 / 2 sigma^2)``, elementwise."""
    return np.exp(-0.5 * (x / sigma) ** 2)


def shade_surgical(spec: TemplateSpec, b: Body, fr: Frame) -> Shading:
    """Pleats (light band, fold edge, cast shadow), bound edges, heat-sealed sides, nose wire."""
    s = fr.scale
    shape = fr.shape
    v = b.v
    height_px = (b.bot - b.top)[None, :] * s
    shade = np.ones(shape, np.float32)
    add = np.zeros(shape, np.float32)
    disp = np.zeros(shape, np.float32)
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
        add += 0.05 * gauss(t + 0.9 * s, 0.7 * s + 0.2)
        disp += hidden * np.clip(t + 0.5, 0.0, 1.0)
    # bound top and bottom edges: a flat strip with a seam line inside it
    dt = b.d_top
    db = (b.bot[None, :] - fr.cy[:, None]) * s
    for d, w in ((dt, 3.6 * s), (db, 3.0 * s)):
        shade -= 0.12 * gauss(d - w, 0.55 * s + 0.15)
        shade += 0.03 * (d < w)
    # heat-sealed side bands with vertical embossing
    ds = (spec.half_width - np.abs(fr.cx - CENTER_X))[None, :] * s
    side = (ds < 5.0 * s).astype(np.float32)
    emb = 0.5 + 0.5 * np.cos(fr.cy[:, None] * s * 2 * np.pi / (1.6 * s + 0.6))
    shade -= side * (0.04 + 0.05 * emb) + 0.14 * gauss(ds - 5.0 * s, 0.5 * s + 0.15)
    # gentle curvature: the mask bends round the cheeks and under the chin
    shade *= (1.0 - 0.12 * b.u[None, :] ** 4) * (1.0 - 0.10 * np.clip(v - 0.8, 0, 1) / 0.2)
    if spec.nose_wire:
        _nose_wire(shade, add, b, fr, 0.42 * spec.half_width, 2.0, 0.6)
    return Shading(shade, add, disp)


def _nose_wire(
    shade: np.ndarray, add: np.ndarray, b: Body, fr: Frame, half_len: float, depth: float, width: float
) -> None:
    """A wire channel just under the top edge: a raised ridge with a highlight and a shadow line."""
    s = fr.scale
    along = np.clip(1.0 - np.abs(fr.cx - CENTER_X) / half_len, 0.0, 1.0)[None, :]
    on = np.minimum(along * 6.0, 1.0)
    t = b.d_top - depth * s
    add += on * 0.10 * gauss(t + 0.4 * s, width * s + 0.15)
    shade -= on * 0.16 * gauss(t - (width + 0.9) * s, 0.5 * s + 0.15)


def _stitches(d: np.ndarray, along: np.ndarray, at: float, period: float, fr: Frame, strength: float) -> np.ndarray:
    """Dashed stitch / dotted weld line at distance ``at`` (px) from an edge; ``along`` in px."""
    s = fr.scale
    line = gauss(d - at, 0.55 * s + 0.12)
    dots = np.clip(np.cos(along * (2 * np.pi / (period * s))) * 2.0 + 0.4, 0.0, 1.0)
    return strength * line * dots


def _edge_along(b: Body, fr: Frame) -> np.ndarray:
    """Approximate arc-length coordinate (px) along the outline, for dashes and dots."""
    s = fr.scale
    vmid = b.v < 0.5
    return np.where(vmid, b.top_arc[None, :], b.bot_arc[None, :]) + np.where(
        np.abs(b.u)[None, :] > 0.97, fr.cy[:, None] * s, 0.0
    )


def shade_cloth(spec: TemplateSpec, b: Body, fr: Frame) -> Shading:
    s = fr.scale
    if spec.style == "pleated":
        return shade_surgical(spec, b, fr)
    u = b.u[None, :]
    v = b.v
    # a contoured mask is two curved panels: rounder in the middle, turning away at the sides
    shade = (0.84 + 0.16 * np.sqrt(np.clip(1.0 - u * u, 0, 1))) * (1.0 - 0.16 * np.clip(v - 0.7, 0, 1) / 0.3)
    shade = shade.astype(np.float32)
    add = np.zeros_like(shade)
    dx = (fr.cx - CENTER_X)[None, :] * s
    # centre seam: a groove with the seam allowance ridge on one side
    shade -= 0.32 * gauss(dx, 0.7 * s + 0.2)
    add += 0.06 * gauss(dx - 1.8 * s, 1.0 * s + 0.2) + 0.04 * gauss(dx + 1.8 * s, 1.0 * s + 0.2)
    # top-stitched hem all round
    stitches = _stitches(b.dist, _edge_along(b, fr), 2.6 * s, 3.2, fr, 0.22)
    shade -= stitches
    add += 0.25 * stitches
    shade -= 0.10 * gauss(b.dist - 4.2 * s, 0.6 * s + 0.15)
    if spec.nose_wire:
        _nose_wire(shade, add, b, fr, 0.32 * spec.half_width, 1.6, 0.8)
    return Shading(shade, add, two_panels=True)


def shade_n95(spec: TemplateSpec, b: Body, fr: Frame) -> Shading:
    s = fr.scale
    u = b.u[None, :]
    w = (b.v - 0.42) / 0.58
    r2 = np.clip(u * u + w * w, 0.0, 1.0)
    dome = np.sqrt(1.0 - r2)
    shade = (0.70 + 0.32 * dome).astype(np.float32)
    add = (0.07 * gauss(np.sqrt(u * u * 1.6 + (b.v - 0.3) ** 2 * 4.0), 0.35)).astype(np.float32)
    # moulded rim: a flat welded flange outside a groove
    d = b.dist
    shade -= 0.16 * gauss(d - 3.4 * s, 0.6 * s + 0.15)
    add += 0.05 * gauss(d - 1.6 * s, 0.8 * s + 0.15)
    shade -= 0.04 * (d < 3.0 * s)
    if spec.nose_wire:  # aluminium nose clip under the cover web
        half_len = 0.30 * spec.half_width
        along = np.clip(1.0 - np.abs(fr.cx - CENTER_X) / half_len, 0.0, 1.0)[None, :]
        on = np.minimum(along * 8.0, 1.0)
        band = on * np.clip(1.6 * s + 0.5 - np.abs(b.d_top - 6.0 * s), 0.0, 1.0)
        shade -= 0.10 * band
        add += 0.06 * band * gauss(b.d_top - 5.4 * s, 0.5 * s + 0.1)
    return Shading(shade, add)


def shade_kn95(spec: TemplateSpec, b: Body, fr: Frame) -> Shading:
    s = fr.scale
    rng = np.random.default_rng(spec.seed)
    lit_left = rng.random() < 0.5
    u = b.u[None, :]
    au = np.abs(u)
    # each panel is a shallow cylinder; the light side panel is brighter
    panel = 0.86 + 0.14 * np.sqrt(np.clip(1.0 - ((au - 0.45) / 0.6) ** 2, 0, 1))
    side = np.where((u < 0) == lit_left, 1.0, 0.90)
    shade = np.broadcast_to(panel * side, fr.shape).astype(np.float32)
    add = np.zeros_like(shade)
    dx = (fr.cx - CENTER_X)[None, :] * s
    shade -= 0.25 * gauss(dx, 0.6 * s + 0.2)
    add += 0.07 * gauss(dx + (1.2 if lit_left else -1.2) * s, 0.7 * s + 0.2)
    along_v = fr.cy[:, None] * s
    welds = _stitches(b.dist, _edge_along(b, fr), 2.6 * s, 2.6, fr, 0.28)
    for off in (-2.6, 2.6):  # welded seam on both sides of the fold
        welds += _stitches(np.abs(dx - off * s), along_v, 0.0, 2.6, fr, 0.22)
    shade -= welds
    add += 0.3 * welds  # embossed dots catch light: visible on dark masks too
    add += 0.03 * (side == 1.0) * panel  # sheen on the lit panel
    shade -= 0.05 * (b.dist < 4.0 * s)
    # welded ear-loop pads at the four corners
    ds = (spec.half_width - np.abs(fr.cx - CENTER_X))[None, :] * s
    pad = (ds < 4.5 * s) & ((b.d_top < 7 * s) | ((b.bot[None, :] - fr.cy[:, None]) * s < 7 * s))
    shade -= 0.10 * pad
    if spec.nose_wire:
        _nose_wire(shade, add, b, fr, 0.30 * spec.half_width, 3.0, 0.7)
    return Shading(shade, add, two_panels=True)


def shade_scarf(spec: TemplateSpec, b: Body, fr: Frame) -> Shading:
    """Tube: horizontal gathers; bandana: folds radiating from the hanging point; both with folds off the
    nose, a hem, and shade under the chin. The texture is displaced along the folds."""
    s = fr.scale
    rng = np.random.default_rng(spec.seed)
    cx = fr.cx[None, :]
    cy = fr.cy[:, None]
    u = b.u[None, :]
    wrap = (cx - CENTER_X) / scarf_half_width(spec, cy)  # -1..1 across the scarf on each row: it turns away
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
        shade *= 0.6 + 0.4 * np.sqrt(np.clip(1.0 - (0.93 * wrap) ** 2, 0, 1))
        disp = 3.0 * folds * np.clip(below, 0.1, 1)
        shade += _tension_folds(rng, cx, cy)
        # rolled top hem
        d = b.d_top
        shade = shade - 0.20 * gauss(d - 4.5 * s, 1.0 * s + 0.2)
        add = 0.07 * gauss(d - 2.0 * s, 1.2 * s + 0.2)
    else:
        # bandana: folds radiate from the hanging point, the top is a folded edge
        tip_y = CANONICAL_SIZE + 40.0
        theta = np.arctan2(cx - CENTER_X, tip_y - cy)
        k1, k2 = rng.uniform(9.0, 13.0), rng.uniform(17.0, 23.0)
        p1, p2 = rng.uniform(0, 2 * np.pi, 2)
        folds = 0.7 * np.sin(k1 * theta + p1 + 0.02 * cy) + 0.3 * np.sin(k2 * theta + p2)
        folds = np.sign(folds) * np.abs(folds) ** 0.7
        amp = 0.05 + 0.14 * np.clip(below, 0, 1)
        shade = 1.0 + amp * folds
        shade *= 0.66 + 0.34 * np.sqrt(np.clip(1.0 - (0.9 * wrap) ** 2, 0, 1))
        shade += _tension_folds(rng, cx, cy)
        disp = 2.0 * folds * np.clip(below, 0.1, 1)
        d = b.d_top
        shade = shade + 0.05 * (d < 5.0 * s) - 0.18 * gauss(d - 5.2 * s, 0.9 * s + 0.2)
        add = 0.05 * gauss(d - 1.5 * s, 1.0 * s + 0.2)
        # hemmed diagonal edges
        shade -= 0.10 * gauss(b.dist - 2.2 * s, 0.5 * s + 0.15) * (d > 6 * s)
    # soft shadow under the nose where the fabric stands off the face, and under the chin over the neck
    shade *= 1.0 - 0.10 * gauss(cx - CENTER_X, 22.0) * gauss(cy - 175.0, 10.0)
    xs, jaw = jaw_table(0.0)
    jy = np.interp(fr.cx, xs, jaw)[None, :]
    under = np.clip((cy - jy - 2.0) / 6.0, 0.0, 1.0) * np.clip(1.0 - (cy - jy - 8.0) / 30.0, 0.35, 1.0)
    shade *= 1.0 - 0.22 * np.where(jy > 0, under, 0.0)
    return Shading(shade.astype(np.float32), add.astype(np.float32), disp.astype(np.float32))


def _tension_folds(rng: np.random.Generator, cx: np.ndarray, cy: np.ndarray) -> np.ndarray:
    """Diagonal folds where fabric pulled over the nose falls to the cheeks (canonical coordinates)."""
    out = np.zeros(np.broadcast_shapes(cx.shape, cy.shape), np.float32)
    for side in (-1.0, 1.0):
        for _ in range(int(rng.integers(1, 3))):
            x0 = CENTER_X + side * rng.uniform(6.0, 14.0)
            y0 = rng.uniform(150.0, 162.0)
            ang = math.radians(rng.uniform(30.0, 60.0))
            dx, dy = side * math.cos(ang), math.sin(ang)
            along = (cx - x0) * dx + (cy - y0) * dy
            across = -(cx - x0) * dy + (cy - y0) * dx
            length = rng.uniform(25.0, 45.0)
            fade = np.clip(along / 6.0, 0, 1) * np.clip(1.0 - along / length, 0, 1)
            ridge = 0.06 * gauss(across, 2.2) - 0.08 * gauss(across - side * 3.2, 1.6)
            out += (fade * ridge).astype(np.float32)
    return out


#: Shader name (``shader:`` in ``mask_types.yaml``) -> function.
SHADERS: dict[str, Callable[[TemplateSpec, Body, Frame], Shading]] = {
    "surgical": shade_surgical, "cloth": shade_cloth, "n95": shade_n95, "kn95": shade_kn95, "scarf": shade_scarf,
}  # fmt: skip
