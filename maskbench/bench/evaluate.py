"""Run a method on a dataset split and score it: the results folder behind ``maskbench evaluate``.

One run writes ``{out}/{method}/{dataset fingerprint}-{args hash}/``::

    per_image.parquet   one row per sample: id, identity, mask_type, hole_fraction, hole_face_fraction,
                        hole_bucket, the metrics (composite, and raw_* where a method touched pixels
                        outside the hole), identity_cosine/_match/_rank1, mask_iou/mask_f1 (blind
                        track), landmark_nme (methods that return landmarks), error (None, or the message of a failure scored as the masked input)
    summary.json        per metric: mean, std, 95% bootstrap CI, n, higher_is_better; the same by
                        mask_type and by hole-area bucket; FID; failures; the ceiling (originals)
    manifest.json       config, versions, git commit, seed, hardware, identity model, FID weights sha256,
                        dataset fingerprint, timings, ``complete``
    outputs/{id}.png    the method's raw outputs (``save_outputs=True``)

Scoring: the **composite** (prediction inside the true hole, original outside) is scored against the
original, whole image and hole only (see :mod:`maskbench.measures.metrics`); if the method changed any pixel
outside the hole, its **raw** output is scored too (``raw_*`` columns). FID compares the composites'
Inception statistics with the split's ORIGINAL images' statistics, which are cached by
``MaskedFaces.fingerprint()`` in ``cache_dir()/fid``; original-face identity embeddings are cached the
same way in ``cache_dir()/identity``.

Pipeline: worker threads decode a batch, run the method, composite, compute pixel metrics and cut the
identity chips, a batch or two ahead; the calling thread runs the networks (the Inception forward and
the identity embedder, both torch) on the batch in the meantime (OpenCV and torch release the GIL), so
torch never competes with itself for cores. Each finished batch is written to ``partial/`` atomically,
so an interrupted run resumes where it stopped, with any batch size (:mod:`maskbench.bench.runs`), and a
complete run is reused as is. A method that raises on a batch is
retried image by image; an image that still fails is recorded (``error``), **scored as the masked
input** (the floor: an unrestored face), and the run goes on; so is an image whose output gets a score
that is not a finite number (NaN, or infinite other than PSNR's exact match; hole scores of an image
without a hole are NaN by definition) or non-finite predicted landmarks (``ScoreError`` in ``error``).
So every run is scored on the full set: a method cannot gain rank by failing on hard images, and FID
always sees every image. A sample that cannot be read (a record refused for an unsafe id or file name, a missing or damaged PNG) is recorded as
failed without reaching the method, FID or the identity model (there is nothing to score); the cached
reference statistics are only written when every original was read.

Identity (:mod:`maskbench.faces.identity`): per image the cosine to the original, the match at the
recognizer's threshold and rank-1 identification against the originals of the OTHER photos of the
split (needs ``identity`` in the records). The same rank-1 of the originals themselves is the
``ceiling`` in ``summary.json``.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from ..core.errors import MaskbenchError
from ..core.io import atomic_write_bytes, write_png
from ..core.paths import recorded_path
from ..core.resources import cache_dir
from ..data.dataset import DatasetFormatError, MaskedFaces, SampleError, check_name
from ..measures.metrics import image_scores, landmark_nme, mask_f1, mask_iou, metric_names
from ..measures.stats import HOLE_BUCKET_LABELS, PSNR_CAP_DB, describe, hole_buckets, hole_face_fraction, summarize
from ..methods.predictors import Predictor, check_options, get_predictor_class, resolve_device
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

__all__ = ["EvalConfig", "EvalResult", "evaluate", "SpanScorer", "run_dir_for", "summarize", "HOLE_BUCKET_LABELS",
           "PSNR_CAP_DB", "FAILURE_FLOOR", "default_data", "demo_data", "DEFAULT_SYNTH_OUT"]

#: Where ``maskbench synth`` writes when no ``--out`` is given (the first place ``evaluate`` looks).
DEFAULT_SYNTH_OUT = "masked-faces"

_PIXEL_METRICS = metric_names("pixel")
#: What a failed image is scored as (recorded in summary.json).
FAILURE_FLOOR = "masked-input"



class EvaluationError(MaskbenchError, ValueError):
    """An evaluation setting out of its range (batch size, limit)."""

@dataclass(frozen=True)
class EvalConfig:
    """What to evaluate and how (the ``maskbench evaluate`` options).

    Attributes:
        method: registered method name.
        data: dataset folder (``maskbench synth`` output).
        split: ``"test"`` or ``"train"``.
        limit: evaluate only the first ``limit`` samples.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        batch_size: images per predict call and per Inception forward.
        save_outputs: also write the raw outputs as PNGs.
        out: results root folder.
        seed: seeds each batch's noise generator (:func:`maskbench.methods.predictors.batch_generator`, from the
            seed and the batch's sample ids) and the bootstrap; global RNGs are left alone.
        fid: compute FID.
        identity: compute identity cosine.
        identity_model: ``"sface"`` (default), ``"arcface"`` or ``"dlib"`` (see :mod:`maskbench.faces.identity`).
        fid_weights: explicit Inception weights file (see :func:`maskbench.measures.fid.resolve_fid_weights`).
        workers: threads preparing batches in parallel with the Inception forward.
        method_args: method options as sorted ``(key, value)`` pairs (``--method-arg key=value``), passed
            to the method's constructor and part of the results key.
    """

    method: str
    data: str
    split: str = "test"
    limit: int | None = None
    device: str = "auto"
    batch_size: int = 32
    save_outputs: bool = False
    out: str = "results"
    seed: int = 0
    fid: bool = True
    identity: bool = True
    identity_model: str = "sface"
    fid_weights: str | None = None
    workers: int = 2
    method_args: tuple[tuple[str, Any], ...] = ()

    def args_hash(self, weights: str | None = None) -> str:
        """10 hex digits over the options that change results (not device, batch size, out, workers).

        Args:
            weights: the fingerprint of the method's weights file (learned methods), so new weights give
                a new results folder.
        """
        key = {
            "method": self.method,
            "split": self.split,
            "limit": self.limit,
            "seed": self.seed,
            "fid": self.fid,
            "identity": self.identity,
            "identity_model": self.identity_model,
            "fid_weights": self.fid_weights,
            "save_outputs": self.save_outputs,
        }
        if self.method_args:
            key["method_args"] = {k: v for k, v in self.method_args}
        if weights:
            key["weights"] = weights
        return args_digest(key)


class EvalResult(RunResult):
    """What :func:`evaluate` returns (:class:`maskbench.bench.runs.RunResult`)."""


def default_data(split: str = "test") -> tuple[str, str]:
    """The dataset ``maskbench evaluate`` scores when no ``--data`` is given, and a one-line description.

    ``./masked-faces`` (``maskbench synth``'s default output) when it has ``split``; otherwise the built-in
    demo set (:func:`demo_data`).
    """
    local = Path(DEFAULT_SYNTH_OUT)
    if (local / split / "metadata.jsonl").is_file():
        return str(local), f"{local}/ ({split} split; maskbench synth's default output folder)"
    demo = demo_data()
    said = f"has no {split} split" if local.is_dir() else "not found"
    return str(demo), f"the built-in demo set in {demo} (one public-domain photo, five masks; ./{DEFAULT_SYNTH_OUT} {said})"


def demo_data() -> Path:
    """The built-in demo set: scikit-image's astronaut photograph (public domain) with each of the five mask
    types, all in its ``test`` split, made by ``maskbench synth``'s defaults on first use in
    ``cache_dir()/demo-masked-faces`` (also the face of ``maskbench demo`` without an image).

    Raises:
        maskbench.core.errors.MaskbenchError: the set cannot be made (e.g. the landmark model is missing).
    """
    from ..data.sources import resolve_source
    from ..data.synth import SynthConfig, synthesize

    demo = cache_dir() / "demo-masked-faces"
    if not (demo / "test" / "metadata.jsonl").is_file():
        synthesize(resolve_source(None), demo, SynthConfig(test_fraction=1.0), progress=False)
    return demo


def run_dir_for(config: EvalConfig, dataset: MaskedFaces) -> Path:
    """``{out}/{method}/{fingerprint}-{args hash}`` (the hash covers the method's weights file).

    Raises:
        maskbench.data.dataset.UnsafePathError: the method name is not safe as a folder name.
    """
    check_name(config.method, "method name")
    cls = get_predictor_class(config.method)
    check_options(cls, dict(config.method_args), config.method)
    weights = cls.weights_fingerprint(**dict(config.method_args))
    return run_path(config.out, config.method, f"{dataset.fingerprint()}-{config.args_hash(weights)}")


@dataclass
class _Batch:
    ids: list[str]
    rows: list[dict[str, Any]]
    composites: np.ndarray  # (K, H, W, 3) uint8 of the images that did not fail
    originals: np.ndarray | None  # (L, H, W, 3) of the samples read, when reference FID features are needed
    ok: list[int]  # positions (in the batch) of the images that did not fail
    # (chips of the L originals read, or None when their embeddings are cached; (K, S, S, 3) chips of the
    # composites; the cached original embeddings of the whole batch or None)
    identity: tuple[np.ndarray | None, np.ndarray, np.ndarray | None] | None
    loaded: list[int] = field(default_factory=list)  # positions of the L samples that could be read


def evaluate(config: EvalConfig, progress: bool = False, *,
             on_progress: Callable[[int, int], None] | None = None,
             log: Callable[[str], None] | None = None, engine: Any = None) -> EvalResult:
    """Evaluate ``config.method`` on ``config.data`` and write the results folder (module docstring).

    Args:
        config: the run's options.
        progress: show a progress bar (rate and ETA) on stderr.
        on_progress: called as ``on_progress(done_images, total_images)`` when the batch loop starts and after
            each batch is written.
        log: receives one line when this run also computes what a dataset's first run caches (the originals'
            FID statistics, their identity embeddings: the rank-1 gallery), or ``None``.
        engine: None to score in this process (``config.workers`` threads), or an engine that scores the
            batches elsewhere (:class:`maskbench.bench.evaluate_ray.RayEvalEngine`): ``device(requested)`` and
            ``run_spans(batches, scorer, progress=, desc=, on_progress=)``, which writes each finished batch as
            ``scorer`` (a :class:`SpanScorer` recipe) scores it. The set scores (FID, rank-1, intervals) are
            computed here, once, from the finished batches either way.

    Returns:
        :class:`EvalResult`.

    Raises:
        maskbench.data.dataset.DatasetFormatError: ``data`` is not a dataset or lacks the split.
        maskbench.methods.predictors.UnknownMethodError, RegistryError: unknown or broken method.
        ValueError: bad option (batch size, limit, device).
        maskbench.core.resources.ModelNotFoundError: FID or identity weights unavailable.
    """
    if config.batch_size < 1:
        raise EvaluationError(f"batch size must be >= 1, got {config.batch_size}")
    if config.limit is not None and config.limit < 1:
        raise EvaluationError(f"limit must be >= 1, got {config.limit}")
    dataset = MaskedFaces(config.data, config.split, config.limit)
    if len(dataset) == 0:
        raise DatasetFormatError(f"{config.data}: split '{config.split}' has no samples")
    cls = get_predictor_class(config.method)
    device = resolve_device(config.device)
    run_dir = run_dir_for(config, dataset)
    folder = RunFolder(run_dir)
    summary = folder.completed()
    if summary is not None:
        return EvalResult(run_dir, summary, summary.get("failures", []), reused=True)

    started = time.time()
    if engine is not None:  # the method is loaded where it runs
        device = engine.device(config.device)
    predictor = cls(device=device, **dict(config.method_args)) if engine is None else None
    fingerprint = dataset.fingerprint()
    feats = ref_stats = ref_path = None
    if config.fid:
        from ..measures.fid import FeatureStats, InceptionFeatures

        feats = InceptionFeatures(config.fid_weights, device)
        ref_path = cache_dir() / "fid" / f"{fingerprint}-{feats.weights_sha256[:12]}.npz"
        ref_stats = FeatureStats.load(ref_path) if ref_path.is_file() else None
    ident = orig_embed_cache = ident_path = None
    if config.identity:
        from ..faces.identity import load_identity_model

        ident = load_identity_model(config.identity_model, device)
        ident_path = cache_dir() / "identity" / f"{fingerprint}-{ident.name}.npy"
        if ident_path.is_file():
            orig_embed_cache = np.load(ident_path)

    first = []
    if feats is not None and ref_stats is None:
        first.append("Inception statistics")
    if ident is not None and orig_embed_cache is None:
        first.append(f"{ident.name} embeddings (the rank-1 gallery)")
    if first and log is not None:
        log(f"first run on {config.data} ({fingerprint}): also computing the originals' {' and '.join(first)}, "
            f"cached in {cache_dir()} for every later run on it")
    batches = folder.batches([_sample_id(r, i) for i, r in enumerate(dataset.records)], config.batch_size)
    try:
        if engine is not None:  # the actors' working folder is not ours: absolute paths
            here = replace(config, data=str(Path(config.data).expanduser().resolve()), fid_weights=(
                config.fid_weights and str(Path(config.fid_weights).expanduser().resolve())))
            engine.run_spans(batches, partial(SpanScorer, here, run_dir.resolve(), need_orig=ref_stats is None,
                                              orig_embed_cache=orig_embed_cache, device=device),
                             device=device, progress=progress, desc=config.method, on_progress=on_progress)
        else:
            run_batches(batches, partial(_prepare_batch, dataset=dataset, predictor=predictor, config=config,
                                         run_dir=run_dir, ident=ident, orig_embed_cache=orig_embed_cache,
                                         need_orig=ref_stats is None),
                        partial(_finish_batch, feats=feats, ident=ident), workers=max(1, config.workers),
                        progress=progress, desc=config.method, on_progress=on_progress)
        table, arrays = batches.load()
    finally:
        if ident is not None:
            ident.close()
    comp_feats, orig_feats = arrays.get("features", []), arrays.get("orig_features", [])
    orig_embeds, comp_embeds = arrays.get("orig_embed", []), arrays.get("comp_embed", [])

    n = len(dataset)
    fid_value = None
    fid_n = 0
    if config.fid:
        from ..measures.fid import FeatureStats, fid_from_stats

        if ref_stats is None and len(orig_feats) == len(batches.spans):
            ref_stats = FeatureStats()
            for f in orig_feats:
                ref_stats.update(f)
            if ref_stats.n == n:  # only a reference over every original is cached
                ref_stats.save(ref_path)
        stats = FeatureStats()
        for f in comp_feats:
            stats.update(f)
        fid_n = stats.n
        if ref_stats is not None and stats.n >= 2 and ref_stats.n >= 2:
            fid_value = fid_from_stats(stats, ref_stats)
    ceiling = None
    all_embeds = np.concatenate(orig_embeds) if orig_embeds else np.zeros((0, 0))
    if ident is not None and orig_embed_cache is None and len(all_embeds) == n and not np.isnan(all_embeds).any():
        orig_embed_cache = all_embeds
        buf = io.BytesIO()
        np.save(buf, all_embeds)
        atomic_write_bytes(ident_path, buf.getvalue())
    if ident is not None and orig_embed_cache is not None and comp_embeds:
        table, ceiling = _add_rank1(table, orig_embed_cache, np.concatenate(comp_embeds), ident, config.seed)
    table["hole_bucket"] = hole_buckets(table["hole_face_fraction"]).astype(str)

    failures = failure_list(table)
    identity_model = ident.name if ident is not None else None
    summary = summarize(table, seed=config.seed)
    summary.update(
        {
            "method": config.method,
            "track": cls.track,
            "dataset_fingerprint": fingerprint,
            "data": recorded_path(config.data),
            "split": config.split,
            "fid": fid_value,
            "fid_n": fid_n,
            "identity_model": identity_model,
            "identity_threshold": _threshold_info(ident),
            "failures": failures,
            "failures_scored_as": FAILURE_FLOOR,
            "ceiling": ceiling,
        }
    )
    folder.finish(table, summary, _manifest(config, cls, dataset, device, identity_model, feats, started, len(failures)))
    return EvalResult(run_dir, summary, failures)


class SpanScorer:
    """Scores whole batches of one run in one process: the dataset, the method and the scoring networks
    (Inception, the identity model), each loaded once. What an actor of ``evaluate --engine ray`` holds; a
    batch comes out exactly as :func:`evaluate`'s own pipeline makes it (rows and arrays for ``partial/``).

    Args:
        config: the run's options (``config.data`` as this process can open it).
        run_dir: the results folder (``outputs/`` is written there with ``save_outputs``).
        need_orig: also return the originals' Inception features (no cached reference statistics yet).
        orig_embed_cache: ``(N, D)`` the originals' cached identity embeddings, or None to embed them.
        device: where the method and networks run (default: ``config.device`` resolved here).

    Raises:
        as :func:`evaluate` when the method, the FID weights or the identity model cannot be loaded.
    """

    def __init__(self, config: EvalConfig, run_dir: str | Path, *, need_orig: bool,
                 orig_embed_cache: np.ndarray | None, device: str | None = None):
        self.config = config
        self.run_dir = Path(run_dir)
        self.need_orig = need_orig
        self.orig_embed_cache = orig_embed_cache
        self.device = resolve_device(device or config.device)
        self.dataset = MaskedFaces(config.data, config.split, config.limit)
        self.predictor = get_predictor_class(config.method)(device=self.device, **dict(config.method_args))
        self.feats = self.ident = None
        if config.fid:
            from ..measures.fid import InceptionFeatures

            self.feats = InceptionFeatures(config.fid_weights, self.device)
        if config.identity:
            from ..faces.identity import load_identity_model

            self.ident = load_identity_model(config.identity_model, self.device)

    def __call__(self, span: Span) -> Scored:
        """The batch ``span`` scored: one row per position, and its arrays (features, embeddings)."""
        batch = _prepare_batch(span, self.dataset, self.predictor, self.config, self.run_dir, self.ident,
                               self.orig_embed_cache, self.need_orig)
        return _finish_batch(span, batch, feats=self.feats, ident=self.ident)

    def close(self) -> None:
        """Release the identity model's resources."""
        if self.ident is not None:
            self.ident.close()


def _finish_batch(span: Span, batch: _Batch, *, feats, ident) -> Scored:
    """The network part of a batch, in the calling thread (module docstring): Inception features of the
    composites (and of the originals, for the reference), identity embeddings and scores."""
    arrays: dict[str, np.ndarray] = {}
    if feats is not None:
        arrays["features"] = feats(batch.composites).astype(np.float32)
        if batch.originals is not None:
            arrays["orig_features"] = feats(batch.originals).astype(np.float32)
    if batch.identity is not None:
        from ..faces.identity import cosine_similarity

        orig_chips, comp_chips, e_cached = batch.identity
        e_org = e_cached
        if e_cached is None:  # rows of unreadable samples stay NaN
            e_org = _scatter_rows(ident.embed_chips(orig_chips), batch.loaded, len(batch.ids))
        e_comp = ident.embed_chips(comp_chips)
        cos = cosine_similarity(e_org[batch.ok], e_comp) if batch.ok else []
        same = ident.same_person(e_org[batch.ok], e_comp) if batch.ok else None
        for i, j in enumerate(batch.ok):
            batch.rows[j]["identity_cosine"] = float(cos[i])
            if same is not None:
                batch.rows[j]["identity_match"] = float(same[i])
        arrays["comp_embed"] = _scatter_rows(e_comp, batch.ok, len(batch.ids))  # unreadable rows: NaN
        if e_cached is None:
            arrays["orig_embed"] = e_org
    return Scored(batch.rows, arrays)


def _manifest(config, cls, dataset, device, identity_model, feats, started, n_failed) -> dict[str, Any]:
    options = dict(config.method_args)
    return run_manifest(
        config, device=device, started=started, n_failed=n_failed,
        args_hash=config.args_hash(cls.weights_fingerprint(**options)),
        method=method_card(config.method, cls, options),
        dataset={
            "path": recorded_path(config.data),
            "split": config.split,
            "fingerprint": dataset.fingerprint(),
            "n": len(dataset),
        },
        identity_model=identity_model,
        fid_weights={"path": recorded_path(feats.weights_path), "sha256": feats.weights_sha256} if feats is not None else None,
    )


def _prepare_batch(
    span: Span,
    dataset: MaskedFaces,
    predictor: Predictor,
    config: EvalConfig,
    run_dir: Path,
    ident,
    orig_embed_cache: np.ndarray | None,
    need_orig: bool,
) -> _Batch:
    idx = list(span.positions)
    samples, errors, lms = _load_samples(dataset, idx, need_landmarks=ident is not None)
    live = [j for j, smp in enumerate(samples) if smp is not None]
    ids = [_sample_id(dataset.records[i], i) for i in idx]
    shape = samples[live[0]].masked.shape if live else (1, 1, 3)
    masked = np.stack([samples[j].masked for j in live]) if live else np.zeros((0,) + shape, np.uint8)
    original = np.stack([samples[j].original for j in live]) if live else np.zeros((0,) + shape, np.uint8)
    masks = np.stack([samples[j].mask for j in live]) if live else np.zeros((0,) + shape[:2], bool)
    pos = {j: i for i, j in enumerate(live)}  # batch position -> row in masked/original/masks
    blind = predictor.track == "blind"
    outputs: list[np.ndarray | None] = [None] * len(idx)
    pmasks: list[np.ndarray | None] = [None] * len(idx)
    plms: list[np.ndarray | None] = [None] * len(idx)  # landmarks the method predicted, if any
    live_ids = [ids[j] for j in live]
    extras = {f: np.array([samples[j].record[f] for j in live], np.float32) for f in predictor.extra_inputs
              if all(f in samples[j].record for j in live)}
    if live:  # a failed image's output is its masked input (and its predicted mask empty): the floor
        res = predict_each(predictor, masked, masks, seed=config.seed, ids=live_ids, extras=extras)
        for i, j in enumerate(live):
            outputs[j], plms[j], errors[j] = res.images[i], res.landmarks[i], res.errors[i]
            if blind:
                pmasks[j] = res.masks[i]
    ok = list(live)  # every readable image is scored: failures as the masked input
    rows: list[dict[str, Any]] = []
    for j, i in enumerate(idx):
        rec = dataset.records[i] if isinstance(dataset.records[i], dict) else {}
        frac = _hole_fraction(rec, masks[pos[j]] if j in pos else None)
        rows.append(
            {
                "id": ids[j],
                "mask_type": rec.get("mask_type") if isinstance(rec.get("mask_type"), str) else None,
                "identity": None if rec.get("identity") is None else str(rec["identity"]),
                "source_id": str(rec.get("source_id", ids[j])),
                "hole_fraction": frac,
                "hole_face_fraction": (hole_face_fraction(masks[pos[j]].sum(), rec.get("face_box"), masks[pos[j]].size)
                                       if j in pos else float("nan")),
                "error": errors[j],
            }
        )
    composites = np.zeros((0,) + shape, np.uint8)
    identity = None
    if ident is not None:
        lm_live = np.array([lms[j] for j in live], np.float64).reshape(len(live), 68, 2)
        e_cached = orig_embed_cache[idx] if orig_embed_cache is not None else None
        orig_chips = None if e_cached is not None else ident.chips(original, lm_live)
    if ok:
        out = np.stack([outputs[j] for j in ok])
        rows_ok = [pos[j] for j in ok]
        m = masks[rows_ok]
        org = original[rows_ok]
        comp = np.where(m[..., None], out, org)
        scores = image_scores(comp, org, m)
        bad = _nonfinite_scores(scores, m, [plms[j] for j in ok])
        bad = {i: why for i, why in bad.items() if errors[ok[i]] is None}  # failures are scored as the floor already
        for i, why in bad.items():  # a score that is no number is a failure: scored as the masked input
            j = ok[i]
            errors[j] = rows[j]["error"] = why
            outputs[j] = out[i] = masked[pos[j]]
            plms[j] = None
            if blind:
                pmasks[j] = np.zeros(m.shape[1:], bool)
        if bad:
            redo = sorted(bad)
            comp[redo] = np.where(m[redo][..., None], out[redo], org[redo])
            for k2, v in image_scores(comp[redo], org[redo], m[redo]).items():
                scores[k2][redo] = v
        composites = comp
        changed = np.array([bool((out[i] != org[i])[~m[i]].any()) for i in range(len(ok))])
        raw_idx = np.flatnonzero(changed)
        raw = image_scores(out[raw_idx], org[raw_idx], m[raw_idx]) if raw_idx.size else {}
        if blind:
            pm = np.stack([pmasks[j] for j in ok])
            ious, f1s = mask_iou(pm, m), mask_f1(pm, m)
        if ident is not None:
            identity = (orig_chips, ident.chips(comp, lm_live[rows_ok]), e_cached)
        for i, j in enumerate(ok):
            row = rows[j]
            row.update({k2: float(v[i]) for k2, v in scores.items()})
            row["changed_outside_hole"] = bool(changed[i])
            ri = np.searchsorted(raw_idx, i)
            for k2 in _PIXEL_METRICS:
                row[f"raw_{k2}"] = float(raw[k2][ri]) if changed[i] else row[k2]
            if blind:
                row["mask_iou"] = float(ious[i])
                row["mask_f1"] = float(f1s[i])
            true_lm = samples[j].record.get("landmarks")
            if plms[j] is not None and true_lm is not None:
                row["landmark_nme"] = landmark_nme(plms[j], np.asarray(true_lm, np.float64))
            if config.save_outputs:
                write_png(run_dir / "outputs" / f"{check_name(ids[j], 'id')}.png", outputs[j])
    elif ident is not None:
        identity = (orig_chips, ident.chips(composites, lm_live[:0]), e_cached)
    return _Batch(ids, rows, composites, original if need_orig else None, ok, identity, live)


def _load_samples(dataset: MaskedFaces, idx: list[int], need_landmarks: bool):
    """Read the samples ``idx``; one that cannot be read is ``None`` with its reason in ``errors``.

    Returns:
        ``(samples, errors, landmarks)``: lists over ``idx`` of :class:`~maskbench.data.dataset.Sample` or None,
        the error message or None, and ``(68, 2) float64`` landmarks or None (read when ``need_landmarks``).
    """
    samples: list[Any] = []
    errors: list[str | None] = []
    lms: list[np.ndarray | None] = []
    for i in idx:
        try:
            smp = dataset[i]
            lm = _landmarks(smp.record) if need_landmarks else None
        except SampleError as e:
            samples.append(None)
            errors.append(f"{type(e).__name__}: {e}".splitlines()[0])
            lms.append(None)
            continue
        samples.append(smp)
        errors.append(None)
        lms.append(lm)
    return samples, errors, lms


def _landmarks(record: dict[str, Any]) -> np.ndarray:
    """The record's ``(68, 2) float64`` landmarks; raises :class:`SampleError` if they are not 68 x 2 numbers."""
    try:
        lm = np.asarray(record.get("landmarks"), np.float64)
    except (TypeError, ValueError):
        lm = np.zeros(0)
    if lm.shape != (68, 2) or not np.isfinite(lm).all():
        raise SampleError("record has no usable landmarks (68 x 2 numbers), needed for identity")
    return lm


def _sample_id(record: Any, i: int) -> str:
    """The record's id as text (even a refused one, for the failure list), or ``#index`` without one."""
    return str(record["id"]) if isinstance(record, dict) and "id" in record else f"#{i}"


def _hole_fraction(record: dict[str, Any], mask: np.ndarray | None) -> float:
    """The record's ``hole_fraction`` if it is a number in [0, 1], else the mask's, else NaN."""
    v = record.get("hole_fraction")
    if isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 <= v <= 1.0:
        return float(v)
    return float(mask.mean()) if mask is not None else float("nan")


def _scatter_rows(values: np.ndarray, rows: list[int], n: int) -> np.ndarray:
    """An ``(n, D)`` array holding ``values`` at ``rows`` and NaN elsewhere."""
    out = np.full((n, values.shape[1] if values.ndim == 2 else 0), np.nan)
    out[rows] = values
    return out


def _nonfinite_scores(scores: dict[str, np.ndarray], masks: np.ndarray, landmarks: list) -> dict[int, str]:
    """``{position: reason}`` of the images whose scores are not numbers where they must be: NaN or
    infinite (PSNR's +inf, an exact match, is a score), hole scores only where the image has a hole (they
    are NaN without one), and predicted landmarks that are not finite (their ``landmark_nme``)."""
    has_hole = masks.reshape(len(masks), -1).any(axis=1)
    bad = {}
    for i in range(len(masks)):
        names = [k for k, v in scores.items() if not (np.isfinite(v[i]) or (k.startswith("psnr") and v[i] == np.inf)
                                                      or (k.endswith("_hole") and not has_hole[i]))]
        if landmarks[i] is not None and not np.isfinite(landmarks[i]).all():
            names.append("landmark_nme")
        if names:
            bad[i] = f"ScoreError: not a finite number: {', '.join(names)}"
    return bad


def _threshold_info(ident) -> dict[str, Any] | None:
    if ident is None or ident.threshold is None:
        return None
    return {"value": ident.threshold, "kind": ident.threshold_kind}


def _add_rank1(table: pd.DataFrame, e_orig: np.ndarray, e_comp: np.ndarray, ident, seed: int):
    """Add ``identity_rank1`` (each output against the originals of the other photos) and return the
    ceiling: the same scores for the original photos themselves.

    Args:
        table: the per-image table, in dataset order (``identity``, ``source_id`` columns).
        e_orig, e_comp: ``(N, D)`` embeddings of the originals and of the scored outputs, same order.

    Returns:
        ``(table, ceiling)``; ceiling is ``None`` when the records carry no identities.
    """
    from ..faces.identity import rank1_identification

    if "identity" not in table.columns or table["identity"].isna().all() or len(e_comp) != len(table):
        return table, None
    ids = table["identity"].tolist()
    src = table["source_id"].tolist()
    first = ~pd.Series(src).duplicated().to_numpy()  # the gallery holds each source photo once
    g, g_ids, g_src = e_orig[first], [ids[i] for i in np.flatnonzero(first)], [src[i] for i in np.flatnonzero(first)]
    table = table.copy()
    table["identity_rank1"] = rank1_identification(e_comp, g, ids, g_ids, src, g_src)
    ceiling_r1 = rank1_identification(e_orig, g, ids, g_ids, src, g_src)
    ceiling = {
        "identity_cosine": describe(np.ones(len(table)), "identity_cosine", seed),
        "identity_rank1": describe(ceiling_r1, "identity_rank1", seed),
    }
    if ident.threshold is not None:
        ceiling["identity_match"] = describe(np.ones(len(table)), "identity_match", seed)
    return table, ceiling



