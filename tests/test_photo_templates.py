"""Photo templates (issue 24): the shipped library, the harvest, and synthesis with masks keyed out of photos."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from maskbench.core.io import read_csv_rows
from maskbench.data.dataset import MaskedFaces
from maskbench.data.format import MASK_TYPES
from maskbench.data.masks import canonical_landmarks, put_mask
from maskbench.data.masks.photo import (
    LIBRARY_KIND,
    PhotoLibrary,
    PhotoLibraryError,
    deshade,
    encode_layer,
    resolve_photo_library,
)
from maskbench.data.sources import resolve_source
from maskbench.data.synth import MaskSynthesizer, SynthConfig, SynthConfigError, synthesize
from maskbench.faces.landmarks import MOUTH, NOSE_TIP

ROOT = Path(__file__).resolve().parent.parent
SPLIT = ROOT / "mask_templates" / "photo" / "real_masked_dev_split.csv"
TYPES = ROOT / "mask_templates" / "photo" / "types.csv"


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)}


# ------------------------------------------------------------------------------------ the shipped library


def test_shipped_library_has_every_type_its_card_and_no_machine_paths():
    lib = PhotoLibrary(resolve_photo_library())
    assert lib.card["kind"] == LIBRARY_KIND and "research" in lib.card["licence"]
    assert set(lib.by_type) == set(MASK_TYPES)
    assert sum(lib.card["per_type"].values()) == len(lib) >= 50
    for text in ((lib.root / "card.json").read_text(), (lib.root / "templates.csv").read_text(),
                 (lib.root / "rejected.csv").read_text()):
        assert "/work/" not in text and "/home/" not in text and "/tmp/" not in text
    harvest_half = {r["file"] for r in read_csv_rows(SPLIT) if r["half"] == "harvest"}
    assert len(harvest_half) == 500
    # harvested from the harvest half only: the measurement half stays unseen
    assert {t.source_file for t in lib.templates} <= harvest_half
    rejected = read_csv_rows(lib.root / "rejected.csv")
    assert len(rejected) + len(lib) == len(harvest_half)  # no photo silently dropped
    assert all(r["reason"] for r in rejected)
    rgb, alpha = lib.layer(lib.templates[0].template_id, 128)
    assert rgb.shape == (128, 128, 3) and alpha.shape == (128, 128) and 0 < alpha.mean() < 0.5
    assert not rgb[alpha <= 0].any()


def test_a_missing_or_foreign_library_is_refused(tmp_path):
    with pytest.raises(PhotoLibraryError, match="harvest"):
        resolve_photo_library(tmp_path / "nope")
    (tmp_path / "card.json").write_text(json.dumps({"kind": "something else", "version": 1}))
    (tmp_path / "templates.csv").write_text("template_id\n")
    with pytest.raises(PhotoLibraryError, match="kind"):
        PhotoLibrary(tmp_path)
    with pytest.raises(SynthConfigError, match="procedural, photo"):
        SynthConfig(templates="drawn")
    with pytest.raises(SynthConfigError, match="photo_share"):
        SynthConfig(templates="mix", photo_share=1.5)


def _gradient_library(tmp_path: Path) -> Path:
    """A one-template library (surgical) whose colour is lit from the left: luma 0.25 -> 0.85 across it."""
    src = resolve_photo_library()
    lib = PhotoLibrary(src)
    t = lib.by_type["surgical"][0]
    root = tmp_path / "lib"
    (root / "layers").mkdir(parents=True)
    shutil.copy(src / "card.json", root / "card.json")
    rows = read_csv_rows(src / "templates.csv")
    row = next(r for r in rows if r["template_id"] == t.template_id)
    with open(root / "templates.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(row))
        w.writeheader()
        w.writerow(row)
    _, alpha = lib.layer(t.template_id, 256)
    xs = np.nonzero(alpha.max(0) > 0.5)[0]
    ramp = np.clip((np.arange(256) - xs.min()) / max(xs.max() - xs.min(), 1), 0, 1)
    grey = (0.25 + 0.6 * ramp)[None, :, None] * np.ones((256, 1, 3))
    (root / "layers" / f"{t.template_id}.png").write_bytes(encode_layer(np.concatenate(
        [grey * (alpha[..., None] > 0), alpha[..., None]], axis=2).astype(np.float32)))
    return root


def _left_right_log_ratio(masked: np.ndarray, hole: np.ndarray) -> float:
    luma = cv2.cvtColor(masked, cv2.COLOR_RGB2GRAY).astype(np.float64)
    inner = cv2.erode(hole.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
    xs = np.nonzero(inner.any(0))[0]
    third = (xs.max() - xs.min()) // 3
    left = inner.copy()
    left[:, xs.min() + third:] = False
    right = inner.copy()
    right[:, :xs.max() - third] = False
    return float(np.log(luma[right].mean() / luma[left].mean()))


def test_relighting_removes_the_source_photos_light(tmp_path):
    """A template lit from one side, put on an evenly lit face: with relighting the mask comes out evenly
    lit; without it the source photo's gradient survives on the target."""
    root = _gradient_library(tmp_path)
    face = np.full((256, 256, 3), 150, np.uint8)
    lm = canonical_landmarks(256)
    ratios = {}
    for relight in (True, False):
        cfg = SynthConfig(templates=f"photo:{root}", mask_types=("surgical",), photo_texture_share=0.0,
                          photo_relight=relight)
        synth = MaskSynthesizer(cfg)
        m = synth.draw_mask(lm, np.random.default_rng(0), "surgical")
        assert m.template_kind == "photo"
        masked, hole = put_mask(face, m.rgb, m.alpha, m.warp, m.anchors, None, landmarks=lm)
        ratios[relight] = _left_right_log_ratio(masked, hole)
    assert abs(ratios[False]) > 0.45  # measured 0.63: the outer thirds of a 0.25 -> 0.85 ramp
    assert abs(ratios[True]) < 0.15


