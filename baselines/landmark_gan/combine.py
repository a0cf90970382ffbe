"""``python -m maskbench.baselines.landmark_gan.combine SEGMENTER LANDMARKS GENERATOR OUT``: join the three stages'
``weights.safetensors`` into OUT (:meth:`maskbench.methods.learned.LearnedPredictor.combine`); GENERATOR may be
``male=PATH,female=PATH`` (gender routing). Then ``--method-arg weights=OUT``, or copy OUT over
``baselines/landmark_gan/weights.safetensors`` to make it the committed default."""

from __future__ import annotations

from maskbench.methods.learned import combine_command

from .predictor import LandmarkGan

if __name__ == "__main__":
    raise SystemExit(combine_command(LandmarkGan, "python -m maskbench.baselines.landmark_gan.combine"))
