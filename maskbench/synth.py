"""Masked-Faces synthesis: warp a mask template onto a face by its landmarks, composite, and write pairs.

Per face: decode -> detect + 68 landmarks -> FFHQ-aligned crop -> for each sample pick a mask type,
template and texture from a per-sample seeded generator -> render the template in the canonical frame
-> piecewise-affine warp onto the face's anchor points -> light it with the face's own shading ->
alpha-composite -> write masked / original / binary mask PNGs and a metadata record.

Runs are deterministic (every sample's generator is seeded from ``(seed, source_id, k)``, so the
output does not depend on workers, shards or interruptions) and resumable (a progress log per shard
under ``DIR/.progress``; files are written atomically).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from . import __version__
from .dataset import MASK_TYPES
from .faces import FaceDetector, FacePoseError, NoFaceError, align_ffhq, estimate_yaw, nose_inside_outline, transform_points
from .io import ImageDecodeError, atomic_write_json, decode_image, stable_message, write_png
from .sources import Source, SourceItem, assign_split
from .synth_folder import (
    MANIFEST_FILE,
    PROGRESS_DIR,
    DatasetMismatchError,
    OutputFolderError,
    _check_manifest,
    _drop_partial_line,
    _finalize,
    _load_state,
    _locked,
    _read_counts,
)

__all__ = [
    "SynthConfig",
    "SynthReport",
    "AnchorSet",
    "load_anchor_sets",
    "PiecewiseAffineWarp",
    "face_shading",
    "composite",
    "MaskSynthesizer",
    "synthesize",
    "DatasetMismatchError",
    "OutputFolderError",
]

#: Faces whose landmarks fold more anchor triangles than this over (strong profiles, failed landmark fits:
#: 3 of 193 CelebA faces, all |yaw| > 40 deg) are skipped: a 2-D warp cannot put a mask on them.
MAX_FOLDED_TRIANGLES = 8
# ----------------------------------------------------------------------------------------------- anchors


@dataclass(frozen=True)
class AnchorSet:
    """Warp control points defined on the 68 landmarks (see ``mask_templates/anchors.json``).

    Attributes:
        name: the set's name (``face``, ``face_neck``).
        landmarks: indices of landmarks used as they are.
        extrapolated: ``(M, 3)`` rows ``(from, away, t)``: point ``lm[from] + t * (lm[from] - lm[away])``.
    """

    name: str
    landmarks: tuple[int, ...]
    extrapolated: tuple[tuple[int, int, float], ...]

    def points(self, landmarks: np.ndarray) -> np.ndarray:
        """Evaluate the set on ``(68, 2)`` landmarks; returns ``(K, 2) float64`` points, pixels."""
        lm = np.asarray(landmarks, np.float64)
        pts = [lm[list(self.landmarks)]]
        if self.extrapolated:
            e = np.array(self.extrapolated)
            a, b, t = e[:, 0].astype(int), e[:, 1].astype(int), e[:, 2:3]
            pts.append(lm[a] + t * (lm[a] - lm[b]))
        return np.concatenate(pts)


@lru_cache(maxsize=1)
def load_anchor_sets(path: str | None = None) -> dict[str, AnchorSet]:
    """Read ``mask_templates/anchors.json`` into :class:`AnchorSet` objects.

    Raises:
        ValueError: a landmark index is outside 0-67 or a set is malformed.
    """
    from .templates import data_dir

    raw = json.loads(Path(path or data_dir() / "anchors.json").read_text())
    sets = {}
    for name, spec in raw.items():
        if name.startswith("_"):
            continue
        lms = tuple(int(i) for i in spec["landmarks"])
        ext = tuple((int(e["from"]), int(e["away"]), float(e["t"])) for e in spec.get("extrapolated", []))
        bad = [i for i in lms + tuple(x for e in ext for x in e[:2]) if not 0 <= i < 68]
        if bad:
            raise ValueError(f"anchors.json set {name!r}: landmark indices out of range: {bad}")
        sets[name] = AnchorSet(name, lms, ext)
    return sets


# ------------------------------------------------------------------------------------------------- warp


class PiecewiseAffineWarp:
    """Piecewise-affine warp from a canonical frame to a face, over a fixed Delaunay triangulation.

    The triangulation is computed once on the canonical points (``scipy.spatial.Delaunay``); for a target
    point set each triangle gets its own affine map (``cv2.getAffineTransform``), every target pixel is
    labelled with the triangle covering it (``cv2.fillConvexPoly``, sub-pixel; a pixel
    between two triangles that neither covers takes a neighbour's triangle), and the source image is
    sampled once with ``cv2.remap`` (bilinear). Pixels outside every triangle become transparent.
    Where a turned head folds triangles over, the later triangle wins.

    Args:
        canonical_points: ``(K, 2)`` control points in the canonical frame, pixels.
    """

    def __init__(self, canonical_points: np.ndarray):
        from scipy.spatial import Delaunay

        self.src = np.asarray(canonical_points, np.float64)
        self.triangles = Delaunay(self.src).simplices.astype(np.int32)

    def folded(self, dst_points: np.ndarray) -> int:
        """How many triangles flip orientation between the canonical and ``dst_points`` (fold-overs)."""
        def orientation(p: np.ndarray) -> np.ndarray:
            d = np.asarray(p, np.float64)[self.triangles]
            return np.sign((d[:, 1, 0] - d[:, 0, 0]) * (d[:, 2, 1] - d[:, 0, 1])
                           - (d[:, 2, 0] - d[:, 0, 0]) * (d[:, 1, 1] - d[:, 0, 1]))

        return int((orientation(dst_points) != orientation(self.src)).sum())

    def __call__(
        self,
        image: np.ndarray,
        dst_points: np.ndarray,
        out_size: tuple[int, int],
        support: tuple[int, int, int, int] | None = None,
    ) -> np.ndarray:
        """Warp ``image`` (canonical frame) so its control points land on ``dst_points``.

        Args:
            image: ``(Hs, Ws, C) float32`` source, e.g. premultiplied RGBA.
            dst_points: ``(K, 2)`` target control points, pixels.
            out_size: ``(H, W)`` of the output.
            support: ``(x0, y0, x1, y1)`` box of ``image`` outside which it is zero; only triangles that
                meet it are warped, and only over their target bounding box (a speed-up, same result
                except where a turned head folds an empty triangle over a non-empty one).

        Returns:
            ``(H, W, C) float32``; zero outside the warped triangles.
        """
        h, w = out_size
        dst = np.asarray(dst_points, np.float64)
        n = len(self.triangles)
        active = np.arange(n)
        if support is not None:
            tri_src = self.src[self.triangles]
            lo, hi = tri_src.min(1), tri_src.max(1)
            meets = (hi[:, 0] >= support[0]) & (lo[:, 0] <= support[2]) & (hi[:, 1] >= support[1]) & (lo[:, 1] <= support[3])
            active = active[meets]
        pts = dst[self.triangles[active]].reshape(-1, 2)
        x0, y0 = np.clip(np.floor(pts.min(0)).astype(int) - 2, 0, [w, h]) if len(pts) else (0, 0)
        x1, y1 = np.clip(np.ceil(pts.max(0)).astype(int) + 3, 0, [w, h]) if len(pts) else (0, 0)
        channels = image.shape[2] if image.ndim == 3 else 1
        full = np.zeros((h, w, channels), np.float32)
        if x1 <= x0 or y1 <= y0:
            return full
        ww, wh = x1 - x0, y1 - y0
        inv = np.zeros((n + 1, 2, 3), np.float64)
        inv[n] = [[0, 0, -1e4], [0, 0, -1e4]]  # label n = outside: sample far off the source
        label = np.full((wh, ww), n, np.int32)
        shift = 4
        for t in active:
            tri = self.triangles[t]
            d = dst[tri] - (x0, y0)
            area = (d[1, 0] - d[0, 0]) * (d[2, 1] - d[0, 1]) - (d[2, 0] - d[0, 0]) * (d[1, 1] - d[0, 1])
            if abs(area) < 1e-6:
                continue
            inv[t] = cv2.getAffineTransform(d.astype(np.float32), self.src[tri].astype(np.float32))
            cv2.fillConvexPoly(label, np.round(d * (1 << shift)).astype(np.int32), int(t), cv2.LINE_8, shift)
        # a pixel on a shared edge that sub-pixel filling gave to neither triangle takes a neighbour's label
        gap = label == n
        if gap.any():
            known = np.where(gap, -1, label).astype(np.float32)
            grown = cv2.dilate(known, np.ones((3, 3), np.uint8)).astype(np.int32)
            fill = gap & (grown >= 0)
            label[fill] = grown[fill]
        ys, xs = np.mgrid[0:wh, 0:ww].astype(np.float32)  # window coordinates, as the affines expect
        m = inv[label].astype(np.float32)
        map_x = m[..., 0, 0] * xs + m[..., 0, 1] * ys + m[..., 0, 2]
        map_y = m[..., 1, 0] * xs + m[..., 1, 1] * ys + m[..., 1, 2]
        out = cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        full[y0:y1, x0:x1] = out.reshape(wh, ww, channels)
        return full


# -------------------------------------------------------------------------------------------- composite


def face_shading(face: np.ndarray, region: np.ndarray, strength: float = 0.8) -> np.ndarray:
    """Low-frequency shading of a face, to light a mask drawn over it.

    The face's luminance (Rec. 601 luma) is blurred (Gaussian, sigma = 4% of the image side) and divided
    by its median over ``region``, so a mask keeps its own colour on average but darkens where the face is
    in shadow and brightens where it is lit. ``strength`` blends towards 1 (no shading).

    Args:
        face: ``(H, W, 3) uint8`` RGB.
        region: ``(H, W) bool``, the pixels the mask covers.
        strength: in [0, 1].

    Returns:
        ``(H, W) float32`` multiplicative factor, clipped to [0.45, 1.4].
    """
    luma = cv2.cvtColor(face, cv2.COLOR_RGB2GRAY).astype(np.float32) + 1.0
    sigma = 0.04 * max(face.shape[:2])
    blurred = cv2.GaussianBlur(luma, (0, 0), sigma)
    ref = float(np.median(blurred[region])) if region.any() else float(blurred.mean())
    return np.clip(1.0 + strength * (blurred / ref - 1.0), 0.45, 1.4).astype(np.float32)


def composite(face: np.ndarray, premultiplied: np.ndarray, alpha: np.ndarray, shading: np.ndarray | None = None):
    """Alpha-composite a warped mask over a face ("over" operator, Porter & Duff 1984).

    Alpha is quantised to 8 bits first; the binary occlusion mask is exactly ``alpha_8bit > 0``, and
    every pixel outside it equals the face byte for byte. Edge pixels are blended
    ``a * colour + (1 - a) * face``, never added, so edges carry no bright or dark fringe.

    Args:
        face: ``(H, W, 3) uint8`` RGB.
        premultiplied: ``(H, W, 3) float32``, mask colour times alpha, colour in [0, 1].
        alpha: ``(H, W) float32`` coverage in [0, 1].
        shading: optional ``(H, W) float32`` factor applied to the mask colour (:func:`face_shading`).

    Returns:
        ``(masked, hole)``: ``(H, W, 3) uint8`` composite and ``(H, W) bool`` occlusion mask.
    """
    a8 = np.clip(np.rint(alpha * 255.0), 0, 255).astype(np.uint8)
    hole = a8 > 0
    out = face.copy()
    ys, xs = np.nonzero(hole)
    if len(ys) == 0:
        return out, hole
    win = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))  # work on the hole's box only
    h = hole[win]
    a = a8[win].astype(np.float32)[..., None] / 255.0
    colour = premultiplied[win] / np.maximum(alpha[win], 1e-6)[..., None]
    if shading is not None:
        colour = colour * shading[win][..., None]
    colour = np.clip(colour, 0.0, 1.0) * 255.0
    f = face[win].astype(np.float32)
    blended = np.clip(np.rint(a * colour + (1.0 - a) * f), 0, 255).astype(np.uint8)
    out[win] = np.where(h[..., None], blended, face[win])
    return out, hole


# ---------------------------------------------------------------------------------------------- config


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
            :class:`maskbench.textures.TextureBank` draws a photo for most samples).
    """

    size: int = 256
    align: bool = True
    seed: int = 0
    mask_types: tuple[str, ...] = MASK_TYPES
    variants: int = 1
    test_fraction: float = 0.1
    textures: str | None = None

    def __post_init__(self):
        bad = [t for t in self.mask_types if t not in MASK_TYPES]
        if bad or not self.mask_types:
            raise ValueError(f"unknown mask type(s) {bad}; choose from {', '.join(MASK_TYPES)}")
        if not 32 <= self.size <= 4096:
            raise ValueError(f"size must be in 32..4096 px, got {self.size}")
        if not 0.0 <= self.test_fraction <= 1.0:
            raise ValueError(f"test_fraction must be in [0, 1], got {self.test_fraction}")
        if self.variants < 1:
            raise ValueError(f"variants must be >= 1, got {self.variants}")


def sample_seed(seed: int, source_id: str, k: int) -> int:
    """The 63-bit seed of sample ``k`` of ``source_id`` (SHA-256 based, independent of run order)."""
    h = hashlib.sha256(f"maskbench|{seed}|{source_id}|{k}".encode()).digest()
    return int.from_bytes(h[:8], "big") >> 1


# ---------------------------------------------------------------------------------------- per-face work


class MaskSynthesizer:
    """Puts masks on faces: the per-process worker of :func:`synthesize`, usable on its own.

    Args:
        config: the dataset settings.
        detector: a :class:`maskbench.faces.FaceDetector` (built if None).

    Raises:
        ModelNotFoundError: the landmark model is missing.
        FileNotFoundError: ``config.textures`` is given but holds no readable image.
    """

    def __init__(self, config: SynthConfig, detector: FaceDetector | None = None):
        from .templates import canonical_landmarks, load_templates
        from .textures import TextureBank, load_photo_textures

        self.config = config
        self.detector = detector or FaceDetector()
        templates = load_templates()
        self.templates = {t: [s for s in templates if s.mask_type == t] for t in config.mask_types}
        photos = None
        if config.textures:
            photos, _ = load_photo_textures(config.textures)
        self.bank = TextureBank(photos=photos)
        canon = canonical_landmarks(config.size)
        self._anchors = load_anchor_sets()
        self._warps = {name: PiecewiseAffineWarp(a.points(canon)) for name, a in self._anchors.items()}

    def mask_face(
        self, face: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator, mask_type: str
    ) -> dict[str, Any]:
        """Draw one mask of ``mask_type`` on an (aligned) face.

        Args:
            face: ``(H, W, 3) uint8`` RGB.
            landmarks: ``(68, 2)`` landmarks in ``face`` pixels.
            rng: the sample's generator (picks template and texture).
            mask_type: one of ``MASK_TYPES``.

        Returns:
            dict with ``masked`` ``(H, W, 3) uint8``, ``hole`` ``(H, W) bool``, ``template_id``, ``texture_id``.
        """
        from .templates import render_template

        specs = self.templates[mask_type]
        spec = specs[int(rng.integers(len(specs)))]
        texture_id = self.bank.pick(mask_type, rng)
        texture = None if texture_id is None else self.bank.image(texture_id, self.config.size)
        rgb, alpha = render_template(spec, texture, size=self.config.size)
        premult = np.concatenate([rgb * alpha[..., None], alpha[..., None]], axis=2).astype(np.float32)
        anchors = self._anchors[spec.anchors]
        ys, xs = np.nonzero(alpha > 0)
        support = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1) if len(xs) else None
        warped = self._warps[spec.anchors](premult, anchors.points(landmarks), face.shape[:2], support)
        w_alpha = np.clip(warped[..., 3], 0.0, 1.0)
        region = w_alpha > 0.5
        shading = face_shading(face, region)
        masked, hole = composite(face, warped[..., :3], w_alpha, shading)
        return {"masked": masked, "hole": hole, "template_id": spec.template_id, "texture_id": texture_id}

    def prepare(self, item: SourceItem) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """Decode, detect and align one source image.

        Returns:
            ``(face (S, S, 3) uint8, landmarks (68, 2) float32, box (4,) float32, num_faces)``, in output pixels.

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
        if not self.config.align:
            return image, det.landmarks, det.box, det.num_faces
        face, m = align_ffhq(image, det.landmarks, self.config.size)
        lm = transform_points(det.landmarks, m)
        corners = transform_points(det.box.reshape(2, 2), m).reshape(-1)
        return face, lm, corners, det.num_faces


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


_MAX_BASE_ID = 190  # ids stay within maskbench.dataset.ID_PATTERN (200 characters) with a variant suffix


def _plan_ids(items: list[SourceItem]) -> dict[str, str]:
    """A file-safe, unique id per source item: the id without extension (no leading dot, at most 190
    characters, matching :data:`maskbench.dataset.ID_PATTERN`), hashed on collision."""
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


def _init_worker(config: SynthConfig, out: str, source_name: str) -> None:
    global _WORKER, _WORKER_ERROR
    cv2.setNumThreads(1)
    _WORKER_CTX.update(out=Path(out), source=source_name)
    try:
        _WORKER = MaskSynthesizer(config)
    except Exception as e:  # noqa: BLE001 - raised by _process: a Pool respawns a failing initializer forever
        _WORKER, _WORKER_ERROR = None, e


def _process(job: tuple[SourceItem, str, str]) -> dict[str, Any]:
    """Make all samples of one source item; failures of the item become a skip entry.

    Raises:
        Exception: only the worker's own set-up error (bad texture folder, missing model), for every job.
    """
    item, base_id, split = job
    if _WORKER is None:
        raise _WORKER_ERROR or RuntimeError("synthesis worker not initialised")
    if item.problem is not None:  # a folder entry that is not a readable file: accounted for, not read
        return _skip(item, item.problem)
    worker, cfg, out = _WORKER, _WORKER.config, _WORKER_CTX["out"]
    try:
        face, lm, box, num_faces = worker.prepare(item)
    except ImageDecodeError as e:
        return _skip(item, f"bad image: {str(e).split(': ', 1)[-1]}")
    except FacePoseError as e:
        return _skip(item, str(e))
    except NoFaceError:
        return _skip(item, "no face found")
    except Exception as e:  # a bad input must never stop the run: record it
        return _skip(item, f"error: {stable_message(e)}")
    records = []
    try:
        for k in range(cfg.variants):
            seed = sample_seed(cfg.seed, item.source_id, k)
            rng = np.random.default_rng(seed)
            types = cfg.mask_types  # the variants of one face cycle through the types from a seeded start
            mask_type = types[(sample_seed(cfg.seed, item.source_id, 0) + k) % len(types)]
            res = worker.mask_face(face, lm, rng, mask_type)
            sid = base_id if cfg.variants == 1 else f"{base_id}_{k}"
            rec = {
                "id": sid,
                "masked_file_name": f"masked/{sid}.png",
                "original_file_name": f"original/{sid}.png",
                "mask_file_name": f"mask/{sid}.png",
                "source": _WORKER_CTX["source"],
                "source_id": item.source_id,
                "identity": item.identity,
                "split": split,
                "mask_type": mask_type,
                "template_id": res["template_id"],
                "texture_id": res["texture_id"],
                "seed": seed,
                "landmarks": np.round(lm.astype(np.float64), 2).tolist(),
                "face_box": np.round(box.astype(np.float64), 2).tolist(),
                "hole_fraction": round(float(res["hole"].mean()), 6),
                "yaw": round(estimate_yaw(lm), 2),
                "num_faces": int(num_faces),
                "width": int(face.shape[1]),
                "height": int(face.shape[0]),
            }
            d = out / split
            write_png(d / rec["masked_file_name"], res["masked"])
            write_png(d / rec["original_file_name"], face)
            write_png(d / rec["mask_file_name"], res["hole"].astype(np.uint8) * 255)
            records.append(rec)
    except Exception as e:  # a template/texture failure on one face is recorded, the run goes on
        return _skip(item, f"error: {stable_message(e)}")
    return {"source_id": item.source_id, "records": records}


def _skip(item: SourceItem, reason: str) -> dict[str, Any]:
    return {"source_id": item.source_id, "path": item.path or "", "skipped": reason}


def _manifest(config: SynthConfig, source: Source) -> dict[str, Any]:
    from .templates import library_hash

    return {
        "format": "maskbench-masked-faces/1",
        "maskbench_version": __version__,
        "config": {**asdict(config), "mask_types": list(config.mask_types)},
        "source": {"name": source.name, "description": source.description, "license": source.license,
                   "license_note": source.license_note, "citation": source.citation},
        "template_library": library_hash(),
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
) -> SynthReport:
    """Build (or resume) a Masked-Faces dataset in ``out``.

    Args:
        source: from :func:`maskbench.sources.resolve_source`.
        out: output folder (format: :mod:`maskbench.dataset`).
        config: the dataset's content settings.
        split: ``train``, ``test`` or ``all``: which output split(s) to make (assignment is by identity,
            see :func:`maskbench.sources.assign_split`).
        limit: at most this many source images (after the split filter, in source-id order).
        workers: processes.
        num_shards, shard_index: take every ``num_shards``-th image starting at ``shard_index`` (a job array
            runs one shard per task into the same folder; each shard finalises the tables with what is done).
        progress: show a progress bar (rate and ETA) on stderr.

    Returns:
        a :class:`SynthReport`.

    Raises:
        ValueError: bad split/shard arguments.
        OutputFolderError: ``out`` cannot be created (a part of its path is a file).
        DatasetMismatchError: ``out`` holds samples made with other settings (a folder without samples,
            e.g. left by a failed first run, is restarted with the new settings instead).
        FileNotFoundError: a bad ``config.textures`` folder, or a missing model (from the workers' set-up).
    """
    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be train, test or all, got {split!r}")
    if not (num_shards >= 1 and 0 <= shard_index < num_shards):
        raise ValueError(f"shard index {shard_index} not in 0..{num_shards - 1}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    out = Path(out)
    t0 = time.perf_counter()
    if source.name == "demo" and config.variants == 1:  # one photo: show it with every mask type
        config = SynthConfig(**{**asdict(config), "variants": len(config.mask_types)})
    manifest = _manifest(config, source)
    items = source.items
    with _locked(out):
        records, _ = _load_state(out)
        _check_manifest(out, manifest, has_samples=bool(records))
        atomic_write_json(out / MANIFEST_FILE, {**manifest, "counts": _read_counts(out)})
        records, skips = _load_state(out)
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
        _run_jobs(todo, config, out, source.name, workers, log_path, report, progress)
    with _locked(out):
        report.totals = _finalize(out, manifest)
        if log_path.is_file():
            log_path.unlink()
    report.seconds = time.perf_counter() - t0
    return report


def _run_jobs(todo, config, out, source_name, workers, log_path, report, progress) -> None:
    from tqdm import tqdm

    bar = tqdm(total=len(todo), unit="face", disable=not progress, dynamic_ncols=True, smoothing=0.05)
    _drop_partial_line(log_path)
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

        if workers == 1:
            _init_worker(config, str(out), source_name)
            for job in todo:
                handle(_process(job))
        else:
            import multiprocessing as mp

            with mp.get_context("spawn").Pool(workers, _init_worker, (config, str(out), source_name)) as pool:
                for res in pool.imap(_process, todo, chunksize=8):
                    handle(res)
    bar.close()