def test_deshade_keeps_fine_detail_and_flattens_the_light():
    alpha = np.zeros((256, 256), np.float32)
    alpha[80:200, 60:200] = 1.0
    x = np.arange(256, dtype=np.float32)
    light = 0.4 + 0.5 * (x - 60) / 140
    pleats = 1.0 + 0.15 * np.sign(np.sin(np.arange(256) / 3.0))[:, None]  # 10 px horizontal pleats
    rgb = np.clip(0.8 * light[None, :, None] * pleats[..., None] * np.ones(3), 0, 1).astype(np.float32) * alpha[..., None]
    flat, shading = deshade(rgb, alpha)
    y = flat[100:180, 90:170].mean(2)
    assert abs(np.log(y[:, -10:].mean() / y[:, :10].mean())) < 0.1  # the light is gone
    rows = y.mean(1)
    assert rows.max() / rows.min() > 1.2  # the pleats stay


# ------------------------------------------------------------------------------------ synthesis contract


@pytest.fixture(scope="module")
def photo_run(celeba_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("photo_run")
    report = synthesize(resolve_source("celeba", celeba_dir), out, SynthConfig(seed=5, templates="photo"), limit=60,
                        workers=2, progress=False)
    return out, report


@pytest.mark.slow
def test_photo_templates_keep_the_dataset_contract(photo_run):
    out, report = photo_run
    lib = PhotoLibrary(resolve_photo_library())
    assert report.written >= 55
    n = 0
    for split in ("train", "test"):
        if not (out / split / "metadata.jsonl").is_file():
            continue
        ds = MaskedFaces(out, split)
        for i in range(len(ds)):
            raw = cv2.imread(str(out / split / ds.records[i]["mask_file_name"]), cv2.IMREAD_UNCHANGED)
            assert set(np.unique(raw)) <= {0, 255}
            s = ds[i]
            assert np.array_equal(s.masked[~s.mask], s.original[~s.mask])  # outside untouched
            assert (s.masked[s.mask] != s.original[s.mask]).any(axis=-1).mean() > 0.9  # the hole is what changed
            rec = s.record
            assert rec["template_kind"] == "photo" and rec["template_id"] in {t.template_id for t in lib.templates}
            lm = np.rint(np.array(rec["landmarks"])).astype(int)
            for k in [NOSE_TIP, *MOUTH]:
                assert s.mask[lm[k][1], lm[k][0]], f"{rec['id']}: landmark {k} not covered"
            if rec["mask_type"] == "scarf":  # below the chin
                ys = np.nonzero(s.mask[:, lm[8][0]])[0]
                assert ys.max() > lm[8][1]
            n += 1
    assert n == report.written
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["photo_library"]["licence"].startswith("research")
    assert "+photo:sha256:" in manifest["template_library"]


@pytest.mark.slow
def test_photo_and_mix_synthesis_is_identical_with_any_worker_count(celeba_dir, tmp_path):
    src = resolve_source("celeba", celeba_dir)
    cfg = SynthConfig(seed=11, templates="mix", photo_share=0.5)
    synthesize(src, tmp_path / "a", cfg, limit=20, workers=1, progress=False)
    synthesize(src, tmp_path / "b", cfg, limit=20, workers=2, progress=False)
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert len(a) > 50 and a == b
    kinds = {r["template_kind"] for s in ("train", "test") if (tmp_path / "a" / s / "metadata.jsonl").is_file()
             for r in MaskedFaces(tmp_path / "a", s).records}
    assert kinds == {"photo", "procedural"}


def test_a_bad_templates_option_is_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "maskbench", "synth", "--templates", "photo:" + str(tmp_path / "none"),
                        "--out", str(tmp_path / "o")], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "no such photo-template library" in r.stderr and len(r.stderr.strip().splitlines()) == 1


