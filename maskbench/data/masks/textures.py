"""Mask fabrics: a library of procedural textures, user texture photos, and a per-mask-type picker.

Procedural textures are rows of ``mask_templates/textures.csv`` (:class:`TextureSpec`): a pattern kind
(solid, melange, stripes, pinstripe, gingham, plaid, dots, floral, camo, knit, denim, chevron,
houndstooth, argyle, print), up to four colours, a scale, an angle, a density and a seed.
:func:`render_texture` draws one deterministically (its own ``numpy.random.Generator`` seeded from the
row, never the global RNG). :class:`TextureBank` picks a texture for a mask type (by the type's
``texture_mix`` in ``mask_types.yaml``) and caches images.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from ...core.errors import MaskbenchError, MissingFileError
from ...core.io import ImageDecodeError, read_image, read_spec_table
from ..format import MASK_TYPES
from .frame import data_file
from .spec import TEXTURE_USES, hex_rgb, is_hex_color, mask_type_rules

__all__ = [
    "TEXTURE_KINDS",
    "TEXTURE_USES",
    "PHOTO_SUFFIXES",
    "TextureSpec",
    "TextureSpecError",
    "TextureBank",
    "load_textures",
    "load_photo_textures",
    "render_texture",
    "center_square",
]

#: Pattern kinds a procedural texture can have.
TEXTURE_KINDS = (
    "solid", "melange", "stripes", "pinstripe", "gingham", "plaid", "dots", "floral",
    "camo", "knit", "denim", "chevron", "houndstooth", "argyle", "print",
)  # fmt: skip

#: File suffixes :func:`load_photo_textures` treats as images.
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

#: Number of colours each kind uses (the rest of color1..color4 must be ``-``).
_KIND_COLORS = {
    "solid": 1, "melange": 2, "stripes": 2, "pinstripe": 2, "gingham": 2, "plaid": 3, "dots": 2,
    "floral": 4, "camo": 4, "knit": 1, "denim": 2, "chevron": 2, "houndstooth": 2, "argyle": 3, "print": 3,
}  # fmt: skip

_REF = 256  # texture parameters are in pixels of a 256 px texture


class TextureSpecError(MaskbenchError, ValueError):
    """A texture table is malformed: the message names the file, the row and the column."""


@dataclass(frozen=True)
class TextureSpec:
    """One procedural texture (one row of ``textures.csv``).

    Attributes:
        texture_id: unique id, ``<kind>-NNNN``.
        kind: one of :data:`TEXTURE_KINDS`.
        use: one of :data:`TEXTURE_USES`.
        colors: 1-4 ``#rrggbb`` colours (background first), as many as the kind uses; ``stripes``,
            ``print`` and ``plaid`` may take one more.
        scale: pattern period / feature size in pixels of a 256 px texture, [2, 128].
        angle: pattern rotation in degrees, [-90, 90].
        density: kind-specific amount in [0, 1] (stripe duty, dot size, flower/print density, ...).
        seed: seeds the texture's own random generator.
    """

    texture_id: str
    kind: str
    use: str
    colors: tuple[str, ...]
    scale: float
    angle: float
    density: float
    seed: int


# ------------------------------------------------------------------------------------------ loading


_HEADER = ("texture_id", "kind", "use", "color1", "color2", "color3", "color4", "scale", "angle", "density", "seed")


def load_textures(path: str | os.PathLike | None = None) -> list[TextureSpec]:
    """Read and validate a procedural texture table.

    Args:
        path: a ``textures.csv``; default: the one shipped in ``mask_templates/``.

    Returns:
        The textures in file order.

    Raises:
        FileNotFoundError: the file does not exist.
        TextureSpecError: a missing or unknown column, an unknown kind or use, a bad colour, a value out of
            range, a wrong number of colours for the kind or a duplicate id; the message names file,
            row (1 = first data row) and column.
    """
    src = data_file("textures.csv") if path is None else path
    rows = read_spec_table(src, list(_HEADER), "texture_id", TextureSpecError, "texture table")
    return [_parse_row(rec, where) for where, rec in rows]


def _parse_row(rec: dict[str, str], where: str) -> TextureSpec:
    def err(col: str, msg: str) -> TextureSpecError:
        return TextureSpecError(f"{where}, column {col}: {msg}")

    def number(col: str, lo: float, hi: float, integer: bool = False) -> float:
        raw = rec[col].strip()
        try:
            val = int(raw) if integer else float(raw)
        except ValueError:
            raise err(col, f"expected {'an integer' if integer else 'a number'}, got {raw!r}") from None
        if not (math.isfinite(val) and lo <= val <= hi):
            raise err(col, f"{raw} is outside [{lo:g}, {hi:g}]")
        return val

    tid = rec["texture_id"].strip()
    kind = rec["kind"].strip()
    if not tid:
        raise err("texture_id", "empty id")
    if kind not in TEXTURE_KINDS:
        raise err("kind", f"expected one of {', '.join(TEXTURE_KINDS)}, got {kind!r}")
    use = rec["use"].strip()
    if use not in TEXTURE_USES:
        raise err("use", f"expected one of {', '.join(TEXTURE_USES)}, got {use!r}")
    colors: list[str] = []
    for i in range(1, 5):
        col = f"color{i}"
        raw = rec[col].strip()
        if raw in ("", "-"):
            continue
        if not is_hex_color(raw):
            raise err(col, f"expected a colour #rrggbb or '-', got {raw!r}")
        if len(colors) != i - 1:
            raise err(col, f"colour after an empty color{i - 1}")
        colors.append(raw.lower())
    need = _KIND_COLORS[kind]
    extra = 1 if kind in ("stripes", "plaid", "print") else 0
    if not need <= len(colors) <= need + extra:
        want = f"{need}" if not extra else f"{need}-{need + extra}"
        raise err("color1", f"{kind} takes {want} colours, got {len(colors)}")
    return TextureSpec(
        texture_id=tid,
        kind=kind,
        use=use,
        colors=tuple(colors),
        scale=number("scale", 2.0, 128.0),
        angle=number("angle", -90.0, 90.0),
        density=number("density", 0.0, 1.0),
        seed=int(number("seed", 0, 2**31 - 1, integer=True)),
    )


# ------------------------------------------------------------------------------------------ drawing


def _grid(size: int, angle: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in 256-px units, rotated by ``angle`` degrees about the centre."""
    c = (np.arange(size, dtype=np.float32) + 0.5) * np.float32(_REF / size) - _REF / 2
    x, y = np.meshgrid(c, c)
    if angle:
        a = math.radians(angle)
        x, y = x * math.cos(a) + y * math.sin(a), -x * math.sin(a) + y * math.cos(a)
    return x, y


