"""Key a face mask out of one real photo: find the face, segment the mask, refine it to an alpha matte,
predict the landmarks under it, check it, and bring the mask layer into the templates' canonical frame.

Per photo (:meth:`MaskKeyer.key`):

1. **Face**: YuNet's largest face (:class:`maskbench.faces.yunet.YuNet`) and the FFHQ-aligned 256 px crop
   of the in-the-wild track (:func:`maskbench.faces.yunet.align_yunet`); the crop's pixels that come from
   outside the photo (the crop reflects the border) are marked and never count as mask.
2. **Region**: the segmenter's mask probability on the crop (``landmark-gan``: its Mask R-CNN's best
   "face mask" instance; ``3dprior``: N_3D), the largest connected part of ``> 0.5``.
3. **Landmarks under the mask**: ``landmark-gan``'s landmark regressor (LaFIn's, trained here on the
   synthetic faces' dlib landmarks) on the crop with the region set to white.
4. **Alpha matte**: closed-form matting (Levin, Lischinski & Weiss, PAMI 2008; ``pymatting``'s
   ``estimate_alpha_cf``) on a trimap of the region eroded by :data:`TRIMAP_IN` px (mask) and dilated by
   :data:`TRIMAP_OUT` px (the rest is background), and the mask's own colour by multilevel foreground
   estimation (Germer et al. 2020, ``estimate_foreground_ml``), so its edge, loops and hair over it carry
   neither skin nor background.
5. **Gates** (:data:`GATES`): each refusal names its reason and the figure that failed.
6. **Canonical layer**: the premultiplied colour and alpha warped piecewise-affinely from the face's
   ``face_neck`` anchor points onto the canonical ones, along the canonical triangulation
   (:class:`~maskbench.data.masks.PiecewiseAffineWarp`), i.e. the inverse of what synthesis does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from ..core.errors import MaskbenchError
from ..data.masks import PiecewiseAffineWarp, canonical_landmarks, load_anchor_sets
from ..data.synth import MAX_FOLDED_TRIANGLES
from ..faces.landmarks import estimate_yaw, inside_photo

__all__ = ["BELOW_JAW", "CROP_SIZE", "GATES", "jaw_region", "SEGMENTERS", "TRIMAP_IN", "TRIMAP_OUT", "Keyed", "MaskKeyer", "HarvestError"]

CROP_SIZE = 256
SEGMENTERS = ("landmark-gan", "3dprior")
#: The blind methods' weights the harvest keys with: those trained on drawn masks only. The default
#: weights since issue 25 were trained on ``mix`` synthesis, whose photo templates are the harvest half's
#: masks, so keying those photos with them would be circular (and would change the shipped library).
HARVEST_VARIANT = "procedural"
MATTING = ("closed-form", "none")
#: Trimap: pixels of the region eroded by this many crop px are mask, those beyond its dilation by
#: :data:`TRIMAP_OUT` px are not; matting decides the band between.
TRIMAP_IN, TRIMAP_OUT = 3, 5
#: How far below the jaw line (share of the jaw width, 0-16) a template may reach: the visible part of a mask
#: under the chin. A photo border that cuts the mask only beyond it is not a fault (the layer is clipped there).
BELOW_JAW = 0.06
#: The anchor set templates are keyed through (it reaches below the chin, for scarves and low masks).
ANCHORS = "face_neck"

#: The quality gates, in the order they are checked: ``name: (threshold, what fails it)``.
GATES: dict[str, tuple[float, str]] = {
    "face_px": (48.0, "face too small: YuNet box side below this many photo px"),
    "hole_share": (0.04, "no mask found: the region covers less than this share of the crop"),
    "yaw": (35.0, "head turned too far: |yaw| (degrees, from the landmarks) above this"),
    "folds": (MAX_FOLDED_TRIANGLES, "head turned too far: more anchor triangles fold over than this"),
    "above_eyes": (0.03, "region not below the eyes: more than this share of it above the eye line"),
    "nose_to_chin": (0.5, "region does not cover nose to chin: mask probability below this at the nose "
                          "base, the mouth or between lip and chin"),
    "border_contact": (0.05, "mask cut by the photo border: more than this share of its outline on the border "
                             "above the jaw line (plus BELOW_JAW)"),
    "matte_uncertainty": (6.0, "matte too uncertain: the soft band (alpha in (0.1, 0.9)) wider than this many px "
                               "on average along the outline"),
    "matte_iou": (0.8, "matte disagrees with the segmentation: IoU below this"),
    "coverage_lost": (0.05, "mask reaches outside the warp's frame: more than this share of it lost"),
}


class HarvestError(MaskbenchError, ValueError):
    """A harvest that cannot start: an unknown segmenter, an unreadable types file, an empty folder."""


@dataclass
class Keyed:
    """What :meth:`MaskKeyer.key` found in one photo.

    Attributes:
        reason: None when accepted, else why not (one of :data:`GATES`' texts with the failing figure).
        crop: ``(256, 256, 3) uint8`` the aligned crop (None when no face was found).
        to_crop: ``(2, 3) float64`` photo -> crop affine map.
        prob: ``(256, 256) float32`` the segmenter's probability (0 outside the photo).
        alpha: ``(256, 256) float32`` the alpha matte in crop pixels, in [0, 1].
        colour: ``(256, 256, 3) float32`` the mask's foreground colour in [0, 1].
        landmarks: ``(68, 2) float32`` crop pixels.
        layer: ``(256, 256, 4) float32`` the canonical RGBA layer (colour not premultiplied).
        figures: the gates' figures, ``{name: value}``.
    """

    reason: str | None
    crop: np.ndarray | None = None
    to_crop: np.ndarray | None = None
    prob: np.ndarray | None = None
    alpha: np.ndarray | None = None
    colour: np.ndarray | None = None
    landmarks: np.ndarray | None = None
    layer: np.ndarray | None = None
    figures: dict[str, float] = field(default_factory=dict)


def _disk(r: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def _largest_component(binary: np.ndarray) -> np.ndarray:
    n, labels, stats, _ = cv2.connectedComponentsWithStats(binary.astype(np.uint8), connectivity=8)
    if n <= 1:
        return np.zeros_like(binary, bool)
    return labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))


def jaw_region(landmarks: np.ndarray, size: int, below: float = BELOW_JAW) -> np.ndarray:
    """Soft mask of everything above the jaw line (landmarks 0-16) moved down by ``below`` x the jaw width.

    Returns:
        ``(size, size) float32`` in [0, 1] (anti-aliased edge).
    """
    lm = np.asarray(landmarks, np.float64)
    width = float(np.hypot(*(lm[16] - lm[0])))
    centre = lm[:17].mean(0)
    jaw = lm[:17] + below * width * (lm[:17] - centre) / np.maximum(np.linalg.norm(lm[:17] - centre, axis=1, keepdims=True), 1e-6)
    poly = np.concatenate([jaw, [[jaw[-1, 0], -4.0 * size], [jaw[0, 0], -4.0 * size]]])
    out = np.zeros((size, size), np.uint8)
    cv2.fillPoly(out, [np.round(poly * 16).astype(np.int32)], 255, cv2.LINE_AA, 4)
    return out.astype(np.float32) / 255.0


def _at(prob: np.ndarray, p: np.ndarray) -> float:
    x, y = int(np.clip(round(float(p[0])), 0, prob.shape[1] - 1)), int(np.clip(round(float(p[1])), 0, prob.shape[0] - 1))
    return float(prob[y, x])


class MaskKeyer:
    """Keys masks out of photos (module docstring); networks and detector are loaded once.

    Args:
        segmenter: ``"landmark-gan"`` (Mask R-CNN, the default: on 16 harvest photos it found the plaid and
            patterned masks N_3D missed) or ``"3dprior"`` (N_3D).
        device: torch device.
        landmark_method: a loaded ``landmark-gan`` predictor to reuse (else one is created; the networks are
            the :data:`HARVEST_VARIANT` weights).
        matting: ``"closed-form"`` (step 4) or ``"none"``: the segmented region itself as alpha (its edge
            anti-aliased over a pixel) and the photo's colour, to measure what matting changes.

    Raises:
        HarvestError: an unknown segmenter.
        maskbench.core.resources.ModelNotFoundError: weights or the YuNet model are missing.
    """

    def __init__(self, segmenter: str = "landmark-gan", device: str = "cpu", landmark_method=None,
                 matting: str = "closed-form"):
        from ..faces.yunet import YuNet
        from ..methods.predictors import create_predictor

        if segmenter not in SEGMENTERS:
            raise HarvestError(f"unknown segmenter {segmenter!r}; choose from {', '.join(SEGMENTERS)}")
        if matting not in MATTING:
            raise HarvestError(f"unknown matting {matting!r}; choose from {', '.join(MATTING)}")
        self.matting = matting
        self.segmenter_name = segmenter
        self.detector = YuNet()
        self.landmark_method = landmark_method or create_predictor("landmark-gan", device=device,
                                                                   variant=HARVEST_VARIANT)
        self.segmenter = (self.landmark_method if segmenter == "landmark-gan"
                          else create_predictor(segmenter, device=device, variant=HARVEST_VARIANT))
        self.anchors = load_anchor_sets()[ANCHORS]
        self.canonical_points = self.anchors.points(canonical_landmarks(CROP_SIZE))
        self.canonical_warp = PiecewiseAffineWarp(self.canonical_points)

    def describe(self) -> dict[str, Any]:
        """How templates are made, for the library's card."""
        return {
            "face": "YuNet (OpenCV zoo 2023mar int8bq) largest face, FFHQ-aligned 256 px crop",
            "segmenter": f"{self.segmenter_name} ({'Mask R-CNN' if self.segmenter_name == 'landmark-gan' else 'N_3D'}, "
                         "committed weights, trained on the synthetic dataset)",
            "landmarks": "landmark-gan's landmark regressor on the crop with the region white",
            "matting": "none: the segmented region as alpha" if self.matting == "none" else f"pymatting estimate_alpha_cf (closed-form) on a trimap (region eroded {TRIMAP_IN} px / "
                       f"dilated {TRIMAP_OUT} px), foreground by estimate_foreground_ml",
            "anchors": ANCHORS,
            "gates": {k: v[0] for k, v in GATES.items()},
        }

    def key(self, image: np.ndarray, stop_at_gate: bool = True) -> Keyed:
        """Key the mask out of one photo (module docstring).

        Args:
            image: ``(H, W, 3) uint8`` RGB.
            stop_at_gate: stop at the first gate that fails (False: go on to the layer, keeping the first
                failure's reason; e.g. to measure the matte on every face).

        Returns:
            :class:`Keyed`; ``reason`` is None when every gate passed.
        """
        from ..faces.yunet import align_yunet

        face = self.detector(image)
        if face is None:
            return Keyed(f"no face found (YuNet score >= {self.detector.score_threshold:g})")
        fig: dict[str, float] = {"face_px": float(max(face.box[2], face.box[3]))}
        if fig["face_px"] < GATES["face_px"][0]:
            return Keyed(f"face too small ({fig['face_px']:.0f} px)", figures=fig)
        crop, m = align_yunet(image, face.points, CROP_SIZE)
        valid = inside_photo(image.shape[:2], m, CROP_SIZE) > 0.99
        prob = self.segmenter.mask_probability(crop[None])[0] * valid
        region = _largest_component(prob > 0.5)
        out = Keyed(None, crop, m, prob.astype(np.float32), figures=fig)
        fig["hole_share"] = float(region.mean())
        if fig["hole_share"] < GATES["hole_share"][0]:
            out.reason = f"no mask found (region {fig['hole_share']:.3f} of the crop)"
            return out
        lm = self.landmark_method.landmarks_under(crop[None], region[None])[0]
        out.landmarks = lm
        fig["yaw"] = float(estimate_yaw(lm))
        src_points = self.anchors.points(lm)
        fig["folds"] = float(self.canonical_warp.folded(src_points))
        eye_y = float(lm[36:48, 1].mean())
        ys = np.nonzero(region)[0]
        fig["above_eyes"] = float((ys < eye_y).mean())
        lip_chin = 0.5 * (lm[57] + lm[8])
        fig["nose_to_chin"] = min(_at(prob, lm[33]), _at(prob, lm[62]), _at(prob, lip_chin))
        outline = region & ~cv2.erode(region.astype(np.uint8), _disk(1)).astype(bool)
        near_border = ~cv2.erode(valid.astype(np.uint8), _disk(2)).astype(bool)
        face_side = jaw_region(lm, CROP_SIZE) > 0.5
        fig["border_contact"] = float((outline & near_border & face_side).sum() / max(outline.sum(), 1))
        for name, bad, text in (
            ("yaw", abs(fig["yaw"]) > GATES["yaw"][0], f"head turned too far (yaw {fig['yaw']:.0f} deg)"),
            ("folds", fig["folds"] > GATES["folds"][0], f"head turned too far ({fig['folds']:.0f} triangles fold over)"),
            ("above_eyes", fig["above_eyes"] > GATES["above_eyes"][0],
             f"region not below the eyes ({fig['above_eyes']:.2f} of it above the eye line)"),
            ("nose_to_chin", fig["nose_to_chin"] < GATES["nose_to_chin"][0],
             f"region does not cover nose to chin (probability {fig['nose_to_chin']:.2f})"),
            ("border_contact", fig["border_contact"] > GATES["border_contact"][0],
             f"mask cut by the photo border ({fig['border_contact']:.2f} of its outline)"),
        ):
            if bad and out.reason is None:
                out.reason = text
                if stop_at_gate:
                    return out
        if self.matting == "none":
            alpha = cv2.GaussianBlur(region.astype(np.float32), (0, 0), 0.7) * valid
            colour = crop.astype(np.float32) / 255.0
        else:
            alpha, colour = self.matte(crop, region, valid)
        alpha = alpha * jaw_region(lm, CROP_SIZE)
        out.alpha, out.colour = alpha, colour
        soft = ((alpha > 0.1) & (alpha < 0.9)).sum()
        hard = max(int((alpha > 0.5).sum()), 1)
        # the soft band of a clean edge is about two pixels wide: normalise by the outline length
        fig["matte_uncertainty"] = float(soft / max(outline.sum(), 1))
        inter = ((alpha > 0.5) & region).sum()
        fig["matte_iou"] = float(inter / max(hard + region.sum() - inter, 1))
        if fig["matte_uncertainty"] > GATES["matte_uncertainty"][0] and out.reason is None:
            out.reason = f"matte too uncertain ({fig['matte_uncertainty']:.2f})"
        elif fig["matte_iou"] < GATES["matte_iou"][0] and out.reason is None:
            out.reason = f"matte disagrees with the segmentation (IoU {fig['matte_iou']:.2f})"
        if out.reason is not None and stop_at_gate:
            return out
        out.layer = self.to_canonical(colour, alpha, src_points)
        kept = float(out.layer[..., 3].sum()) * self._area_ratio(src_points)
        fig["coverage_lost"] = float(max(0.0, 1.0 - kept / max(float(alpha.sum()), 1e-6)))
        if fig["coverage_lost"] > GATES["coverage_lost"][0] and out.reason is None:
            out.reason = f"mask reaches outside the warp's frame ({fig['coverage_lost']:.2f} of it lost)"
        return out

    @staticmethod
    def matte(crop: np.ndarray, region: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Closed-form alpha matte and foreground colour of ``region`` (module docstring, step 4).

        Returns:
            ``(alpha (S, S) float32 in [0, 1], colour (S, S, 3) float32 in [0, 1])``.
        """
        from pymatting import estimate_alpha_cf, estimate_foreground_ml

        inner = cv2.erode(region.astype(np.uint8), _disk(TRIMAP_IN)).astype(bool)
        outer = cv2.dilate(region.astype(np.uint8), _disk(TRIMAP_OUT)).astype(bool)
        trimap = np.full(region.shape, 0.5)
        trimap[~outer | ~valid] = 0.0
        trimap[inner & valid] = 1.0
        img = crop.astype(np.float64) / 255.0
        alpha = np.clip(estimate_alpha_cf(img, trimap), 0.0, 1.0)
        alpha[~valid] = 0.0
        colour = np.clip(estimate_foreground_ml(img, alpha), 0.0, 1.0)
        return alpha.astype(np.float32), colour.astype(np.float32)

    def to_canonical(self, colour: np.ndarray, alpha: np.ndarray, src_points: np.ndarray) -> np.ndarray:
        """The mask layer warped from the crop (anchor points ``src_points``) into the canonical frame.

        Returns:
            ``(256, 256, 4) float32``: colour (not premultiplied; 0 where alpha is 0) and alpha.
        """
        warp = PiecewiseAffineWarp(src_points, triangles=self.canonical_warp.triangles)
        pre = np.concatenate([colour * alpha[..., None], alpha[..., None]], axis=2).astype(np.float32)
        out = warp(pre, self.canonical_points, (CROP_SIZE, CROP_SIZE))
        a = np.clip(out[..., 3], 0.0, 1.0)
        a[a < 0.5 / 255.0] = 0.0
        rgb = np.where(a[..., None] > 0, out[..., :3] / np.maximum(a, 1e-6)[..., None], 0.0)
        return np.concatenate([np.clip(rgb, 0.0, 1.0), a[..., None]], axis=2).astype(np.float32)

    def _area_ratio(self, src_points: np.ndarray) -> float:
        """Crop area per canonical area of the anchor hull (to compare coverage before and after the warp)."""
        src = cv2.contourArea(cv2.convexHull(np.asarray(src_points, np.float32)))
        dst = cv2.contourArea(cv2.convexHull(np.asarray(self.canonical_points, np.float32)))
        return float(src / max(dst, 1e-6))
