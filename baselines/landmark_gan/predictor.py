"""``landmark-gan`` behind the Predictor contract (blind track): segment the mask, predict the landmarks
under it, inpaint guided by them (Modak et al. 2022; the generator is LaFIn's).

For each face (the networks run at their training sizes; 128 px for the landmarks and the generator in
``small``):

1. Mask R-CNN (:func:`.model.mask_rcnn`) on the input: the highest-scoring "face mask" instance with score
   >= ``score_threshold`` gives the hole, its mask probability pasted at the input size ``> mask_threshold``
   (torchvision's paste of the RoI mask into its box). No instance: the hole is empty and the output is the
   input (a bare face is left alone);
2. the hole brought to the generator's size ``S`` (a pixel is hole if any input pixel under it is);
   ``landmarks="predicted"``: the regressor on the input with that hole set to white; ``landmarks="dlib"``
   (the ablation that measures the landmark branch): dlib's 68-point predictor run on the *masked* input,
   in the box dlib's HOG detector finds, or, where it finds none, the average box of the training faces
   (``DLIB_FALLBACK_BOX``);
3. the landmark map and the generator (with gender routing when the weights hold a male and a female
   generator and the regressor a gender logit: logit > 0 picks the male one);
4. the output upsized (bicubic) to the input size and pasted inside the hole; every other pixel is the
   input's. The predicted masks and landmarks (input pixels) are returned with the images.

Weights: one ``weights.safetensors`` holding the three stages (:meth:`LandmarkGan.combine
<maskbench.methods.learned.LearnedPredictor.combine>` joins the runs' files; ``python -m
maskbench.baselines.landmark_gan.combine SEGMENTER LANDMARKS GENERATOR OUT``), or the runs' files given apart
(``segmenter_weights=``, ``landmarks_weights=``, ``generator_weights=``). Loading, batching and compositing
are :class:`~maskbench.methods.learned.LearnedPredictor`'s; this module adds steps 1-3
(:meth:`LandmarkGan.forward`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from maskbench.methods.learned import LearnedPredictor, Restored
from maskbench.methods.predictors import MethodOptionError

__all__ = ["LandmarkGan", "DLIB_FALLBACK_BOX", "LANDMARK_SOURCES"]

#: dlib's face box as fractions of the image side ``x0, y0, x1, y1``: the mean over the 5,386 training
#: faces of ``data/celeba-masked`` (std 0.03-0.045), used where dlib's detector finds no masked face.
DLIB_FALLBACK_BOX = (0.211, 0.315, 0.782, 0.887)
LANDMARK_SOURCES = ("predicted", "dlib")


class LandmarkGan(LearnedPredictor):
    """Mask R-CNN + landmark regressor + LaFIn generator (Modak et al. 2022), trained here (module docstring).

    Args:
        device: torch device.
        segmenter_weights, landmarks_weights, generator_weights: the runs' files instead of a combined one
            (all three). ``generator_weights`` may be ``"male=PATH,female=PATH"`` for gender routing.
        landmarks: ``"predicted"`` (the method) or ``"dlib"`` (dlib's landmarks of the masked input).
        score_threshold: the least instance score that counts as a mask (torchvision's default box
            threshold is 0.05; 0.5 here).
        mask_threshold: probability above which a pixel of the instance mask is hole (torchvision: 0.5).
        **kwargs: ``weights`` (a combined file; default: the committed one), ``variant``, ``batch_size``
            (:class:`~maskbench.methods.learned.LearnedPredictor`).

    Raises:
        maskbench.core.resources.ModelNotFoundError: no weights (how to train them is in the message).
        maskbench.train.checkpoint.CheckpointError: a file is unreadable or not ``landmark-gan``'s.
        MethodOptionError: an unknown ``landmarks`` source, a threshold outside [0, 1], or some stage files
            without the others.
    """

    name = "landmark-gan"
    track = "blind"
    description = "Mask R-CNN + landmark-guided LaFIn GAN mask removal (blind), Modak et al. 2022 (trained here)"
    trainer = "maskbench.baselines.landmark_gan.training:LandmarkGanTraining"
    stages = ("segmenter", "landmarks", "generator")

    def __init__(self, device: str = "cpu", segmenter_weights: str | None = None, landmarks_weights: str | None = None,
                 generator_weights: str | None = None, landmarks: str = "predicted", score_threshold: float = 0.5,
                 mask_threshold: float = 0.5, **kwargs: Any):
        if landmarks not in LANDMARK_SOURCES:
            raise MethodOptionError(f"landmark-gan: landmarks must be one of {', '.join(LANDMARK_SOURCES)}, got {landmarks!r}")
        for name, v in (("score_threshold", score_threshold), ("mask_threshold", mask_threshold)):
            if not 0.0 <= float(v) <= 1.0:
                raise MethodOptionError(f"landmark-gan: {name} must be in [0, 1], got {v}")
        super().__init__(device, segmenter_weights=segmenter_weights, landmarks_weights=landmarks_weights,
                         generator_weights=generator_weights, **kwargs)
        self.landmark_size = int(self.configs["landmarks"]["size"])
        self.landmark_source = landmarks
        self.score_threshold, self.mask_threshold = float(score_threshold), float(mask_threshold)
        self._detector = None

    @classmethod
    def combined_card(cls, nets: Mapping[str, Path]) -> dict[str, Any]:
        return {"gender_routing": sum(k.split("_")[0] == "generator" for k in nets) > 1}

    # --- the three steps ------------------------------------------------------------------------------
    def mask_probability(self, images: np.ndarray) -> np.ndarray:
        """The best "face mask" instance's mask probability per face (step 1 of the module docstring, before
        the threshold): ``(N, H, W) float32`` in [0, 1] for ``(N, H, W, 3) uint8`` faces; all 0 where no
        instance scores ``>= score_threshold``."""
        torch = self._torch
        n, h, w, _ = images.shape
        prob = np.zeros((n, h, w), np.float32)
        x = torch.from_numpy(images).to(self.device).permute(0, 3, 1, 2).float() / 255.0
        with torch.inference_mode():
            found = self.nets["segmenter"](list(x))
        for i, r in enumerate(found):
            keep = r["scores"] >= self.score_threshold
            if keep.any():
                best = int(torch.argmax(torch.where(keep, r["scores"], -1.0)))
                prob[i] = r["masks"][best, 0].float().cpu().numpy()
        return prob

    def segment(self, images: np.ndarray) -> np.ndarray:
        """Predicted holes ``(N, H, W) bool`` of ``(N, H, W, 3) uint8`` faces (step 1 of the module docstring)."""
        return self.mask_probability(images) > self.mask_threshold

    def landmarks_under(self, images: np.ndarray, holes: np.ndarray) -> np.ndarray:
        """The regressor's 68 landmarks of faces whose ``holes`` hide part of them (step 2, ``"predicted"``).

        Args:
            images: ``(N, H, W, 3) uint8`` faces.
            holes: ``(N, H, W) bool`` the occluded pixels.

        Returns:
            ``(N, 68, 2) float32`` iBUG-68 points, input pixels.
        """
        from maskbench.train.tensors import network_inputs


        torch, s, (h, w) = self._torch, self.size, images.shape[1:3]
        x, m = network_inputs(images, holes, s, self.device)
        with torch.inference_mode():
            return self._regress(x, m, w, h)[1].astype(np.float32)

    def _regress(self, x, m, w: int, h: int):
        """The regressor on network inputs at ``S``: ``(points at S px, points in input px, gender logit)``."""
        from .training import points

        torch, s, ls = self._torch, self.size, self.landmark_size
        xl = x if ls == s else torch.nn.functional.interpolate(x, size=(ls, ls), mode="area")
        ml = m if ls == s else torch.nn.functional.adaptive_max_pool2d(m, (ls, ls))
        out = self.nets["landmarks"](self.trainable.landmark_input(xl, ml))
        gender = out[1] if isinstance(out, tuple) else None
        pts = points(out) * s
        lms = ((pts + 0.5) * torch.tensor([w / s, h / s], device=pts.device) - 0.5).cpu().numpy()
        return pts, lms, gender

    def _dlib_landmarks(self, images: np.ndarray) -> np.ndarray:
        """dlib's 68 landmarks of each masked face ``(N, 68, 2) float32`` in input pixels (module docstring)."""
        from maskbench.faces.landmarks import NoFaceError, default_detector

        if self._detector is None:
            self._detector = default_detector()
        out = np.zeros((len(images), 68, 2), np.float32)
        for i, im in enumerate(images):
            try:
                out[i] = self._detector(im).landmarks
            except NoFaceError:
                h, w = im.shape[:2]
                box = np.array(DLIB_FALLBACK_BOX) * np.array([w, h, w, h])
                out[i] = self._detector.landmarks_in_box(im, box)
        return out

    def forward(self, images: np.ndarray, masks: np.ndarray | None, generator=None) -> Restored:
        """Steps 1-3 of the module docstring on one batch: the predicted holes, the landmarks (input pixels)
        and the generator's output; deterministic (``generator`` is unused), ``masks`` is ignored."""
        from maskbench.train.tensors import network_inputs

        from .model import landmark_map

        torch = self._torch
        s, (h, w) = self.size, images.shape[1:3]
        holes = self.segment(images)
        x, m = network_inputs(images, holes, s, self.device)
        with torch.inference_mode():
            pts, lms, gender = self._regress(x, m, w, h)
            if self.landmark_source == "dlib":
                lms = self._dlib_landmarks(images)
                pts = (torch.from_numpy(lms).to(self.device) + 0.5) * torch.tensor([s / w, s / h], device=x.device) - 0.5
            lmap = landmark_map(pts, s)
            if len(self.generators) == 1 or gender is None:
                y = self.nets[self.generators[0]](x, lmap, m)
            else:
                male = (gender > 0)[:, None, None, None]
                y = torch.where(male, self.nets["generator_male"](x, lmap, m), self.nets["generator_female"](x, lmap, m))
        return Restored(holes, y, lms.astype(np.float32))
