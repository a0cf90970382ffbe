"""Statistics over per-image scores: summaries with bootstrap intervals, hole-area buckets, and paired
comparisons of two methods on the same images.

- :func:`describe` / :func:`summarize`: mean, std and the percentile-bootstrap 95 % interval of the mean
  (``scipy.stats.bootstrap``, 1000 resamples), overall, by mask type and by hole-area bucket.
- :func:`hole_buckets`: 10 % buckets of the hole's share of the face area (``pd.cut``), the way LaMa
  (Suvorov et al., WACV 2022) and CoModGAN (Zhao et al., ICLR 2021) report results by mask size.
- :func:`paired_comparison`: per metric, on the images both methods scored, the mean difference, its
  paired-bootstrap 95 % interval and the Wilcoxon signed-rank p-value (``scipy.stats.wilcoxon``).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as st

from ..core.errors import MaskbenchError
from .metrics import get_metric, higher_is_better

__all__ = [
    "BOOTSTRAP_RESAMPLES",
    "PSNR_CAP_DB",
    "HOLE_BUCKET_LABELS",
    "hole_buckets",
    "hole_face_fraction",
    "bootstrap_ci",
    "describe",
    "summarize",
    "is_metric",
    "paired_comparison",
    "paired_difference",
    "wilcoxon_p",
    "summary_lines",
    "FID_MIN_N",
    "fid_caveat",
]

BOOTSTRAP_RESAMPLES = 1000
#: Summaries cap per-image PSNR here (an MSE of 1e-10 on [0, 1]); per-image tables keep +inf.
PSNR_CAP_DB = 100.0
_EDGES = np.round(np.arange(0.0, 1.01, 0.1), 2)
#: ``"0-10%"``, ..., ``"90-100%"``; shares of 100 % or more fall in the last bucket.
HOLE_BUCKET_LABELS = tuple(f"{int(a * 100)}-{int(b * 100)}%" for a, b in zip(_EDGES[:-1], _EDGES[1:]))



class PairingError(MaskbenchError, ValueError):
    """Two per-image tables that cannot be paired (no ``id`` column, no image in common)."""


def hole_face_fraction(hole_pixels: float, face_box: Any, image_pixels: float) -> float:
    """The hole's area as a share of the face box area (``record["face_box"]``, ``x0, y0, x1, y1``).

    Falls back to the share of the image when the box is missing or degenerate. Scarves reach below the
    box, so the value can exceed 1.
    """
    try:
        x0, y0, x1, y1 = (float(v) for v in face_box)
        area = (x1 - x0) * (y1 - y0)
    except (TypeError, ValueError):
        area = 0.0
    return float(hole_pixels) / (area if area > 0 else float(image_pixels))


def hole_buckets(fractions) -> pd.Categorical:
    """10 % buckets of hole shares in ``[0, inf)``: ``(N,)`` floats -> ``pd.Categorical`` of
    :data:`HOLE_BUCKET_LABELS` (left-closed; values >= 0.9 in ``"90-100%"``; NaN stays NaN)."""
    f = np.clip(np.asarray(fractions, np.float64), 0.0, 0.999999)
    return pd.cut(f, bins=_EDGES, labels=list(HOLE_BUCKET_LABELS), right=False)


def is_metric(col: str) -> bool:
    """True for a registered metric column (``raw_`` variants included)."""
    try:
        get_metric(col)
        return True
    except KeyError:
        return False


def _clean(values, metric: str) -> np.ndarray:
    a = np.asarray(values, np.float64)
    a = a[~np.isnan(a)]
    if metric.removeprefix("raw_").startswith("psnr"):
        a = np.minimum(a, PSNR_CAP_DB)  # identical images give +inf, which would make every statistic inf
    return a


def bootstrap_ci(a: np.ndarray, seed: int = 0, statistic=np.mean) -> tuple[float, float]:
    """Percentile-bootstrap 95 % interval of ``statistic`` over a ``(N,)`` sample (scipy.stats.bootstrap,
    :data:`BOOTSTRAP_RESAMPLES` resamples). ``N == 1`` or a constant sample gives ``(v, v)``."""
    a = np.asarray(a, np.float64)
    v = float(statistic(a))
    if a.size < 2 or np.all(a == a[0]):
        return v, v
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        res = st.bootstrap((a,), statistic, n_resamples=BOOTSTRAP_RESAMPLES, confidence_level=0.95,
                           method="percentile", vectorized=True, rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def describe(values, metric: str, seed: int = 0) -> dict[str, Any]:
    """``{"mean", "std", "ci95": [lo, hi], "n", "higher_is_better"}`` of one metric's per-image values.

    NaNs are skipped; PSNR is capped at :data:`PSNR_CAP_DB`; an empty sample gives ``None`` values.
    """
    a = _clean(values, metric)
    hib = higher_is_better(metric)
    if a.size == 0:
        return {"mean": None, "std": None, "ci95": [None, None], "n": 0, "higher_is_better": hib}
    lo, hi = bootstrap_ci(a, seed)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if a.size > 1 else 0.0, "ci95": [lo, hi],
            "n": int(a.size), "higher_is_better": hib}


def summarize(table: pd.DataFrame, seed: int = 0) -> dict[str, Any]:
    """Summary statistics of a per-image table (rows as in ``per_image.parquet``).

    Returns:
        ``{"n", "n_failed", "metrics": {name: describe(...)}, "by_mask_type": {type: {"n", "metrics"}},
        "by_hole_bucket": {label: {"n", "metrics"}}}``; buckets come from the ``hole_bucket`` column.
    """
    metric_cols = [c for c in table.columns if is_metric(c)]

    def block(df: pd.DataFrame) -> dict[str, Any]:
        return {c: describe(df[c].to_numpy(np.float64), c, seed) for c in metric_cols}

    n_failed = int(table["error"].notna().sum()) if "error" in table.columns else 0
    out: dict[str, Any] = {"n": int(len(table)), "n_failed": n_failed, "metrics": block(table)}
    out["by_mask_type"] = {
        str(t): {"n": int(len(g)), "metrics": block(g)} for t, g in table.groupby("mask_type", dropna=True, sort=True)
    }
    buckets = table["hole_bucket"].astype(str) if "hole_bucket" in table.columns else pd.Series(dtype=str)
    out["by_hole_bucket"] = {
        label: {"n": int((buckets == label).sum()), "metrics": block(table[buckets == label])}
        for label in HOLE_BUCKET_LABELS
        if (buckets == label).any()
    }
    return out


def paired_comparison(a: pd.DataFrame, b: pd.DataFrame, metrics=None, seed: int = 0) -> pd.DataFrame:
    """Compare two methods image by image.

    Args:
        a, b: per-image tables with an ``id`` column and metric columns.
        metrics: names to compare; default every per-image metric both tables hold.
        seed: seeds the bootstrap.

    Returns:
        One row per metric: ``metric, n, mean_a, mean_b, diff`` (mean of ``a - b`` over the images both
        scored), ``ci_low, ci_high`` (paired-bootstrap 95 % interval of that mean), ``p_wilcoxon``
        (two-sided Wilcoxon signed-rank; 1.0 when every difference is 0), ``better`` (``"a"``, ``"b"``
        or ``""`` when the interval contains 0).

    Raises:
        ValueError: no ``id`` column, or no image in common.
    """
    if "id" not in a.columns or "id" not in b.columns:
        raise PairingError("per-image tables need an 'id' column")
    j = a.merge(b, on="id", how="inner", suffixes=("_a", "_b"))
    if j.empty:
        raise PairingError("the two runs have no image in common (different datasets?)")
    if metrics is None:
        metrics = [c for c in a.columns if is_metric(c) and not c.startswith("raw_") and c in b.columns
                   and get_metric(c).per_image]
    rows = []
    for m in metrics:
        x = j[f"{m}_a"].to_numpy(np.float64)
        y = j[f"{m}_b"].to_numpy(np.float64)
        if m.startswith("psnr"):
            x, y = np.minimum(x, PSNR_CAP_DB), np.minimum(y, PSNR_CAP_DB)
        keep = ~(np.isnan(x) | np.isnan(y))
        x, y = x[keep], y[keep]
        if x.size == 0:
            continue
        row = paired_difference(x, y, seed)
        rows.append({"metric": m, **row, "better": _better(m, row["ci_low"], row["ci_high"])})
    return pd.DataFrame(rows, columns=["metric", "n", "mean_a", "mean_b", "diff", "ci_low", "ci_high", "p_wilcoxon",
                                       "better"])


def paired_difference(x, y, seed: int = 0) -> dict[str, Any]:
    """Two paired samples ``(N,)`` (image by image): ``n, mean_a, mean_b, diff`` (mean of ``x - y``),
    ``ci_low, ci_high`` (its percentile-bootstrap 95 % interval, :func:`bootstrap_ci`) and ``p_wilcoxon``
    (:func:`wilcoxon_p`)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    d = x - y
    lo, hi = bootstrap_ci(d, seed)
    return {"n": int(d.size), "mean_a": float(x.mean()), "mean_b": float(y.mean()), "diff": float(d.mean()),
            "ci_low": lo, "ci_high": hi, "p_wilcoxon": wilcoxon_p(d)}


