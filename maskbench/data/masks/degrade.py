"""Make a drawn mask as soft and as noisy as the photo it is put on.

CelebA crops are upsampled and JPEG-compressed, so the face is soft and a little noisy while a rendered
mask is crisp and clean; a classifier (and a person) sees the difference at once. :func:`match_face_statistics`
estimates the face's sharpness and noise around the hole and gives the mask layer the same:

- sharpness: :func:`sharpness`, a re-blur ratio (after Crété-Roffet et al., "The blur effect", SPIE 2007):
  mean gradient magnitude of the image over that of the image blurred once more (Gaussian, sigma 1 px).
  A soft image loses little to the extra blur (ratio near 1), a crisp one a lot; the ratio depends far
  less on the content's contrast than the gradient energy itself, so a plain mask and a skin patch can
  be compared. The mask layer is blurred with the Gaussian sigma (from :data:`BLUR_SIGMAS`) whose result
  is closest to the face's ratio.
- noise: :func:`noise_sigma`, Immerkær's estimator ("Fast noise variance estimation", CVIU 1996; the
  Laplacian-difference kernel), on the face's luminance; that much Gaussian luminance noise (one field
  for the three channels), drawn from the sample's generator, is added to the mask layer.

- JPEG: :func:`match_jpeg`, the blocking and ringing the source photo's JPEG compression left on the face,
  given to the mask too: the region around the hole is taken back to the photo's own resolution, encoded
  at the photo's JPEG quality (:func:`maskbench.core.io.jpeg_quality`) and decoded, and the compression error
  (decoded minus encoded), brought back to the crop's size, is added to the hole's pixels (renderer 4).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

__all__ = ["BLUR_SIGMAS", "FACE_RING", "match_face_statistics", "match_jpeg", "noise_sigma", "sharpness", "soften_alpha"]

#: Width of the face ring around the hole that the sharpness and noise are read from, share of the image side.
FACE_RING = 0.06

#: Below this many crop pixels per source pixel the source's JPEG blocks are averaged away: no JPEG match.
MIN_JPEG_SCALE = 1.1

#: Candidate Gaussian sigmas (px) for the mask layer; 0 keeps it as drawn.
BLUR_SIGMAS = (0.0, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.7, 2.0, 2.5)

_IMMERKAER = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)


def bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """``(y0, y1, x0, x1)``, the bounding box (end-exclusive) of a 2-D boolean array's True pixels; None if none."""
    rows = np.flatnonzero(mask.any(1))
    if len(rows) == 0:
        return None
    cols = np.flatnonzero(mask.any(0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def luma(image: np.ndarray) -> np.ndarray:
    """Rec. 601 luma of an ``(H, W, 3)`` RGB image (uint8, or float in [0, 255]) as ``(H, W) float32``."""
    return cv2.cvtColor(np.asarray(image, np.float32), cv2.COLOR_RGB2GRAY)


def _grad(gray: np.ndarray) -> np.ndarray:
    gx = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3, scale=0.125)
    gy = cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3, scale=0.125)
    return cv2.magnitude(gx, gy)


def sharpness(gray: np.ndarray, region: np.ndarray) -> float:
    """Re-blur sharpness ratio of ``gray`` over ``region``: mean |grad| / mean |grad of G_1 * gray|.

    Args:
        gray: ``(H, W) float32`` luminance in [0, 255].
        region: ``(H, W) bool``, where to average (at least one pixel).

    Returns:
        the ratio, >= about 1 (1: already as soft as one more sigma-1 blur makes it); 1.0 for a flat region.
    """
    g = _grad(gray)[region].mean()
    g1 = _grad(cv2.GaussianBlur(gray, (0, 0), 1.0))[region].mean()
    return float(g / g1) if g1 > 1e-3 else 1.0


