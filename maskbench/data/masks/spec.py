"""What a mask may be, as data: the per-type rules (``mask_types.yaml``) and the template table
(``templates.csv``), each validated when loaded.

A template is one row of ``mask_templates/templates.csv`` (:class:`TemplateSpec`): a mask type, a style
and explicit shape parameters in canonical pixels (the 256 x 256 frame of :mod:`maskbench.data.masks.frame`).
Each mask type's rules, which styles, anchor set and straps it has, its size ranges, pleats, whether it
may carry a valve, which shader draws it and how its fabric is chosen, are one entry of
``mask_templates/mask_types.yaml`` (:class:`MaskTypeRules`); every template row is checked against them.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import ImageColor

from ...core.errors import MaskbenchError
from ...core.io import read_spec_table
from ..format import MASK_TYPES
from .frame import data_file

__all__ = [
    "MASK_TYPES_FILE",
    "TEXTURE_USES",
    "MaskTypeRules",
    "MaskTypesError",
    "TemplateSpec",
    "TemplateSpecError",
    "hex_rgb",
    "is_hex_color",
    "load_mask_types",
    "load_templates",
    "mask_type_rules",
]

#: The rules file in ``mask_templates/``.
MASK_TYPES_FILE = "mask_types.yaml"

#: What a texture is typical for: ``medical`` (surgical-mask solids), ``respirator`` (white, grey,
#: black solids of N95/KN95 masks), ``fabric`` (everything a cloth mask or scarf is made of).
TEXTURE_USES = ("medical", "respirator", "fabric")

_HEX = re.compile(r"#[0-9a-fA-F]{6}")


def is_hex_color(s: str) -> bool:
    """Whether ``s`` is a ``#rrggbb`` colour."""
    return isinstance(s, str) and _HEX.fullmatch(s) is not None


def hex_rgb(color: str) -> np.ndarray:
    """A ``#rrggbb`` colour as ``(3,) float32`` RGB in [0, 1] (``PIL.ImageColor.getrgb``).

    Raises:
        ValueError: not a colour PIL can read.
    """
    return np.array(ImageColor.getrgb(color), np.float32) / 255.0


# ------------------------------------------------------------------------------------ mask-type rules


class MaskTypesError(MaskbenchError, ValueError):
    """``mask_types.yaml`` is malformed: the message names the file, the mask type and the key."""


@dataclass(frozen=True)
class MaskTypeRules:
    """One mask type's entry of ``mask_types.yaml``.

    Attributes:
        mask_type: one of :data:`maskbench.data.format.MASK_TYPES`.
        styles: construction styles a template may have.
        anchors: the anchor set (``anchors.json``) its templates use.
        straps: ``ear_loops``, ``head_straps`` or ``none``.
        half_width: ``(min, max)`` half width, canonical pixels.
        chin_inset: ``(min, max)`` chin inset, canonical pixels.
        pleats: ``{style: (min, max)}``; styles not listed have no pleats.
        valve: whether a template may carry an exhalation valve.
        shader: name in :data:`maskbench.data.masks.shaders.SHADERS`.
        texture_mix: chances of a ``medical``, ``respirator``, ``fabric`` texture and of the template's
            default look, in that order (sum 1).
        swatch: ``#rrggbb`` flat colour standing for the type (previews, :mod:`maskbench.data.testing`).
    """

    mask_type: str
    styles: tuple[str, ...]
    anchors: str
    straps: str
    half_width: tuple[float, float]
    chin_inset: tuple[float, float]
    pleats: dict[str, tuple[int, int]]
    valve: bool
    shader: str
    texture_mix: tuple[float, float, float, float]
    swatch: str


_RULE_KEYS = ("styles", "anchors", "straps", "half_width", "chin_inset", "pleats", "valve", "shader",
              "texture_mix", "swatch")
_SHADER_NAMES = ("surgical", "cloth", "n95", "kn95", "scarf")  # = maskbench.data.masks.shaders.SHADERS (tested)


def load_mask_types(path: str | os.PathLike | None = None) -> dict[str, MaskTypeRules]:
    """Read and validate a mask-type rules file.

    Args:
        path: a ``mask_types.yaml``; default: the one shipped in ``mask_templates/``.

    Returns:
        ``{mask_type: MaskTypeRules}`` in :data:`maskbench.data.format.MASK_TYPES` order.

    Raises:
        FileNotFoundError: the file does not exist.
        MaskTypesError: not YAML, a type missing or unknown, a key missing or unknown, or a value of the
            wrong kind or range; the message names the file, the type and the key.
    """
    import yaml

    src = data_file(MASK_TYPES_FILE) if path is None else os.fspath(path)
    try:
        with open(src, encoding="utf-8") as f:
            raw = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise MaskTypesError(f"{src}: not valid YAML ({e})") from None
    if not isinstance(raw, dict):
        raise MaskTypesError(f"{src}: expected a mapping of mask type -> rules, got {type(raw).__name__}")
    missing = [t for t in MASK_TYPES if t not in raw]
    unknown = [str(t) for t in raw if t not in MASK_TYPES]
    if missing or unknown:
        raise MaskTypesError(f"{src}: the mask types must be exactly {', '.join(MASK_TYPES)} "
                             f"(missing: {', '.join(missing) or 'none'}; unknown: {', '.join(unknown) or 'none'})")
    return {t: _parse_rules(t, raw[t], f"{src}, {t}") for t in MASK_TYPES}


