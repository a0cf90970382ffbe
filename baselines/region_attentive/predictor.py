"""``region-attentive`` behind the Predictor contract (given-mask track)."""

from __future__ import annotations

from maskbench.methods.learned import LearnedPredictor

__all__ = ["RegionAttentive"]


class RegionAttentive(LearnedPredictor):
    """M-CSAM GAN inpainting (Yang et al., arXiv 2409.06845, 2024), trained here (see ``training.py``)."""

    name = "region-attentive"
    description = "M-CSAM region-attentive GAN, Yang et al. 2024 (trained here)"
    trainer = "maskbench.baselines.region_attentive.training:RegionAttentiveTraining"
