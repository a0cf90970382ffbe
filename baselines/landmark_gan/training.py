"""How ``landmark-gan`` is trained: three stages, three separate runs (they may run at the same time),
joined into one weights file by ``LandmarkGan.combine`` (``python -m maskbench.baselines.landmark_gan.combine``).

``stage: segmenter`` (``configs/small-segmenter.yaml``): :func:`.model.mask_rcnn` on the masked images,
one "face mask" instance per image, its box the true hole's bounding box and its mask the true hole;
torchvision's Mask R-CNN losses (RPN objectness and box, classifier, box regression, mask BCE) summed.
Not in the paper: ``unmasked_share`` of the images are shown unmasked (the original, no instance), so the
segmenter learns that a bare face has no mask (as ``3dprior``'s N_3D; the in-the-wild track's "mask left
behind" needs it). Before export its batch-norm statistics are recomputed on training images
(:meth:`LandmarkGanTraining.finalize`: the running ones lag the weights of a network trained from scratch).

``stage: landmarks`` (``configs/small-landmarks.yaml``): :class:`.model.LandmarkRegressor` on the masked
image with its hole set to white (LaFIn), targets the dataset's 68 landmarks of the *unmasked* original
(dlib's, from synthesis), loss = mean over faces of the L2 norm of the 136-vector of differences in
pixels (LaFIn's ``loss_landmark``).

``stage: generator`` (``configs/small-generator.yaml``): :class:`.model.LandmarkGenerator` on the masked
image, the true hole and the landmark map of the original's landmarks (LaFIn trains the inpainter on the
ground-truth landmarks), :class:`.model.Discriminator` on (image, landmark map). Generator loss (LaFIn /
Modak et al.): 1 L1 (raw output, whole image, divided by the hole's share of the image as LaFIn's code
does) + 0.1 perceptual (raw output) + ``style`` x style (Gram matrices of the output and the original
inside the hole) + 0.01 least-squares adversarial (Mao et al., ICCV 2017) + 0.1 total variation of the
composite. Adam 1e-4, betas (0, 0.9); the discriminator's learning rate is ``optim_d_scale`` times it
(LaFIn: 0.1).

Departure (a config key; the paper's value is the default): ``loss.style`` 250 is calibrated for VGG's
Gram matrices; with the dlib ResNet stages as the loss network (VGG weights cannot be had here) the
``region-attentive`` runs measured the weighted style term at 85-90 % of the generator loss and colour
blotches in the hole, with the same :func:`maskbench.train.losses.style_loss`; the CPU config uses 2.5
as they do.

Gender routing (the paper: a male and a female generator chosen by a gender classifier): ``gender:
male`` or ``female`` trains the generator on that gender's faces only, read from a CelebA attribute file
(``list_attr_celeba.txt``, column ``Male``) given as ``attributes``; the landmark stage, given the file,
also learns a gender logit (BCE, weight ``loss.gender``) that the predictor routes by. Without the file,
one generator for everyone (``gender: all``).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from maskbench.train.config import Check, ConfigError
from maskbench.train.data import Batch, scale_landmarks, show_unmasked
from maskbench.train.loop import Optimizers, Trainable
from maskbench.train.losses import perceptual_loss, style_loss, total_variation

from .model import Discriminator, LandmarkGenerator, LandmarkRegressor, landmark_map, mask_rcnn

__all__ = ["LandmarkGanTraining", "STAGES", "landmark_l2", "read_gender", "record_landmarks"]

STAGES = ("segmenter", "landmarks", "generator")
GENDERS = ("all", "male", "female")


def points(out) -> torch.Tensor:
    """The landmarks of a :class:`.model.LandmarkRegressor` output (with or without its gender logit)."""
    return out[0] if isinstance(out, tuple) else out


def landmark_l2(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """LaFIn's landmark loss: the mean over faces of the L2 norm of the flattened ``(68, 2)`` difference
    (``pred``, ``target``: ``(N, 68, 2)`` pixels)."""
    return (pred - target).flatten(1).norm(dim=1).mean()


def read_gender(path: str | Path) -> dict[str, bool]:
    """CelebA's ``list_attr_celeba.txt`` -> ``{image file stem: is male}``.

    The file: a count line, a header line of attribute names, then ``NAME.jpg v1 v2 ...`` with values 1 /
    -1 (Liu et al., "Deep Learning Face Attributes in the Wild", ICCV 2015).

    Raises:
        ConfigError: unreadable file, or no ``Male`` column.
    """
    try:
        lines = Path(path).read_text().splitlines()
        header = lines[1].split()
        col = header.index("Male")
    except (OSError, IndexError, ValueError) as e:
        raise ConfigError(f"attributes {path}: not a CelebA attribute file with a 'Male' column ({e})") from None
    out = {}
    for line in lines[2:]:
        parts = line.split()
        if len(parts) == len(header) + 1:
            out[Path(parts[0]).stem] = parts[1 + col] == "1"
    return out


def record_landmarks(data, size: int) -> np.ndarray:
    """The 68 landmarks of every training face at ``size`` pixels, ``(N, 68, 2) float32``, from a stored
    split's records (their ``width``) or an on-the-fly source's cached landmarks.

    Raises:
        maskbench.data.dataset.DatasetFormatError: the data holds no landmarks (``hf:`` copies).
    """
    from maskbench.data.dataset import DatasetFormatError

    if hasattr(data, "landmarks") and hasattr(data, "faces"):  # OnTheFlyFaces
        src = data.faces.shape[1]
        return scale_landmarks(data.landmarks, src, size)
    recs = getattr(data, "records", None) or []
    if not recs or any("landmarks" not in r or "width" not in r for r in recs):
        raise DatasetFormatError("landmark-gan trains on data whose records hold the 68 landmarks of the original "
                                 "(a `maskbench synth` folder, or --synth-on-the-fly)")
    return np.stack([scale_landmarks(r["landmarks"], int(r["width"]), size) for r in recs]).astype(np.float32)


@contextlib.contextmanager
def batch_norm_statistics(net: nn.Module, momentum: float | None):
    """Inside: ``net`` in eval mode except its batch-norm layers, which normalise with the batch's statistics
    and update their running ones with ``momentum`` (0.0: left unchanged; None: cumulative average).
    After: the momenta restored and ``net`` back in training mode."""
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in bns]
    net.eval()
    for m in bns:
        m.train()
        m.momentum = momentum
    try:
        yield
    finally:
        for m, mom in zip(bns, momenta):
            m.momentum = mom
        net.train()


def _gender_of(record: dict[str, Any], genders: dict[str, bool]) -> float:
    """1.0 male, 0.0 female, NaN unknown: looked up by the stem of the record's ``source_id`` (the CelebA
    file name), else by its ``id``."""
    for key in (record.get("source_id"), record.get("id")):
        if key is not None and Path(str(key)).stem in genders:
            return float(genders[Path(str(key)).stem])
    return float("nan")


class LandmarkGanTraining(Trainable):
    """Networks: ``segmenter`` | ``landmarks`` | ``generator`` and ``disc``, by ``stage`` (module docstring);
    config keys: ``configs/defaults.yaml``."""

    uses_loss_network = True
    inference_nets = ("segmenter", "landmarks", "generator")
    checks = {
        "stage": Check(choices=STAGES),
        "gender": Check(choices=GENDERS),
        "unmasked_share": Check(min=0, max=1),
        "model.backbone": Check(choices=("mobilenet_v3_large", "resnet50")),
        "model.min_size": Check(min=16),
        **{f"model.{k}": Check(min=1) for k in ("fpn_channels", "mask_resolution", "gen_width", "disc_width")},
        "model.landmark_width": Check(min=0, min_open=True),
        "optim_d_scale": Check(min=0, min_open=True),
    }

    @classmethod
    def build(cls, config: dict[str, Any]) -> dict[str, nn.Module]:
        stage, m = config["stage"], config["model"]
        if stage == "segmenter":
            return {"segmenter": mask_rcnn(m["min_size"], m["fpn_channels"], m["mask_resolution"], m["backbone"])}
        if stage == "landmarks":
            return {"landmarks": LandmarkRegressor(m["landmark_width"], gender=config["attributes"] is not None)}
        if stage == "generator":
            return {"generator": LandmarkGenerator(m["gen_width"], m["gen_blocks"])}
        raise ConfigError(f"landmark-gan: stage must be one of {', '.join(STAGES)}, got {stage!r}")

    def __init__(self, config: dict[str, Any], device: str = "cpu", loss_net: nn.Module | None = None):
        if config["gender"] != "all" and not config["attributes"]:
            raise ConfigError("landmark-gan: gender male/female needs attributes: a CelebA list_attr_celeba.txt")
        super().__init__(config, device, loss_net)
        if config["stage"] == "generator":
            self.nets["disc"] = Discriminator(config["model"]["disc_width"])
        self.landmarks = None
        self.male = None

    @classmethod
    def exported_nets(cls, config: dict[str, Any]) -> tuple[str, ...]:
        """A run exports its stage's network (``segmenter``, ``landmarks`` or ``generator``)."""
        return (config["stage"],)

    # --- data -----------------------------------------------------------------------------------------
    def prepare(self, data, samples):
        """Read the training faces' landmarks (and genders); the landmark and generator stages draw their
        sample grids from the first 8 training faces (their landmarks are known)."""
        size = self.config["size"]
        stage = self.config["stage"]
        if stage == "segmenter":
            return samples
        self.landmarks = torch.from_numpy(record_landmarks(data, size)).to(self.device)
        if self.config["attributes"]:
            genders = read_gender(self.config["attributes"])
            recs = getattr(data, "records", None) or []
            self.male = torch.tensor([_gender_of(r, genders) for r in recs], device=self.device)
        idx = np.arange(min(8, len(data)))
        self._sample_idx = torch.from_numpy(idx)
        return data.get(idx, 0)

    def gender_mask(self, index: torch.Tensor) -> torch.Tensor | None:
        """For ``gender`` male/female: which faces of ``index`` are of that gender (unlabelled: no)."""
        if self.config["gender"] == "all":
            return None
        g = self.male[index.to(self.device)]
        return (g == 1.0) if self.config["gender"] == "male" else (g == 0.0)

    # --- inference ------------------------------------------------------------------------------------
    @staticmethod
    def landmark_input(masked: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        """The landmark regressor's input: the masked image with the hole white (LaFIn)."""
        return masked * (1 - hole) + hole

    @classmethod
    def inpaint(cls, nets, masked, hole, generator=None):
        """Given-mask inpainting with ``landmarks`` and ``generator``: predicted landmarks, their map, the
        generator (the blind predictor first finds ``hole`` with the segmenter)."""
        s = masked.shape[-1]
        pts = points(nets["landmarks"](cls.landmark_input(masked, hole))) * s
        return nets["generator"](masked, landmark_map(pts, s), hole)

    def sample_outputs(self, nets, masked, hole):
        s = masked.shape[-1]
        stage = self.config["stage"]
        if stage == "segmenter":
            seg = nets["segmenter"]
            # the batch's statistics (the running ones lag the weights), left unchanged
            with batch_norm_statistics(seg, momentum=0.0), torch.no_grad():
                found = seg(list((masked + 1) / 2))
            out = masked.clone()
            for i, r in enumerate(found):
                if len(r["masks"]):
                    m = (r["masks"][0] > 0.5).float()
                    out[i] = torch.where(m > 0, 0.5 * out[i] + 0.5 * torch.tensor([1.0, -1.0, -1.0]).view(3, 1, 1), out[i])
            return out
        if stage == "landmarks":
            pts = points(nets["landmarks"](self.landmark_input(masked, hole))) * s
            dots = landmark_map(pts, s)
            return torch.where(dots > 0, torch.tensor([1.0, -1.0, -1.0]).view(1, 3, 1, 1), masked)
        pts = self.landmarks[self._sample_idx]
        return nets["generator"](masked, landmark_map(pts, s), hole)

    def finalize(self, data) -> None:
        """Segmenter: precise batch norm (Wu & Johnson, "Rethinking 'Batch' in BatchNorm", 2021). The
        trunk's batch-norm layers keep running statistics with momentum 0.01 (torchvision's MobileNetV3)
        while the weights move under them; at 330 steps they made every detection score < 1e-6 in eval mode
        (IoU 0), and statistics recomputed on 400 training images gave IoU 0.85. Before export they are
        recomputed as the plain average over ``precise_bn_images`` training images (a seeded draw, the
        same ``unmasked_share`` of them unmasked)."""
        if self.config["stage"] != "segmenter":
            return
        seg = self.nets["segmenter"]
        seg = getattr(seg, "module", seg)
        bns = [m for m in seg.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        n = min(int(self.config["precise_bn_images"]), len(data))
        if not bns or n == 0:
            return
        rng = np.random.default_rng([int(self.config["seed"]), 7])
        idx = np.sort(rng.choice(len(data), n, replace=False))
        plain = rng.random(n) < float(self.config["unmasked_share"])
        for m in bns:
            m.reset_running_stats()
        with batch_norm_statistics(seg, momentum=None), torch.no_grad():  # None: cumulative average
            for start in range(0, n, 16):
                sl = slice(start, start + 16)
                masked, original, _ = data.get(idx[sl], 0)
                x = np.where(plain[sl, None, None, None], original, masked)
                x = torch.from_numpy(np.ascontiguousarray(x)).to(self.device).permute(0, 3, 1, 2).float() / 255.0
                seg.backbone(seg.transform(list(x))[0].tensors)

    # --- training -------------------------------------------------------------------------------------
    def training_step(self, batch: Batch, opt: Optimizers) -> dict[str, float]:
        stage = self.config["stage"]
        if stage == "segmenter":
            return self._segmenter_step(batch, opt)
        if stage == "landmarks":
            return self._landmark_step(batch, opt)
        return self._generator_step(batch, opt)

    def _segmenter_step(self, batch: Batch, opt: Optimizers) -> dict[str, float]:
        x, hole = show_unmasked(batch, float(self.config["unmasked_share"]), self.config["seed"], self.step)
        targets = []
        for h in hole[:, 0] > 0:
            ys, xs = torch.nonzero(h, as_tuple=True)
            if len(ys) == 0:
                targets.append({"boxes": torch.zeros(0, 4, device=x.device),
                                "labels": torch.zeros(0, dtype=torch.int64, device=x.device),
                                "masks": torch.zeros(0, *h.shape, dtype=torch.uint8, device=x.device)})
                continue
            box = torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float()[None]
            targets.append({"boxes": box, "labels": torch.ones(1, dtype=torch.int64, device=x.device),
                            "masks": h[None].to(torch.uint8)})
        losses = self.nets["segmenter"](list((x + 1) / 2), targets)
        total = sum(losses.values())
        opt.update("segmenter", total)
        return {"total": total.item(), **{k.removeprefix("loss_"): v.item() for k, v in losses.items()}}

    def _landmark_step(self, batch: Batch, opt: Optimizers) -> dict[str, float]:
        s = batch.masked.shape[-1]
        target = self.landmarks[batch.index.to(self.device)]
        out = self.nets["landmarks"](self.landmark_input(batch.masked, batch.hole))
        pts, gender_logit = out if isinstance(out, tuple) else (out, None)
        loss = landmark_l2(pts * s, target)
        logs = {"landmark_l2": loss.item()}
        if gender_logit is not None and self.male is not None:
            g = self.male[batch.index.to(self.device)]
            known = ~torch.isnan(g)
            if known.any():
                gl = F.binary_cross_entropy_with_logits(gender_logit[known], g[known])
                loss = loss + self.config["loss"]["gender"] * gl
                logs["gender_bce"] = gl.item()
        opt.update("landmarks", loss)
        # normalised mean error: mean point distance / outer-eye-corner distance (300-W convention)
        with torch.no_grad():
            iod = (target[:, 36] - target[:, 45]).norm(dim=-1)
            nme = ((pts * s - target).norm(dim=-1).mean(1) / iod).mean()
        return {"total": loss.item(), **logs, "nme": nme.item()}

    def _generator_step(self, batch: Batch, opt: Optimizers) -> dict[str, float]:
        lc = self.config["loss"]
        G, D = self.nets["generator"], self.nets["disc"]
        s = batch.masked.shape[-1]
        idx = batch.index.to(self.device)
        keep = self.gender_mask(batch.index)
        y, hole, masked = batch.original, batch.hole, batch.masked
        lmap = landmark_map(self.landmarks[idx], s)
        if keep is not None:  # routing: only this generator's gender
            if not keep.any():
                return {"g_total": float("nan")}
            y, hole, masked, lmap = y[keep], hole[keep], masked[keep], lmap[keep]
        out = G(masked, lmap, hole)
        comp = hole * out + (1 - hole) * y

        # discriminator: least squares (1 real, 0 fake) on (image, landmark map)
        d_real = D(torch.cat([y, lmap], 1))
        d_fake = D(torch.cat([out.detach(), lmap], 1))
        d_loss = ((d_real - 1) ** 2).mean() / 2 + (d_fake ** 2).mean() / 2
        opt.update("disc", d_loss)

        # generator
        adv = ((D(torch.cat([out, lmap], 1)) - 1) ** 2).mean()
        l1 = F.l1_loss(out, y) / hole.mean().clamp_min(1e-3)
        with torch.no_grad():
            f_real = self.loss_net(y)
            f_real_hole = self.loss_net(y * hole) if lc["style"] > 0 else None
        perc = perceptual_loss(self.loss_net(out), f_real)
        style = style_loss(self.loss_net(out * hole), f_real_hole) if lc["style"] > 0 else out.new_zeros(())
        tv = total_variation(comp)
        g_loss = lc["l1"] * l1 + lc["perceptual"] * perc + lc["style"] * style + lc["adversarial"] * adv + lc["tv"] * tv
        opt.update("generator", g_loss)
        return {"g_total": g_loss.item(), "l1_over_hole": l1.item(), "perceptual": perc.item(), "style": style.item(),
                "adv_g": adv.item(), "tv": tv.item(), "d_loss": d_loss.item()}

    @property
    def lr_scales(self) -> dict[str, float]:
        """The discriminator learns at ``optim_d_scale`` times the generator's rate (LaFIn's D2G_LR)."""
        return {"disc": float(self.config["optim_d_scale"])}