def _parse_rules(mask_type: str, raw: Any, where: str) -> MaskTypeRules:
    if not isinstance(raw, dict):
        raise MaskTypesError(f"{where}: expected a mapping of rules, got {type(raw).__name__}")
    missing = [k for k in _RULE_KEYS if k not in raw]
    unknown = [str(k) for k in raw if k not in _RULE_KEYS]
    if missing or unknown:
        raise MaskTypesError(f"{where}: missing keys {missing or 'none'}, unknown keys {unknown or 'none'}")

    def bad(key: str, msg: str) -> MaskTypesError:
        return MaskTypesError(f"{where}, {key}: {msg}, got {raw[key]!r}")

    def one_of(key: str, allowed: tuple[str, ...]) -> str:
        if raw[key] not in allowed:
            raise bad(key, f"expected one of {', '.join(allowed)}")
        return raw[key]

    def span(key: str, lo: float, hi: float, kind: type = float) -> tuple[Any, Any]:
        v = raw[key] if key != "pleats" else None
        return _span(v, lo, hi, kind, lambda msg: bad(key, msg))

    styles = raw["styles"]
    if not (isinstance(styles, list) and styles and all(isinstance(s, str) and s for s in styles)):
        raise bad("styles", "expected a non-empty list of names")
    pleats_raw = raw["pleats"]
    if not isinstance(pleats_raw, dict) or any(k not in styles for k in pleats_raw):
        raise bad("pleats", f"expected a mapping from its styles ({', '.join(styles)}) to [min, max]")
    pleats = {k: _span(v, 0, 4, int, lambda msg: bad("pleats", msg)) for k, v in pleats_raw.items()}
    mix_raw = raw["texture_mix"]
    mix_keys = (*TEXTURE_USES, "default")
    if not isinstance(mix_raw, dict) or set(mix_raw) != set(mix_keys):
        raise bad("texture_mix", f"expected the keys {', '.join(mix_keys)}")
    mix = tuple(mix_raw[k] for k in mix_keys)
    if not all(isinstance(p, (int, float)) and not isinstance(p, bool) and 0 <= p <= 1 for p in mix) \
            or abs(sum(mix) - 1.0) > 1e-6:
        raise bad("texture_mix", "expected chances in [0, 1] that sum to 1")
    if not isinstance(raw["valve"], bool):
        raise bad("valve", "expected true or false")
    if not is_hex_color(raw["swatch"]):
        raise bad("swatch", "expected a colour #rrggbb")
    return MaskTypeRules(
        mask_type=mask_type,
        styles=tuple(styles),
        anchors=one_of("anchors", ("face", "face_neck")),
        straps=one_of("straps", ("ear_loops", "head_straps", "none")),
        half_width=span("half_width", 40.0, 100.0),
        chin_inset=span("chin_inset", 0.0, 16.0),
        pleats=pleats,
        valve=raw["valve"],
        shader=one_of("shader", _SHADER_NAMES),
        texture_mix=tuple(float(p) for p in mix),
        swatch=raw["swatch"],
    )


def _span(v: Any, lo: float, hi: float, kind: type, bad) -> tuple[Any, Any]:
    """``[min, max]`` within ``[lo, hi]`` as a tuple of ``kind``."""
    ok_kind = (int,) if kind is int else (int, float)
    if not (isinstance(v, list) and len(v) == 2 and all(isinstance(x, ok_kind) and not isinstance(x, bool) for x in v)
            and lo <= v[0] <= v[1] <= hi):
        raise bad(f"expected [min, max] with {lo:g} <= min <= max <= {hi:g}")
    return kind(v[0]), kind(v[1])


@lru_cache(maxsize=1)
def mask_type_rules() -> dict[str, MaskTypeRules]:
    """The shipped rules (:func:`load_mask_types`), read once per process.

    Raises:
        MaskTypesError, FileNotFoundError: as :func:`load_mask_types`.
    """
    return load_mask_types()


# ------------------------------------------------------------------------------------- template table


class TemplateSpecError(MaskbenchError, ValueError):
    """A template table is malformed: the message names the file, the row and the column."""


