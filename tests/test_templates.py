"""Mask templates: the table, the canonical-frame geometry contract, determinism and validation."""

from __future__ import annotations

import csv
import shutil
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from maskbench.core.io import read_png
from maskbench.data.format import MASK_TYPES
from maskbench.data.masks import (
    TemplateSpec,
    TemplateSpecError,
    canonical_landmarks,
    data_dir,
    face_hull,
    library_hash,
    load_templates,
    render_template,
    write_contact_sheet,
)

SIZE = 256
MARGIN = 6.0  # px at 256 that nose tip, mouth and chin must be covered by
HULL_SHRINK = 3.0


@pytest.fixture(scope="module")
def templates() -> list[TemplateSpec]:
    return load_templates()


@pytest.fixture(scope="module")
def lm() -> np.ndarray:
    return canonical_landmarks(SIZE)


@pytest.fixture(scope="module")
def inside_hull() -> np.ndarray:
    """(S, S) bool: pixel centres inside the jaw+brow hull shrunk by 3 px (independent of the renderer)."""
    hull = face_hull(SIZE)
    poly = np.round(hull * 16).astype(np.int32)
    m = np.zeros((SIZE, SIZE), np.uint8)
    cv2.fillPoly(m, [poly], 1, lineType=cv2.LINE_8, shift=4)
    dist = cv2.distanceTransform(m, cv2.DIST_L2, 5)
    return dist > HULL_SHRINK


