"""The one conversion between uint8 faces and network tensors, used by training and by every learned predictor.

A network sees a square ``S`` x ``S`` face in [-1, 1] and its hole in {0, 1}; the benchmark hands over
``(N, H, W, 3) uint8`` faces and ``(N, H, W) bool`` holes of any size. Going in, a face is downsized with
area interpolation (:func:`downsize_image`) and its hole with the training rule (:func:`downsize_hole`: a
pixel is hole if any source pixel under it is), then converted (:func:`images_to_tensor`,
:func:`holes_to_tensor`); coming out, the network's output is converted back (:func:`tensor_to_images`),
upsized (bicubic) to the input size and pasted inside the hole, so every pixel outside it stays the input's
(:func:`paste_into_holes`). Training (:func:`maskbench.train.data.to_batch`, the sample grids) and inference
(:class:`maskbench.methods.learned.LearnedPredictor`) call these and nothing else, so a model sees the same
pixels in both.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

__all__ = [
    "downsize_image",
    "downsize_hole",
    "images_to_tensor",
    "holes_to_tensor",
    "tensor_to_images",
    "network_inputs",
    "paste_into_holes",
]


def downsize_image(image: np.ndarray, size: int) -> np.ndarray:
    """``(H, W, 3) uint8`` -> ``(size, size, 3) uint8``, area interpolation (cubic when enlarging)."""
    if image.shape[:2] == (size, size):
        return image
    interp = cv2.INTER_AREA if size < image.shape[0] else cv2.INTER_CUBIC
    return cv2.resize(image, (size, size), interpolation=interp)


def downsize_hole(hole: np.ndarray, size: int) -> np.ndarray:
    """``(H, W) bool`` -> ``(size, size) bool``: True where any covered source pixel is hole."""
    if hole.shape == (size, size):
        return hole.astype(bool)
    return cv2.resize(hole.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA) > 0


def images_to_tensor(images: np.ndarray, device: str | torch.device = "cpu") -> torch.Tensor:
    """``(N, S, S, 3) uint8`` -> ``(N, 3, S, S) float32`` in [-1, 1] on ``device`` (``x / 127.5 - 1``)."""
    return torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def holes_to_tensor(holes: np.ndarray, device: str | torch.device = "cpu") -> torch.Tensor:
    """``(N, S, S) bool`` -> ``(N, 1, S, S) float32`` in {0, 1} (1 = hole) on ``device``."""
    return torch.from_numpy(np.ascontiguousarray(holes)).to(device).float().unsqueeze(1)


def tensor_to_images(t: torch.Tensor) -> np.ndarray:
    """``(N, 3, S, S)`` in [-1, 1] (clamped) -> ``(N, S, S, 3) uint8`` on the CPU (``round((x + 1) * 127.5)``)."""
    return ((t.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def network_inputs(images: np.ndarray, holes: np.ndarray | None, size: int,
                   device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor | None]:
    """Faces and holes of any size at a network's side ``size``.

    Args:
        images: ``(N, H, W, 3) uint8``.
        holes: ``(N, H, W) bool`` or ``None``.
        size: the network's side ``S``.
        device: torch device.

    Returns:
        ``(x, m)``: ``(N, 3, S, S)`` in [-1, 1] and ``(N, 1, S, S)`` in {0, 1} (``None`` without holes).
    """
    x = images_to_tensor(np.stack([downsize_image(im, size) for im in images]), device)
    m = None if holes is None else holes_to_tensor(np.stack([downsize_hole(h, size) for h in holes]), device)
    return x, m


def paste_into_holes(images: np.ndarray, outputs: np.ndarray, holes: np.ndarray) -> np.ndarray:
    """The ``(N, H, W, 3) uint8`` faces with the network's ``(N, S, S, 3) uint8`` outputs, upsized (bicubic) to
    ``H`` x ``W``, written inside the ``(N, H, W) bool`` holes; every other pixel is the input's."""
    out = images.copy()
    h, w = images.shape[1:3]
    for o, p, hole in zip(out, outputs, holes):
        up = p if p.shape[:2] == (h, w) else cv2.resize(p, (w, h), interpolation=cv2.INTER_CUBIC)
        o[hole] = up[hole]
    return out
