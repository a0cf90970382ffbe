"""The three networks of ``landmark-gan`` (Modak, Das, Miraj & Morol, "A Deep Learning Framework to
Reconstruct Face under Mask", 2022): a Mask R-CNN mask segmenter, a landmark regressor and a
landmark-guided inpainting generator (LaFIn, Yang, Qi & Shi, PRCV 2020, which the authors' generator forks).

Read from the papers and LaFIn's public code (YaN9-Y/lafin, ``src/networks.py``, ``src/models.py``):

- :func:`mask_rcnn`: torchvision's :class:`~torchvision.models.detection.MaskRCNN` with two classes
  (background, face mask), no pretrained weights. The paper's ResNet-50-FPN cannot be trained from scratch
  on two CPU cores; here a MobileNetV3-Large trunk (torchvision's, ``weights=None``) under an FPN of
  ``fpn_channels`` channels on its stride 4, 8, 16 and 32 outputs, one anchor size per level (32 to 192 px
  at 160 px input, aspect ratios 0.5, 0.75 and 1: masks are wider than tall), an RPN positive at IoU >= 0.5
  (torchvision: 0.7; with the default anchors no anchor reached 0.7 on a mask's box, and after 2,000
  images the RPN proposed only boxes in the image corners), smaller RoI samples, and a mask head on 28 x 28 RoI features predicting 56 x 56 masks (torchvision's default: 14
  -> 28) so the mask edge is finer. ``min_size`` is the side images are resized to.
- :class:`LandmarkRegressor`: MobileNetV2 (torchvision's, ``weights=None``, width ``width_mult``) with 136
  outputs: the 68 iBUG landmarks, ``(x, y)`` in units of the image side. LaFIn's regressor is a MobileNetV2
  with a multi-scale head; torchvision's pooled head is used here.
- :class:`LandmarkGenerator`: LaFIn's inpainting generator. Input: the masked image with the hole set to
  white (1 in [-1, 1]) and a one-channel landmark map (:func:`landmark_map`, one pixel per landmark);
  encoder 7 x 7 then two stride-2 4 x 4 convolutions (``w, 2w, 4w`` channels; LaFIn ``w = 64``), ``blocks``
  residual blocks with dilation 2 (LaFIn: 7), an attention layer (:class:`AutoAttention`), two transposed
  convolutions, each fused (1 x 1 conv) with the encoder feature of its size *outside the hole*, a 7 x 7
  output convolution, ``tanh``. Instance norm throughout, as LaFIn.
- :class:`Discriminator`: LaFIn's (EdgeConnect's) spectral-norm PatchGAN on the image and the landmark map
  (4 channels), with the attention layer after its second convolution.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["mask_rcnn", "LandmarkRegressor", "LandmarkGenerator", "Discriminator", "AutoAttention",
           "landmark_map", "NUM_LANDMARKS"]

NUM_LANDMARKS = 68


def landmark_map(points: torch.Tensor, size: int) -> torch.Tensor:
    """One pixel per landmark: ``(N, 68, 2)`` pixel coordinates at ``size`` -> ``(N, 1, size, size)``
    float32 in {0, 1} (LaFIn's landmark input; points outside the image are clamped onto its border)."""
    n = points.shape[0]
    xy = points.round().long().clamp(0, size - 1)
    flat = xy[..., 1] * size + xy[..., 0]
    out = torch.zeros(n, size * size, device=points.device)
    out.scatter_(1, flat, 1.0)
    return out.view(n, 1, size, size)


def mask_rcnn(min_size: int = 160, fpn_channels: int = 64, mask_resolution: int = 28,
              backbone: str = "mobilenet_v3_large"):
    """Mask R-CNN (He et al., ICCV 2017) with one object class, from scratch on a MobileNetV3-Large FPN.

    Args:
        min_size: images are resized so their side is this (also the maximum).
        fpn_channels: channels of the FPN levels and of the RoI heads' convolutions (torchvision: 256).
        mask_resolution: side of the RoI features of the mask head; masks are predicted at twice it.
        backbone: ``"mobilenet_v3_large"`` (the layout above) or ``"resnet50"``: the paper's network,
            torchvision's ``maskrcnn_resnet50_fpn`` untouched but for two classes and ``min_size`` (for a GPU;
            ``fpn_channels`` and ``mask_resolution`` are then its defaults, 256 and 14).

    Raises:
        ValueError: an unknown backbone.

    Returns:
        an untrained :class:`torchvision.models.detection.MaskRCNN`; in eval mode it takes a list of
        ``(3, H, W)`` float tensors in [0, 1] and returns per image ``boxes``, ``scores``, ``masks``
        ``(K, 1, H, W)`` probabilities.
    """
    import torchvision
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
    from torchvision.ops import MultiScaleRoIAlign
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

    if backbone == "resnet50":
        from torchvision.models.detection import maskrcnn_resnet50_fpn

        return maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=2, min_size=min_size,
                                     max_size=min_size)
    if backbone != "mobilenet_v3_large":
        raise ValueError(f"mask_rcnn: backbone must be mobilenet_v3_large or resnet50, got {backbone!r}")
    trunk = torchvision.models.mobilenet_v3_large(weights=None).features
    # the first block of each stride: 4, 8, 16, 32 (torchvision marks them ``_is_cn``)
    starts = [i for i, b in enumerate(trunk) if getattr(b, "_is_cn", False)]
    ends = [s - 1 for s in starts[1:]] + [len(trunk) - 2]  # the last block of each stride
    names = {str(e): str(k) for k, e in enumerate(ends)}
    channels = [trunk[e].out_channels for e in ends]
    backbone = BackboneWithFPN(trunk, names, channels, fpn_channels, extra_blocks=LastLevelMaxPool())
    levels = ["0", "1", "2", "3"]
    # one size per level (strides 4 to 64), sized for masks that span half to most of the face
    scale = min_size / 160
    anchors = AnchorGenerator(sizes=tuple((round(s * scale),) for s in (32, 64, 96, 128, 192)),
                              aspect_ratios=((0.5, 0.75, 1.0),) * 5)
    rep = 256
    return MaskRCNN(
        backbone, num_classes=None, min_size=min_size, max_size=min_size,
        image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5],
        rpn_anchor_generator=anchors, rpn_fg_iou_thresh=0.5, rpn_bg_iou_thresh=0.3,
        rpn_pre_nms_top_n_train=300, rpn_post_nms_top_n_train=100,
        rpn_pre_nms_top_n_test=100, rpn_post_nms_top_n_test=20, rpn_batch_size_per_image=64,
        box_roi_pool=MultiScaleRoIAlign(levels, 7, 2),
        box_head=TwoMLPHead(fpn_channels * 49, rep), box_predictor=FastRCNNPredictor(rep, 2),
        box_batch_size_per_image=32, box_detections_per_img=3,
        mask_roi_pool=MultiScaleRoIAlign(levels, mask_resolution, 2),
        mask_head=MaskRCNNHeads(fpn_channels, [fpn_channels] * 4, 1),
        mask_predictor=MaskRCNNPredictor(fpn_channels, fpn_channels, 2),
    )


