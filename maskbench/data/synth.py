"""Masked-Faces synthesis: the per-face worker and the resumable runner that writes the dataset.

Per face: decode -> detect + 68 landmarks -> FFHQ-aligned crop -> for each sample pick a mask type,
template and texture from a per-sample seeded generator -> render the template in the canonical frame
-> piecewise-affine warp onto the face's anchor points -> light it with the face's own shading ->
alpha-composite -> write masked / original / binary mask PNGs and a metadata record.

Runs are deterministic (every sample's generator is seeded from ``(seed, source_id, k)``, so the
output does not depend on workers, shards or interruptions) and resumable (a progress log per shard
under ``DIR/.progress``; files are written atomically). The image operations (render, warp, composite)
are :mod:`maskbench.data.masks`; the output folder's lock, state and tables are :mod:`maskbench.data.synth_folder`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np

from .. import __version__
from ..core.errors import MaskbenchError
from ..core.io import ImageDecodeError, atomic_write_json, decode_image, jpeg_quality, stable_message
from ..core.progress import progress_bar
from ..core.resources import resolve_dlib_model
from ..faces.landmarks import (
    FaceDetector,
    FacePoseError,
    NoFaceError,
    affine_scale,
    align_ffhq,
    estimate_yaw,
    nose_inside_outline,
    transform_points,
)
from .format import FORMAT_VERSION, MASK_TYPES, SampleRecord, sample_file_names, write_sample
from .masks import (
    PiecewiseAffineWarp,
    TemplateSpec,
    TextureBank,
    canonical_landmarks,
    library_hash,
    load_anchor_sets,
    load_photo_textures,
    load_templates,
    put_mask,
    render_template,
)
from .masks.photo import PhotoLibrary, resolve_photo_library, swap_texture
from .sources import Source, SourceItem, assign_split
from .synth_folder import (
    MANIFEST_FILE,
    PROGRESS_DIR,
    DatasetMismatchError,
    OutputFolderError,
    ShardLock,
    check_manifest,
    drop_partial_line,
    finalize,
    load_state,
    locked,
    read_counts,
)

__all__ = [
    "SynthConfig",
    "SynthReport",
    "SynthAssets",
    "MaskSynthesizer",
    "PreparedFace",
    "synthesize",
    "init_worker",
    "process_batch",
    "DatasetMismatchError",
    "OutputFolderError",
]

#: Faces whose landmarks fold more anchor triangles than this over (strong profiles, failed landmark fits:
#: 3 of 193 CelebA faces, all |yaw| > 40 deg) are skipped: a 2-D warp cannot put a mask on them.
MAX_FOLDED_TRIANGLES = 8

#: Where templates come from (:attr:`SynthConfig.templates`).
TEMPLATE_KINDS = ("procedural", "photo", "mix")


# ---------------------------------------------------------------------------------------------- config



class DrawnMask(NamedTuple):
    """A mask template rendered in the canonical frame with what places it on one face (see
    :meth:`MaskSynthesizer.draw_mask`)."""

    rgb: np.ndarray  #: ``(S, S, 3) uint8`` the template's colour
    alpha: np.ndarray  #: ``(S, S) float32`` in [0, 1], its coverage
    warp: PiecewiseAffineWarp  #: the anchor set's warp, canonical frame -> face
    anchors: np.ndarray  #: ``(K, 2) float32`` the anchor points on the face, in face pixels
    template_id: str
    texture_id: str | None
    template_kind: str = "procedural"  #: ``procedural`` or ``photo``


class SynthConfigError(MaskbenchError, ValueError):
    """A synthesis setting out of its range (mask types, size, fraction, variants, split, shards, workers)."""

@dataclass(frozen=True)
class SynthConfig:
    """Everything that defines a dataset's content (two runs with equal configs give equal bytes).

    Attributes:
        size: output side in pixels (FFHQ-aligned square crops).
        align: FFHQ-style alignment; if False the image is kept at its own size.
        seed: base seed.
        mask_types: mask types to draw from, uniformly.
        variants: samples per face (each with its own seed; ids get ``_k``).
        test_fraction: share of identities (or images) in the test split.
        textures: folder of the user's texture photos, or None for the procedural library (with photos,
            :class:`maskbench.data.masks.TextureBank` draws a photo for most samples).
        templates: ``procedural`` (drawn templates), ``photo`` / ``photo:DIR`` (masks keyed out of real
            photos: the shipped library or a folder, :mod:`maskbench.data.masks.photo`; a mask type without photo
            templates is drawn procedurally) or ``mix`` / ``mix:DIR`` (a photo template with probability
            ``photo_share`` where the type has one, else a procedural one).
        photo_share: ``mix``'s share of photo templates per mask type, in [0, 1].
        photo_relight: divide out a photo template's own low-frequency shading before the target face's light
            is applied (:func:`maskbench.data.masks.photo.deshade`); False only to measure what it does.
        photo_texture_share: share of photo-template samples whose albedo is swapped for a texture of the
            texture bank, keeping the template's shading (:func:`maskbench.data.masks.photo.swap_texture`).
    """

    size: int = 256
    align: bool = True
    seed: int = 0
    mask_types: tuple[str, ...] = MASK_TYPES
    variants: int = 1
    test_fraction: float = 0.1
    textures: str | None = None
    templates: str = "procedural"
    photo_share: float = 0.5
    photo_relight: bool = True
    photo_texture_share: float = 0.3

    @property
    def template_kind(self) -> str:
        """``procedural``, ``photo`` or ``mix`` (the part of :attr:`templates` before ``:``)."""
        return self.templates.split(":", 1)[0]

    @property
    def photo_library(self) -> str | None:
        """The photo library folder given in :attr:`templates` (None: the shipped one, or none needed)."""
        return self.templates.split(":", 1)[1] if ":" in self.templates else None

    def __post_init__(self):
        bad = [t for t in self.mask_types if t not in MASK_TYPES]
        if bad or not self.mask_types:
            raise SynthConfigError(f"unknown mask type(s) {bad}; choose from {', '.join(MASK_TYPES)}")
        if not 32 <= self.size <= 4096:
            raise SynthConfigError(f"size must be in 32..4096 px, got {self.size}")
        if not 0.0 <= self.test_fraction <= 1.0:
            raise SynthConfigError(f"test_fraction must be in [0, 1], got {self.test_fraction}")
        if self.variants < 1:
            raise SynthConfigError(f"variants must be >= 1, got {self.variants}")
        if self.template_kind not in TEMPLATE_KINDS or (self.template_kind == "procedural" and self.photo_library):
            raise SynthConfigError(f"templates must be procedural, photo[:DIR] or mix[:DIR], got {self.templates!r}")
        for name in ("photo_share", "photo_texture_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise SynthConfigError(f"{name} must be in [0, 1], got {getattr(self, name)}")


#: The settings added with photo templates (issue 24) at their defaults: a folder made before them resumes.
PHOTO_DEFAULTS = {"templates": "procedural", "photo_share": 0.5, "photo_relight": True, "photo_texture_share": 0.3}


def sample_seed(seed: int, source_id: str, k: int) -> int:
    """The 63-bit seed of sample ``k`` of ``source_id`` (SHA-256 based, independent of run order)."""
    h = hashlib.sha256(f"maskbench|{seed}|{source_id}|{k}".encode()).digest()
    return int.from_bytes(h[:8], "big") >> 1


# ---------------------------------------------------------------------------------------- per-face work


@dataclass(frozen=True)
class SynthAssets:
    """Everything a synthesis worker reads from disk, loaded (and checked) once, in the parent process.

    Attributes:
        templates: the template table.
        photos: ``(texture_id, (H, W, 3) uint8)`` texture photos, or None for the procedural library.
        landmark_model: path of dlib's 68-point landmark model.
        photo_library: the photo-template library (``photo`` and ``mix`` templates), else None.
    """

    templates: tuple[TemplateSpec, ...]
    photos: tuple[tuple[str, np.ndarray], ...] | None
    landmark_model: str
    photo_library: PhotoLibrary | None = None

    @classmethod
    def load(cls, config: SynthConfig) -> SynthAssets:
        """Load the assets ``config`` needs.

        Raises:
            FileNotFoundError: ``config.textures`` holds no readable image (or does not exist).
            maskbench.core.resources.ModelNotFoundError: the landmark model is missing.
            maskbench.data.masks.TemplateSpecError, maskbench.data.masks.MaskTypesError: a damaged data table.
            maskbench.data.masks.photo.PhotoLibraryError: a photo library that is missing or damaged.
        """
        photos = None
        if config.textures:
            photos = tuple(load_photo_textures(config.textures)[0])
        library = None
        if config.template_kind != "procedural":
            library = PhotoLibrary(resolve_photo_library(config.photo_library))
        return cls(tuple(load_templates()), photos, str(resolve_dlib_model("shape_predictor_68_face_landmarks.dat")),
                   library)


class PreparedFace(NamedTuple):
    """A source image decoded, detected and aligned (:meth:`MaskSynthesizer.prepare_photo`).

    Attributes:
        face: ``(S, S, 3) uint8`` RGB crop (the image itself when not aligning).
        landmarks: ``(68, 2) float32`` in ``face`` pixels.
        box: ``(4,) float32`` the detector's box in ``face`` pixels.
        num_faces: faces the detector found in the image.
        jpeg: ``(quality, scale)``: the source's estimated JPEG quality (:func:`maskbench.core.io.jpeg_quality`)
            and the crop's pixels per source pixel; None for a source that is not a JPEG.
    """

    face: np.ndarray
    landmarks: np.ndarray
    box: np.ndarray
    num_faces: int
    jpeg: tuple[float, float] | None


class MaskSynthesizer:
    """Puts masks on faces: the per-process worker of :func:`synthesize`, usable on its own.

    Args:
        config: the dataset settings.
        detector: a :class:`maskbench.faces.landmarks.FaceDetector` (built if None).
        assets: what it reads from disk (:meth:`SynthAssets.load` if None).

    Raises:
        maskbench.core.resources.ModelNotFoundError: the landmark model is missing.
        FileNotFoundError: ``config.textures`` is given but holds no readable image.
    """

    def __init__(self, config: SynthConfig, detector: FaceDetector | None = None, assets: SynthAssets | None = None):
        assets = assets or SynthAssets.load(config)
        self.config = config
        self.detector = detector or FaceDetector(assets.landmark_model)
        self.templates = {t: [s for s in assets.templates if s.mask_type == t] for t in config.mask_types}
        self.bank = TextureBank(photos=assets.photos)
        self.photo_library = assets.photo_library
        canon = canonical_landmarks(config.size)
        self._anchors = load_anchor_sets()
        self._warps = {name: PiecewiseAffineWarp(a.points(canon)) for name, a in self._anchors.items()}

    def mask_face(
        self,
        face: np.ndarray,
        landmarks: np.ndarray,
        rng: np.random.Generator,
        mask_type: str,
        jpeg: tuple[float, float] | None = None,
    ) -> dict[str, Any]:
        """Draw one mask of ``mask_type`` on an (aligned) face.

        Args:
            face: ``(H, W, 3) uint8`` RGB.
            landmarks: ``(68, 2)`` landmarks in ``face`` pixels.
            rng: the sample's generator (picks template and texture).
            mask_type: one of ``MASK_TYPES``.
            jpeg: ``(quality, scale)`` of the source photo (:attr:`PreparedFace.jpeg`): the mask gets its JPEG
                artefacts; None for none.

        Returns:
            dict with ``masked`` ``(H, W, 3) uint8``, ``hole`` ``(H, W) bool``, ``template_id``, ``texture_id``.
        """
        m = self.draw_mask(landmarks, rng, mask_type)
        masked, hole = put_mask(face, m.rgb, m.alpha, m.warp, m.anchors, rng, landmarks=landmarks, jpeg=jpeg)
        return {"masked": masked, "hole": hole, "template_id": m.template_id, "texture_id": m.texture_id,
                "template_kind": m.template_kind}

    def draw_mask(self, landmarks: np.ndarray, rng: np.random.Generator, mask_type: str) -> DrawnMask:
        """Pick a template and texture of ``mask_type`` with ``rng`` and render it in the canonical frame: the
        first half of :meth:`mask_face`, before the mask is warped onto the face (``put_mask``).

        With ``mix`` templates a first draw picks photo or procedural (:attr:`SynthConfig.photo_share`); a
        photo template takes the template, then the texture-swap draw, then (if swapped) the texture.

        Args:
            landmarks: ``(68, 2)`` landmarks in face pixels (they place the warp's anchor points).
            rng: the sample's generator; two draws are taken from it (template, then texture).
            mask_type: one of ``MASK_TYPES``.
        """
        cfg, lib = self.config, self.photo_library
        if lib is not None and lib.by_type.get(mask_type):
            if cfg.template_kind == "photo" or rng.random() < cfg.photo_share:
                return self._draw_photo(landmarks, rng, mask_type)
        specs = self.templates[mask_type]
        spec = specs[int(rng.integers(len(specs)))]
        texture_id = self.bank.pick(mask_type, rng)
        texture = None if texture_id is None else self.bank.image(texture_id, self.config.size)
        rgb, alpha = render_template(spec, texture, size=self.config.size)
        return DrawnMask(rgb, alpha, self._warps[spec.anchors], self._anchors[spec.anchors].points(landmarks),
                         spec.template_id, texture_id, "procedural")

    def _draw_photo(self, landmarks: np.ndarray, rng: np.random.Generator, mask_type: str) -> DrawnMask:
        """A photo template of ``mask_type``: relit (its own shading divided out), its albedo swapped for a
        texture on :attr:`SynthConfig.photo_texture_share` of the draws."""
        cfg, size = self.config, self.config.size
        choices = self.photo_library.by_type[mask_type]
        t = choices[int(rng.integers(len(choices)))]
        layer = self.photo_library.relit_layer if cfg.photo_relight else self.photo_library.layer
        rgb, alpha = layer(t.template_id, size)
        texture_id = None
        if rng.random() < cfg.photo_texture_share:
            texture_id = self.bank.pick(mask_type, rng)
            if texture_id is not None:
                rgb = swap_texture(rgb, alpha, self.bank.image(texture_id, size))
        return DrawnMask(rgb, alpha, self._warps[t.anchors], self._anchors[t.anchors].points(landmarks),
                         t.template_id, texture_id, "photo")

    def prepare(self, item: SourceItem) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """Decode, detect and align one source image: the first four fields of :meth:`prepare_photo`.

        Returns:
            ``(face (S, S, 3) uint8, landmarks (68, 2) float32, box (4,) float32, num_faces)``, in output pixels.

        Raises:
            as :meth:`prepare_photo`.
        """
        return tuple(self.prepare_photo(item))[:4]

    def prepare_photo(self, item: SourceItem) -> PreparedFace:
        """Decode, detect and align one source image, and note its JPEG quality.

        Returns:
            :class:`PreparedFace`, in output pixels.

        Raises:
            ImageDecodeError: the file is not a usable image.
            NoFaceError: no face found.
            FacePoseError: the face is in profile (or its landmarks failed): nose tip outside the outline,
                or more than ``MAX_FOLDED_TRIANGLES`` anchor triangles fold over.
        """
        try:
            data = item.read_bytes()
        except OSError as e:
            raise ImageDecodeError(f"cannot read: {e}") from None
        image = decode_image(data, item.source_id)
        det = self.detector(image)
        if not nose_inside_outline(det.landmarks):
            raise FacePoseError(f"face turned too far: yaw {estimate_yaw(det.landmarks):.0f} deg, nose tip "
                                "outside the face outline")
        folds = self._warps["face"].folded(self._anchors["face"].points(det.landmarks))
        if folds > MAX_FOLDED_TRIANGLES:
            raise FacePoseError(f"face turned too far: yaw {estimate_yaw(det.landmarks):.0f} deg, {folds} "
                                "anchor triangles fold over")
        quality = jpeg_quality(data)
        if not self.config.align:
            return PreparedFace(image, det.landmarks, det.box, det.num_faces, None if quality is None else (quality, 1.0))
        face, m = align_ffhq(image, det.landmarks, self.config.size)
        lm = transform_points(det.landmarks, m)
        corners = transform_points(det.box.reshape(2, 2), m).reshape(-1)
        jpeg = None if quality is None else (quality, affine_scale(m))  # crop pixels per source pixel
        return PreparedFace(face, lm, corners, det.num_faces, jpeg)


# ----------------------------------------------------------------------------------------------- runner


@dataclass
class SynthReport:
    """What a :func:`synthesize` call did.

    Attributes:
        out: the dataset folder.
        found: entries the source listed (readable or not).
        planned: those this call covers (after split, limit and shard).
        resumed: planned entries already done by an earlier run.
        faces: entries that gave samples in this call; ``written``: the samples (``faces * variants``).
        skipped: entries skipped in this call, by reason category.
        seconds: wall time; ``totals``: the dataset's counts afterwards (train, test, skipped).
    """

    out: Path
    found: int = 0
    planned: int = 0
    resumed: int = 0
    faces: int = 0
    written: int = 0
    skipped: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    totals: dict[str, int] = field(default_factory=dict)

    @property
    def faces_per_second(self) -> float:
        done = self.written + sum(self.skipped.values())
        return done / self.seconds if self.seconds > 0 else 0.0


_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


_MAX_BASE_ID = 190  # ids stay within maskbench.data.format.ID_PATTERN (200 characters) with a variant suffix


def _plan_ids(items: list[SourceItem]) -> dict[str, str]:
    """A file-safe, unique id per source item: the id without extension (no leading dot, at most 190
    characters, matching :data:`maskbench.data.format.ID_PATTERN`), hashed on collision."""
    base = {}
    for it in items:
        stem = it.source_id.rsplit(".", 1)[0] if "." in Path(it.source_id).name else it.source_id
        b = re.sub(r"^[._]+|_+$", "", _ID_UNSAFE.sub("_", stem.replace("/", "__"))) or "img"
        if len(b) > _MAX_BASE_ID:
            b = f"{b[: _MAX_BASE_ID - 9]}-{hashlib.sha1(it.source_id.encode()).hexdigest()[:8]}"
        base[it.source_id] = b
    counts = Counter(base.values())
    return {
        sid: (b if counts[b] == 1 else f"{b}-{hashlib.sha1(sid.encode()).hexdigest()[:6]}") for sid, b in base.items()
    }


_WORKER: MaskSynthesizer | None = None
_WORKER_ERROR: BaseException | None = None
_WORKER_CTX: dict[str, Any] = {}


def init_worker(config: SynthConfig, out: str, source_name: str, assets: SynthAssets) -> None:
    """Set up this process as a synthesis worker: one :class:`MaskSynthesizer` writing into ``out`` (a pool's
    initializer, or a Ray actor's constructor in :mod:`maskbench.data.synth_ray`); :func:`process_batch` then
    makes the samples. A set-up error is kept and raised by every :func:`process_batch` call."""
    global _WORKER, _WORKER_ERROR
    cv2.setNumThreads(1)
    _WORKER_CTX.update(out=Path(out), source=source_name)
    try:
        _WORKER = MaskSynthesizer(config, assets=assets)
    except Exception as e:  # noqa: BLE001 - raised by process_batch: a Pool respawns a failing initializer forever
        # (what can fail on disk is loaded by the parent, SynthAssets.load; this catches the rest)
        _WORKER, _WORKER_ERROR = None, e


def process_batch(jobs: list[tuple[SourceItem, str, str]]) -> list[dict[str, Any]]:
    """Make all samples of some source items ``(item, base id, split)`` in a worker set up by :func:`init_worker`:
    one result per item (the line its resume log gets), each returned once its files are written.

    The PNG encoding and writing of an item run on the worker's writer thread while the next item is
    detected and masked (OpenCV's encoder releases the GIL), so a single worker uses a second core for
    its I/O. A result is only returned, and so only logged as done, after its files are on disk: an
    interrupted run resumes exactly as before.

    Raises:
        Exception: only the worker's own set-up error (bad texture folder, missing model), for every batch.
    """
    if _WORKER is None:
        raise _WORKER_ERROR or RuntimeError("synthesis worker not initialised")
    writer = _writer()
    results, pending = [], []
    for job in jobs:
        res, writes = _make_samples(job)
        results.append(res)
        pending.append(writer.submit(_write_samples, writes) if writes else None)
    for i, (job, fut) in enumerate(zip(jobs, pending)):
        if fut is None:
            continue
        try:
            fut.result()
        except Exception as e:  # a write failing on one face is recorded, the run goes on
            results[i] = _skip(job[0], f"error: {stable_message(e)}")
    return results


def _writer():
    """The worker's writer thread (one: the encoder is the only I/O, and its order does not matter)."""
    if "writer" not in _WORKER_CTX:
        from concurrent.futures import ThreadPoolExecutor

        _WORKER_CTX["writer"] = ThreadPoolExecutor(1, thread_name_prefix="maskbench-write")
    return _WORKER_CTX["writer"]


def _write_samples(writes: list[tuple[Path, SampleRecord, np.ndarray, np.ndarray, np.ndarray]]) -> None:
    for split_dir, rec, masked, face, hole in writes:
        write_sample(split_dir, rec, masked, face, hole)


def _make_samples(job: tuple[SourceItem, str, str]) -> tuple[dict[str, Any], list]:
    """One source item's result (records or a skip) and the sample files still to write."""
    item, base_id, split = job
    if item.problem is not None:  # a folder entry that is not a readable file: accounted for, not read
        return _skip(item, item.problem), []
    worker, cfg, out = _WORKER, _WORKER.config, _WORKER_CTX["out"]
    try:
        face, lm, box, num_faces, jpeg = worker.prepare_photo(item)
    except ImageDecodeError as e:
        return _skip(item, f"bad image: {str(e).split(': ', 1)[-1]}"), []
    except FacePoseError as e:
        return _skip(item, str(e)), []
    except NoFaceError:
        return _skip(item, "no face found"), []
    except Exception as e:  # a bad input must never stop the run: record it
        return _skip(item, f"error: {stable_message(e)}"), []
    records, writes = [], []
    try:
        for k in range(cfg.variants):
            seed = sample_seed(cfg.seed, item.source_id, k)
            rng = np.random.default_rng(seed)
            types = cfg.mask_types  # the variants of one face cycle through the types from a seeded start
            mask_type = types[(sample_seed(cfg.seed, item.source_id, 0) + k) % len(types)]
            res = worker.mask_face(face, lm, rng, mask_type, jpeg)
            sid = base_id if cfg.variants == 1 else f"{base_id}_{k}"
            rec = SampleRecord(
                id=sid,
                **sample_file_names(sid),
                source=_WORKER_CTX["source"],
                source_id=item.source_id,
                identity=item.identity,
                split=split,
                mask_type=mask_type,
                template_id=res["template_id"],
                texture_id=res["texture_id"],
                template_kind=res["template_kind"],
                seed=seed,
                landmarks=np.round(lm.astype(np.float64), 2).tolist(),
                face_box=np.round(box.astype(np.float64), 2).tolist(),
                hole_fraction=round(float(res["hole"].mean()), 6),
                yaw=round(estimate_yaw(lm), 2),
                num_faces=int(num_faces),
                width=int(face.shape[1]),
                height=int(face.shape[0]),
            )
            writes.append((out / split, rec, res["masked"], face, res["hole"]))
            d = rec.as_dict()
            if cfg.template_kind == "procedural":
                # a drawn-only build writes its records as before photo templates existed (no template_kind
                # field; readers take its absence as procedural), so it keeps its dataset fingerprint
                d.pop("template_kind")
            records.append(d)
    except Exception as e:  # a template/texture failure on one face is recorded, the run goes on
        return _skip(item, f"error: {stable_message(e)}"), []
    return {"source_id": item.source_id, "records": records}, writes


def _skip(item: SourceItem, reason: str) -> dict[str, Any]:
    return {"source_id": item.source_id, "path": item.path or "", "skipped": reason}


def _manifest(config: SynthConfig, source: Source, assets: SynthAssets) -> dict[str, Any]:
    library = assets.photo_library
    photo = None if library is None else {
        "fingerprint": library.fingerprint(), "templates": len(library), "licence": library.card.get("licence"),
        "source": (library.card.get("source") or {}).get("folder"), "per_type": library.card.get("per_type")}
    return {
        "format": FORMAT_VERSION,
        "maskbench_version": __version__,
        "config": {**asdict(config), "mask_types": list(config.mask_types)},
        "source": {"name": source.name, "description": source.description, "license": source.license,
                   "license_note": source.license_note, "citation": source.citation},
        "template_library": library_hash() + ("" if photo is None else f"+photo:{photo['fingerprint']}"),
        **({} if photo is None else {"photo_library": photo}),
    }


def synthesize(
    source: Source,
    out: str | os.PathLike,
    config: SynthConfig = SynthConfig(),
    *,
    split: str = "all",
    limit: int | None = None,
    workers: int = 1,
    num_shards: int = 1,
    shard_index: int = 0,
    progress: bool = True,
    engine: Any = None,
) -> SynthReport:
    """Build (or resume) a Masked-Faces dataset in ``out``.

    Args:
        source: from :func:`maskbench.data.sources.resolve_source`.
        out: output folder (format: :mod:`maskbench.data.dataset`).
        config: the dataset's content settings.
        split: ``train``, ``test`` or ``all``: which output split(s) to make (assignment is by identity,
            see :func:`maskbench.data.sources.assign_split`).
        limit: at most this many source images (after the split filter, in source-id order).
        workers: processes.
        num_shards, shard_index: take every ``num_shards``-th image starting at ``shard_index`` (a job array
            runs one shard per task into the same folder; each shard finalises the tables with what is done).
            A run holds its shard's run lock from set-up to the end, so shards of one job (same settings,
            shard count, split and limit) run side by side while any other writer is refused.
        progress: show a progress bar (rate and ETA) on stderr.
        engine: None for this machine's processes (``workers``), or an engine with ``map_batches(batches,
            init_args)`` yielding each batch's :func:`process_batch` results as they finish, in any order
            (:class:`maskbench.data.synth_ray.RaySynthEngine`); this process keeps the resume log either way.

    Returns:
        a :class:`SynthReport`.

    Raises:
        ValueError: bad split/shard arguments.
        OutputFolderError: ``out`` cannot be created (a part of its path is a file).
        OutputFolderBusyError: (an ``OutputFolderError``) another run is writing the same shard into ``out``,
            or a run with other settings, shard count, split or limit is writing into it; refused before
            anything is written (see :class:`maskbench.data.synth_folder.ShardLock`).
        DatasetMismatchError: ``out`` holds samples made with other settings (a folder without samples,
            e.g. left by a failed first run, is restarted with the new settings instead).
        FileNotFoundError: a bad ``config.textures`` folder, or a missing model; raised before any worker
            starts or anything is written.
    """
    if split not in ("train", "test", "all"):
        raise SynthConfigError(f"split must be train, test or all, got {split!r}")
    if not (num_shards >= 1 and 0 <= shard_index < num_shards):
        raise SynthConfigError(f"shard index {shard_index} not in 0..{num_shards - 1}")
    if workers < 1:
        raise SynthConfigError(f"workers must be >= 1, got {workers}")
    out = Path(out)
    t0 = time.perf_counter()
    if source.name == "demo" and config.variants == 1:  # one photo: show it with every mask type
        config = SynthConfig(**{**asdict(config), "variants": len(config.mask_types)})
    assets = SynthAssets.load(config)  # in this process: a bad texture folder or model fails here, once
    manifest = _manifest(config, source, assets)
    items = source.items
    job = {"config": manifest["config"], "template_library": manifest["template_library"], "source": source.name,
           "split": split, "limit": limit, "num_shards": num_shards, "shard_index": shard_index}
    with locked(out):
        run_lock = ShardLock(out, job)  # held to the end: a second writer of this shard is refused here
        try:
            records, _ = load_state(out)
            check_manifest(out, manifest, has_samples=bool(records), config_defaults=PHOTO_DEFAULTS)
            atomic_write_json(out / MANIFEST_FILE, {**manifest, "counts": read_counts(out)})
            records, skips = load_state(out)
        except BaseException:
            run_lock.release()
            raise
    try:
        ids = _plan_ids(items)
        jobs = []
        for it in items:
            s = assign_split(it, config.test_fraction)
            if split in ("all", s):
                jobs.append((it, ids[it.source_id], s))
        if limit is not None:
            jobs = jobs[:limit]
        jobs = jobs[shard_index::num_shards]
        done_sources = {r["source_id"] for r in records.values()} | set(skips)
        todo = [j for j in jobs if j[0].source_id not in done_sources]
        report = SynthReport(out=out, found=len(items), planned=len(jobs), resumed=len(jobs) - len(todo))
        log_path = out / PROGRESS_DIR / f"shard-{shard_index:05d}-of-{num_shards:05d}.jsonl"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        if todo:
            _run_jobs(todo, config, assets, out, source.name, workers, log_path, report, progress, engine)
        with locked(out):
            report.totals = finalize(out, manifest)
            if log_path.is_file():
                log_path.unlink()
            run_lock.release()
        report.seconds = time.perf_counter() - t0
        return report
    finally:
        run_lock.release(remove=False)  # after an error: the file stays (removing it needs the folder lock)


_BATCH = 8  # source items per worker call: their writes overlap the next item's compute


def _run_jobs(todo, config, assets, out, source_name, workers, log_path, report, progress, engine=None) -> None:

    bar = progress_bar(len(todo), unit="face", enabled=progress, smoothing=0.05)
    drop_partial_line(log_path)
    with open(log_path, "a", encoding="utf-8") as log:

        def handle(res: dict[str, Any]) -> None:
            log.write(json.dumps(res, sort_keys=True) + "\n")
            log.flush()
            if "skipped" in res:
                report.skipped[res["skipped"].split(":")[0]] += 1
            else:
                report.faces += 1
                report.written += len(res["records"])
            bar.update(1)
            bar.set_postfix(skipped=sum(report.skipped.values()), refresh=False)

        batches = [todo[i : i + _BATCH] for i in range(0, len(todo), _BATCH)]
        if engine is not None:
            for results in engine.map_batches(batches, (config, str(out), source_name, assets)):
                for res in results:
                    handle(res)
        elif workers == 1:
            init_worker(config, str(out), source_name, assets)
            for batch in batches:
                for res in process_batch(batch):
                    handle(res)
        else:
            import multiprocessing as mp

            with mp.get_context("spawn").Pool(workers, init_worker, (config, str(out), source_name, assets)) as pool:
                for results in pool.imap(process_batch, batches):
                    for res in results:
                        handle(res)
    bar.close()


