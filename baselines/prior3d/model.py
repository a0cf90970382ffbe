"""The networks of ``3dprior`` (Yin & Chen, ICIP 2022), at CPU size.

- :class:`N3D`: a ResNet-18-layout backbone of ``width`` (64 in ResNet-18; 32 in ``small``) built from
  torchvision's ``BasicBlock``, from scratch. Its first three stages feed a BiSeNet-style light
  segmentation head (attention refinement on stage 3 + global context, fused with stage 2, one logit per
  pixel: the mask). A gated convolution (Yu et al., ICCV 2019) of stage 3 and the predicted mask feeds the
  fourth stage and a regression head for the SFM coefficient row (:class:`.sfm.CoeffLayout`); the head
  predicts coefficients normalised by the training fits' mean and standard deviation, kept as buffers
  (so the exported weights carry them).
- :class:`Generator` ``N_G``: a residual encoder-decoder on 7 channels (hole-noised masked image, mask,
  ``I_3D``): ``downs`` stride-2 stages doubling the width, ``blocks`` residual blocks at the bottom,
  nearest-neighbour upsampling back, tanh output. ``small``: width 16, 3 stages, 6 blocks at 16 x 16
  (2.0 M parameters, ~0.9 GMAC per 128 px face; two stages of 32-64-128 with 4 blocks at 32 x 32 cost 2.5x more).
- :class:`Discriminator` ``N_D``: StarGAN-v2's (Choi et al., CVPR 2020) pre-activation residual
  discriminator with one output (one domain), ``width`` channels at the input doubling to ``max_width``.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models.resnet import BasicBlock

__all__ = ["N3D", "Generator", "Discriminator"]


def _stage(cin: int, cout: int, stride: int) -> nn.Sequential:
    down = None
    if stride != 1 or cin != cout:
        down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
    return nn.Sequential(BasicBlock(cin, cout, stride, down), BasicBlock(cout, cout))


def _cbr(cin: int, cout: int, k: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, 1, k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class _ARM(nn.Module):
    """BiSeNet's attention refinement module: conv, then channel attention from global pooling."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = _cbr(cin, cout)
        self.att = nn.Sequential(nn.Conv2d(cout, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.Sigmoid())

    def forward(self, x):
        f = self.conv(x)
        return f * self.att(F.adaptive_avg_pool2d(f, 1))


class _SegHead(nn.Module):
    """Context (stage 3 + global) refined, upsampled and fused with stage 2 (BiSeNet's FFM), one logit."""

    def __init__(self, c2: int, c3: int, mid: int):
        super().__init__()
        self.arm = _ARM(c3, mid)
        self.gc = _cbr(c3, mid, 1)
        self.fuse = _cbr(c2 + mid, mid, 1)
        self.fatt = nn.Sequential(nn.Conv2d(mid, mid // 4, 1), nn.ReLU(inplace=True), nn.Conv2d(mid // 4, mid, 1),
                                  nn.Sigmoid())
        self.out = nn.Sequential(_cbr(mid, mid), nn.Conv2d(mid, 1, 1))

    def forward(self, f2, f3):
        ctx = self.arm(f3) + self.gc(F.adaptive_avg_pool2d(f3, 1))
        ctx = F.interpolate(ctx, size=f2.shape[-2:], mode="nearest")
        f = self.fuse(torch.cat([f2, ctx], 1))
        f = f + f * self.fatt(F.adaptive_avg_pool2d(f, 1))
        return self.out(f)


class _GatedConv(nn.Module):
    """``ELU(conv_f(x)) * sigmoid(conv_g(x))`` (gated convolution)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, 2 * cout, 3, 1, 1)

    def forward(self, x):
        f, g = self.conv(x).chunk(2, 1)
        return F.elu(f) * torch.sigmoid(g)


class N3D(nn.Module):
    """Mask segmentation and SFM coefficient regression from a masked face.

    Args:
        num_coeffs: length of a coefficient row.
        width: channels of the first stage (stages: w, 2w, 4w, 8w).

    ``forward(x)``: ``x (N, 3, S, S)`` in [-1, 1] -> ``(mask_logits (N, 1, S, S), coeffs (N, num_coeffs))``
    (coefficients de-normalised).
    """

    def __init__(self, num_coeffs: int, width: int = 32):
        super().__init__()
        w = width
        self.stem = nn.Sequential(nn.Conv2d(3, w, 7, 2, 3, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                                  nn.MaxPool2d(3, 2, 1))
        self.layer1 = _stage(w, w, 1)
        self.layer2 = _stage(w, 2 * w, 2)
        self.layer3 = _stage(2 * w, 4 * w, 2)
        self.seg = _SegHead(2 * w, 4 * w, 2 * w)
        self.gate = _GatedConv(4 * w + 1, 4 * w)
        self.layer4 = _stage(4 * w, 8 * w, 2)
        self.head = nn.Sequential(nn.Linear(8 * w, 256), nn.ReLU(inplace=True), nn.Linear(256, num_coeffs))
        nn.init.normal_(self.head[-1].weight, std=1e-3)  # starts near the mean fit
        nn.init.zeros_(self.head[-1].bias)
        self.register_buffer("coeff_mean", torch.zeros(num_coeffs))
        self.register_buffer("coeff_std", torch.ones(num_coeffs))

    def set_normalisation(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Coefficient statistics of the training fits (the head predicts ``(c - mean) / std``)."""
        self.coeff_mean.copy_(mean)
        self.coeff_std.copy_(std.clamp_min(1e-3))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f1 = self.layer1(self.stem(x))
        f2 = self.layer2(f1)
        f3 = self.layer3(f2)
        logits_small = self.seg(f2, f3)
        logits = F.interpolate(logits_small, size=x.shape[-2:], mode="bilinear", align_corners=False)
        m3 = F.interpolate(torch.sigmoid(logits_small.detach()), size=f3.shape[-2:], mode="bilinear",
                           align_corners=False)
        f4 = self.layer4(self.gate(torch.cat([f3, m3], 1)))
        z = self.head(F.adaptive_avg_pool2d(f4, 1).flatten(1))
        return logits, self.coeff_mean + self.coeff_std * z


class _ResBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c, c, 3, 1, 1), nn.InstanceNorm2d(c, affine=True), nn.ReLU(inplace=True),
                                  nn.Conv2d(c, c, 3, 1, 1), nn.InstanceNorm2d(c, affine=True))

    def forward(self, x):
        return x + self.body(x)


