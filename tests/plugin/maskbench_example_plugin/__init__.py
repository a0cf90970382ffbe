"""A minimal third-party maskbench method, registered only through the ``maskbench.methods`` entry
point declared in ``../maskbench_example_plugin-0.1.0.dist-info/entry_points.txt`` (as ``pip install``
would write it). Used by tests/test_predictors.py and tests/test_evaluate.py."""

from __future__ import annotations

import numpy as np

from maskbench.methods.predictors import Predictor, PredictorOutput


class MeanFill(Predictor):
    """Fill the hole with the mean colour of the visible pixels; works at 128 px."""

    track = "given-mask"
    input_size = 128
    description = "example plug-in: fills the hole with the mean visible colour"

    def predict(self, images: np.ndarray, masks: np.ndarray | None) -> PredictorOutput:
        """``(N, 128, 128, 3) uint8`` images, ``(N, 128, 128) bool`` masks -> filled images."""
        out = images.copy()
        for im, m in zip(out, masks):
            if m.any() and (~m).any():
                im[m] = im[~m].mean(axis=0).round().astype(np.uint8)
        return PredictorOutput(out)
