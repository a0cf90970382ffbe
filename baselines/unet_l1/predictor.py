"""``unet-l1`` behind the Predictor contract (given-mask track)."""

from __future__ import annotations

from maskbench.methods.learned import LearnedPredictor

__all__ = ["UNetL1"]


class UNetL1(LearnedPredictor):
    """A plain U-Net trained on the composite's L1 loss alone: the control for the learned methods."""

    name = "unet-l1"
    description = "plain U-Net on the composite's L1 loss (learned control, trained here)"
    trainer = "maskbench.baselines.unet_l1.training:UNetL1Training"
