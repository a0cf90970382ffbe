"""The 3D prior ``I_3D``: a coloured SFM rendered at the image size, and the per-face fits training reads.

Colour (simpler than the paper, which regresses a texture model and spherical-harmonics lighting; the SFM
has no colour model): each vertex takes the image colour under it (bilinear) where it is visible (its
pixel is covered, it passes the z-buffer test and it is not in or next to the hole); an occluded vertex
takes the colour of its mirror vertex (``sfm_reference_symmetry.txt``) when that one is visible; the
rest take the face's median visible colour ("mean skin"). No shading model is fitted: the sampled
colours already carry the photo's shading on the visible side.

Expression and appearance edits (:func:`apply_edit`) act on the coefficient rows before rendering:
``{"expression": {"happiness": 1.0, 5: 0.5}, "smile": 0.8, "mouth_open": 0.6, "brightness": 1.2}``
(``smile`` sets the happiness blendshape, ``mouth_open`` the surprise one; ``brightness`` scales the
vertex colours).

:func:`fit_cache` fits every training face once (eos, on the 68 landmarks of the unmasked original the
dataset records hold, rescaled to the training size) and renders its prior from the masked image's
visible pixels and the true hole; the result is kept under ``maskbench.faces.landmarks.cache_dir()/prior3d/KEY/``
(KEY hashes the dataset fingerprint, size and fit settings), shared by concurrent runs through a lock.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from maskbench.core.io import atomic_write_bytes
from maskbench.core.resources import cache_dir
from maskbench.data.dataset import DatasetFormatError
from maskbench.train.data import scale_landmarks
from maskbench.train.tensors import holes_to_tensor, images_to_tensor, tensor_to_images

from .render import rasterize, render_colours
from .sfm import EXPRESSIONS, CoeffLayout, SurreyModel, fit_landmarks, project

__all__ = ["SKIN", "vertex_colours", "render_prior", "apply_edit", "FitCache", "fit_cache"]

#: fallback skin colour in [-1, 1] when a face shows no visible vertex
SKIN = (0.35, -0.05, -0.2)
_DEPTH_TOL = 4.0  # model units (mm) a vertex may lie behind the z-buffer and still count as visible
_FIT_VERSION = 1


def _sample(image: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
    """Bilinear ``image (N, C, S, S)`` at points ``xy (N, V, 2)`` (pixels) -> ``(N, V, C)``."""
    s = image.shape[-1]
    grid = (xy / (s - 1) * 2 - 1)[:, :, None, :]
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)[..., 0].transpose(1, 2)


def vertex_colours(image: torch.Tensor, hole: torch.Tensor, screen: torch.Tensor, triangles: torch.Tensor,
                   symmetry: torch.Tensor) -> torch.Tensor:
    """Per-vertex colours from the visible face (module docstring).

    Args:
        image: ``(N, 3, S, S)`` in [-1, 1].
        hole: ``(N, 1, S, S)`` in {0, 1} (1 = hole: not sampled).
        screen: ``(N, V, 3)`` projected vertices (:func:`maskbench.baselines.prior3d.sfm.project`).
        triangles: ``(T, 3)``; symmetry: ``(V,)`` mirror vertex of each vertex.

    Returns:
        ``(N, V, 3)`` in [-1, 1].
    """
    n, _, s, _ = image.shape
    screen = screen.detach().float()
    tri, bary = rasterize(screen, triangles, s)
    covered = tri >= 0
    vid = triangles[tri.clamp_min(0)]  # (N, S, S, 3)
    depth_v = screen[..., 2]
    b = torch.arange(n, device=image.device)[:, None, None, None]
    zmap = (bary * depth_v[b, vid][..., 0:3]).sum(-1)  # (N, S, S)
    zmap = torch.where(covered, zmap, torch.full_like(zmap, -float("inf")))
    xy = screen[..., :2]
    inside = (xy >= 0).all(-1) & (xy <= s - 1).all(-1)
    pix = xy.round().clamp(0, s - 1).long()
    bn = torch.arange(n, device=image.device)[:, None]
    z_at = zmap[bn, pix[..., 1], pix[..., 0]]
    grown = F.max_pool2d(hole.float(), 5, 1, 2)  # the mask's anti-aliased border is not skin either
    holev = _sample(grown, xy)[..., 0]
    visible = inside & (depth_v >= z_at - _DEPTH_TOL) & (holev < 1e-3)
    cols = _sample(image.float(), xy)
    mirror_vis = visible[:, symmetry]
    cols = torch.where(visible[..., None], cols, cols[:, symmetry])
    known = visible | mirror_vis
    skin = torch.tensor(SKIN, device=image.device).expand(n, 3).clone()
    for i in range(n):
        if visible[i].any():
            skin[i] = cols[i][visible[i]].median(0).values
    return torch.where(known[..., None], cols, skin[:, None, :])


def apply_edit(coeffs: torch.Tensor, layout: CoeffLayout, edit: dict[str, Any] | None) -> tuple[torch.Tensor, float]:
    """Edited coefficient rows and a colour gain (module docstring).

    Raises:
        ValueError: an unknown edit key or expression.
    """
    if not edit:
        return coeffs, 1.0
    c = coeffs.clone()
    e0 = layout.expression_slice().start
    gain = 1.0
    for key, value in edit.items():
        if key == "expression":
            for k, v in dict(value).items():
                idx = EXPRESSIONS.index(k) if isinstance(k, str) and k in EXPRESSIONS else k
                if not isinstance(idx, int) or not 0 <= idx < len(EXPRESSIONS):
                    raise ValueError(f"unknown expression {k!r}; use an index 0-5 or one of {', '.join(EXPRESSIONS)}")
                c[:, e0 + idx] = float(v)
        elif key == "smile":
            c[:, e0 + EXPRESSIONS.index("happiness")] = float(value)
        elif key == "mouth_open":
            c[:, e0 + EXPRESSIONS.index("surprise")] = float(value)
        elif key == "brightness":
            gain = float(value)
        else:
            raise ValueError(f"unknown edit {key!r} (known: expression, smile, mouth_open, brightness)")
    return c, gain


def render_prior(buffers: dict[str, torch.Tensor], layout: CoeffLayout, symmetry: torch.Tensor,
                 coeffs: torch.Tensor, image: torch.Tensor, hole: torch.Tensor,
                 edit: dict[str, Any] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``I_3D``: the face of ``coeffs`` coloured from ``image`` outside ``hole``, rendered at the image size.

    Colours are sampled with the unedited coefficients (where the face is), then the edited mesh is drawn.

    Args:
        buffers: :meth:`SurreyModel.torch_buffers`; layout: the coefficient layout.
        symmetry: ``(V,)`` int64.
        coeffs: ``(N, layout.size)``.
        image: ``(N, 3, S, S)`` in [-1, 1]; hole: ``(N, 1, S, S)`` in {0, 1}.
        edit: see :func:`apply_edit`.

    Returns:
        ``prior (N, 3, S, S)`` in [-1, 1] (0 off the face) and ``coverage (N, 1, S, S)``.
    """
    s = image.shape[-1]
    with torch.no_grad():
        screen = project(buffers, layout, coeffs.float(), s)
        cols = vertex_colours(image, hole, screen, buffers["triangles"], symmetry)
        edited, gain = apply_edit(coeffs.float(), layout, edit)
        if gain != 1.0:
            cols = ((cols + 1) * gain - 1).clamp(-1, 1)
        if edited is not coeffs:
            screen = project(buffers, layout, edited, s)
        return render_colours(screen, buffers["triangles"], cols, s)