def _band(phase: np.ndarray, lo: float, hi: float, period_px: float) -> np.ndarray:
    """Anti-aliased coverage of ``lo <= phase < hi`` for a periodic phase in [0, 1)."""
    w = 1.0 / max(period_px, 1e-3)  # one output pixel, in phase units
    a = np.clip((phase - lo) / w + 0.5, 0, 1) * np.clip((hi - phase) / w + 0.5, 0, 1)
    # wrap-around near 0/1
    a += np.clip((phase - 1.0 - lo) / w + 0.5, 0, 1) * np.clip((hi - phase + 1.0) / w + 0.5, 0, 1) * (lo > 0.5)
    return np.clip(a, 0, 1)


def _mix(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    return a + (b - a) * t[..., None]


def _smooth_noise(rng: np.random.Generator, size: int, feature_px: float, aniso: float = 1.0) -> np.ndarray:
    """Smooth noise, std 1, with blobs about ``feature_px`` output pixels wide (``aniso`` > 1: wider in x)."""
    n = max(int(size / max(feature_px, 1.0)) + 3, 4)
    ny = max(int(n * aniso), 4)
    low = rng.standard_normal((ny, n)).astype(np.float32)
    up = cv2.resize(low, (size, size), interpolation=cv2.INTER_CUBIC)
    up -= up.mean()
    return up / max(float(up.std()), 1e-6)


def _draw_solid(spec, rng, size, s):
    return np.broadcast_to(hex_rgb(spec.colors[0]), (size, size, 3)).copy()


def _draw_melange(spec, rng, size, s):
    c1, c2 = hex_rgb(spec.colors[0]), hex_rgb(spec.colors[1])
    fib = rng.standard_normal((size, size)).astype(np.float32)
    fib = cv2.GaussianBlur(fib, (0, 0), sigmaX=2.5 * s + 0.3, sigmaY=0.5 * s + 0.2)
    fib /= max(float(fib.std()), 1e-6)
    t = np.clip(0.5 + 0.9 * (fib - (spec.density - 0.5) * 1.6), 0, 1) * 0.8
    return _mix(c1, c2, t)


def _draw_stripes(spec, rng, size, s):
    cols = [hex_rgb(c) for c in spec.colors]
    x, _ = _grid(size, spec.angle)
    p = spec.scale
    ph = (x / p) % 1.0
    d = 0.15 + 0.7 * spec.density
    out = np.broadcast_to(cols[0], (size, size, 3)).copy()
    out = _mix(out, cols[1], _band(ph, 0.0, d, p * s))
    if len(cols) > 2:
        out = _mix(out, cols[2], _band(ph, d + 0.5 * (1 - d) - 0.08, d + 0.5 * (1 - d) + 0.08, p * s))
    return out


def _draw_pinstripe(spec, rng, size, s):
    c1, c2 = hex_rgb(spec.colors[0]), hex_rgb(spec.colors[1])
    x, _ = _grid(size, spec.angle)
    p = spec.scale
    width = (0.6 + 1.2 * spec.density) / p
    return _mix(np.broadcast_to(c1, (size, size, 3)), c2, _band((x / p) % 1.0, 0.0, width, p * s))


def _draw_gingham(spec, rng, size, s):
    c1, c2 = hex_rgb(spec.colors[0]), hex_rgb(spec.colors[1])
    x, y = _grid(size, spec.angle)
    p = spec.scale
    d = 0.35 + 0.3 * spec.density
    h = _band((x / p) % 1.0, 0, d, p * s)
    v = _band((y / p) % 1.0, 0, d, p * s)
    return _mix(np.broadcast_to(c1, (size, size, 3)), c2, 0.5 * h + 0.5 * v)


def _draw_plaid(spec, rng, size, s):
    cols = [hex_rgb(c) for c in spec.colors]
    x, y = _grid(size, spec.angle)
    sett = spec.scale
    # a sett of bands: widths and colours from the seed, mirrored like a tartan
    n = int(rng.integers(3, 6))
    widths = rng.uniform(0.05, 0.3, n)
    widths /= widths.sum() * 2
    idx = rng.integers(0, len(cols), n)
    idx[0] = 0
    edges = np.concatenate([[0.0], np.cumsum(widths)])

    def stripes(coord):
        ph = (coord / sett) % 1.0
        ph = np.where(ph > 0.5, 1.0 - ph, ph)  # mirror
        out = np.broadcast_to(cols[0], (size, size, 3)).copy()
        for k in range(1, n):
            out = _mix(out, cols[idx[k]], _band(ph, edges[k], edges[k + 1], sett * s * 2))
        return out

    warp, weft = stripes(x), stripes(y)
    px = (np.arange(size, dtype=np.float32) + 0.5)
    twill = 0.5 + 0.3 * np.sin((px[None, :] + px[:, None]) * (2 * np.pi / 3.0))
    return _mix(warp, weft, twill.astype(np.float32))


def _draw_dots(spec, rng, size, s):
    c1, c2 = hex_rgb(spec.colors[0]), hex_rgb(spec.colors[1])
    x, y = _grid(size, spec.angle)
    p = spec.scale
    row = np.floor(y / p)
    xo = x / p + 0.5 * (row % 2)
    dx = (xo % 1.0) - 0.5
    dy = ((y / p) % 1.0) - 0.5
    r = 0.12 + 0.25 * spec.density
    d = (np.sqrt(dx * dx + dy * dy) - r) * p * s
    return _mix(np.broadcast_to(c1, (size, size, 3)), c2, np.clip(0.5 - d, 0, 1))


def _to_u8(rgb: np.ndarray) -> np.ndarray:
    return np.clip(rgb * 255 + 0.5, 0, 255).astype(np.uint8)


def _draw_floral(spec, rng, size, s):
    bg, petal, centre, leaf = (tuple(int(v) for v in _to_u8(hex_rgb(c))) for c in spec.colors)
    img = np.empty((size, size, 3), np.uint8)
    img[:] = bg
    r0 = spec.scale * s
    n = int((0.4 + 1.4 * spec.density) * (size / max(r0, 2.0)) ** 2 / 4) + 1
    sh = 4  # sub-pixel bits
    f = 1 << sh
    for _ in range(min(n, 400)):
        cx, cy = rng.uniform(-r0, size + r0, 2)
        r = r0 * rng.uniform(0.6, 1.1)
        rot = rng.uniform(0, 360)
        npet = int(rng.integers(5, 7))
        for k in range(2):  # two leaves
            a = math.radians(rot + 90 + 180 * k + rng.uniform(-30, 30))
            lc = (cx + math.cos(a) * r * 1.1, cy + math.sin(a) * r * 1.1)
            cv2.ellipse(img, (int(lc[0] * f), int(lc[1] * f)), (int(r * 0.6 * f), int(r * 0.25 * f)),
                        math.degrees(a), 0, 360, leaf, -1, cv2.LINE_AA, sh)
        for k in range(npet):
            a = math.radians(rot + 360 * k / npet)
            pc = (cx + math.cos(a) * r * 0.5, cy + math.sin(a) * r * 0.5)
            cv2.ellipse(img, (int(pc[0] * f), int(pc[1] * f)), (int(r * 0.5 * f), int(r * 0.3 * f)),
                        math.degrees(a), 0, 360, petal, -1, cv2.LINE_AA, sh)
        cv2.circle(img, (int(cx * f), int(cy * f)), int(r * 0.25 * f), centre, -1, cv2.LINE_AA, sh)
    return img.astype(np.float32) / 255.0


def _draw_camo(spec, rng, size, s):
    cols = [hex_rgb(c) for c in spec.colors]
    out = np.broadcast_to(cols[0], (size, size, 3)).copy()
    for k, c in enumerate(cols[1:]):
        nz = _smooth_noise(rng, size, spec.scale * s * (1.0 - 0.15 * k), aniso=1.0)
        thr = 0.1 + 0.5 * (1 - spec.density) + 0.1 * k
        out = _mix(out, c, np.clip((nz - thr) * 8.0 + 0.5, 0, 1))
    return out


def _draw_knit(spec, rng, size, s):
    c1 = hex_rgb(spec.colors[0])
    x, y = _grid(size, spec.angle)
    p = spec.scale
    col = np.floor(x / p)
    lx = (x / p) % 1.0 - 0.5
    # each stitch is a V: two lobes slanted towards the column centre
    ly = (y / (0.75 * p) + np.abs(lx) * 0.9) % 1.0
    lobe = np.sin(np.pi * ly) * (0.55 + 0.45 * np.cos(np.pi * (2 * np.abs(lx) - 0.5)))
    groove = 1.0 - 0.5 * np.exp(-(lx / 0.07) ** 2)
    shade = (0.62 + 0.45 * lobe) * groove
    shade *= 1.0 + 0.04 * np.sin(col * 2.1)
    out = shade[..., None] * c1
    if spec.density > 0.5:  # stripes of a lighter tone every few rows
        rows = np.floor(y / (0.75 * p))
        period = 3 + int(spec.density * 6)
        light = ((rows % period) < 1).astype(np.float32)
        out = _mix(out, np.clip(c1 * 1.6 + 0.15, 0, 1) * shade[..., None], light)
    return out


def _draw_denim(spec, rng, size, s):
    warp, weft = hex_rgb(spec.colors[0]), hex_rgb(spec.colors[1])
    px = np.arange(size, dtype=np.float32) + 0.5
    p = max(spec.scale * s, 2.5)
    twill = (((px[None, :] + px[:, None] * 0.5) / p) % 1.0) < 0.3
    streak = cv2.resize(rng.standard_normal((1, size)).astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR)
    fade = _smooth_noise(rng, size, size / 3.0)
    t = 0.12 + 0.25 * twill + 0.05 * streak + (0.08 + 0.12 * spec.density) * np.clip(fade, -1, 2)
    return _mix(np.broadcast_to(warp, (size, size, 3)), weft, np.clip(t, 0, 1).astype(np.float32))


def _draw_chevron(spec, rng, size, s):
    c1, c2 = hex_rgb(spec.colors[0]), hex_rgb(spec.colors[1])
    x, y = _grid(size, spec.angle)
    p = spec.scale
    tri = np.abs((x / p) % 1.0 - 0.5) * p
    ph = ((y + tri) / p) % 1.0
    return _mix(np.broadcast_to(c1, (size, size, 3)), c2, _band(ph, 0, 0.3 + 0.4 * spec.density, p * s))


def _draw_houndstooth(spec, rng, size, s):
    """Checks of ``scale`` px whose mixed cells carry diagonal stripes: the broken-check 'teeth'."""
    c1, c2 = hex_rgb(spec.colors[0]), hex_rgb(spec.colors[1])
    x, y = _grid(size, spec.angle)
    u, v = x / (spec.scale / 2), y / (spec.scale / 2)
    i, j = np.floor(u) % 2, np.floor(v) % 2
    diag = ((u - v) * 2.0) % 2.0
    px = spec.scale * s / 4.0  # output px per unit of diag
    stripe = np.clip((diag - 1.0) * px + 0.5, 0, 1) * np.clip((2.0 - diag) * px + 0.5, 0, 1)
    t = np.where((i == 0) & (j == 0), 1.0, np.where((i == 1) & (j == 1), 0.0, stripe)).astype(np.float32)
    return _mix(np.broadcast_to(c1, (size, size, 3)), c2, t)


def _draw_argyle(spec, rng, size, s):
    c1, c2, c3 = (hex_rgb(c) for c in spec.colors)
    x, y = _grid(size, spec.angle)
    w, h = spec.scale, spec.scale * (1.2 + 0.6 * spec.density)
    u, v = x / w, y / h
    # diamonds: the lattice rotated 45 degrees; parity picks the colour
    a, b = np.floor(u + v), np.floor(u - v)
    parity = ((a + b) % 2 == 0).astype(np.float32)
    out = _mix(np.broadcast_to(c1, (size, size, 3)), c2, parity)
    la = np.abs(((u + v) % 1.0) - 0.5)
    lb = np.abs(((u - v) % 1.0) - 0.5)
    line = np.clip(1.0 - (0.5 - np.maximum(la, lb)) * w * s / 0.8, 0, 1)
    dash = (np.floor((u + v) * 4) % 2 == 0).astype(np.float32)
    return _mix(out, c3, line * dash)


def _draw_print(spec, rng, size, s):
    cols = [tuple(int(v) for v in _to_u8(hex_rgb(c))) for c in spec.colors]
    img = np.empty((size, size, 3), np.uint8)
    img[:] = cols[0]
    r0 = spec.scale * s * 0.5
    n = int((0.3 + 1.5 * spec.density) * (size / max(2 * r0, 2.0)) ** 2 / 2) + 1
    sh, f = 4, 16
    shape = int(rng.integers(0, 4))  # one motif per print: circle, square, triangle, star
    for _ in range(min(n, 600)):
        cx, cy = rng.uniform(-r0, size + r0, 2)
        r = r0 * rng.uniform(0.5, 1.0)
        col = cols[1 + int(rng.integers(0, len(cols) - 1))]
        rot = rng.uniform(0, 2 * np.pi)
        if shape == 0:
            cv2.circle(img, (int(cx * f), int(cy * f)), int(r * f), col, -1, cv2.LINE_AA, sh)
            continue
        k = {1: 4, 2: 3, 3: 10}[shape]
        ang = rot + np.arange(k) * 2 * np.pi / k
        rad = np.where(np.arange(k) % 2 == 1, 0.45 * r, r) if shape == 3 else np.full(k, r)
        pts = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1)
        cv2.fillPoly(img, [np.round(pts * f).astype(np.int32)], col, cv2.LINE_AA, sh)
    return img.astype(np.float32) / 255.0


