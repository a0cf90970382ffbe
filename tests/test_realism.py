"""The realism measure (classifier two-sample test): the test's level and power, the crop rule and its
no-face fallback, the feature cache, the report, and the CLI's errors.

Most tests use a cheap stand-in for the Inception network (colour thumbnails of the crops): the
pipeline is network-agnostic, and Inception on this CPU runs at a few images per second. One slow test
runs the real network end to end.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from maskbench.cli import main
from maskbench.core.io import read_image, write_png
from maskbench.data.realism import (
    CROP_SIZE,
    FaceCropper,
    RealismError,
    c2st,
    folder_set,
    format_report,
    newcombe_interval,
    realism_report,
    set_features,
    square_crop_box,
    synth_set,
    wilson_interval,
)
from maskbench.data.testing import Thumbnails, write_fake_dataset


@pytest.fixture(scope="module")
def cropper() -> FaceCropper:
    return FaceCropper()


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("MASKBENCH_CACHE", str(d))
    return d


def _celeba_folder(celeba_dir, out, start: int, n: int, transform=None):
    """Copy ``n`` CelebA photos (sorted, from ``start``) into ``out``, optionally transformed."""
    out.mkdir(parents=True, exist_ok=True)
    files = sorted((celeba_dir / "img_align_celeba").iterdir())[start:start + n]
    for f in files:
        im = read_image(f)
        write_png(out / f"{f.stem}.png", transform(im) if transform else im)
    return out


def _blur_and_tint(im: np.ndarray) -> np.ndarray:
    out = cv2.GaussianBlur(im, (0, 0), 6).astype(np.float32)
    out = out * np.array([1.0, 0.55, 0.35], np.float32) + np.array([60, 0, 0], np.float32)
    return np.clip(out, 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------ the test itself


def test_wilson_interval_matches_published_examples():
    # Newcombe (1998), Statistics in Medicine 17:857, Table I, method 3 (Wilson score, no continuity correction)
    for (k, n), expected in {(81, 263): (0.2553, 0.3662), (15, 148): (0.0624, 0.1605), (0, 20): (0.0, 0.1611),
                             (1, 29): (0.0061, 0.1718)}.items():
        assert wilson_interval(k, n) == pytest.approx(expected, abs=6e-5)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def test_newcombe_interval_contains_the_difference_and_matches_a_published_example():
    # Newcombe (1998), Table II, example (a): 56/70 - 48/80, method 10 -> [0.0524, 0.3339]
    lo, hi = newcombe_interval(56, 70, 48, 80)
    assert (lo, hi) == pytest.approx((0.0524, 0.3339), abs=1e-4)


def test_c2st_on_identical_distributions_is_at_chance():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(300, 64)), rng.normal(size=(300, 64))
    r = c2st(a, b, seed=0)
    assert r.n_per_class == 300 and r.n == 600
    assert abs(r.accuracy - 0.5) < 0.06 and r.p_value > 0.05
    assert r.ci_low < 0.5 < r.ci_high


def test_c2st_on_different_distributions_is_near_one_and_balances_classes():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(400, 64)), rng.normal(0.5, 1.0, size=(150, 64))
    r = c2st(a, b, seed=0)
    assert r.n_per_class == 150  # the larger set subsampled
    assert r.accuracy > 0.95 and r.p_value < 1e-30


def test_c2st_refuses_too_few_samples_or_mismatched_widths():
    with pytest.raises(ValueError, match="at least 5"):
        c2st(np.zeros((3, 4)), np.zeros((10, 4)))
    with pytest.raises(ValueError, match="one width"):
        c2st(np.zeros((10, 4)), np.zeros((10, 5)))


# ------------------------------------------------------------------------------------ crops


def test_square_crop_box_rule():
    # a face in the middle: side 1.3 x the longer box side, centred on the box
    assert square_crop_box((100, 100, 40, 60), 400, 400) == (81, 91, 78)
    # near the left/top border: shifted inside, same side
    x0, y0, side = square_crop_box((0, 0, 40, 60), 400, 400)
    assert (x0, y0, side) == (0, 0, 78)
    # larger than the image: shrunk to its short side, inside
    assert square_crop_box((10, 10, 200, 300), 250, 300) == (0, 35, 250)  # centre y 160 - 125


def test_blank_images_fall_back_to_the_centre_square_and_are_counted(tmp_path, cache, cropper, celeba_dir):
    blanks = tmp_path / "blank"
    blanks.mkdir()
    ramp = np.tile(np.linspace(0, 255, 160, dtype=np.uint8)[None, :, None], (100, 1, 3))  # 160 wide, 100 high
    for i in range(3):
        write_png(blanks / f"blank{i}.png", np.full((120, 90, 3), 128, np.uint8))
    write_png(blanks / "ramp.png", ramp)
    (blanks / "broken.jpg").write_bytes(b"not an image")
    _celeba_folder(celeba_dir, blanks, 0, 2)
    s = folder_set(blanks, limit=None)
    assert len(s) == 7
    f = set_features(s, cropper, Thumbnails())
    assert len(f.features) == 6 and f.unreadable == (str(blanks / "broken.jpg"),)
    names = [p.name for p in s.paths if p.name != "broken.jpg"]
    found = dict(zip(names, f.found))
    assert not any(found[n] for n in names if n.startswith(("blank", "ramp")))
    assert all(found[n] for n in names if n.endswith(".png") and n[0].isdigit())
    assert f.fallback_share == pytest.approx(4 / 6)
    crop, ok = cropper(ramp)
    assert not ok and crop.shape == (CROP_SIZE, CROP_SIZE, 3)
    expected = cv2.resize(ramp[:, 30:130], (CROP_SIZE, CROP_SIZE), interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(crop, expected)


def test_features_are_cached_per_file_list_and_crop_rule(tmp_path, cache, cropper, celeba_dir):
    folder = _celeba_folder(celeba_dir, tmp_path / "a", 0, 8)
    s = folder_set(folder, limit=None)
    net = Thumbnails()
    first = set_features(s, cropper, net)
    assert not first.cached and net.images_seen == 8
    again = set_features(s, cropper, net)
    assert again.cached and net.images_seen == 8  # nothing recomputed
    assert np.array_equal(again.features, first.features) and np.array_equal(again.found, first.found)
    assert len(list((cache / "realism").glob("*.npz"))) == 1
    # another file list, another crop rule: recomputed
    set_features(folder_set(folder, limit=5, seed=1), cropper, net)
    assert net.images_seen == 13
    set_features(s, FaceCropper(scale=1.6), net)
    assert net.images_seen == 21
    # a changed file changes the key
    write_png(s.paths[0], np.zeros((64, 64, 3), np.uint8))
    assert not set_features(s, cropper, net).cached


def test_draws_are_seeded_sorted_subsets(tmp_path):
    for i in range(30):
        write_png(tmp_path / f"{i:03d}.png", np.full((40, 40, 3), i, np.uint8))
    a, b, c = (folder_set(tmp_path, limit=10, seed=s) for s in (0, 0, 1))
    assert a.paths == b.paths and a.paths != c.paths and list(a.paths) == sorted(a.paths)
    assert len(set(a.paths)) == 10 and a.available == 30
    assert len(folder_set(tmp_path, limit=100)) == 30
    with pytest.raises(RealismError, match="not a Masked-Faces dataset"):
        synth_set(tmp_path)


# ------------------------------------------------------------------------------------ on images


@pytest.mark.slow
def test_two_draws_of_one_photo_collection_are_indistinguishable(tmp_path, cache, cropper, celeba_dir):
    a = set_features(folder_set(_celeba_folder(celeba_dir, tmp_path / "a", 0, 50), limit=None), cropper, Thumbnails())
    b = set_features(folder_set(_celeba_folder(celeba_dir, tmp_path / "b", 50, 50), limit=None), cropper, Thumbnails())
    r = c2st(a.features, b.features, seed=0)
    assert abs(r.accuracy - 0.5) < 0.15 and r.p_value > 0.05


@pytest.mark.slow
def test_originals_and_blurred_tinted_photos_are_told_apart(tmp_path, cache, cropper, celeba_dir):
    a = set_features(folder_set(_celeba_folder(celeba_dir, tmp_path / "a", 0, 40), limit=None), cropper, Thumbnails())
    b = set_features(folder_set(_celeba_folder(celeba_dir, tmp_path / "b", 40, 40, _blur_and_tint), limit=None),
                     cropper, Thumbnails())
    r = c2st(a.features, b.features, seed=0)
    assert r.accuracy > 0.95 and r.p_value < 1e-15


@pytest.mark.slow
def test_report_on_a_fake_dataset(tmp_path, cache, cropper, celeba_dir):
    ds = write_fake_dataset(tmp_path / "syn", 50, size=64, seed=3)
    synth = synth_set(ds, limit=None)
    assert len(synth) == 50 and synth.tags[:5] == ("surgical", "cloth", "n95", "kn95", "scarf")
    real = folder_set(_celeba_folder(celeba_dir, tmp_path / "real", 0, 30), limit=None)
    ctl_a = folder_set(_celeba_folder(celeba_dir, tmp_path / "ca", 30, 30), limit=None)
    ctl_b = folder_set(_celeba_folder(celeba_dir, tmp_path / "cb", 60, 30), limit=None)
    rep = realism_report(synth, real, ctl_a, ctl_b, cropper=cropper, net=Thumbnails())
    assert rep.synthetic_vs_real["n_per_class"] == 30
    assert rep.gap["gap"] == pytest.approx(rep.synthetic_vs_real["accuracy"] - rep.control["accuracy"])
    assert rep.gap["ci_low"] < rep.gap["gap"] < rep.gap["ci_high"]
    assert rep.sets["synthetic"]["mask_types"] == dict.fromkeys(("surgical", "cloth", "n95", "kn95", "scarf"), 10)
    for t, r in rep.per_type.items():  # each type's 10 faces against 10 drawn real ones
        assert r["n_per_class"] == 10 and r["gap_gap"] == pytest.approx(r["accuracy"] - rep.control["accuracy"])
    assert rep.sets["control_a"]["fallback_share"] == 0.0
    assert np.isfinite(rep.fid["synthetic_vs_real"]) and rep.fid["synthetic_vs_real"] > 0
    # a draw of 20 leaves 4 per type: too few for a per-type test, listed as skipped
    small = realism_report(synth_set(ds, limit=20), real, ctl_a, ctl_b, cropper=cropper, net=Thumbnails())
    assert all("skipped" in v for v in small.per_type.values()) and small.sets["real"]["cached"]
    text = format_report(rep)
    assert "realism gap" in text and "no face (fallback)" in text


# ------------------------------------------------------------------------------------ CLI


@pytest.mark.parametrize("args, message", [
    (["realism", "{tmp}/nowhere"], "does not exist"),
    (["realism", "{tmp}"], "not a Masked-Faces dataset"),
    (["realism", "{ds}", "--real", "{tmp}/empty"], "no image files"),
    (["realism", "{ds}", "--real", "{tmp}/missing"], "no such folder"),
    (["realism", "{ds}"], "no --real folder given"),
    (["realism", "{ds}", "--limit", "0"], "--limit"),
])
def test_cli_bad_arguments_exit_with_one_line(tmp_path, monkeypatch, args, message):
    monkeypatch.delenv("MASKBENCH_TEST_DATA", raising=False)
    ds = write_fake_dataset(tmp_path / "ds", 6, size=32)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    r = CliRunner().invoke(main, [a.format(tmp=tmp_path, ds=ds) for a in args])
    assert r.exit_code == 2, r.output
    assert message in r.output and "Traceback" not in r.output
    assert len([line for line in r.output.strip().splitlines() if line.startswith("Error")]) == 1


@pytest.mark.slow
def test_cli_end_to_end_with_inception(tmp_path, cache, celeba_dir):
    """The real network: a 16-face fake dataset (flat-colour masks on CelebA faces) against CelebA folders;
    the JSON holds the printed numbers, and a rerun reads every set from the cache."""
    ds = write_fake_dataset(tmp_path / "syn", 16, source=celeba_dir, size=128, seed=0)
    folders = [_celeba_folder(celeba_dir, tmp_path / name, 100 + 16 * i, 16) for i, name in enumerate("rab")]
    out = tmp_path / "r.json"
    args = ["realism", str(ds), "--real", str(folders[0]), "--control-a", str(folders[1]), "--control-b",
            str(folders[2]), "--limit", "16", "--json", str(out)]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    rep = json.loads(out.read_text())
    assert f"{rep['synthetic_vs_real']['accuracy']:.3f}" in r.output
    # flat-colour masks on half the face are obvious to Inception; three CelebA draws are not told apart
    assert rep["synthetic_vs_real"]["accuracy"] > 0.8 and rep["control"]["p_value"] > 0.05
    assert rep["sets"]["control_a"]["fallback_share"] == 0.0
    assert not any(s["cached"] for s in rep["sets"].values())
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0 and json.loads(out.read_text())["synthetic_vs_real"] == rep["synthetic_vs_real"]
    assert all(s["cached"] for s in json.loads(out.read_text())["sets"].values())
