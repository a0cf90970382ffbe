"""Training data: a Masked-Faces split held in memory at the training size, or masks drawn on the fly.

Two sources give the same batches (``masked``, ``original``, ``hole``), indexed by sample and epoch:

- :class:`PairedFaces` reads a ``maskbench synth`` folder (or a hub copy of one, ``hf:<repo_id>``) once,
  resized to the training size, and serves the stored pairs;
- :class:`OnTheFlyFaces` keeps the *original* faces and their landmarks (read from a dataset's metadata,
  or detected once per face and cached) and draws a fresh mask (type, template, texture, seed) for every
  (face, epoch), so a model never sees the same masked image twice.

:func:`batch_indices` makes the order a pure function of (seed, step): a resumed run reads exactly the
batches the uninterrupted run would have, and under DistributedDataParallel each rank takes its slice.

Faces and holes are brought to the training size and into tensors by :mod:`maskbench.train.tensors`, the
conversion the learned predictors apply at inference, so a model sees the same pixels in training and test.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import numpy as np
import torch

from ..core.resources import cache_dir
from ..data.dataset import DatasetFormatError, MaskedFaces
from ..data.format import MASK_TYPES
from .config import ConfigError
from .tensors import downsize_hole, downsize_image, holes_to_tensor, images_to_tensor

__all__ = [
    "Batch",
    "show_unmasked",
    "scale_landmarks",
    "PairedFaces",
    "OnTheFlyFaces",
    "batch_indices",
    "to_batch",
    "open_training_data",
]


@dataclass
class Batch:
    """A training batch on a device.

    Attributes:
        masked, original: ``(N, 3, S, S) float32`` in [-1, 1].
        hole: ``(N, 1, S, S) float32`` in {0, 1}, 1 = hole.
        index: ``(N,)`` sample indices.
    """

    masked: torch.Tensor
    original: torch.Tensor
    hole: torch.Tensor
    index: torch.Tensor


def scale_landmarks(landmarks: np.ndarray, src: int, dst: int) -> np.ndarray:
    """Points in pixels of a ``src``-side image -> of its ``dst``-side resize (pixel centres at integers)."""
    return (np.asarray(landmarks, np.float32) + 0.5) * (dst / src) - 0.5


def show_unmasked(batch: Batch, share: float, seed: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input, hole)`` with about ``share`` of the batch's faces shown unmasked: the original and an empty
    hole (a segmenter then learns that a bare face has no mask). Which faces is drawn from ``(seed, step)``,
    so a resumed run draws the same ones."""
    x, hole = batch.masked, batch.hole
    if share <= 0:
        return x, hole
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(step))
    plain = (torch.rand(x.shape[0], generator=g) < share).to(x.device)[:, None, None, None]
    return torch.where(plain, batch.original, x), torch.where(plain, torch.zeros_like(hole), hole)


def to_batch(masked: np.ndarray, original: np.ndarray, hole: np.ndarray, index, device: str = "cpu") -> Batch:
    """uint8 ``(N, S, S, 3)`` images and bool ``(N, S, S)`` holes -> :class:`Batch` on ``device``
    (:func:`maskbench.train.tensors.images_to_tensor`, :func:`~maskbench.train.tensors.holes_to_tensor`)."""
    return Batch(images_to_tensor(masked, device), images_to_tensor(original, device), holes_to_tensor(hole, device),
                 torch.as_tensor(np.asarray(index)))


