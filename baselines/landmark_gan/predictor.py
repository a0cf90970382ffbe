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

Weights: one ``weights.safetensors`` holding the three stages (:func:`combine_weights` joins the runs'
files), or the runs' files given apart (``segmenter_weights=``, ``landmarks_weights=``,
``generator_weights=``).
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from maskbench.methods.learned import LearnedInpainter, default_weights
from maskbench.methods.predictors import MethodOptionError, Predictor, PredictorOutput

__all__ = ["LandmarkGan", "combine_weights", "DLIB_FALLBACK_BOX", "LANDMARK_SOURCES"]

#: dlib's face box as fractions of the image side ``x0, y0, x1, y1``: the mean over the 5,386 training
#: faces of ``data/celeba-masked`` (std 0.03-0.045), used where dlib's detector finds no masked face.
DLIB_FALLBACK_BOX = (0.211, 0.315, 0.782, 0.887)
LANDMARK_SOURCES = ("predicted", "dlib")
STAGE_NETS = {"segmenter": ("segmenter",), "landmarks": ("landmarks",), "generator": ("generator",)}
_TRAIN = ("`maskbench train --method landmark-gan --config small-segmenter`, `--config small-landmarks` and "
          "`--config small-generator`, then `python -m maskbench.baselines.landmark_gan.combine SEG LM GEN OUT`")


