"""Light a mask like the face it is put on: the skin's low-frequency light, and the contact shade of its edges.

- :func:`skin_light`: the low-frequency luminance of the *skin* around and under the mask. The face's luma is
  blurred by normalised convolution (Knutsson & Westin, CVPR 1993: ``G * (w luma) / G * w``) over a skin
  weight ``w``: inside the face outline (jaw and brow landmarks), without the eyes, brows, nostrils and
  mouth. A plain blur of the luma under the mask (renderer 1 and 2) carries the dark lips, open mouth and
  nostrils into the mask: a ghost of the mouth on the fabric.
- :func:`contact_shade`: where a mask meets the face its fabric turns towards the skin, out of the light:
  a soft darkening along the mask's own top edge (on the nose and cheeks) and along its bottom edge (where
  it turns under the chin). It is drawn on the mask, inside its hole, never on the skin around it, so the
  binary hole stays exactly the changed pixels and ``masked == original`` outside it.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["CONTACT_BOTTOM", "CONTACT_TOP", "contact_shade", "skin_light", "skin_weight"]

#: ``(depth, width)`` of the contact shade along the top edge: at the edge the mask is ``1 - depth`` as
#: bright, falling off as ``exp(-d / (width * jaw width))``.
CONTACT_TOP = (0.20, 0.022)
#: Same along the bottom edge, where the mask turns under the chin (wider: the turn is gradual).
CONTACT_BOTTOM = (0.22, 0.045)

_FEATURES = (range(36, 42), range(42, 48), range(48, 60), range(31, 36))  # eyes, mouth, nostrils


def _jaw_width(landmarks: np.ndarray) -> float:
    return float(np.hypot(*(landmarks[16] - landmarks[0])))


def skin_weight(shape: tuple[int, int], landmarks: np.ndarray) -> np.ndarray:
    """The skin of a face: 1 inside the outline (hull of the jaw and brows), 0 on eyes, brows, nostrils, mouth.

    Args:
        shape: ``(H, W)`` of the image.
        landmarks: ``(68, 2)`` iBUG landmarks, pixels.

    Returns:
        ``(H, W) float32`` in {0, 1}.
    """
    lm = np.asarray(landmarks, np.float64)
    w = np.zeros(shape, np.uint8)
    cv2.fillConvexPoly(w, cv2.convexHull(np.round(lm[:27] * 16).astype(np.int32)), 1, cv2.LINE_8, 4)
    grow = max(1, int(round(0.035 * _jaw_width(lm))))
    for idx in _FEATURES:
        cv2.fillConvexPoly(w, cv2.convexHull(np.round(lm[list(idx)] * 16).astype(np.int32)), 0, cv2.LINE_8, 4)
    for a, b in ((17, 22), (22, 27)):  # brows: a thick polyline
        cv2.polylines(w, [np.round(lm[a:b] * 16).astype(np.int32)], False, 0, 2 * grow, cv2.LINE_8, 4)
    features = (w == 0).astype(np.uint8)
    inside = np.zeros(shape, np.uint8)
    cv2.fillConvexPoly(inside, cv2.convexHull(np.round(lm[:27] * 16).astype(np.int32)), 1, cv2.LINE_8, 4)
    features = cv2.dilate(features, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1)))
    return (inside.astype(bool) & ~features.astype(bool)).astype(np.float32)


def skin_light(face: np.ndarray, landmarks: np.ndarray, sigma: float = 0.06, step: int = 4) -> np.ndarray:
    """Low-frequency luminance of the skin, extended smoothly under the features and past the outline.

    The normalised convolution runs at ``1 / step`` of the resolution (area-averaged down, numerator and
    denominator brought back up bilinearly and divided at full resolution): the result has no detail finer
    than ``sigma`` (15 px at 256 px), so 4 x 4 fewer pixels to blur are enough (renderer 4). On 38 CelebA
    faces at 256 px the light relative to its median over the hole moved by 0.2 % (median of each face's
    largest change inside the hole); the largest change, 47 %, was on a scarf far down the neck where
    both the full- and the low-resolution blur only extrapolate from distant skin.

    Args:
        face: ``(H, W, 3) uint8`` RGB.
        landmarks: ``(68, 2)`` landmarks, ``face`` pixels.
        sigma: Gaussian sigma as a share of the image's longer side.
        step: downsampling factor (1: full resolution).

    Returns:
        ``(H, W) float32`` luma in [0, 255]; where no skin is near (weight below 1 % of its peak) the skin's mean.
    """
    luma = cv2.cvtColor(face, cv2.COLOR_RGB2GRAY).astype(np.float32)
    h, w = luma.shape
    weight = skin_weight(face.shape[:2], landmarks)
    s = sigma * max(h, w)
    if weight.sum() < 16:
        return cv2.GaussianBlur(luma, (0, 0), s)
    mean = float((luma * weight).sum() / weight.sum())
    step = max(1, min(int(step), int(s // 2)))  # the blur keeps at least 2 px of sigma at low resolution
    small = (max(1, w // step), max(1, h // step))
    wl = cv2.resize(luma * weight, small, interpolation=cv2.INTER_AREA) if step > 1 else luma * weight
    ws = cv2.resize(weight, small, interpolation=cv2.INTER_AREA) if step > 1 else weight
    num = cv2.GaussianBlur(wl, (0, 0), s / step)
    den = cv2.GaussianBlur(ws, (0, 0), s / step)
    if step > 1:  # both are smooth: bring them back up, divide and test at full resolution
        num = cv2.resize(num, (w, h), interpolation=cv2.INTER_LINEAR)
        den = cv2.resize(den, (w, h), interpolation=cv2.INTER_LINEAR)
    near = den > 0.01 * float(den.max())
    return np.where(near, num / np.maximum(den, 1e-6), mean).astype(np.float32)


def contact_shade(alpha: np.ndarray, landmarks: np.ndarray, image_bottom: int | None = None) -> np.ndarray:
    """Multiplicative shade of the mask along its top and bottom edges (column by column).

    The top edge of a column is its first row with ``alpha > 0.5``, the bottom edge its last; a column
    whose mask reaches the image's bottom row (a scarf) has no bottom edge.

    Args:
        alpha: ``(H, W) float32`` the warped mask's coverage (the whole image or a window of it).
        landmarks: ``(68, 2)`` landmarks (their jaw width sets the shade's width).
        image_bottom: the row of ``alpha`` that is the image's last row (default ``H - 1``; for a window).

    Returns:
        ``(H, W) float32`` factor in [1 - max depth, 1]; 1 where ``alpha <= 0.5`` columns have no mask.
    """
    h, w = alpha.shape
    on = alpha > 0.5
    out = np.ones((h, w), np.float32)
    cols = np.nonzero(on.any(0))[0]
    if len(cols) == 0:
        return out
    jw = _jaw_width(np.asarray(landmarks, np.float64))
    sub = on[:, cols]
    top = sub.argmax(0)
    bottom = h - 1 - sub[::-1].argmax(0)
    y = np.arange(h, dtype=np.float32)[:, None]
    (dt, wt), (db, wb) = CONTACT_TOP, CONTACT_BOTTOM
    shade = 1.0 - dt * np.exp(-np.clip(y - top, 0, None) / (wt * jw))
    lower = 1.0 - db * np.exp(-np.clip(bottom - y, 0, None) / (wb * jw))
    shade *= np.where(bottom < (h - 1 if image_bottom is None else image_bottom), lower, 1.0)
    out[:, cols] = shade.astype(np.float32)
    return out
