"""The predictor side of learned methods: load committed (or given) weights and inpaint at the training size.

A learned method's :class:`maskbench.methods.predictors.Predictor` subclasses :class:`LearnedInpainter` and names
its :class:`maskbench.train.loop.Trainable` in ``trainer``; the networks are rebuilt from the config stored
in the weights file's card, so a file is self-describing and ``--method-arg weights=PATH`` can load any
run's ``weights.safetensors``.

At inference a model trained at ``S`` px runs at ``S``: the face is downsized (area), the hole downsized
with the training rule (:func:`maskbench.train.data.downsize_hole`), the output upsized (bicubic) to the
input size and composited into the input, so pixels outside the true hole always stay the input's.
"""

from __future__ import annotations

import functools
import importlib
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np

from ..core.resources import sha256_file
from .predictors import MethodOptionError, Predictor, PredictorOutput, RegistryError

__all__ = ["LearnedInpainter", "trainer_class", "config_dir", "default_weights", "load_stages"]


def trainer_class(predictor_cls: type[Predictor]):
    """The :class:`maskbench.train.loop.Trainable` named by ``predictor_cls.trainer``.

    Raises:
        RegistryError: no trainer declared, or it cannot be imported.
    """
    target = predictor_cls.trainer
    if not target:
        raise RegistryError(f"method {predictor_cls.name!r} cannot be trained (it declares no trainer)")
    mod, _, attr = target.partition(":")
    try:
        return getattr(importlib.import_module(mod), attr)
    except (ImportError, AttributeError) as e:
        raise RegistryError(f"method {predictor_cls.name!r}: cannot load trainer {target!r} ({e})") from None


def _package_dir(predictor_cls: type[Predictor]) -> Path:
    mod = (predictor_cls.trainer or predictor_cls.__module__).partition(":")[0]
    return Path(importlib.import_module(mod).__file__).resolve().parent


def config_dir(predictor_cls: type[Predictor]) -> Path:
    """The method's ``configs/`` folder (beside its trainer module)."""
    return _package_dir(predictor_cls) / "configs"


def default_weights(predictor_cls: type[Predictor]) -> Path:
    """The committed weights file: ``weights.safetensors`` beside the method's trainer module."""
    return _package_dir(predictor_cls) / "weights.safetensors"


def load_stages(name: str, files: dict[str, Path], trainer, how_to_train: str) -> tuple[dict[str, Any], dict[str, dict]]:
    """Build and load the networks of a multi-stage method from its weights files.

    Each file is either one stage's ``weights.safetensors`` (``maskbench train`` output; its card's
    ``config.stage`` names the stage) or a combined file whose card lists ``stages`` (written by the
    method's ``combine``); a combined file gives all its stages under their own names, a one-stage file
    its stage under its key in ``files`` (``generator_male`` may hold a ``generator`` stage).

    Args:
        name: the method's name, for messages.
        files: key -> path.
        trainer: the method's :class:`~maskbench.train.Trainable` class (``build``, ``method``).
        how_to_train: the end of the "not found" message.

    Returns:
        ``(nets, configs)``: ``torch.nn.Module`` and training config per stage name (eval mode not set).

    Raises:
        maskbench.core.resources.ModelNotFoundError: a file does not exist.
        maskbench.train.checkpoint.CheckpointError: a file is unreadable, another method's, or a one-stage
            file of another stage than its key says.
    """
    from ..core.resources import ModelNotFoundError
    from ..train.checkpoint import CheckpointError, load_weights, read_card

    for p in files.values():
        if not p.is_file():
            raise ModelNotFoundError(f"{name}: weights {p} not found; {how_to_train}")
    nets: dict[str, Any] = {}
    configs: dict[str, dict] = {}
    for key, p in files.items():
        card = read_card(p)
        if "stages" in card:
            entries = [(stage, stage, c["config"]) for stage, c in card["stages"].items()]
        else:
            stage = card["config"].get("stage", key)
            if key != stage and not key.startswith(f"{stage}_"):
                raise CheckpointError(f"{p} holds {name}'s {stage} stage, not its {key}")
            entries = [(key, stage, card["config"])]
        built = {in_file: trainer.build(cfg)[cfg.get("stage", in_file)] for _, in_file, cfg in entries}
        load_weights(p, trainer.method, built)
        for out_name, in_file, cfg in entries:
            nets[out_name], configs[out_name] = built[in_file], cfg
    return nets, configs


@functools.lru_cache(maxsize=16)
def _sha256(path: str, mtime: float) -> str:
    return sha256_file(path)  # cached per (path, mtime): called for every results key


