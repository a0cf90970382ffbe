"""Distances between a set of image features and a fixed reference set, with bootstrap intervals:
FID and KID. Used where there are no pairs to score image by image (the in-the-wild track,
:mod:`maskbench.bench.wild`).

- **FID** (Heusel et al., NeurIPS 2017): ``|mu_x - mu_r|^2 + tr(S_x) + tr(S_r) - 2 tr((S_x S_r)^(1/2))``,
  the same quantity as :func:`maskbench.measures.fid.frechet_distance` (``tests/test_wild.py`` checks the two
  agree), computed in a low-rank form so that a bootstrap is affordable: with ``A = S_r^(1/2)`` (one
  ``eigh`` of the reference covariance), ``S_x S_r`` has the eigenvalues of ``A S_x A``, whose non-zero
  eigenvalues are those of the ``n x n`` Gram matrix of the centred, ``A``-mapped features; a resample
  needs only that Gram matrix's rows and one ``eigvalsh`` of at most ``n x n``.
- **KID** (Binkowski, Sutherland, Arbel & Gretton, "Demystifying MMD GANs", ICLR 2018): the unbiased
  estimator of the squared MMD with the cubic polynomial kernel ``k(x, y) = (x . y / d + 1)^3`` (``d``
  the feature width), averaged over ``subsets`` random subsets of ``m = min(n_x, n_r, subset_size)``
  images of each set drawn without replacement: the scheme and defaults (100 subsets of at most 1,000)
  of clean-fid's ``kernel_distance`` and torchmetrics' ``KernelInceptionDistance``. Unlike FID it is
  unbiased at small ``n`` and can be slightly negative when the sets match.
- **Intervals** (:meth:`ReferenceDistances.scores`): bootstrap over the images of the evaluated set
  (``B`` resamples with replacement), the reference held fixed: the interval says how much the score
  depends on which photos were drawn, and since every row of a table shares the reference, it is the
  interval to compare rows with. Given the same ``seed`` and ``n``, every set is resampled with the same
  indices (paired resamples across methods). A resample holds about 63 % distinct images and FID grows as
  the number of distinct images falls, so FID's replicates sit above the estimate (by some 30 % at
  ``n = 200``); the interval is therefore the percentile interval of the replicates shifted by the
  bootstrap's bias estimate ``mean(replicates) - estimate`` (Efron & Tibshirani, "An Introduction to the
  Bootstrap", 1993, Sec. 10.6), i.e. centred on the estimate with the replicates' spread. KID is treated
  the same way; its resampled U-statistic leaves out the pairs of a duplicate with its copy, so its bias
  shift is small. FID's interval is clipped at 0.

Kernel matrices are held in memory (``n^2`` float64 each): fine up to some 10^4 images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "KID_SUBSETS",
    "KID_SUBSET_SIZE",
    "polynomial_kernel",
    "kid_subsets",
    "kernel_inception_distance",
    "SetScore",
    "ReferenceDistances",
    "bootstrap_counts",
    "gap_closed",
]

KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """KID's kernel ``k(x, y) = (x . y / d + 1)^3`` (Binkowski et al. 2018, Sec. 4).

    Args:
        x: ``(N, D)`` features; y: ``(M, D)`` features.

    Returns:
        ``(N, M) float64``.

    Raises:
        ValueError: the widths differ or an input is not 2-D.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"expected (N, D) and (M, D) features of one width, got {x.shape} and {y.shape}")
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def _quad(c: np.ndarray, k: np.ndarray, c2: np.ndarray | None = None) -> np.ndarray:
    """Row-wise ``c_s^T K c2_s`` for count matrices ``c`` ``(S, N)`` and ``c2`` ``(S, M)``."""
    c2 = c if c2 is None else c2
    return np.einsum("sm,sm->s", c @ k, c2)


