"""The metric registry, pixel metrics (L1, PSNR, SSIM, whole image or hole only) and mask metrics.

:data:`METRICS` is the one list of metrics (name, direction, format, unit, group, function): the
evaluator, the leaderboard, ``maskbench compare`` and the CLI read it, so a new metric is one entry.

One implementation, two faces (after torchmetrics' ``functional/image/ssim.py`` + ``image/ssim.py``):
:func:`l1`, :func:`psnr`, :func:`ssim`, :func:`mask_iou`, :func:`mask_f1` are pure functions on NumPy
arrays, and :func:`image_scores` is the batched path the evaluator uses (OpenCV, image by image) — the
pure functions call it, so each formula is written once. :class:`ImageMetrics` accumulates per-image
scores over batches.

Conventions: ``uint8`` images are divided by 255; float images are taken as already in
``[0, data_range]``. Every score is per image; channel results are averaged.

- **L1**: mean absolute difference over pixels and channels, in ``[0, data_range]``.
- **PSNR**: ``10 log10(data_range^2 / MSE)`` dB (as ``skimage.metrics.peak_signal_noise_ratio``);
  ``+inf`` for identical images.
- **SSIM**: Wang, Bovik, Sheikh & Simoncelli, "Image Quality Assessment: From Error Visibility to
  Structural Similarity", IEEE TIP 13(4), 2004, with the settings of their reference code as exposed by
  ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
  data_range=..., channel_axis=-1)``: an 11-tap Gaussian window (sigma 1.5, truncated at 3.5 sigma),
  ``K1 = 0.01, K2 = 0.03``, the SSIM map mean over the image minus a 5-pixel border, per channel, then
  averaged over channels. The map at the border uses symmetric ("reflect" in SciPy) padding.
- **Hole-only** variants (``mask=``): L1 and MSE over the hole's pixels only; hole SSIM is the mean of
  the full-size SSIM map (the one ``structural_similarity(..., full=True)`` returns) over the hole's
  pixels and all channels. The window still sees pixels around the hole, so hole SSIM measures how
  well the fill joins its surroundings too. An empty hole gives NaN.
- **Mask IoU / F1** (blind track): ``|P & T| / |P | T|`` and ``2|P & T| / (|P| + |T|)``; both are 1 when
  both masks are empty.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import cv2
import numpy as np

from ..core.errors import MaskbenchError

__all__ = [
    "Metric",
    "METRICS",
    "metric_names",
    "get_metric",
    "format_value",
    "HIGHER_IS_BETTER",
    "higher_is_better",
    "UnknownMetricError",
    "l1",
    "psnr",
    "ssim",
    "mask_iou",
    "landmark_nme",
    "mask_f1",
    "image_scores",
    "ImageMetrics",
]

@dataclass(frozen=True)
class Metric:
    """One reported metric: the single place its name, direction, format and unit are written.

    Attributes:
        name: column name in ``per_image.parquet``, ``summary.json`` and the leaderboard.
        higher_is_better: sort direction (the leaderboard ranks by it).
        fmt: Python format spec for tables (``".4f"``).
        unit: shown in table headers where not empty (``"dB"``, ``"%"``).
        group: ``"pixel"`` (scored on composite and raw output), ``"set"`` (one value per image set:
            FID), ``"identity"``, ``"mask"`` (blind track), or ``"landmarks"`` (methods that return them).
        description: one line for ``--help`` and tables.
        fn: the pure per-image function where one exists (``None`` for set and identity metrics, which
            the evaluator computes with networks).
        per_image: True when ``per_image.parquet`` holds a value per image (paired tests need it).
    """

    name: str
    higher_is_better: bool
    fmt: str
    unit: str
    group: str
    description: str
    fn: Callable[..., Any] | None = None
    per_image: bool = True


def _registry() -> dict[str, Metric]:
    ms = [
        Metric("l1", False, ".4f", "", "pixel", "mean absolute error, image in [0, 1]", l1),
        Metric("psnr", True, ".2f", "dB", "pixel", "peak signal-to-noise ratio", psnr),
        Metric("ssim", True, ".4f", "", "pixel", "structural similarity (Wang et al. 2004)", ssim),
        Metric("l1_hole", False, ".4f", "", "pixel", "L1 over hole pixels", l1),
        Metric("psnr_hole", True, ".2f", "dB", "pixel", "PSNR over hole pixels", psnr),
        Metric("ssim_hole", True, ".4f", "", "pixel", "SSIM map averaged over the hole", ssim),
        Metric("fid", False, ".2f", "", "set", "Frechet Inception distance to the split's originals", per_image=False),
        Metric("identity_cosine", True, ".3f", "", "identity", "cosine of output and original face embeddings"),
        Metric("identity_match", True, ".3f", "", "identity",
               "share verified as the same person as the original at the recognizer's threshold"),
        Metric("identity_rank1", True, ".3f", "", "identity",
               "rank-1 identification against the other photos of the split's identities"),
        Metric("mask_iou", True, ".4f", "", "mask", "blind track: IoU of predicted and true hole", mask_iou),
        Metric("mask_f1", True, ".4f", "", "mask", "blind track: F1 of predicted and true hole", mask_f1),
        Metric("landmark_nme", False, ".4f", "", "landmarks",
               "methods that predict landmarks: mean error / inter-ocular distance (300-W)", landmark_nme),
    ]
    return {m.name: m for m in ms}


def metric_names(group: str | None = None) -> tuple[str, ...]:
    """Registered metric names in display order, optionally only one ``group``."""
    return tuple(n for n, m in METRICS.items() if group is None or m.group == group)


def get_metric(name: str) -> Metric:
    """The :class:`Metric` of a column name; ``raw_`` prefixes resolve to the base metric.

    Raises:
        UnknownMetricError: (a ``KeyError``) not a known metric.
    """
    base = name.removeprefix("raw_")
    if base not in METRICS:
        raise UnknownMetricError(f"unknown metric {name!r}; known: {', '.join(METRICS)}")
    return METRICS[base]


def format_value(name: str, value: Any) -> str:
    """A metric value as the tables show it (``""`` for None/NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return format(float(value), get_metric(name).fmt)


_SSIM_SIGMA = 1.5
_SSIM_TRUNCATE = 3.5
_K1, _K2 = 0.01, 0.03


class UnknownMetricError(MaskbenchError, KeyError):
    """A metric name is not one maskbench reports."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


def higher_is_better(metric: str) -> bool:
    """Direction of a reported column such as ``"psnr_hole"`` or ``"raw_l1"``.

    Raises:
        UnknownMetricError: (a ``KeyError``) not a known metric.
    """
    return get_metric(metric).higher_is_better


def image_scores(preds, target, mask=None, *, data_range: float = 1.0, dtype=np.float32) -> dict[str, np.ndarray]:
    """L1, PSNR and SSIM of a batch, whole image and (with ``mask``) hole only.

    Image by image with OpenCV (``cv2.GaussianBlur`` for the SSIM window), which releases the GIL, so
    the evaluator scores batches in threads.

    Args:
        preds: ``(N, H, W, C)`` or ``(H, W, C)``, ``uint8`` (divided by 255) or float in
            ``[0, data_range]``.
        target: same shape as ``preds``.
        mask: ``(N, H, W)`` or ``(H, W)`` bool, True on the hole; ``None`` skips the hole metrics.
        data_range: the value range of float inputs (and the scale uint8 inputs are mapped to).
        dtype: ``np.float32`` (default; matches scikit-image to ~1e-5) or ``np.float64`` (~1e-12).

    Returns:
        ``{"l1", "psnr", "ssim"}`` and, with a mask, ``{"l1_hole", "psnr_hole", "ssim_hole"}``: ``(N,)``
        float64 arrays. Sums and means are accumulated in float64.

    Raises:
        ValueError: shapes differ or are not image batches; mask of the wrong shape or dtype.
    """
    p = _np_batch(preds)
    t = _np_batch(target)
    if p.shape != t.shape:
        raise ValueError(f"preds and target differ in shape: {p.shape} vs {t.shape}")
    n, h, w, _ = p.shape
    m = None
    if mask is not None:
        m = np.asarray(mask)
        m = m[None] if m.ndim == 2 else m
        if m.dtype != np.bool_ or m.shape != (n, h, w):
            raise ValueError(f"mask must be ({n}, {h}, {w}) or ({h}, {w}) bool, got {m.shape} {m.dtype}")
    npdt = np.float64 if np.dtype(dtype) == np.float64 else np.float32
    rows = [_scores_one(p[i], t[i], None if m is None else m[i], data_range, npdt) for i in range(n)]
    keys = ("l1", "psnr", "ssim") + (("l1_hole", "psnr_hole", "ssim_hole") if m is not None else ())
    return {k: np.array([r[j] for r in rows], np.float64) for j, k in enumerate(keys)}


def _np_batch(x) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4:
        raise ValueError(f"expected (H, W, C) or (N, H, W, C) images, got shape {a.shape}")
    return a


def _blur(a: np.ndarray) -> np.ndarray:
    # == scipy.ndimage.gaussian_filter(sigma=1.5, truncate=3.5, mode="reflect") per channel
    r = int(_SSIM_TRUNCATE * _SSIM_SIGMA + 0.5)
    return cv2.GaussianBlur(a, (2 * r + 1, 2 * r + 1), _SSIM_SIGMA, borderType=cv2.BORDER_REFLECT)


def _scores_one(p: np.ndarray, t: np.ndarray, m: np.ndarray | None, data_range: float, dt) -> tuple[float, ...]:
    """OpenCV backend for one ``(H, W, C)`` pair: (l1, psnr, ssim[, l1_hole, psnr_hole, ssim_hole])."""
    x = p.astype(dt)
    y = t.astype(dt)
    if p.dtype == np.uint8:
        x *= data_range / 255.0
        y *= data_range / 255.0
    d = x - y
    ad = np.abs(d)
    sq = d * d
    ux, uy = _blur(x), _blur(y)
    uxx, uyy, uxy = _blur(x * x), _blur(y * y), _blur(x * y)
    uxuy = ux * uy
    ux2 = ux * ux
    uy2 = uy * uy
    c1 = (_K1 * data_range) ** 2
    c2 = (_K2 * data_range) ** 2
    s_map = ((2 * uxuy + c1) * (2 * (uxy - uxuy) + c2)) / ((ux2 + uy2 + c1) * ((uxx - ux2) + (uyy - uy2) + c2))
    r = int(_SSIM_TRUNCATE * _SSIM_SIGMA + 0.5)
    h, w = p.shape[:2]
    mse = float(sq.mean(dtype=np.float64))
    out = (
        float(ad.mean(dtype=np.float64)),
        _psnr(mse, data_range),
        float(s_map[r : h - r, r : w - r].mean(dtype=np.float64)),
    )
    if m is None:
        return out
    if not m.any():
        return out + (math.nan, math.nan, math.nan)
    mse_h = float(sq[m].mean(dtype=np.float64))
    return out + (float(ad[m].mean(dtype=np.float64)), _psnr(mse_h, data_range), float(s_map[m].mean(dtype=np.float64)))


def _psnr(mse: float, data_range: float) -> float:
    return math.inf if mse == 0 else 10.0 * math.log10(data_range**2 / mse)


def _single(preds, target, mask, data_range: float, key: str) -> float | np.ndarray:
    single = np.ndim(preds) == 3
    scores = image_scores(preds, target, mask, data_range=data_range)
    v = scores[key + ("_hole" if mask is not None else "")]
    return float(v[0]) if single else v


def l1(preds, target, *, mask=None, data_range: float = 1.0) -> float | np.ndarray:
    """Mean absolute error, whole image or over the hole (see module docstring).

    Args:
        preds, target: ``(H, W, C)`` or ``(N, H, W, C)``; ``uint8`` or float in ``[0, data_range]``.
        mask: optional ``(H, W)`` / ``(N, H, W)`` bool hole mask.
        data_range: value range (uint8 inputs are scaled to it).

    Returns:
        A float for one image, an ``(N,)`` float64 array for a batch; in ``[0, data_range]``, lower is better.

    Raises:
        ValueError: shape or dtype mismatch.
    """
    return _single(preds, target, mask, data_range, "l1")


def psnr(preds, target, *, mask=None, data_range: float = 1.0) -> float | np.ndarray:
    """Peak signal-to-noise ratio in dB, ``10 log10(data_range^2 / MSE)``; higher is better.

    Same arguments, returns and raises as :func:`l1`. ``+inf`` when the images are equal (on the hole).
    """
    return _single(preds, target, mask, data_range, "psnr")


def ssim(preds, target, *, mask=None, data_range: float = 1.0) -> float | np.ndarray:
    """Structural similarity (Wang et al. 2004, Gaussian window), in ``[-1, 1]``; higher is better.

    Matches ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=data_range, channel_axis=-1)`` to ~1e-5 (float32). With ``mask``, the
    mean of the full SSIM map over the hole (module docstring). Same arguments as :func:`l1`.
    """
    return _single(preds, target, mask, data_range, "ssim")


def _mask_counts(pred, true) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    p = np.asarray(pred, bool)
    t = np.asarray(true, bool)
    if p.shape != t.shape:
        raise ValueError(f"mask shapes differ: {p.shape} vs {t.shape}")
    single = p.ndim == 2
    if single:
        p, t = p[None], t[None]
    inter = (p & t).sum(axis=(1, 2)).astype(np.float64)
    return inter, p.sum(axis=(1, 2)).astype(np.float64), t.sum(axis=(1, 2)).astype(np.float64), single


def mask_iou(pred, true) -> float | np.ndarray:
    """Intersection over union of predicted and true hole masks (Jaccard index).

    Args:
        pred, true: ``(H, W)`` or ``(N, H, W)`` bool.

    Returns:
        Float or ``(N,)`` array in ``[0, 1]``; 1 when both masks are empty. Higher is better.

    Raises:
        ValueError: shapes differ.
    """
    inter, ps, ts, single = _mask_counts(pred, true)
    union = ps + ts - inter
    v = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    return float(v[0]) if single else v


def mask_f1(pred, true) -> float | np.ndarray:
    """F1 score (Dice coefficient) of predicted vs true hole pixels, ``2|P&T| / (|P|+|T|)``.

    Same arguments, returns and raises as :func:`mask_iou`.
    """
    inter, ps, ts, single = _mask_counts(pred, true)
    den = ps + ts
    v = np.where(den > 0, 2 * inter / np.maximum(den, 1), 1.0)
    return float(v[0]) if single else v


def landmark_nme(pred, true) -> float | np.ndarray:
    """Normalised mean error of 68 iBUG landmarks: the mean point-to-point distance divided by the
    inter-ocular distance, the outer eye corners (points 36 and 45, 0-based) of ``true`` (the 300-W
    convention; Sagonas et al., "300 Faces In-the-Wild Challenge", IMAVIS 2016).

    Args:
        pred, true: ``(68, 2)`` or ``(N, 68, 2)`` pixel coordinates ``(x, y)`` in the same image.

    Returns:
        Float or ``(N,)`` array, >= 0 (a fraction: 0.05 = 5 % of the inter-ocular distance). Lower is better.

    Raises:
        ValueError: shapes differ or are not ``(..., 68, 2)``.
    """
    p, t = np.asarray(pred, np.float64), np.asarray(true, np.float64)
    if p.shape != t.shape or p.shape[-2:] != (68, 2):
        raise ValueError(f"landmark_nme: need two (N, 68, 2) arrays of the same shape, got {p.shape} and {t.shape}")
    single = p.ndim == 2
    if single:
        p, t = p[None], t[None]
    iod = np.linalg.norm(t[:, 36] - t[:, 45], axis=-1)
    v = np.linalg.norm(p - t, axis=-1).mean(1) / np.maximum(iod, 1e-9)
    return float(v[0]) if single else v


class ImageMetrics:
    """Accumulate per-image L1/PSNR/SSIM (whole and hole) over batches; :meth:`compute` gives means.

    Example:
        >>> m = ImageMetrics()
        >>> m.update(pred_batch, target_batch, mask_batch)   # (N, H, W, 3) uint8, (N, H, W) bool
        >>> m.compute()["ssim_hole"]
    """

    def __init__(self):
        self.values: dict[str, list[np.ndarray]] = {}

    def update(self, preds, target, mask=None) -> dict[str, np.ndarray]:
        """Score one batch (see :func:`image_scores`) and keep the per-image values; returns them."""
        scores = image_scores(preds, target, mask)
        for k, v in scores.items():
            self.values.setdefault(k, []).append(v)
        return scores

    def compute(self) -> dict[str, float]:
        """Mean of every metric over all images seen (NaN-skipping; empty -> NaN)."""
        out = {}
        for k, vs in self.values.items():
            a = np.concatenate(vs)
            a = a[~np.isnan(a)]
            out[k] = float(a.mean()) if a.size else math.nan
        return out


#: The metric registry: every metric the evaluator computes, the leaderboard shows and the CLI prints.
METRICS: dict[str, Metric] = _registry()
#: Direction of every registered metric (derived from :data:`METRICS`).
HIGHER_IS_BETTER: dict[str, bool] = {n: m.higher_is_better for n, m in METRICS.items()}