class LandmarkGan(LearnedInpainter):
    """Mask R-CNN + landmark regressor + LaFIn generator (Modak et al. 2022), trained here (module docstring).

    Args:
        device: torch device.
        weights: a combined weights file (default: the committed ``weights.safetensors``).
        segmenter_weights, landmarks_weights, generator_weights: the runs' files instead of a combined one
            (all three). ``generator_weights`` may be ``"male=PATH,female=PATH"`` for gender routing.
        landmarks: ``"predicted"`` (the method) or ``"dlib"`` (dlib's landmarks of the masked input).
        score_threshold: the least instance score that counts as a mask (torchvision's default box
            threshold is 0.05; 0.5 here).
        mask_threshold: probability above which a pixel of the instance mask is hole (torchvision: 0.5).
        batch_size: faces per forward.

    Raises:
        maskbench.core.resources.ModelNotFoundError: no weights (how to train them is in the message).
        maskbench.train.checkpoint.CheckpointError: a file is unreadable or not ``landmark-gan``'s.
        ValueError: an unknown ``landmarks`` source or a threshold outside [0, 1].
    """

    name = "landmark-gan"
    track = "blind"
    description = "Mask R-CNN + landmark-guided LaFIn GAN mask removal (blind), Modak et al. 2022 (trained here)"
    trainer = "maskbench.baselines.landmark_gan.training:LandmarkGanTraining"

    def __init__(self, device: str = "cpu", weights: str | None = None, segmenter_weights: str | None = None,
                 landmarks_weights: str | None = None, generator_weights: str | None = None,
                 landmarks: str = "predicted", score_threshold: float = 0.5, mask_threshold: float = 0.5,
                 batch_size: int = 16, variant: str | None = None):
        Predictor.__init__(self, device)
        import torch

        from maskbench.core.resources import ModelNotFoundError
        from maskbench.methods.learned import load_stages, trainer_class
        from maskbench.train.checkpoint import read_card

        if landmarks not in LANDMARK_SOURCES:
            raise MethodOptionError(f"landmark-gan: landmarks must be one of {', '.join(LANDMARK_SOURCES)}, got {landmarks!r}")
        for name, v in (("score_threshold", score_threshold), ("mask_threshold", mask_threshold)):
            if not 0.0 <= float(v) <= 1.0:
                raise MethodOptionError(f"landmark-gan: {name} must be in [0, 1], got {v}")
        T = trainer_class(type(self))
        parts = (segmenter_weights, landmarks_weights, generator_weights)
        if any(parts) and not all(parts):
            raise MethodOptionError("landmark-gan: give segmenter_weights, landmarks_weights and generator_weights together")
        if all(parts):
            files = {"segmenter": Path(segmenter_weights), "landmarks": Path(landmarks_weights)}
            for item in str(generator_weights).split(","):
                key, _, path = item.rpartition("=")
                files[f"generator_{key}" if key else "generator"] = Path(path)
        else:
            files = {"all": self._weights_path(weights, variant)}
        self.nets, self.configs = load_stages(self.name, files, T, self._how_to_train())
        self.generators = sorted(k for k in self.nets if k.startswith("generator"))
        if "segmenter" not in self.nets or "landmarks" not in self.nets or not self.generators:
            raise ModelNotFoundError(f"{self.name}: a stage's weights are missing ({', '.join(sorted(self.nets))} "
                                     f"found); {self._how_to_train()}")
        for m in self.nets.values():
            m.to(device).eval()
        self.weights_path = files.get("all")
        self.card = read_card(self.weights_path) if self.weights_path else None
        self.size = int(self.configs[self.generators[0]]["size"])
        self.landmark_size = int(self.configs["landmarks"]["size"])
        self.landmark_source = landmarks
        self.score_threshold, self.mask_threshold = float(score_threshold), float(mask_threshold)
        self.batch_size = int(batch_size)
        self._detector = None
        self._trainer = T
        self._torch = torch

    @classmethod
    def _how_to_train(cls) -> str:
        return f"train the three stages with {_TRAIN}, or pass --method-arg weights=PATH"

    # --- the three steps ------------------------------------------------------------------------------
    def segment(self, images: np.ndarray) -> np.ndarray:
        """Predicted holes ``(N, H, W) bool`` of ``(N, H, W, 3) uint8`` faces (step 1 of the module docstring)."""
        torch = self._torch
        n, h, w, _ = images.shape
        holes = np.zeros((n, h, w), bool)
        x = torch.from_numpy(images).to(self.device).permute(0, 3, 1, 2).float() / 255.0
        with torch.inference_mode():
            found = self.nets["segmenter"](list(x))
        for i, r in enumerate(found):
            keep = r["scores"] >= self.score_threshold
            if keep.any():
                best = int(torch.argmax(torch.where(keep, r["scores"], -1.0)))
                holes[i] = (r["masks"][best, 0] > self.mask_threshold).cpu().numpy()
        return holes

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

    def _forward(self, images: np.ndarray):
        """``(holes (n, H, W) bool, landmarks (n, 68, 2) input pixels, output (n, 3, S, S) in [-1, 1])``."""
        from maskbench.train.data import downsize_hole, downsize_image

        from .model import landmark_map
        from .training import points

        torch = self._torch
        s, (h, w) = self.size, images.shape[1:3]
        holes = self.segment(images)
        small = np.stack([downsize_image(im, s) for im in images])
        x = torch.from_numpy(small).to(self.device).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        m = torch.from_numpy(np.stack([downsize_hole(hh, s) for hh in holes])).to(self.device).float().unsqueeze(1)
        with torch.inference_mode():
            ls = self.landmark_size
            xl = x if ls == s else torch.nn.functional.interpolate(x, size=(ls, ls), mode="area")
            ml = m if ls == s else torch.nn.functional.adaptive_max_pool2d(m, (ls, ls))
            out = self.nets["landmarks"](self._trainer.landmark_input(xl, ml))
            gender = out[1] if isinstance(out, tuple) else None
            if self.landmark_source == "predicted":
                pts = points(out) * s  # at S pixels
                lms = ((pts + 0.5) * torch.tensor([w / s, h / s], device=pts.device) - 0.5).cpu().numpy()
            else:
                lms = self._dlib_landmarks(images)
                pts = (torch.from_numpy(lms).to(self.device) + 0.5) * torch.tensor([s / w, s / h], device=x.device) - 0.5
            lmap = landmark_map(pts, s)
            if len(self.generators) == 1 or gender is None:
                y = self.nets[self.generators[0]](x, lmap, m)
            else:
                male = (gender > 0)[:, None, None, None]
                y = torch.where(male, self.nets["generator_male"](x, lmap, m), self.nets["generator_female"](x, lmap, m))
        return holes, lms.astype(np.float32), y

    def predict(self, images: np.ndarray, masks: np.ndarray | None = None, generator=None) -> PredictorOutput:
        """Restore ``(N, H, W, 3) uint8`` faces (module docstring); ``masks`` is ignored (blind track).

        Returns:
            :class:`PredictorOutput` with the restored images, the predicted ``(N, H, W) bool`` masks and the
            landmarks ``(N, 68, 2) float32`` (input pixels) the generator was guided by; outside its
            predicted mask every pixel is the input's. Deterministic (``generator`` is unused).
        """
        s = self.size
        n, h, w, _ = images.shape
        out = images.copy()
        pred_masks = np.zeros((n, h, w), bool)
        lms = np.zeros((n, 68, 2), np.float32)
        for start in range(0, n, self.batch_size):
            holes, pts, y = self._forward(images[start:start + self.batch_size])
            for j, p in enumerate(((y.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()):
                i = start + j
                up = p if (h, w) == (s, s) else cv2.resize(p, (w, h), interpolation=cv2.INTER_CUBIC)
                out[i][holes[j]] = up[holes[j]]
                pred_masks[i] = holes[j]
                lms[i] = pts[j]
        return PredictorOutput(out, masks=pred_masks, landmarks=lms)


def combine_weights(segmenter: str | Path, landmarks: str | Path, generator: str | Path | dict[str, str | Path],
                    out: str | Path | None = None) -> Path:
    """Join the stages' ``weights.safetensors`` into one file (default: the committed location).

    ``generator`` is one file, or ``{"male": PATH, "female": PATH}`` for gender routing. The card holds
    each stage's card under ``stages`` (by network name); ``size``, ``steps``, ``images_seen``,
    ``wall_time_s`` and ``device`` summarise them (the generator's size; sums of the budgets).

    Raises:
        maskbench.train.checkpoint.CheckpointError: a file is unreadable, not ``landmark-gan``'s, or of the
            wrong stage.
    """
    from safetensors.torch import load_file, save

    from maskbench.core.io import atomic_write_bytes
    from maskbench.train.checkpoint import CheckpointError, read_card

    gens = {f"generator_{k}": v for k, v in generator.items()} if isinstance(generator, dict) else {"generator": generator}
    items = {"segmenter": segmenter, "landmarks": landmarks, **gens}
    tensors, stages = {}, {}
    for net_name, p in items.items():
        card = read_card(p)
        stage = net_name.split("_")[0]
        if card.get("method") != LandmarkGan.name or card.get("config", {}).get("stage") != stage:
            raise CheckpointError(f"{p} is not a landmark-gan {stage} weights file (method {card.get('method')!r}, "
                                  f"stage {card.get('config', {}).get('stage')!r})")
        stages[net_name] = card
        tensors.update({f"{net_name}/{k.split('/', 1)[1]}": v for k, v in load_file(str(p)).items()
                        if k.startswith(f"{stage}/")})
    g = stages[next(iter(gens))]
    total = lambda key: sum(c[key] for c in stages.values())  # noqa: E731
    card = {"method": LandmarkGan.name, "stages": stages,
            "config_name": "+".join(str(c.get("config_name")) for c in stages.values()),
            "config": g["config"], "size": g["size"], "steps": total("steps"), "images_seen": total("images_seen"),
            "wall_time_s": round(total("wall_time_s"), 1), "device": g["device"],
            "data_fingerprint": g.get("data_fingerprint"),
            "parameters": {k: sum(c.get("parameters", {}).values()) for k, c in stages.items()},
            "loss_network": g.get("loss_network"),
            "gender_routing": len(gens) > 1}
    out = Path(out) if out else default_weights(LandmarkGan)
    atomic_write_bytes(out, save(tensors, metadata={"maskbench": json.dumps(card)}))
    return out