class PairedFaces:
    """A Masked-Faces split in memory at ``size`` x ``size``.

    Args:
        root: dataset folder (``maskbench synth`` output) or ``hf:<repo_id>``.
        split: ``"train"`` or ``"test"``.
        size: training side in pixels.
        limit: keep only the first ``limit`` samples.

    Raises:
        DatasetFormatError: not a dataset, or the split is empty.
    """

    def __init__(self, root: str | os.PathLike, split: str, size: int, limit: int | None = None):
        self.size = size
        if str(root).startswith("hf:"):
            masked, original, hole, self.fingerprint = _read_hub(str(root)[3:], split, size, limit)
            self.records = [{"id": str(i)} for i in range(len(masked))]
        else:
            ds = MaskedFaces(root, split, limit)
            if len(ds) == 0:
                raise DatasetFormatError(f"{root}: split '{split}' has no samples")
            n = len(ds)
            masked = np.empty((n, size, size, 3), np.uint8)
            original = np.empty_like(masked)
            hole = np.empty((n, size, size), bool)
            for i in range(n):
                s = ds[i]
                masked[i] = downsize_image(s.masked, size)
                original[i] = downsize_image(s.original, size)
                hole[i] = downsize_hole(s.mask, size)
            self.records = ds.records
            self.fingerprint = ds.fingerprint()
        self.masked, self.original, self.hole = masked, original, hole

    def __len__(self) -> int:
        return len(self.masked)

    def get(self, index: np.ndarray, epoch: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(masked, original, hole)`` of the samples ``index`` (the epoch does not change them)."""
        return self.masked[index], self.original[index], self.hole[index]


def _read_hub(repo: str, split: str, size: int, limit: int | None):
    from ..data.sources import SourceError, hub_reachable

    try:
        import datasets
    except ImportError as e:  # pragma: no cover - datasets is a dependency
        raise DatasetFormatError(f"hf:{repo}: the 'datasets' package is needed ({e})") from None
    if not hub_reachable() and not os.environ.get("HF_DATASETS_CACHE"):
        raise SourceError(f"hf:{repo}: the Hugging Face hub cannot be reached (offline?) and no local copy is known")
    try:
        d = datasets.load_dataset(repo, split=split)
    except Exception as e:  # noqa: BLE001 - hub errors come in many types
        raise DatasetFormatError(f"hf:{repo}: cannot load split '{split}': {str(e).splitlines()[0]}") from None
    missing = [c for c in ("masked", "original", "mask") if c not in d.column_names]
    if missing:
        raise DatasetFormatError(f"hf:{repo}: not a Masked-Faces dataset (no column {', '.join(missing)})")
    n = len(d) if limit is None else min(limit, len(d))
    masked = np.empty((n, size, size, 3), np.uint8)
    original = np.empty_like(masked)
    hole = np.empty((n, size, size), bool)
    for i in range(n):
        r = d[i]
        masked[i] = downsize_image(np.asarray(r["masked"].convert("RGB")), size)
        original[i] = downsize_image(np.asarray(r["original"].convert("RGB")), size)
        hole[i] = downsize_hole(np.asarray(r["mask"].convert("L")) > 127, size)
    fp = hashlib.sha256(f"hf:{repo}|{split}|{n}|{getattr(d, '_fingerprint', '')}".encode()).hexdigest()[:16]
    return masked, original, hole, fp


class OnTheFlyFaces:
    """Fresh masks on original faces for every (face, epoch).

    Args:
        faces: ``(N, S0, S0, 3) uint8`` aligned original faces.
        landmarks: ``(N, 68, 2) float32`` their landmarks in ``S0`` pixels.
        size: training side; masks are drawn at ``S0`` and the result downsized.
        seed: base seed; the mask of face ``i`` in epoch ``e`` depends only on ``(seed, i, e)``.
        mask_types: the types to draw from, uniformly.
        fingerprint: a hash naming the faces (recorded in checkpoints).
        templates: where the masks come from (:attr:`maskbench.data.synth.SynthConfig.templates`:
            ``procedural``, ``photo[:DIR]``, ``mix[:DIR]``); other than ``procedural`` it is part of the fingerprint.
    """

    def __init__(self, faces: np.ndarray, landmarks: np.ndarray, size: int, seed: int = 0,
                 mask_types: tuple[str, ...] = MASK_TYPES, fingerprint: str = "", templates: str = "procedural"):
        from ..data.synth import MaskSynthesizer, SynthConfig

        self.faces, self.landmarks, self.size, self.seed = faces, landmarks, size, seed
        self.mask_types = tuple(mask_types)
        self.fingerprint = "otf-" + fingerprint + ("" if templates == "procedural" else f"-{templates.split(':')[0]}")
        self._synth = MaskSynthesizer(SynthConfig(size=faces.shape[1], mask_types=self.mask_types, templates=templates),
                                      detector=_NoDetector())

    @classmethod
    def from_dataset(cls, root: str | os.PathLike, split: str, size: int, seed: int = 0,
                     limit: int | None = None, templates: str = "procedural") -> "OnTheFlyFaces":
        """Original faces and landmarks from a Masked-Faces split (its masks are not used)."""
        ds = MaskedFaces(root, split, limit)
        if len(ds) == 0:
            raise DatasetFormatError(f"{root}: split '{split}' has no samples")
        faces = np.stack([s.original for s in ds])
        lms = np.array([r["landmarks"] for r in ds.records], np.float32)
        return cls(faces, lms, size, seed, fingerprint=ds.fingerprint(), templates=templates)

    @classmethod
    def from_source(cls, src: str, data_dir: str | None, size: int, seed: int = 0, split: str = "train",
                    limit: int | None = None, face_size: int = 256, templates: str = "procedural") -> "OnTheFlyFaces":
        """Detect and align the faces of a source once (cached under ``cache_dir()/train-faces``).

        Only the faces :func:`maskbench.data.sources.assign_split` puts in ``split`` are kept (test people
        are never trained on). Faces that fail detection are left out.
        """
        from ..core.io import atomic_write_bytes
        from ..data.sources import assign_split, resolve_source
        from ..data.synth import MaskSynthesizer, SynthConfig

        source = resolve_source(src, data_dir)
        items = [it for it in source.items if assign_split(it, SynthConfig().test_fraction) == split][:limit]
        key = hashlib.sha256("|".join([source.name, split, str(face_size)] + [it.source_id for it in items])
                             .encode()).hexdigest()[:16]
        path = cache_dir() / "train-faces" / f"{key}.npz"
        if path.is_file():
            with np.load(path) as z:
                faces, lms = z["faces"], z["landmarks"]
        else:
            synth = MaskSynthesizer(SynthConfig(size=face_size))
            fl, ll = [], []
            for it in items:
                try:
                    face, lm, _, _ = synth.prepare(it)
                except Exception:  # noqa: BLE001 - a face that cannot be used is simply not trained on
                    continue
                fl.append(face)
                ll.append(lm)
            if not fl:
                raise DatasetFormatError(f"{src}: no usable face in split '{split}'")
            faces, lms = np.stack(fl), np.stack(ll).astype(np.float32)
            import io

            buf = io.BytesIO()
            np.savez(buf, faces=faces, landmarks=lms)
            atomic_write_bytes(path, buf.getvalue())
        return cls(faces, lms, size, seed, fingerprint=key, templates=templates)

    def __len__(self) -> int:
        return len(self.faces)

    def get(self, index: np.ndarray, epoch: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Draw a new mask on each face of ``index`` for ``epoch``."""
        s = self.size
        masked = np.empty((len(index), s, s, 3), np.uint8)
        original = np.empty_like(masked)
        hole = np.empty((len(index), s, s), bool)
        for j, i in enumerate(np.asarray(index)):
            rng = np.random.default_rng([self.seed, int(i), int(epoch)])
            mask_type = self.mask_types[int(rng.integers(len(self.mask_types)))]
            r = self._synth.mask_face(self.faces[i], self.landmarks[i], rng, mask_type)
            masked[j] = downsize_image(r["masked"], s)
            original[j] = downsize_image(self.faces[i], s)
            hole[j] = downsize_hole(r["hole"], s)
        return masked, original, hole


class _NoDetector:
    """Stands in for the face detector where faces are already aligned (never called)."""

    def __call__(self, image):  # pragma: no cover
        raise RuntimeError("no detector in on-the-fly training")


def batch_indices(n: int, batch_size: int, step: int, seed: int, rank: int = 0, world: int = 1) -> tuple[np.ndarray, int]:
    """The sample indices of ``step`` for process ``rank`` of ``world``, and the epoch.

    Each epoch is a permutation of ``range(n)`` seeded by ``(seed, epoch)``, cut into ``n // batch_size``
    full batches (the remainder is dropped); ``batch_size`` is the global batch, each rank takes every
    ``world``-th sample of it.

    Raises:
        ValueError: ``n < batch_size``.
    """
    per_epoch = n // batch_size
    if per_epoch < 1:
        raise ConfigError(f"the training split has {n} samples, fewer than one batch of {batch_size}")
    epoch, k = divmod(step, per_epoch)
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    return perm[k * batch_size:(k + 1) * batch_size][rank::world], epoch


def open_training_data(data: str | None, size: int, seed: int, *, on_the_fly: bool = False, src: str | None = None,
                       data_dir: str | None = None, split: str = "train", limit: int | None = None,
                       templates: str = "procedural"):
    """The training source the CLI options name.

    Args:
        data: a dataset folder or ``hf:<repo_id>`` (``None`` with ``src``).
        size: training side.
        seed: base seed (on-the-fly masks).
        on_the_fly: draw fresh masks (from ``data``'s originals, or from ``src``).
        src, data_dir: a synthesis source (``celeba`` with its folder), for on-the-fly training.
        split: which split to train on.
        limit: at most this many faces.
        templates: on-the-fly masks' templates (:class:`OnTheFlyFaces`).

    Raises:
        DatasetFormatError, maskbench.data.sources.SourceError: unusable data.
        ValueError: neither ``data`` nor ``src``.
    """
    if on_the_fly:
        if src is not None:
            return OnTheFlyFaces.from_source(src, data_dir, size, seed, split, limit, templates=templates)
        if data is None:
            raise ConfigError("--synth-on-the-fly needs --data DIR or --src NAME")
        return OnTheFlyFaces.from_dataset(data, split, size, seed, limit, templates=templates)
    if data is None:
        raise ConfigError("give --data DIR (a maskbench synth folder or hf:<repo_id>), or --synth-on-the-fly --src")
    return PairedFaces(data, split, size, limit)
