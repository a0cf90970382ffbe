"""Checkpoints and exported weights, in safetensors only (no pickle is ever loaded).

- :func:`save_training_state` / :func:`load_training_state`: ``last.safetensors`` in a run folder holds
  every network's parameters and buffers (float32), every optimiser's state tensors, the torch RNG state,
  and as JSON metadata the step, the config, the optimisers' hyper-parameters and the elapsed time.
  Written atomically, so a kill at any moment leaves the previous or the new checkpoint.
- :func:`export_weights` / :func:`load_weights`: the file a predictor loads (``weights.safetensors``):
  the inference networks in float16 plus a card (timm's ``pretrained_cfg`` plays that role): method,
  config, training data fingerprint, steps, images seen, wall time, device, loss network, commit.
  :func:`read_card` reads the card alone and :func:`card_config` checks the config it records, so a file of
  another method, without a card or with a broken config is refused (one line) before a network is built.
- :func:`combine_weights`: the one-stage files of a method trained in stages joined into one file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from ..core.errors import MaskbenchError, first_line
from ..core.io import atomic_write_bytes
from .config import Check, ConfigError, check_config, merge

__all__ = ["CheckpointError", "save_training_state", "load_training_state", "export_weights", "load_weights",
           "read_card", "card_config", "combine_weights"]


class CheckpointError(MaskbenchError, ValueError):
    """A checkpoint or weights file is unreadable, or belongs to another method."""


def _flat_optim(name: str, opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"optim/{name}/{pid}/{k}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{pid}/{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _unflat_optim(name: str, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    prefix = f"optim/{name}/"
    for key, v in tensors.items():
        if key.startswith(prefix):
            pid, k = key[len(prefix):].split("/", 1)
            state.setdefault(int(pid), {})[k] = v
    for key, v in meta["scalars"].items():
        pid, k = key.split("/", 1)
        state.setdefault(int(pid), {})[k] = v
    return {"state": state, "param_groups": meta["param_groups"]}


def _module(m: torch.nn.Module) -> torch.nn.Module:
    return getattr(m, "module", m)  # unwrap DistributedDataParallel


def save_training_state(path: str | os.PathLike, method: str, nets: dict[str, torch.nn.Module],
                        optimizers: dict[str, torch.optim.Optimizer], step: int, meta: dict[str, Any]) -> None:
    """Write the full training state atomically (module docstring).

    Args:
        path: the file (``RUN/last.safetensors``).
        method: the method name (checked on resume).
        nets: networks by name.
        optimizers: optimisers by name.
        step: steps completed.
        meta: more JSON-able metadata (config, elapsed time, ...).
    """
    tensors: dict[str, torch.Tensor] = {}
    for name, net in nets.items():
        for k, v in _module(net).state_dict().items():
            tensors[f"net/{name}/{k}"] = v.detach().cpu().contiguous().clone()
    optim_meta = {}
    for name, opt in optimizers.items():
        t, m = _flat_optim(name, opt)
        tensors.update(t)
        optim_meta[name] = m
    tensors["rng/torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng/cuda{i}"] = s
    header = {"method": method, "step": step, "optim": optim_meta, **meta}
    atomic_write_bytes(path, st_save(tensors, metadata={"maskbench": json.dumps(header)}))


def _read(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise CheckpointError(f"cannot read {p}: {e.strerror or e}") from None
    try:
        tensors = st_load(data)
        from safetensors import safe_open  # metadata only

        with safe_open(str(p), "pt") as f:
            md = f.metadata() or {}
        header = json.loads(md.get("maskbench", "{}"))
    except (SafetensorError, ValueError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{p} is not a maskbench safetensors file ({str(e).splitlines()[0]})") from None
    return tensors, header


def _check_method(path, header: dict[str, Any], method: str | None) -> None:
    if method is not None and header.get("method") != method:
        raise CheckpointError(f"{path} holds a checkpoint of {header.get('method') or 'an unknown method'!r}, "
                              f"not of {method!r}")


def load_training_state(path: str | os.PathLike, method: str, nets: dict[str, torch.nn.Module],
                        optimizers: dict[str, torch.optim.Optimizer]) -> dict[str, Any]:
    """Restore :func:`save_training_state`'s file into ``nets`` and ``optimizers`` (and the torch RNG).

    Returns:
        the metadata header (``step``, ``config``, ...).

    Raises:
        CheckpointError: unreadable, another method's, or networks that do not match.
    """
    tensors, header = _read(path)
    _check_method(path, header, method)
    for name, net in nets.items():
        prefix = f"net/{name}/"
        sd = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        try:
            _module(net).load_state_dict(sd)
        except RuntimeError as e:
            raise CheckpointError(f"{path}: network {name!r} does not match this config "
                                  f"({str(e).splitlines()[0]})") from None
    for name, opt in optimizers.items():
        opt.load_state_dict(_unflat_optim(name, tensors, header["optim"][name]))
    torch.set_rng_state(tensors["rng/torch"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng/cuda")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])
    return header


def export_weights(path: str | os.PathLike, method: str, nets: dict[str, torch.nn.Module], card: dict[str, Any],
                   dtype: torch.dtype = torch.float16) -> None:
    """Write inference weights (floating tensors cast to ``dtype``) with their card, atomically."""
    tensors = {}
    for name, net in nets.items():
        for k, v in _module(net).state_dict().items():
            v = v.detach().cpu()
            tensors[f"{name}/{k}"] = (v.to(dtype) if v.is_floating_point() else v).contiguous().clone()
    atomic_write_bytes(path, st_save(tensors, metadata={"maskbench": json.dumps({"method": method, **card})}))


def read_card(path: str | os.PathLike, method: str | None = None) -> dict[str, Any]:
    """The metadata card of a weights file, without loading its tensors (``{}`` when it has none).

    Args:
        path: a safetensors file.
        method: when given, the card must exist and be this method's.

    Raises:
        CheckpointError: unreadable or not a safetensors file; with ``method``: no maskbench card, or another
            method's.
    """
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            card = json.loads((f.metadata() or {}).get("maskbench", "{}"))
    except (OSError, SafetensorError, ValueError) as e:
        raise CheckpointError(f"cannot read weights {path}: {str(e).splitlines()[0]}") from None
    if method is not None:
        if not isinstance(card, dict) or not card:
            raise CheckpointError(f"{path} has no maskbench card (not a weights file written by `maskbench train`)")
        _check_method(path, card, method)
    return card


def card_config(path: str | os.PathLike, config: Any, defaults: dict[str, Any],
                checks: Mapping[str, Check] | None = None) -> dict[str, Any]:
    """The training config a card records, checked before a network is built from it.

    Keys the method's defaults gained after the file was written are read at their defaults (the rule a
    resumed run follows); a key the method does not have, or a value of the wrong type or range, is refused
    (:func:`maskbench.train.config.check_config`).

    Args:
        path: the file (for messages).
        config: the card's ``config`` (or a stage card's).
        defaults: the method's defaults (``Trainable.default_config()``); checks: its ``Trainable.checks``.

    Raises:
        CheckpointError: one line: no config mapping, an unknown key or a bad value.
    """
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: its card holds no training config (a mapping), got {type(config).__name__}")
    try:
        return check_config(merge(defaults, config), defaults, checks)
    except ConfigError as e:
        raise CheckpointError(f"{path}: its card's {first_line(e)}") from None


def combine_weights(method: str, files: Mapping[str, str | os.PathLike], out: str | os.PathLike,
                    card: dict[str, Any] | None = None) -> Path:
    """Join the one-stage weights files of a method trained in stages into one file, written at ``out``.

    The card holds each file's card under ``stages`` (by network name); ``size``, ``config``, ``device``,
    ``data_fingerprint`` and ``loss_network`` are the generator's (the first network named ``generator`` or
    ``generator_*``, else the last one), ``steps``, ``images_seen`` and ``wall_time_s`` the sums over the
    stages (for ``maskbench methods``), ``parameters`` the count per network.

    Args:
        method: the method every file must be of.
        files: network name -> a ``maskbench train`` weights file, or a combined file holding that network
            (its stage is taken over as it is: e.g. a new segmenter with the committed file's other stages);
            the network's stage is its name up to the first ``_`` (``generator_male`` holds a ``generator``
            stage, for methods that route between two).
        out: the file to write (atomically).
        card: more card entries (e.g. ``{"gender_routing": True}``).

    Returns:
        ``out`` as a :class:`~pathlib.Path`.

    Raises:
        CheckpointError: a file is unreadable, another method's, or of another stage than its name says.
    """
    from safetensors.torch import load_file

    tensors: dict[str, torch.Tensor] = {}
    stages: dict[str, dict[str, Any]] = {}
    for net, p in files.items():
        stage = net.split("_")[0]
        c = read_card(p, method)
        combined = "stages" in c
        if combined:  # a stage taken over from a combined file (e.g. the committed weights)
            c = c["stages"].get(net, {})
        got = c.get("config", {}).get("stage") if isinstance(c.get("config"), dict) else None
        if got != stage:
            raise CheckpointError(f"{p} is not a {method} {stage} weights file (method {c.get('method')!r}, "
                                  f"stage {got!r})")
        stages[net] = c
        prefix = f"{net}/" if combined else f"{stage}/"
        tensors.update({f"{net}/{k.split('/', 1)[1]}": v for k, v in load_file(str(p)).items() if k.startswith(prefix)})
    names = list(stages)
    g = stages[next((n for n in names if n.split("_")[0] == "generator"), names[-1])]
    total = lambda key: sum(c.get(key, 0) for c in stages.values())  # noqa: E731
    summary = {"method": method, "stages": stages,
               "config_name": "+".join(str(c.get("config_name")) for c in stages.values()),
               "config": g.get("config"), "size": g.get("size"), "steps": total("steps"),
               "images_seen": total("images_seen"), "wall_time_s": round(total("wall_time_s"), 1),
               "device": g.get("device"), "data_fingerprint": g.get("data_fingerprint"),
               "parameters": {n: sum(c.get("parameters", {}).values()) for n, c in stages.items()},
               "loss_network": g.get("loss_network"), **(card or {})}
    out = Path(out)
    atomic_write_bytes(out, st_save(tensors, metadata={"maskbench": json.dumps(summary)}))
    return out


def load_weights(path: str | os.PathLike, method: str, nets: dict[str, torch.nn.Module]) -> dict[str, Any]:
    """Load :func:`export_weights`'s file into ``nets`` (cast to each network's dtype); returns the card.

    Raises:
        CheckpointError: unreadable, another method's weights, or networks that do not match.
    """
    tensors, header = _read(path)
    _check_method(path, header, method)
    for name, net in nets.items():
        prefix = f"{name}/"
        sd = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        ref = net.state_dict()
        sd = {k: (v.to(ref[k].dtype) if k in ref else v) for k, v in sd.items()}
        try:
            net.load_state_dict(sd)
        except RuntimeError as e:
            raise CheckpointError(f"{path}: network {name!r} does not match its config ({str(e).splitlines()[0]})") from None
    return header
