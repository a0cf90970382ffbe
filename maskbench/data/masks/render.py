"""Render a mask template in the canonical frame: albedo (texture or colour) times its structure shading,
valve and straps, with an anti-aliased coverage alpha; and the templates' contact sheet.

:func:`render_template` draws the template in the canonical frame (scaled by ``size / 256``); synthesis then
warps the result onto a real face piecewise-affinely through the template's anchor set. Everything face
masks draw, ear loops and head straps included, is clipped to the convex hull of the jaw and brow
landmarks shrunk by :data:`~maskbench.data.masks.frame.HULL_CLIP` pixels, so loops end at the face outline.
"""

from __future__ import annotations

import hashlib
import math
import os
from functools import lru_cache
from typing import Sequence

import cv2
import numpy as np

from .body import Body, edges_at, mask_body
from .frame import CANONICAL_SIZE, CENTER_X, Frame, canonical_landmarks, data_file, get_frame, jaw_point
from .shaders import SHADERS, Shading, gauss
from .spec import MASK_TYPES_FILE, TemplateSpec, hex_rgb, mask_type_rules
from .textures import center_square

__all__ = ["RENDERER_VERSION", "library_hash", "render_template", "write_contact_sheet"]

#: Bumped whenever :func:`render_template` or :func:`~maskbench.data.masks.put_mask` draws differently; part of
#: :func:`library_hash`. 2: outline anti-aliasing and the face's sharpness and noise on the mask (issue 10).
#: 3: scarves follow the jaw and drape to the neck, skin light and contact shade, the far side of turned
#: faces clipped at the outline (issue 10).
#: 4: texture foreshortened round the face (WRAP_RADIUS), the photo's JPEG artefacts on the mask
#: (degrade.match_jpeg), skin light at a quarter resolution, blur search by bisection, cropped rendering (issue 10).
RENDERER_VERSION = "4"

#: Radius of the cylinder a mask's fabric wraps round, in half widths (texture foreshortening, renderer 4).
WRAP_RADIUS = 1.15

#: Every data file that decides how masks look.
DATA_FILES = ("mean_face_68.csv", "anchors.json", "templates.csv", "textures.csv", MASK_TYPES_FILE)


def library_hash() -> str:
    """Fingerprint of everything that decides how masks look: the data tables and the renderer version.

    Datasets record it, so a resumed run can tell whether the library changed underneath it.

    Returns:
        ``"sha256:<64 hex digits>"``.

    Raises:
        FileNotFoundError: a data file is missing.
    """
    h = hashlib.sha256(f"renderer={RENDERER_VERSION}\n".encode())
    for name in DATA_FILES:
        h.update(f"{name}\n".encode())
        h.update(data_file(name).read_bytes())
    return "sha256:" + h.hexdigest()


def _bezier(p0: np.ndarray, p1: np.ndarray, p2: np.ndarray, n: int = 14) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n)[:, None]
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2


def _stroke_box(pts: np.ndarray, width: float, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """``(y0, y1, x0, x1)``: the pixels a stroke of ``width`` px along ``pts`` (px) can touch, inside ``shape``."""
    pad = width / 2 + 2
    x0 = max(int(math.floor(pts[:, 0].min() - pad)), 0)
    x1 = min(int(math.ceil(pts[:, 0].max() + pad)) + 1, shape[1])
    y0 = max(int(math.floor(pts[:, 1].min() - pad)), 0)
    y1 = min(int(math.ceil(pts[:, 1].max() + pad)) + 1, shape[0])
    return y0, y1, x0, x1


def _stroke_distance(
    pts: np.ndarray, width: float, shape: tuple[int, int], origin: tuple[int, int] = (0, 0)
) -> tuple[tuple[slice, slice], np.ndarray] | None:
    """Distance (output px) from each pixel of the stroke's bounding box to the polyline ``pts`` (px of the
    full frame); the box is clipped to a layer of ``shape`` whose first pixel is ``origin`` = (x0, y0)."""
    pts = pts - np.asarray(origin, np.float32)
    y0, y1, x0, x1 = _stroke_box(pts, width, shape)
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
    layer_a: np.ndarray, layer_rgb: np.ndarray, pts: np.ndarray, width: float, rgb: np.ndarray, flat: bool,
    origin: tuple[int, int] = (0, 0),
) -> None:
    """Paint a cord (round shading) or flat band (darker rims) of ``width`` px along ``pts`` (px of the full
    frame) on layers that start at ``origin`` = (x0, y0) of it."""
    res = _stroke_distance(pts, width, layer_a.shape, origin)
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


