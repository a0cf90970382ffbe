"""Pixel metrics (L1, PSNR, SSIM, whole image or hole only) and mask metrics (IoU, F1).

One implementation, two faces (after torchmetrics' ``functional/image/ssim.py`` + ``image/ssim.py``):
:func:`l1`, :func:`psnr`, :func:`ssim`, :func:`mask_iou`, :func:`mask_f1` are pure functions on NumPy
arrays, and :func:`image_scores` is the batched path the evaluator uses (OpenCV on CPU, torch on CUDA;
the two backends are tested to agree) — the pure functions call it, so each formula is written once
per backend. :class:`ImageMetrics` accumulates
per-image scores over batches.

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
from functools import lru_cache

import cv2
import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "HIGHER_IS_BETTER",
    "higher_is_better",
    "UnknownMetricError",
    "l1",
    "psnr",
    "ssim",
    "mask_iou",
    "mask_f1",
    "image_scores",
    "ImageMetrics",
]

#: Direction of every metric the evaluator reports (used by the leaderboard to sort).
HIGHER_IS_BETTER: dict[str, bool] = {
    "l1": False,
    "psnr": True,
    "ssim": True,
    "fid": False,
    "identity_cosine": True,
    "mask_iou": True,
    "mask_f1": True,
}

_SSIM_SIGMA = 1.5
_SSIM_TRUNCATE = 3.5
_K1, _K2 = 0.01, 0.03


class UnknownMetricError(KeyError):
    """A metric name is not one maskbench reports."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


def higher_is_better(metric: str) -> bool:
    """Direction of a reported column such as ``"psnr_hole"`` or ``"raw_l1"``.

    Raises:
        UnknownMetricError: (a ``KeyError``) not a known metric.
    """
    base = metric.removeprefix("raw_").removesuffix("_hole")
    if base not in HIGHER_IS_BETTER:
        raise UnknownMetricError(f"unknown metric {metric!r}; known: {', '.join(HIGHER_IS_BETTER)}")
    return HIGHER_IS_BETTER[base]


def _as_batch(x, data_range: float, device: str | torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, bool]:
    """(H, W, C) or (N, H, W, C) uint8/float array or tensor -> (N, C, H, W) float tensor in [0, data_range]."""
    t = torch.as_tensor(x)
    single = t.ndim == 3
    if single:
        t = t[None]
    if t.ndim != 4:
        raise ValueError(f"expected (H, W, C) or (N, H, W, C) images, got shape {tuple(t.shape)}")
    t = t.to(device)
    if t.dtype == torch.uint8:
        t = t.to(dtype) * (data_range / 255.0)
    else:
        t = t.to(dtype)
    return t.permute(0, 3, 1, 2), single


def _as_masks(m, n: int, hw: tuple[int, int], device) -> torch.Tensor:
    t = torch.as_tensor(m).to(device)
    if t.ndim == 2:
        t = t[None]
    if t.dtype != torch.bool or tuple(t.shape) != (n, *hw):
        raise ValueError(f"mask must be ({n}, {hw[0]}, {hw[1]}) or {hw} bool, got {tuple(t.shape)} {t.dtype}")
    return t


@lru_cache(maxsize=8)
def _gauss_1d(dtype: torch.dtype, device: str) -> torch.Tensor:
    # scipy.ndimage.gaussian_filter's kernel: radius int(truncate * sigma + 0.5), normalised to sum 1
    r = int(_SSIM_TRUNCATE * _SSIM_SIGMA + 0.5)
    x = torch.arange(-r, r + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / _SSIM_SIGMA) ** 2)
    return (k / k.sum()).to(dtype=dtype, device=device)