def noise_sigma(gray: np.ndarray, region: np.ndarray | None = None) -> float:
    """Standard deviation of white Gaussian noise in ``gray`` (Immerkær 1996), in grey levels.

    Args:
        gray: ``(H, W) float32`` luminance in [0, 255].
        region: optional ``(H, W) bool``, the pixels to estimate on (default: all but the border).

    Returns:
        sigma >= 0.
    """
    r = np.abs(cv2.filter2D(gray, cv2.CV_32F, _IMMERKAER, borderType=cv2.BORDER_REFLECT))
    if region is None:
        region = np.zeros(gray.shape, bool)
        region[1:-1, 1:-1] = True
    return float(math.sqrt(math.pi / 2.0) * r[region].mean() / 6.0) if region.any() else 0.0


def soften_alpha(alpha: np.ndarray, sigma: float = 0.6) -> np.ndarray:
    """Anti-alias a mask's outline without growing it: ``min(alpha, G_sigma * alpha)``.

    The blur brings fractional coverage to the pixels just inside the edge; the minimum keeps every pixel
    that was transparent transparent, so the binary hole can only shrink and the face outside stays as it was.

    Args:
        alpha: ``(H, W) float32`` coverage in [0, 1].
        sigma: Gaussian sigma in px.

    Returns:
        ``(H, W) float32`` in [0, 1], <= ``alpha`` everywhere.
    """
    if sigma <= 0:
        return alpha
    return np.minimum(alpha, cv2.GaussianBlur(alpha, (0, 0), sigma)).astype(np.float32)


def _closest_blur(log_ratio) -> int:
    """Index into :data:`BLUR_SIGMAS` whose ``|log_ratio(sigma)|`` is smallest, by bisection.

    ``log_ratio(sigma)`` (log of the blurred mask's sharpness over the face's) falls as sigma grows, so the
    best sigma is one of the two around its zero crossing (or an end of the list): 4-5 evaluations instead
    of 10 (renderer 4).
    """
    memo: dict[int, float] = {}

    def f(i: int) -> float:
        if i not in memo:
            memo[i] = log_ratio(BLUR_SIGMAS[i])
        return memo[i]

    lo, hi = 0, len(BLUR_SIGMAS) - 1
    while hi - lo > 1:  # the crossing lies in [lo, hi] (or beyond an end, which the search then ends at)
        mid = (lo + hi) // 2
        if f(mid) > 0:
            lo = mid
        else:
            hi = mid
    return lo if abs(f(lo)) <= abs(f(hi)) else hi