def wilcoxon_p(d: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired differences ``d`` (``scipy.stats.wilcoxon``,
    zeros dropped); 1.0 when no difference is non-zero."""
    d = np.asarray(d, np.float64)
    d = d[~np.isnan(d)]
    if d.size == 0 or not np.any(d != 0):
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        p = st.wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue
    return float(p) if not math.isnan(p) else 1.0


def _better(metric: str, lo: float, hi: float) -> str:
    if lo <= 0 <= hi:
        return ""
    a_higher = lo > 0
    return "a" if a_higher == higher_is_better(metric) else "b"


#: Below this many images FID is flagged wherever a summary prints it: the Inception features are 2048-d,
#: so under 2048 images their covariance is rank-deficient, and at any finite n FID is biased upwards by an
#: amount that depends on n (Chong & Forsyth, CVPR 2020; pytorch-fid's README asks for >= 2048).
FID_MIN_N = 2048


def fid_caveat(n: int | None) -> str:
    """``""`` for an FID over at least :data:`FID_MIN_N` images, else the caveat a summary line carries:
    the n, the reason, and what to read instead (KID, unbiased, on the in-the-wild track; FIDs only at
    equal n)."""
    if n is not None and n >= FID_MIN_N:
        return ""
    return (f"  [n < {FID_MIN_N}: FID is biased high at small n, by an amount that depends on n; compare FIDs "
            "only at equal n; KID (unbiased; the in-the-wild track reports it) is the one to read]")


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """One line per reported metric of a ``summary.json`` (registry order): name, mean, 95 % interval, n
    (FID with :func:`fid_caveat` under :data:`FID_MIN_N` images); then the recognizer and the ceiling's
    rank-1 when identity was scored."""
    from .metrics import METRICS, format_value

    lines = []
    for name, metric in METRICS.items():
        if name == "fid":
            if summary.get("fid") is not None:
                n = summary.get("fid_n")
                lines.append(f"{'fid':16s} {format_value('fid', summary['fid'])}  n={n}{fid_caveat(n)}")
            continue
        m = summary.get("metrics", {}).get(name)
        if m and m["mean"] is not None:
            lo, hi = (format_value(name, v) for v in m["ci95"])
            lines.append(f"{name:16s} {format_value(name, m['mean'])}  [{lo}, {hi}]  n={m['n']}")
    if summary.get("identity_model"):
        ceil = (summary.get("ceiling") or {}).get("identity_rank1") or {}
        extra = f"; originals' rank-1 (ceiling) {ceil['mean']:.3f}" if ceil.get("mean") is not None else ""
        lines.append(f"identity recognizer: {summary['identity_model']}{extra}")
    return lines
