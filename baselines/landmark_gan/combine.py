"""``python -m maskbench.baselines.landmark_gan.combine SEGMENTER LANDMARKS GENERATOR [OUT]``: join the three
stages' ``weights.safetensors`` into one file (default: the committed location). GENERATOR may be
``male=PATH,female=PATH`` (gender routing)."""

import sys

from .predictor import combine_weights

if __name__ == "__main__":
    if len(sys.argv) not in (4, 5):
        sys.exit(__doc__.strip().splitlines()[0])
    gen = sys.argv[3]
    if "=" in gen:
        gen = dict(item.split("=", 1) for item in gen.split(","))
    print(combine_weights(sys.argv[1], sys.argv[2], gen, sys.argv[4] if len(sys.argv) == 5 else None))
