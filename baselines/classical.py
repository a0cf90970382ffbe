"""Classical inpainting baselines on the given-mask track (no learned weights).

- ``masked-input``: returns the masked face unchanged. The lower bound every method must beat, and the
  library's test double for CLI smoke tests (lm-eval's ``DummyLM`` plays that role there).
- ``telea``: fast marching inpainting, Telea, "An Image Inpainting Technique Based on the Fast Marching
  Method", J. Graphics Tools 9(1), 2004 (OpenCV ``cv2.INPAINT_TELEA``).
- ``navier-stokes``: Bertalmio, Bertozzi & Sapiro, "Navier-Stokes, Fluid Dynamics, and Image and Video
  Inpainting", CVPR 2001 (OpenCV ``cv2.INPAINT_NS``).
- ``biharmonic``: biharmonic-equation inpainting, Damelin & Hoang, "On Surface Completion and Image
  Inpainting by Biharmonic Functions", 2018 (``skimage.restoration.inpaint_biharmonic``). Slow: seconds
  per 256 px face with a large hole.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from maskbench.methods.predictors import MethodOptionError, Predictor, PredictorOutput

__all__ = ["MaskedInput", "Telea", "NavierStokes", "Biharmonic"]


class MaskedInput(Predictor):
    """Return the masked input unchanged (lower bound; test double)."""

    name = "masked-input"
    track = "given-mask"
    thread_safe = True
    description = "returns the masked input unchanged (lower bound, test double)"

    def predict(self, images: np.ndarray, masks: np.ndarray | None) -> PredictorOutput:
        """Return ``images`` (``(N, H, W, 3) uint8``) as they are."""
        return PredictorOutput(images.copy())


class _OpenCVInpaint(Predictor):
    """Shared body of the two OpenCV inpainting methods.

    Args:
        device: ignored (CPU only).
        radius: neighbourhood radius in pixels (``inpaintRadius``), default 3.
    """

    flag: int = cv2.INPAINT_TELEA
    thread_safe = True  # cv2.inpaint is re-entrant and releases the GIL

    def __init__(self, device: str = "cpu", radius: float = 3.0, **kwargs: Any):
        super().__init__(device, **kwargs)
        if radius <= 0:
            raise MethodOptionError(f"{self.name}: radius must be > 0, got {radius}")
        self.radius = float(radius)

    def predict(self, images: np.ndarray, masks: np.ndarray | None) -> PredictorOutput:
        """Inpaint each ``(H, W, 3) uint8`` image inside its ``(H, W) bool`` mask with OpenCV."""
        out = np.empty_like(images)
        for i, (im, m) in enumerate(zip(images, masks)):
            out[i] = cv2.inpaint(im, m.astype(np.uint8) * 255, self.radius, self.flag)
        return PredictorOutput(out)


class Telea(_OpenCVInpaint):
    """Fast-marching inpainting (Telea 2004, OpenCV ``INPAINT_TELEA``)."""

    name = "telea"
    description = "fast-marching inpainting, Telea 2004 (OpenCV)"
    flag = cv2.INPAINT_TELEA


class NavierStokes(_OpenCVInpaint):
    """Navier-Stokes inpainting (Bertalmio et al. 2001, OpenCV ``INPAINT_NS``)."""

    name = "navier-stokes"
    description = "Navier-Stokes inpainting, Bertalmio et al. 2001 (OpenCV)"
    flag = cv2.INPAINT_NS


class Biharmonic(Predictor):
    """Biharmonic inpainting (Damelin & Hoang 2018, scikit-image ``inpaint_biharmonic``)."""

    name = "biharmonic"
    thread_safe = True
    description = "biharmonic inpainting, Damelin & Hoang 2018 (scikit-image; slow)"

    def predict(self, images: np.ndarray, masks: np.ndarray | None) -> PredictorOutput:
        """Inpaint each image in float [0, 1] and round back to ``uint8``."""
        from skimage.restoration import inpaint_biharmonic

        out = np.empty_like(images)
        for i, (im, m) in enumerate(zip(images, masks)):
            if not m.any():
                out[i] = im
                continue
            res = inpaint_biharmonic(im.astype(np.float64) / 255.0, m, channel_axis=-1)
            out[i] = np.clip(res * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return PredictorOutput(out)
