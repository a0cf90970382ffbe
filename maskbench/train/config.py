"""Training configurations as data: one YAML file per method and size, checked when loaded.

Every key a method has is in its ``configs/defaults.yaml``, with its default value and a comment saying what it
does: the keys every method shares (``size``, ``steps``, ``batch_size``, ``optim`` ...; :data:`COMMON_KEYS`)
and the method's own sections (``model``, ``loss`` ...). A named config (``small.yaml``, ``tiny.yaml``) is
read over those defaults and may start from another with ``inherit: other.yaml`` (a path relative to the
file, or a config name of the same method) and override a few keys, so an ablation is a two-line file
(after LaMa's ``configs/training``). Overrides (``--set model.width=8``, ``--steps 10``) come last.

The merged config is checked in one place, :func:`check_config`: a key that does not exist is refused with its
dotted path and the keys that exist; a value must have its default's type (an integer where the default is
one, a number where it is a float, ``true``/``false`` where it is a boolean, a list of the same length, a
path or ``null`` where the default is ``null``) and lie in its :class:`Check`'s range: :data:`COMMON_CHECKS`
for the shared keys, the method's :attr:`maskbench.train.loop.Trainable.checks` for its own. Numbers have
no sign in these configs: without a check, a number must be >= 0. Each error is one line naming the key,
what it must be and what it got (a :class:`ConfigError`).
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from ..core.errors import MaskbenchError

__all__ = ["COMMON_KEYS", "COMMON_CHECKS", "DEFAULTS_FILE", "Check", "ConfigError", "merge", "load_defaults",
           "load_config", "check_config", "config_names", "parse_override"]

#: The file in a method's ``configs/`` folder that holds every key with its default.
DEFAULTS_FILE = "defaults.yaml"


class ConfigError(MaskbenchError, ValueError):
    """A config file is missing or malformed, has a key that does not exist, or a value of the wrong type or range."""


@dataclass(frozen=True)
class Check:
    """What a config value must be beyond its default's type (applied to each item of a list).

    Attributes:
        min, max: bounds (inclusive unless ``min_open`` / ``max_open``); ``None``: unbounded.
        multiple_of: an integer must be a multiple of it.
        choices: the allowed values (strings), instead of a range.
    """

    min: float | None = 0
    max: float | None = None
    min_open: bool = False
    max_open: bool = False
    multiple_of: int | None = None
    choices: tuple[Any, ...] | None = None

    def describe(self) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(map(str, self.choices))
        parts = []
        if self.min is not None:
            parts.append(f"{'>' if self.min_open else '>='} {self.min:g}")
        if self.max is not None:
            parts.append(f"{'<' if self.max_open else '<='} {self.max:g}")
        if self.multiple_of:
            parts.append(f"a multiple of {self.multiple_of}")
        return " and ".join(parts) or "any value"

    def accepts(self, v: Any) -> bool:
        if self.choices is not None:
            return v in self.choices
        if self.min is not None and (v <= self.min if self.min_open else v < self.min):
            return False
        if self.max is not None and (v >= self.max if self.max_open else v > self.max):
            return False
        return not (self.multiple_of and v % self.multiple_of)


#: The keys the loop reads; every method's ``defaults.yaml`` holds all of them.
COMMON_KEYS = ("size", "steps", "batch_size", "seed", "loss_network", "amp", "log_every", "sample_every",
               "checkpoint_every", "optim")

#: Ranges of the shared keys (what ``maskbench train``'s options check, and more).
COMMON_CHECKS: dict[str, Check] = {
    "size": Check(min=16, max=4096, multiple_of=16),  # every network halves it up to four times
    "steps": Check(min=1),
    "batch_size": Check(min=1),
    "seed": Check(min=0, max=2**32 - 1),
    "loss_network": Check(choices=("auto", "vgg16", "dlib-resnet")),
    "log_every": Check(min=1),
    "sample_every": Check(min=1),
    "checkpoint_every": Check(min=1),
    "optim.lr": Check(min=0, min_open=True),
    "optim.betas": Check(min=0, max=1, max_open=True),
}


def merge(base: dict[str, Any], override: dict[str, Any] | None, path: str = "", *, strict: bool = True) -> dict[str, Any]:
    """A deep copy of ``base`` updated by ``override``, recursively (the one config-merge helper).

    Args:
        base, override: nested mappings; ``override`` wins where both set a key.
        path: the dotted prefix of ``base`` (for messages).
        strict: every key of ``override`` must exist in ``base`` and a mapping may not be replaced by a
            scalar (a config against its method's defaults); ``False``: ``override`` may add keys and replace
            anything (a config file over the one it ``inherit``s, or a stored config over today's defaults).

    Raises:
        ConfigError: with ``strict``, an unknown key (named by its dotted path), or a mapping replaced by a
            scalar.
    """
    out = copy.deepcopy(base)
    for k, v in (override or {}).items():
        where = f"{path}{k}"
        if strict and k not in base:
            raise ConfigError(f"unknown config key {where!r} (known here: {', '.join(sorted(base))})")
        if isinstance(base.get(k), dict):
            if isinstance(v, dict):
                out[k] = merge(base[k], v, where + ".", strict=strict)
                continue
            if strict:
                raise ConfigError(f"config key {where!r} must be a mapping, got {v!r}")
        out[k] = copy.deepcopy(v)
    return out


def config_names(config_dir: str | os.PathLike) -> list[str]:
    """The config names (file stems) in a method's ``configs/`` folder, ``defaults`` included."""
    d = Path(config_dir)
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


def load_defaults(config_dir: str | os.PathLike) -> dict[str, Any]:
    """A method's ``configs/defaults.yaml``: every key it has, at its default.

    Raises:
        ConfigError: no such file, not a mapping, an ``inherit`` in it, or a shared key (:data:`COMMON_KEYS`)
            missing.
    """
    path = Path(config_dir) / DEFAULTS_FILE
    data = _read_yaml(path)
    if "inherit" in data:
        raise ConfigError(f"{path}: the defaults inherit from nothing")
    missing = [k for k in COMMON_KEYS if k not in data]
    if missing:
        raise ConfigError(f"{path} lacks the shared key(s) {', '.join(missing)}")
    return data


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot read config {path}: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must be a mapping, got {type(data).__name__}")
    return data


def _read(path: Path, config_dir: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    if path in seen:
        raise ConfigError(f"config {path} inherits from itself")
    data = _read_yaml(path)
    parent = data.pop("inherit", None)
    if parent is None:
        return data
    ppath = _locate(str(parent), config_dir, relative_to=path.parent)
    base = _read(ppath, config_dir, seen + (path,))
    return merge(base, data, strict=False)


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
    """``"model.width=16"`` -> ``("model.width", 16)`` (the value is parsed as YAML; what it must be is
    checked with the whole config, :func:`check_config`).

    Raises:
        ConfigError: no ``=``.
    """
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"expected key=value, got {text!r}")
    try:
        return key.strip(), yaml.safe_load(value)
    except yaml.YAMLError:
        return key.strip(), value


def load_config(
    config_dir: str | os.PathLike,
    name_or_path: str,
    overrides: dict[str, Any] | None = None,
    checks: Mapping[str, Check] | None = None,
) -> dict[str, Any]:
    """Resolve a config: the method's ``defaults.yaml``, the named file (and what it inherits), then
    overrides; checked (:func:`check_config`).

    Args:
        config_dir: the method's ``configs/`` folder.
        name_or_path: a config name in ``config_dir`` (``"small"``) or a YAML file path.
        overrides: dotted keys to set last (``{"steps": 10, "model.width": 8}``).
        checks: the method's own :class:`Check` per dotted key (its ``Trainable.checks``).

    Returns:
        The complete config mapping.

    Raises:
        ConfigError: file not found or malformed, any unknown key, or a value of the wrong type or range.
    """
    config_dir = Path(config_dir)
    defaults = load_defaults(config_dir)
    cfg = merge(defaults, _read(_locate(name_or_path, config_dir), config_dir, ()))
    for key, value in (overrides or {}).items():
        nested: dict[str, Any] = {}
        cur = nested
        parts = key.split(".")
        for p in parts[:-1]:
            cur = cur.setdefault(p, {})
        cur[parts[-1]] = value
        cfg = merge(cfg, nested)
    return check_config(cfg, defaults, checks)


def check_config(config: dict[str, Any], defaults: dict[str, Any], checks: Mapping[str, Check] | None = None,
                 ) -> dict[str, Any]:
    """Check every value of a merged ``config`` against its default's type and its :class:`Check` (module
    docstring); returns ``config``.

    Raises:
        ConfigError: one line naming the first bad key (dotted), what it must be and what it got.
    """
    rules = {**COMMON_CHECKS, **(checks or {})}
    _check(config, defaults, rules, "")
    return config


def _check(config: dict[str, Any], defaults: dict[str, Any], rules: Mapping[str, Check], path: str) -> None:
    for k, v in config.items():
        where = f"{path}{k}"
        if k not in defaults:
            raise ConfigError(f"unknown config key {where!r} (known here: {', '.join(sorted(defaults))})")
        d = defaults[k]
        if isinstance(d, dict):
            if not isinstance(v, dict):
                raise ConfigError(f"config key {where!r} must be a mapping, got {v!r}")
            _check(v, d, rules, where + ".")
            continue
        rule = rules.get(where, Check())
        if isinstance(d, list):
            if not isinstance(v, list) or len(v) != len(d):
                raise ConfigError(f"config key {where!r} must be a list of {len(d)} values, got {v!r}")
            for item, item_default in zip(v, d):
                _check_value(where, item, item_default, rule, whole=v)
        else:
            _check_value(where, v, d, rule)


def _check_value(key: str, v: Any, d: Any, rule: Check, whole: Any = None) -> None:
    got = v if whole is None else whole
    where = f"config key {key!r}" + ("" if whole is None else ": each value")
    if d is None:  # a path, or nothing
        if v is not None and not isinstance(v, str):
            raise ConfigError(f"{where} must be a path or null, got {got!r}")
        return
    if isinstance(d, bool):
        if not isinstance(v, bool):
            raise ConfigError(f"{where} must be true or false, got {got!r}")
        return
    if isinstance(d, (int, float)):
        number = isinstance(v, int) if isinstance(d, int) else isinstance(v, (int, float))
        if isinstance(v, bool) or not number or not math.isfinite(v):
            kind = "an integer" if isinstance(d, int) else "a number"
            raise ConfigError(f"{where} must be {kind} {rule.describe()}, got {got!r}")
    elif isinstance(d, str):
        if not isinstance(v, str):
            raise ConfigError(f"{where} must be {rule.describe() if rule.choices else 'a string'}, got {got!r}")
        if rule.choices is None:
            return
    if not rule.accepts(v):
        kind = "an integer " if isinstance(d, int) and not isinstance(d, bool) and rule.choices is None else ""
        raise ConfigError(f"{where} must be {kind}{rule.describe()}, got {got!r}")
