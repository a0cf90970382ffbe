"""M-CSAM region-attentive inpainting network (Yang et al., "Face Image Inpainting with Region-attentive
Multi-scale Channel-Spatial Attention", arXiv 2409.06845, 2024).

Read from the paper and the authors' public code (LexieYang/Face_Img_Inpainting, ``Model/networks.py``):

- :class:`RegionAttentiveGenerator`: a gated-convolution U-Net. Input: the masked face in [-1, 1] and the
  hole mask (1 = hole), 4 channels. Four stride-2 gated convolutions (``w, 2w, 4w, 8w`` channels; paper
  width ``w = 64``: 64 -> 512), three cascaded :class:`MCSAMBlock` at the bottleneck (H/16), four
  upsample + gated-convolution decoder stages with skip connections. At ``w = 64`` it has 44.7 M
  parameters, as the public code.
- :class:`MCSAMBlock`: four parallel branches with dilation 1, 2, 4, 8 (each a C -> C dilated conv and a
  C -> C/4 conv, instance norm), concatenated back to C channels; :class:`ChannelSpatialAttention`
  (a 3-D convolution 1 -> 1 channel, kernel 3, over (channel, height, width), sigmoid) gives a joint map
  ``a``; out = ``x + gamma * (x * a)`` with ``gamma`` a learnable scalar starting at 0; a residual around
  the block.

Deviations, each deliberate:

- The public code's last layer is a gated conv with LeakyReLU and batch norm, so its output is unbounded;
  here the last layer is a plain gated conv followed by ``tanh`` (output in [-1, 1]).
- The public code pads with ``ReflectionPad2d(dilation)``, which fails when the bottleneck is smaller than
  the dilation + 1 (an 8 x 8 bottleneck at 128 px input with dilation 8). Here the branch convolutions
  use zero padding (``padding=dilation``), which works at every size.
- ``single_scale=True`` (the paper's single-scale ablation) uses dilation 1 in all four branches.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["GatedConv", "ChannelSpatialAttention", "MCSAMBlock", "RegionAttentiveGenerator", "PatchDiscriminator",
           "FeatureDiscriminator"]


class GatedConv(nn.Module):
    """Gated convolution (Yu et al., "Free-Form Image Inpainting with Gated Convolution", ICCV 2019):
    ``act(conv_f(x)) * sigmoid(conv_g(x))``, then batch norm (as the public code).

    Args:
        c_in, c_out: channels.
        stride: 1 or 2.
        act: apply LeakyReLU(0.2) to the feature branch.
        norm: apply batch norm to the output.
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 1, act: bool = True, norm: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, stride, 1)
        self.gate = nn.Conv2d(c_in, c_out, 3, stride, 1)
        self.act = nn.LeakyReLU(0.2) if act else nn.Identity()
        self.norm = nn.BatchNorm2d(c_out) if norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.act(self.conv(x)) * torch.sigmoid(self.gate(x)))