@dataclass(frozen=True)
class TemplateSpec:
    """One mask template (one row of ``templates.csv``); lengths are canonical pixels (256 frame).

    Attributes:
        template_id: unique id, ``<mask_type>-NNNN``.
        mask_type: one of :data:`maskbench.data.format.MASK_TYPES`.
        anchors: warp anchor set in ``anchors.json``: ``face``, or ``face_neck`` for scarves.
        style: one of its type's ``styles`` in ``mask_types.yaml`` (scarf: ``tube`` or ``bandana``; cloth: ``contoured``
            with a centre seam or ``pleated``).
        top_y: y of the top edge on the centre line (over the nose bridge).
        top_side_y: y of the top edge at the side edges (N95: y of the cup's widest point).
        top_power: exponent of the top edge's profile, ``top(u) = top_y + (top_side_y - top_y) |u|^p``
            (N95: superellipse exponent of the cup).
        half_width: half the mask's width at its top, from the centre line x = 128.
        chin_inset: how far the bottom edge stays inside the jaw line; scarves: 0.
        bottom_side_y: y the bottom edge rises to at the side edges (>= 256: follows the jaw line).
        bottom_power: exponent of the bottom edge's rise towards the sides.
        neck_width: scarves: half width at the canvas bottom; other types: equal to ``half_width``.
        pleats: number of horizontal pleats (surgical 2-4, pleated cloth 2-3, else 0).
        nose_wire: whether a nose wire strip shows along the top edge.
        straps: ``ear_loops``, ``head_straps`` (N95) or ``none`` (scarf).
        strap_width: loop or strap width.
        strap_top: where the upper loop/strap meets the face outline, as a fractional jaw landmark
            index (0 = landmark 0; mirrored on the right side).
        strap_bottom: same for the lower loop/strap.
        strap_color: ``#rrggbb``, or ``match`` for the mask's own (texture) colour.
        valve: ``none``, ``round`` or ``rect`` (N95 only).
        valve_x: valve centre's x offset from the centre line (negative: image left).
        valve_y: valve centre's y.
        valve_size: valve radius (round) or half side (rect).
        valve_color: ``#rrggbb``.
        color: default body colour ``#rrggbb`` (used when no texture is given).
        seed: seeds the template's fold phases and fabric grain.
    """

    template_id: str
    mask_type: str
    anchors: str
    style: str
    top_y: float
    top_side_y: float
    top_power: float
    half_width: float
    chin_inset: float
    bottom_side_y: float
    bottom_power: float
    neck_width: float
    pleats: int
    nose_wire: bool
    straps: str
    strap_width: float
    strap_top: float
    strap_bottom: float
    strap_color: str
    valve: str
    valve_x: float
    valve_y: float
    valve_size: float
    valve_color: str
    color: str
    seed: int




_COLUMNS: dict[str, tuple[type, Any]] = {
    # name: (type, (min, max) or allowed values)
    "template_id": (str, None),
    "mask_type": (str, MASK_TYPES),
    "anchors": (str, ("face", "face_neck")),
    "style": (str, None),
    "top_y": (float, (133.0, 148.0)),
    "top_side_y": (float, (128.0, 200.0)),
    "top_power": (float, (0.8, 4.0)),
    "half_width": (float, (40.0, 100.0)),
    "chin_inset": (float, (0.0, 16.0)),
    "bottom_side_y": (float, (150.0, 400.0)),
    "bottom_power": (float, (0.8, 4.0)),
    "neck_width": (float, (10.0, 110.0)),
    "pleats": (int, (0, 4)),
    "nose_wire": (bool, None),
    "straps": (str, ("ear_loops", "head_straps", "none")),
    "strap_width": (float, (0.0, 6.0)),
    "strap_top": (float, (0.0, 5.0)),
    "strap_bottom": (float, (0.0, 5.0)),
    "strap_color": (str, "color_or_match"),
    "valve": (str, ("none", "round", "rect")),
    "valve_x": (float, (-50.0, 50.0)),
    "valve_y": (float, (150.0, 215.0)),
    "valve_size": (float, (0.0, 18.0)),
    "valve_color": (str, "color"),
    "color": (str, "color"),
    "seed": (int, (0, 2**31 - 1)),
}