class LandmarkRegressor(nn.Module):
    """MobileNetV2 regressing the 68 iBUG landmarks.

    ``forward(x)``: ``(N, 3, S, S)`` in [-1, 1] -> ``(N, 68, 2)`` in units of the image side (0 = left/top
    edge, 1 = right/bottom edge; multiply by ``S`` for pixels).

    With ``gender=True`` one more output, a logit of "male" (the paper's gender classifier, for routing
    between two generators), and ``forward`` returns ``(landmarks, logit (N,))``.

    Args:
        width_mult: MobileNetV2 width multiplier (LaFIn: 1.0).
        gender: add the gender logit.
    """

    def __init__(self, width_mult: float = 0.5, gender: bool = False):
        super().__init__()
        import torchvision

        self.gender = bool(gender)
        outputs = 2 * NUM_LANDMARKS + int(self.gender)
        self.net = torchvision.models.mobilenet_v2(weights=None, num_classes=outputs, width_mult=width_mult)
        # start at the image centre, so the first steps do not chase a random offset
        nn.init.zeros_(self.net.classifier[-1].weight)
        nn.init.constant_(self.net.classifier[-1].bias, 0.5)

    def forward(self, x: torch.Tensor):
        y = self.net(x)
        pts = y[:, : 2 * NUM_LANDMARKS].reshape(-1, NUM_LANDMARKS, 2)
        return (pts, y[:, -1]) if self.gender else pts


def _sn(m: nn.Module) -> nn.Module:
    return nn.utils.spectral_norm(m)


class _Residual(nn.Module):
    """LaFIn's residual block: reflection pad, 3 x 3 conv (dilation ``d``), IN, ReLU, 3 x 3 conv, IN."""

    def __init__(self, c: int, d: int = 2):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(d), nn.Conv2d(c, c, 3, dilation=d), nn.InstanceNorm2d(c), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(c, c, 3), nn.InstanceNorm2d(c))

    def forward(self, x):
        return x + self.body(x)


