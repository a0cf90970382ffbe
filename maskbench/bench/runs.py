"""The run engine both benchmark tracks share (:mod:`maskbench.bench.evaluate`, the synthetic track, and
:mod:`maskbench.bench.wild`, the in-the-wild track): the results folder and its key, the batch plan, resume,
per-image retry, atomic writes, the manifest, progress bars.

A run lives in ``{out}/{method}/{key}/`` (:func:`run_path`; the key is the track's, :func:`args_digest` of
the options that change results)::

    partial/plan.json                    the batches, as [start, stop) position ranges over the run's ids
    partial/batch-SSSSSS-EEEEEE.parquet  a finished batch's rows (written last: its presence marks it done)
    partial/batch-SSSSSS-EEEEEE.npz      its arrays (features, embeddings, ...), if any
    per_image.parquet, summary.json, manifest.json (written last, ``complete: true``)

Resume (:class:`Batches`): the plan names its batches by the positions they cover, so a rerun with another
batch size keeps every finished batch as it is and plans only the positions no finished batch covers, in
batches of the new size. No image is done twice, none is lost, and the batches read back in position order.
A plan for other ids (or from an older layout) is discarded with every partial batch. A complete run (its
manifest says ``complete: true``) is reused as is (:meth:`RunFolder.completed`).

Retry (:func:`predict_each`): a method that raises on a batch is run again image by image; an image that
still fails keeps its message (``error``) and its input as its output (the floor: an unrestored face), and
the run goes on.

A track supplies what differs: its inputs (ids), how a batch is scored (``prepare`` in worker threads,
``finish`` in the calling thread, which returns the rows and arrays to keep) and the set scores it computes
from :meth:`Batches.load`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import shutil
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import numpy as np
import pandas as pd

from .. import __version__
from ..core.errors import stable_message
from ..core.io import atomic_write_bytes, atomic_write_json
from ..core.progress import progress_bar
from ..core.resources import git_commit, hardware_info, iso_utc, library_versions
from ..data.dataset import check_name
from ..methods.predictors import Predictor, batch_generator, run_predictor

__all__ = ["Span", "Scored", "Prediction", "Batches", "RunFolder", "RunResult", "run_path", "args_digest", "run_batches",
           "predict_each", "failure_list", "method_card", "run_manifest", "parquet_bytes"]

T = TypeVar("T")
_PREDICT_LOCK = threading.Lock()  # serialises predict() of methods not marked thread_safe
_PLAN_VERSION = 2  # 1: wild's {"batch_size", "n"} (batches numbered, not named by their positions)


def args_digest(key: dict[str, Any]) -> str:
    """10 hex digits of SHA-256 over ``key`` as key-sorted JSON: the last part of a run's folder name."""
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:10]


def run_path(out: str | Path, method: str, key: str) -> Path:
    """``{out}/{method}/{key}``.

    Raises:
        maskbench.data.dataset.UnsafePathError: the method name is not safe as a folder name.
    """
    return Path(out) / check_name(method, "method name") / key


# ------------------------------------------------------------------------------------------- batches


@dataclass(frozen=True, order=True)
class Span:
    """One planned batch: the run's positions ``start`` to ``stop - 1``."""

    start: int
    stop: int

    @property
    def positions(self) -> range:
        return range(self.start, self.stop)

    @property
    def name(self) -> str:
        """The stem of the batch's files."""
        return f"batch-{self.start:06d}-{self.stop:06d}"

    def __len__(self) -> int:
        return self.stop - self.start


@dataclass
class Scored:
    """What a finished batch keeps: one row per position (same order) and arrays (first axis free)."""

    rows: list[dict[str, Any]]
    arrays: dict[str, np.ndarray]


