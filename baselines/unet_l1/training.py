"""How ``unet-l1`` is trained: the L1 distance of the composite to the ground truth, nothing else."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from maskbench.train.data import Batch
from maskbench.train.loop import Optimizers, Trainable

from .model import UNet

__all__ = ["UNetL1Training"]


class UNetL1Training(Trainable):
    """Network: ``generator`` (:class:`UNet`); loss: L1 of the composite."""

    method = "unet-l1"
    defaults: dict[str, Any] = {"model": {"width": 32, "dilations": [2, 4, 8]}}

    @classmethod
    def build(cls, config: dict[str, Any]) -> dict[str, nn.Module]:
        m = config["model"]
        return {"generator": UNet(m["width"], tuple(m["dilations"]))}

    @classmethod
    def inpaint(cls, nets, masked, hole, generator=None):
        return nets["generator"](torch.cat([masked * (1 - hole), hole], dim=1))

    def training_step(self, batch: Batch, opt: Optimizers) -> dict[str, float]:
        pred = self.inpaint(self.nets, batch.masked, batch.hole)
        comp = batch.hole * pred + (1 - batch.hole) * batch.original
        loss = F.l1_loss(comp, batch.original)
        opt.update("generator", loss)
        return {"l1": loss.item()}