_DRAW = {
    "solid": _draw_solid, "melange": _draw_melange, "stripes": _draw_stripes, "pinstripe": _draw_pinstripe,
    "gingham": _draw_gingham, "plaid": _draw_plaid, "dots": _draw_dots, "floral": _draw_floral,
    "camo": _draw_camo, "knit": _draw_knit, "denim": _draw_denim, "chevron": _draw_chevron,
    "houndstooth": _draw_houndstooth, "argyle": _draw_argyle, "print": _draw_print,
}  # fmt: skip


def render_texture(spec: TextureSpec, size: int = _REF) -> np.ndarray:
    """Draw a procedural texture, with a fine woven grain on top of its pattern.

    Args:
        spec: the texture.
        size: side of the square image in pixels; pattern sizes scale with ``size / 256``.

    Returns:
        ``(size, size, 3) uint8`` RGB. Deterministic: the same spec and size give identical bytes.

    Raises:
        ValueError: ``size`` < 8.
    """
    if not isinstance(size, (int, np.integer)) or size < 8:
        raise ValueError(f"size must be an integer >= 8, got {size!r}")
    size = int(size)
    s = size / _REF
    rng = np.random.default_rng(spec.seed)
    rgb = _DRAW[spec.kind](spec, rng, size, s).astype(np.float32)
    # plain-weave grain and a little yarn unevenness, strongest on flat colours
    px = np.arange(size, dtype=np.float32) * np.float32(2 * np.pi / max(3.0 * s, 2.0))
    weave = np.sin(px)[None, :] * np.sin(px)[:, None]
    noise = rng.standard_normal((size, size)).astype(np.float32)
    amp = 0.05 if spec.kind in ("solid", "melange", "knit") else 0.03
    grain = 1.0 + amp * (0.6 * weave + 0.5 * noise)
    return _to_u8(rgb * grain[..., None])


