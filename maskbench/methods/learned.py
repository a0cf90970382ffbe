"""The one base of learned methods, given-mask and blind: weights, cards, batching, conversion and compositing.

A learned method's :class:`~maskbench.methods.predictors.Predictor` subclasses :class:`LearnedPredictor`,
states its registry ``name`` once (the trainer reads it from there: :func:`maskbench.methods.launch.launch`
passes it to :func:`maskbench.train.loop.train`; the ``maskbench.methods`` entry point must register the class
under the same name) and names its :class:`~maskbench.train.loop.Trainable` in ``trainer``. Its networks are
rebuilt from the config stored in the weights file's card, so a file is self-describing and
``--method-arg weights=PATH`` can load any run's ``weights.safetensors``; the card's method and config are
checked before any network is built (:func:`load_networks`).

A method trained in stages (``3dprior``, ``landmark-gan``) lists them in ``stages``: it loads one combined file
(:meth:`LearnedPredictor.combine` writes it; ``python -m maskbench.baselines.<method>.combine`` is its
command line, :func:`combine_command`) or one file per stage (``--method-arg <stage>_weights=PATH``).

:meth:`LearnedPredictor.predict` is the same for every method: the faces, in batches of ``batch_size``, go
through :meth:`LearnedPredictor.forward`, which returns the holes filled (the given ones, or those the method
found) and the network's output at its size ``S``; the output is converted back to uint8, upsized (bicubic)
and pasted inside the holes, so pixels outside them always stay the input's
(:mod:`maskbench.train.tensors`, the conversion training uses as well). A given-mask method needs no code
beyond its class attributes: the default :meth:`~LearnedPredictor.forward` downsizes the face (area) and the
hole (the training rule) to ``S`` and calls the trainer's :meth:`~maskbench.train.loop.Trainable.inpaint`.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping

import numpy as np

from ..core.errors import MaskbenchError, first_line
from ..core.resources import ModelNotFoundError, sha256_file
from .predictors import MethodOptionError, Predictor, PredictorOutput, RegistryError

__all__ = ["LearnedPredictor", "Restored", "trainer_class", "default_weights", "load_networks",
           "stage_files", "combine_command"]


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


def default_weights(predictor_cls: type[Predictor]) -> Path:
    """The committed weights file: ``weights.safetensors`` beside the method's trainer module."""
    return _package_dir(predictor_cls) / "weights.safetensors"


def stage_files(stage: str, value: str | Path | Mapping[str, str | Path]) -> dict[str, Path]:
    """One stage's file(s) by network name: ``PATH`` -> ``{stage: PATH}``; ``"male=P1,female=P2"`` or
    ``{"male": P1, "female": P2}`` -> ``{stage_male: P1, stage_female: P2}`` (two networks of one stage that
    the method routes between, e.g. ``landmark-gan``'s generators)."""
    if isinstance(value, Mapping):
        return {f"{stage}_{k}": Path(v) for k, v in value.items()}
    text = str(value)
    if "=" not in text:
        return {stage: Path(text)}
    out = {}
    for item in text.split(","):
        key, _, path = item.partition("=")
        out[f"{stage}_{key.strip()}" if key.strip() else stage] = Path(path)
    return out


