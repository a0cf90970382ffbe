"""``maskbench evaluate --engine ray``: the batches of a run spread over Ray actors.

Each actor holds one :class:`maskbench.bench.evaluate.SpanScorer` (the dataset, the method and the scoring
networks, loaded once) and scores whole batches of the run's plan (:mod:`maskbench.bench.runs`): decode,
predict, composite, pixel metrics, Inception features, identity embeddings. There is one actor per GPU
(``num_gpus=1``) when the cluster has GPUs and the device is not ``cpu``, else one per CPU. The driver sends
the batches' positions, writes each finished batch into the run's ``partial/`` folder as it comes back (so a
finished batch is never lost and an interrupted run resumes as any other) and, at the end, computes the set
scores once, from the same files a single-process run leaves: the table, FID, intervals and rank-1 are those of
``maskbench evaluate`` without Ray.

An actor that dies is restarted and its unfinished batches are run again (``RayEngine.max_restarts``); a
method's error on an image is scored as always (the image's failure, the floor). The dataset folder (and the
results folder, for ``--save-outputs``) must be at the same path on every node.
"""

from __future__ import annotations

import os
from typing import Any, Callable

from ..core.cluster import RayEngine
from ..core.progress import progress_bar
from .runs import Batches, Scored, Span

__all__ = ["RayEvalEngine", "EvalActor", "CRASH_ONCE_ENV"]

#: Test hook: an actor about to score a batch deletes the file this names, if it exists, and exits at once
#: (so exactly one actor crashes once); the run must retry the batch on a restarted actor.
CRASH_ONCE_ENV = "MASKBENCH_TEST_RAY_CRASH_ONCE"


class EvalActor:
    """A Ray actor holding one scorer.

    Args:
        init_args: ``(scorer recipe,)``: a callable that builds the :class:`~maskbench.bench.evaluate.SpanScorer`.
    """

    def __init__(self, init_args: tuple):
        (recipe,) = init_args
        self.scorer = recipe()

    def run(self, span: Span) -> Scored:
        """The batch ``span`` scored."""
        path = os.environ.get(CRASH_ONCE_ENV)
        if path:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            else:
                os._exit(1)
        return self.scorer(span)


class RayEvalEngine:
    """The ``engine`` of :func:`maskbench.bench.evaluate.evaluate` that runs on Ray.

    Args:
        ray: where and how (:class:`maskbench.core.cluster.RayEngine`: address, local CPUs, actors).
    """

    def __init__(self, ray: RayEngine | None = None):
        self.ray = ray or RayEngine()

    def device(self, requested: str) -> str:
        """Where the actors run the method: ``cuda`` when ``requested`` is not ``cpu`` and the cluster has GPUs."""
        if requested == "cpu":
            return "cpu"
        return "cuda" if self.ray.resources().get("GPU", 0) >= 1 else "cpu"

    def run_spans(self, batches: Batches, scorer: Callable[[], Any], *, device: str = "cpu", progress: bool = False,
                  desc: str | None = None, on_progress: Callable[[int, int], None] | None = None) -> None:
        """Score every unfinished batch of ``batches`` on the actors and write each as it comes back.

        Args:
            batches: the run's plan.
            scorer: builds an actor's scorer (``scorer()(span) -> Scored``); picklable.
            device: the scorer's device (:meth:`device`): ``cuda`` gives each actor a GPU.
            progress, desc: a progress bar on stderr, and its label.
            on_progress: ``on_progress(done_images, total_images)`` at the start and after each batch is written.
        """
        pending = batches.pending()
        bar = progress_bar(batches.n, desc, enabled=progress, unit="image",
                           initial=batches.n - sum(len(s) for s in pending))
        done = bar.n
        if on_progress:
            on_progress(done, batches.n)
        try:
            for pos, scored in self.ray.map(EvalActor, (scorer,), pending, num_cpus=1,
                                            num_gpus=1 if device == "cuda" else 0):
                span = pending[pos]
                batches.write(span, scored)
                done += len(span)
                bar.update(len(span))
                if on_progress:
                    on_progress(done, batches.n)
        finally:
            bar.close()
