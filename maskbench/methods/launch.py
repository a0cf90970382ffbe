"""What ``maskbench train`` does: resolve the method, its config and its data, then run the loop."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..data.dataset import DatasetFormatError
from ..train.config import ConfigError
from ..train.data import PairedFaces, open_training_data
from ..train.loop import TrainResult, train

__all__ = ["launch"]


def launch(
    method: str,
    *,
    data: str | None = None,
    config: str = "small",
    overrides: dict[str, Any] | None = None,
    out: str | None = None,
    resume: bool = False,
    device: str = "auto",
    on_the_fly: bool = False,
    src: str | None = None,
    data_dir: str | None = None,
    limit: int | None = None,
    templates: str = "procedural",
    progress: bool = True,
    max_steps: int | None = None,
) -> TrainResult:
    """Train the registered ``method`` (see ``maskbench train --help`` for the options).

    The config (defaults, the named file, ``overrides``) is checked in full before any data is read
    (:func:`maskbench.train.config.check_config`); the run carries the method's one name, its predictor's.

    Args:
        method: a method whose predictor declares a ``trainer``.
        data: a Masked-Faces folder or ``hf:<repo_id>``; its train split is trained on, and the first
            8 faces of its test split (when it has one) make the sample grid.
        config: a config name of the method (``small``, ``paper``, ...) or a YAML path.
        overrides: dotted config keys to set (``{"steps": 100}``).
        out: the run folder (default ``runs/{method}-{config name}``).
        resume: continue the run in ``out``.
        device: ``auto``, ``cpu`` or ``cuda``.
        on_the_fly, src, data_dir, templates: fresh masks every epoch, drawn from ``templates`` (see
            :func:`open_training_data`).
        limit: at most this many training faces.
        progress: show a progress bar.
        max_steps: stop after this many steps in this call.

    Returns:
        :class:`maskbench.train.loop.TrainResult`.

    Raises:
        maskbench.methods.predictors.UnknownMethodError, RegistryError: unknown or untrainable method.
        maskbench.train.config.ConfigError: bad config, key, value or run folder.
        DatasetFormatError, maskbench.data.sources.SourceError: unusable data.
    """
    from .learned import trainer_class
    from .predictors import get_predictor_class, resolve_device

    cls = get_predictor_class(method)
    trainable = trainer_class(cls)
    cfg = trainable.load_config(config, overrides)
    device = resolve_device(device)
    if templates != "procedural" and not on_the_fly:
        raise ConfigError("--synth-templates applies to --synth-on-the-fly training only (a dataset's masks are fixed)")
    dataset = open_training_data(data, cfg["size"], cfg["seed"], on_the_fly=on_the_fly, src=src, data_dir=data_dir,
                                 limit=limit, templates=templates)
    samples = None
    if data is not None and not str(data).startswith("hf:"):
        try:
            test = PairedFaces(data, "test", cfg["size"], limit=8)
            samples = (test.masked, test.original, test.hole)
        except DatasetFormatError:
            samples = None
    run = Path(out) if out else Path("runs") / f"{method}-{Path(config).stem}"
    return train(trainable, cfg, dataset, run, method=cls.name, device=device, resume=resume, samples=samples,
                 progress=progress, max_steps=max_steps, config_name=Path(config).stem)