def load_networks(name: str, files: Mapping[str, Path], trainer,
                  how_to_train: str) -> tuple[dict[str, Any], dict[str, dict]]:
    """Build and load a learned method's networks from its weights file(s), checking every card first.

    Each file is one of: a ``maskbench train`` output, whose card's config gives the networks
    (``trainer.exported_nets(config)``); a combined file whose card lists ``stages`` (:meth:`LearnedPredictor.combine`),
    which gives each of its networks under its own name; or, under a stage's key (``n3d``, ``generator_male``),
    that stage's own run output, whose one network is loaded under the key.

    Args:
        name: the method's name: every card must be its.
        files: ``{"": path}`` for the method's one file, or network name -> one stage's file.
        trainer: the method's :class:`~maskbench.train.loop.Trainable` class.
        how_to_train: the end of the "not found" message.

    Returns:
        ``(nets, configs)``: ``torch.nn.Module`` and checked training config per network name (eval mode not set).

    Raises:
        maskbench.core.resources.ModelNotFoundError: a file does not exist.
        maskbench.train.checkpoint.CheckpointError: a file is unreadable, has no card, is another method's or
            of another stage than its key says, or its card's config is broken (unknown key, bad value).
    """
    from ..train.checkpoint import CheckpointError, card_config, load_weights, read_card

    for p in files.values():
        if not p.is_file():
            raise ModelNotFoundError(f"{name}: weights {p} not found; {how_to_train}")
    defaults = trainer.default_config()
    nets: dict[str, Any] = {}
    configs: dict[str, dict] = {}
    for key, p in files.items():
        card = read_card(p, name)
        if "stages" in card:  # (network name, network in the file, config)
            entries = [(net, net, card_config(p, c.get("config") if isinstance(c, dict) else None, defaults,
                                              trainer.checks)) for net, c in card["stages"].items()]
        else:
            cfg = card_config(p, card.get("config"), defaults, trainer.checks)
            exported = trainer.exported_nets(cfg)
            if not key:
                entries = [(net, net, cfg) for net in exported]
            elif key.split("_")[0] not in exported:
                raise CheckpointError(f"{p} holds {name}'s {', '.join(exported)} stage, not its {key.split('_')[0]}")
            else:
                entries = [(key, key.split("_")[0], cfg)]
        built = {}
        for _, in_file, cfg in entries:
            stage = in_file.split("_")[0]
            built[in_file] = trainer.build(cfg)[stage]
        load_weights(p, name, built)
        for out_name, in_file, cfg in entries:
            nets[out_name], configs[out_name] = built[in_file], cfg
    return nets, configs


@functools.lru_cache(maxsize=16)
def _sha256(path: str, mtime: float) -> str:
    return sha256_file(path)  # cached per (path, mtime): called for every results key


@dataclass
class Restored:
    """What :meth:`LearnedPredictor.forward` returns for ``n`` faces of ``H`` x ``W``.

    Attributes:
        holes: ``(n, H, W) bool``: where the output is pasted (the given holes, or the ones the method found).
        output: the network's output ``(n, 3, S, S)`` in [-1, 1].
        landmarks: ``(n, 68, 2) float32`` landmarks in input pixels the method predicted, or ``None``.
    """

    holes: np.ndarray
    output: Any
    landmarks: np.ndarray | None = None