class AutoAttention(nn.Module):
    """Short+long-term attention (Zheng, Cham & Cai, "Pluralistic Image Completion", CVPR 2019), as LaFIn
    uses it: self-attention over positions of ``x`` (``out = x + gamma * attend(x)``); with encoder
    features ``pre`` and the hole at this size, ``pre``'s values are also attended (the long-term
    context), kept outside the hole as they are, and fused with ``out`` by a residual block.

    ``forward(x, pre=None, hole=None)``: ``(N, C, H, W)`` -> ``(N, C, H, W)``; ``gamma``, ``alpha`` start at 0.
    ``context=False`` builds the self-attention alone (the discriminator's use: no encoder features).
    """

    def __init__(self, c: int, context: bool = True):
        super().__init__()
        self.query = nn.Conv2d(c, max(c // 4, 1), 1)
        self.gamma = nn.Parameter(torch.zeros(1))
        if context:
            self.alpha = nn.Parameter(torch.zeros(1))
            self.fuse = nn.Sequential(nn.Conv2d(2 * c, c, 3, padding=1), nn.LeakyReLU(0.2),
                                      nn.Conv2d(c, c, 3, padding=1))
            self.skip = nn.Conv2d(2 * c, c, 1)
        self.context = context

    def forward(self, x, pre=None, hole=None):
        n, c, h, w = x.shape
        q = self.query(x).flatten(2)  # (N, C/4, HW)
        attn = torch.softmax(q.transpose(1, 2) @ q, dim=-1)  # (N, HW, HW)
        out = self.gamma * (x.flatten(2) @ attn.transpose(1, 2)).view(n, c, h, w) + x
        if pre is None:
            return out
        if not self.context:
            raise ValueError("AutoAttention(context=False) takes no encoder features")
        ctx = (pre.flatten(2) @ attn.transpose(1, 2)).view(n, -1, h, w)
        ctx = self.alpha * (1 - hole) * ctx + hole * pre
        both = torch.cat([out, ctx], 1)
        return self.fuse(both) + self.skip(both)


class LandmarkGenerator(nn.Module):
    """LaFIn's landmark-guided inpainting generator (module docstring).

    ``forward(masked, landmarks, hole)``: ``masked (N, 3, S, S)`` in [-1, 1], ``landmarks (N, 1, S, S)``
    (:func:`landmark_map`), ``hole (N, 1, S, S)`` in {0, 1} -> ``(N, 3, S, S)`` in [-1, 1]. ``S`` must be a
    multiple of 4.

    Args:
        width: channels of the first layer (LaFIn: 64).
        blocks: dilated residual blocks (LaFIn: 7).
    """

    def __init__(self, width: int = 32, blocks: int = 7):
        super().__init__()
        w = width
        self.enc1 = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(4, w, 7), nn.InstanceNorm2d(w), nn.ReLU(True))
        self.enc2 = nn.Sequential(nn.Conv2d(w, 2 * w, 4, 2, 1), nn.InstanceNorm2d(2 * w), nn.ReLU(True))
        self.enc3 = nn.Sequential(nn.Conv2d(2 * w, 4 * w, 4, 2, 1), nn.InstanceNorm2d(4 * w), nn.ReLU(True))
        self.middle = nn.Sequential(*[_Residual(4 * w, 2) for _ in range(blocks)])
        self.attention = AutoAttention(4 * w)
        self.dec1 = nn.Sequential(nn.ConvTranspose2d(4 * w, 2 * w, 4, 2, 1), nn.InstanceNorm2d(2 * w), nn.ReLU(True))
        self.fuse1 = nn.Sequential(nn.Conv2d(4 * w, 4 * w, 1), nn.InstanceNorm2d(4 * w), nn.ReLU(True))
        self.dec2 = nn.Sequential(nn.ConvTranspose2d(4 * w, w, 4, 2, 1), nn.InstanceNorm2d(w), nn.ReLU(True))
        self.fuse2 = nn.Sequential(nn.Conv2d(2 * w, 2 * w, 1), nn.InstanceNorm2d(2 * w), nn.ReLU(True))
        self.out = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(2 * w, 3, 7))
        for m in self.modules():  # LaFIn's init: N(0, 0.02)
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.normal_(m.weight, 0.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, masked: torch.Tensor, landmarks: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        x = masked * (1 - hole) + hole  # the hole is white, as LaFIn
        half = F.interpolate(hole, scale_factor=0.5, mode="bilinear", align_corners=False)
        quarter = F.interpolate(hole, scale_factor=0.25, mode="bilinear", align_corners=False)
        e1 = self.enc1(torch.cat([x, landmarks], 1))
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        y = self.attention(self.middle(e3), e3, quarter)
        y = self.fuse1(torch.cat([e2 * (1 - half), self.dec1(y)], 1))
        y = self.fuse2(torch.cat([e1 * (1 - hole), self.dec2(y)], 1))
        return torch.tanh(self.out(y))


class Discriminator(nn.Module):
    """Spectral-norm PatchGAN on ``(N, 4, S, S)`` (image in [-1, 1] + landmark map) -> patch logits
    ``(N, 1, S/8 - 2, S/8 - 2)``; attention after the second convolution (LaFIn).

    Args:
        width: channels of the first convolution (LaFIn: 64), doubling to ``8 * width``.
    """

    def __init__(self, width: int = 32):
        super().__init__()
        w = width
        act = nn.LeakyReLU(0.2, True)
        self.head = nn.Sequential(_sn(nn.Conv2d(4, w, 4, 2, 1)), act, _sn(nn.Conv2d(w, 2 * w, 4, 2, 1)), act)
        self.attention = AutoAttention(2 * w, context=False)
        self.tail = nn.Sequential(_sn(nn.Conv2d(2 * w, 4 * w, 4, 2, 1)), act, _sn(nn.Conv2d(4 * w, 8 * w, 4, 1, 1)), act,
                                  _sn(nn.Conv2d(8 * w, 1, 4, 1, 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tail(self.attention(self.head(x)))