class Batches:
    """The ``partial/`` folder of a run: the plan (module docstring) and the finished batches.

    Args:
        folder: the ``partial`` folder (created if need be; the plan is written at once).
        ids: the run's item ids in position order (the plan is for these ids only).
        batch_size: items per batch planned now (finished batches keep the size they had).
        object_columns: columns written with ``object`` dtype (:func:`parquet_bytes`).

    Attributes:
        spans: every batch, in position order; together they cover ``range(len(ids))`` once.
    """

    def __init__(self, folder: Path, ids: Sequence[str], batch_size: int, *,
                 object_columns: tuple[str, ...] = ("error",)):
        if batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {batch_size}")
        self.folder = Path(folder)
        self.n = len(ids)
        self.object_columns = object_columns
        digest = hashlib.sha256("\n".join(map(str, ids)).encode()).hexdigest()[:16]
        kept = self._finished_spans(digest)
        self.spans = _fill(kept, self.n, batch_size)
        plan = {"version": _PLAN_VERSION, "ids": digest, "n": self.n,
                "batches": [[s.start, s.stop] for s in self.spans]}
        atomic_write_json(self.folder / "plan.json", plan)
        names = {s.name for s in self.spans} | {"plan"}
        for p in self.folder.iterdir():  # batches of the old plan that were not finished, stray temporaries
            if p.is_file() and p.name.split(".")[0] not in names:
                p.unlink()

    def _finished_spans(self, digest: str) -> list[Span]:
        """The finished batches of the saved plan; with no usable plan, an empty folder."""
        try:
            old = json.loads((self.folder / "plan.json").read_text())
            if old.get("version") != _PLAN_VERSION or old.get("ids") != digest or old.get("n") != self.n:
                raise ValueError("another plan")
            spans = [Span(int(s), int(e)) for s, e in old["batches"]]
        except (OSError, ValueError, KeyError, TypeError):
            shutil.rmtree(self.folder, ignore_errors=True)  # other ids or an older layout: nothing lines up
            return []
        kept = sorted(s for s in spans if self.done(s))
        if any(s.start < 0 or s.stop > self.n or s.stop <= s.start for s in kept) or any(
                a.stop > b.start for a, b in zip(kept, kept[1:])):
            shutil.rmtree(self.folder, ignore_errors=True)
            return []
        return kept

    def done(self, span: Span) -> bool:
        return (self.folder / f"{span.name}.parquet").is_file()

    def pending(self) -> list[Span]:
        """The batches not finished yet, in position order."""
        return [s for s in self.spans if not self.done(s)]

    def write(self, span: Span, scored: Scored) -> None:
        """Write a finished batch atomically: its arrays, then its rows (which mark it done)."""
        if len(scored.rows) != len(span):
            raise ValueError(f"{span.name}: {len(scored.rows)} rows for {len(span)} positions")
        npz = self.folder / f"{span.name}.npz"
        if scored.arrays:
            buf = io.BytesIO()
            np.savez(buf, **scored.arrays)
            atomic_write_bytes(npz, buf.getvalue())
        else:  # not an earlier attempt's
            npz.unlink(missing_ok=True)
        atomic_write_bytes(self.folder / f"{span.name}.parquet",
                           parquet_bytes(pd.DataFrame(scored.rows), self.object_columns))

    def load(self) -> tuple[pd.DataFrame, dict[str, list[np.ndarray]]]:
        """Every batch's rows as one table in position order, and per array name the batches' arrays in the
        same order (a batch without that array is skipped: compare the list's length with ``len(spans)``)."""
        frames, arrays = [], {}
        for s in self.spans:
            frames.append(pd.read_parquet(self.folder / f"{s.name}.parquet"))
            npz = self.folder / f"{s.name}.npz"
            if npz.is_file():
                with np.load(npz) as z:
                    for key in z.files:
                        arrays.setdefault(key, []).append(z[key])
        return pd.concat(frames, ignore_index=True), arrays


def _fill(kept: list[Span], n: int, batch_size: int) -> list[Span]:
    """``kept`` (sorted, disjoint) plus batches of ``batch_size`` over the positions they leave, sorted."""
    spans, at = [], 0
    for s in [*kept, Span(n, n)]:
        spans += [Span(a, min(a + batch_size, s.start)) for a in range(at, s.start, batch_size)]
        if s.stop > s.start:
            spans.append(s)
        at = s.stop
    return spans