class LearnedPredictor(Predictor):
    """Base of every learned method, given-mask and blind (module docstring).

    Class attributes (besides :class:`~maskbench.methods.predictors.Predictor`'s):
        name: the registry name, required (the trainer, the weights' cards and the entry point use it).
        trainer: ``"package.module:Trainable"``.
        stages: the stages of a method trained in stages (each has a ``<stage>_weights`` option); ``()``.

    Args:
        device: torch device.
        weights: a ``weights.safetensors`` written by ``maskbench train`` (or, for a method trained in stages,
            :meth:`combine`); default: the committed file.
        variant: a committed variant's weights instead (``weights-{variant}.safetensors`` beside the
            default file, e.g. an ablation: ``--method-arg variant=single-scale``).
        batch_size: faces per network forward.
        **stage_weights: ``<stage>_weights=PATH`` for each of ``stages``, all together, instead of ``weights``
            (a value ``"male=PATH,female=PATH"`` gives two networks of one stage: :func:`stage_files`).

    Raises:
        maskbench.core.resources.ModelNotFoundError: no weights file, or a stage's network missing.
        maskbench.train.checkpoint.CheckpointError: a file is unreadable, has no card, is another method's, or
            its card's config is broken.
        MethodOptionError: some stage files given but not all, or with ``weights``.
    """

    trainer: ClassVar[str | None] = None
    stages: ClassVar[tuple[str, ...]] = ()

    def __init__(self, device: str = "cpu", weights: str | None = None, variant: str | None = None,
                 batch_size: int = 16, **stage_weights: Any):
        options = {k: stage_weights.pop(k) for k in list(stage_weights) if k in self._stage_options()}
        super().__init__(device, **stage_weights)
        import torch

        files = self.weight_files(weights, variant, **options)
        self.trainable = trainer_class(type(self))
        self.nets, self.configs = load_networks(self.name, files, self.trainable, self.how_to_train())
        self.generators = sorted(k for k in self.nets if k.split("_")[0] == "generator")
        found = {k.split("_")[0] for k in self.nets}
        missing = [s for s in self.stages if s not in found] or ([] if self.generators else ["generator"])
        if missing:
            raise ModelNotFoundError(f"{self.name}: the {', '.join(missing)} weights are missing "
                                     f"({', '.join(sorted(self.nets))} found); {self.how_to_train()}")
        for m in self.nets.values():
            m.to(device).eval()
        self.weights_path = files.get("")
        self.card = self.weights_card(weights, variant, **options)
        self.size = int(self.configs[self.generators[0]]["size"])
        self.batch_size = int(batch_size)
        self._torch = torch

    # --- weights files -------------------------------------------------------------------------------
    @classmethod
    def _stage_options(cls) -> tuple[str, ...]:
        return tuple(f"{s}_weights" for s in cls.stages)

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
    def weight_files(cls, weights: str | None = None, variant: str | None = None, **options: Any) -> dict[str, Path]:
        """The file(s) the options select: ``{"": path}`` (one file), or network name -> file when every
        ``<stage>_weights`` option is given (other options are ignored).

        Raises:
            MethodOptionError: some stage files given but not all, or with ``weights`` or ``variant``.
        """
        given = {s: options.get(f"{s}_weights") for s in cls.stages}
        if not any(given.values()):
            return {"": cls._weights_path(weights, variant)}
        names = ", ".join(cls._stage_options())
        if not all(given.values()):
            raise MethodOptionError(f"{cls.name}: give {names} together, or none of them")
        if weights or variant:
            raise MethodOptionError(f"{cls.name}: give weights (or variant) or {names}, not both")
        files: dict[str, Path] = {}
        for stage, value in given.items():
            files.update({k: Path(v).expanduser() for k, v in stage_files(stage, value).items()})
        return files

    @classmethod
    def variants(cls) -> list[str]:
        """Names of the committed variant weights (``weights-{name}.safetensors``)."""
        d = default_weights(cls).parent
        return sorted(p.stem.removeprefix("weights-") for p in d.glob("weights-*.safetensors"))

    @classmethod
    def how_to_train(cls) -> str:
        """The end of a "weights not found" message: how to get weights."""
        if not cls.stages:
            return f"train them with `maskbench train --method {cls.name}` or pass --method-arg weights=PATH"
        configs = ", ".join(f"`--config small-{s}`" for s in cls.stages)
        package = cls.__module__.rpartition(".")[0]
        return (f"train the stages with `maskbench train --method {cls.name}` and {configs}, join them with "
                f"`python -m {package}.combine {' '.join(s.upper() for s in cls.stages)} OUT`, and pass "
                f"--method-arg weights=OUT (or each stage's file as --method-arg STAGE_weights=PATH)")

    @classmethod
    def weights_status(cls) -> str:
        return "available" if default_weights(cls).is_file() else f"missing: {cls.how_to_train()}"

    @classmethod
    def weights_card(cls, weights: str | None = None, variant: str | None = None, **options: Any) -> dict[str, Any] | None:
        """The card of the file the options select, with its ``file`` name and ``sha256`` (see
        :meth:`weights_fingerprint`); for stage files, ``stages``: each file's card by network name."""
        from ..train.checkpoint import CheckpointError, read_card

        try:
            files = cls.weight_files(weights, variant, **options)
            if not all(p.is_file() for p in files.values()):
                return None
            if "" in files:
                card = read_card(files[""])
            else:
                card = {"stages": {k: {**read_card(p), "file": p.name} for k, p in files.items()}}
        except (CheckpointError, MethodOptionError):
            return None
        name = files[""].name if "" in files else None
        return {**card, "file": name, "sha256": cls.weights_fingerprint(weights, variant, **options)}

    @classmethod
    def weights_fingerprint(cls, weights: str | None = None, variant: str | None = None, **options: Any) -> str | None:
        """The first 16 hex digits of the SHA-256 of the selected file (of its files' hashes for stage files),
        or ``None`` when a file is missing (part of the results key)."""
        files = cls.weight_files(weights, variant, **options)
        if not all(p.is_file() for p in files.values()):
            return None
        if "" in files:
            return _sha256(str(files[""]), files[""].stat().st_mtime)[:16]
        joined = "|".join(f"{k}:{_sha256(str(p), p.stat().st_mtime)}" for k, p in sorted(files.items()))
        return hashlib.sha256(joined.encode()).hexdigest()[:16]

    @classmethod
    def combine(cls, files: Mapping[str, str | Path | Mapping[str, str | Path]], out: str | Path) -> Path:
        """Join the stages' ``maskbench train`` weights into one file at ``out`` (nothing is written anywhere else).

        Args:
            files: stage -> its file, or stage -> ``{"male": PATH, "female": PATH}`` (:func:`stage_files`);
                every stage of :attr:`stages` is needed.
            out: the file to write.

        Raises:
            MethodOptionError: a stage is missing or unknown.
            maskbench.train.checkpoint.CheckpointError: a file is unreadable, another method's or of another stage.
        """
        from ..train.checkpoint import combine_weights

        unknown = [s for s in files if s.split("_")[0] not in cls.stages]
        missing = [s for s in cls.stages if not any(k.split("_")[0] == s for k in files)]
        if unknown or missing or not cls.stages:
            raise MethodOptionError(f"{cls.name}: combine takes one file per stage ({', '.join(cls.stages) or 'none'})"
                                    f"; missing: {', '.join(missing) or '-'}; unknown: {', '.join(unknown) or '-'}")
        nets: dict[str, Path] = {}
        for stage, value in files.items():
            nets.update(stage_files(stage, value) if "_" not in stage else {stage: Path(value)})
        return combine_weights(cls.name, nets, out, cls.combined_card(nets))

    @classmethod
    def combined_card(cls, nets: Mapping[str, Path]) -> dict[str, Any]:
        """Entries a method adds to its combined file's card (default: none)."""
        return {}

    # --- prediction ----------------------------------------------------------------------------------
    def forward(self, images: np.ndarray, masks: np.ndarray | None, generator, **options: Any) -> Restored:
        """One batch: the holes to fill and the network's output at its size (see :class:`Restored`).

        Default (given-mask track): the face and its hole at ``S`` (:func:`maskbench.train.tensors.network_inputs`)
        through the trainer's :meth:`~maskbench.train.loop.Trainable.inpaint`. A blind method overrides it.
        """
        from ..train.tensors import network_inputs

        x, m = network_inputs(images, masks, self.size, self.device)
        with self._torch.inference_mode():
            y = self.trainable.inpaint(self.nets, x, m, generator)
        return Restored(masks, y)

    def predict(self, images: np.ndarray, masks: np.ndarray | None = None, generator=None,
                **options: Any) -> PredictorOutput:
        """Restore ``(N, H, W, 3) uint8`` faces, in batches of ``batch_size`` (module docstring).

        Args:
            images: the masked faces.
            masks: ``(N, H, W) bool`` holes on the given-mask track; ignored on the blind track.
            generator: CPU ``torch.Generator`` for any noise (a fresh one seeded 0 when None).
            **options: passed on to :meth:`forward` (e.g. ``3dprior``'s ``edit``).

        Returns:
            :class:`PredictorOutput`: the faces with the output pasted inside the holes (every other pixel is
            the input's); on the blind track the holes as ``masks``, and the predicted ``landmarks`` if any.
        """
        from ..train.tensors import paste_into_holes, tensor_to_images

        if generator is None:
            generator = self._torch.Generator().manual_seed(0)
        blind = self.track == "blind"
        n, h, w, _ = images.shape
        out = images.copy()
        holes = np.zeros((n, h, w), bool) if blind else None
        landmarks = None
        for start in range(0, n, self.batch_size):
            sl = slice(start, start + self.batch_size)
            r = self.forward(images[sl], None if blind or masks is None else masks[sl], generator, **options)
            out[sl] = paste_into_holes(images[sl], tensor_to_images(r.output), r.holes)
            if blind:
                holes[sl] = r.holes
            if r.landmarks is not None:
                if landmarks is None:
                    landmarks = np.zeros((n, 68, 2), np.float32)
                landmarks[sl] = r.landmarks
        return PredictorOutput(out, masks=holes, landmarks=landmarks)


def combine_command(cls: type[LearnedPredictor], prog: str, argv: list[str] | None = None) -> int:
    """``python -m maskbench.baselines.<method>.combine STAGE_FILE... OUT``: :meth:`LearnedPredictor.combine`
    with one argument per stage, in :attr:`~LearnedPredictor.stages` order (``male=PATH,female=PATH`` for two
    networks of one stage), then the file to write. Prints the file; errors are one line, exit status 2."""
    args = sys.argv[1:] if argv is None else list(argv)
    usage = f"usage: {prog} {' '.join(s.upper() for s in cls.stages)} OUT"
    if len(args) != len(cls.stages) + 1:
        print(usage, file=sys.stderr)
        return 2
    try:
        print(cls.combine(dict(zip(cls.stages, args[:-1])), args[-1]))
    except MaskbenchError as e:
        print(f"error: {first_line(e)}", file=sys.stderr)
        return 2
    return 0
