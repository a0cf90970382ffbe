"""A small stand-in dataset in the Masked-Faces format, for tests and benchmarks.

:func:`write_fake_dataset` writes a folder that :class:`maskbench.data.dataset.MaskedFaces` reads, without
running ``maskbench synth``: faces come from a CelebA-layout folder (detected with
:class:`maskbench.faces.landmarks.FaceDetector`, aligned with :func:`maskbench.faces.landmarks.align_ffhq`), the "mask" is a
flat-coloured, lightly textured polygon over the lower face (jaw points 1-15 and the nose bridge, 28),
and the mask types cycle through :data:`maskbench.data.format.MASK_TYPES`, each filled with its ``swatch``
colour from ``mask_templates/mask_types.yaml``. Without a source folder the faces are synthetic (smooth
noise with an ellipse face) and the landmarks are the canonical mean face
(:func:`maskbench.data.masks.canonical_landmarks`). It is a test fixture, not a benchmark dataset.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
from PIL import ImageColor

from ..core.io import atomic_write_json, read_image
from .format import MASK_TYPES, SampleRecord, sample_file_names, write_metadata, write_sample
from .masks.frame import canonical_landmarks
from .masks.spec import mask_type_rules

__all__ = ["write_fake_dataset", "Thumbnails"]


class Thumbnails:
    """A stand-in feature network for tests of set distances and realism: ``(N, S, S, 3) uint8 -> (N, 432)
    float64``, each image's 12 x 12 RGB thumbnail (area-resized) scaled to [0, 1]. Counts the images it saw in
    :attr:`images_seen` (so a test can tell a cached pass from a computed one)."""

    weights_sha256 = "thumbnails-12"

    def __init__(self):
        self.images_seen = 0

    def __call__(self, images: np.ndarray) -> np.ndarray:
        self.images_seen += len(images)
        return np.stack([cv2.resize(im, (12, 12), interpolation=cv2.INTER_AREA).reshape(-1) for im in images]) / 255.0


def _lower_face_mask(landmarks: np.ndarray, size: int) -> np.ndarray:
    poly = np.concatenate([landmarks[1:16], landmarks[[28]]]).astype(np.float32)
    hull = cv2.convexHull(poly).reshape(-1, 2)
    m = np.zeros((size, size), np.uint8)
    cv2.fillPoly(m, [np.round(hull).astype(np.int32)], 255)
    return m > 127


def _synthetic_face(rng: np.random.Generator, size: int) -> np.ndarray:
    low = rng.uniform(40, 220, (8, 8, 3)).astype(np.float32)
    img = cv2.resize(low, (size, size), interpolation=cv2.INTER_CUBIC)
    skin = rng.uniform(120, 230, 3)
    cv2.ellipse(img, (size // 2, int(size * 0.55)), (int(size * 0.3), int(size * 0.4)), 0, 0, 360, skin.tolist(), -1)
    img = cv2.GaussianBlur(img, (0, 0), 2.0) + rng.normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_fake_dataset(
    out: str | os.PathLike,
    n: int = 16,
    *,
    source: str | os.PathLike | None = None,
    size: int = 256,
    split: str = "test",
    seed: int = 0,
) -> Path:
    """Write ``n`` samples of one split in the Masked-Faces format (see :mod:`maskbench.data.dataset`).

    Args:
        out: the dataset folder to create (or overwrite samples in).
        n: number of samples wanted; fewer are written if the source runs out of detectable faces.
        source: a CelebA-layout folder (``img_align_celeba/*.jpg``) or a folder of images; ``None``
            makes synthetic faces.
        size: output side in pixels.
        split: the split name.
        seed: seeds the texture noise and the synthetic faces.

    Returns:
        ``out`` as a :class:`~pathlib.Path`.

    Raises:
        FileNotFoundError: ``source`` is given but holds no ``.jpg``/``.png`` files.
    """
    out = Path(out)
    rng = np.random.default_rng(seed)
    split_dir = out / split
    records = []
    if source is not None:
        src = Path(source)
        src = src / "img_align_celeba" if (src / "img_align_celeba").is_dir() else src
        files = sorted(p for p in src.iterdir() if p.suffix.lower() in (".jpg", ".png"))
        if not files:
            raise FileNotFoundError(f"{src}: no .jpg or .png images")
        from ..faces.landmarks import NoFaceError, align_ffhq, default_detector, transform_points

        detector = default_detector()

        def faces():
            for p in files:
                img = read_image(p)
                try:
                    face = detector(img)
                except NoFaceError:
                    continue
                crop, m = align_ffhq(img, face.landmarks, size)
                yield p.stem, crop, transform_points(face.landmarks, m)

    else:
        lm0 = canonical_landmarks(size)

        def faces():
            for i in range(n):
                yield f"synthetic{i:05d}", _synthetic_face(rng, size), lm0

    swatches = {t: r.swatch for t, r in mask_type_rules().items()}
    for i, (source_id, original, lm) in enumerate(faces()):
        if i >= n:
            break
        mask_type = MASK_TYPES[i % len(MASK_TYPES)]
        hole = _lower_face_mask(lm, size)
        fill = np.array(ImageColor.getrgb(swatches[mask_type]), np.float32) + rng.normal(0, 6, (size, size, 3))
        masked = np.where(hole[..., None], np.clip(fill, 0, 255).astype(np.uint8), original)
        sid = f"{i:06d}"
        ys, xs = np.nonzero(hole)
        record = SampleRecord(
            id=sid,
            **sample_file_names(sid),
            source="fake",
            source_id=source_id,
            identity=None,
            split=split,
            mask_type=mask_type,
            template_id=None,
            texture_id=None,
            seed=seed,
            landmarks=np.round(lm, 2).tolist(),
            face_box=[float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())],
            hole_fraction=float(hole.mean()),
            yaw=0.0,
            num_faces=1,
            width=size,
            height=size,
        )
        write_sample(split_dir, record, masked, original, hole)
        records.append(record.as_dict())
    write_metadata(split_dir, records)
    atomic_write_json(out / "manifest.json", {"generator": "maskbench.data.testing.write_fake_dataset", "count": len(records)})
    return out