def _strap_paths(spec: TemplateSpec, fr: Frame) -> list[np.ndarray]:
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
            xa, xb = CENTER_X + sign * ua * hw, CENTER_X + sign * ub * hw
            ta, _ = edges_at(spec, xa)
            _, bb = edges_at(spec, xb)
            attach = [np.array([xa, ta + 3.0]), np.array([xb, bb - 4.0])]
        else:
            xe = CENTER_X + sign * (hw - 1.5)
            ta, bb = edges_at(spec, xe)
            h = max(bb - ta, 2.0)
            attach = [np.array([xe, ta + min(2.5, 0.25 * h)]), np.array([xe, bb - min(2.5, 0.25 * h)])]
        for p0, t in zip(attach, (spec.strap_top, spec.strap_bottom)):
            jp = jaw_point(t, right)
            out = jp + sign * np.array([6.0, 0.0])  # past the outline; the hull clip ends it
            mid = 0.5 * (p0 + out) + np.array([0.0, 2.0 if spec.straps == "ear_loops" else 0.5])
            paths.append(_bezier(p0, mid, out) * s)
    return paths


def _valve(spec: TemplateSpec, fr: Frame, rgb: np.ndarray, alpha: np.ndarray) -> None:
    """Paint an exhalation valve (round or square, slotted cover) onto the body in place."""
    s = fr.scale
    cx0, cy0, r = CENTER_X + spec.valve_x, spec.valve_y, spec.valve_size
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
    col = hex_rgb(spec.valve_color)
    shade = 0.78 + 0.30 * np.sqrt(1.0 - rn**2) - 0.08 * (y / r)
    shade -= 0.25 * gauss(rn - 0.66, 0.05)  # inner cover ring
    inner = rn < 0.62
    slots = np.cos(y * (2 * np.pi / max(r / 3.2, 1.5))) > 0.45
    shade = np.where(inner & slots & (np.abs(x) < 0.5 * r), shade - 0.28, shade)
    shade -= 0.25 * gauss(edge, 0.6 * s + 0.2)
    vr = np.clip(col[None, None, :] * shade[..., None], 0, 1)
    # a dark contact shadow just outside the valve
    sh = 0.35 * np.clip(1.0 - np.abs(edge + 1.2 * s) / (1.3 * s + 0.3), 0, 1) * (edge < 0)
    rgb *= (1.0 - sh)[..., None]
    rgb[:] = rgb * (1 - a[..., None]) + vr * a[..., None]
    np.maximum(alpha, a * (alpha > 0), out=alpha)


def _prepare_texture(texture: np.ndarray, size: int) -> np.ndarray:
    """Centre square crop of ``texture`` resized to ``size``, float32 [0, 1]."""
    if not (isinstance(texture, np.ndarray) and texture.ndim == 3 and texture.shape[2] == 3):
        raise ValueError(f"texture must be (H, W, 3) uint8, got {getattr(texture, 'shape', type(texture))}")
    if texture.dtype != np.uint8:
        raise ValueError(f"texture must be uint8, got {texture.dtype}")
    return center_square(texture, size).astype(np.float32) * np.float32(1 / 255)


