"""Realism faults of issue 10 on real CelebA faces: the mask is as sharp as the face around it, its outline
is anti-aliased (fractional alpha) without leaving the binary hole, scarves drape below the chin and wrap
back along the jaw, the mask is lit by the skin (no ghost of the mouth) and shaded along its top edge, it
carries the photo's JPEG artefacts and its texture is foreshortened where the fabric turns away."""

from __future__ import annotations

import functools

import cv2
import numpy as np
import pytest

import maskbench.data.synth as synth
from maskbench.core.io import encode_png, jpeg_quality
from maskbench.data.format import MASK_TYPES
from maskbench.data.masks import mask_layer, put_mask
from maskbench.data.masks.degrade import luma, match_jpeg, sharpness, soften_alpha
from maskbench.data.sources import resolve_source
from maskbench.data.synth import MaskSynthesizer, SynthConfig, sample_seed

#: Tolerances on log(sharpness inside the hole / sharpness of the face around it), over 8 faces x 5 types.
#: Measured (re-blur ratio, see maskbench.data.masks.degrade.sharpness): renderer 1 (crisp mask) mean +0.205,
#: median |.| 0.205 (max |.| 0.757); renderer 2 mean -0.033, median |.| 0.024 (max |.| 0.197).
MEAN_LOG_RATIO_TOL = 0.10
MEDIAN_ABS_LOG_RATIO_TOL = 0.10


@pytest.fixture(scope="module")
def faces(celeba_dir):
    """``(synthesizer, [(source_id, face, landmarks)])``: the first 8 usable CelebA faces, aligned."""
    syn = MaskSynthesizer(SynthConfig())
    out = []
    for item in resolve_source("celeba", celeba_dir).items[:16]:
        try:
            face, lm, _, _ = syn.prepare(item)
        except (synth.NoFaceError, synth.FacePoseError):
            continue
        out.append((item.source_id, face, lm))
        if len(out) == 8:
            break
    assert len(out) == 8
    return syn, out