def match_face_statistics(
    face: np.ndarray,
    colour: np.ndarray,
    alpha: np.ndarray,
    rng: np.random.Generator | None,
    ring: float = FACE_RING,
    side: int | None = None,
) -> tuple[np.ndarray, dict[str, float]]:
    """Blur and add noise to a mask's colour layer so it matches the face around it.

    The face statistics come from a ring outside the hole (``ring`` x the image side wide); the mask's own
    sharpness from the hole eroded by 2 px. Blurring is normalised by alpha (premultiplied blur divided by
    blurred alpha), so no face or black bleeds into the mask's edge.

    Args:
        face: ``(H, W, 3) uint8`` RGB.
        colour: ``(H, W, 3) float32`` mask colour in [0, 1] (shaded, not premultiplied); used where alpha > 0.
        alpha: ``(H, W) float32`` coverage in [0, 1].
        rng: the sample's generator, for the noise; None adds no noise.
        ring: width of the face ring, as a share of the image's longer side.
        side: that longer side in pixels when the arrays are a window of a larger image (default: theirs).

    Returns:
        ``(colour, stats)``: the new ``(H, W, 3) float32`` colour in [0, 1] (changed only where alpha > 0) and
        ``{"face_sharpness", "blur_sigma", "noise_sigma"}``.
    """
    hole = alpha > 0
    box = bbox(hole)
    stats = {"face_sharpness": 1.0, "blur_sigma": 0.0, "noise_sigma": 0.0}
    if box is None:
        return colour, stats
    h, w = alpha.shape
    r = max(2, int(round(ring * (max(h, w) if side is None else side))))
    pad = r + 8
    win = (slice(max(box[0] - pad, 0), min(box[1] + pad, h)), slice(max(box[2] - pad, 0), min(box[3] + pad, w)))
    hw, aw, cw = hole[win], alpha[win], colour[win]
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    around = cv2.dilate(hw.astype(np.uint8), k).astype(bool) & ~hw
    inner = cv2.erode(hw.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    if not around.any() or not inner.any():
        return colour, stats
    face_gray = luma(face[win])
    target = sharpness(face_gray, around)
    sigma_n = noise_sigma(face_gray, around)
    # one noise field for the three channels: luminance noise, as in a JPEG with subsampled chroma
    noise = rng.standard_normal(hw.shape).astype(np.float32) * sigma_n if rng is not None else 0.0

    def blurred(image: np.ndarray, s: float) -> np.ndarray:
        if s <= 0:
            return image
        a_s = cv2.GaussianBlur(aw, (0, 0), s)
        b = cv2.GaussianBlur(image * (aw[..., None] if image.ndim == 3 else aw), (0, 0), s)
        return b / np.maximum(a_s, 1e-6)[..., None] if image.ndim == 3 else b / np.maximum(a_s, 1e-6)

    # the search runs on luminance only (blur and luma are both linear), the chosen blur on the colour once
    mask_gray = luma(cw * 255.0)
    sigma_b = BLUR_SIGMAS[_closest_blur(
        lambda s: math.log(sharpness(np.where(hw, blurred(mask_gray, s) + noise, mask_gray), inner) / target))]
    result = blurred(cw, sigma_b) + (noise[..., None] / 255.0 if rng is not None else 0.0)
    out = colour.copy()
    out[win] = np.where(hw[..., None], np.clip(result, 0.0, 1.0), cw)
    stats.update(face_sharpness=target, blur_sigma=float(sigma_b), noise_sigma=sigma_n)
    return out, stats


def match_jpeg(masked: np.ndarray, hole: np.ndarray, quality: float, scale: float) -> np.ndarray:
    """Give the pixels of ``hole`` the JPEG artefacts of the photo the face was cropped from.

    The hole's box (grown by 8 source pixels) is resized to the source's resolution (area), JPEG-encoded at
    ``quality`` and decoded (OpenCV's libjpeg, 4:2:0 chroma as most cameras and CelebA), and the difference
    the codec made is resized back (bilinear) and added inside the hole. The extra blur of a down-up
    resize is not applied (the mask already has the face's sharpness, :func:`match_face_statistics`),
    only the codec's error. Pixels outside ``hole`` are not touched.

    Args:
        masked: ``(H, W, 3) uint8`` RGB composite.
        hole: ``(H, W) bool`` the occlusion mask.
        quality: the source's JPEG quality, 1-100 (:func:`maskbench.core.io.jpeg_quality`).
        scale: crop pixels per source pixel (the alignment's scale); below :data:`MIN_JPEG_SCALE` nothing
            is done.

    Returns:
        ``(H, W, 3) uint8``, a new array (``masked`` itself when nothing is done).
    """
    box = bbox(hole)
    if box is None or scale < MIN_JPEG_SCALE or not 1 <= quality <= 100:
        return masked
    h, w = hole.shape
    pad = int(math.ceil(8 * scale))
    y0, y1, x0, x1 = max(box[0] - pad, 0), min(box[1] + pad, h), max(box[2] - pad, 0), min(box[3] + pad, w)
    region = masked[y0:y1, x0:x1]
    small_size = (max(8, int(round((x1 - x0) / scale))), max(8, int(round((y1 - y0) / scale))))
    small = cv2.resize(region, small_size, interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", small[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(round(quality))])
    if not ok:
        return masked
    decoded = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
    error = decoded.astype(np.float32) - small.astype(np.float32)
    error = cv2.resize(error, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
    out = masked.copy()
    hw = hole[y0:y1, x0:x1]
    out[y0:y1, x0:x1][hw] = np.clip(np.rint(region[hw].astype(np.float32) + error[hw]), 0, 255).astype(np.uint8)
    return out
