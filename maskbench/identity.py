"""Identity preservation: cosine similarity of face embeddings of the original and the restored face.

Two embedders sit behind one interface, :class:`IdentityModel`; :func:`load_identity_model` picks one
and every result records its ``name``:

- ``dlib-resnet-v1`` (default, always available): dlib's 128-D ResNet
  (``dlib_face_recognition_resnet_model_v1.dat``; King, dlib, 2017; 99.38% on LFW) on 150 x 150 chips
  cut by ``dlib.get_face_chip`` (padding 0.25), run in PyTorch (:mod:`maskbench.dlib_resnet`).
- ``arcface-r100``/``arcface-w600k-r50`` (optional): an insightface model pack's recognition ONNX model
  (Deng et al., "ArcFace", CVPR 2019) run with onnxruntime on 112 x 112 chips aligned to insightface's
  5-point template. Used when ``onnxruntime`` is importable and a pack is found in
  ``$INSIGHTFACE_HOME`` or ``~/.insightface/models/<pack>/``; never downloaded.

Alignment is computed ONCE per sample, from the ORIGINAL image's 68 landmarks (the dataset record's
``landmarks``), and the same transform cuts the chip from the original and from the prediction, so a
prediction cannot change where its face is looked for.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path

import cv2
import numpy as np

from .faces import ModelNotFoundError, resolve_dlib_model

__all__ = [
    "IdentityModel",
    "DlibIdentity",
    "ArcFaceIdentity",
    "load_identity_model",
    "cosine_similarity",
    "find_arcface_model",
]


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of ``(N, D)`` arrays, ``a.b / (|a| |b|)``, in ``[-1, 1]``; ``(N,) float64``."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    num = (a * b).sum(-1)
    den = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    return np.clip(num / np.maximum(den, 1e-12), -1.0, 1.0)


class IdentityModel(ABC):
    """Embeds faces cut with one alignment per sample, in two steps so callers can split the work:
    :meth:`chips` (CPU, thread-safe: cut the aligned crops) and :meth:`embed_chips` (the network).

    Attributes:
        name: recorded as ``identity_model`` in results.
    """

    name: str = ""

    def close(self) -> None:
        """Release resources; the model stays usable."""

    def __enter__(self) -> "IdentityModel":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @abstractmethod
    def chips(self, images: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """Cut the aligned face crops the network embeds.

        Args:
            images: ``(N, H, W, 3) uint8`` RGB.
            landmarks: ``(N, 68, 2)`` float iBUG-68 landmarks in ``images`` pixels, from the ORIGINAL
                faces (also for predictions).

        Returns:
            ``(N, S, S, 3) uint8`` chips.
        """

    @abstractmethod
    def embed_chips(self, chips: np.ndarray) -> np.ndarray:
        """``(N, S, S, 3) uint8`` chips -> ``(N, D) float64`` embeddings."""

    def embed(self, images: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """:meth:`chips` then :meth:`embed_chips`: ``(N, D) float64``."""
        return self.embed_chips(self.chips(images, landmarks))

    def cosine(self, originals: np.ndarray, predictions: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """Identity cosine of each (original, prediction) pair, both cut with the original's landmarks.

        Args:
            originals, predictions: ``(N, H, W, 3) uint8`` RGB.
            landmarks: ``(N, 68, 2)`` landmarks of the originals.

        Returns:
            ``(N,) float64`` in ``[-1, 1]``; higher is better; 1 for identical images.
        """
        return cosine_similarity(self.embed(originals, landmarks), self.embed(predictions, landmarks))


class DlibIdentity(IdentityModel):
    """dlib's 128-D face-recognition ResNet on ``dlib.get_face_chip`` chips (150 px, padding 0.25).

    Chips are cut by dlib from the 68 landmarks exactly as dlib's own pipeline does; the network runs in
    PyTorch (:mod:`maskbench.dlib_resnet`, weights read from dlib's ``.dat`` file), which gives dlib's
    descriptors to 1e-5 (tested), batched, on ``device``, and releases the GIL while it runs.

    Args:
        model_path: the ``.dat`` file, or ``None`` for :func:`maskbench.faces.resolve_dlib_model`.
        device: torch device for the network.
        batch_size: chips per forward pass.

    Raises:
        ModelNotFoundError: the model file cannot be found (constructor).
    """

    name = "dlib-resnet-v1"
    CHIP_SIZE = 150
    PADDING = 0.25

    def __init__(self, model_path: str | os.PathLike | None = None, device: str = "cpu", batch_size: int = 64):
        import dlib

        from .dlib_resnet import load_dlib_resnet

        self._dlib = dlib
        self.model_path = resolve_dlib_model("dlib_face_recognition_resnet_model_v1.dat", model_path)
        self.device = device
        self.batch_size = batch_size
        self._net = load_dlib_resnet(self.model_path).to(device)

    def _shape(self, lm: np.ndarray):
        dlib = self._dlib
        pts = [dlib.point(int(round(x)), int(round(y))) for x, y in np.asarray(lm, np.float64)]
        x0, y0 = np.floor(np.min(lm, 0)).astype(int)
        x1, y1 = np.ceil(np.max(lm, 0)).astype(int)
        return dlib.full_object_detection(dlib.rectangle(int(x0), int(y0), int(x1), int(y1)), pts)

    def chips(self, images: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """The ``(N, 150, 150, 3) uint8`` chips dlib's network embeds, one per image."""
        out = np.zeros((len(images), self.CHIP_SIZE, self.CHIP_SIZE, 3), np.uint8)
        for i, (im, lm) in enumerate(zip(images, landmarks)):
            out[i] = self._dlib.get_face_chip(np.ascontiguousarray(im), self._shape(lm), size=self.CHIP_SIZE,
                                              padding=self.PADDING)
        return out

    def embed_chips(self, chips: np.ndarray) -> np.ndarray:
        """See :meth:`IdentityModel.embed_chips`; ``D = 128``."""
        import torch

        if len(chips) == 0:
            return np.zeros((0, 128))
        out = []
        with torch.inference_mode():
            for s in range(0, len(chips), self.batch_size):
                x = torch.from_numpy(np.ascontiguousarray(chips[s : s + self.batch_size])).to(self.device)
                out.append(self._net(x.permute(0, 3, 1, 2).float()).double().cpu().numpy())
        return np.concatenate(out)


# insightface's 112 x 112 ArcFace template (insightface/utils/face_align.py, arcface_dst)
_ARCFACE_DST = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]], np.float32
)
_ARCFACE_PACKS = ("antelopev2", "buffalo_l")


