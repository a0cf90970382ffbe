"""One training loop for every learned method (read it top to bottom, after nanoGPT's ``train.py``).

A method supplies a :class:`Trainable`: its networks, its losses, one optimisation step, and its configs
(every key at its default in ``configs/defaults.yaml`` beside the trainable's module). The method's name is
its predictor's (:attr:`maskbench.methods.predictors.Predictor.name`, the registry name), handed to
:func:`train`. The loop owns everything else: the data and its order, the optimisers, bfloat16 autocast on
CUDA, DistributedDataParallel under ``torchrun`` (``LOCAL_RANK`` / ``WORLD_SIZE``), logging, sample grids, checkpoints and the exported
weights. A run folder holds::

    config.yaml               the resolved config (plus what the run was started with)
    log.csv                   step, each loss term, images/s, learning rate, elapsed seconds
    samples/step_NNNNNN.png   a fixed grid of faces: masked | output | original, every sample_every steps
    last.safetensors          the training state (networks, optimisers, RNG, step), written atomically
    weights.safetensors       the inference weights (float16) with their card, at the end
    events.out.tfevents.*     TensorBoard scalars when ``tensorboard`` is installed

``resume=True`` continues from ``last.safetensors``: the data order is a function of (seed, step) and the
RNG state is restored, so on CPU the resumed run reproduces the uninterrupted run's losses exactly.
"""

from __future__ import annotations

import csv
import io
import os
import sys
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
import torch
import torch.nn as nn
import yaml

from ..core.io import atomic_write_text, write_png
from ..core.progress import progress_bar
from ..core.resources import git_commit
from .checkpoint import export_weights, load_training_state, save_training_state
from .config import Check, ConfigError, check_config, load_config, load_defaults, merge
from .data import Batch, batch_indices, to_batch
from .tensors import tensor_to_images

__all__ = ["Trainable", "Optimizers", "TrainResult", "train"]


class Optimizers:
    """The optimisers of a run, one per network group, and the single way a method updates weights.

    ``update(name, loss)`` zeroes that group's gradients, back-propagates ``loss`` and steps; a method never
    calls ``backward`` itself, so the loop can change how the update is done (gradient scaling, clipping)
    in one place.
    """

    def __init__(self, groups: dict[str, list[nn.Parameter]], lr: float, betas: tuple[float, float],
                 lr_scales: dict[str, float] | None = None):
        scales = lr_scales or {}
        self.opts = {k: torch.optim.Adam(p, lr=lr * scales.get(k, 1.0), betas=tuple(betas)) for k, p in groups.items()}

    def update(self, name: str, loss: torch.Tensor) -> None:
        """Zero the gradients of group ``name``, back-propagate ``loss``, take one Adam step."""
        opt = self.opts[name]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    @property
    def lr(self) -> float:
        return next(iter(self.opts.values())).param_groups[0]["lr"]


