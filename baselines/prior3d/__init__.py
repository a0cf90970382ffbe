"""``3dprior``: blind face-mask removal with a 3D face prior (Yin & Chen, ICIP 2022), CPU-sized (see training.py)."""