# ------------------------------------------------------------------------------------------- photos


def load_photo_textures(folder: str | os.PathLike) -> tuple[list[tuple[str, np.ndarray]], list[tuple[str, str]]]:
    """Load texture photos (any size) from a folder, skipping unreadable files.

    Args:
        folder: a folder of images (not searched recursively); files are taken in name order.

    Returns:
        ``(photos, skipped)``: ``photos`` is a list of ``(texture_id, (H, W, 3) uint8 RGB)`` with ids
        ``photo:<file name>``; ``skipped`` lists ``(file name, reason)`` for each image file that could
        not be decoded.

    Raises:
        FileNotFoundError: ``folder`` does not exist, is not a folder, has no image files, or none of them
            could be read.
    """
    root = Path(folder)
    if not root.is_dir():
        raise MissingFileError(f"texture folder {root} does not exist or is not a folder")
    files = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES)
    if not files:
        raise MissingFileError(f"texture folder {root} has no images ({', '.join(PHOTO_SUFFIXES)})")
    photos: list[tuple[str, np.ndarray]] = []
    skipped: list[tuple[str, str]] = []
    for p in files:
        try:
            photos.append((f"photo:{p.name}", read_image(p)))
        except ImageDecodeError as e:
            skipped.append((p.name, str(e)))
    if not photos:
        raise MissingFileError(f"texture folder {root}: none of its {len(files)} images could be read")
    return photos, skipped