class Generator(nn.Module):
    """``N_G``: ``(N, 7, S, S)`` -> ``(N, 3, S, S)`` in [-1, 1] (module docstring).

    Args:
        width: channels at full resolution; each of the ``downs`` stride-2 stages doubles them.
        blocks: residual blocks at ``1 / 2**downs`` resolution.
        downs: stride-2 stages (and as many nearest-neighbour upsampling stages back).
    """

    def __init__(self, width: int = 16, blocks: int = 6, downs: int = 3, in_channels: int = 7):
        super().__init__()

        def cin(a, b, k, s):
            return [nn.Conv2d(a, b, k, s, (k - 1) // 2 if s == 1 else 1), nn.InstanceNorm2d(b, affine=True),
                    nn.ReLU(inplace=True)]

        layers = cin(in_channels, width, 7, 1)
        for i in range(downs):
            layers += cin(width * 2 ** i, width * 2 ** (i + 1), 4, 2)
        c = width * 2 ** downs
        layers += [_ResBlock(c) for _ in range(blocks)]
        for i in range(downs, 0, -1):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), *cin(width * 2 ** i, width * 2 ** (i - 1), 3, 1)]
        layers += [nn.Conv2d(width, 3, 7, 1, 3), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class _DBlock(nn.Module):
    """StarGAN-v2 ``ResBlk``: pre-activation, average-pool downsampling, learned shortcut, scaled by 1/sqrt 2."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cin, 3, 1, 1)
        self.c2 = nn.Conv2d(cin, cout, 3, 1, 1)
        self.sc = nn.Conv2d(cin, cout, 1, 1, 0, bias=False) if cin != cout else None

    def forward(self, x):
        s = self.sc(x) if self.sc is not None else x
        s = F.avg_pool2d(s, 2)
        r = self.c1(F.leaky_relu(x, 0.2))
        r = F.avg_pool2d(r, 2)
        r = self.c2(F.leaky_relu(r, 0.2))
        return (s + r) / math.sqrt(2)


class Discriminator(nn.Module):
    """``N_D``: ``(N, 3, S, S)`` -> ``(N,)`` logits (StarGAN-v2 layout, one domain).

    Args:
        size: input side (a power of two >= 8): ``log2(size) - 2`` blocks bring it to 4 x 4.
        width, max_width: channels of the first block, and the cap as they double.
    """

    def __init__(self, size: int, width: int = 32, max_width: int = 256):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, width, 3, 1, 1)]
        c = width
        for _ in range(int(math.log2(size)) - 2):
            c2 = min(c * 2, max_width)
            layers.append(_DBlock(c, c2))
            c = c2
        layers += [nn.LeakyReLU(0.2), nn.Conv2d(c, c, 4, 1, 0), nn.LeakyReLU(0.2), nn.Conv2d(c, 1, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).mean((1, 2, 3))
