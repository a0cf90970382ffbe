"""Mask fabrics: the procedural library, photo textures and the per-type picker."""

from __future__ import annotations

import csv
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from maskbench.data.format import MASK_TYPES
from maskbench.data.masks import data_dir
from maskbench.data.masks.textures import (
    TEXTURE_KINDS,
    TextureBank,
    TextureSpecError,
    load_photo_textures,
    load_textures,
    render_texture,
)


@pytest.fixture(scope="module")
def specs():
    return load_textures()


def test_library_has_800_textures_of_every_kind(specs):
    assert len(specs) >= 800
    assert len({t.texture_id for t in specs}) == len(specs)
    kinds = Counter(t.kind for t in specs)
    assert set(kinds) == set(TEXTURE_KINDS)
    assert min(kinds.values()) >= 20
    uses = Counter(t.use for t in specs)
    assert uses["medical"] >= 30 and uses["respirator"] >= 30 and uses["fabric"] >= 600


def test_every_kind_renders_deterministically(specs):
    by_kind = {}
    for t in specs:
        by_kind.setdefault(t.kind, []).append(t)
    for kind, group in by_kind.items():
        for t in group[:3]:
            a = render_texture(t, 256)
            assert a.shape == (256, 256, 3) and a.dtype == np.uint8
            assert a.tobytes() == render_texture(t, 256).tobytes()
            if kind not in ("solid",):
                assert a.std(axis=(0, 1)).max() > 4, f"{t.texture_id} has no visible pattern"
    small = render_texture(specs[0], 64)
    assert small.shape == (64, 64, 3)


def test_solid_colour_is_the_requested_colour(specs):
    t = next(t for t in specs if t.kind == "solid")
    want = np.array([int(t.colors[0][i : i + 2], 16) for i in (1, 3, 5)])
    got = render_texture(t, 128).reshape(-1, 3).mean(0)
    assert np.abs(got - want).max() < 6