# ------------------------------------------------------------------------------------ harvest


@pytest.mark.slow
def test_harvest_accounts_for_every_photo_and_writes_a_loadable_library(shared_data, tmp_path):
    from maskbench.harvest.library import harvest

    # 8 photos the shipped library took and 8 it rejected, with a corrupt file beside them
    shipped = PhotoLibrary(resolve_photo_library())
    taken = sorted(t.source_file for t in shipped.templates)[::12][:8]
    refused = [r["source_file"] for r in read_csv_rows(shipped.root / "rejected.csv")][::40][:8]
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in taken + refused:
        shutil.copy(shared_data / "real-masked-dev" / name, photos / name)
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    types = tmp_path / "types.csv"
    types.write_text(TYPES.read_text() + "broken.jpg,cloth,yes\n")
    out = tmp_path / "lib"
    rep = harvest(photos, out, types=types, split=None)
    lib = PhotoLibrary(out)
    rejected = read_csv_rows(out / "rejected.csv")
    assert rep.photos == 17 and len(lib) + len(rejected) == 17
    assert {t.source_file for t in lib.templates} == set(taken)  # the same decisions as the shipped build
    assert {r["source_file"] for r in rejected} == set(refused) | {"broken.jpg"}
    assert next(r for r in rejected if r["source_file"] == "broken.jpg")["reason"].startswith("unreadable")
    assert (out / "sheet.jpg").stat().st_size > 1000 and (out / "rejected.jpg").is_file()
    for t in lib.templates:
        _, alpha = lib.layer(t.template_id)
        assert ((alpha > 0) & (alpha < 1)).any() and alpha.max() == 1.0  # a soft matte edge, an opaque body
    with pytest.raises(Exception, match="exists"):
        harvest(photos, out, types=types)


@pytest.mark.slow
def test_harvest_of_synthetic_faces_recovers_the_hole(photo_run):
    """Where the truth is known (the photo run's masked faces), the keyed alpha matches the hole."""
    from maskbench.harvest.check import check_on_dataset

    out, _ = photo_run
    res = check_on_dataset(out, split="train", limit=24)
    assert res["keyed"] >= 20
    assert res["iou_mean"] >= 0.85, res["lines"]
    assert res["nme_mean"] < 0.15, res["lines"]


def test_templates_cli_summarises_the_photo_library_and_refuses_a_harvest_without_types(tmp_path):
    run = [sys.executable, "-m", "maskbench", "templates"]
    r = subprocess.run([*run, "--library", "photo", "--type", "surgical", "--limit", "4", "--sheet",
                        str(tmp_path / "s.jpg")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "photo templates (research" in r.stdout and f"wrote {tmp_path / 's.jpg'} (4 templates)" in r.stdout
    assert cv2.imread(str(tmp_path / "s.jpg")).shape[1] == 4 * 128
    r = subprocess.run([*run, "harvest", str(tmp_path), "--out", str(tmp_path / "lib")], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode != 0 and "--types" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_a_folder_made_before_photo_templates_still_resumes(celeba_dir, tmp_path):
    """A manifest without the photo settings (written before them) is read with their defaults: the same
    procedural run resumes, a photo run into it is refused."""
    src = resolve_source("celeba", celeba_dir)
    synthesize(src, tmp_path / "d", SynthConfig(seed=2), limit=4, progress=False)
    path = tmp_path / "d" / "manifest.json"
    manifest = json.loads(path.read_text())
    for key in ("templates", "photo_share", "photo_relight", "photo_texture_share"):
        del manifest["config"][key]
    path.write_text(json.dumps(manifest))
    again = synthesize(src, tmp_path / "d", SynthConfig(seed=2), limit=6, progress=False)
    assert again.resumed >= 3 and again.faces == again.planned - again.resumed - sum(again.skipped.values())
    from maskbench.data.synth_folder import DatasetMismatchError

    with pytest.raises(DatasetMismatchError, match="templates"):
        synthesize(src, tmp_path / "d", SynthConfig(seed=2, templates="mix"), limit=6, progress=False)


def test_a_drawn_only_build_writes_its_records_as_before_photo_templates(real_faces):
    """No ``template_kind`` in a procedural build's records: the committed board's build (``ff3c634e``) keeps
    its fingerprint, so a new user's first run lands in the board's main tables."""
    from maskbench.data.dataset import MaskedFaces

    keys = {k for r in MaskedFaces(real_faces, "test").records for k in r}
    assert keys == {"face_box", "height", "hole_fraction", "id", "identity", "landmarks", "mask_file_name",
                    "mask_type", "masked_file_name", "num_faces", "original_file_name", "seed", "source",
                    "source_id", "split", "template_id", "texture_id", "width", "yaw"}