def _albedo(
    spec: TemplateSpec, texture: np.ndarray | None, b: Body, fr: Frame, sh: Shading, top_c: float
) -> tuple[np.ndarray, np.ndarray]:
    """The fabric colour per pixel on frame ``fr`` (``fr.shape + (3,)`` float32), and its mean colour ``(3,)``.

    Without a texture: the template's colour with a fine non-woven grain. With one: the texture laid on
    the mask, foreshortened towards the sides as on a cylinder (:data:`WRAP_RADIUS`), bent along the top
    edge (``top_c``: its y on the centre line, canonical), displaced along pleats and folds, mirrored on
    two-panel masks.
    """
    size, s = fr.size, fr.scale
    if texture is None:
        base = hex_rgb(spec.color)
        return (1.0 + 0.025 * fr.grain)[..., None] * base[None, None, :], base
    tex = _prepare_texture(texture, size)
    bend = 0.55 * (b.top - top_c) * s  # px per column
    h, w = fr.shape
    cols = np.arange(fr.x0, fr.x0 + w, dtype=np.float32)  # the full frame's columns and rows
    # the fabric wraps round the face (a cylinder of radius WRAP_RADIUS x half width): seen from the front,
    # its texture is foreshortened towards the sides (surface coordinate R asin(x / R))
    radius = WRAP_RADIUS * spec.half_width * s
    centre = CENTER_X * s - 0.5
    cols = (centre + radius * np.arcsin(np.clip((cols - centre) / radius, -1.0, 1.0))).astype(np.float32)
    if sh.two_panels:  # both halves cut from the same folded fabric
        cols = np.where(cols >= size / 2, size - 1 - cols, cols) + np.float32(size / 7)
    map_x = np.broadcast_to(cols[None, :], (h, w))
    map_y = np.arange(fr.y0, fr.y0 + h, dtype=np.float32)[:, None] - bend[None, :]
    map_y = map_y + sh.disp * s if sh.disp is not None else np.broadcast_to(map_y, (h, w))
    albedo = cv2.remap(tex, np.ascontiguousarray(map_x), np.ascontiguousarray(map_y, dtype=np.float32),
                       cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    return albedo, tex.reshape(-1, 3).mean(0)


def _add_straps(
    spec: TemplateSpec, fr: Frame, rgb: np.ndarray, alpha: np.ndarray, mean_rgb: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Loops/straps drawn under the body; returns the combined (rgb, alpha)."""
    la = np.zeros(fr.shape, np.float32)
    lrgb = np.zeros(fr.shape + (3,), np.float32)
    if spec.strap_color == "match":
        colour = np.clip(mean_rgb * 0.92, 0, 1).astype(np.float32)
    else:
        colour = hex_rgb(spec.strap_color)
    flat = spec.straps == "head_straps"
    for path in _strap_paths(spec, fr):
        _draw_stroke(la, lrgb, path.astype(np.float32), spec.strap_width * fr.scale, colour, flat, (fr.x0, fr.y0))
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
        MaskTypesError: ``mask_types.yaml`` is malformed (read on first use).
    """
    if not isinstance(size, (int, np.integer)) or size < 16:
        raise ValueError(f"size must be an integer >= 16, got {size!r}")
    size = int(size)
    full = get_frame(size)
    body = mask_body(spec, full)
    # everything after the body's outline is drawn only on the box that the body and its straps can cover
    y0, y1, x0, x1 = _render_box(spec, full, body)
    rgb_full = np.zeros((size, size, 3), np.float32)
    alpha_full = np.zeros((size, size), np.float32)
    if y1 <= y0 or x1 <= x0:
        return rgb_full, alpha_full
    fr = full.crop(y0, y1, x0, x1)
    b = body.crop(slice(y0, y1), slice(x0, x1))
    alpha = np.clip(b.dist + 0.5, 0.0, 1.0)

    sh = SHADERS[mask_type_rules()[spec.mask_type].shader](spec, b, fr)
    albedo, mean_rgb = _albedo(spec, texture, b, fr, sh, float(np.interp(CENTER_X, full.cx, body.top)))
    rgb = np.clip(albedo * sh.shade[..., None] + sh.add[..., None], 0.0, 1.0).astype(np.float32)
    if spec.valve != "none":
        _valve(spec, fr, rgb, alpha)
    if spec.straps != "none":
        rgb, alpha = _add_straps(spec, fr, rgb, alpha, mean_rgb)

    if spec.mask_type != "scarf":
        alpha = alpha * fr.hull_clip
    rgb_full[y0:y1, x0:x1] = np.where(alpha[..., None] > 0, rgb, 0.0)
    alpha_full[y0:y1, x0:x1] = np.clip(alpha, 0.0, 1.0)
    return rgb_full, alpha_full


def _render_box(spec: TemplateSpec, fr: Frame, b: Body) -> tuple[int, int, int, int]:
    """``(y0, y1, x0, x1)`` on the full frame ``fr``: every pixel the body (``dist > -0.5``) or a strap covers."""
    ys, xs = np.nonzero(b.dist > -0.5)
    if len(ys) == 0:
        return 0, 0, 0, 0
    y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    if spec.straps != "none":
        for path in _strap_paths(spec, fr):
            sy0, sy1, sx0, sx1 = _stroke_box(path.astype(np.float32), spec.strap_width * fr.scale, fr.shape)
            y0, y1, x0, x1 = min(y0, sy0), max(y1, sy1), min(x0, sx0), max(x1, sx1)
    return y0, y1, x0, x1


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
    from ...core.io import write_png

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