def _table(specs_path: Path, tmp_path: Path, edit) -> Path:
    rows = list(csv.DictReader(specs_path.read_text().splitlines()))[:5]
    header = list(rows[0])
    header, rows = edit(header, rows)
    p = tmp_path / "tex.csv"
    with p.open("w", newline="") as f:
        w = csv.DictWriter(f, header, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    return p


@pytest.mark.parametrize(
    ("column", "value", "match"),
    [
        ("kind", "tartan", "row 2, column kind: expected one of"),
        ("use", "party", "row 2, column use"),
        ("color1", "red", "row 2, column color1: expected a colour"),
        ("scale", "0.5", "row 2, column scale: 0.5 is outside"),
        ("seed", "1.5", "row 2, column seed: expected an integer"),
        ("color2", "#ffffff", "row 2, column color1: solid takes 1 colours, got 2"),
    ],
)
def test_validation_errors_name_file_row_and_column(tmp_path, column, value, match):
    def edit(header, rows):
        rows[1][column] = value
        return header, rows

    p = _table(data_dir() / "textures.csv", tmp_path, edit)
    with pytest.raises(TextureSpecError, match=match) as e:
        load_textures(p)
    assert str(p) in str(e.value)


def test_validation_duplicates_and_columns(tmp_path):
    src = data_dir() / "textures.csv"
    p = _table(src, tmp_path, lambda h, r: (h, [r[0], r[1], r[0]]))
    with pytest.raises(TextureSpecError, match="row 3, column texture_id: duplicate"):
        load_textures(p)
    p = _table(src, tmp_path, lambda h, r: (h[:-1], [{k: v for k, v in x.items() if k != "seed"} for x in r]))
    with pytest.raises(TextureSpecError, match="missing column"):
        load_textures(p)
    with pytest.raises(FileNotFoundError):
        load_textures(tmp_path / "none.csv")


def test_photo_textures_skip_corrupt_files(textures_dir, tmp_path):
    files = sorted(textures_dir.glob("*.jpg"))[:6]
    for f in files:
        shutil.copy(f, tmp_path / f.name)
    (tmp_path / "broken.jpg").write_bytes(files[0].read_bytes()[:300])
    (tmp_path / "notes.txt").write_text("not an image")
    photos, skipped = load_photo_textures(tmp_path)
    assert [pid for pid, _ in photos] == [f"photo:{f.name}" for f in files]
    assert all(img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8 for _, img in photos)
    assert [name for name, _ in skipped] == ["broken.jpg"]
    assert "broken.jpg" in skipped[0][1]


def test_photo_textures_whole_dtd_folder(textures_dir):
    photos, skipped = load_photo_textures(textures_dir)
    assert len(photos) + len(skipped) == len(list(textures_dir.glob("*.jpg")))
    assert len(photos) >= 390


def test_photo_textures_missing_or_empty_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_photo_textures(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no images"):
        load_photo_textures(tmp_path)
    (tmp_path / "bad.png").write_bytes(b"garbage")
    with pytest.raises(FileNotFoundError, match="could be read"):
        load_photo_textures(tmp_path)


def test_bank_picks_by_type(specs):
    bank = TextureBank(specs)
    by_id = {t.texture_id: t for t in specs}
    rng = np.random.default_rng(0)
    for mask_type in MASK_TYPES:
        picks = [bank.pick(mask_type, rng) for _ in range(400)]
        uses = Counter(by_id[p].use if p else None for p in picks)
        if mask_type == "surgical":
            assert uses["medical"] > 0.6 * len(picks)
        elif mask_type in ("n95", "kn95"):
            assert uses["respirator"] > 0.6 * len(picks)
        else:
            assert uses["fabric"] > 0.8 * len(picks)
            assert len({by_id[p].kind for p in picks if p}) >= 12
    a = [bank.pick("cloth", np.random.default_rng(5)) for _ in range(3)]
    b = [bank.pick("cloth", np.random.default_rng(5)) for _ in range(3)]
    assert a == b
    with pytest.raises(ValueError, match="unknown mask type"):
        bank.pick("visor", rng)


def test_bank_prefers_photos_and_caches(specs):
    rng = np.random.default_rng(1)
    photo = np.zeros((50, 80, 3), np.uint8)
    photo[:, :40] = 255
    bank = TextureBank(specs[:40], photos=[("photo:x.jpg", photo)], cache_size=2)
    picks = [bank.pick("surgical", rng) for _ in range(200)]
    assert picks.count("photo:x.jpg") > 0.7 * len(picks)
    img = bank.image("photo:x.jpg", 64)
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    assert bank.image("photo:x.jpg", 64) is img
    assert bank.image(None, 64) is None
    t0 = bank.image(specs[0].texture_id, 32)
    bank.image(specs[1].texture_id, 32)
    bank.image(specs[2].texture_id, 32)  # evicts the photo entry
    assert bank.image(specs[0].texture_id, 32).tobytes() == t0.tobytes()
    with pytest.raises(KeyError):
        bank.image("nope", 32)


def test_bank_travels_to_another_process_without_its_cache(specs):
    import pickle

    bank = TextureBank(specs[:20], cache_size=2)
    img = bank.image(bank.ids[0], 32)
    copy = pickle.loads(pickle.dumps(bank))
    assert copy.image.cache_info().currsize == 0 and copy.image.cache_info().maxsize == 2
    assert np.array_equal(copy.image(bank.ids[0], 32), img)


def test_bank_keeps_drawn_textures_on_disk(specs, tmp_path, monkeypatch):
    """A texture drawn once is read back from the cache folder, byte for byte; a damaged file is redrawn."""
    monkeypatch.setenv("MASKBENCH_CACHE", str(tmp_path))
    ids = [s.texture_id for s in specs[::97]]
    first = {i: TextureBank(specs).image(i, 64).copy() for i in ids}
    files = sorted((tmp_path / "textures").glob("*.npy"))
    assert len(files) == len(ids)
    files[0].write_bytes(b"not a numpy file")
    again = TextureBank(specs)
    for i in ids:
        assert np.array_equal(again.image(i, 64), first[i])
    assert np.array_equal(np.load(files[0]), first[files[0].name.split("-64-")[0]])  # redrawn and stored again
    off = TextureBank(specs, disk_cache=False)
    assert all(np.array_equal(off.image(i, 64), first[i]) for i in ids)
