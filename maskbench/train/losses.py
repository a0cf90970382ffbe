"""Loss terms shared by the learned methods, and the pretrained feature network behind the perceptual,
style and feature-discriminator losses.

The feature ("loss") network, :func:`load_loss_network`:

- ``vgg16``: torchvision's ImageNet VGG16 (Simonyan & Zisserman 2015), layers relu1_2, relu2_2, relu3_3,
  relu4_3, when its weights file is already in torch's hub cache (they cannot be downloaded here);
- ``dlib-resnet``: otherwise dlib's face-recognition ResNet (:mod:`maskbench.faces.dlib_resnet`, weights from
  ``face-recognition-models``): the stem and the end of each of its five stages (strides 2, 4, 8, 16, 32,
  64; 32, 32, 64, 128, 256, 256 channels); a 4-layer perceptual loss reads the first four, and the stage
  that stands where VGG's relu3_3 does (index 2: 1/8 resolution, 64 channels) feeds the feature
  discriminator.

Never the FID Inception network: training on its features inflates FID without improving images
(Kynkaanniemi et al., "The Role of ImageNet Classes in Frechet Inception Distance", ICLR 2023).
The network's name is recorded in every checkpoint (``loss_network``).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "LossNetwork",
    "load_loss_network",
    "perceptual_loss",
    "style_loss",
    "gram_matrix",
    "ralsgan_d_loss",
    "ralsgan_g_loss",
    "total_variation",
    "composite",
]

_VGG16_FILE = "vgg16-397923af.pth"  # torchvision's IMAGENET1K_V1 file name


class LossNetwork(nn.Module):
    """A frozen feature extractor. ``forward(x)``: ``(N, 3, H, W)`` in [-1, 1] -> list of feature maps.

    Attributes:
        name: ``"vgg16"`` or ``"dlib-resnet"`` (recorded in checkpoints).
        channels: channels of each returned map.
        match_index: the map that stands where VGG16's relu3_3 does (the feature discriminator's input).
    """

    name: str = ""
    channels: tuple[int, ...] = ()
    match_index: int = 2

    def train(self, mode: bool = True) -> "LossNetwork":
        return super().train(False)  # always eval: no batch-norm statistics updates


class _DlibStages(LossNetwork):
    name = "dlib-resnet"
    MIN_SIZE = 128  # smaller inputs (tests) are upsampled to this

    def __init__(self, net):
        super().__init__()
        self.net = net
        for p in self.net.parameters():
            p.requires_grad_(False)
        self._ends = []  # block index after which a stage ends
        for i, blk in enumerate(net.blocks):
            nxt = net.blocks[i + 1] if i + 1 < len(net.blocks) else None
            if nxt is None or nxt.down:
                self._ends.append(i)
        with torch.no_grad():
            self.channels = tuple(f.shape[1] for f in self.forward(torch.zeros(1, 3, 128, 128)))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        n = self.net
        if min(x.shape[-2:]) < self.MIN_SIZE:  # its stride-64 stages need at least ~100 px
            x = F.interpolate(x, size=(self.MIN_SIZE, self.MIN_SIZE), mode="bilinear", align_corners=False)
        x = (x + 1.0) * 127.5
        x = (x - n.mean) * (1.0 / 256.0)
        x = F.relu(n.stem(x))
        feats = [x]
        x = F.max_pool2d(x, n.mp_k, n.mp_s)
        for i, blk in enumerate(n.blocks):
            x = blk(x)
            if i in self._ends:
                feats.append(x)
        return feats


class _VGG16(LossNetwork):
    name = "vgg16"
    channels = (64, 128, 256, 512)
    _CUTS = (4, 9, 16, 23)  # after relu1_2, relu2_2, relu3_3, relu4_3

    def __init__(self, weights: Path):
        super().__init__()
        import torchvision

        vgg = torchvision.models.vgg16()
        vgg.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        self.features = vgg.features[: self._CUTS[-1]].eval()
        for p in self.features.parameters():
            p.requires_grad_(False)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = ((x + 1.0) / 2.0 - self.mean) / self.std
        out, start = [], 0
        for cut in self._CUTS:
            x = self.features[start:cut](x)
            out.append(x)
            start = cut
        return out


def _vgg16_weights() -> Path | None:
    p = Path(torch.hub.get_dir()) / "checkpoints" / _VGG16_FILE
    return p if p.is_file() else None


def load_loss_network(name: str = "auto", device: str = "cpu") -> LossNetwork:
    """The frozen loss network (module docstring).

    Args:
        name: ``"auto"`` (VGG16 when its weights are cached, else dlib's ResNet), ``"vgg16"`` or
            ``"dlib-resnet"``.
        device: torch device.

    Raises:
        ValueError: unknown name.
        maskbench.core.resources.ModelNotFoundError: the requested network's weights are not available.
    """
    from ..core.resources import ModelNotFoundError, resolve_dlib_model

    if name not in ("auto", "vgg16", "dlib-resnet"):
        raise ValueError(f"loss network must be auto, vgg16 or dlib-resnet, got {name!r}")
    vgg = _vgg16_weights()
    if name == "vgg16" and vgg is None:
        raise ModelNotFoundError(f"VGG16 ImageNet weights not found at {Path(torch.hub.get_dir()) / 'checkpoints' / _VGG16_FILE}")
    if name == "vgg16" or (name == "auto" and vgg is not None):
        return _VGG16(vgg).to(device)
    from ..faces.dlib_resnet import load_dlib_resnet

    net = load_dlib_resnet(resolve_dlib_model("dlib_face_recognition_resnet_model_v1.dat"))
    return _DlibStages(net).to(device)


def composite(pred: torch.Tensor, target: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
    """Prediction inside the hole, ``target`` outside: ``hole * pred + (1 - hole) * target``.

    ``pred``, ``target``: ``(N, 3, H, W)``; ``hole``: ``(N, 1, H, W)`` in {0, 1}.
    """
    return hole * pred + (1.0 - hole) * target


def perceptual_loss(fx: list[torch.Tensor], fy: list[torch.Tensor], layers: int = 4) -> torch.Tensor:
    """Mean over the first ``layers`` maps of the L1 distance of features (Johnson et al., ECCV 2016)."""
    return sum(F.l1_loss(a, b) for a, b in zip(fx[:layers], fy[:layers])) / min(layers, len(fx))


def gram_matrix(f: torch.Tensor) -> torch.Tensor:
    """``(N, C, H, W)`` -> ``(N, C, C)`` Gram matrix normalised by ``C * H * W`` (Gatys et al. 2016)."""
    n, c, h, w = f.shape
    f = f.reshape(n, c, h * w)
    return f @ f.transpose(1, 2) / (c * h * w)


def style_loss(fx: list[torch.Tensor], fy: list[torch.Tensor], layers: int = 4) -> torch.Tensor:
    """Sum over the first ``layers`` maps of the L1 distance of Gram matrices (as the M-CSAM public code)."""
    return sum(F.l1_loss(gram_matrix(a), gram_matrix(b)) for a, b in zip(fx[:layers], fy[:layers]))


def ralsgan_d_loss(real: torch.Tensor, fake: torch.Tensor, target: float = 0.9) -> torch.Tensor:
    """Relativistic-average least-squares GAN loss of the discriminator (Jolicoeur-Martineau, ICLR 2019),
    with the soft target of the M-CSAM public code: ``((D(r) - E D(f) - t)^2 + (D(f) - E D(r) + t)^2) / 2``."""
    return (torch.mean((real - fake.mean() - target) ** 2) + torch.mean((fake - real.mean() + target) ** 2)) / 2


def ralsgan_g_loss(real: torch.Tensor, fake: torch.Tensor, target: float = 0.1) -> torch.Tensor:
    """The generator's side: ``((D(r) - E D(f) + t)^2 + (D(f) - E D(r) - t)^2) / 2`` (public code's 0.1)."""
    return (torch.mean((real - fake.mean() + target) ** 2) + torch.mean((fake - real.mean() - target) ** 2)) / 2


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of horizontally and vertically adjacent pixels."""
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()