class ChannelSpatialAttention(nn.Module):
    """Joint channel-spatial attention: a 3-D conv (1 -> 1 channel, kernel 3) over ``(C, H, W)``, sigmoid.

    ``forward(x)``: ``(N, C, H, W)`` -> ``x + gamma * (x * a)``, same shape; ``gamma`` starts at 0.
    Conv3d does not support channels_last, so the input is made contiguous first.
    """

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(1, 1, 3, 1, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.sigmoid(self.conv(x.contiguous().unsqueeze(1))).squeeze(1)
        return x + self.gamma * (x * a)


class _Branch(nn.Sequential):
    def __init__(self, c: int, dilation: int):
        super().__init__(
            nn.Conv2d(c, c, 3, 1, dilation, dilation=dilation, bias=False),
            nn.InstanceNorm2d(c),
            nn.ReLU(),
            nn.Conv2d(c, c // 4, 3, 1, 1, bias=False),
            nn.InstanceNorm2d(c // 4),
        )


class MCSAMBlock(nn.Module):
    """Multi-scale channel-spatial attention block (M-CSAM).

    Args:
        c: channels (divisible by 4).
        single_scale: all four branches at dilation 1 (the paper's single-scale ablation).

    ``forward(x)``: ``(N, C, H, W)`` -> same shape.
    """

    DILATIONS = (1, 2, 4, 8)

    def __init__(self, c: int, single_scale: bool = False):
        super().__init__()
        if c % 4:
            raise ValueError(f"M-CSAM channels must be divisible by 4, got {c}")
        dil = (1, 1, 1, 1) if single_scale else self.DILATIONS
        self.branches = nn.ModuleList(_Branch(c, d) for d in dil)
        self.attention = ChannelSpatialAttention()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([b(x) for b in self.branches], dim=1)
        return x + self.attention(y)


class RegionAttentiveGenerator(nn.Module):
    """The gated U-Net with three M-CSAM blocks.

    Args:
        width: base channels ``w`` (paper: 64; 44.7 M parameters).
        single_scale: see :class:`MCSAMBlock`.

    ``forward(x)``: ``(N, 4, H, W)`` float (masked RGB in [-1, 1], mask in {0, 1}), ``H, W`` divisible by 16
    -> ``(N, 3, H, W)`` in [-1, 1].
    """

    def __init__(self, width: int = 64, single_scale: bool = False):
        super().__init__()
        f = [width, width * 2, width * 4, width * 8]
        self.enc = nn.ModuleList([GatedConv(4, f[0], 2), GatedConv(f[0], f[1], 2), GatedConv(f[1], f[2], 2),
                                  GatedConv(f[2], f[3], 2)])
        self.mid = nn.Sequential(*(MCSAMBlock(f[3], single_scale) for _ in range(3)))
        self.dec = nn.ModuleList([GatedConv(f[3] * 2, f[2]), GatedConv(f[2] * 2, f[1]), GatedConv(f[1] * 2, f[0]),
                                  GatedConv(f[0] * 2, 3, act=False, norm=False)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for layer in self.enc:
            x = layer(x)
            skips.append(x)
        y = self.mid(x)
        for layer, skip in zip(self.dec, reversed(skips)):
            y = layer(F.interpolate(torch.cat([y, skip], 1), scale_factor=2.0, mode="nearest"))
        return torch.tanh(y)


class PatchDiscriminator(nn.Module):
    """Spectral-norm PatchGAN on images (Isola et al. 2017; three stride-2 convolutions, then a 1-channel map).

    ``forward(x)``: ``(N, 3, H, W)`` in [-1, 1] -> ``(N, 1, H/8 - 1, W/8 - 1)`` logits.
    """

    def __init__(self, width: int = 64, c_in: int = 3):
        super().__init__()
        sn = nn.utils.spectral_norm
        self.net = nn.Sequential(
            sn(nn.Conv2d(c_in, width, 4, 2, 1)), nn.LeakyReLU(0.2),
            sn(nn.Conv2d(width, width * 2, 4, 2, 1)), nn.LeakyReLU(0.2),
            sn(nn.Conv2d(width * 2, width * 4, 4, 2, 1)), nn.LeakyReLU(0.2),
            sn(nn.Conv2d(width * 4, 1, 4, 1, 1)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class FeatureDiscriminator(nn.Module):
    """Discriminator on deep features of the composite (the paper's VGG16 relu3_3 discriminator):
    three stride-2 convolutions with spectral norm.

    ``forward(f)``: ``(N, C, h, w)`` features -> ``(N, 1, h/8, w/8)`` logits (at least 1 x 1).
    """

    def __init__(self, c_in: int, width: int = 128):
        super().__init__()
        sn = nn.utils.spectral_norm
        self.net = nn.Sequential(
            sn(nn.Conv2d(c_in, width, 4, 2, 1)), nn.LeakyReLU(0.2),
            sn(nn.Conv2d(width, width, 4, 2, 1)), nn.LeakyReLU(0.2),
            sn(nn.Conv2d(width, 1, 3, 1, 1)),
        )

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.net(f)