@dataclass
class FitCache:
    """Per-face fits of a training split at the training size.

    Attributes:
        coeffs: ``(N, D) float32`` coefficient rows (:class:`CoeffLayout`).
        landmarks: ``(N, 68, 2) float32`` target landmarks in training-size pixels.
        priors: ``(N, S, S, 3) uint8`` the rendered ``I_3D`` (memory-mapped); ``None`` where only the fits
            were made (on-the-fly training of N_3D).
        folder: where the files are.
    """

    coeffs: np.ndarray
    landmarks: np.ndarray
    priors: np.ndarray | None
    folder: Path

    def prior_batch(self, index, device="cpu") -> torch.Tensor:
        """``(B, 3, S, S)`` in [-1, 1] for sample indices ``index``."""
        return images_to_tensor(self.priors[np.asarray(index)], device)


def _npy_bytes(a: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def fit_cache(data, size: int, model: SurreyModel, settings: dict[str, Any], *, priors: bool = True,
              progress: bool = True, root: Path | None = None) -> FitCache:
    """Fit and render every face of a training split once, or read the cached result.

    Args:
        data: a :class:`maskbench.train.data.PairedFaces` (its ``records`` must carry ``landmarks``), or,
            with ``priors=False``, a :class:`maskbench.train.data.OnTheFlyFaces` (its ``landmarks``).
        size: the training side.
        model: the SFM.
        settings: ``num_shape``, ``fit_iterations``, ``fit_contour``.
        priors: also render each face's prior (the generator stage needs them; they are rendered from the
            stored masked image, so on-the-fly data, whose masks change every epoch, has none).
        progress: a progress bar.
        root: the cache root (default ``cache_dir()/prior3d``).

    Returns:
        :class:`FitCache`; its ``priors`` is ``None`` for on-the-fly data.

    Raises:
        DatasetFormatError: the data has no landmarks (``hf:`` copies), or priors are asked of on-the-fly data.
    """
    if not priors and _is_on_the_fly(data):
        return _fit_cache_on_the_fly(data, size, model, settings, progress, root)
    records = getattr(data, "records", None)
    if not records or any(k not in records[0] for k in ("landmarks", "width")) or not hasattr(data, "masked"):
        raise DatasetFormatError("3dprior's generator trains on a stored Masked-Faces split whose records hold the "
                                 "68 landmarks of the original (`maskbench synth` output via --data DIR); hf: "
                                 "copies are not supported, and --synth-on-the-fly only for N_3D (--config "
                                 "small-n3d)")
    layout = CoeffLayout(int(settings["num_shape"]))
    key_src = _fit_key(data, len(records), size, layout, settings,
                       ids=hashlib.sha256("|".join(str(r["id"]) for r in records).encode()).hexdigest())
    folder = _built_once((root or cache_dir() / "prior3d"), "", key_src,
                         lambda f: _build(data, records, size, model, layout, settings, f, progress))
    return FitCache(np.load(folder / "coeffs.npy"), np.load(folder / "landmarks.npy"),
                    np.load(folder / "priors.npy", mmap_mode="r"), folder)


def _fit_key(data, n: int, size: int, layout: CoeffLayout, settings: dict[str, Any], **extra: str) -> str:
    """The JSON that names a cache of fits: the data's fingerprint and size, the fit settings, ``extra``."""
    return json.dumps({"fp": getattr(data, "fingerprint", ""), "n": n, "size": size, "num_shape": layout.num_shape,
                       "it": settings["fit_iterations"], "contour": bool(settings["fit_contour"]), "v": _FIT_VERSION,
                       **extra}, sort_keys=True)


def _built_once(root: Path, prefix: str, key_src: str, build: Callable[[Path], None]) -> Path:
    """The cache folder ``root/{prefix}{sha256(key_src)[:16]}``, filled by ``build(folder)`` the first time
    (under a file lock: a second run waits for the first one's fits), then marked done."""
    folder = root / (prefix + hashlib.sha256(key_src.encode()).hexdigest()[:16])
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / "done.json").is_file():
            build(folder)
            atomic_write_bytes(folder / "done.json", key_src.encode())
    return folder


