"""The Surrey Face Model (SFM, 3,448 vertices) through ``eos-py``: where its files are, fitting it to 68
landmarks, and projecting it (in torch, differentiably) from a flat coefficient vector.

Files (eos's ``share/`` folder; the shape-only public model of Huber et al., VISAPP 2016):
:data:`SFM_FILES`. :func:`resolve_sfm_dir` finds them in this order:

1. the ``sfm_dir`` argument (``--method-arg sfm_dir=DIR`` for evaluate and demo, ``--set prior.sfm_dir=DIR``
   for training);
2. ``$MASKBENCH_SFM_DIR``;
3. the user cache, ``maskbench.core.resources.cache_dir() / "3dmm-sfm"``;
4. the copy shipped with maskbench, :data:`PACKAGED_SFM_DIR` (eos ``v1.5.0``'s files, unchanged; their
   terms, non-commercial use only for the model, are in its ``LICENSE.md``), so inference needs no set-up;
5. a download of each missing file from eos's GitHub ``share/`` folder (tag ``v1.5.0``) into that cache
   through :func:`maskbench.core.resources.download` (SHA-256 pinned), for an install without the copy;
6. otherwise :class:`SFMNotFoundError`: one line naming the files and the fix.

Coefficient vector (:class:`CoeffLayout`), one row per face, ``K + 6 + 6`` floats:

- ``shape``: the first ``K`` (<= 63) PCA shape coefficients, in standard deviations (eos's units);
- ``expression``: the 6 blendshape weights (anger, disgust, fear, happiness, sadness, surprise);
- ``pose``: axis-angle rotation (3, radians) of the model into a camera frame with y up and z towards
  the viewer (identity = frontal face), 2-D translation ``(tx, ty) / S`` (image pixels over the image side)
  and scale ``100 s / S`` (``s`` = pixels per model unit). The projection is eos's scaled orthographic one:
  ``x = s (R v)_x + tx``, ``y = -s (R v)_y + ty``, pixel centres at integer coordinates, and ``(R v)_z``
  is the depth (larger = nearer) for the z-buffer.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from maskbench.core.resources import DownloadError, ModelFile, ModelNotFoundError, cache_dir, download

__all__ = ["SFM_FILES", "PACKAGED_SFM_DIR", "SFMNotFoundError", "resolve_sfm_dir", "sfm_status", "SurreyModel",
           "load_sfm", "CoeffLayout", "fit_landmarks", "NUM_EXPRESSIONS", "EXPRESSIONS", "LANDMARK_WEIGHTS"]

_EOS_SHARE = "https://raw.githubusercontent.com/patrikhuber/eos/v1.5.0/share/{}"
#: The SFM files used, pinned by the SHA-256 and size of eos ``v1.5.0``'s ``share/`` copies.
SFM_FILES: dict[str, ModelFile] = {
    m.name: m
    for m in (
        ModelFile("sfm_shape_3448.bin", _EOS_SHARE.format("sfm_shape_3448.bin"),
                  "43750338ae533e7fb981e924b6f67ebde3d292f15ec4fc886ae5af14308ad980", 2_784_392),
        ModelFile("expression_blendshapes_3448.bin", _EOS_SHARE.format("expression_blendshapes_3448.bin"),
                  "a77c81712fc5e8b08a1be4cd2824d51514e5bde6578109ae5240dfb3489efd43", 248_400),
        ModelFile("ibug_to_sfm.txt", _EOS_SHARE.format("ibug_to_sfm.txt"),
                  "810810c457184526c7d54305ecbc5da764e2431b5e66025d921a7d424aebfac9", 3_166),
        ModelFile("sfm_3448_edge_topology.json", _EOS_SHARE.format("sfm_3448_edge_topology.json"),
                  "5934e5ec34dd6779fda06d28a1f8d02ca9a238bff882e5ccd6da5af9fffe61d5", 1_861_240),
        ModelFile("sfm_model_contours.json", _EOS_SHARE.format("sfm_model_contours.json"),
                  "c9e69bfa995ab19ac6b27abb07729eb0520a00bb192be12426ca6bce76f3fded", 679),
        ModelFile("sfm_reference_symmetry.txt", _EOS_SHARE.format("sfm_reference_symmetry.txt"),
                  "d26e02dbb2cf72bfa88bc6bf6f175bf261bae7aff00509cc0ff277675f2fff47", 3_447),
    )
}
#: The copy of :data:`SFM_FILES` shipped as package data, with its licence (``LICENSE.md``) and provenance.
PACKAGED_SFM_DIR = Path(__file__).with_name("surrey_face_model")
EXPRESSIONS = ("anger", "disgust", "fear", "happiness", "sadness", "surprise")
NUM_EXPRESSIONS = len(EXPRESSIONS)
#: iBUG-68 indices (0-based) weighted 20 in the landmark loss: the nose (27-35) and the inner mouth (60-67).
LANDMARK_WEIGHTS = np.ones(68, np.float32)
LANDMARK_WEIGHTS[27:36] = 20.0
LANDMARK_WEIGHTS[60:68] = 20.0


class SFMNotFoundError(ModelNotFoundError):
    """The Surrey Face Model files are in none of the places looked in and cannot be downloaded."""


def _complete(d: Path) -> list[str]:
    return [n for n in SFM_FILES if not (d / n).is_file()]


def resolve_sfm_dir(sfm_dir: str | os.PathLike | None = None, *, allow_download: bool = True,
                    opener=None) -> Path:
    """The folder holding every file of :data:`SFM_FILES` (module docstring for the order).

    Args:
        sfm_dir: an explicit folder; when given it must be complete (no fallback).
        allow_download: try eos's GitHub ``share/`` folder for what the cache lacks (only reached when the
            copy shipped with maskbench is incomplete).
        opener: passed to :func:`maskbench.core.resources.download` (tests).

    Raises:
        SFMNotFoundError: the folder given lacks files, or nothing complete was found or downloaded.
    """
    fix = "pass --method-arg sfm_dir=DIR (train: --set prior.sfm_dir=DIR) or set MASKBENCH_SFM_DIR=DIR"
    if sfm_dir is not None:
        d = Path(sfm_dir).expanduser()
        missing = _complete(d)
        if missing:
            raise SFMNotFoundError(f"Surrey Face Model folder {d} lacks {', '.join(missing)} (eos's share/ files)")
        return d
    looked = []
    env = os.environ.get("MASKBENCH_SFM_DIR")
    if env:
        d = Path(env).expanduser()
        if not _complete(d):
            return d
        looked.append(f"$MASKBENCH_SFM_DIR={d}")
    cached = cache_dir() / "3dmm-sfm"
    if not _complete(cached):
        return cached
    looked.append(str(cached))
    if not _complete(PACKAGED_SFM_DIR):
        return PACKAGED_SFM_DIR
    looked.append("the package")
    failed = ""
    if allow_download:
        try:
            for name in _complete(cached):
                kw = {"opener": opener} if opener is not None else {}
                download(SFM_FILES[name], cached / name, timeout=20.0, **kw)
            return cached
        except DownloadError as e:
            failed = f", and the download from eos's GitHub failed ({_reason(e)})"
    raise SFMNotFoundError(f"3dprior needs the Surrey Face Model ({', '.join(SFM_FILES)} from eos's share/ "
                           f"folder): not in {' or '.join(looked)}{failed}; {fix}")


def sfm_status() -> str | None:
    """None when 3dprior can load the SFM without a download (eos-py importable, a complete folder found);
    otherwise ``"missing 3DMM: ..."`` or ``"missing eos-py: ..."`` for ``maskbench methods``."""
    import importlib.util

    if importlib.util.find_spec("eos") is None:
        return "missing eos-py: pip install 'maskbench[3dprior]' (or eos-py)"
    try:
        resolve_sfm_dir(allow_download=False)
    except SFMNotFoundError as e:
        return f"missing 3DMM: {e}"
    return None


def _reason(e: Exception) -> str:
    """The last clause of a download error (``URLError: ...``), not the whole URL."""
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    m = re.search(r"\(([^()]*(?:\([^()]*\)[^()]*)*)\)\s*$", msg)
    return (m.group(1) if m else msg)[:120]


def _read_mapping(path: Path) -> dict[int, int]:
    """iBUG index (0-based) -> SFM vertex, from the ``[landmark_mappings]`` section of ``ibug_to_sfm.txt``."""
    out, inside = {}, False
    for line in path.read_text().splitlines():
        s = line.split("#", 1)[0].strip()
        if s.startswith("["):
            inside = s == "[landmark_mappings]"
            continue
        m = re.fullmatch(r"(\d+)\s*=\s*(\d+)", s)
        if inside and m:
            out[int(m.group(1)) - 1] = int(m.group(2))
    return out


@dataclass
class SurreyModel:
    """The SFM as arrays, plus the eos objects the fitting needs.

    Attributes:
        mean: ``(V, 3) float32`` mean shape.
        shape_basis: ``(63, V, 3) float32`` rescaled PCA basis (a coefficient of 1 = one standard deviation).
        expression_basis: ``(6, V, 3) float32`` blendshape offsets.
        triangles: ``(T, 3) int64``.
        landmark_ibug: ``(L,) int64`` the iBUG-68 indices with a fixed SFM vertex (50 of 68: the contour
            points 1-8 and 10-17 and the inner mouth corners 61, 65 have none).
        landmark_vertex: ``(L,) int64`` their vertices.
        symmetry: ``(V,) int64`` each vertex's left-right counterpart.
        folder: where the files were read.
    """

    mean: np.ndarray
    shape_basis: np.ndarray
    expression_basis: np.ndarray
    triangles: np.ndarray
    landmark_ibug: np.ndarray
    landmark_vertex: np.ndarray
    symmetry: np.ndarray
    folder: Path

    @property
    def num_vertices(self) -> int:
        return len(self.mean)

    def torch_buffers(self, num_shape: int, device="cpu") -> dict[str, torch.Tensor]:
        """``mean (V, 3)``, ``shape (K, V, 3)``, ``expression (6, V, 3)``, ``triangles (T, 3)`` tensors."""
        return {"mean": torch.from_numpy(self.mean).to(device),
                "shape": torch.from_numpy(self.shape_basis[:num_shape]).to(device),
                "expression": torch.from_numpy(self.expression_basis).to(device),
                "triangles": torch.from_numpy(self.triangles).to(device)}

    def eos_objects(self):
        """``(morphable model with blendshapes, landmark mapper, edge topology, contour landmarks, model contour)``."""
        return _eos_objects(str(self.folder))


@lru_cache(maxsize=4)
def _eos_objects(d: str):
    """The eos fitting objects of the SFM in folder ``d`` (loaded once per process)."""
    eos = _import_eos()

    model = eos.morphablemodel.load_model(f"{d}/sfm_shape_3448.bin")
    blend = eos.morphablemodel.load_blendshapes(f"{d}/expression_blendshapes_3448.bin")
    mm = eos.morphablemodel.MorphableModel(model.get_shape_model(), blend,
                                           color_model=eos.morphablemodel.PcaModel(), vertex_definitions=None,
                                           texture_coordinates=model.get_texture_coordinates())
    return (mm, eos.core.LandmarkMapper(f"{d}/ibug_to_sfm.txt"),
            eos.morphablemodel.load_edge_topology(f"{d}/sfm_3448_edge_topology.json"),
            eos.fitting.ContourLandmarks.load(f"{d}/ibug_to_sfm.txt"),
            eos.fitting.ModelContour.load(f"{d}/sfm_model_contours.json"))


def _import_eos():
    try:
        import eos
    except ImportError as e:
        raise SFMNotFoundError(f"3dprior needs the eos-py package (pip install 'maskbench[3dprior]' or eos-py): {e}") from None
    return eos


@lru_cache(maxsize=4)
def _load(folder: str) -> SurreyModel:
    eos = _import_eos()

    d = Path(folder)
    model = eos.morphablemodel.load_model(str(d / "sfm_shape_3448.bin"))
    sm = model.get_shape_model()
    mean = np.asarray(sm.get_mean(), np.float32).reshape(-1, 3)
    v = len(mean)
    basis = np.asarray(sm.get_rescaled_pca_basis(), np.float32).T.reshape(-1, v, 3)
    blend = eos.morphablemodel.load_blendshapes(str(d / "expression_blendshapes_3448.bin"))
    expr = np.stack([np.asarray(b.deformation, np.float32).reshape(v, 3) for b in blend])
    tris = np.asarray(sm.get_triangle_list(), np.int64)
    mapping = _read_mapping(d / "ibug_to_sfm.txt")
    ibug = np.array(sorted(mapping), np.int64)
    return SurreyModel(mean, basis, expr, tris, ibug, np.array([mapping[i] for i in ibug], np.int64),
                       _symmetry(d / "sfm_reference_symmetry.txt", mean), d)


def _symmetry(path: Path, mean: np.ndarray) -> np.ndarray:
    """Each vertex's mirror vertex: the file's pairs for the 845 vertices of the reference shape (the first
    845 of the 3,448-vertex model), the nearest vertex of the mean shape mirrored in x = 0 for the others
    (that rule agrees with the file on 97.6 % of the 845)."""
    from scipy.spatial import cKDTree

    ref = np.array([int(s) for s in (line.split("#", 1)[0].strip() for line in path.read_text().splitlines()) if s],
                   np.int64) - 1
    if len(ref) > len(mean) or (len(ref) and ref.max() >= len(mean)):
        raise SFMNotFoundError(f"{path}: {len(ref)} entries do not fit a {len(mean)}-vertex model")
    sym = cKDTree(mean).query(mean * np.array([-1.0, 1.0, 1.0], np.float32))[1].astype(np.int64)
    sym[:len(ref)] = ref
    return sym


def load_sfm(sfm_dir: str | os.PathLike | None = None) -> SurreyModel:
    """The SFM from :func:`resolve_sfm_dir` (cached per folder).

    Raises:
        SFMNotFoundError: see :func:`resolve_sfm_dir`; or eos-py is not installed.
    """
    return _load(str(resolve_sfm_dir(sfm_dir).resolve()))


@dataclass(frozen=True)
class CoeffLayout:
    """Where each part sits in a coefficient row (module docstring): ``shape`` K, ``expression`` 6, ``pose`` 6."""

    num_shape: int

    @property
    def size(self) -> int:
        return self.num_shape + NUM_EXPRESSIONS + 6

    def split(self, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(N, size)`` -> shape ``(N, K)``, expression ``(N, 6)``, rotation ``(N, 3)``, translation ``(N, 2)``,
        scale ``(N,)``."""
        k, e = self.num_shape, NUM_EXPRESSIONS
        return c[:, :k], c[:, k:k + e], c[:, k + e:k + e + 3], c[:, k + e + 3:k + e + 5], c[:, k + e + 5]

    def expression_slice(self) -> slice:
        return slice(self.num_shape, self.num_shape + NUM_EXPRESSIONS)