def _disk(center: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel indices (rows, cols) whose centres lie within ``radius`` of ``center``."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    sel = (xx + 0.5 - center[0]) ** 2 + (yy + 0.5 - center[1]) ** 2 <= radius**2
    return np.nonzero(sel)


@pytest.fixture(scope="module")
def renders(templates):
    return {t.template_id: render_template(t, None, SIZE) for t in templates}


def test_table_has_900_templates_of_all_types(templates):
    assert len(templates) == 900
    assert len({t.template_id for t in templates}) == 900
    counts = Counter(t.mask_type for t in templates)
    assert set(counts) == set(MASK_TYPES)
    assert min(counts.values()) >= 120
    n95 = [t for t in templates if t.mask_type == "n95"]
    with_valve = sum(t.valve != "none" for t in n95)
    assert 0.3 * len(n95) <= with_valve <= 0.7 * len(n95)
    assert {t.style for t in templates if t.mask_type == "scarf"} == {"tube", "bandana"}
    for t in templates:
        assert t.anchors == ("face_neck" if t.mask_type == "scarf" else "face")


def test_canonical_landmarks_match_the_csv():
    lm = canonical_landmarks()
    assert lm.shape == (68, 2) and lm.dtype == np.float32
    np.testing.assert_allclose(lm[30], [128.0, 158.47], atol=1e-3)
    np.testing.assert_allclose(canonical_landmarks(512), lm * 2, atol=1e-3)


def test_render_output_contract(templates):
    for t in (templates[0], templates[-1]):
        rgb, alpha = render_template(t, None, SIZE)
        assert rgb.shape == (SIZE, SIZE, 3) and rgb.dtype == np.float32
        assert alpha.shape == (SIZE, SIZE) and alpha.dtype == np.float32
        assert rgb.min() >= 0 and rgb.max() <= 1 and alpha.min() >= 0 and alpha.max() <= 1
        assert (alpha == 1).sum() > 0.9 * (alpha > 0).sum() - 4 * SIZE
        assert np.all(rgb[alpha == 0] == 0)


@pytest.mark.slow
def test_every_template_covers_nose_tip_and_mouth(templates, renders, lm):
    points = [30, *range(48, 68)]
    for t in templates:
        _, alpha = renders[t.template_id]
        for i in points:
            rows, cols = _disk(lm[i], MARGIN)
            assert alpha[rows, cols].min() >= 0.5, f"{t.template_id} leaves landmark {i} uncovered"


@pytest.mark.slow
def test_every_template_top_edge_lies_between_bridge_and_nose_tip(templates, renders, lm):
    for t in templates:
        _, alpha = renders[t.template_id]
        col = alpha[:, 128]
        covered = np.nonzero(col > 0.5)[0]
        top = covered.min() + 0.5
        assert lm[28, 1] - 1 <= top <= lm[30, 1] - MARGIN, f"{t.template_id} top edge at y={top}"


@pytest.mark.slow
def test_face_masks_stay_inside_the_face_outline(templates, renders, inside_hull, lm):
    for t in templates:
        if t.mask_type == "scarf":
            continue
        _, alpha = renders[t.template_id]
        covered = alpha > 0
        outside = (covered & ~inside_hull).sum() / covered.sum()
        assert outside <= 0.01, f"{t.template_id}: {outside:.2%} of the mask is outside the face outline"
        # the bottom edge runs under the chin, close to the jaw line
        chin = lm[8]
        assert alpha[int(chin[1] - 16), int(chin[0])] >= 0.5, f"{t.template_id} does not reach the chin"


@pytest.mark.slow
def test_face_masks_have_loops_or_straps_ending_at_the_outline(templates, renders, inside_hull, lm):
    for t in templates:
        if t.mask_type == "scarf":
            continue
        _, alpha = renders[t.template_id]
        # loops/straps reach out from the body's side edges towards landmarks 0-4, (they end at the outline: see the hull test)
        band = alpha[int(lm[0, 1]) : int(lm[4, 1])]
        cols = np.nonzero(band.max(0) > 0.3)[0]
        for reach, edge in ((128 - cols.min(), 128 - lm[2, 0]), (cols.max() + 1 - 128, lm[14, 0] - 128)):
            assert reach >= min(t.half_width + 2, edge - HULL_SHRINK - 2), f"{t.template_id}: no loop/strap"


@pytest.mark.slow
def test_scarves_cover_chin_and_reach_the_neck(templates, renders, lm):
    for t in templates:
        if t.mask_type != "scarf":
            continue
        _, alpha = renders[t.template_id]
        rows, cols = _disk(lm[8], MARGIN)
        assert alpha[rows, cols].min() >= 0.5, f"{t.template_id} leaves the chin uncovered"
        assert alpha[SIZE - 1, 128] == 1.0, f"{t.template_id} does not reach the bottom edge"


def test_render_is_deterministic_and_scales(templates):
    rng = np.random.default_rng(0)
    tex = rng.integers(0, 256, (97, 150, 3), dtype=np.uint8)
    by_type = {}
    for t in templates:
        by_type.setdefault(t.mask_type, t)
    for t in by_type.values():
        for texture in (None, tex):
            a = render_template(t, texture, SIZE)
            b = render_template(t, None if texture is None else tex.copy(), SIZE)
            assert a[0].tobytes() == b[0].tobytes() and a[1].tobytes() == b[1].tobytes()
        small = render_template(t, None, 128)[1]
        big = render_template(t, None, SIZE)[1]
        down = cv2.resize(big, (128, 128), interpolation=cv2.INTER_AREA)
        assert np.abs(down - small).mean() < 0.02


def test_texture_shows_through(templates):
    t = next(t for t in templates if t.mask_type == "cloth")
    red = np.zeros((64, 64, 3), np.uint8)
    red[..., 0] = 220
    rgb, alpha = render_template(t, red, SIZE)
    inner = alpha == 1
    assert rgb[inner, 0].mean() > 3 * rgb[inner, 1].mean()


def test_render_rejects_bad_input(templates):
    with pytest.raises(ValueError, match="texture"):
        render_template(templates[0], np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        render_template(templates[0], np.zeros((10, 10, 3), np.float32))
    with pytest.raises(ValueError, match="size"):
        render_template(templates[0], None, 8)


# ------------------------------------------------------------------------------------- validation


def _rows() -> tuple[list[str], list[dict[str, str]]]:
    text = (data_dir() / "templates.csv").read_text(encoding="utf-8")
    reader = csv.DictReader(text.splitlines())
    return list(reader.fieldnames or []), list(reader)


def _write(tmp_path: Path, header: list[str], rows: list[dict[str, str]]) -> Path:
    p = tmp_path / "t.csv"
    with p.open("w", newline="") as f:
        w = csv.DictWriter(f, header, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    return p


def test_load_explicit_path_round_trips(tmp_path):
    header, rows = _rows()
    p = _write(tmp_path, header, rows[:5])
    assert [t.template_id for t in load_templates(p)] == [r["template_id"] for r in rows[:5]]


@pytest.mark.parametrize(
    ("row", "column", "value", "match"),
    [
        (2, "mask_type", "visor", "row 2, column mask_type: expected one of"),
        (1, "top_y", "abc", "row 1, column top_y: expected a number"),
        (3, "top_y", "190", r"row 3, column top_y: 190.0 is outside"),
        (1, "pleats", "2.5", "row 1, column pleats: expected an integer"),
        (1, "color", "blue", r"row 1, column color: expected a colour"),
        (1, "anchors", "face_neck", "row 1, column anchors: surgical uses anchor set 'face'"),
        (2, "straps", "head_straps", "row 2, column straps"),
        (1, "valve", "round", "row 1, column valve: only n95"),
        (1, "half_width", "90", "row 1, column half_width"),
        (1, "top_y", "nan", "expected a finite number"),
    ],
)
def test_validation_errors_name_file_row_and_column(tmp_path, row, column, value, match):
    header, rows = _rows()
    rows = [dict(r) for r in rows[:4]]
    rows[row - 1][column] = value
    p = _write(tmp_path, header, rows)
    with pytest.raises(TemplateSpecError, match=match) as e:
        load_templates(p)
    assert str(p) in str(e.value)


def test_validation_duplicate_missing_and_unknown_columns(tmp_path):
    header, rows = _rows()
    p = _write(tmp_path, header, [rows[0], rows[1], rows[0]])
    with pytest.raises(TemplateSpecError, match="row 3, column template_id: duplicate id"):
        load_templates(p)
    p = _write(tmp_path, [h for h in header if h != "seed"], [{k: v for k, v in r.items() if k != "seed"} for r in rows[:2]])
    with pytest.raises(TemplateSpecError, match="missing column"):
        load_templates(p)
    p = _write(tmp_path, header + ["extra"], [dict(r, extra="1") for r in rows[:2]])
    with pytest.raises(TemplateSpecError, match="unknown column"):
        load_templates(p)
    p = _write(tmp_path, header, [])
    with pytest.raises(TemplateSpecError, match="no rows"):
        load_templates(p)
    with pytest.raises(FileNotFoundError):
        load_templates(tmp_path / "nope.csv")


def test_contact_sheet(tmp_path, templates):
    out = tmp_path / "sheet.png"
    picked = [t for t in templates if t.template_id.endswith("-0001")]
    sheet = write_contact_sheet(out, picked, size=64, columns=3)
    assert sheet.shape == (2 * (64 + 14), 3 * 64, 3)
    assert read_png(out).shape == sheet.shape
    with pytest.raises(ValueError):
        write_contact_sheet(out, [], size=64)


def test_cli_lists_templates_and_writes_a_sheet(tmp_path):
    from click.testing import CliRunner

    from maskbench.cli import main

    sheet = tmp_path / "sheet.png"
    res = CliRunner().invoke(main, ["templates", "--type", "kn95", "--limit", "3", "--list", "--sheet", str(sheet),
                                    "--size", "64"])
    assert res.exit_code == 0, res.output
    assert "total" in res.output and "(of 900)" in res.output
    assert "kn95-0003" in res.output and "kn95-0004" not in res.output
    assert read_png(sheet).shape == (64 + 14, 3 * 64, 3)


def test_cli_summarises_the_library_by_default():
    from click.testing import CliRunner

    from maskbench.cli import main

    res = CliRunner().invoke(main, ["templates"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert len(lines) < 12 and any(l.startswith("total") and l.split()[1] == "900" for l in lines)
    assert "surgical" in res.output and "--list" in res.output and "surgical-0001" not in res.output
    listed = CliRunner().invoke(main, ["templates", "--list"]).output.splitlines()
    assert len(listed) > 900


def test_data_dir_and_library_hash():
    d = data_dir()
    for name in ("mean_face_68.csv", "anchors.json", "templates.csv", "textures.csv", "mask_types.yaml", "README.md"):
        assert (d / name).is_file(), name
    h = library_hash()
    assert h.startswith("sha256:") and len(h) == 7 + 64


def test_library_hash_changes_with_any_data_file(tmp_path, monkeypatch):
    from maskbench.data.masks import frame as F
    from maskbench.data.masks import render as R

    h = library_hash()
    copy = tmp_path / "lib"
    shutil.copytree(data_dir(), copy)
    monkeypatch.setattr(F, "data_dir", lambda: copy)
    assert library_hash() == h  # same bytes elsewhere: same hash
    anchors = copy / "anchors.json"
    anchors.write_bytes(anchors.read_bytes() + b" ")
    assert library_hash() != h
    monkeypatch.setattr(R, "RENDERER_VERSION", "other")
    anchors.write_bytes(anchors.read_bytes()[:-1])
    assert library_hash() != h  # the renderer version is part of it too


def _anchor_hull_mask(name: str, lm: np.ndarray) -> np.ndarray:
    """(S, S) bool: inside the convex hull of an anchor set's control points (what the warp can move)."""
    import json

    spec = json.loads((data_dir() / "anchors.json").read_text())[name]
    pts = [lm[i] for i in spec["landmarks"]]
    pts += [lm[e["from"]] + e["t"] * (lm[e["from"]] - lm[e["away"]]) for e in spec["extrapolated"]]
    hull = cv2.convexHull(np.array(pts, np.float32))
    m = np.zeros((SIZE, SIZE), np.uint8)
    cv2.fillPoly(m, [np.round(hull * 16).astype(np.int32)], 1, shift=4)
    return m.astype(bool)


@pytest.mark.slow
def test_templates_stay_inside_their_anchor_hull(templates, renders, lm):
    hulls = {name: _anchor_hull_mask(name, lm) for name in ("face", "face_neck")}
    for t in templates:
        _, alpha = renders[t.template_id]
        outside = ((alpha > 0) & ~hulls[t.anchors]).sum()
        assert outside == 0, f"{t.template_id}: {outside} px outside the {t.anchors} anchor hull"


# --------------------------------------------------------------------------------- mask_types.yaml


def test_mask_type_rules_cover_every_type_and_every_shader_exists():
    from maskbench.data.masks import load_mask_types
    from maskbench.data.masks.shaders import SHADERS
    from maskbench.data.masks.spec import _SHADER_NAMES

    rules = load_mask_types()
    assert tuple(rules) == MASK_TYPES
    assert set(_SHADER_NAMES) == set(SHADERS)
    for r in rules.values():
        assert abs(sum(r.texture_mix) - 1) < 1e-9 and set(r.pleats) <= set(r.styles)


def _rules_copy(tmp_path: Path, edit) -> Path:
    import yaml

    raw = yaml.safe_load((data_dir() / "mask_types.yaml").read_text())
    edit(raw)
    p = tmp_path / "mask_types.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda r: r.pop("kn95"), "must be exactly .*missing: kn95"),
        (lambda r: r.update(visor=r["n95"]), "unknown: visor"),
        (lambda r: r["n95"].pop("shader"), r"n95: missing keys \['shader'\]"),
        (lambda r: r["cloth"].update(colour="#000000"), r"cloth: .*unknown keys \['colour'\]"),
        (lambda r: r["scarf"].update(anchors="neck"), "scarf, anchors: expected one of face, face_neck"),
        (lambda r: r["surgical"].update(half_width=[64, 44]), r"surgical, half_width: expected \[min, max\]"),
        (lambda r: r["surgical"]["texture_mix"].update(medical=0.9), "surgical, texture_mix: .*sum to 1"),
        (lambda r: r["cloth"].update(pleats={"folded": [2, 4]}), "cloth, pleats: expected a mapping from its styles"),
        (lambda r: r["kn95"].update(shader="visor"), "kn95, shader: expected one of"),
        (lambda r: r["n95"].update(valve="yes"), "n95, valve: expected true or false"),
        (lambda r: r["n95"].update(swatch="white"), "n95, swatch: expected a colour"),
    ],
)
def test_mask_type_rules_errors_name_file_type_and_key(tmp_path, edit, match):
    from maskbench.data.masks import MaskTypesError, load_mask_types

    p = _rules_copy(tmp_path, edit)
    with pytest.raises(MaskTypesError, match=match) as e:
        load_mask_types(p)
    assert str(p) in str(e.value)


def test_template_rows_follow_their_types_rules(tmp_path, monkeypatch):
    """A rule changed in mask_types.yaml changes what the template table may hold."""
    from maskbench.data.masks import frame as F
    from maskbench.data.masks import spec as S

    shutil.copytree(data_dir(), tmp_path / "lib")
    _rules_copy(tmp_path / "lib", lambda r: r["kn95"].update(half_width=[44, 50]))
    monkeypatch.setattr(F, "data_dir", lambda: tmp_path / "lib")
    S.mask_type_rules.cache_clear()
    try:
        with pytest.raises(TemplateSpecError, match=r"column half_width: kn95 half width must be in \[44, 50\]"):
            load_templates()
    finally:
        S.mask_type_rules.cache_clear()
