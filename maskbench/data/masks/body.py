"""The mask body on one frame: its top and bottom edges per column and a per-pixel parametrisation.

Surgical, cloth, N95 and KN95 masks are the region ``|x - 128| <= half_width, top(x) <= y <= bottom(x)``:
``top`` rises from ``top_side_y`` at the sides to ``top_y`` over the nose; ``bottom`` is the jaw line moved
``chin_inset`` pixels inwards (an erosion of the face region), lowered to ``bottom_side_y`` at the sides.
Scarves run from ``top_y`` down to the bottom of the canvas (:func:`scarf_half_width`): over the face their
sides follow the jaw outline :data:`SCARF_STANDOFF` outside it (the fabric wraps back toward the ears, it
does not stand out as a wedge), capped at ``half_width``; from a landmark of the lower jaw
(:data:`SCARF_DEPARTURE`) they drape straight to ``neck_width`` at the canvas bottom (a tube hangs round the
neck, a bandana narrows to its hanging point). All in canonical pixels, y downwards.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .frame import CANONICAL_SIZE, CENTER_X, Frame, canonical_256, jaw_point, jaw_table
from .spec import TemplateSpec

__all__ = ["SCARF_DEPARTURE", "SCARF_STANDOFF", "Body", "edges", "edges_at", "mask_body", "scarf_half_width"]

#: How far (canonical px) a scarf's side stands off the jaw outline: the fabric's thickness and the gap
#: where it wraps round the jaw to the ears.
SCARF_STANDOFF = 3.0

#: Jaw landmark (fractional index, mirrored on the right) where a scarf leaves the jaw and drapes to the
#: neck: a tube (neck gaiter) leaves where the neck meets the jaw (landmark 4), a bandana hangs from higher up
#: (landmark 3) to its point.
SCARF_DEPARTURE = {"tube": 4.0, "bandana": 3.0}


@dataclass
class Body:
    """The mask body on one frame: per-column edges and per-pixel parametrisation (canonical units)."""

    top: np.ndarray  # (S,) y of the top edge per column
    bot: np.ndarray  # (S,) y of the bottom edge per column
    dist: np.ndarray  # (S, S) distance to the body outline in OUTPUT px, > 0 inside
    d_top: np.ndarray  # (S, S) distance below the top edge, output px
    u: np.ndarray  # (S,) (x - 128) / half_width
    v: np.ndarray  # (S, S) (y - top) / (bot - top), 0 at top, 1 at bottom
    top_arc: np.ndarray  # (S,) arc length (output px) along the top edge from the frame's first column
    bot_arc: np.ndarray  # (S,) the same along the bottom edge

    def crop(self, ys: slice, xs: slice) -> "Body":
        """The body on rows ``ys`` and columns ``xs`` of its frame (as :meth:`Frame.crop`)."""
        return Body(self.top[xs], self.bot[xs], self.dist[ys, xs], self.d_top[ys, xs], self.u[xs],
                    self.v[ys, xs], self.top_arc[xs], self.bot_arc[xs])


def edges(spec: TemplateSpec, cx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top and bottom edge y per column (canonical), and u = (x - 128) / half_width."""
    u = (cx - CENTER_X) / spec.half_width
    au = np.minimum(np.abs(u), 1.0)
    if spec.mask_type == "scarf":
        rng = np.random.default_rng(spec.seed)
        ph, amp = rng.uniform(0, 2 * np.pi), rng.uniform(0.5, 1.6)
        top = spec.top_y + (spec.top_side_y - spec.top_y) * au**spec.top_power + amp * np.sin(7.0 * u + ph) * au
        bot = np.full_like(cx, CANONICAL_SIZE + 20.0)
        return top.astype(np.float32), bot.astype(np.float32), u.astype(np.float32)
    xs, jaw = jaw_table(round(spec.chin_inset, 2))
    jd = np.interp(cx, xs, jaw)
    bc = float(np.interp(CENTER_X, xs, jaw))
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


def scarf_half_width(spec: TemplateSpec, y: np.ndarray) -> np.ndarray:
    """A scarf's half width at canonical rows ``y``: the jaw's half width plus :data:`SCARF_STANDOFF` (at
    most ``half_width``) down to the style's departure landmark, then a straight line to
    ``min(neck_width, that width)`` at the canvas bottom.

    Args:
        spec: a scarf template.
        y: canonical rows, any shape.

    Returns:
        half widths, canonical px, ``float64`` of ``y``'s shape.
    """
    lm = canonical_256().astype(np.float64)
    jy, jhalf = lm[:9, 1], CENTER_X - lm[:9, 0]  # left half of the jaw, top to chin (the frame is symmetric)
    y = np.asarray(y, np.float64)
    along_jaw = np.minimum(np.interp(y, jy, jhalf) + SCARF_STANDOFF, spec.half_width)
    t = SCARF_DEPARTURE[spec.style]
    y_dep = float(jaw_point(t, right=False)[1])
    w_dep = min(float(np.interp(y_dep, jy, jhalf)) + SCARF_STANDOFF, spec.half_width)
    w_bot = min(spec.neck_width, w_dep)
    drape = w_dep + (w_bot - w_dep) * (y - y_dep) / (CANONICAL_SIZE - y_dep)
    return np.where(y <= y_dep, along_jaw, drape)


def mask_body(spec: TemplateSpec, fr: Frame) -> Body:
    """The template's :class:`Body` on frame ``fr``."""
    top, bot, u = edges(spec, fr.cx)
    s = fr.scale
    cx, cy = fr.cx, fr.cy
    top_n = 1.0 / np.sqrt(1.0 + np.gradient(top, cx) ** 2)
    bot_n = 1.0 / np.sqrt(1.0 + np.gradient(bot, cx) ** 2)
    y = cy[:, None]
    d_top = ((y - top[None, :]) * (top_n[None, :] * s)).astype(np.float32)
    d_bot = (bot[None, :] - y) * (bot_n[None, :] * s)
    ax = np.abs(cx - CENTER_X)[None, :]
    if spec.mask_type == "scarf":
        half = scarf_half_width(spec, cy)[:, None]
        slope = np.gradient(half[:, 0], cy)[:, None]
        d_side = (half - ax) * (s / np.sqrt(1.0 + slope * slope))
    else:
        d_side = (spec.half_width - ax) * s
    dist = np.minimum(np.minimum(d_top, d_bot), d_side).astype(np.float32)
    height = np.maximum(bot - top, 1e-3)
    v = ((y - top[None, :]) / height[None, :]).astype(np.float32)
    top_arc = np.concatenate([[0.0], np.cumsum(np.hypot(1.0, np.diff(top)))]) * s
    bot_arc = np.concatenate([[0.0], np.cumsum(np.hypot(1.0, np.diff(bot)))]) * s
    return Body(top, bot, dist, d_top, u, v, top_arc, bot_arc)


def edges_at(spec: TemplateSpec, x: float) -> tuple[float, float]:
    """Top and bottom edge y (canonical) at one canonical x."""
    top, bot, _ = edges(spec, np.array([x], np.float32))
    return float(top[0]), float(bot[0])

