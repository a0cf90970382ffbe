"""``maskbench synth --engine ray``: the synthesis of :func:`maskbench.data.synth.synthesize` spread over Ray actors.

Each actor is one synthesis worker (:func:`maskbench.data.synth.init_worker`: one
:class:`~maskbench.data.synth.MaskSynthesizer`, its templates, textures and detector loaded once) and makes the
samples of one block of source items per call (:func:`maskbench.data.synth.process_batch`), writing their PNGs
into the dataset folder itself. The driver sends each actor the settings and the assets once (through Ray's
object store) and then only the blocks' item descriptions (ids, paths, hub rows): the actors read the images.
Results come back as each block finishes; the driver appends them to the shard's resume log at once, so a
driver killed mid-run loses at most the blocks in flight, which the next run redoes.

Everything :func:`synthesize` does around the workers (the folder lock, the manifest, the plan, resume,
``skipped.csv``, the final tables) is unchanged, and every sample is seeded by ``(seed, source id, k)``, so
the folder holds the same bytes as a ``--workers N`` run.

On a cluster the output folder and local source folders must be at the same path on every node (a shared
filesystem); a block whose files the driver cannot see stops the run with one line saying so. Hub sources
(``hf:<repo_id>``) are read row by row by the actors, each from its own node's Hugging Face cache.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

from ..core.cluster import RayEngine
from ..core.resources import resolve_dlib_model
from .synth import init_worker, process_batch
from .synth_folder import OutputFolderError

__all__ = ["RaySynthEngine", "SynthActor", "NotSharedError"]


class NotSharedError(OutputFolderError):
    """The Ray workers wrote samples the driver cannot see: the output folder is not on a shared filesystem."""


class SynthActor:
    """A Ray actor that is one synthesis worker (module docstring).

    Args:
        init_args: ``(config, out, source name, assets)`` of :func:`maskbench.data.synth.init_worker`; on a
            node where the driver's landmark model path does not exist, the node's own copy is used.
    """

    def __init__(self, init_args: tuple):
        config, out, source_name, assets = init_args
        if not Path(assets.landmark_model).is_file():
            assets = replace(assets, landmark_model=str(resolve_dlib_model("shape_predictor_68_face_landmarks.dat")))
        init_worker(config, out, source_name, assets)

    def run(self, jobs: list) -> list[dict[str, Any]]:
        """The block's results (:func:`maskbench.data.synth.process_batch`), once its files are written."""
        return process_batch(jobs)


class RaySynthEngine:
    """The ``engine`` of :func:`maskbench.data.synth.synthesize` that runs on Ray.

    Args:
        ray: where and how (:class:`maskbench.core.cluster.RayEngine`: address, local CPUs, actors).
    """

    def __init__(self, ray: RayEngine | None = None):
        self.ray = ray or RayEngine()

    def map_batches(self, batches: list[list[tuple]], init_args: tuple) -> Iterator[list[dict[str, Any]]]:
        """Each block's results as it finishes (any order).

        Args:
            batches: blocks of ``(SourceItem, base id, split)`` jobs.
            init_args: ``(config, out, source name, assets)`` (:class:`maskbench.data.synth.SynthAssets`).

        Raises:
            NotSharedError: an actor wrote a block's samples where this process cannot see them.
        """
        config, out, source_name, assets = init_args
        out = os.path.abspath(out)  # actors do not share the driver's working folder
        blocks = [[(_absolute(item), base, split) for item, base, split in b] for b in batches]
        checked = False
        for _, results in self.ray.map(SynthActor, (config, out, source_name, assets), blocks):
            if not checked:
                checked = _check_visible(Path(out), results)
            yield results


def _absolute(item):
    """The item with an absolute path (a local path; URLs and hub items as they are)."""
    if item.path is None or "://" in item.path or os.path.isabs(item.path):
        return item
    return replace(item, path=os.path.abspath(item.path))


def _check_visible(out: Path, results: list[dict[str, Any]]) -> bool:
    """True once a written sample of ``results`` was found under ``out``; False if the block wrote none.

    Raises:
        NotSharedError: the block's first sample is not there.
    """
    for res in results:
        for rec in res.get("records", ()):
            path = out / rec["split"] / rec["masked_file_name"]
            if not path.is_file():
                raise NotSharedError(f"{out}: the Ray workers wrote samples this machine cannot see ({path} is "
                                     "missing): --out must be a folder every node shares, at the same path")
            return True
    return False
