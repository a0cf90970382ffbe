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

Weights: one ``weights.safetensors`` holding both networks (:func:`combine_weights` joins the two runs'
files), or the two runs' files given apart (``n3d_weights=``, ``generator_weights=``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from maskbench.methods.learned import LearnedInpainter, default_weights
from maskbench.methods.predictors import MethodOptionError, Predictor, PredictorOutput

__all__ = ["Prior3D", "combine_weights"]

_TRAIN = ("`maskbench train --method 3dprior --config small-n3d` and `--config small-generator`, then "
          "`python -m maskbench.baselines.prior3d.combine N3D GENERATOR OUT`")


class Prior3D(LearnedInpainter):
    """Non-deterministic face-mask removal with a 3D prior (Yin & Chen, ICIP 2022), trained here.

    Args:
        device: torch device.
        weights: a combined weights file (default: the committed ``weights.safetensors``).
        n3d_weights, generator_weights: the two runs' ``weights.safetensors`` instead of a combined file.
        sfm_dir: the Surrey Face Model folder (see :func:`.sfm.resolve_sfm_dir`).
        threshold: mask probability threshold. 0.5 by default; the authors' code uses 0.1. Measured on
            300 training faces at 256 px (the test split was not used to choose), before dilation: IoU
            0.943, recall 0.981 at 0.5; IoU 0.870, recall 0.998 at 0.1.
        dilation: pixels of the input by which the thresholded mask grows (default 1: IoU 0.922, recall
            0.988 on those faces; the authors' 5 x 5 then 3 x 3 at 128 px, 6 px at 256: IoU 0.782, and
            0.705 with their threshold).
        edit: an edit applied to every face (:func:`.prior.apply_edit`), e.g. ``{"smile": 1.0}``.
        batch_size: faces per forward.

    Raises:
        maskbench.faces.landmarks.ModelNotFoundError: no weights (how to train them is in the message), or no SFM.
        maskbench.train.checkpoint.CheckpointError: a file is unreadable or not ``3dprior``'s.
    """

    name = "3dprior"
    track = "blind"
    description = "3D-prior GAN mask removal (blind), Yin & Chen ICIP 2022 (trained here)"
    trainer = "maskbench.baselines.prior3d.training:Prior3DTraining"

    def __init__(self, device: str = "cpu", weights: str | None = None, n3d_weights: str | None = None,
                 generator_weights: str | None = None, sfm_dir: str | None = None, threshold: float = 0.5,
                 dilation: int = 1, edit: dict[str, Any] | None = None, batch_size: int = 16,
                 variant: str | None = None):
        Predictor.__init__(self, device)
        import torch

        from maskbench.core.resources import ModelNotFoundError
        from maskbench.methods.learned import load_stages, trainer_class
        from maskbench.train.checkpoint import read_card

        from .sfm import load_sfm

        T = trainer_class(type(self))
        if (n3d_weights is None) != (generator_weights is None):
            raise MethodOptionError("3dprior: give both n3d_weights and generator_weights, or neither")
        files = ({"n3d": Path(n3d_weights), "generator": Path(generator_weights)} if n3d_weights
                 else {"both": self._weights_path(weights, variant)})
        self.nets, self.configs = load_stages(self.name, files, T, self._how_to_train())
        missing = {"n3d", "generator"} - set(self.nets)
        if missing:
            raise ModelNotFoundError(f"{self.name}: {', '.join(sorted(missing))} weights missing; {self._how_to_train()}")
        for m in self.nets.values():
            m.to(device).eval()
        self.weights_path = files.get("both")
        self.card = read_card(self.weights_path) if self.weights_path else None
        self.size = int(self.configs["generator"]["size"])
        self.n3d_size = int(self.configs["n3d"]["size"])
        self.layout = T.layout(self.configs["n3d"])
        self.sfm = load_sfm(sfm_dir)  # not the training run's folder: the card may come from another machine
        self.buffers = self.sfm.torch_buffers(self.layout.num_shape, device)
        self.symmetry = torch.from_numpy(self.sfm.symmetry).to(device)
        self.threshold = float(threshold)
        self.dilation = int(dilation)
        if self.dilation < 0:
            raise MethodOptionError(f"3dprior: dilation must be >= 0 pixels, got {dilation}")
        self.edit = edit
        self.batch_size = int(batch_size)
        self._trainer = T
        self._torch = torch

    @classmethod
    def weights_status(cls) -> str:
        """The weights' status, or ``missing 3DMM: ...`` / ``missing eos-py: ...`` (:func:`.sfm.sfm_status`)."""
        from .sfm import sfm_status

        status = super().weights_status()
        return (sfm_status() or status) if status == "available" else status

    @classmethod
    def _how_to_train(cls) -> str:
        return f"train both stages with {_TRAIN}, or pass --method-arg weights=PATH"

    def _forward(self, images: np.ndarray, edit: dict[str, Any] | None, generator=None):
        """N_3D, the prior and (when ``generator`` is given) N_G on ``(n, H, W, 3) uint8`` faces.

        Returns ``(hole, prior, y)``: the predicted hole ``(n, H, W) bool`` at the input size (N_3D's
        probability upsized bilinearly, ``> threshold``, dilated by ``dilation`` pixels), the rendered prior
        and N_G's output ``(n, 3, S, S)`` in [-1, 1] (``y`` is None without ``generator``). N_G's hole is
        the input-size hole brought to ``S`` by max-pooling, so it covers every input pixel of the hole.
        """
        from maskbench.train.data import downsize_image

        from .prior import render_prior

        torch, F = self._torch, self._torch.nn.functional
        s, (h, w) = self.size, images.shape[1:3]
        small = np.stack([downsize_image(im, s) for im in images])
        x = torch.from_numpy(small).to(self.device).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        with torch.inference_mode():
            xin = x if self.n3d_size == s else F.interpolate(x, size=(self.n3d_size,) * 2, mode="area")
            logits, coeffs = self.nets["n3d"](xin)
            prob = F.interpolate(torch.sigmoid(logits), size=(h, w), mode="bilinear", align_corners=False)
            hole = (prob > self.threshold).float()
            if self.dilation > 0:
                k = 2 * self.dilation + 1
                hole = F.max_pool2d(hole, k, 1, self.dilation)
            m = hole if (h, w) == (s, s) else F.adaptive_max_pool2d(hole, (s, s))
            prior, _ = render_prior(self.buffers, self.layout, self.symmetry, coeffs, x, m, edit)
            y = None
            if generator is not None:
                y = self.nets["generator"](self._trainer.generator_input(x, m, prior, generator))
        return hole[:, 0].cpu().numpy() > 0, prior, y

    def render(self, images: np.ndarray, edit: dict[str, Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The predicted masks at the input size ``(N, H, W) bool`` and the rendered priors at the model's
        size ``(N, S, S, 3) uint8`` (an edit changes the prior; see :func:`.prior.apply_edit`)."""
        hole, prior, _ = self._forward(images, edit)
        return hole, _to_uint8(prior)

    def predict(self, images: np.ndarray, masks: np.ndarray | None = None, generator=None,
                edit: dict[str, Any] | None = None) -> PredictorOutput:
        """Restore ``(N, H, W, 3) uint8`` faces (module docstring); ``masks`` is ignored (blind track).

        Args:
            images: the masked faces.
            masks: ignored.
            generator: CPU ``torch.Generator`` for the hole noise (a fresh one seeded 0 when None).
            edit: overrides the predictor's ``edit`` for this call.

        Returns:
            :class:`PredictorOutput` with the restored images and the predicted ``(N, H, W) bool`` masks;
            outside its predicted mask every pixel is the input's.
        """
        torch = self._torch
        if generator is None:
            generator = torch.Generator().manual_seed(0)
        edit = self.edit if edit is None else edit
        s = self.size
        n, h, w, _ = images.shape
        out = images.copy()
        pred_masks = np.zeros((n, h, w), bool)
        for start in range(0, n, self.batch_size):
            hole, _, y = self._forward(images[start:start + self.batch_size], edit, generator)
            for j, p in enumerate(_to_uint8(y)):
                i = start + j
                up = p if (h, w) == (s, s) else cv2.resize(p, (w, h), interpolation=cv2.INTER_CUBIC)
                out[i][hole[j]] = up[hole[j]]
                pred_masks[i] = hole[j]
        return PredictorOutput(out, masks=pred_masks)

    def predict_samples(self, images: np.ndarray, num_samples: int, generator=None,
                        edit: dict[str, Any] | None = None) -> list[PredictorOutput]:
        """``num_samples`` restorations of each face, noise drawn one after the other from ``generator``
        (the predicted masks are the same in every sample)."""
        torch = self._torch
        if generator is None:
            generator = torch.Generator().manual_seed(0)
        return [self.predict(images, None, generator=generator, edit=edit) for _ in range(int(num_samples))]


def _to_uint8(t) -> np.ndarray:
    return ((t.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def combine_weights(n3d: str | Path, generator: str | Path, out: str | Path | None = None) -> Path:
    """Join the two stages' ``weights.safetensors`` into one file (default: the committed location).

    The card holds both cards under ``stages``; ``size``, ``steps``, ``images_seen``, ``wall_time_s`` and
    ``device`` summarise them (the generator's size; sums of the budgets) for ``maskbench methods``.

    Raises:
        maskbench.train.checkpoint.CheckpointError: a file is unreadable, not ``3dprior``'s, or of the
            wrong stage.
    """
    from safetensors.torch import load_file, save

    from maskbench.core.io import atomic_write_bytes
    from maskbench.train.checkpoint import CheckpointError, read_card

    tensors, stages = {}, {}
    for stage, p in (("n3d", n3d), ("generator", generator)):
        card = read_card(p)
        if card.get("method") != Prior3D.name or card.get("config", {}).get("stage") != stage:
            raise CheckpointError(f"{p} is not a 3dprior {stage} weights file (method {card.get('method')!r}, "
                                  f"stage {card.get('config', {}).get('stage')!r})")
        stages[stage] = card
        tensors.update({k: v for k, v in load_file(str(p)).items() if k.startswith(f"{stage}/")})
    g, n = stages["generator"], stages["n3d"]
    card = {"method": Prior3D.name, "stages": stages, "config_name": f"{n.get('config_name')}+{g.get('config_name')}",
            "config": g["config"], "size": g["size"], "steps": n["steps"] + g["steps"],
            "images_seen": n["images_seen"] + g["images_seen"], "wall_time_s": n["wall_time_s"] + g["wall_time_s"],
            "device": g["device"], "data_fingerprint": g.get("data_fingerprint"),
            "parameters": {**n.get("parameters", {}), **g.get("parameters", {})}, "loss_network": "dlib-resnet (identity)"}
    out = Path(out) if out else default_weights(Prior3D)
    atomic_write_bytes(out, save(tensors, metadata={"maskbench": json.dumps(card)}))
    return out
