"""``python -m maskbench.baselines.prior3d.combine N3D GENERATOR OUT``: join the two stages' ``weights.safetensors``
into OUT (:meth:`maskbench.methods.learned.LearnedPredictor.combine`); then ``--method-arg weights=OUT``, or
copy OUT over ``baselines/prior3d/weights.safetensors`` to make it the committed default."""

from __future__ import annotations

from maskbench.methods.learned import combine_command

from .predictor import Prior3D

if __name__ == "__main__":
    raise SystemExit(combine_command(Prior3D, "python -m maskbench.baselines.prior3d.combine"))