def _is_on_the_fly(data) -> bool:
    return hasattr(data, "faces") and hasattr(data, "landmarks") and not hasattr(data, "records")


def _fit_all(lms: np.ndarray, size: int, model: SurreyModel, layout: CoeffLayout, settings: dict[str, Any],
             progress: bool) -> np.ndarray:
    coeffs = np.zeros((len(lms), layout.size), np.float32)
    it = range(len(lms))
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="3dprior: eos fits", unit="face", dynamic_ncols=True)
    for i in it:
        coeffs[i] = fit_landmarks(model, lms[i], size, num_shape=layout.num_shape,
                                  iterations=int(settings["fit_iterations"]), contour=bool(settings["fit_contour"]))
    return coeffs


def _fit_cache_on_the_fly(data, size, model, settings, progress, root) -> FitCache:
    """The fits of on-the-fly faces (their originals' landmarks do not change between epochs; no priors)."""
    layout = CoeffLayout(int(settings["num_shape"]))
    lms = scale_landmarks(data.landmarks, int(data.faces.shape[1]), size).astype(np.float32)
    key_src = _fit_key(data, len(lms), size, layout, settings, lms=hashlib.sha256(lms.tobytes()).hexdigest())

    def build(f: Path) -> None:
        coeffs = _fit_all(lms, size, model, layout, settings, progress)
        for name, arr in (("coeffs", coeffs), ("landmarks", lms)):
            atomic_write_bytes(f / f"{name}.npy", _npy_bytes(arr))

    folder = _built_once((root or cache_dir() / "prior3d"), "otf-", key_src, build)
    return FitCache(np.load(folder / "coeffs.npy"), np.load(folder / "landmarks.npy"), None, folder)


def _build(data, records, size, model, layout, settings, folder: Path, progress: bool) -> None:
    n = len(records)
    lms = np.stack([scale_landmarks(r["landmarks"], int(r["width"]), size) for r in records]).astype(np.float32)
    coeffs = _fit_all(lms, size, model, layout, settings, progress)
    buffers = model.torch_buffers(layout.num_shape)
    sym = torch.from_numpy(model.symmetry)
    priors = np.zeros((n, size, size, 3), np.uint8)
    for start in range(0, n, 32):
        sl = slice(start, min(n, start + 32))
        pr, _ = render_prior(buffers, layout, sym, torch.from_numpy(coeffs[sl]), images_to_tensor(data.masked[sl]),
                             holes_to_tensor(data.hole[sl]))
        priors[sl] = tensor_to_images(pr)
    for name, arr in (("coeffs", coeffs), ("landmarks", lms), ("priors", priors)):
        atomic_write_bytes(folder / f"{name}.npy", _npy_bytes(arr))