def axis_angle_to_matrix(r: torch.Tensor) -> torch.Tensor:
    """``(N, 3)`` axis-angle -> ``(N, 3, 3)`` rotation (Rodrigues; smooth at 0)."""
    theta = r.norm(dim=1, keepdim=True).clamp_min(1e-8)
    k = r / theta
    kx, ky, kz = k.unbind(1)
    z = torch.zeros_like(kx)
    kmat = torch.stack([z, -kz, ky, kz, z, -kx, -ky, kx, z], 1).view(-1, 3, 3)
    eye = torch.eye(3, dtype=r.dtype, device=r.device).expand_as(kmat)
    s, c = torch.sin(theta)[..., None], torch.cos(theta)[..., None]
    return eye + s * kmat + (1 - c) * kmat @ kmat


def vertices(buffers: dict[str, torch.Tensor], layout: CoeffLayout, c: torch.Tensor) -> torch.Tensor:
    """Model-space vertices ``(N, V, 3)`` of coefficient rows ``(N, size)``."""
    shape, expr, _, _, _ = layout.split(c)
    return (buffers["mean"] + torch.einsum("nk,kvd->nvd", shape, buffers["shape"])
            + torch.einsum("ne,evd->nvd", expr, buffers["expression"]))


def project(buffers: dict[str, torch.Tensor], layout: CoeffLayout, c: torch.Tensor, size: int) -> torch.Tensor:
    """Screen vertices ``(N, V, 3)``: x, y in pixels of an ``size`` x ``size`` image, and depth (larger = nearer)."""
    _, _, rot, trans, scale = layout.split(c)
    v = vertices(buffers, layout, c) @ axis_angle_to_matrix(rot).transpose(1, 2)
    s = (scale * size / 100.0)[:, None]
    x = s * v[..., 0] + trans[:, None, 0] * size
    y = -s * v[..., 1] + trans[:, None, 1] * size
    return torch.stack([x, y, v[..., 2]], -1)


