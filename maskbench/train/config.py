"""Training configurations as data: one YAML file per method and size, validated when loaded.

A config is a nested mapping. The keys every method shares are in :data:`COMMON_DEFAULTS`; a method adds
its own sections (``model``, ``loss``, ``optim``) through its :attr:`Trainable.defaults`. A file may start
from another with ``inherit: other.yaml`` (a path relative to the file, or a config name of the same
method) and override a few keys, so an ablation is a two-line file (after LaMa's ``configs/training``).
Unknown keys are refused with the key's dotted path and the keys that exist.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml

from ..core.errors import MaskbenchError

__all__ = ["COMMON_DEFAULTS", "ConfigError", "merge", "load_config", "config_names", "parse_override"]

#: Keys shared by every method (the loop reads them).
COMMON_DEFAULTS: dict[str, Any] = {
    "size": 128,  # training resolution, pixels (square)
    "steps": 1000,  # optimisation steps
    "batch_size": 8,  # images per step over all processes
    "seed": 0,  # data order, initial weights, noise
    "loss_network": "auto",  # auto | vgg16 | dlib-resnet (see maskbench.train.losses)
    "amp": True,  # bfloat16 autocast on CUDA (never on CPU: ~15x slower there)
    "log_every": 10,  # steps between log.csv rows
    "sample_every": 200,  # steps between sample grids
    "checkpoint_every": 50,  # steps between checkpoints (also written at the end)
    "optim": {"lr": 2e-4, "betas": [0.5, 0.999]},
}


class ConfigError(MaskbenchError, ValueError):
    """A config file is missing, malformed, or has a key that does not exist."""


def merge(base: dict[str, Any], override: dict[str, Any], path: str = "") -> dict[str, Any]:
    """``base`` updated by ``override``, recursively; every key of ``override`` must exist in ``base``.

    Raises:
        ConfigError: an unknown key (named by its dotted path), or a mapping replaced by a scalar.
    """
    out = copy.deepcopy(base)
    for k, v in (override or {}).items():
        where = f"{path}{k}"
        if k not in base:
            raise ConfigError(f"unknown config key {where!r} (known here: {', '.join(sorted(base))})")
        if isinstance(base[k], dict):
            if not isinstance(v, dict):
                raise ConfigError(f"config key {where!r} must be a mapping, got {v!r}")
            out[k] = merge(base[k], v, where + ".")
        else:
            out[k] = copy.deepcopy(v)
    return out


def config_names(config_dir: str | os.PathLike) -> list[str]:
    """The config names (file stems) in a method's ``configs/`` folder."""
    d = Path(config_dir)
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


def _read(path: Path, config_dir: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    if path in seen:
        raise ConfigError(f"config {path} inherits from itself")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot read config {path}: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must be a mapping, got {type(data).__name__}")
    parent = data.pop("inherit", None)
    if parent is None:
        return data
    ppath = _locate(str(parent), config_dir, relative_to=path.parent)
    base = _read(ppath, config_dir, seen + (path,))
    return _deep_update(base, data)


def _deep_update(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(a)
    for k, v in b.items():
        out[k] = _deep_update(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _locate(name: str, config_dir: Path, relative_to: Path | None = None) -> Path:
    p = Path(name)
    candidates = [p] if p.suffix in (".yaml", ".yml") else []
    if relative_to is not None and p.suffix:
        candidates.insert(0, relative_to / p)
    candidates.append(config_dir / f"{name}.yaml")
    for c in candidates:
        if c.is_file():
            return c.resolve()
    known = ", ".join(config_names(config_dir)) or "none"
    raise ConfigError(f"config {name!r} not found (configs of this method: {known}; or give a .yaml path)")


def parse_override(text: str) -> tuple[str, Any]:
    """``"model.width=16"`` -> ``("model.width", 16)`` (the value is parsed as YAML).

    Raises:
        ConfigError: no ``=``.
    """
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"expected key=value, got {text!r}")
    return key.strip(), yaml.safe_load(value)


def load_config(
    defaults: dict[str, Any],
    name_or_path: str,
    config_dir: str | os.PathLike,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Resolve a config: the method's defaults, the named file (and what it inherits), then overrides.

    Args:
        defaults: the method's full default mapping (:data:`COMMON_DEFAULTS` merged with its own).
        name_or_path: a config name in ``config_dir`` (``"small"``) or a YAML file path.
        config_dir: the method's ``configs/`` folder.
        overrides: dotted keys to set last (``{"steps": 10, "model.width": 8}``).

    Returns:
        The complete config mapping.

    Raises:
        ConfigError: file not found or malformed, or any unknown key.
    """
    config_dir = Path(config_dir)
    cfg = merge(defaults, _read(_locate(name_or_path, config_dir), config_dir, ()))
    for key, value in (overrides or {}).items():
        nested: dict[str, Any] = {}
        cur = nested
        parts = key.split(".")
        for p in parts[:-1]:
            cur = cur.setdefault(p, {})
        cur[parts[-1]] = value
        cfg = merge(cfg, nested)
    return cfg
