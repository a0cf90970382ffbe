"""``maskbench demo METHOD IMAGE``: a figure of one face restored several ways.

Row 1: the input, the method's mask (blind methods), then one output per seed. For a method that can
render its prior and edit it (``3dprior``: ``render(images, edit)`` and ``predict(..., edit=)``), row 2
shows its prior and one output per edit of :data:`DEFAULT_EDITS` (seed 0), with the edited prior beneath.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DEFAULT_EDITS", "variation_figure"]

#: (title, edit) pairs shown for methods with expression edits
DEFAULT_EDITS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("neutral", {"expression": {i: 0.0 for i in range(6)}}),
    ("smile", {"smile": 1.0}),
    ("mouth open", {"mouth_open": 1.0}),
    ("sad", {"expression": {"sadness": 1.0}}),
    ("brighter skin", {"brightness": 1.25}),
)


def variation_figure(method: str, image: str | os.PathLike, out: str | os.PathLike, *, seeds: int = 4,
                     device: str = "cpu", method_args: dict[str, Any] | None = None) -> Path:
    """Write the demo figure (module docstring) for ``image`` (an RGB photo of a masked, aligned face).

    Args:
        method: a registered method.
        image: the input file (PNG/JPEG).
        out: the figure (PNG).
        seeds: outputs with seeds ``0 .. seeds-1``.
        device: torch device.
        method_args: options for the method (e.g. ``weights``).

    Returns:
        ``out``.

    Raises:
        maskbench.core.io.ImageDecodeError, OSError: the image cannot be read.
        maskbench.methods.predictors.UnknownMethodError, maskbench.faces.landmarks.ModelNotFoundError: method or weights.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from ..core.io import read_image
    from ..methods.predictors import create_predictor, run_predictor

    img = read_image(image)[None]
    pred = create_predictor(method, device, **(method_args or {}))
    mask = None if pred.track == "blind" else np.zeros(img.shape[:3], bool)
    outs = [run_predictor(pred, img, mask, generator=torch.Generator().manual_seed(s)) for s in range(seeds)]
    row1 = [("input", img[0])]
    if outs[0].masks is not None:
        row1.append(("predicted mask", np.repeat(outs[0].masks[0, ..., None].astype(np.uint8) * 255, 3, -1)))
    row1 += [(f"seed {s}", o.images[0]) for s, o in enumerate(outs)]
    rows = [row1]
    if hasattr(pred, "render"):
        _, prior = pred.render(img)
        edited = [("prior I_3D", prior[0])]
        below = [("", np.zeros_like(prior[0]))]
        for title, edit in DEFAULT_EDITS:
            o = pred.predict(img, None, generator=torch.Generator().manual_seed(0), edit=edit)
            edited.append((title, o.images[0]))
            below.append((f"{title}: prior", pred.render(img, edit)[1][0]))
        rows += [edited, below]
    cols = max(len(r) for r in rows)
    fig, axes = plt.subplots(len(rows), cols, figsize=(2.2 * cols, 2.4 * len(rows)), squeeze=False)
    for r, row in enumerate(rows):
        for c in range(cols):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(row) and row[c][0]:
                ax.imshow(row[c][1])
                ax.set_title(row[c][0], fontsize=9)
    fig.suptitle(f"{method}: {Path(image).name}", fontsize=10)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
