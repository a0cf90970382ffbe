"""How ``3dprior`` is trained: two stages, two separate runs (they may run at the same time).

``stage: n3d`` (``configs/small-n3d.yaml``): :class:`.model.N3D` on the masked image, supervised by the
true hole (BCE with online hard example mining, BiSeNet's ``OhemCELoss``: pixels whose loss exceeds
``-log(ohem_threshold)``, at least ``1/16`` of them) and by the eos fit of the unmasked original:
L1 of the normalised coefficients, and the landmark loss (the 50 iBUG points with a fixed SFM vertex
projected by the predicted coefficients vs the 68 dataset landmarks, Euclidean distance in percent of the
image side, weight 20 on the nose 27-35 and inner mouth 60-67, 1 elsewhere). The photometric term is left
out (our SFM has no colour model; the prior's colours are sampled from the image anyway). Not in the paper:
``unmasked_share`` of the images (0.25 in ``small-n3d``) are shown as the unmasked original with an empty
hole, so the segmenter learns that a bare face has no mask; trained on masked faces only, it marked
13-29 % of every real unmasked photo as mask (99.8 % of 899 faces above 5 %), which makes it useless for
the in-the-wild track's "mask left behind".

``stage: generator`` (``configs/small-generator.yaml``): :class:`.model.Generator` on 7 channels (the
masked image with its hole filled by uniform noise in [-1, 1], the hole, and the cached ``I_3D`` of the
eos fit and the true hole: teacher forcing, N_3D is not used), :class:`.model.Discriminator` with the
non-saturating GAN loss and an R1 penalty on reals (``loss.r1``, gamma; applied every ``loss.r1_every``
steps with that factor, StyleGAN2's lazy regularisation: the double backward is the dearest part of a step). Generator loss =
10 L1 (raw output, whole image) + 0.1 identity (1 - cosine of dlib's face-recognition ResNet embeddings
of the composite and the original, on a fixed central crop resized to 150 px: our faces are already
aligned, dlib's own chip cut is not differentiable) + 0.1 total variation (composite) + 0.01 adversarial.

Both stages read the per-face eos fits and priors of :func:`.prior.fit_cache`, computed once in
:meth:`Prior3DTraining.prepare` and shared by concurrent runs (a file lock; the second run waits).

Departures from the paper, CPU-sized: 128 px; N_3D's backbone at half ResNet-18 width (32) from scratch
(the paper: ResNet-50 pretrained on ImageNet); the SFM (63 shape + 6 expression blendshapes, no texture,
no lighting) instead of the BFM; 2-iteration eos fits as targets.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from maskbench.train.config import Check, ConfigError
from maskbench.train.data import Batch, show_unmasked
from maskbench.train.loop import Optimizers, Trainable
from maskbench.train.losses import total_variation

from .model import N3D, Discriminator, Generator
from .prior import fit_cache, render_prior
from .sfm import LANDMARK_WEIGHTS, CoeffLayout, load_sfm, project

__all__ = ["Prior3DTraining", "ohem_bce", "landmark_loss", "STAGES"]

STAGES = ("n3d", "generator")


def ohem_bce(logits: torch.Tensor, target: torch.Tensor, threshold: float = 0.7, min_fraction: float = 1 / 16):
    """Binary cross-entropy over the hard pixels: those with loss above ``-log(threshold)``, or the
    ``min_fraction`` hardest if fewer are (BiSeNet's ``OhemCELoss``)."""
    loss = F.binary_cross_entropy_with_logits(logits, target, reduction="none").flatten()
    n_min = max(1, int(loss.numel() * min_fraction))
    hard = loss[loss > -math.log(threshold)]
    if hard.numel() < n_min:
        hard = loss.topk(n_min).values
    return hard.mean()


def landmark_loss(points: torch.Tensor, target: torch.Tensor, ibug: torch.Tensor, size: int) -> torch.Tensor:
    """Weighted mean distance, in percent of the image side, of projected model landmarks ``(N, L, 2)`` to
    the targets ``(N, 68, 2)`` at iBUG indices ``ibug (L,)``."""
    w = torch.as_tensor(LANDMARK_WEIGHTS, device=points.device)[ibug]
    d = (points - target[:, ibug]).norm(dim=-1)
    return 100.0 * (d * w).sum(1).mean() / w.sum() / size


class Prior3DTraining(Trainable):
    """Networks: ``n3d`` (stage n3d); ``generator`` and ``disc`` (stage generator). See module docstring;
    config keys: ``configs/defaults.yaml``."""

    uses_loss_network = False
    inference_nets = ("n3d", "generator")
    checks = {
        "stage": Check(choices=STAGES),
        "prior.num_shape": Check(min=1, max=63),
        "prior.fit_iterations": Check(min=1),
        **{f"model.{k}": Check(min=1) for k in ("n3d_width", "gen_width", "gen_downs", "disc_width", "disc_max_width")},
        "unmasked_share": Check(min=0, max=1),
        "loss.ohem_threshold": Check(min=0, max=1, min_open=True),
        "loss.r1_every": Check(min=1),
    }

    @classmethod
    def layout(cls, config: dict[str, Any]) -> CoeffLayout:
        return CoeffLayout(int(config["prior"]["num_shape"]))

    @classmethod
    def build(cls, config: dict[str, Any]) -> dict[str, nn.Module]:
        stage = config["stage"]
        m = config["model"]
        if stage == "n3d":
            return {"n3d": N3D(cls.layout(config).size, m["n3d_width"])}
        if stage == "generator":
            return {"generator": Generator(m["gen_width"], m["gen_blocks"], m["gen_downs"])}
        raise ConfigError(f"3dprior: stage must be one of {', '.join(STAGES)}, got {stage!r}")

    @classmethod
    def exported_nets(cls, config: dict[str, Any]) -> tuple[str, ...]:
        """A run exports its stage's network (``n3d`` or ``generator``)."""
        return (config["stage"],)

    def __init__(self, config: dict[str, Any], device: str = "cpu", loss_net: nn.Module | None = None):
        super().__init__(config, device, loss_net)
        self.fits = None
        self.sfm = load_sfm(config["prior"]["sfm_dir"])
        self.buffers = self.sfm.torch_buffers(self.layout(config).num_shape, device)
        self.ibug = torch.from_numpy(self.sfm.landmark_ibug).to(device)
        self.lm_vertex = torch.from_numpy(self.sfm.landmark_vertex).to(device)
        self.symmetry = torch.from_numpy(self.sfm.symmetry).to(device)
        self.id_net = None
        if config["stage"] == "generator":
            m = config["model"]
            self.nets["disc"] = Discriminator(config["size"], m["disc_width"], m["disc_max_width"])
            if config["loss"]["identity"] > 0:
                from maskbench.core.resources import resolve_dlib_model
                from maskbench.faces.dlib_resnet import load_dlib_resnet

                self.id_net = load_dlib_resnet(resolve_dlib_model("dlib_face_recognition_resnet_model_v1.dat"))
                self.id_net.to(device).eval()
                for p in self.id_net.parameters():
                    p.requires_grad_(False)

    # --- data -----------------------------------------------------------------------------------------
    def prepare(self, data, samples):
        """Fit (or read) every training face's SFM coefficients and prior; N_3D's output normalisation is
        set from them. The generator stage draws its sample grids from the first 8 training faces (the
        test faces have no cached prior)."""
        size = self.config["size"]
        self.fits = fit_cache(data, size, self.sfm, self.config["prior"], priors=self.config["stage"] != "n3d")
        if self.config["stage"] == "n3d":
            c = torch.from_numpy(self.fits.coeffs)
            self.nets["n3d"].set_normalisation(c.mean(0).to(self.device), c.std(0).to(self.device))
            return samples
        idx = np.arange(min(8, len(data)))
        self._sample_priors = self.fits.prior_batch(idx, self.device)
        return data.get(idx, 0)

    # --- inference ------------------------------------------------------------------------------------
    @staticmethod
    def generator_input(masked: torch.Tensor, hole: torch.Tensor, prior: torch.Tensor,
                        generator: torch.Generator | None = None) -> torch.Tensor:
        """The 7 channels: ``masked`` with uniform noise in [-1, 1] in the hole (drawn on the CPU from
        ``generator``, or torch's global generator when None), the hole, the prior."""
        noise = torch.rand(masked.shape, generator=generator, device="cpu").to(masked.device) * 2 - 1
        return torch.cat([masked * (1 - hole) + noise * hole, hole, prior], 1)

    @classmethod
    def inpaint(cls, nets, masked, hole, generator=None):
        """Given-mask inpainting with both networks (``n3d`` and ``generator``): N_3D's coefficients, their
        prior coloured outside ``hole``, N_G (the blind predictor uses N_3D's mask instead of ``hole``)."""
        n3d = nets["n3d"]
        layout = CoeffLayout(n3d.coeff_mean.numel() - 12)
        model = load_sfm(None)
        buffers = model.torch_buffers(layout.num_shape, masked.device)
        _, coeffs = n3d(masked)
        prior, _ = render_prior(buffers, layout, torch.from_numpy(model.symmetry).to(masked.device), coeffs, masked,
                                hole)
        return nets["generator"](cls.generator_input(masked, hole, prior, generator))

    def sample_outputs(self, nets, masked, hole):
        if self.config["stage"] == "generator":
            x = self.generator_input(masked, hole, self._sample_priors, torch.Generator().manual_seed(0))
            return nets["generator"](x)
        logits, coeffs = nets["n3d"](masked)
        prior, cov = render_prior(self.buffers, self.layout(self.config), self.symmetry, coeffs, masked,
                                  (logits > 0).float())
        # the grid shows the rendered prior in the true hole; the predicted mask's outline is drawn white
        edge = F.max_pool2d((logits > 0).float(), 3, 1, 1) - (-F.max_pool2d(-(logits > 0).float(), 3, 1, 1))
        out = cov * prior + (1 - cov) * masked
        return torch.where(edge > 0, torch.ones_like(out), out)

    # --- training -------------------------------------------------------------------------------------
    def training_step(self, batch: Batch, opt: Optimizers) -> dict[str, float]:
        if self.config["stage"] == "n3d":
            return self._n3d_step(batch, opt)
        return self._generator_step(batch, opt)

    def _n3d_step(self, batch: Batch, opt: Optimizers) -> dict[str, float]:
        lc = self.config["loss"]
        net = self.nets["n3d"]
        inner = getattr(net, "module", net)
        idx = batch.index.numpy()
        target = torch.from_numpy(self.fits.coeffs[idx]).to(self.device)
        lms = torch.from_numpy(self.fits.landmarks[idx]).to(self.device)
        x, hole = show_unmasked(batch, float(self.config["unmasked_share"]), self.config["seed"], self.step)
        logits, coeffs = net(x)
        mask_loss = ohem_bce(logits, hole, lc["ohem_threshold"])
        coeff_loss = ((coeffs - target) / inner.coeff_std).abs().mean()
        screen = project(self.buffers, self.layout(self.config), coeffs, batch.masked.shape[-1])
        lm_loss = landmark_loss(screen[:, self.lm_vertex, :2], lms, self.ibug, batch.masked.shape[-1])
        loss = lc["mask"] * mask_loss + lc["coeff"] * coeff_loss + lc["landmark"] * lm_loss
        opt.update("n3d", loss)
        with torch.no_grad():
            pred = logits > 0
            inter = (pred & (hole > 0)).sum().item()
            union = (pred | (hole > 0)).sum().item()
        return {"total": loss.item(), "mask_ohem": mask_loss.item(), "coeff_l1": coeff_loss.item(),
                "landmark_pct": lm_loss.item(), "mask_iou": inter / max(union, 1)}

    def _identity(self, x: torch.Tensor) -> torch.Tensor:
        s = x.shape[-1]
        a, b = round(s * 0.125), round(s * 0.875)
        crop = F.interpolate(x[..., a:b, a:b], size=(150, 150), mode="bilinear", align_corners=False)
        return F.normalize(self.id_net((crop + 1) * 127.5), dim=1)

    def _generator_step(self, batch: Batch, opt: Optimizers) -> dict[str, float]:
        lc = self.config["loss"]
        G, D = self.nets["generator"], self.nets["disc"]
        prior = self.fits.prior_batch(batch.index.numpy(), self.device)
        y, hole = batch.original, batch.hole
        out = G(self.generator_input(batch.masked, hole, prior))
        comp = hole * out + (1 - hole) * y

        # discriminator: non-saturating loss, R1 on reals (lazily: every r1_every steps, weighted by it,
        # as StyleGAN2 does; the double backward through D costs more than the rest of D's step)
        lazy = int(lc["r1_every"])
        with_r1 = lc["r1"] > 0 and self.step % lazy == 0
        real = y.detach().requires_grad_(with_r1)
        d_real = D(real)
        d_fake = D(comp.detach())
        r1 = out.new_zeros(())
        if with_r1:
            (grad,) = torch.autograd.grad(d_real.sum(), real, create_graph=True)
            r1 = grad.pow(2).flatten(1).sum(1).mean()
        d_loss = F.softplus(d_fake).mean() + F.softplus(-d_real).mean() + 0.5 * lc["r1"] * lazy * r1
        opt.update("disc", d_loss)

        # generator
        adv = F.softplus(-D(comp)).mean()
        l1 = F.l1_loss(out, y)
        tv = total_variation(comp)
        ident = out.new_zeros(())
        if self.id_net is not None:
            with torch.no_grad():
                e_real = self._identity(y)
            ident = (1 - (self._identity(comp) * e_real).sum(1)).mean()
        g_loss = lc["l1"] * l1 + lc["identity"] * ident + lc["tv"] * tv + lc["adversarial"] * adv
        opt.update("generator", g_loss)
        return {"g_total": g_loss.item(), "l1": l1.item(), "identity": ident.item(), "tv": tv.item(),
                "adv_g": adv.item(), "d_loss": d_loss.item(), "r1": r1.item()}

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {k: [p for p in m.parameters() if p.requires_grad] for k, m in self.nets.items()}
