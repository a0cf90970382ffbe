"""The in-the-wild track: how a method does on real photos of people wearing masks, where there is no
ground truth (``maskbench wild --data DIR --reference DIR``).

Pipeline:

1. **Photos** (:func:`prepare_faces`): ``wild:DIR`` (a folder, read as synthesis reads one:
   :func:`maskbench.data.sources.resolve_source`, every entry accounted for) or ``wild:hf:<repo_id>`` (a hub
   dataset's image column). Each photo is detected with YuNet (:class:`maskbench.faces.yunet.YuNet`, largest
   face, score >= 0.6; a photo longer than 2048 px, :data:`maskbench.faces.yunet.DETECT_MAX_SIDE`, is
   detected on a shrunk copy so that memory stays bounded) and aligned, from the full photo, with
   synthesis's FFHQ rule computed from YuNet's eye centres and mouth corners
   (:func:`maskbench.faces.yunet.yunet_quad`), at synthesis's size (256 px). A photo that cannot be
   read or decoded, or where no face is found, is listed in the run's failures with the reason and takes
   no further part. Detections are cached in ``cache_dir()/wild`` by the photos' content hash and the
   detector, so reruns (other methods) only re-read and warp.
2. **Masks**: a blind method finds them itself. A given-mask method runs on the masks a named blind
   method predicts (``mask_from``, required for given-mask methods); those masks are cached per photo
   set, mask source (name, options, weights) and seed, so every given-mask method reuses one run of it.
3. **Restore** every aligned face (batches; a batch that raises is retried image by image; an image
   that still fails is recorded and scored as its unrestored input, the floor, as in
   :mod:`maskbench.bench.evaluate`), then run the **segmenter** (the blind method itself, or the ``mask_from``
   method) again on each output.
4. **Scores** (:class:`maskbench.measures.set_distances.ReferenceDistances`), each with a 95 % interval:

   - ``fid`` and ``kid``: FID and KID (Binkowski et al., ICLR 2018; unbiased; cubic polynomial kernel;
     clean-fid/torchmetrics subsets) between the restored aligned crops and the aligned crops of the
     reference photos (real unmasked faces of a comparable population, through the same detector and
     alignment), on the FID network's 2048-d pool features. Intervals: bootstrap over the restored
     images, reference fixed, bias-shifted (see :mod:`maskbench.measures.set_distances`).
   - ``mask_left_behind``: the share of outputs in which the segmenter still marks more than
     :data:`LEFT_THRESHOLD` of the crop's pixels as mask, with its Wilson score interval. 0 is best.
   - the **floor**: the same three for the unrestored aligned inputs (the segmenter's detection rate on
     them is the floor's ``mask_left_behind``).
   - ``reference_mask_rate``: the share of the *unmasked* reference faces the segmenter flags the same
     way, its false-alarm rate. ``mask_left_behind`` means something only where the floor's rate is high
     and this one low: a segmenter trained on synthetic pairs alone has never seen an unmasked face and
     may mark the lower face of every face (the provisional 3dprior N_3D marks 13-29 % of the crop, 5th to
     95th percentile, on 100 unmasked dev faces, as much as on masked ones).

   Input and reference features are cached (``cache_dir()/wild``), so a method's run costs its own
   forward passes, its segmenter pass and one Inception pass over its outputs.
5. **Results** in ``{out}/{method}/wild-{photos fingerprint}-{reference fingerprint}-{args hash}/``:
   ``per_image.parquet`` (one row per photo: ``id``, ``error``, ``detection_score``, ``hole_fraction``
   on the input, ``left_fraction`` on the output, ``left_behind``), ``summary.json`` (``kind: "wild"``,
   the scores, the floor, failures), ``contact_sheet.jpg`` (the first :data:`SHEET_FACES` faces: input
   with the mask found outlined, output, output with what the segmenter still finds shaded) and
   ``manifest.json`` (options, weights cards of method and mask source, fingerprints, detector,
   versions, timings; written last, ``complete: true``). Each finished batch is written to ``partial/``
   atomically, so an interrupted run resumes, with any batch size, and a complete one is reused (the run
   engine, :mod:`maskbench.bench.runs`, which the synthetic track shares).
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from ..core.errors import MaskbenchError
from ..core.io import ImageDecodeError, atomic_write_bytes, atomic_write_json, decode_image, stable_message
from ..core.paths import recorded_path
from ..core.progress import progress_bar
from ..core.resources import cache_dir
from ..data.sources import SourceError, SourceItem, resolve_source
from ..measures.stats import fid_caveat
from .runs import (
    RunFolder,
    RunResult,
    Scored,
    Span,
    args_digest,
    failure_list,
    method_card,
    predict_each,
    run_batches,
    run_manifest,
    run_path,
)

__all__ = [
    "WILD_PREFIX",
    "LEFT_THRESHOLD",
    "SHEET_FACES",
    "WildError",
    "WildConfig",
    "WildResult",
    "FaceSet",
    "is_wild",
    "prepare_faces",
    "face_features",
    "evaluate_wild",
    "parse_judge",
    "compare_wild",
    "format_wild_comparison",
    "is_wild_run",
]

WILD_PREFIX = "wild:"
#: An output still shows its mask when the segmenter marks more than this share of the aligned 256 px crop
#: (5 %: about a fifth of a typical mask, which covers 13-40 % of the crop on the real dev photos, 3dprior's
#: provisional N_3D; a few stray dilated pixels along the jaw stay below it). How often the segmenter
#: flags unmasked reference faces at this threshold is reported beside it (``reference_mask_rate``).
LEFT_THRESHOLD = 0.05
#: Faces on each run's contact sheet (the first ones with a face found, in photo order).
SHEET_FACES = 8
_SHEET_TILE = 128
_CACHE_VERSION = 2  # 2: photos over DETECT_MAX_SIDE px are detected on a shrunk copy
_OBJECT_COLUMNS = ("error", "segmenter_error", "left_behind")  # None stays None in the tables


class WildError(MaskbenchError, ValueError):
    """Bad input to the in-the-wild track (a given-mask method without a mask source, a photo set with no
    face, ...); the message is one readable line."""


def is_wild(data: str | None) -> bool:
    """True for a ``wild:...`` data argument."""
    return isinstance(data, str) and data.startswith(WILD_PREFIX)


@dataclass(frozen=True)
class WildConfig:
    """What to evaluate on real photos and how (the options of ``maskbench wild``).

    Attributes:
        method: registered method name.
        data: ``wild:DIR`` or ``wild:hf:<repo_id>`` (the prefix may be left out here).
        reference: real unmasked faces: a folder or ``hf:<repo_id>``.
        mask_from: the blind method whose predicted masks a given-mask method fills (required for one).
        mask_from_args: the mask source's options, sorted ``(key, value)`` pairs.
        method_args: the method's options, sorted ``(key, value)`` pairs.
        limit: only the first ``limit`` photos (in ``source_id`` order); the reference is always whole.
        size: side of the aligned crops (synthesis's default, 256).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        batch_size: faces per predict call and per Inception forward.
        out: results root.
        seed: seeds the methods' noise (:func:`maskbench.methods.predictors.batch_generator`), KID's subsets and
            the bootstrap.
        fid_weights: explicit Inception weights file.
        bootstraps: bootstrap resamples behind the FID and KID intervals.
        left_threshold: share of the crop the segmenter must mark for a mask to count as left behind.
        hub_split: split read from ``hf:`` sources.
        ceiling_share: this share of the reference photos (a fixed draw by a hash of each photo's id,
            :func:`ceiling_part`) is held out of the reference as the **ceiling**: real unmasked faces scored
            like a method's outputs, the best a restoration can look. With it each row also gets the share of
            the floor-to-ceiling KID gap it closes. None: no ceiling, the whole folder is the reference.
        judges: more segmenters that judge the mask left behind, each ``(method, sorted (key, value) pairs)``
            of a blind method (e.g. the same method with its earlier weights, ``variant=...``), so that a
            segmenter does not grade only its own outputs: each judge's rate is reported beside the
            segmenter's, on the outputs, the inputs (floor) and the reference (false alarms), with per-photo
            columns ``left_fraction_j{k}`` / ``left_behind_j{k}`` for paired comparisons
            (:func:`compare_wild`).
        half: score only the photos of this half (``harvest`` or ``measurement``) of the split file
            ``split_file`` (default: the shipped ``mask_templates/photo/real_masked_dev_split.csv``, which
            splits ``real-masked-dev``; its harvest half is where the photo templates were keyed from, so
            methods trained on ``mix`` synthesis have seen those masks). None: every photo.
        split_file: the split file ``half`` reads (None: the shipped one).
    """

    method: str
    data: str
    reference: str
    mask_from: str | None = None
    mask_from_args: tuple[tuple[str, Any], ...] = ()
    method_args: tuple[tuple[str, Any], ...] = ()
    limit: int | None = None
    size: int = 256
    device: str = "auto"
    batch_size: int = 16
    out: str = "results"
    seed: int = 0
    fid_weights: str | None = None
    bootstraps: int = 200
    left_threshold: float = LEFT_THRESHOLD
    hub_split: str = "train"
    ceiling_share: float | None = None
    judges: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...] = ()
    half: str | None = None
    split_file: str | None = None

    def args_hash(self, weights: str | None, mask_weights: str | None, detector: str,
                  judge_weights: tuple[str | None, ...] = ()) -> str:
        """10 hex digits over the options that change results (not device, batch size or out)."""
        key = {k: v for k, v in asdict(self).items() if k not in ("device", "batch_size", "out", "data", "reference")}
        if key.get("ceiling_share") is None:  # runs made before the ceiling existed keep their folder
            key.pop("ceiling_share", None)
        for k in ("half", "split_file"):  # the photo set's fingerprint already names the photos
            key.pop(k, None)
        if not key.get("judges"):  # ... and before the judges
            key.pop("judges", None)
        else:
            key["judge_weights"] = list(judge_weights)
        key.update({"weights": weights, "mask_weights": mask_weights, "detector": detector})
        return args_digest(key)

    def judge_labels(self) -> list[str]:
        """``method`` or ``method[key=value,...]`` for each judge, as :func:`parse_judge` reads them."""
        return [m + (f"[{','.join(f'{k}={v}' for k, v in args)}]" if args else "") for m, args in self.judges]


def parse_judge(spec: str) -> tuple[str, tuple[tuple[str, Any], ...]]:
    """``METHOD`` or ``METHOD:KEY=VALUE[,KEY=VALUE]`` (``maskbench wild --judge``) -> ``(method, sorted
    pairs)``; values are read as :func:`maskbench.methods.predictors.parse_method_args` reads them.

    Raises:
        WildError: an empty method name or a pair without ``=``.
    """
    from ..methods.predictors import parse_method_args

    method, _, rest = spec.partition(":")
    if not method.strip():
        raise WildError(f"--judge {spec!r}: expected METHOD or METHOD:KEY=VALUE[,KEY=VALUE]")
    pairs = [p for p in rest.split(",") if p.strip()] if rest else []
    if any("=" not in p for p in pairs):
        raise WildError(f"--judge {spec!r}: options are KEY=VALUE pairs separated by commas")
    return method.strip(), tuple(sorted(parse_method_args(tuple(pairs)).items()))


class WildResult(RunResult):
    """What :func:`evaluate_wild` returns (:class:`maskbench.bench.runs.RunResult`)."""


# ------------------------------------------------------------------------------------------- photos


@dataclass
class FaceSet:
    """Photos with their detections: which have a usable face, and where it is.

    Attributes:
        spec: the source as given (``DIR`` or ``hf:<repo_id>``).
        items: the photos, in ``source_id`` order.
        fingerprint: 16 hex digits over the photos' ids and content.
        quads: ``(N, 4, 2) float64`` FFHQ crop corners in photo pixels (NaN where no face).
        scores: ``(N,) float64`` YuNet scores (NaN where no face).
        errors: per photo ``None`` or why it has no face (unreadable, not an image, no face found).
        detector: the detector's name and threshold.
    """

    spec: str
    items: list[SourceItem]
    fingerprint: str
    quads: np.ndarray
    scores: np.ndarray
    errors: list[str | None]
    detector: str

    @property
    def found(self) -> np.ndarray:
        """``(K,) int`` positions of the photos with a face."""
        return np.array([i for i, e in enumerate(self.errors) if e is None], int)

    @property
    def key(self) -> str:
        """Cache key of the detections (content fingerprint and detector)."""
        return hashlib.sha256(f"{_CACHE_VERSION}|{self.fingerprint}|{self.detector}".encode()).hexdigest()[:20]

    def crops(self, positions, size: int) -> np.ndarray:
        """The aligned crops of the photos at ``positions`` (each must have a face).

        Returns:
            ``(K, size, size, 3) uint8``.

        Raises:
            ImageDecodeError, OSError: a photo changed or vanished since it was detected.
        """
        from ..faces.landmarks import warp_quad

        out = np.empty((len(positions), size, size, 3), np.uint8)
        for j, i in enumerate(positions):
            image = decode_image(self.items[i].read_bytes(), self.items[i].source_id)
            out[j] = warp_quad(image, self.quads[i], size)[0]
        return out


def ceiling_part(source_id: str, share: float) -> bool:
    """Whether a reference photo belongs to the held-out ceiling: a fixed draw by a SHA-256 hash of its id
    (the same photos for every run, machine and method)."""
    h = hashlib.sha256(f"maskbench-ceiling-v1|{source_id}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64 < share


def _source(spec: str, hub_split: str):
    """Resolve a wild or reference source (a folder or ``hf:<repo_id>``); raises :class:`WildError`."""
    rest = spec[len(WILD_PREFIX):] if is_wild(spec) else spec
    if not rest:
        raise WildError(f"{spec!r}: name a folder of photos or hf:<repo_id> (e.g. wild:photos/)")
    if not rest.startswith("hf:") and not Path(rest).expanduser().is_dir():
        raise WildError(f"{rest}: no such folder (expected a folder of photos or hf:<repo_id>)")
    try:
        return resolve_source(rest, hub_split=hub_split)
    except SourceError as e:
        raise WildError(str(e).splitlines()[0]) from None


def _label(spec: str) -> str:
    """A short name of a photo source for progress bars: its last path component."""
    return Path(spec.removeprefix(WILD_PREFIX).rstrip("/")).name or spec


def prepare_faces(spec: str, *, limit: int | None = None, detector=None, hub_split: str = "train",
                  cache: bool = True, log: Callable[[str], None] | None = None, progress: bool = False,
                  keep: set[str] | None = None) -> FaceSet:
    """Read, fingerprint and detect every photo of a source (module docstring, step 1).

    Args:
        spec: ``wild:DIR``, ``DIR``, ``wild:hf:<repo_id>`` or ``hf:<repo_id>``.
        limit: only the first ``limit`` photos.
        detector: a :class:`maskbench.faces.yunet.YuNet` (default: a new one).
        hub_split: the split of a hub source.
        cache: read and write the detections in ``cache_dir()/wild``.
        log: receives a line per stage, or ``None``.
        progress: a progress bar over the detections on stderr.
        keep: only the photos whose ``source_id`` is in this set (before ``limit``).

    Returns:
        :class:`FaceSet` (photos without a face carry their reason in ``errors``).

    Raises:
        WildError: no such folder, an empty one, or a hub dataset that cannot be loaded.
        maskbench.core.resources.ModelNotFoundError: no YuNet model.
    """
    from ..faces.yunet import YuNet, yunet_quad

    detector = detector or YuNet()
    source = _source(spec, hub_split)
    items = [it for it in source.items if it.source_id in keep] if keep is not None else source.items
    if keep is not None and not items:
        raise WildError(f"{spec}: none of its photos is in the chosen half of the split file")
    items = items[:limit] if limit else items
    contents: list[bytes | None] = []
    errors: list[str | None] = []
    h = hashlib.sha256()
    for it in items:
        data, err = None, it.problem
        if err is None:
            try:
                data = it.read_bytes()
            except OSError as e:
                err = f"cannot read ({stable_message(e)})"
        contents.append(data)
        errors.append(err)
        h.update(f"{it.source_id}|{hashlib.sha256(data).hexdigest() if data is not None else err}\n".encode())
    detector_name = f"{detector.name} score>={detector.score_threshold:g}"
    faces = FaceSet(spec, list(items), h.hexdigest()[:16], np.full((len(items), 4, 2), np.nan),
                    np.full(len(items), np.nan), errors, detector_name)
    path = cache_dir() / "wild" / f"faces-{faces.key}.json"
    if cache and path.is_file():
        try:
            saved = json.loads(path.read_text())
            faces.quads = np.array(saved["quads"], np.float64).reshape(len(items), 4, 2)
            faces.scores = np.array(saved["scores"], np.float64)
            faces.errors = list(saved["errors"])
            return faces
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache file is recomputed
    t0 = time.perf_counter()
    for i, (it, data) in enumerate(progress_bar(len(items), f"faces {_label(spec)}", enabled=progress, unit="photo",
                                                iterable=zip(items, contents))):
        if data is None:
            continue
        try:
            image = decode_image(data, it.source_id)
        except ImageDecodeError as e:
            faces.errors[i] = str(e).removeprefix(f"{it.source_id}: ")
            continue
        found = detector(image)
        if found is None:
            faces.errors[i] = f"no face found (YuNet score >= {detector.score_threshold:g})"
            continue
        quad = yunet_quad(found.points)
        if not np.isfinite(quad).all() or np.hypot(*(quad[3] - quad[0])) < 2:
            faces.errors[i] = "face points too close together to align"
            continue
        faces.quads[i], faces.scores[i] = quad, found.score
    if log:
        log(f"{spec}: {len(items)} photos, face found in {len(faces.found)} ({time.perf_counter() - t0:.0f} s)")
    if cache:
        atomic_write_json(path, {"quads": np.where(np.isnan(faces.quads), None, faces.quads).tolist(),
                                 "scores": [None if np.isnan(s) else float(s) for s in faces.scores],
                                 "errors": faces.errors})
        # JSON has no NaN: None reads back as NaN through np.array(..., float64)
    return faces


def face_features(faces: FaceSet, net, size: int, *, batch_size: int = 16, cache: bool = True,
                  progress: bool = False) -> np.ndarray:
    """FID-network features of the aligned crops of every photo with a face, in photo order.

    Args:
        faces: the detected photos.
        net: ``(N, S, S, 3) uint8 -> (N, D)`` with a ``weights_sha256`` attribute
            (:class:`maskbench.measures.fid.InceptionFeatures`).
        size: crop side.
        batch_size: crops per forward.
        cache: read and write ``cache_dir()/wild/features-*.npy``.
        progress: a progress bar on stderr (when the features are computed).

    Returns:
        ``(len(faces.found), D) float64``.
    """
    tag = str(getattr(net, "weights_sha256", type(net).__name__))[:12]
    path = cache_dir() / "wild" / f"features-{faces.key}-{size}-{tag}.npy"
    found = faces.found
    if cache and path.is_file():
        try:
            feats = np.load(path)
            if len(feats) == len(found):
                return feats.astype(np.float64)
        except (OSError, ValueError):
            pass
    parts = []
    with progress_bar(len(found), f"features {_label(faces.spec)}", enabled=progress, unit="face") as bar:
        for s in range(0, len(found), batch_size):
            parts.append(np.asarray(net(faces.crops(found[s:s + batch_size], size)), np.float64))
            bar.update(len(parts[-1]))
    feats = np.concatenate(parts) if parts else np.zeros((0, 2048))
    if cache:
        buf = io.BytesIO()
        np.save(buf, feats.astype(np.float32))
        atomic_write_bytes(path, buf.getvalue())
    return feats.astype(np.float32).astype(np.float64)  # cached or not, the same numbers


# ------------------------------------------------------------------------------------------- methods


def _predict(predictor, images: np.ndarray, masks: np.ndarray | None, seed: int, ids: list[str]):
    """Run ``predictor`` on a batch, retrying image by image (:func:`maskbench.bench.runs.predict_each`).

    Returns:
        ``(outputs, masks, errors)``: ``(K, S, S, 3) uint8`` (a failed image's output is its input),
        ``(K, S, S) bool`` (the given masks, or the blind method's; empty for a failure), and per image
        ``None`` or the error message.
    """
    res = predict_each(predictor, images, masks, seed=seed, ids=ids)
    return res.images, (masks if res.masks is None else res.masks), res.errors


def _segment(segmenter, images: np.ndarray, seed: int, ids: list[str]) -> tuple[np.ndarray, list[str | None]]:
    """A blind method's masks of ``images`` and per image ``None`` or its error: through its ``segment``
    method where it has one (the masks :meth:`predict` would return, without the restoration, which a
    segmenter pass does not need), else through ``predict`` (:func:`_predict`); a batch that raises in
    ``segment`` goes through ``predict``, image by image."""
    seg = getattr(segmenter, "segment", None)
    if seg is not None:
        try:
            return np.asarray(seg(images), bool), [None] * len(images)
        except Exception:  # noqa: BLE001 - predict_each records each image's own error
            pass
    return _predict(segmenter, images, None, seed, ids)[1:]


def _source_masks(faces: FaceSet, segmenter, config: WildConfig, seg_key: str,
                  log: Callable[[str], None] | None, progress: bool = False) -> tuple[np.ndarray, list[str | None]]:
    """The segmenter's masks of every found face of ``faces``, ``(K, S, S) bool``, cached (module docstring,
    step 2), and per face ``None`` or why the segmenter failed (its mask is then empty)."""
    path = cache_dir() / "wild" / f"masks-{faces.key}-{config.size}-{seg_key}.npz"
    found = faces.found
    shape = (len(found), config.size, config.size)
    if path.is_file():
        try:
            with np.load(path) as z:
                masks = np.unpackbits(z["bits"], count=int(np.prod(shape))).reshape(shape).astype(bool)
                errors = [e or None for e in z["errors"].tolist()]
            return masks, errors
        except (OSError, ValueError, KeyError):
            pass
    t0 = time.perf_counter()
    masks = np.zeros(shape, bool)
    errors: list[str | None] = []
    with progress_bar(len(found), f"{segmenter.name} masks {_label(faces.spec)}", enabled=progress, unit="face") as bar:
        for s in range(0, len(found), config.batch_size):
            pos = found[s:s + config.batch_size]
            ids = [faces.items[i].source_id for i in pos]
            m, err = _segment(segmenter, faces.crops(pos, config.size), config.seed, ids)
            masks[s:s + len(pos)] = m
            errors += err
            bar.update(len(pos))
    if log:
        log(f"segmenter {segmenter.name} on {faces.spec}: {len(found)} faces ({time.perf_counter() - t0:.0f} s)")
    buf = io.BytesIO()
    np.savez(buf, bits=np.packbits(masks.ravel()), errors=np.array([e or "" for e in errors], dtype=object).astype(str))
    atomic_write_bytes(path, buf.getvalue())
    return masks, errors


def _check_tracks(config: WildConfig):
    """The method's class and the segmenter's (mask source) class; raises :class:`WildError` on a bad pair."""
    from ..methods.predictors import check_options, get_predictor_class

    cls = get_predictor_class(config.method)
    check_options(cls, dict(config.method_args), config.method)
    if cls.track == "blind":
        if config.mask_from:
            raise WildError(f"--mask-from is for given-mask methods; {config.method} is blind and finds its own masks")
        return cls, cls
    if not config.mask_from:
        raise WildError(f"{config.method} needs a mask and wild photos have none: name a blind method that predicts "
                        "them with --mask-from (e.g. --mask-from 3dprior)")
    seg = get_predictor_class(config.mask_from)
    check_options(seg, dict(config.mask_from_args), config.mask_from)
    if seg.track != "blind":
        raise WildError(f"--mask-from {config.mask_from}: not a blind method (it does not predict masks)")
    return cls, seg


def _half_files(config: WildConfig) -> set[str] | None:
    """The photo names ``config.half`` keeps, or None; raises :class:`WildError` on a bad split file or half."""
    from ..data.realism import RealismError, real_split_files

    if config.half is None:
        return None
    try:
        return real_split_files(config.split_file, config.half)
    except RealismError as e:
        raise WildError(str(e)) from None


def _flags(masks: np.ndarray, errors: list[str | None], threshold: float) -> np.ndarray:
    """Per face without a segmenter error: does its mask cover more than ``threshold`` of the crop."""
    return np.array([m.mean() > threshold for m, e in zip(masks, errors) if e is None], bool)


def _seg_key(method: str, opts: dict, weights: str | None, seed: int) -> str:
    """Cache key of a segmenter's masks: its name, options, weights and the run's seed."""
    return hashlib.sha256(json.dumps([method, sorted(opts.items()), weights, seed], default=str).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------------- run


def evaluate_wild(config: WildConfig, progress: bool = False, *, net=None, detector=None,
                  log: Callable[[str], None] | None = None,
                  on_progress: Callable[[int, int], None] | None = None) -> WildResult:
    """Evaluate ``config.method`` on real masked photos and write the results folder (module docstring).

    Args:
        config: the run's options.
        progress: progress bars (rate and ETA) on stderr for every pass: detections, features, mask source,
            restoration.
        net: feature network (default :class:`maskbench.measures.fid.InceptionFeatures`; tests pass a small one).
        detector: face detector (default :class:`maskbench.faces.yunet.YuNet`).
        log: receives one line per stage (detections, features, mask source), or ``None``.
        on_progress: called as ``on_progress(done_faces, total_faces)`` when the restoration starts and after
            each batch is written.

    Returns:
        :class:`WildResult`.

    Raises:
        WildError: a given-mask method without ``mask_from`` (or a blind one with it), a mask source that
            is not blind, a missing folder, no face in the photos or fewer than 2 in the reference.
        maskbench.methods.predictors.UnknownMethodError, RegistryError: unknown or broken method.
        maskbench.core.resources.ModelNotFoundError: YuNet, Inception or a method's weights unavailable.
        ValueError: bad option (batch size, limit, device, size).
    """
    from ..methods.predictors import resolve_device

    if config.ceiling_share is not None and not 0.0 < config.ceiling_share < 1.0:
        raise WildError(f"--ceiling-share must be in (0, 1), got {config.ceiling_share}")
    if config.batch_size < 1 or (config.limit is not None and config.limit < 1) or config.size < 32:
        raise WildError(f"need batch size >= 1, limit >= 1 and size >= 32, got {config.batch_size}, {config.limit}, "
                         f"{config.size}")
    from ..methods.predictors import blind_predictor_class

    cls, seg_cls = _check_tracks(config)
    judge_classes = [blind_predictor_class(m, dict(args), "--judge") for m, args in config.judges]
    keep = _half_files(config)  # a bad split file or half fails before anything loads
    device = resolve_device(config.device)
    method_opts, seg_opts = dict(config.method_args), dict(config.mask_from_args if config.mask_from else config.method_args)
    # the methods load first: a missing model fails in one line before minutes of detection and features
    predictor = cls(device=device, **method_opts)
    segmenter = predictor if not config.mask_from else seg_cls(device=device, **seg_opts)
    judges = [jc(device=device, **dict(args)) for jc, (_, args) in zip(judge_classes, config.judges)]
    judge_weights = tuple(jc.weights_fingerprint(**dict(args)) for jc, (_, args) in zip(judge_classes, config.judges))
    from ..faces.yunet import YuNet

    detector = detector or YuNet()
    faces = prepare_faces(config.data, limit=config.limit, detector=detector, hub_split=config.hub_split, log=log,
                          progress=progress, keep=keep)
    if len(faces.found) == 0:
        raise WildError(f"{config.data}: no face found in any of {len(faces.items)} photos "
                        f"(e.g. {faces.items[0].source_id if faces.items else '-'}: {faces.errors[0] if faces.errors else ''})")
    ref = prepare_faces(config.reference, detector=detector, hub_split=config.hub_split, log=log, progress=progress)
    if len(ref.found) < 2:
        raise WildError(f"--reference {config.reference}: faces found in {len(ref.found)} photos, need at least 2")
    weights = cls.weights_fingerprint(**method_opts)
    seg_weights = seg_cls.weights_fingerprint(**seg_opts)
    run_dir = run_path(config.out, config.method, f"wild-{faces.fingerprint[:8]}-{ref.fingerprint[:8]}-"
                                                  f"{config.args_hash(weights, seg_weights, faces.detector, judge_weights)}")
    folder = RunFolder(run_dir, object_columns=_OBJECT_COLUMNS + tuple(f"left_behind_j{k}" for k in range(len(judges))))
    summary = folder.completed()
    if summary is not None:
        return WildResult(run_dir, summary, summary.get("failures", []), reused=True)

    started = time.time()
    if net is None:
        from ..measures.fid import InceptionFeatures

        net = InceptionFeatures(config.fid_weights, device)
    say = log or (lambda s: None)
    t0 = time.perf_counter()
    ref_feats = face_features(ref, net, config.size, batch_size=config.batch_size, progress=progress)
    ceiling_feats = None
    if config.ceiling_share is not None:
        held = np.array([ceiling_part(ref.items[i].source_id, config.ceiling_share) for i in ref.found], bool)
        ceiling_feats, ref_feats = ref_feats[held], ref_feats[~held]
        if len(ceiling_feats) < 2 or len(ref_feats) < 2:
            raise WildError(f"--ceiling-share {config.ceiling_share}: {len(ceiling_feats)} ceiling and {len(ref_feats)} "
                            "reference faces; need at least 2 of each")
    in_feats = face_features(faces, net, config.size, batch_size=config.batch_size, progress=progress)
    say(f"features of {len(ref_feats)} reference and {len(in_feats)} input faces ({time.perf_counter() - t0:.0f} s)")
    seg_key = _seg_key(config.mask_from or config.method, seg_opts, seg_weights, config.seed)
    given, given_errors = None, None
    if config.mask_from:
        given, given_errors = _source_masks(faces, segmenter, config, seg_key, log, progress)
    ref_masks, ref_errors = _source_masks(ref, segmenter, config, seg_key, log, progress)
    ref_flags = _flags(ref_masks, ref_errors, config.left_threshold)
    judged = []  # per judge: its label, weights, flags on the inputs (floor) and on the reference
    for label, judge, jw, (method, args) in zip(config.judge_labels(), judges, judge_weights, config.judges):
        key = _seg_key(method, dict(args), jw, config.seed)
        judged.append({"label": label, "method": method, "options": dict(args), "weights": jw,
                       "floor": _flags(*_source_masks(faces, judge, config, key, log, progress), config.left_threshold),
                       "reference": _flags(*_source_masks(ref, judge, config, key, log, progress),
                                           config.left_threshold)})

    batches = folder.batches([faces.items[i].source_id for i in faces.found], config.batch_size)
    run_batches(batches, partial(_score_batch, config=config, faces=faces, predictor=predictor, segmenter=segmenter,
                                 given=given, given_errors=given_errors, net=net, judges=judges),
                progress=progress, desc=config.method, unit="face", on_progress=on_progress)
    table, arrays = batches.load()
    out_feats = np.concatenate([f.astype(np.float64) for f in arrays["features"]])
    sheet = {k: np.concatenate(arrays[k]) for k in ("sheet_input", "sheet_output", "sheet_mask", "sheet_left")
             if k in arrays}
    table = _add_failed_photos(table, faces)
    summary = _summarize(table, ref_feats, in_feats, out_feats, config, cls, seg_cls, faces, ref, ceiling_feats)
    summary["reference_mask_rate"] = _left_behind(ref_flags)
    if judged:
        summary["judges"] = [{k: j[k] for k in ("label", "method", "options", "weights")} for j in judged]
        summary["metrics"]["mask_left_behind_judged"] = {
            j["label"]: _left_behind(table[f"left_behind_j{k}"].dropna().to_numpy(bool)) for k, j in enumerate(judged)}
        summary["floor"]["mask_left_behind_judged"] = {j["label"]: _left_behind(j["floor"]) for j in judged}
        summary["reference_mask_rate_judged"] = {j["label"]: _left_behind(j["reference"]) for j in judged}
    _write_contact_sheet(run_dir / "contact_sheet.jpg", sheet, config)
    folder.finish(table, summary, _manifest(config, cls, seg_cls, faces, ref, net, device, started, summary))
    return WildResult(run_dir, summary, summary["failures"])


def _score_batch(span: Span, *, config: WildConfig, faces: FaceSet, predictor, segmenter, given, given_errors,
                 net, judges=()) -> Scored:
    """Restore, re-segment (by the segmenter and each judge) and featurize the found faces ``span`` covers."""
    s = span.start
    pos = faces.found[s:span.stop]
    ids = [faces.items[i].source_id for i in pos]
    crops = faces.crops(pos, config.size)
    if given is None:
        outputs, masks, errors = _predict(predictor, crops, None, config.seed, ids)
    else:
        outputs, masks, errors = _predict(predictor, crops, given[s:s + len(pos)], config.seed, ids)
        errors = [e or (f"mask source: {g}" if g else None) for e, g in zip(errors, given_errors[s:s + len(pos)])]
    left, seg_errors = _segment(segmenter, outputs, config.seed + 1, ids)
    by_judge = [_segment(judge, outputs, config.seed + 1, ids) for judge in judges]
    rows = []
    for j, i in enumerate(pos):
        seg_ok = seg_errors[j] is None
        left_frac = float(left[j].mean()) if seg_ok else float("nan")
        row = {"id": ids[j], "error": errors[j], "detection_score": float(faces.scores[i]),
               "hole_fraction": float(masks[j].mean()), "left_fraction": left_frac,
               "left_behind": bool(left_frac > config.left_threshold) if seg_ok else None,
               "segmenter_error": seg_errors[j]}
        for k, (jm, jerr) in enumerate(by_judge):
            frac = float(jm[j].mean()) if jerr[j] is None else float("nan")
            row[f"left_fraction_j{k}"] = frac
            row[f"left_behind_j{k}"] = bool(frac > config.left_threshold) if jerr[j] is None else None
        rows.append(row)
    arrays = {"features": np.asarray(net(outputs), np.float32)}
    sheet = [j for j in range(len(pos)) if s + j < SHEET_FACES]
    if sheet:
        arrays.update({"sheet_input": crops[sheet], "sheet_output": outputs[sheet], "sheet_mask": masks[sheet],
                       "sheet_left": left[sheet]})
    return Scored(rows, arrays)


def _add_failed_photos(table: pd.DataFrame, faces: FaceSet) -> pd.DataFrame:
    """All photos in photo order: the scored faces and, for the rest, the reason they have no face."""
    failed = pd.DataFrame([{"id": it.source_id, "error": e} for it, e in zip(faces.items, faces.errors) if e is not None])
    table = pd.concat([table, failed], ignore_index=True) if len(failed) else table
    order = {it.source_id: i for i, it in enumerate(faces.items)}
    return table.sort_values("id", key=lambda c: c.map(order), kind="stable").reset_index(drop=True)


def _left_behind(flags: np.ndarray) -> dict[str, Any]:
    """Share of True with its Wilson 95 % interval (``None`` values when there is nothing to count)."""
    from ..data.realism import wilson_interval

    n, k = int(len(flags)), int(np.sum(flags))
    if n == 0:
        return {"value": None, "ci95": [None, None], "k": 0, "n": 0}
    lo, hi = wilson_interval(k, n)
    return {"value": k / n, "ci95": [lo, hi], "k": k, "n": n}


def _summarize(table, ref_feats, in_feats, out_feats, config, cls, seg_cls, faces, ref,
               ceiling_feats=None) -> dict[str, Any]:
    from ..measures.set_distances import KID_SUBSET_SIZE, KID_SUBSETS, ReferenceDistances, gap_closed

    dist = ReferenceDistances(ref_feats)
    scored = table[table["hole_fraction"].notna()]
    left = scored["left_behind"].dropna().to_numpy(bool)
    restored = dist.scores(out_feats, bootstraps=config.bootstraps, seed=config.seed)
    floor = _floor_scores(dist, in_feats, config, faces, ref)
    floor_left = (scored["hole_fraction"].to_numpy(np.float64) > config.left_threshold)
    if config.mask_from is None:  # a blind method's own masks on its inputs: those of failed images are empty
        floor_left = floor_left[scored["error"].isna().to_numpy()]
    failures = failure_list(table)
    segmenter = config.mask_from or config.method
    ceiling, closed = None, None
    if ceiling_feats is not None:
        ceiling = {k: v.as_dict() for k, v in dist.scores(ceiling_feats, bootstraps=config.bootstraps,
                                                           seed=config.seed).items()}
        closed = gap_closed(dist, out_feats, in_feats, ceiling_feats, bootstraps=config.bootstraps, seed=config.seed)
        closed = {"value": closed["value"], "ci95": closed["ci95"], "n": closed["n"]}
    return {
        "kind": "wild",
        "method": config.method,
        "track": cls.track,
        "mask_source": segmenter,
        "mask_source_options": dict(config.mask_from_args if config.mask_from else config.method_args),
        "data": recorded_path(config.data),
        "reference": recorded_path(config.reference),
        "dataset_fingerprint": faces.fingerprint,
        "reference_fingerprint": ref.fingerprint,
        "n_photos": len(faces.items),
        "n_faces": int(len(faces.found)),
        "n_reference": int(len(ref_feats)),
        "n_no_face": int(sum(e is not None for e in faces.errors)),
        "n_failed": len(failures),
        "failures": failures,
        "failures_scored_as": "masked-input",
        "metrics": {**{k: v.as_dict() for k, v in restored.items()}, "mask_left_behind": _left_behind(left),
                    **({} if closed is None else {"kid_gap_closed": closed})},
        "floor": {**floor, "mask_left_behind": _left_behind(floor_left)},
        **({} if ceiling is None else {"ceiling": ceiling, "n_ceiling": int(len(ceiling_feats))}),
        "settings": {
            "size": config.size,
            "detector": faces.detector,
            "alignment": "FFHQ quad from YuNet's eye centres and mouth corners (maskbench.faces.yunet.yunet_quad)",
            "features": "FID network pool3 (2048-d)",
            "kid": f"unbiased MMD^2, k(x,y)=(x.y/d+1)^3, mean of {KID_SUBSETS} subsets of "
                   f"min(n, n_ref, {KID_SUBSET_SIZE}) (Binkowski et al. 2018; clean-fid)",
            "interval": f"FID/KID: {config.bootstraps} bootstrap resamples of the restored images, reference fixed, "
                        "percentile interval shifted by the bootstrap bias; mask_left_behind: Wilson score 95 %",
            "left_threshold": config.left_threshold,
            "ceiling": None if ceiling_feats is None else (
                f"{config.ceiling_share:g} of the reference photos held out (SHA-256 of the id), scored as a method's "
                "outputs; KID gap closed = (floor - method) / (floor - ceiling), paired bootstrap over the photos"),
            "segmenter": segmenter,
            "seed": config.seed,
        },
    }


def _floor_scores(dist, in_feats: np.ndarray, config: WildConfig, faces: FaceSet, ref: FaceSet) -> dict[str, Any]:
    """FID and KID of the unrestored inputs (cached: the same for every method on one photo set)."""
    key = hashlib.sha256(f"{faces.key}|{ref.key}|{config.size}|{config.bootstraps}|{config.seed}|"
                         f"{in_feats.shape}|{float(in_feats.sum())!r}".encode()).hexdigest()[:20]
    path = cache_dir() / "wild" / f"floor-{key}.json"
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            pass
    out = {k: v.as_dict() for k, v in dist.scores(in_feats, bootstraps=config.bootstraps, seed=config.seed).items()}
    atomic_write_json(path, out)
    return out


def _write_contact_sheet(path: Path, sheet: dict[str, np.ndarray], config: WildConfig) -> None:
    """Columns: the first faces; rows: input with the mask found outlined (green), output, output with what
    the segmenter still marks shaded (red) and its share of the crop."""
    import cv2

    if not sheet:
        return
    t, label_w, gap = _SHEET_TILE, 88, 16
    k = len(sheet["sheet_input"])
    rows = (("input + mask", sheet["sheet_input"], sheet["sheet_mask"], "outline"),
            ("output", sheet["sheet_output"], None, None),
            ("left behind", sheet["sheet_output"], sheet["sheet_left"], "shade"))
    img = np.full((len(rows) * (t + gap), label_w + k * t, 3), 255, np.uint8)
    for r, (label, ims, masks, how) in enumerate(rows):
        y = r * (t + gap) + gap
        cv2.putText(img, label, (3, y + t // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        for c in range(k):
            tile = cv2.resize(ims[c], (t, t), interpolation=cv2.INTER_AREA)
            if masks is not None:
                m = cv2.resize(masks[c].astype(np.uint8), (t, t), interpolation=cv2.INTER_NEAREST)
                if how == "outline":
                    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
                    cv2.drawContours(tile, contours, -1, (0, 220, 0), 1)
                else:
                    tile = np.where(m[..., None] > 0, (0.5 * tile + [127, 0, 0]).astype(np.uint8), tile)
                    share = float(masks[c].mean())
                    color = (200, 0, 0) if share > config.left_threshold else (0, 130, 0)
                    cv2.putText(img, f"{share:.1%}", (label_w + c * t + 3, y - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.35,
                                color, 1, cv2.LINE_AA)
            img[y:y + t, label_w + c * t:label_w + (c + 1) * t] = tile
    ok, buf = cv2.imencode(".jpg", img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 88])
    if ok:
        atomic_write_bytes(path, buf.tobytes())


def _manifest(config, cls, seg_cls, faces, ref, net, device, started, summary) -> dict[str, Any]:
    seg_opts = dict(config.mask_from_args if config.mask_from else config.method_args)
    return run_manifest(
        config, device=device, started=started, n_failed=summary["n_failed"],
        kind="wild",
        method=method_card(config.method, cls, dict(config.method_args)),
        mask_source=method_card(config.mask_from or config.method, seg_cls, seg_opts),
        dataset={"spec": recorded_path(config.data), "fingerprint": faces.fingerprint, "n": len(faces.items),
                 "faces": int(len(faces.found))},
        reference={"spec": recorded_path(config.reference), "fingerprint": ref.fingerprint, "n": len(ref.items),
                   "faces": int(len(ref.found))},
        detector=faces.detector,
        fid_weights={"path": recorded_path(str(getattr(net, "weights_path", ""))), "sha256": getattr(net, "weights_sha256", None)},
    )


def is_wild_run(path: str | Path) -> bool:
    """True for a finished in-the-wild run folder (its ``summary.json`` says ``kind: wild``)."""
    try:
        return json.loads((Path(path) / "summary.json").read_text()).get("kind") == "wild"
    except (OSError, ValueError):
        return False


def compare_wild(a: str | Path, b: str | Path, seed: int = 0) -> pd.DataFrame:
    """Paired comparison of two in-the-wild runs on the photos both scored, judge by judge: the mask left
    behind as each judge (``WildConfig.judges``) that both runs share, by label, sees it.

    Args:
        a, b: finished wild run folders (the same photos; e.g. a method before and after retraining, both
            run with the same ``--judge`` options).
        seed: seeds the bootstrap.

    Returns:
        :func:`maskbench.measures.stats.paired_comparison`'s columns, one row per judge and quantity:
        ``mask_left_behind[LABEL]`` (share of photos, 0/1 per photo; the Wilcoxon test on 0/1 differences is
        McNemar's test's normal form) and ``left_fraction[LABEL]`` (share of the crop still marked).

    Raises:
        WildError: a folder is not a finished wild run, the two share no judge, or no photo.
    """
    from ..measures.stats import paired_difference

    runs = []
    for d in (a, b):
        if not is_wild_run(d):
            raise WildError(f"{d}: not a finished in-the-wild run folder (no summary.json of kind wild)")
        summary = json.loads((Path(d) / "summary.json").read_text())
        table = pd.read_parquet(Path(d) / "per_image.parquet")
        runs.append(({j["label"]: k for k, j in enumerate(summary.get("judges", []))}, table))
    (ja, ta), (jb, tb) = runs
    shared = [label for label in ja if label in jb]
    if not shared:
        raise WildError(f"{a} and {b} share no judge (run both with the same --judge options)")
    rows = []
    for label in shared:
        for name, col in (("mask_left_behind", "left_behind"), ("left_fraction", "left_fraction")):
            x = ta[["id", f"{col}_j{ja[label]}"]].rename(columns={f"{col}_j{ja[label]}": "a"})
            y = tb[["id", f"{col}_j{jb[label]}"]].rename(columns={f"{col}_j{jb[label]}": "b"})
            j = x.merge(y, on="id").dropna()
            if j.empty:
                raise WildError(f"{a} and {b} have no photo in common")
            row = paired_difference(j["a"], j["b"], seed)
            better = "a" if row["ci_high"] < 0 else "b" if row["ci_low"] > 0 else ""  # lower is better
            rows.append({"metric": f"{name}[{label}]", **row, "better": better})
    return pd.DataFrame(rows)


def format_wild_comparison(table: pd.DataFrame, a: str, b: str) -> list[str]:
    """:func:`compare_wild`'s table as lines: per judge and quantity, both means, ``a - b``, its paired 95 %
    bootstrap interval, the Wilcoxon p and which run the interval favours (lower is better)."""
    n = int(table["n"].max()) if len(table) else 0
    lines = [f"A = {a}", f"B = {b}", f"A - B, paired over the {n} photos both scored; lower is better; "
             "interval: 95 % paired bootstrap; p: Wilcoxon signed-rank"]
    width = max([len(m) for m in table["metric"]] + [6])
    lines.append(f"{'judge':{width}s} {'n':>5s} {'A':>7s} {'B':>7s} {'A - B':>8s} {'95% interval':>19s} {'p':>8s}  better")
    for r in table.itertuples():
        better = {"a": "A", "b": "B"}.get(r.better, "no significant difference")
        lines.append(f"{r.metric:{width}s} {r.n:5d} {r.mean_a:7.3f} {r.mean_b:7.3f} {r.diff:+8.3f} "
                     f"{f'[{r.ci_low:+.3f}, {r.ci_high:+.3f}]':>19s} {r.p_wilcoxon:8.2g}  {better}")
    return lines


def format_wild_summary(summary: dict[str, Any]) -> list[str]:
    """The scores of a wild ``summary.json`` as lines: each metric of the method and of the floor with its
    95 % interval, then counts."""

    def cell(d: dict | None, scale: float = 1.0, fmt: str = "{:.2f}") -> str:
        if not d or d.get("value") is None:
            return "-"
        lo, hi = d["ci95"]
        return f"{fmt.format(d['value'] * scale)} [{fmt.format(lo * scale)}, {fmt.format(hi * scale)}]"

    lines = [f"{'':22s} {'FID':>22s} {'KID x 1000':>22s} {'mask left behind':>22s}"]
    for label, block in ((summary["method"], summary["metrics"]), ("floor (unrestored)", summary["floor"])):
        lines.append(f"{label[:22]:22s} {cell(block.get('fid')):>22s} {cell(block.get('kid'), 1000):>22s} "
                     f"{cell(block.get('mask_left_behind'), 1, '{:.3f}'):>22s}")
    if summary.get("ceiling"):
        c = summary["ceiling"]
        lines.append(f"{'ceiling (real unmasked)':22s} {cell(c.get('fid')):>22s} {cell(c.get('kid'), 1000):>22s}")
        closed = summary["metrics"].get("kid_gap_closed")
        lines.append(f"share of the floor-to-ceiling KID gap closed: {cell(closed, 1, '{:.3f}')}")
    s = summary["settings"]
    ref_rate = summary.get("reference_mask_rate")
    if ref_rate:
        lines.append(f"{'reference (unmasked)':22s} {'':>22s} {'':>22s} {cell(ref_rate, 1, '{:.3f}'):>22s}")
    for label, rate in summary["metrics"].get("mask_left_behind_judged", {}).items():
        lines.append(f"judged by {label}: mask left behind {cell(rate, 1, '{:.3f}')}, floor "
                     f"{cell(summary['floor']['mask_left_behind_judged'][label], 1, '{:.3f}')}, reference "
                     f"{cell(summary['reference_mask_rate_judged'][label], 1, '{:.3f}')}")
    lines.append(f"{summary['n_faces']} of {summary['n_photos']} photos with a face; reference {summary['n_reference']} "
                 f"faces; segmenter {s['segmenter']}, left behind = marks > {s['left_threshold']:.0%} of the crop")
    caveat = fid_caveat(summary["n_faces"])
    if caveat:
        lines.append("FID" + caveat)
    return lines
