"""Put a rendered mask on a face: warp it onto the face's anchor points, light it with the face's own
shading, give it the photo's sharpness and noise and alpha-composite it (:func:`put_mask`, built from
:func:`face_shading`, :mod:`maskbench.data.masks.degrade` and :func:`composite`)."""

from __future__ import annotations

import cv2
import numpy as np

from .degrade import FACE_RING, bbox, match_face_statistics, match_jpeg, soften_alpha
from .light import contact_shade, skin_light
from .warp import PiecewiseAffineWarp

__all__ = ["FAR_SIDE_YAW", "clip_far_side", "composite", "face_shading", "mask_layer", "put_mask"]

#: Above this head yaw (degrees, :func:`maskbench.faces.landmarks.estimate_yaw`) the far side of the mask is clipped at
#: the face outline: the 2-D warp of a turned head otherwise carries the mask's (or scarf's) far edge past the
#: cheek into the background.
FAR_SIDE_YAW = 40.0


def put_mask(
    face: np.ndarray,
    rgb: np.ndarray,
    alpha: np.ndarray,
    warp: PiecewiseAffineWarp,
    dst_points: np.ndarray,
    rng: np.random.Generator | None = None,
    *,
    match_face: bool = True,
    landmarks: np.ndarray | None = None,
    jpeg: tuple[float, float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Warp a mask rendered in the canonical frame onto a face, light it, match it to the photo, composite it.

    Steps: piecewise-affine warp of the premultiplied RGBA; anti-aliased outline
    (:func:`~maskbench.data.masks.degrade.soften_alpha`, never growing the hole); the face's shading
    (:func:`face_shading`: with ``landmarks``, the light of the skin only, :func:`~maskbench.data.masks.light.skin_light`,
    and the contact shade along the mask's top and bottom edges, :func:`~maskbench.data.masks.light.contact_shade`);
    the face's sharpness and noise (:func:`~maskbench.data.masks.degrade.match_face_statistics`);
    "over" composite (:func:`composite`); with ``jpeg``, the source photo's JPEG artefacts on the hole
    (:func:`~maskbench.data.masks.degrade.match_jpeg`). With ``landmarks``, the far side of a head turned more than
    :data:`FAR_SIDE_YAW` is cut at the face outline (:func:`clip_far_side`). Only hole pixels change.

    Args:
        face: ``(H, W, 3) uint8`` RGB.
        rgb: ``(S, S, 3) float32`` mask colour in [0, 1] (:func:`maskbench.data.masks.render_template`).
        alpha: ``(S, S) float32`` coverage in [0, 1].
        warp: the warp of the template's anchor set, built on its canonical points at size ``S``.
        dst_points: ``(K, 2)`` the anchor set evaluated on the face's landmarks, ``face`` pixels.
        rng: the sample's generator, for the sensor noise (None: no noise).
        match_face: False skips the outline softening and the sharpness/noise matching (the output of
            renderer version 1).
        landmarks: ``(68, 2)`` the face's landmarks, ``face`` pixels; None lights the mask with the plain
            blurred luma under it and draws no contact shade (renderer versions 1 and 2).
        jpeg: ``(quality, scale)``: the source photo's JPEG quality (:func:`maskbench.core.io.jpeg_quality`) and
            the crop's pixels per source pixel; None (a lossless source) adds no JPEG artefacts.

    Returns:
        ``(masked, hole)``: ``(H, W, 3) uint8`` and ``(H, W) bool``, as :func:`composite`.
    """
    colour, coverage = mask_layer(face, rgb, alpha, warp, dst_points, rng, match_face=match_face, landmarks=landmarks)
    masked, hole = composite(face, colour * coverage[..., None], coverage)
    if jpeg is not None and match_face:
        masked = match_jpeg(masked, hole, *jpeg)
    return masked, hole


def mask_layer(
    face: np.ndarray,
    rgb: np.ndarray,
    alpha: np.ndarray,
    warp: PiecewiseAffineWarp,
    dst_points: np.ndarray,
    rng: np.random.Generator | None = None,
    *,
    match_face: bool = True,
    landmarks: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The mask as it will be composited on ``face``: :func:`put_mask` without the final :func:`composite`.

    Args, ``match_face`` and ``landmarks``: as :func:`put_mask`.

    Returns:
        ``(colour, alpha)``: ``(H, W, 3) float32`` lit colour in [0, 1] (not premultiplied) and
        ``(H, W) float32`` coverage in [0, 1]; alpha is 0 where it would round to 0 in 8 bits.
    """
    h, w = face.shape[:2]
    colour_full = np.zeros((h, w, 3), np.float32)
    alpha_full = np.zeros((h, w), np.float32)
    box = bbox(alpha > 0)
    if box is None:
        return colour_full, alpha_full
    # only the template's drawn box is premultiplied and sampled (the warp is told where it sits)
    sy0, sy1, sx0, sx1 = box
    a = alpha[sy0:sy1, sx0:sx1, None]
    premult = np.concatenate([rgb[sy0:sy1, sx0:sx1] * a, a], axis=2).astype(np.float32)
    (y0, y1, x0, x1), warped = warp.window(premult, dst_points, (h, w), (sx0, sy0, sx1, sy1), origin=(sx0, sy0))
    if y1 <= y0 or x1 <= x0:
        return colour_full, alpha_full
    # everything below works on the warped box grown by the face ring the noise/sharpness match reads
    # (and a few px for the outline blur): the same pixels as on the whole image, a fraction of the work
    pad = int(round(FACE_RING * max(h, w))) + 12
    wy0, wy1, wx0, wx1 = max(y0 - pad, 0), min(y1 + pad, h), max(x0 - pad, 0), min(x1 + pad, w)
    win = (slice(wy0, wy1), slice(wx0, wx1))
    layer = np.zeros((wy1 - wy0, wx1 - wx0, 4), np.float32)
    layer[y0 - wy0 : y1 - wy0, x0 - wx0 : x1 - wx0] = warped
    w_alpha = np.clip(layer[..., 3], 0.0, 1.0)
    lm = None if landmarks is None else np.asarray(landmarks, np.float64) - (wx0, wy0)
    if lm is not None:
        w_alpha = clip_far_side(w_alpha, lm)
    shading = face_shading(face, w_alpha > 0.5, landmarks=landmarks, window=win)
    if lm is not None:
        shading = shading * contact_shade(w_alpha, lm, image_bottom=h - 1 - wy0)
    colour = np.clip(layer[..., :3] / np.maximum(w_alpha, 1e-6)[..., None] * shading[..., None], 0.0, 1.0)
    if match_face:
        w_alpha = soften_alpha(w_alpha)
    w_alpha[w_alpha < 0.5 / 255.0] = 0.0  # what rounds to 0 in 8 bits is outside the hole
    if match_face:
        colour, _ = match_face_statistics(face[win], colour, w_alpha, rng, ring=FACE_RING, side=max(h, w))
    colour_full[win] = colour
    alpha_full[win] = w_alpha
    return colour_full, alpha_full


def clip_far_side(alpha: np.ndarray, landmarks: np.ndarray, yaw_limit: float = FAR_SIDE_YAW) -> np.ndarray:
    """On a head turned more than ``yaw_limit`` degrees, cut the mask's far side at the face outline.

    The far side is the one the nose tip points to; there, above the chin, coverage outside
    :func:`maskbench.faces.landmarks.face_outline` (drawn anti-aliased) is removed. Below the chin (a scarf on the
    neck) and on the near side nothing changes.

    Args:
        alpha: ``(H, W) float32`` coverage in [0, 1].
        landmarks: ``(68, 2)`` landmarks, pixels.
        yaw_limit: degrees.

    Returns:
        ``(H, W) float32`` coverage, ``<= alpha`` everywhere (``alpha`` itself when the head is not turned that far).
    """
    from ...faces.landmarks import estimate_yaw, face_outline

    yaw = estimate_yaw(landmarks)
    if abs(yaw) <= yaw_limit:
        return alpha
    lm = np.asarray(landmarks, np.float64)
    h, w = alpha.shape
    inside = np.zeros((h, w), np.uint8)
    cv2.fillPoly(inside, [np.round(face_outline(lm) * 16).astype(np.int32)], 255, cv2.LINE_AA, 4)
    axis = (lm[16] - lm[0]) / max(float(np.hypot(*(lm[16] - lm[0]))), 1e-6)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    far = np.sign(yaw) * ((xs - lm[30, 0]) * axis[0] + (ys - lm[30, 1]) * axis[1]) > 0
    # "above the chin": on the face's side of the line through the chin along the jaw axis
    above = (ys - lm[8, 1]) * axis[0] - (xs - lm[8, 0]) * axis[1] < 0
    keep = np.where(far & above, inside.astype(np.float32) / 255.0, 1.0)
    return np.minimum(alpha, keep).astype(np.float32)


def face_shading(
    face: np.ndarray,
    region: np.ndarray,
    strength: float = 0.8,
    landmarks: np.ndarray | None = None,
    window: tuple[slice, slice] | None = None,
) -> np.ndarray:
    """Low-frequency shading of a face, to light a mask drawn over it.

    The face's luminance (Rec. 601 luma) is blurred and divided by its median over ``region``, so a mask
    keeps its own colour on average but darkens where the face is in shadow and brightens where it is lit.
    With ``landmarks`` only the skin is blurred (:func:`~maskbench.data.masks.light.skin_light`: no ghost of the
    mouth or nostrils on the mask); without, all of the luma (Gaussian, sigma = 4% of the image side).
    ``strength`` blends towards 1 (no shading).

    Args:
        face: ``(H, W, 3) uint8`` RGB.
        region: ``(H, W) bool``, the pixels the mask covers (``window``'s shape when a window is given).
        strength: in [0, 1].
        landmarks: optional ``(68, 2)`` landmarks, ``face`` pixels.
        window: optional ``(rows, cols)`` slices: the light is computed on the whole face, returned there only.

    Returns:
        ``(H, W) float32`` (or the window's shape) multiplicative factor, clipped to [0.45, 1.4].
    """
    if landmarks is not None:
        blurred = skin_light(face, landmarks) + 1.0
    else:
        luma = cv2.cvtColor(face, cv2.COLOR_RGB2GRAY).astype(np.float32) + 1.0
        blurred = cv2.GaussianBlur(luma, (0, 0), 0.04 * max(face.shape[:2]))
    if window is not None:
        blurred = blurred[window]
    ref = float(np.median(blurred[region])) if region.any() else float(blurred.mean())
    return np.clip(1.0 + strength * (blurred / ref - 1.0), 0.45, 1.4).astype(np.float32)


def composite(face: np.ndarray, premultiplied: np.ndarray, alpha: np.ndarray, shading: np.ndarray | None = None):
    """Alpha-composite a warped mask over a face ("over" operator, Porter & Duff 1984).

    Alpha is quantised to 8 bits first; the binary occlusion mask is exactly ``alpha_8bit > 0``, and
    every pixel outside it equals the face byte for byte. Edge pixels are blended
    ``a * colour + (1 - a) * face``, never added, so edges carry no bright or dark fringe.

    Args:
        face: ``(H, W, 3) uint8`` RGB.
        premultiplied: ``(H, W, 3) float32``, mask colour times alpha, colour in [0, 1].
        alpha: ``(H, W) float32`` coverage in [0, 1].
        shading: optional ``(H, W) float32`` factor applied to the mask colour (:func:`face_shading`).

    Returns:
        ``(masked, hole)``: ``(H, W, 3) uint8`` composite and ``(H, W) bool`` occlusion mask.
    """
    a8 = np.clip(np.rint(alpha * 255.0), 0, 255).astype(np.uint8)
    hole = a8 > 0
    out = face.copy()
    box = bbox(hole)
    if box is None:
        return out, hole
    win = (slice(box[0], box[1]), slice(box[2], box[3]))  # work on the hole's box only
    h = hole[win]
    a = a8[win].astype(np.float32)[..., None] / 255.0
    colour = premultiplied[win] / np.maximum(alpha[win], 1e-6)[..., None]
    if shading is not None:
        colour = colour * shading[win][..., None]
    colour = np.clip(colour, 0.0, 1.0) * 255.0
    f = face[win].astype(np.float32)
    blended = np.clip(np.rint(a * colour + (1.0 - a) * f), 0, 255).astype(np.uint8)
    out[win] = np.where(h[..., None], blended, face[win])
    return out, hole