def _symmetric_pad(x: torch.Tensor, r: int) -> torch.Tensor:
    """Pad the last two dims by ``r`` with half-sample symmetric reflection (SciPy ``mode='reflect'``)."""
    h, w = x.shape[-2:]
    iw = torch.cat([torch.arange(r - 1, -1, -1), torch.arange(w), torch.arange(w - 1, w - 1 - r, -1)]).to(x.device)
    ih = torch.cat([torch.arange(r - 1, -1, -1), torch.arange(h), torch.arange(h - 1, h - 1 - r, -1)]).to(x.device)
    return x.index_select(-1, iw).index_select(-2, ih)


def _ssim_map(x: torch.Tensor, y: torch.Tensor, data_range: float) -> torch.Tensor:
    """SSIM map ``(N, C, H, W)`` of two ``(N, C, H, W)`` float tensors (formula in the module docstring)."""
    n, c, h, w = x.shape
    k = _gauss_1d(x.dtype, str(x.device))
    r = (k.numel() - 1) // 2
    stack = torch.cat([x, y, x * x, y * y, x * y], dim=1)  # (N, 5C, H, W)
    stack = _symmetric_pad(stack, r)
    g = 5 * c
    stack = F.conv2d(stack, k.view(1, 1, 1, -1).expand(g, 1, 1, -1), groups=g)
    stack = F.conv2d(stack, k.view(1, 1, -1, 1).expand(g, 1, -1, 1), groups=g)
    ux, uy, uxx, uyy, uxy = stack.split(c, dim=1)
    vx = uxx - ux * ux
    vy = uyy - uy * uy
    vxy = uxy - ux * uy
    c1 = (_K1 * data_range) ** 2
    c2 = (_K2 * data_range) ** 2
    return ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))


def image_scores(
    preds,
    target,
    mask=None,
    *,
    data_range: float = 1.0,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    backend: str = "auto",
) -> dict[str, torch.Tensor]:
    """L1, PSNR and SSIM of a batch, whole image and (with ``mask``) hole only.

    Two backends compute the same formulas (module docstring): ``"opencv"``, image by image with
    ``cv2.GaussianBlur`` (fast on CPU, releases the GIL so batches can be scored in threads), and
    ``"torch"``, batched on ``device`` (for CUDA). ``"auto"`` picks OpenCV on CPU, torch otherwise.

    Args:
        preds: ``(N, H, W, C)`` or ``(H, W, C)``, ``uint8`` (divided by 255) or float in
            ``[0, data_range]``; NumPy array or tensor.
        target: same shape as ``preds``.
        mask: ``(N, H, W)`` or ``(H, W)`` bool, True on the hole; ``None`` skips the hole metrics.
        data_range: the value range of float inputs (and the scale uint8 inputs are mapped to).
        device: where the torch backend computes.
        dtype: ``torch.float32`` (default; matches scikit-image to ~1e-5) or ``torch.float64`` (~1e-12).
        backend: ``"auto"``, ``"opencv"`` or ``"torch"``.

    Returns:
        ``{"l1", "psnr", "ssim"}`` and, with a mask, ``{"l1_hole", "psnr_hole", "ssim_hole"}``: ``(N,)``
        float64 CPU tensors. Sums and means are accumulated in float64.

    Raises:
        ValueError: shapes differ or are not image batches; mask of the wrong shape or dtype; unknown
            backend.
    """
    if backend == "auto":
        backend = "opencv" if str(device) == "cpu" else "torch"
    if backend == "torch":
        return _image_scores_torch(preds, target, mask, data_range, device, dtype)
    if backend != "opencv":
        raise ValueError(f"backend must be auto, opencv or torch, got {backend!r}")
    p = _np_batch(preds)
    t = _np_batch(target)
    if p.shape != t.shape:
        raise ValueError(f"preds and target differ in shape: {p.shape} vs {t.shape}")
    n, h, w, _ = p.shape
    m = None
    if mask is not None:
        m = np.asarray(mask.cpu() if isinstance(mask, torch.Tensor) else mask)
        m = m[None] if m.ndim == 2 else m
        if m.dtype != np.bool_ or m.shape != (n, h, w):
            raise ValueError(f"mask must be ({n}, {h}, {w}) or ({h}, {w}) bool, got {m.shape} {m.dtype}")
    npdt = np.float64 if dtype == torch.float64 else np.float32
    rows = [_scores_one(p[i], t[i], None if m is None else m[i], data_range, npdt) for i in range(n)]
    keys = ("l1", "psnr", "ssim") + (("l1_hole", "psnr_hole", "ssim_hole") if m is not None else ())
    return {k: torch.tensor([r[j] for r in rows], dtype=torch.float64) for j, k in enumerate(keys)}


