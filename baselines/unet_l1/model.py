"""The plain learned control ``unet-l1``: a U-Net trained on the L1 loss of the composite alone.

It has none of the region-attentive machinery (no gated convolutions, no attention, no adversarial,
perceptual or style losses), so the difference between the two measures what that machinery adds.

Architecture: a 3 x 3 stem of width ``w / 2`` at full resolution, then four levels of widths ``w, 2w, 4w, 8w``
(default 32-64-128-256; 3.5 M parameters), each a stride-2 convolution and a 3 x 3 convolution with GroupNorm(8) and SiLU; a
bottleneck of dilated residual convolutions (dilation 2, 4, 8) to widen the receptive field over a large
hole; nearest upsampling, skip concatenation and one convolution per level on the way up.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["UNet"]


def _conv(c_in: int, c_out: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, dilation, dilation=dilation),
                         nn.GroupNorm(math.gcd(8, c_out), c_out), nn.SiLU())


class _Dilated(nn.Module):
    def __init__(self, c: int, dilation: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c, c, 3, 1, dilation, dilation=dilation), nn.GroupNorm(math.gcd(8, c), c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(x + self.body(x))


class UNet(nn.Module):
    """``forward(x)``: ``(N, 4, H, W)`` (masked RGB in [-1, 1], mask in {0, 1}; ``H, W`` divisible by 16)
    -> ``(N, 3, H, W)`` in [-1, 1].

    Args:
        width: base channels ``w``.
        dilations: dilation of each bottleneck residual block.
    """

    def __init__(self, width: int = 32, dilations: tuple[int, ...] = (2, 4, 8)):
        super().__init__()
        f = [width // 2, width, width * 2, width * 4, width * 8]
        self.stem = _conv(4, f[0])
        self.down = nn.ModuleList(nn.Sequential(_conv(f[i], f[i + 1], stride=2), _conv(f[i + 1], f[i + 1]))
                                  for i in range(4))
        self.mid = nn.Sequential(*(_Dilated(f[4], d) for d in dilations))
        self.up = nn.ModuleList(_conv(f[i + 1] + f[i], f[i]) for i in reversed(range(4)))
        self.head = nn.Conv2d(f[0], 3, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.stem(x)]
        for d in self.down:
            skips.append(d(skips[-1]))
        y = self.mid(skips.pop())
        for u in self.up:
            y = u(torch.cat([F.interpolate(y, scale_factor=2.0, mode="nearest"), skips.pop()], 1))
        return torch.tanh(self.head(y))