def _five_points(lm68: np.ndarray) -> np.ndarray:
    lm = np.asarray(lm68, np.float32)
    return np.stack([lm[36:42].mean(0), lm[42:48].mean(0), lm[30], lm[48], lm[54]])


def find_arcface_model() -> Path | None:
    """The recognition ONNX file of an installed insightface pack, or ``None`` (never downloads)."""
    root = Path(os.environ.get("INSIGHTFACE_HOME", Path.home() / ".insightface")).expanduser() / "models"
    for pack in _ARCFACE_PACKS:
        for name in ("glintr100.onnx", "w600k_r50.onnx"):
            p = root / pack / name
            if p.is_file():
                return p
    return None


class ArcFaceIdentity(IdentityModel):
    """ArcFace embeddings from an insightface pack's ONNX model via onnxruntime (optional).

    Chips are 112 x 112, aligned by the similarity transform from the ORIGINAL's 5 points (eye centres,
    nose tip, mouth corners, from the 68 landmarks) to insightface's template; input
    ``(RGB - 127.5) / 127.5``, NCHW (insightface ``ArcFaceONNX``).

    Args:
        model_path: an ONNX file, or ``None`` for :func:`find_arcface_model`.
        device: ``"cuda"`` uses the CUDA execution provider when onnxruntime has it.

    Raises:
        ModelNotFoundError: onnxruntime is not installed or no model file is found.
    """

    def __init__(self, model_path: str | os.PathLike | None = None, device: str = "cpu"):
        try:
            import onnxruntime as ort
        except ImportError:
            raise ModelNotFoundError("ArcFace needs onnxruntime: pip install 'maskbench[arcface]'") from None
        path = Path(model_path) if model_path else find_arcface_model()
        if path is None or not path.is_file():
            raise ModelNotFoundError(
                "no insightface recognition model found: put a pack (antelopev2 or buffalo_l) in ~/.insightface/models/"
            )
        providers = ["CPUExecutionProvider"]
        if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self._sess = ort.InferenceSession(str(path), providers=providers)
        self._input = self._sess.get_inputs()[0].name
        self.name = f"arcface-{path.stem}"

    def chips(self, images: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """``(N, 112, 112, 3) uint8`` chips aligned to insightface's template by the 5 points."""
        from skimage.transform import SimilarityTransform

        out = np.zeros((len(images), 112, 112, 3), np.uint8)
        for i, (im, lm) in enumerate(zip(images, landmarks)):
            t = SimilarityTransform()
            t.estimate(_five_points(lm), _ARCFACE_DST)
            out[i] = cv2.warpAffine(im, t.params[:2], (112, 112), borderValue=0.0)
        return out

    def embed_chips(self, chips: np.ndarray) -> np.ndarray:
        """See :meth:`IdentityModel.embed_chips`; ``D = 512``."""
        if len(chips) == 0:
            return np.zeros((0, 512))
        x = (chips.astype(np.float32) - 127.5) / 127.5
        out = self._sess.run(None, {self._input: x.transpose(0, 3, 1, 2)})[0]
        return out.astype(np.float64)


def load_identity_model(name: str = "auto", device: str = "cpu") -> IdentityModel:
    """Pick the identity embedder.

    Args:
        name: ``"auto"`` (ArcFace when onnxruntime and a pack are present, else dlib), ``"dlib"`` or
            ``"arcface"``.
        device: torch device (dlib) or execution provider choice (ArcFace).

    Returns:
        An :class:`IdentityModel`; its ``name`` goes into every result.

    Raises:
        ModelNotFoundError: the asked-for model is unavailable.
        ValueError: unknown ``name``.
    """
    if name == "dlib":
        return DlibIdentity(device=device)
    if name == "arcface":
        return ArcFaceIdentity(device=device)
    if name != "auto":
        raise ValueError(f"identity model must be auto, dlib or arcface, got {name!r}")
    try:
        return ArcFaceIdentity(device=device)
    except ModelNotFoundError:
        return DlibIdentity(device=device)
