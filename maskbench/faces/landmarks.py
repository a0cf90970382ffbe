"""Face detection, 68-point landmarks (iBUG-300W convention) and FFHQ-style alignment.

Detection is dlib's HOG frontal-face detector; landmarks are dlib's ``shape_predictor_68_face_landmarks``
(Kazemi & Sullivan, CVPR 2014, trained on iBUG-300W). Model files resolve, in order: an explicit path,
the ``face-recognition-models`` package, the maskbench cache folder, a download from dlib.net over https,
checked against a pinned SHA-256 (:mod:`maskbench.core.resources`); if none is available
:class:`maskbench.core.resources.ModelNotFoundError` names the file and where to put it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from ..core.errors import MaskbenchError
from ..core.resources import resolve_dlib_model

__all__ = [
    "Face",
    "FaceDetector",
    "NoFaceError",
    "FacePoseError",
    "estimate_yaw",
    "nose_inside_outline",
    "align_ffhq",
    "affine_scale",
    "ffhq_quad",
    "ffhq_quad_from_points",
    "warp_quad",
    "inside_photo",
    "face_outline",
    "JAW",
    "BROWS",
    "NOSE_TIP",
    "MOUTH",
]

#: iBUG-68 index groups (0-based), as in Sagonas et al., "300 Faces in-the-Wild Challenge", 2013.
JAW = tuple(range(0, 17))
BROWS = tuple(range(17, 27))
NOSE_TIP = 30
MOUTH = tuple(range(48, 68))
LEFT_EYE = tuple(range(36, 42))  # subject's right eye, image left
RIGHT_EYE = tuple(range(42, 48))

class NoFaceError(MaskbenchError, LookupError):
    """No face was found in an image."""


class FacePoseError(NoFaceError):
    """A face was found but is turned too far (or its landmarks failed) to put a mask on."""


@dataclass(frozen=True)
class Face:
    """One detected face.

    Attributes:
        box: ``(4,) float32`` detector box ``x0, y0, x1, y1`` in image pixels.
        landmarks: ``(68, 2) float32`` iBUG-68 landmarks ``(x, y)`` in image pixels.
        num_faces: how many faces the detector found in the image (this is the largest).
    """

    box: np.ndarray
    landmarks: np.ndarray
    num_faces: int = 1


class FaceDetector:
    """dlib HOG detector + 68-point shape predictor, largest face wins.

    The detector first runs at the image's own scale and, only if it finds nothing, once more on the
    image upsampled 2x (dlib's ``upsample_num_times=1``), which finds faces down to ~40 px.
    Images whose longer side exceeds ``max_detect_side`` are detected on a downscaled copy (landmarks are
    always fitted at full resolution).

    Raises (constructor):
        maskbench.core.resources.ModelNotFoundError: the landmark model cannot be found.
    """

    def __init__(self, landmark_model: str | os.PathLike | None = None, max_detect_side: int = 640):
        import dlib

        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(
            str(resolve_dlib_model("shape_predictor_68_face_landmarks.dat", landmark_model))
        )
        self._max_side = max_detect_side
        self._dlib = dlib

    def __call__(self, image: np.ndarray) -> Face:
        """Detect the largest face in ``image``.

        Args:
            image: ``(H, W, 3) uint8`` RGB.

        Returns:
            The largest :class:`Face`.

        Raises:
            NoFaceError: no face found.
        """
        h, w = image.shape[:2]
        scale = min(1.0, self._max_side / max(h, w))
        small = image if scale == 1.0 else cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        rects = self._detector(small, 0)
        if len(rects) == 0:
            rects = self._detector(small, 1)
        if len(rects) == 0:
            raise NoFaceError("no face found")
        rect = max(rects, key=lambda r: r.width() * r.height())
        box = np.array([rect.left(), rect.top(), rect.right(), rect.bottom()], np.float32) / scale
        return Face(box=box, landmarks=self.landmarks_in_box(image, box), num_faces=len(rects))

    def landmarks_in_box(self, image: np.ndarray, box) -> np.ndarray:
        """dlib's 68 landmarks ``(68, 2) float32`` (image pixels) of the face in ``box`` ``x0, y0, x1, y1``
        of ``(H, W, 3) uint8`` RGB ``image`` (the shape predictor alone, no detection)."""
        drect = self._dlib.rectangle(*(int(round(float(v))) for v in box))
        shape = self._predictor(image, drect)
        return np.array([[p.x, p.y] for p in shape.parts()], np.float32)


def ffhq_quad(landmarks: np.ndarray) -> np.ndarray:
    """The FFHQ crop rectangle of a face (Karras et al., CVPR 2019; NVlabs/ffhq-dataset ``recreate_aligned_images``).

    Args:
        landmarks: ``(68, 2)`` iBUG-68 landmarks, pixels.

    Returns:
        ``(4, 2) float64`` corners: top-left, bottom-left, bottom-right, top-right, in pixels.
    """
    lm = landmarks.astype(np.float64)
    return ffhq_quad_from_points(lm[list(LEFT_EYE)].mean(0), lm[list(RIGHT_EYE)].mean(0), lm[48], lm[54])


def ffhq_quad_from_points(eye_left, eye_right, mouth_left, mouth_right) -> np.ndarray:
    """The FFHQ crop rectangle from the four points its rule uses (so 5-point detectors such as YuNet
    align like the 68 landmarks do).

    Args:
        eye_left, eye_right: ``(2,)`` eye centres in pixels, image-left eye first (the subject's right).
        mouth_left, mouth_right: ``(2,)`` mouth corners, image-left first (iBUG points 48 and 54).

    Returns:
        ``(4, 2) float64`` corners: top-left, bottom-left, bottom-right, top-right, in pixels.
    """
    eye_left, eye_right = np.asarray(eye_left, np.float64), np.asarray(eye_right, np.float64)
    eye_avg = (eye_left + eye_right) / 2
    eye_to_eye = eye_right - eye_left
    mouth_avg = (np.asarray(mouth_left, np.float64) + np.asarray(mouth_right, np.float64)) / 2
    eye_to_mouth = mouth_avg - eye_avg
    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    x /= np.hypot(*x)
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.flipud(x) * [-1, 1]
    c = eye_avg + eye_to_mouth * 0.1
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def align_ffhq(image: np.ndarray, landmarks: np.ndarray, size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """FFHQ-style aligned square crop.

    The crop is the rotated square of :func:`ffhq_quad`, resampled with bilinear interpolation
    (area-averaged first when it shrinks by more than 2x); pixels outside the source are mirrored
    (FFHQ pads by reflection too, and then blurs the padding, which this omits).

    Args:
        image: ``(H, W, 3) uint8`` RGB.
        landmarks: ``(68, 2)`` landmarks in ``image`` pixels.
        size: output side in pixels.

    Returns:
        ``(aligned, M)``: the ``(size, size, 3) uint8`` crop and the ``(2, 3) float64`` affine map from
        source to crop pixels (apply to landmarks with :func:`transform_points`).
    """
    return warp_quad(image, ffhq_quad(landmarks), size)


def inside_photo(photo_hw: tuple[int, int], m: np.ndarray, size: int) -> np.ndarray:
    """How much of each pixel of an aligned crop comes from inside the photo (a crop that reaches past the
    photo's border is padded there by reflection, :func:`warp_quad`).

    Args:
        photo_hw: the photo's ``(height, width)``.
        m: ``(2, 3)`` photo-to-crop map (:func:`warp_quad`'s second value).
        size: crop side.

    Returns:
        ``(size, size) float32`` in [0, 1]: the bilinear weight of the photo's own pixels (1 inside).
    """
    return cv2.warpAffine(np.ones(photo_hw, np.float32), m, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def warp_quad(image: np.ndarray, quad: np.ndarray, size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Resample the square ``quad`` of ``image`` into a ``size`` x ``size`` crop (the warp of :func:`align_ffhq`).

    Args:
        image: ``(H, W, 3) uint8`` RGB.
        quad: ``(4, 2)`` corners top-left, bottom-left, bottom-right, top-right in pixels
            (:func:`ffhq_quad`, :func:`ffhq_quad_from_points`).
        size: output side in pixels.

    Returns:
        ``(aligned, M)``: the ``(size, size, 3) uint8`` crop and the ``(2, 3) float64`` source-to-crop map.
    """
    quad = np.asarray(quad, np.float64)
    src = quad[[0, 1, 3]].astype(np.float32)
    dst = np.array([[0, 0], [0, size], [size, 0]], np.float32)
    m = cv2.getAffineTransform(src, dst).astype(np.float64)
    shrink = np.hypot(*(quad[3] - quad[0])) / size
    img, m_img = image, m
    if shrink > 2:  # pre-shrink so bilinear sampling does not alias
        f = 1.0 / np.floor(shrink)
        img = cv2.resize(image, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
        m_img = np.concatenate([m[:, :2] / f, m[:, 2:]], axis=1)
    out = cv2.warpAffine(img, m_img, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    return out, m


def affine_scale(m: np.ndarray) -> float:
    """Output pixels per source pixel of a ``(2, 3)`` similarity (or any affine): ``sqrt(|det|)`` of its
    linear part (e.g. the crop of :func:`align_ffhq`)."""
    return float(np.sqrt(abs(np.linalg.det(np.asarray(m, np.float64)[:, :2]))))


def transform_points(points: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Apply a ``(2, 3)`` affine map to ``(N, 2)`` points; returns ``(N, 2) float32``."""
    p = np.asarray(points, np.float64)
    return (p @ m[:, :2].T + m[:, 2]).astype(np.float32)


def face_outline(landmarks: np.ndarray) -> np.ndarray:
    """Convex hull of the jaw (0-16) and brow (17-26) landmarks: the face outline used by the checks.

    Returns:
        ``(K, 2) float32`` hull vertices in pixels.
    """
    pts = np.asarray(landmarks, np.float32)[list(JAW) + list(BROWS)]
    return cv2.convexHull(pts).reshape(-1, 2)


@lru_cache(maxsize=1)
def default_detector() -> FaceDetector:
    """A process-wide :class:`FaceDetector` with the default models (built on first use)."""
    return FaceDetector()


#: Depth-to-half-width ratio of the nose tip in :func:`estimate_yaw`, fitted to eos pose estimates (below).
_YAW_NOSE_RATIO = 1.065


def estimate_yaw(landmarks: np.ndarray) -> float:
    """Head yaw in degrees from 2-D landmarks; 0 = frontal, the sign tells which way the nose points.

    The nose tip's (30) offset from the midpoint of the jaw's ends (0, 16), over half their distance,
    is ``t = k * tan(yaw)`` for a rigid head seen orthographically; ``k = 1.065`` was fitted to yaws from
    eos (Huber et al., VISAPP 2016) scaled-orthographic pose fits of the Surrey Face Model to the same
    68 landmarks on 194 CelebA faces (RMS difference 2.2 degrees, |yaw| up to 45).
    """
    lm = np.asarray(landmarks, np.float64)
    left, right, nose = lm[0], lm[16], lm[NOSE_TIP]
    axis = right - left
    half = np.hypot(*axis) / 2
    if half == 0:
        return 0.0
    t = np.dot(nose - (left + right) / 2, axis / (2 * half)) / half
    return float(np.degrees(np.arctan(t / _YAW_NOSE_RATIO)))


def nose_inside_outline(landmarks: np.ndarray) -> bool:
    """True if the nose tip lies inside :func:`face_outline`: False for profiles and failed landmark fits,
    where a mask warped by the landmarks would leave the face."""
    hull = face_outline(landmarks)
    p = np.asarray(landmarks, np.float32)[NOSE_TIP]
    return cv2.pointPolygonTest(hull.reshape(-1, 1, 2), (float(p[0]), float(p[1])), False) > 0