def _within(c: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Mean kernel value over the pairs of distinct images of each subset (rows of counts ``c``): the
    U-statistic term of unbiased MMD^2. Pairs of an image with itself, including a bootstrap duplicate
    with its copy, are left out (``k(x, x)`` is not a between-image similarity)."""
    self_pairs = (c * c) @ np.diag(k)
    m = c.sum(1)
    return (_quad(c, k) - self_pairs) / (m * m - (c * c).sum(1))


def _subset_mmd2(kxx, kyy, kxy, cx: np.ndarray, cy: np.ndarray) -> np.ndarray:
    """Unbiased MMD^2 (Gretton et al., JMLR 2012, eq. 3) of each subset given as counts: ``cx`` ``(S, Nx)``,
    ``cy`` ``(S, Ny)``, each row summing to ``m``."""
    m = cx.sum(1)
    return _within(cx, kxx) + _within(cy, kyy) - 2.0 * _quad(cx, kxy, cy) / (m * m)


def _subset_counts(pool: np.ndarray, size: int, m: int, subsets: int, rng: np.random.Generator) -> np.ndarray:
    """``(subsets, size)`` counts of ``m`` draws without replacement from the positions of ``pool`` (indices
    into ``range(size)``, possibly repeated)."""
    out = np.zeros((subsets, size))
    for s in range(subsets):
        np.add.at(out[s], pool[rng.choice(len(pool), m, replace=False)], 1.0)
    return out


def kid_subsets(x: np.ndarray, y: np.ndarray, *, subsets: int = KID_SUBSETS, subset_size: int = KID_SUBSET_SIZE,
                seed: int = 0) -> np.ndarray:
    """The per-subset unbiased MMD^2 values behind KID (module docstring).

    Args:
        x, y: ``(N, D)`` and ``(M, D)`` features.
        subsets: number of subsets.
        subset_size: largest subset; the subsets hold ``m = min(N, M, subset_size)`` of each set.
        seed: seeds the draws.

    Returns:
        ``(subsets,) float64``.

    Raises:
        ValueError: fewer than 2 images in a set, or widths differ.
    """
    if len(x) < 2 or len(y) < 2:
        raise ValueError(f"KID needs at least 2 images per set, got {len(x)} and {len(y)}")
    kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    m = min(len(x), len(y), subset_size)
    rng = np.random.default_rng(seed)
    cx = _subset_counts(np.arange(len(x)), len(x), m, subsets, rng)
    cy = _subset_counts(np.arange(len(y)), len(y), m, subsets, rng)
    return _subset_mmd2(kxx, kyy, kxy, cx, cy)


def kernel_inception_distance(x: np.ndarray, y: np.ndarray, *, subsets: int = KID_SUBSETS,
                              subset_size: int = KID_SUBSET_SIZE, seed: int = 0) -> tuple[float, float]:
    """KID between feature sets ``x`` and ``y`` (module docstring), as torchmetrics returns it.

    Returns:
        ``(mean, std)`` over the subsets (float; std with ``ddof=0`` as torchmetrics).

    Raises:
        ValueError: see :func:`kid_subsets`.
    """
    v = kid_subsets(x, y, subsets=subsets, subset_size=subset_size, seed=seed)
    return float(v.mean()), float(v.std())


@dataclass(frozen=True)
class SetScore:
    """One set-level score with its interval.

    Attributes:
        value: the estimate on the full set.
        ci95: ``(low, high)`` percentile-bootstrap 95 % interval (``None`` values with fewer than 2 images).
        n: images in the set.
    """

    value: float | None
    ci95: tuple[float | None, float | None]
    n: int

    def as_dict(self) -> dict:
        return {"value": self.value, "ci95": list(self.ci95), "n": self.n}


class ReferenceDistances:
    """FID and KID of feature sets against one fixed reference (module docstring).

    Args:
        reference: ``(M, D)`` reference features (M >= 2).
        subsets, subset_size: KID's subset scheme.

    Raises:
        ValueError: fewer than 2 reference images.
    """

    def __init__(self, reference: np.ndarray, *, subsets: int = KID_SUBSETS, subset_size: int = KID_SUBSET_SIZE):
        r = np.asarray(reference, np.float64)
        if r.ndim != 2 or len(r) < 2:
            raise ValueError(f"reference must be (M >= 2, D) features, got {r.shape}")
        self.reference = r
        self.subsets, self.subset_size = int(subsets), int(subset_size)
        self.mu = r.mean(0)
        cov = np.cov(r, rowvar=False)
        w, v = np.linalg.eigh(cov)
        self._sqrt = (v * np.sqrt(np.clip(w, 0, None))) @ v.T  # A = S_r^(1/2), symmetric
        self._trace = float(np.trace(cov))
        self._kyy = polynomial_kernel(r, r)

    def fid(self, x: np.ndarray, counts: np.ndarray | None = None) -> np.ndarray:
        """FID of ``x`` against the reference, for the full set or for resamples.

        Args:
            x: ``(N, D)`` features, N >= 2.
            counts: ``(B, N)`` how often each image is drawn in each resample (rows summing to N), or
                ``None`` for the set itself.

        Returns:
            ``(B,)`` (or ``(1,)``) float64 distances.
        """
        x = np.asarray(x, np.float64)
        n = len(x)
        c_all = np.ones((1, n)) if counts is None else np.asarray(counts, np.float64)
        y = (x - self.mu) @ self._sqrt  # A-mapped; shifting by a constant leaves the covariance alone
        g = y @ y.T
        sq = np.einsum("ij,ij->i", x - self.mu, x - self.mu)  # |x_i - mu_r|^2
        xs = x - self.mu
        out = np.empty(len(c_all))
        for b, c in enumerate(c_all):
            mu_b = c @ xs / n  # mean offset from the reference mean
            tr_x = (c @ sq - n * mu_b @ mu_b) / (n - 1)
            u = np.flatnonzero(c)
            gc = g @ c / n  # y_i . nu
            nn = c @ g @ c / n**2  # |nu|^2
            centred = g[np.ix_(u, u)] - gc[u][:, None] - gc[u][None, :] + nn
            s = np.sqrt(c[u])
            lam = np.linalg.eigvalsh(centred * s[:, None] * s[None, :] / (n - 1))
            out[b] = mu_b @ mu_b + tr_x + self._trace - 2.0 * np.sqrt(np.clip(lam, 0, None)).sum()
        return out

    def kid(self, x: np.ndarray, counts: np.ndarray | None = None, seed: int = 0) -> np.ndarray:
        """KID of ``x`` against the reference (mean over subsets), for the full set or for resamples.

        The reference subsets depend only on ``seed`` and the subset size, so every set and resample of one
        size meets the same reference subsets.

        Args:
            x: ``(N, D)`` features, N >= 2.
            counts: ``(B, N)`` resample counts as in :meth:`fid`, or ``None``.
            seed: seeds the subset draws.

        Returns:
            ``(B,)`` (or ``(1,)``) float64.
        """
        x = np.asarray(x, np.float64)
        n, nr = len(x), len(self.reference)
        kxx, kxy = polynomial_kernel(x, x), polynomial_kernel(x, self.reference)
        m = min(n, nr, self.subset_size)
        cy = _subset_counts(np.arange(nr), nr, m, self.subsets, np.random.default_rng([seed, m]))
        yy = _within(cy, self._kyy)
        c_all = np.ones((1, n), int) if counts is None else np.asarray(counts).astype(int)
        out = np.empty(len(c_all))
        for b, c in enumerate(c_all):
            if m == n:  # every subset of x is the whole (resampled) set
                cx = c[None, :].astype(np.float64)
            else:
                cx = _subset_counts(np.repeat(np.arange(n), c), n, m, self.subsets, np.random.default_rng([seed, m, b]))
            xy = ((cx @ kxy) * cy).sum(1) / (m * m)  # cx broadcasts when it is one row
            out[b] = float(np.mean(_within(cx, kxx) + yy - 2.0 * xy))
        return out

    def scores(self, x: np.ndarray, *, bootstraps: int = 200, seed: int = 0) -> dict[str, SetScore]:
        """``{"fid": SetScore, "kid": SetScore}`` of ``x``: estimates on the full set and percentile-bootstrap
        95 % intervals from ``bootstraps`` resamples of ``x`` (seeded by ``seed`` and ``N`` only, so sets of
        one size are resampled alike).

        Args:
            x: ``(N, D)`` features; with ``N < 2`` every value is ``None``.
        """
        x = np.asarray(x, np.float64)
        n = len(x)
        if n < 2:
            empty = SetScore(None, (None, None), n)
            return {"fid": empty, "kid": empty}
        counts = bootstrap_counts(n, bootstraps, seed)
        out = {}
        for name, fn in (("fid", self.fid), ("kid", self.kid)):
            value = float(fn(x)[0])
            reps = fn(x, counts) if bootstraps > 0 else np.array([value])
            lo, hi = np.percentile(reps - (reps.mean() - value), [2.5, 97.5])
            if name == "fid":  # a distance: the shift may not take it below 0
                lo, hi = max(lo, 0.0), max(hi, 0.0)
            out[name] = SetScore(value, (float(lo), float(hi)), n)
        return out


def bootstrap_counts(n: int, bootstraps: int, seed: int = 0) -> np.ndarray:
    """``(bootstraps, n) int`` how often each of ``n`` items is drawn in each resample (with replacement),
    seeded by ``seed`` and ``n`` only: two sets of one size, in one order, are resampled alike (paired)."""
    rng = np.random.default_rng([seed, n])
    if bootstraps <= 0:
        return np.zeros((0, n), int)
    return np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(bootstraps)])


def gap_closed(dist: ReferenceDistances, restored: np.ndarray, floor: np.ndarray, ceiling: np.ndarray, *,
               bootstraps: int = 200, seed: int = 0) -> dict:
    """Share of the floor-to-ceiling KID gap a method closes: ``(KID_floor - KID_restored) / (KID_floor -
    KID_ceiling)`` (1: as close to the reference as real unmasked photos, 0: no better than its input).

    ``restored`` and ``floor`` are the same photos in the same order (each restored face and its masked input),
    so they are resampled together; ``ceiling`` (real unmasked faces that are not in the reference) is resampled
    on its own. Interval: the 2.5th and 97.5th percentiles of the share over ``bootstraps`` resamples.

    Args:
        dist: distances to the reference.
        restored, floor: ``(N, D)`` features, paired by row.
        ceiling: ``(M, D)`` features.

    Returns:
        ``{"value": float | None, "ci95": [lo, hi] | [None, None], "n": N}``; None where the floor is not
        above the ceiling (no gap to close).

    Raises:
        ValueError: ``restored`` and ``floor`` differ in length.
    """
    restored, floor, ceiling = (np.asarray(a, np.float64) for a in (restored, floor, ceiling))
    if len(restored) != len(floor):
        raise ValueError(f"gap_closed: {len(restored)} restored faces but {len(floor)} inputs")
    n = len(restored)
    out_v, in_v, c_v = (float(dist.kid(a)[0]) for a in (restored, floor, ceiling))  # as the table's KID
    if n < 2 or len(ceiling) < 2 or in_v <= c_v:
        return {"value": None, "ci95": [None, None], "n": n}
    paired, own = bootstrap_counts(n, bootstraps, seed), bootstrap_counts(len(ceiling), bootstraps, seed + 1)
    out_b, in_b, c_b = dist.kid(restored, paired), dist.kid(floor, paired), dist.kid(ceiling, own)
    gap = in_b - c_b
    share = np.where(gap > 0, (in_b - out_b) / np.where(gap > 0, gap, 1.0), np.nan)
    lo, hi = np.nanpercentile(share, [2.5, 97.5]) if np.isfinite(share).any() else (None, None)
    return {"value": (in_v - out_v) / (in_v - c_v), "ci95": [None if lo is None else float(lo),
                                                          None if hi is None else float(hi)], "n": n}