def fit_landmarks(model: SurreyModel, landmarks: np.ndarray, size: int, *, num_shape: int = 63,
                  iterations: int = 2, contour: bool = True) -> np.ndarray:
    """Fit shape, expression and pose to one face's 68 landmarks with eos; returns a coefficient row.

    Args:
        model: the SFM.
        landmarks: ``(68, 2)`` iBUG-68 points in pixels of an ``size`` x ``size`` image (pixel centres at
            integers, dlib's convention).
        size: the image side.
        num_shape: shape coefficients kept (eos fits all 63; the rest are dropped).
        iterations: eos's alternating pose / shape / expression iterations.
        contour: also fit the jaw contour to the model's contour edges (slower: ~45 ms per iteration on one
            core, vs ~4 ms without).

    Returns:
        ``(num_shape + 12,) float32`` (:class:`CoeffLayout`).
    """
    import cv2

    eos = _import_eos()
    mm, mapper, edges, contour_lms, model_contour = model.eos_objects()
    lms = [eos.core.Landmark(str(i + 1), [float(x), float(y)]) for i, (x, y) in enumerate(landmarks)]
    if contour:
        _, pose, shape, expr = eos.fitting.fit_shape_and_pose(mm, lms, mapper, size, size, edges, contour_lms,
                                                              model_contour, num_iterations=iterations)
    else:
        _, pose, shape, expr = eos.fitting.fit_shape_and_pose(mm, lms, mapper, size, size, num_iterations=iterations)
    a = np.asarray(eos.fitting.get_3x4_affine_camera_matrix(pose, size, size), np.float64)
    s = np.linalg.norm(a[0, :3])
    r1, r2 = a[0, :3] / s, a[1, :3] / np.linalg.norm(a[1, :3])
    r_img = np.stack([r1, r2, np.cross(r1, r2)])  # image frame: y down, z away from the viewer
    r = np.diag([1.0, -1.0, -1.0]) @ r_img  # y up, z towards the viewer: identity = frontal
    u, _, vt = np.linalg.svd(r)
    rvec = cv2.Rodrigues(u @ vt)[0].ravel()
    return np.concatenate([np.asarray(shape, np.float32)[:num_shape], np.asarray(expr, np.float32),
                           rvec, a[:2, 3] / size, [100.0 * s / size]]).astype(np.float32)