def _np_batch(x) -> np.ndarray:
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
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


def _image_scores_torch(preds, target, mask, data_range, device, dtype) -> dict[str, torch.Tensor]:
    """Torch backend of :func:`image_scores` (batched, any device)."""
    x, _ = _as_batch(preds, data_range, device, dtype)
    y, _ = _as_batch(target, data_range, device, dtype)
    if x.shape != y.shape:
        raise ValueError(f"preds and target differ in shape: {tuple(x.shape)} vs {tuple(y.shape)}")
    n, c, h, w = x.shape
    diff = x - y
    ad = diff.abs()
    sq = diff * diff
    s_map = _ssim_map(x, y, data_range)
    r = (_gauss_1d(x.dtype, str(x.device)).numel() - 1) // 2
    out = {
        "l1": ad.double().mean(dim=(1, 2, 3)),
        "psnr": _psnr_from_mse(sq.double().mean(dim=(1, 2, 3)), data_range),
        "ssim": s_map[..., r : h - r, r : w - r].double().mean(dim=(2, 3)).mean(dim=1),
    }
    if mask is not None:
        m = _as_masks(mask, n, (h, w), x.device).unsqueeze(1).double()  # (N, 1, H, W)
        cnt = m.sum(dim=(1, 2, 3)) * c
        cnt_safe = cnt.clamp_min(1)
        nan = torch.full_like(cnt, float("nan"))
        out["l1_hole"] = torch.where(cnt > 0, (ad * m).sum(dim=(1, 2, 3)) / cnt_safe, nan)
        out["psnr_hole"] = torch.where(
            cnt > 0, _psnr_from_mse((sq * m).sum(dim=(1, 2, 3)) / cnt_safe, data_range), nan
        )
        out["ssim_hole"] = torch.where(cnt > 0, (s_map * m).sum(dim=(1, 2, 3)) / cnt_safe, nan)
    return {k: v.detach().to("cpu", torch.float64) for k, v in out.items()}


def _psnr_from_mse(mse: torch.Tensor, data_range: float) -> torch.Tensor:
    return 10.0 * torch.log10(data_range**2 / mse)  # mse == 0 -> +inf


def _single(preds, target, mask, data_range: float, key: str) -> float | np.ndarray:
    single = np.ndim(preds) == 3
    scores = image_scores(preds, target, mask, data_range=data_range)
    v = scores[key + ("_hole" if mask is not None else "")].numpy()
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


class ImageMetrics:
    """Accumulate per-image L1/PSNR/SSIM (whole and hole) over batches; :meth:`compute` gives means.

    Args:
        device: where :func:`image_scores` runs.
        dtype: its precision.

    Example:
        >>> m = ImageMetrics()
        >>> m.update(pred_batch, target_batch, mask_batch)   # (N, H, W, 3) uint8, (N, H, W) bool
        >>> m.compute()["ssim_hole"]
    """

    def __init__(self, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
        self.device = device
        self.dtype = dtype
        self.values: dict[str, list[np.ndarray]] = {}

    def update(self, preds, target, mask=None) -> dict[str, np.ndarray]:
        """Score one batch (see :func:`image_scores`) and keep the per-image values; returns them."""
        scores = {k: v.numpy() for k, v in image_scores(preds, target, mask, device=self.device, dtype=self.dtype).items()}
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
