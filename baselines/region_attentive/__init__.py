"""``region-attentive``: M-CSAM GAN inpainting (Yang et al. 2024), given-mask track: model, training,
predictor, configs and committed weights."""
