"""``3dprior`` behind the Predictor contract (blind track): find the mask, fit the face, render, inpaint.

For each face (run at the training size ``S``, 128 in ``small``):

1. N_3D predicts the mask and the SFM coefficients. The mask is N_3D's probability upsized (bilinear) to
   the input size, ``> threshold`` (0.5 here; 0.1 in the authors' code) and dilated by ``dilation`` pixels
   of the input (1 here; the authors' code dilates 5 x 5 then 3 x 3, i.e. 3 pixels at their size). Both
   departures were chosen on training faces, never on the test split: see ``threshold``, ``dilation``;
2. the coefficients (edited, if asked: :func:`.prior.apply_edit`) are rendered into ``I_3D``, coloured
   from the pixels outside the predicted mask;
3. the predicted hole (max-pooled to ``S``, so it covers every input pixel of the hole) is filled with
   uniform noise from the batch's ``torch.Generator`` (so the seed chooses the sample) and N_G runs on
   (noised image, mask, ``I_3D``);
4. N_G's output is upsized (bicubic) to the input size and pasted inside the predicted mask; every other
   pixel is the input's. The predicted masks are returned with the images.

Weights: one ``weights.safetensors`` holding both networks (:meth:`Prior3D.combine
<maskbench.methods.learned.LearnedPredictor.combine>` joins the two runs' files; ``python -m
maskbench.baselines.prior3d.combine N3D GENERATOR OUT``), or the two runs' files given apart
(``n3d_weights=``, ``generator_weights=``). Loading, batching and compositing are
:class:`~maskbench.methods.learned.LearnedPredictor`'s; this module adds steps 1-3 (:meth:`Prior3D.forward`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from maskbench.methods.learned import LearnedPredictor, Restored
from maskbench.methods.predictors import MethodOptionError, PredictorOutput

__all__ = ["Prior3D"]


class Prior3D(LearnedPredictor):
    """Non-deterministic face-mask removal with a 3D prior (Yin & Chen, ICIP 2022), trained here.

    Args:
        device: torch device.
        n3d_weights, generator_weights: the two runs' ``weights.safetensors`` instead of a combined file.
        sfm_dir: the Surrey Face Model folder (see :func:`.sfm.resolve_sfm_dir`).
        threshold: mask probability threshold. 0.5 by default; the authors' code uses 0.1. Measured on
            300 training faces at 256 px (the test split was not used to choose), before dilation: IoU
            0.943, recall 0.981 at 0.5; IoU 0.870, recall 0.998 at 0.1.
        dilation: pixels of the input by which the thresholded mask grows (default 1: IoU 0.922, recall
            0.988 on those faces; the authors' 5 x 5 then 3 x 3 at 128 px, 6 px at 256: IoU 0.782, and
            0.705 with their threshold).
        edit: an edit applied to every face (:func:`.prior.apply_edit`), e.g. ``{"smile": 1.0}``.
        **kwargs: ``weights`` (a combined file; default: the committed one), ``variant``, ``batch_size``
            (:class:`~maskbench.methods.learned.LearnedPredictor`).

    Raises:
        maskbench.core.resources.ModelNotFoundError: no weights (how to train them is in the message), or no SFM.
        maskbench.train.checkpoint.CheckpointError: a file is unreadable or not ``3dprior``'s.
        MethodOptionError: a negative dilation, or one stage file without the other.
    """

    name = "3dprior"
    track = "blind"
    description = "3D-prior GAN mask removal (blind), Yin & Chen ICIP 2022 (trained here)"
    trainer = "maskbench.baselines.prior3d.training:Prior3DTraining"
    stages = ("n3d", "generator")

    def __init__(self, device: str = "cpu", n3d_weights: str | None = None, generator_weights: str | None = None,
                 sfm_dir: str | None = None, threshold: float = 0.5, dilation: int = 1,
                 edit: dict[str, Any] | None = None, **kwargs: Any):
        if int(dilation) < 0:
            raise MethodOptionError(f"3dprior: dilation must be >= 0 pixels, got {dilation}")
        super().__init__(device, n3d_weights=n3d_weights, generator_weights=generator_weights, **kwargs)
        import torch

        from .sfm import load_sfm

        self.n3d_size = int(self.configs["n3d"]["size"])
        self.layout = self.trainable.layout(self.configs["n3d"])
        self.sfm = load_sfm(sfm_dir)  # not the training run's folder: the card may come from another machine
        self.buffers = self.sfm.torch_buffers(self.layout.num_shape, device)
        self.symmetry = torch.from_numpy(self.sfm.symmetry).to(device)
        self.threshold = float(threshold)
        self.dilation = int(dilation)
        self.edit = edit

    @classmethod
    def weights_status(cls) -> str:
        """The weights' status, or ``missing 3DMM: ...`` / ``missing eos-py: ...`` (:func:`.sfm.sfm_status`)."""
        from .sfm import sfm_status

        status = super().weights_status()
        return (sfm_status() or status) if status == "available" else status

    @classmethod
    def combined_card(cls, nets: Mapping[str, Path]) -> dict[str, Any]:
        return {"loss_network": "dlib-resnet (identity)"}

    def mask_probability(self, images: np.ndarray) -> np.ndarray:
        """N_3D's mask probability at the input size, before the threshold and dilation: ``(N, H, W) float32``
        in [0, 1] for ``(N, H, W, 3) uint8`` faces (the logits upsized bilinearly, then the sigmoid's value)."""
        from maskbench.train.tensors import network_inputs

        torch, F = self._torch, self._torch.nn.functional
        h, w = images.shape[1:3]
        x, _ = network_inputs(images, None, self.size, self.device)
        with torch.inference_mode():
            xin = x if self.n3d_size == self.size else F.interpolate(x, size=(self.n3d_size,) * 2, mode="area")
            logits, _ = self.nets["n3d"](xin)
            prob = F.interpolate(torch.sigmoid(logits), size=(h, w), mode="bilinear", align_corners=False)
        return prob[:, 0].float().cpu().numpy()

    def segment(self, images: np.ndarray) -> np.ndarray:
        """The predicted holes ``(N, H, W) bool`` of ``(N, H, W, 3) uint8`` faces, as :meth:`predict` returns
        them (N_3D's probability ``> threshold``, dilated by ``dilation`` pixels), without the prior or N_G."""
        return self._hole(self._torch.from_numpy(self.mask_probability(images))[:, None])[:, 0].numpy() > 0

    def _hole(self, prob):
        """``(n, 1, H, W)`` probability -> the hole in {0, 1}: ``> threshold``, dilated by ``dilation`` px."""
        hole = (prob > self.threshold).float()
        if self.dilation > 0:
            hole = self._torch.nn.functional.max_pool2d(hole, 2 * self.dilation + 1, 1, self.dilation)
        return hole

    def _render(self, images: np.ndarray, edit: dict[str, Any] | None):
        """N_3D and the prior on ``(n, H, W, 3) uint8`` faces.

        Returns ``(hole, prior, x, m)``: the predicted hole ``(n, 1, H, W)`` in {0, 1} at the input size
        (N_3D's probability upsized bilinearly, ``> threshold``, dilated by ``dilation`` pixels), the rendered
        prior ``(n, 3, S, S)`` in [-1, 1], the face at ``S`` and the hole at ``S``, max-pooled so that it
        covers every input pixel of the hole.
        """
        from maskbench.train.tensors import network_inputs

        from .prior import render_prior

        torch, F = self._torch, self._torch.nn.functional
        s, (h, w) = self.size, images.shape[1:3]
        x, _ = network_inputs(images, None, s, self.device)
        with torch.inference_mode():
            xin = x if self.n3d_size == s else F.interpolate(x, size=(self.n3d_size,) * 2, mode="area")
            logits, coeffs = self.nets["n3d"](xin)
            prob = F.interpolate(torch.sigmoid(logits), size=(h, w), mode="bilinear", align_corners=False)
            hole = self._hole(prob)
            m = hole if (h, w) == (s, s) else F.adaptive_max_pool2d(hole, (s, s))
            prior, _ = render_prior(self.buffers, self.layout, self.symmetry, coeffs, x, m, edit)
        return hole, prior, x, m

    def forward(self, images: np.ndarray, masks: np.ndarray | None, generator,
                edit: dict[str, Any] | None = None) -> Restored:
        """Steps 1-3 of the module docstring on one batch: the predicted holes and N_G's output, for the
        noise drawn from ``generator``; ``edit`` overrides the predictor's ``edit``; ``masks`` is ignored."""
        hole, prior, x, m = self._render(images, self.edit if edit is None else edit)
        with self._torch.inference_mode():
            y = self.nets["generator"](self.trainable.generator_input(x, m, prior, generator))
        return Restored(hole[:, 0].cpu().numpy() > 0, y)

    def render(self, images: np.ndarray, edit: dict[str, Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The predicted masks at the input size ``(N, H, W) bool`` and the rendered priors at the model's
        size ``(N, S, S, 3) uint8`` (an edit changes the prior; see :func:`.prior.apply_edit`)."""
        from maskbench.train.tensors import tensor_to_images

        hole, prior, _, _ = self._render(images, edit)
        return hole[:, 0].cpu().numpy() > 0, tensor_to_images(prior)

    def predict_samples(self, images: np.ndarray, num_samples: int, generator=None,
                        edit: dict[str, Any] | None = None) -> list[PredictorOutput]:
        """``num_samples`` restorations of each face, noise drawn one after the other from ``generator``
        (the predicted masks are the same in every sample)."""
        torch = self._torch
        if generator is None:
            generator = torch.Generator().manual_seed(0)
        return [self.predict(images, None, generator=generator, edit=edit) for _ in range(int(num_samples))]
