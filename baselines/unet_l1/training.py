"""How ``unet-l1`` is trained: the L1 distance of the composite to the ground truth, nothing else."""

from __future__ import annotations

from typing import Any

import torch.nn as nn
import torch.nn.functional as F

from maskbench.train.config import Check
from maskbench.train.data import Batch
from maskbench.train.loop import Optimizers, Trainable

from .model import UNet

__all__ = ["UNetL1Training"]


class UNetL1Training(Trainable):
    """Network: ``generator`` (:class:`UNet`, on the default 4-channel input of :meth:`Trainable.inpaint`);
    loss: L1 of the composite. Config keys: ``configs/defaults.yaml``."""

    checks = {"model.width": Check(min=2), "model.dilations": Check(min=1)}

    @classmethod
    def build(cls, config: dict[str, Any]) -> dict[str, nn.Module]:
        m = config["model"]
        return {"generator": UNet(m["width"], tuple(m["dilations"]))}

    def training_step(self, batch: Batch, opt: Optimizers) -> dict[str, float]:
        pred = self.inpaint(self.nets, batch.masked, batch.hole)
        comp = batch.hole * pred + (1 - batch.hole) * batch.original
        loss = F.l1_loss(comp, batch.original)
        opt.update("generator", loss)
        return {"l1": loss.item()}