def run_batches(batches: Batches, prepare: Callable[[Span], T], finish: Callable[[Span, T], Scored] | None = None,
                *, workers: int = 0, progress: bool = False, desc: str | None = None, unit: str = "image",
                on_progress: Callable[[int, int], None] | None = None) -> None:
    """Score and write every batch not finished yet, in position order.

    Args:
        batches: the plan.
        prepare: ``prepare(span)``; with ``workers`` > 0 it runs in that many threads, up to ``workers + 1``
            batches ahead of the calling thread (so ``prepare`` must be thread-safe; methods' ``predict`` is
            serialised by :func:`predict_each` unless they are marked ``thread_safe``).
        finish: ``finish(span, prepared) -> Scored`` in the calling thread (networks that should not
            compete with themselves for cores); without it ``prepare`` returns the :class:`Scored`.
        workers: threads running ``prepare``; 0 runs it in the calling thread.
        progress: a progress bar (rate and ETA) on stderr.
        desc, unit: the bar's label and unit.
        on_progress: called as ``on_progress(done_items, total_items)`` when the loop starts and after each
            batch is written.

    An exception (or Ctrl-C) leaves the batches written so far; queued ones are dropped.
    """
    finish = finish or (lambda span, prepared: prepared)
    pending = batches.pending()
    bar = progress_bar(batches.n, desc, enabled=progress, unit=unit,
                       initial=batches.n - sum(len(s) for s in pending))
    done = bar.n
    if on_progress:
        on_progress(done, batches.n)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="maskbench-run") if workers > 0 else None
    futures: dict[Span, Future] = {}
    try:
        queue = list(pending)
        while queue or futures:
            if pool is None:
                span = queue.pop(0)
                prepared = prepare(span)
            else:
                while queue and len(futures) < workers + 1:
                    futures[queue[0]] = pool.submit(prepare, queue[0])
                    queue.pop(0)
                span = min(futures, key=lambda s: s.start)
                prepared = futures.pop(span).result()
            batches.write(span, finish(span, prepared))
            done += len(span)
            bar.update(len(span))
            if on_progress:
                on_progress(done, batches.n)
    finally:
        bar.close()
        if pool is not None:  # on an error or Ctrl-C, drop queued batches instead of finishing them
            pool.shutdown(wait=True, cancel_futures=True)


# ------------------------------------------------------------------------------------------- methods


@dataclass
class Prediction:
    """What :func:`predict_each` returns, over the batch's images in order.

    Attributes:
        images: ``(N, H, W, 3) uint8`` outputs; a failed image's is its input.
        masks: ``(N, H, W) bool`` masks a blind method predicted (empty for a failed image); ``None`` on the
            given-mask track.
        landmarks: per image the ``(68, 2)`` landmarks the method returned, or ``None``.
        errors: per image ``None`` or the failure's message (:func:`maskbench.core.errors.stable_message`).
    """

    images: np.ndarray
    masks: np.ndarray | None
    landmarks: list[np.ndarray | None]
    errors: list[str | None]


def predict_each(predictor: Predictor, images: np.ndarray, masks: np.ndarray | None, *, seed: int,
                 ids: Sequence[str], extras: dict[str, np.ndarray] | None = None) -> Prediction:
    """Run ``predictor`` on a batch; a batch that raises is retried image by image, and an image that still
    fails is recorded and keeps its input as its output (the floor).

    Args:
        predictor: the method (its ``predict`` calls are serialised unless it is ``thread_safe``).
        images: ``(N, H, W, 3) uint8``.
        masks: ``(N, H, W) bool`` holes for a given-mask method (ignored for a blind one).
        seed, ids: seed the batch's noise (:func:`maskbench.methods.predictors.batch_generator`); a retried image
            gets its own.
        extras: the record fields the method asks for, each ``(N, ...)``.
    """
    blind = predictor.track == "blind"
    lock = contextlib.nullcontext() if predictor.thread_safe else _PREDICT_LOCK
    extras = extras or {}
    n = len(images)
    try:
        with lock:
            res = run_predictor(predictor, images, None if blind else masks, generator=batch_generator(seed, list(ids)),
                                extras=extras)
        lms = [None] * n if res.landmarks is None else list(res.landmarks)
        return Prediction(res.images, res.masks if blind else None, lms, [None] * n)
    except Exception:  # noqa: BLE001 - a method's failure is data here: retry per image, record the rest
        pass
    out = Prediction(images.copy(), np.zeros(images.shape[:3], bool) if blind else None, [None] * n, [None] * n)
    for j in range(n):
        try:
            with lock:
                r = run_predictor(predictor, images[j:j + 1], None if blind else masks[j:j + 1],
                                  generator=batch_generator(seed, list(ids[j:j + 1])),
                                  extras={f: v[j:j + 1] for f, v in extras.items()})
            out.images[j] = r.images[0]
            if blind:
                out.masks[j] = r.masks[0]
            if r.landmarks is not None:
                out.landmarks[j] = r.landmarks[0]
        except Exception as e:  # noqa: BLE001
            out.errors[j] = stable_message(e)
    return out