# --------------------------------------------------------------------------------------------- bank

class TextureBank:
    """Picks fabrics for masks and serves their images from an LRU cache (``functools.lru_cache``).

    Args:
        specs: procedural textures; default :func:`load_textures` ``()``.
        photos: ``(texture_id, (H, W, 3) uint8)`` pairs as from :func:`load_photo_textures`, or None.
        cache_size: images kept in memory (least recently used dropped first).
        photo_prob: chance that :meth:`pick` draws a photo when photos are given.
        disk_cache: keep each procedural texture, once drawn, in the cache folder
            (``cache_dir()/textures``, 192 KiB a texture at 256 px, 160 MiB for the whole library): drawing
            one takes 6-34 ms (mean about 14), reading it back well under 1 ms, and nearly every sample of a
            synthesis run draws a different texture. Files are keyed by the texture's row, the size and
            :data:`TEXTURE_CODE_VERSION`; an unreadable or unwritable cache is skipped.

    Raises:
        ValueError: an id appears twice, or ``cache_size`` < 1, or ``photo_prob`` outside [0, 1].
    """

    def __init__(
        self,
        specs: Sequence[TextureSpec] | None = None,
        photos: Sequence[tuple[str, np.ndarray]] | None = None,
        cache_size: int = 256,
        photo_prob: float = 0.85,
        disk_cache: bool = True,
    ):
        if cache_size < 1:
            raise ValueError(f"cache_size must be >= 1, got {cache_size}")
        if not 0.0 <= photo_prob <= 1.0:
            raise ValueError(f"photo_prob must be in [0, 1], got {photo_prob}")
        self._specs = {t.texture_id: t for t in (load_textures() if specs is None else specs)}
        self._photos = {pid: img for pid, img in (photos or [])}
        if len(self._specs) != len(specs or self._specs) or len(self._photos) != len(photos or []):
            raise ValueError("duplicate texture ids")
        if set(self._specs) & set(self._photos):
            raise ValueError(f"ids both procedural and photo: {sorted(set(self._specs) & set(self._photos))[:3]}")
        self._by_use = {u: sorted(i for i, t in self._specs.items() if t.use == u) for u in TEXTURE_USES}
        self._all = sorted(self._specs)
        self._photo_ids = sorted(self._photos)
        self._photo_prob = photo_prob
        self._mix = {t: r.texture_mix for t, r in mask_type_rules().items()}
        self._disk_cache = bool(disk_cache)
        self.image = lru_cache(maxsize=cache_size)(self._image)

    def __getstate__(self) -> dict:  # the cache does not travel to another process
        state = dict(self.__dict__)
        state["_cache_size"] = self.image.cache_info().maxsize
        del state["image"]
        return state

    def __setstate__(self, state: dict) -> None:
        cache_size = state.pop("_cache_size")
        self.__dict__.update(state)
        self.image = lru_cache(maxsize=cache_size)(self._image)

    @property
    def ids(self) -> list[str]:
        """All texture ids: procedural (sorted), then photos (sorted)."""
        return self._all + self._photo_ids

    def pick(self, mask_type: str, rng: np.random.Generator) -> str | None:
        """Choose a texture for a mask of ``mask_type``.

        Surgical masks mostly get medical solids, N95/KN95 mostly white/grey/black; cloth and scarves
        the whole fabric library. With photos, a photo is drawn with probability ``photo_prob``.

        Args:
            mask_type: one of :data:`MASK_TYPES`.
            rng: the caller's generator (the only source of randomness).

        Returns:
            A texture id, or None for the template's default look.

        Raises:
            ValueError: unknown ``mask_type``.
        """
        if mask_type not in self._mix:
            raise ValueError(f"unknown mask type {mask_type!r}; expected one of {', '.join(MASK_TYPES)}")
        if self._photo_ids and rng.random() < self._photo_prob:
            return self._photo_ids[int(rng.integers(len(self._photo_ids)))]
        probs = np.array(self._mix[mask_type], np.float64)
        pools: list[list[str]] = [self._by_use[u] for u in TEXTURE_USES]
        for i, pool in enumerate(pools):
            if not pool:
                probs[i] = 0.0
        if probs.sum() == 0:  # an empty library: only the default look is left
            return None
        k = int(rng.choice(4, p=probs / probs.sum()))
        if k == 3:
            return None
        pool = pools[k]
        return pool[int(rng.integers(len(pool)))]

    def _image(self, texture_id: str | None, size: int = _REF) -> np.ndarray | None:
        """The texture's image; :meth:`image` is this, behind an LRU cache of ``cache_size`` entries.

        Args:
            texture_id: an id from :meth:`pick` or :attr:`ids`; None means the default look.
            size: side of the square image; photos are centre-cropped square and resized.

        Returns:
            ``(size, size, 3) uint8`` RGB (read-only; copy before changing it), or None for None.

        Raises:
            KeyError: unknown id.
        """
        if texture_id is None:
            return None
        if texture_id in self._specs:
            img = _cached_texture(self._specs[texture_id], int(size)) if self._disk_cache else None
            if img is None:
                img = render_texture(self._specs[texture_id], int(size))
                if self._disk_cache:
                    _store_texture(self._specs[texture_id], int(size), img)
        elif texture_id in self._photos:
            img = center_square(self._photos[texture_id], int(size))
        else:
            raise KeyError(f"unknown texture id {texture_id!r}")
        img.setflags(write=False)
        return img