def _regions(hole: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The hole eroded by 3 px, and a ring of face 3..15 px outside it."""
    h = hole.astype(np.uint8)
    inner = cv2.erode(h, np.ones((7, 7), np.uint8)).astype(bool)
    near = cv2.dilate(h, np.ones((5, 5), np.uint8)).astype(bool)
    ring = cv2.dilate(h, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (31, 31))).astype(bool) & ~near
    return inner, ring


def _log_ratios(faces, monkeypatch, match_face: bool) -> np.ndarray:
    syn, items = faces
    monkeypatch.setattr(synth, "put_mask", functools.partial(put_mask, match_face=match_face))
    out = []
    for sid, face, lm in items:
        for k, mask_type in enumerate(MASK_TYPES):
            res = syn.mask_face(face, lm, np.random.default_rng(sample_seed(0, sid, k)), mask_type)
            assert np.array_equal(res["masked"][~res["hole"]], face[~res["hole"]])
            inner, ring = _regions(res["hole"])
            gray = luma(res["masked"])
            out.append(np.log(sharpness(gray, inner) / sharpness(gray, ring)))
    return np.array(out)


@pytest.mark.slow
def test_mask_is_as_sharp_as_the_face_around_it(faces, monkeypatch):
    r = _log_ratios(faces, monkeypatch, match_face=True)
    assert abs(r.mean()) <= MEAN_LOG_RATIO_TOL, r.round(2)
    assert np.median(np.abs(r)) <= MEDIAN_ABS_LOG_RATIO_TOL, r.round(2)


@pytest.mark.slow
def test_sharpness_check_catches_a_crisp_mask(faces, monkeypatch):
    """The check has teeth: the unmatched mask (renderer version 1) fails it."""
    r = _log_ratios(faces, monkeypatch, match_face=False)
    assert r.mean() > MEAN_LOG_RATIO_TOL and np.median(np.abs(r)) > MEDIAN_ABS_LOG_RATIO_TOL, r.round(2)


def _layers(faces, match_face: bool):
    syn, items = faces
    for sid, face, lm in items:
        for k, mask_type in enumerate(MASK_TYPES):
            rng = np.random.default_rng(sample_seed(0, sid, k))
            m = syn.draw_mask(lm, rng, mask_type)
            args = (face, m.rgb, m.alpha, m.warp, m.anchors)
            seed = int(rng.integers(2**32))
            colour, a = mask_layer(*args, np.random.default_rng(seed), match_face=match_face)
            masked, hole = put_mask(*args, np.random.default_rng(seed), match_face=match_face)
            yield face, a, masked, hole


@pytest.mark.slow
def test_outline_alpha_is_fractional_and_zero_outside_the_hole(faces):
    shares = []
    for face, a, masked, hole in _layers(faces, match_face=True):
        a8 = np.rint(a * 255)
        assert np.array_equal(hole, a8 > 0)  # the binary hole is exactly where the mask has any coverage
        assert np.all(a[~hole] == 0)
        assert np.array_equal(masked[~hole], face[~hole])
        outline = hole & ~cv2.erode(hole.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        shares.append((((a8[outline] > 0) & (a8[outline] < 255)).mean(), (a8[outline] >= 230).mean()))
    fractional, opaque = np.array(shares).T
    # renderer 1 on these 40 masks: fractional share min 0.950 (mean 0.983), near-opaque (alpha >= 0.9)
    # outline pixels up to 10.8 % of a mask's outline (hard cuts); renderer 2: 1.000 and at most 0.7 %
    assert fractional.min() >= 0.99, fractional.round(3)
    assert opaque.max() <= 0.02, opaque.round(3)


def test_soften_alpha_never_grows_the_mask():
    a = np.zeros((40, 40), np.float32)
    cv2.circle(a, (20, 20), 12, 1.0, -1)
    s = soften_alpha(a)
    assert np.all(s <= a) and np.all(s[a == 0] == 0)
    edge = (a > 0) & ~cv2.erode((a > 0).astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    assert np.all((s[edge] > 0) & (s[edge] < 1))
    assert np.all(s[15:26, 15:26] == 1.0)  # the inside stays opaque


@pytest.mark.slow
def test_matched_mask_is_deterministic_per_sample(faces):
    first = [m for _, _, m, _ in _layers(faces, match_face=True)][:5]
    again = [m for _, _, m, _ in _layers(faces, match_face=True)][:5]
    assert all(np.array_equal(x, y) for x, y in zip(first, again))


# ------------------------------------------------------------------------------------ scarf drape

#: A scarf's lowest row must lie this share of the face height (landmark 27 to chin 8) below the chin, or
#: reach the image's bottom row. On the 8 faces x 4 scarves: renderer 2 and 3 both reach the bottom row.
CHIN_DRAPE = 0.12
#: Along the jaw (rows of landmarks 2-5 and 14-11), the scarf's side edge lies within this share of the jaw
#: width (landmark 0 to 16) of the jaw outline: it wraps back to the ears along the jaw instead of standing
#: out as a wedge. Median offset per face and side (40, faces with |yaw| < 25), worst of them: renderer 2
#: 0.251 (a wedge up to a quarter of the face width past the cheeks), renderer 3 0.036 (median 0.023).
JAW_FOLLOW_TOL = 0.05


def _scarves(faces, per_face: int = 4):
    syn, items = faces
    for sid, face, lm in items:
        for k in range(per_face):
            res = syn.mask_face(face, lm, np.random.default_rng(sample_seed(7, sid, k)), "scarf")
            assert np.array_equal(res["masked"][~res["hole"]], face[~res["hole"]])
            yield lm, res["hole"]


@pytest.mark.slow
def test_scarves_drape_below_the_chin(faces):
    for lm, hole in _scarves(faces):
        chin = lm[8]
        rows = np.nonzero(hole[:, int(chin[0]) - 3 : int(chin[0]) + 4].any(1))[0]
        need = min(chin[1] + CHIN_DRAPE * (chin[1] - lm[27, 1]), hole.shape[0] - 1)
        assert rows.max() >= need, f"scarf stops at row {rows.max()}, chin at {chin[1]:.0f}"


def _jaw_offsets(lm: np.ndarray, hole: np.ndarray) -> list[float]:
    """Per side: the median offset of the scarf's outermost column from the jaw outline, over the rows of
    landmarks 2-5 (14-11), as a share of the jaw width; positive = outside the face."""
    width = float(np.hypot(*(lm[16] - lm[0])))
    out = []
    for jaw, sign in ((lm[2:6], -1.0), (lm[11:15][::-1], 1.0)):
        offs = []
        for y in range(int(np.ceil(jaw[0, 1])), int(jaw[-1, 1])):
            cols = np.nonzero(hole[y])[0]
            if len(cols) == 0:
                offs.append(np.inf)
                continue
            xj = np.interp(y, jaw[:, 1], jaw[:, 0])
            edge = cols.min() if sign < 0 else cols.max()
            offs.append(sign * (edge - xj) / width)
        out.append(float(np.median(offs)))
    return out


@pytest.mark.slow
def test_scarves_wrap_back_along_the_jaw(faces):
    from maskbench.faces.landmarks import estimate_yaw

    offsets = [o for lm, hole in _scarves(faces) if abs(estimate_yaw(lm)) < 25 for o in _jaw_offsets(lm, hole)]
    assert len(offsets) >= 16
    assert np.max(np.abs(offsets)) <= JAW_FOLLOW_TOL, np.round(offsets, 3)


# ------------------------------------------------------------------------------------------- light

#: log(mean mask shading over the mouth / over a ring 2 px to 0.12 jaw widths around it): a dark ghost of
#: the lips (or a bright one of teeth) on the mask. On 24 CelebA faces: renderer 2 (blurred luma under the
#: mask) median |.| 0.020, max 0.193; renderer 3 (skin light, maskbench.data.masks.light) 0.009, max 0.041.
MOUTH_GHOST_TOL = 0.05


def _mouth_ghost(face: np.ndarray, lm: np.ndarray, landmarks) -> float:
    from maskbench.data.masks import face_shading

    mouth = np.zeros(face.shape[:2], np.uint8)
    cv2.fillConvexPoly(mouth, cv2.convexHull(np.round(lm[48:60]).astype(np.int32)), 1)
    k = int(0.12 * np.hypot(*(lm[16] - lm[0])))
    ring = cv2.dilate(mouth, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1))).astype(bool)
    ring &= ~cv2.dilate(mouth, np.ones((5, 5), np.uint8)).astype(bool)
    region = np.zeros(face.shape[:2], np.uint8)
    cv2.fillConvexPoly(region, cv2.convexHull(np.round(lm[[*range(1, 16), 29]]).astype(np.int32)), 1)
    shading = face_shading(face, region.astype(bool), landmarks=landmarks)
    return float(np.log(shading[mouth.astype(bool)].mean() / shading[ring].mean()))


@pytest.mark.slow
def test_mask_light_has_no_ghost_of_the_mouth(faces):
    ghosts = [_mouth_ghost(face, lm, lm) for _, face, lm in faces[1]]
    assert np.max(np.abs(ghosts)) <= MOUTH_GHOST_TOL, np.round(ghosts, 3)


@pytest.mark.slow
def test_ghost_check_catches_a_plain_blur(faces):
    ghosts = [_mouth_ghost(face, lm, None) for _, face, lm in faces[1]]
    assert np.max(np.abs(ghosts)) > MOUTH_GHOST_TOL, np.round(ghosts, 3)


def _edge_contrast(faces, with_landmarks: bool) -> np.ndarray:
    """Per mask: log(mean luma 1-3 px below the mask's top edge / 6-12 px below), columns of its middle half."""
    syn, items = faces
    out = []
    for sid, face, lm in items:
        for k, mask_type in enumerate(MASK_TYPES):
            rng = np.random.default_rng(sample_seed(0, sid, k))
            m = syn.draw_mask(lm, rng, mask_type)
            args = (face, m.rgb, m.alpha, m.warp, m.anchors)
            masked, hole = put_mask(*args, np.random.default_rng(1), landmarks=lm if with_landmarks else None)
            assert np.array_equal(masked[~hole], face[~hole])
            gray = luma(masked)
            cols = np.nonzero(hole.any(0))[0]
            cols = cols[len(cols) // 4 : 3 * len(cols) // 4]
            top = hole[:, cols].argmax(0)
            near = np.mean([gray[t + 1 : t + 4, c].mean() for t, c in zip(top, cols)])
            far = np.mean([gray[t + 6 : t + 13, c].mean() for t, c in zip(top, cols)])
            out.append(np.log(near / far))
    return np.array(out)


@pytest.mark.slow
def test_mask_top_edge_has_a_contact_shade(faces):
    with_shade = _edge_contrast(faces, True)
    without = _edge_contrast(faces, False)
    d = with_shade - without
    # measured: the shade darkens the top band of all 40 masks, by -0.083 in the mean (-0.02 to -0.13)
    assert d.mean() <= -0.05 and (d < 0).all(), np.round(d, 3)


# ---------------------------------------------------------------------------------------- turned heads


def _turned_landmarks() -> np.ndarray:
    """The canonical face turned about 43 degrees to image right: the right half squeezed, the nose moved over."""
    from maskbench.data.masks import canonical_landmarks

    lm = canonical_landmarks(256).astype(np.float64)
    right = lm[:, 0] > 128
    lm[right, 0] = 128 + (lm[right, 0] - 128) * 0.35
    lm[27:36, 0] += 25 * (lm[27:36, 1] - 120) / 40
    return lm


@pytest.mark.parametrize("mask_type", ["scarf", "surgical", "n95"])
def test_far_side_of_a_turned_head_stays_inside_the_outline(mask_type):
    from maskbench.data.masks import (
        PiecewiseAffineWarp,
        canonical_landmarks,
        load_anchor_sets,
        load_templates,
        render_template,
    )
    from maskbench.faces.landmarks import estimate_yaw, face_outline

    lm = _turned_landmarks()
    assert estimate_yaw(lm) > 40
    face = np.full((256, 256, 3), 128, np.uint8)
    inside = np.zeros((256, 256), np.uint8)
    cv2.fillPoly(inside, [np.round(face_outline(lm)).astype(np.int32)], 1)
    inside = cv2.dilate(inside, np.ones((3, 3), np.uint8)).astype(bool)
    far_above = (np.arange(256)[None, :] > lm[30, 0] + 2) & (np.arange(256)[:, None] < lm[8, 1] - 2)
    anchors = load_anchor_sets()
    outside = {}
    for spec in [t for t in load_templates() if t.mask_type == mask_type][:4]:
        rgb, alpha = render_template(spec, None, 256)
        warp = PiecewiseAffineWarp(anchors[spec.anchors].points(canonical_landmarks(256)))
        for landmarks in (None, lm):
            masked, hole = put_mask(face, rgb, alpha, warp, anchors[spec.anchors].points(lm), None, landmarks=landmarks)
            assert np.array_equal(masked[~hole], face[~hole])
            outside.setdefault(landmarks is None, []).append(int((hole & far_above & ~inside).sum()))
    assert max(outside[False]) == 0, outside
    if mask_type == "scarf":  # without the clip the scarf's far edge stands out past the cheek (142 px, 4 scarves)
        assert min(outside[True]) > 20, outside


# ------------------------------------------------------------------------------------- renderer 4


def test_jpeg_quality_reads_the_encoders_quality():
    img = np.random.default_rng(0).integers(0, 256, (48, 48, 3), np.uint8)
    for q in (30, 60, 75, 92):
        data = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, q])[1].tobytes()
        assert abs(jpeg_quality(data) - q) <= 1, q
    assert jpeg_quality(encode_png(img)) is None
    assert jpeg_quality(b"not an image") is None


@pytest.fixture(scope="module")
def photos(celeba_dir):
    """``(synthesizer, [PreparedFace])``: the first 6 usable CelebA faces with their JPEG quality and scale."""
    syn = MaskSynthesizer(SynthConfig())
    out = []
    for item in resolve_source("celeba", celeba_dir).items[:12]:
        try:
            out.append(syn.prepare_photo(item))
        except (synth.NoFaceError, synth.FacePoseError):
            continue
        if len(out) == 6:
            break
    assert len(out) == 6
    return syn, out


@pytest.mark.slow
def test_mask_carries_the_photos_jpeg_artefacts(photos):
    """A JPEG-compressed image changes little when compressed again at its quality: the matched mask changes
    under recompression (at the photo's own resolution and quality) less than half as much as the plain one
    (measured: 0.57-1.33 vs 1.67-3.90 grey levels on 12 CelebA faces, quality 75, scale 1.5-1.7)."""
    syn, items = photos
    for k, p in enumerate(items):
        assert p.jpeg is not None and abs(p.jpeg[0] - 75) < 1 and 1.3 < p.jpeg[1] < 2.2, p.jpeg  # CelebA
        plain = syn.mask_face(p.face, p.landmarks, np.random.default_rng(k), MASK_TYPES[k % 5])
        matched = syn.mask_face(p.face, p.landmarks, np.random.default_rng(k), MASK_TYPES[k % 5], p.jpeg)
        hole = plain["hole"]
        assert np.array_equal(matched["hole"], hole)
        assert np.array_equal(matched["masked"][~hole], p.face[~hole])
        change = [np.abs(match_jpeg(r["masked"], hole, *p.jpeg).astype(int) - r["masked"])[hole].mean()
                  for r in (plain, matched)]
        assert change[1] < 0.5 * change[0], change


def test_match_jpeg_leaves_lossless_or_downscaled_sources_alone():
    img = np.random.default_rng(1).integers(0, 256, (64, 64, 3), np.uint8)
    hole = np.zeros((64, 64), bool)
    hole[20:40, 20:40] = True
    assert match_jpeg(img, hole, 75, 1.0) is img  # the source was larger than the crop: blocks averaged away
    out = match_jpeg(img, hole, 30, 2.0)
    assert np.array_equal(out[~hole], img[~hole]) and not np.array_equal(out[hole], img[hole])


def test_texture_is_foreshortened_towards_the_sides():
    """Red/green stripes 8 px wide laid on a surgical mask: the fabric wraps round the face, so stripes are
    narrower near the sides than in the middle (colour ratio, so the shading does not count)."""
    from maskbench.data.masks import load_templates, render_template

    tex = np.zeros((256, 256, 3), np.uint8)
    red = (np.arange(256) // 8) % 2 == 0
    tex[:, red, 0] = 255
    tex[:, ~red, 1] = 255
    spec = next(s for s in load_templates() if s.mask_type == "surgical")
    rgb, alpha = render_template(spec, tex, 256)
    row = int(np.nonzero(alpha[:, 128] > 0.99)[0].mean())
    cols = np.nonzero(alpha[row] > 0.99)[0]
    is_red = rgb[row, cols, 0] > rgb[row, cols, 1]
    edges = cols[1:][is_red[1:] != is_red[:-1]]
    x0, x1 = cols.min(), cols.max()
    third = (x1 - x0) / 3
    middle = ((edges > x0 + third) & (edges < x1 - third)).sum() / third
    sides = ((edges <= x0 + third) | (edges >= x1 - third)).sum() / (2 * third)
    assert sides > 1.15 * middle, (sides, middle)


def test_blur_search_by_bisection_picks_what_a_full_search_picks():
    """For a sharpness curve that falls with the blur (the case it is built for), bisection over the
    candidate sigmas returns the argmin of |log ratio| that trying all of them returns, ends included."""
    from maskbench.data.masks.degrade import BLUR_SIGMAS, _closest_blur

    rng = np.random.default_rng(0)
    for _ in range(500):
        curve = np.sort(rng.normal(size=len(BLUR_SIGMAS)) * rng.uniform(0.1, 3.0))[::-1] + 2.0 * rng.normal()
        table = dict(zip(BLUR_SIGMAS, curve))
        assert _closest_blur(table.__getitem__) == int(np.argmin(np.abs(curve))), curve