# ------------------------------------------------------------------------------------------- results


@dataclass
class RunResult:
    """What a track's run returns.

    Attributes:
        run_dir: the results folder.
        summary: the content of ``summary.json``.
        failures: ``[{"id", "error"}]``: items a method failed on (scored as the floor) and items that could
            not be scored at all (an unreadable sample, a photo without a face).
        reused: True when a complete earlier run was found and nothing was recomputed.
    """

    run_dir: Path
    summary: dict[str, Any]
    failures: list[dict[str, str]] = field(default_factory=list)
    reused: bool = False


class RunFolder:
    """A run's results folder (module docstring).

    Args:
        path: the folder (:func:`run_path`).
        object_columns: columns of the tables written with ``object`` dtype (:func:`parquet_bytes`).
    """

    def __init__(self, path: Path, *, object_columns: tuple[str, ...] = ("error",)):
        self.path = Path(path)
        self.object_columns = object_columns

    def completed(self) -> dict[str, Any] | None:
        """The ``summary.json`` of a complete earlier run (its manifest says ``complete: true``), else None."""
        summary_path, manifest_path = self.path / "summary.json", self.path / "manifest.json"
        if summary_path.is_file() and manifest_path.is_file():
            if json.loads(manifest_path.read_text()).get("complete"):
                return json.loads(summary_path.read_text())
        return None

    def batches(self, ids: Sequence[str], batch_size: int) -> Batches:
        """The plan of ``partial/`` for ``ids`` (:class:`Batches`: finished batches kept, stale ones dropped)."""
        return Batches(self.path / "partial", ids, batch_size, object_columns=self.object_columns)

    def finish(self, table: pd.DataFrame, summary: dict[str, Any], manifest: dict[str, Any]) -> None:
        """Write ``per_image.parquet``, ``summary.json`` and last ``manifest.json`` (whose ``complete`` marks
        the run as done), then remove ``partial/``."""
        atomic_write_bytes(self.path / "per_image.parquet", parquet_bytes(table, self.object_columns))
        atomic_write_json(self.path / "summary.json", summary)
        atomic_write_json(self.path / "manifest.json", manifest)
        shutil.rmtree(self.path / "partial", ignore_errors=True)


def failure_list(table: pd.DataFrame) -> list[dict[str, str]]:
    """``[{"id", "error"}]`` for the rows with an error, in table order."""
    return [{"id": str(r.id), "error": str(r.error)} for r in table.itertuples() if isinstance(r.error, str)]


def parquet_bytes(df: pd.DataFrame, object_columns: tuple[str, ...] = ("error",)) -> bytes:
    """``df`` as parquet bytes, the ``object_columns`` it has kept as objects (None stays None)."""
    df = df.astype({c: "object" for c in object_columns if c in df.columns})
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()


def method_card(name: str, cls: type[Predictor], options: dict[str, Any]) -> dict[str, Any]:
    """The manifest's description of a method: class, track, input, device, weights and their card."""
    return {
        "name": name,
        "class": f"{cls.__module__}:{cls.__qualname__}",
        "track": cls.track,
        "input_size": cls.input_size,
        "needs_gpu": cls.needs_gpu,
        "weights": cls.weights_status(),
        "options": dict(options),
        "weights_card": cls.weights_card(**options),
    }


def run_manifest(config, *, device: str, started: float, n_failed: int, **fields: Any) -> dict[str, Any]:
    """A run's ``manifest.json``: ``complete``, the version, ``config`` (a dataclass), the track's ``fields``,
    seed, device, hardware, library versions, git commit, timings and the failure count."""
    finished = time.time()
    return {
        "complete": True,
        "maskbench_version": __version__,
        "config": asdict(config),
        **fields,
        "seed": config.seed,
        "device": device,
        "hardware": hardware_info(device),
        "versions": library_versions(),
        "git_commit": git_commit(),
        "started": iso_utc(started),
        "finished": iso_utc(finished),
        "elapsed_s": round(finished - started, 3),
        "n_failed": n_failed,
    }