def center_square(image: np.ndarray, size: int) -> np.ndarray:
    """The centre square crop of an image, resized to ``size`` x ``size`` (area averaging when shrinking,
    bilinear when enlarging; no resampling when it already has that size).

    Args:
        image: ``(H, W, C)`` or ``(H, W)`` array, any dtype OpenCV resizes (uint8, float32).
        size: output side in pixels.

    Returns:
        ``(size, size, C)`` (or ``(size, size)``) C-contiguous array of ``image``'s dtype.
    """
    h, w = image.shape[:2]
    m = min(h, w)
    crop = image[(h - m) // 2 : (h - m) // 2 + m, (w - m) // 2 : (w - m) // 2 + m]
    if m != size:
        interp = cv2.INTER_AREA if m > size else cv2.INTER_LINEAR
        crop = cv2.resize(crop, (size, size), interpolation=interp)
    return np.ascontiguousarray(crop)


#: Bumped whenever :func:`render_texture` draws differently: part of the disk cache key of :class:`TextureBank`.
TEXTURE_CODE_VERSION = "1"


def _texture_cache_path(spec: TextureSpec, size: int) -> Path:
    import hashlib

    from ... import __version__
    from ...core.resources import cache_dir

    key = hashlib.sha256(f"{TEXTURE_CODE_VERSION}|{__version__}|{size}|{spec!r}".encode()).hexdigest()[:16]
    return cache_dir() / "textures" / f"{spec.texture_id}-{size}-{key}.npy"


def _cached_texture(spec: TextureSpec, size: int) -> np.ndarray | None:
    """The texture as stored by :func:`_store_texture`, or None (absent, unreadable or of the wrong shape)."""
    path = _texture_cache_path(spec, size)
    try:
        img = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None
    if img.shape != (size, size, 3) or img.dtype != np.uint8:
        return None
    return img


def _store_texture(spec: TextureSpec, size: int, img: np.ndarray) -> None:
    import io as _io

    from ...core.io import atomic_write_bytes

    buf = _io.BytesIO()
    np.save(buf, np.ascontiguousarray(img), allow_pickle=False)
    try:
        atomic_write_bytes(_texture_cache_path(spec, size), buf.getvalue())
    except OSError:  # a read-only or full cache folder only costs speed
        pass