class Trainable(ABC):
    """What a learned method gives the loop.

    Its configs live in ``configs/`` beside the module that defines it: ``defaults.yaml`` holds every key at
    its default (:func:`maskbench.train.config.load_defaults`), the other files are named configs.

    Class attributes:
        checks: the ranges of the method's own config keys, by dotted key (the shared keys' are
            :data:`maskbench.train.config.COMMON_CHECKS`; see :func:`maskbench.train.config.check_config`).
        uses_loss_network: load the perceptual loss network (:func:`maskbench.train.losses.load_loss_network`).
        inference_nets: the networks exported into ``weights.safetensors`` (a method trained in stages
            narrows them by its config: :meth:`exported_nets`).

    Args:
        config: the resolved config.
        device: torch device string.
        loss_net: the frozen feature network, or None when ``uses_loss_network`` is False.
    """

    checks: ClassVar[dict[str, Check]] = {}
    uses_loss_network: ClassVar[bool] = False
    inference_nets: ClassVar[tuple[str, ...]] = ("generator",)

    def __init__(self, config: dict[str, Any], device: str = "cpu", loss_net: nn.Module | None = None):
        self.config = config
        self.device = device
        self.loss_net = loss_net
        self.step = 0  # steps done before the current one; set by the loop (for loss schedules)
        self.nets: dict[str, nn.Module] = self.build(config)

    @classmethod
    def config_dir(cls) -> Path:
        """The method's ``configs/`` folder: beside the module that defines the class."""
        return Path(sys.modules[cls.__module__].__file__).resolve().parent / "configs"

    @classmethod
    def default_config(cls) -> dict[str, Any]:
        """Every config key at its default (the method's ``configs/defaults.yaml``)."""
        return load_defaults(cls.config_dir())

    @classmethod
    def load_config(cls, name_or_path: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        """A named config (``"small"``) or YAML path over the defaults, then ``overrides``; checked
        (:func:`maskbench.train.config.load_config`).

        Raises:
            ConfigError: unknown file or key, or a value of the wrong type or range.
        """
        return load_config(cls.config_dir(), name_or_path, overrides, cls.checks)

    @classmethod
    def check_config(cls, config: dict[str, Any]) -> dict[str, Any]:
        """``config`` checked against the defaults and :attr:`checks` (:func:`maskbench.train.config.check_config`).

        Raises:
            ConfigError: one line naming the first bad key.
        """
        return check_config(config, cls.default_config(), cls.checks)

    @classmethod
    @abstractmethod
    def build(cls, config: dict[str, Any]) -> dict[str, nn.Module]:
        """The networks of a config, freshly initialised (inference ones included), by name."""

    @classmethod
    def exported_nets(cls, config: dict[str, Any]) -> tuple[str, ...]:
        """The networks a run of ``config`` exports into ``weights.safetensors`` (default: :attr:`inference_nets`)."""
        return cls.inference_nets

    @property
    def lr_scales(self) -> dict[str, float]:
        """Learning-rate factors of optimiser groups (missing: 1), e.g. a slower discriminator."""
        return {}

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Optimiser groups: by default one per network."""
        return {k: [p for p in m.parameters() if p.requires_grad] for k, m in self.nets.items()}

    @abstractmethod
    def training_step(self, batch: Batch, opt: Optimizers) -> dict[str, float]:
        """One optimisation step on ``batch`` through ``opt.update``; returns the loss terms to log."""

    @classmethod
    def inpaint(cls, nets: dict[str, nn.Module], masked: torch.Tensor, hole: torch.Tensor,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """The raw output ``(N, 3, S, S)`` in [-1, 1] for masked ``(N, 3, S, S)`` in [-1, 1] and hole
        ``(N, 1, S, S)`` in {0, 1} (no compositing; the predictor composites).

        Default: ``nets["generator"]`` on 4 channels, the masked image with the hole set to 0 and the hole."""
        return nets["generator"](torch.cat([masked * (1 - hole), hole], dim=1))

    def prepare(self, data, samples: tuple[np.ndarray, np.ndarray, np.ndarray]):
        """Called once before the first step (also on resume) with the training data and the sample-grid
        faces ``(masked, original, hole)``; returns the faces to draw the grids from. A method computes
        per-sample targets here (``3dprior``: its 3D fits). Default: nothing, the faces unchanged."""
        return samples

    def finalize(self, data) -> None:
        """Called once before the final weights are exported (also when a finished run is resumed to
        re-export); the training checkpoint is already written. Default: nothing (``landmark-gan``'s
        segmenter re-estimates its batch-norm statistics here)."""

    def sample_outputs(self, nets: dict[str, nn.Module], masked: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        """What the sample grid shows for ``masked`` and ``hole`` (default: :meth:`inpaint`, noise seeded 0)."""
        return type(self).inpaint(nets, masked, hole, torch.Generator().manual_seed(0))


@dataclass
class TrainResult:
    """What :func:`train` returns: the run folder, the steps done, the exported weights and the last losses."""

    run_dir: Path
    steps: int
    weights: Path | None
    last_losses: dict[str, float]


def _dist() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return rank, local, world


def train(
    trainable: type[Trainable],
    config: dict[str, Any],
    data,
    out: str | os.PathLike,
    *,
    method: str,
    device: str = "cpu",
    resume: bool = False,
    samples=None,
    max_steps: int | None = None,
    progress: bool = True,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    config_name: str = "",
) -> TrainResult:
    """Train ``trainable`` with ``config`` on ``data`` and write the run folder ``out`` (module docstring).

    Args:
        trainable: the method's :class:`Trainable` subclass.
        config: the resolved config (:meth:`Trainable.load_config`); checked again here.
        data: a :class:`maskbench.train.data.PairedFaces` or ``OnTheFlyFaces``.
        out: the run folder.
        method: the method's registry name (its predictor's ``name``): written into the checkpoints, the
            weights' card and ``config.yaml``, and checked on resume.
        device: ``"cpu"``, ``"cuda"`` (under torchrun each process takes ``cuda:LOCAL_RANK``).
        resume: continue from ``out/last.safetensors``.
        samples: ``(masked, original, hole)`` arrays at the training size for the sample grids (default:
            the first 8 training samples).
        max_steps: stop after this many steps in *this* call (a test's stand-in for a kill).
        progress: show a tqdm bar (rank 0).
        on_step: called with ``(step, losses)`` after each step (tests).
        config_name: the config's name, recorded in the weights card.

    Returns:
        :class:`TrainResult`.

    Raises:
        ConfigError: a bad config value, the run folder holds another config or method, or ``resume``
            without a checkpoint.
        CheckpointError: the checkpoint is unreadable or another method's.
        ValueError: fewer training samples than one batch.
    """
    trainable.check_config(config)
    rank, local, world = _dist()
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
        if device.startswith("cuda"):
            device = f"cuda:{local}"
            torch.cuda.set_device(device)
    out = Path(out)
    ckpt = out / "last.safetensors"
    if ckpt.is_file() and not resume:
        raise ConfigError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    if resume and not ckpt.is_file():
        raise ConfigError(f"--resume: {ckpt} not found")
    if config["batch_size"] % world:
        raise ConfigError(f"batch_size {config['batch_size']} is not divisible by {world} processes")

    torch.manual_seed(config["seed"])
    loss_net = None
    if trainable.uses_loss_network:
        from .losses import load_loss_network

        loss_net = load_loss_network(config["loss_network"], device)
    run = trainable(config, device, loss_net)
    for k, m in run.nets.items():
        m.to(device).train()
    opt = Optimizers(run.param_groups(), config["optim"]["lr"], config["optim"]["betas"], run.lr_scales)
    step, elapsed, images_seen = 0, 0.0, 0
    if resume:
        header = load_training_state(ckpt, method, run.nets, opt.opts)
        # keys the method's defaults gained since the run started count at their default values: a key added
        # later with the behaviour the run already had does not block its resume; one set otherwise still does
        stored = merge(trainable.default_config(), header.get("config"), strict=False)
        if _without_steps(stored) != _without_steps(config):
            raise ConfigError(f"{out} was started with another config; resume with the same options "
                              "(only --steps may change)")
        step, elapsed, images_seen = header["step"], header.get("elapsed_s", 0.0), header.get("images_seen", 0)
    if samples is None:
        idx = np.arange(min(8, len(data)))
        samples = data.get(idx, 0)
    samples = run.prepare(data, samples)
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [local] if device.startswith("cuda") else None
        run.nets = {k: (DDP(m, device_ids=ids) if any(p.requires_grad for p in m.parameters()) else m)
                    for k, m in run.nets.items()}

    main = rank == 0
    if main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "samples").mkdir(exist_ok=True)
        atomic_write_text(out / "config.yaml", yaml.safe_dump({"method": method, **config}, sort_keys=False))
    log_path = out / "log.csv"
    rows = _read_log(log_path, step) if (main and resume) else []
    writer = _TensorBoard(out) if main else None
    bs, total = config["batch_size"], config["steps"]
    stop = total if max_steps is None else min(total, step + max_steps)
    amp = config.get("amp", True) and device.startswith("cuda")
    bar = None
    if progress and main:
        bar = progress_bar(total, method, unit="step", initial=step)
    losses: dict[str, float] = {}
    t_last, n_last = time.perf_counter(), 0
    while step < stop:
        t0 = time.perf_counter()
        index, epoch = batch_indices(len(data), bs, step, config["seed"], rank, world)
        batch = to_batch(*data.get(index, epoch), index, device)
        run.step = step
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            losses = run.training_step(batch, opt)
        step += 1
        images_seen += bs
        elapsed += time.perf_counter() - t0
        n_last += bs
        if on_step:
            on_step(step, losses)
        if bar is not None:
            bar.update(1)
            bar.set_postfix({k: f"{v:.3g}" for k, v in list(losses.items())[:4]})
        if main and (step % config["log_every"] == 0 or step == stop):
            now = time.perf_counter()
            row = {"step": step, **{k: round(float(v), 6) for k, v in losses.items()},
                   "images_per_s": round(n_last / max(now - t_last, 1e-9), 3), "lr": opt.lr,
                   "elapsed_s": round(elapsed, 1)}
            t_last, n_last = now, 0
            rows.append(row)
            _write_log(log_path, rows)
            writer.add(row)
        if main and (step % config["sample_every"] == 0 or step == stop):
            _write_samples(out / "samples" / f"step_{step:06d}.png", run, samples, device)
        if main and (step % config["checkpoint_every"] == 0 or step == stop):
            save_training_state(ckpt, method, run.nets, opt.opts, step,
                                {"config": config, "elapsed_s": elapsed, "images_seen": images_seen})
    if bar is not None:
        bar.close()
    weights = None
    if main and step >= total:
        run.finalize(data)
        exported = trainable.exported_nets(config)
        weights = out / "weights.safetensors"
        card = {
            "config_name": config_name,
            "config": config,
            "data_fingerprint": getattr(data, "fingerprint", ""),
            "train_samples": len(data),
            "size": config["size"],
            "steps": step,
            "images_seen": images_seen,
            "wall_time_s": round(elapsed, 1),
            "device": torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu",
            "processes": world,
            "loss_network": getattr(loss_net, "name", None),
            "commit": git_commit(),
            "parameters": {k: sum(p.numel() for p in getattr(m, "module", m).parameters())
                           for k, m in run.nets.items() if k in exported},
        }
        export_weights(weights, method, {k: run.nets[k] for k in exported}, card)
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
    return TrainResult(out, step, weights, losses)


def _without_steps(config: dict[str, Any] | None) -> dict[str, Any]:
    """A config minus ``steps``: the horizon may be extended on resume (no schedule depends on it)."""
    return {k: v for k, v in (config or {}).items() if k != "steps"}


def _read_log(path: Path, step: int) -> list[dict[str, Any]]:
    """Log rows up to ``step`` (rows written after the checkpoint a resume starts from are dropped)."""
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return [r for r in csv.DictReader(f) if int(r["step"]) <= step]


def _write_log(path: Path, rows: list[dict[str, Any]]) -> None:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


@torch.no_grad()
def _write_samples(path: Path, run: Trainable, samples, device: str) -> None:
    masked, original, hole = samples
    b = to_batch(masked, original, hole, np.arange(len(masked)), device)
    inner = {k: getattr(m, "module", m) for k, m in run.nets.items()}
    was = {k: m.training for k, m in inner.items()}
    for m in inner.values():
        m.eval()
    pred = run.sample_outputs(inner, b.masked, b.hole)
    for k, m in inner.items():
        m.train(was[k])
    comp = b.hole * pred + (1 - b.hole) * b.original
    rows = [b.masked, comp, b.original]
    grid = torch.cat([torch.cat(list(r), dim=2) for r in rows], dim=1)  # (3, 3S, N*S)
    write_png(path, tensor_to_images(grid[None])[0])


class _TensorBoard:
    """TensorBoard scalars when the ``tensorboard`` package is installed; otherwise nothing."""

    def __init__(self, out: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.w = SummaryWriter(str(out))
        except ImportError:
            self.w = None

    def add(self, row: dict[str, Any]) -> None:
        if self.w is None:
            return
        for k, v in row.items():
            if k != "step":
                self.w.add_scalar(k, float(v), int(row["step"]))
        self.w.flush()