class LearnedInpainter(Predictor):
    """Base of the given-mask learned methods (module docstring).

    Args:
        device: torch device.
        weights: a ``weights.safetensors`` written by ``maskbench train`` (default: the committed file).
        variant: a committed variant's weights instead (``weights-{variant}.safetensors`` beside the
            default file, e.g. an ablation: ``--method-arg variant=single-scale``).
        batch_size: images per network forward.

    Raises:
        maskbench.core.resources.ModelNotFoundError: no weights file.
        maskbench.train.checkpoint.CheckpointError: the file is unreadable or another method's.
    """

    track = "given-mask"
    input_size = None
    trainer: ClassVar[str | None] = None

    def __init__(self, device: str = "cpu", weights: str | None = None, variant: str | None = None,
                 batch_size: int = 16, **kwargs: Any):
        super().__init__(device, **kwargs)
        import torch

        from ..core.resources import ModelNotFoundError
        from ..train.checkpoint import load_weights, read_card

        path = self._weights_path(weights, variant)
        if not path.is_file():
            raise ModelNotFoundError(f"{self.name}: weights {path} not found; {self._how_to_train()}")
        self.weights_path = path
        self.card = read_card(path)
        self._trainer = trainer_class(type(self))
        self.config = self.card["config"]
        self.size = int(self.config["size"])
        built = self._trainer.build(self.config)
        self.nets = {k: built[k] for k in self._trainer.inference_nets}
        load_weights(path, self._trainer.method, self.nets)
        for m in self.nets.values():
            m.to(device).eval()
        self.batch_size = int(batch_size)
        self._torch = torch

    @classmethod
    def _weights_path(cls, weights: str | None = None, variant: str | None = None) -> Path:
        if weights:
            return Path(weights).expanduser()
        path = default_weights(cls)
        if variant:
            if not str(variant).replace("-", "").replace("_", "").isalnum():
                raise MethodOptionError(f"{cls.name}: variant must be a plain name, got {variant!r}")
            path = path.with_name(f"weights-{variant}.safetensors")
        return path

    @classmethod
    def variants(cls) -> list[str]:
        """Names of the committed variant weights (``weights-{name}.safetensors``)."""
        d = default_weights(cls).parent
        return sorted(p.stem.removeprefix("weights-") for p in d.glob("weights-*.safetensors"))

    @classmethod
    def _how_to_train(cls) -> str:
        return f"train them with `maskbench train --method {cls.name}` or pass --method-arg weights=PATH"

    @classmethod
    def weights_status(cls) -> str:
        return "available" if default_weights(cls).is_file() else f"missing: {cls._how_to_train()}"

    @classmethod
    def weights_card(cls, weights: str | None = None, variant: str | None = None, **options: Any) -> dict[str, Any] | None:
        from ..train.checkpoint import CheckpointError, read_card

        path = cls._weights_path(weights, variant)
        try:
            card = read_card(path) if path.is_file() else None
        except CheckpointError:
            return None
        if card is not None:
            card = {**card, "file": path.name, "sha256": cls.weights_fingerprint(weights, variant)}
        return card

    @classmethod
    def weights_fingerprint(cls, weights: str | None = None, variant: str | None = None, **options: Any) -> str | None:
        path = cls._weights_path(weights, variant)
        return _sha256(str(path), path.stat().st_mtime)[:16] if path.is_file() else None

    def predict(self, images: np.ndarray, masks: np.ndarray | None, generator=None) -> PredictorOutput:
        """Inpaint ``(N, H, W, 3) uint8`` faces in their ``(N, H, W) bool`` holes (module docstring)."""
        from ..train.data import downsize_hole, downsize_image

        torch = self._torch
        s = self.size
        n, h, w, _ = images.shape
        out = images.copy()
        for start in range(0, n, self.batch_size):
            sl = slice(start, start + self.batch_size)
            small = np.stack([downsize_image(im, s) for im in images[sl]])
            holes = np.stack([downsize_hole(m, s) for m in masks[sl]])
            x = torch.from_numpy(small).to(self.device).permute(0, 3, 1, 2).float() / 127.5 - 1.0
            m = torch.from_numpy(holes).to(self.device).float().unsqueeze(1)
            with torch.inference_mode():
                y = self._trainer.inpaint(self.nets, x, m, generator)
            pred = ((y.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
            for j, p in enumerate(pred):
                i = start + j
                up = p if (h, w) == (s, s) else cv2.resize(p, (w, h), interpolation=cv2.INTER_CUBIC)
                out[i][masks[i]] = up[masks[i]]
        return PredictorOutput(out)