def _parse_cell(raw: str, kind: type, rule: Any, where: str) -> Any:
    raw = raw.strip()
    if kind is bool:
        if raw.lower() in ("1", "true", "yes"):
            return True
        if raw.lower() in ("0", "false", "no"):
            return False
        raise TemplateSpecError(f"{where}: expected 0/1, got {raw!r}")
    if kind is int:
        try:
            value: Any = int(raw)
        except ValueError:
            raise TemplateSpecError(f"{where}: expected an integer, got {raw!r}") from None
    elif kind is float:
        try:
            value = float(raw)
        except ValueError:
            raise TemplateSpecError(f"{where}: expected a number, got {raw!r}") from None
        if not math.isfinite(value):
            raise TemplateSpecError(f"{where}: expected a finite number, got {raw!r}")
    else:
        value = raw
        if not value:
            raise TemplateSpecError(f"{where}: empty value")
    if rule == "color" and not is_hex_color(value):
        raise TemplateSpecError(f"{where}: expected a colour #rrggbb, got {raw!r}")
    if rule == "color_or_match" and value != "match" and not is_hex_color(value):
        raise TemplateSpecError(f"{where}: expected a colour #rrggbb or 'match', got {raw!r}")
    if isinstance(rule, tuple) and isinstance(rule[0], str) and value not in rule:
        raise TemplateSpecError(f"{where}: expected one of {', '.join(rule)}, got {raw!r}")
    if isinstance(rule, tuple) and not isinstance(rule[0], str) and not rule[0] <= value <= rule[1]:
        raise TemplateSpecError(f"{where}: {value} is outside [{rule[0]:g}, {rule[1]:g}]")
    return value



def _check_consistency(spec: TemplateSpec, all_rules: dict[str, MaskTypeRules], where: str) -> None:
    """Rules of the template's mask type (``mask_types.yaml``) and cross-column rules; ``where`` is
    ``file, row N``."""
    t = spec.mask_type
    rules = all_rules[t]

    def bad(column: str, msg: str) -> TemplateSpecError:
        return TemplateSpecError(f"{where}, column {column}: {msg}")

    if not spec.template_id.startswith(f"{t}-"):
        raise bad("template_id", f"id {spec.template_id!r} should start with '{t}-'")
    if spec.style not in rules.styles:
        raise bad("style", f"{t} style must be one of {', '.join(rules.styles)}, got {spec.style!r}")
    if spec.anchors != rules.anchors:
        raise bad("anchors", f"{t} uses anchor set {rules.anchors!r}, got {spec.anchors!r}")
    if spec.straps != rules.straps:
        raise bad("straps", f"{t} has straps {rules.straps!r}, got {spec.straps!r}")
    if spec.top_side_y < spec.top_y:
        raise bad("top_side_y", f"{spec.top_side_y} is above top_y {spec.top_y}")
    for column, (lo, hi) in (("half_width", rules.half_width), ("chin_inset", rules.chin_inset)):
        value = getattr(spec, column)
        if not lo <= value <= hi:
            raise bad(column, f"{t} {column.replace('_', ' ')} must be in [{lo:g}, {hi:g}], got {value}")
    pleats = rules.pleats.get(spec.style)
    if pleats is not None and not pleats[0] <= spec.pleats <= pleats[1]:
        raise bad("pleats", f"{t} {spec.style} needs {pleats[0]}-{pleats[1]} pleats, got {spec.pleats}")
    if pleats is None and spec.pleats != 0:
        raise bad("pleats", f"{t} {spec.style} has no pleats, got {spec.pleats}")
    if not rules.valve and spec.valve != "none":
        valved = ", ".join(k for k, r in all_rules.items() if r.valve) or "no"
        raise bad("valve", f"only {valved} masks have a valve, got {spec.valve!r}")
    if spec.valve != "none" and spec.valve_size < 6.0:
        raise bad("valve_size", f"a valve needs valve_size >= 6, got {spec.valve_size}")
    if spec.straps != "none" and spec.strap_width <= 0:
        raise bad("strap_width", f"straps need a positive width, got {spec.strap_width}")


def load_templates(path: str | os.PathLike | None = None) -> list[TemplateSpec]:
    """Read and validate a template table.

    Args:
        path: a ``templates.csv``; default: the one shipped in ``mask_templates/``.

    Returns:
        The templates in file order.

    Raises:
        FileNotFoundError: the file does not exist.
        TemplateSpecError: a missing or unknown column, an unparsable or out-of-range value, an
            inconsistent row (against its type's rules in ``mask_types.yaml``) or a duplicate id; the message
            names file, row (1 = first data row) and column.
        MaskTypesError: ``mask_types.yaml`` is malformed.
    """
    src = data_file("templates.csv") if path is None else path
    rules = mask_type_rules()
    specs: list[TemplateSpec] = []
    for where, rec in read_spec_table(src, list(_COLUMNS), "template_id", TemplateSpecError, "template table"):
        values = {
            col: _parse_cell(rec[col], kind, rule, f"{where}, column {col}") for col, (kind, rule) in _COLUMNS.items()
        }
        spec = TemplateSpec(**values)
        _check_consistency(spec, rules, where)
        specs.append(spec)
    return specs

