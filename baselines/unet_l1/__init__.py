"""``unet-l1``: the plain learned control (a U-Net on the composite's L1 loss), given-mask track."""
