"""``maskbench demo METHOD [IMAGE]``: a figure of one face restored several ways.

Row 1: the input, the method's mask (blind methods), then one output per seed; beneath, how much each
output differs (:data:`DIFF_FULL_SCALE`): seed 0 from the input (zero outside the predicted mask, by
construction of the composite) and every other seed from seed 0. For a method that can render its prior
and edit it (``3dprior``: ``render(images, edit)`` and ``predict(..., edit=)``), the next rows show its
prior and one output per edit of :data:`DEFAULT_EDITS` (seed 0), each edit's difference from seed 0's
output, and the edited prior. A difference panel's title gives the mean absolute difference inside the
predicted mask (0-1 scale). Without IMAGE the face is the built-in demo set's first (scikit-image's
astronaut with a surgical mask, :func:`maskbench.bench.evaluate.demo_data`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DEFAULT_EDITS", "DIFF_FULL_SCALE", "variation_figure"]

#: (title, edit) pairs shown for methods with expression edits
DEFAULT_EDITS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("neutral", {"expression": {i: 0.0 for i in range(6)}}),
    ("smile", {"smile": 1.0}),
    ("mouth open", {"mouth_open": 1.0}),
    ("sad", {"expression": {"sadness": 1.0}}),
    ("brighter skin", {"brightness": 1.25}),
)


#: the absolute difference (0-1 scale, mean over RGB) drawn white in the difference panels (black is 0)
DIFF_FULL_SCALE = 0.1


def variation_figure(method: str, image: str | os.PathLike | None, out: str | os.PathLike, *, seeds: int = 4,
                     device: str = "cpu", method_args: dict[str, Any] | None = None) -> Path:
    """Write the demo figure (module docstring) for ``image`` (an RGB photo of a masked, aligned face).

    Args:
        method: a registered method.
        image: the input file (PNG/JPEG); None for the built-in demo face.
        out: the figure (PNG, or JPEG by its suffix).
        seeds: outputs with seeds ``0 .. seeds-1``.
        device: torch device.
        method_args: options for the method (e.g. ``weights``).

    Returns:
        ``out``.

    Raises:
        maskbench.core.io.ImageDecodeError, OSError: the image cannot be read.
        maskbench.methods.predictors.UnknownMethodError, maskbench.faces.landmarks.ModelNotFoundError: method or weights.
        maskbench.core.errors.MaskbenchError: no image given and the demo set cannot be made.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from ..core.io import read_image
    from ..methods.predictors import create_predictor, run_predictor

    if image is not None:
        img, name = read_image(image)[None], Path(image).name
    pred = create_predictor(method, device, **(method_args or {}))  # before the demo set is made (seconds)
    if image is None:
        from ..data.dataset import MaskedFaces
        from .evaluate import demo_data

        sample = MaskedFaces(demo_data(), "test")[0]
        img, name = sample.masked[None], f"built-in demo face ({sample.record['id']})"
    mask = None if pred.track == "blind" else np.zeros(img.shape[:3], bool)
    outs = [run_predictor(pred, img, mask, generator=torch.Generator().manual_seed(s)) for s in range(seeds)]
    hole = outs[0].masks[0] if outs[0].masks is not None and outs[0].masks[0].any() else None
    row1 = [("input", img[0])]
    if outs[0].masks is not None:
        row1.append(("predicted mask", np.repeat(outs[0].masks[0, ..., None].astype(np.uint8) * 255, 3, -1)))
    first = len(row1)
    row1 += [(f"seed {s}", o.images[0]) for s, o in enumerate(outs)]
    seed0 = outs[0].images[0]
    diffs = [("", None)] * first + [_diff("seed 0", "input", seed0, img[0], hole)]
    diffs += [_diff(f"seed {s}", "seed 0", o.images[0], seed0, hole) for s, o in enumerate(outs) if s]
    rows = [row1, diffs]
    if hasattr(pred, "render"):
        _, prior = pred.render(img)
        edited, edit_diffs, below = [("prior I_3D", prior[0])], [("", None)], [("", None)]
        for title, edit in DEFAULT_EDITS:
            o = pred.predict(img, None, generator=torch.Generator().manual_seed(0), edit=edit).images[0]
            edited.append((title, o))
            edit_diffs.append(_diff(title, "seed 0", o, seed0, hole))
            below.append((f"{title}: prior", pred.render(img, edit)[1][0]))
        rows += [edited, edit_diffs, below]
    cols = max(len(r) for r in rows)
    fig, axes = plt.subplots(len(rows), cols, figsize=(2.2 * cols, 2.4 * len(rows)), squeeze=False)
    for r, row in enumerate(rows):
        for c in range(cols):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(row) and row[c][1] is not None:
                title, im = row[c]
                if im.ndim == 2:  # a difference map
                    ax.imshow(im, cmap="gray", vmin=0.0, vmax=DIFF_FULL_SCALE)
                else:
                    ax.imshow(im)
                ax.set_title(title, fontsize=8 if im.ndim == 2 else 9)
    fig.suptitle(f"{method}: {name}\ndifference panels: |a - b| per pixel (mean of RGB, 0-1 scale), black 0, white "
                 f">= {DIFF_FULL_SCALE:g}; the number is its mean " + ("over the image" if hole is None else
                                                                    "inside the predicted mask"), fontsize=10)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    jpeg = out.suffix.lower() in (".jpg", ".jpeg")
    fig.savefig(out, dpi=100, **({"pil_kwargs": {"quality": 90}} if jpeg else {}))
    plt.close(fig)
    return out


def _diff(a_name: str, b_name: str, a: np.ndarray, b: np.ndarray, hole: np.ndarray | None):
    """A difference panel: ``(title, (H, W) float)``, the mean over RGB of ``|a - b|`` on a 0-1 scale."""
    d = np.abs(a.astype(np.float32) - b.astype(np.float32)).mean(-1) / 255.0
    where = d[hole] if hole is not None else d
    return f"|{a_name} - {b_name}|: {where.mean():.3f}", d
