"""Synthesis: geometry of the masks on real faces, determinism, resume, bad input, output format."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from maskbench.data.dataset import MaskedFaces
from maskbench.data.format import MASK_TYPES
from maskbench.data.masks import PiecewiseAffineWarp, composite
from maskbench.data.sources import SourceItem, assign_split, resolve_source
from maskbench.data.synth import SynthConfig, synthesize
from maskbench.faces.landmarks import MOUTH, NOSE_TIP, face_outline


def _files(root: Path) -> dict[str, bytes]:
    """Every visible file under root (hidden bookkeeping like .progress/.lock excluded)."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    }


def _run_cli(*args: str, timeout: float = 300, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "maskbench", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd)


# --------------------------------------------------------------------------- unit: composite and warp


def test_composite_is_alpha_blend_and_leaves_outside_untouched():
    rng = np.random.default_rng(0)
    face = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    alpha = np.zeros((32, 32), np.float32)
    alpha[8:24, 8:24] = 1.0
    alpha[8:24, 7] = 0.5  # a soft edge column
    colour = np.full((32, 32, 3), 0.8, np.float32)
    masked, hole = composite(face, colour * alpha[..., None], alpha)
    assert hole.sum() == 16 * 16 + 16
    assert np.array_equal(masked[~hole], face[~hole])
    assert np.all(masked[8:24, 8:24] == 204)
    a = np.rint(0.5 * 255) / 255
    expect = np.rint(a * 204 + (1 - a) * face[8:24, 7].astype(np.float64))
    assert np.abs(masked[8:24, 7].astype(np.float64) - expect).max() <= 1  # blended, never added


def test_warp_with_identical_points_is_identity_inside_hull():
    pts = np.array([[10, 10], [100, 12], [95, 100], [12, 90], [50, 50]], np.float64)
    warp = PiecewiseAffineWarp(pts)
    img = np.random.default_rng(1).random((112, 112, 4)).astype(np.float32)
    out = warp(img, pts, (112, 112))
    assert np.allclose(out[30:70, 30:70], img[30:70, 30:70], atol=1e-4)
    assert np.all(out[0:5, 0:5] == 0)  # outside every triangle: transparent


def test_split_by_identity_is_disjoint_and_deterministic():
    items = [SourceItem(f"{i}.jpg", identity=str(i % 50)) for i in range(1000)]
    splits = [assign_split(it, 0.2) for it in items]
    by_id: dict[str, set] = {}
    for it, s in zip(items, splits):
        by_id.setdefault(it.identity, set()).add(s)
    assert all(len(v) == 1 for v in by_id.values())
    assert 0.05 < splits.count("test") / len(splits) < 0.4
    assert splits == [assign_split(it, 0.2) for it in items]


def test_config_rejects_unknown_mask_type():
    with pytest.raises(ValueError, match="unknown mask type"):
        SynthConfig(mask_types=("surgical", "balaclava"))


# --------------------------------------------------------------------------- real faces: a 200-image run


@pytest.fixture(scope="module")
def run200(celeba_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("run200")
    report = synthesize(resolve_source("celeba", celeba_dir), out, SynthConfig(seed=3), limit=200, workers=2,
                        progress=False)
    return out, report


@pytest.mark.slow
def test_run_has_all_types_and_exact_binary_masks(run200):
    out, report = run200
    assert report.written >= 190  # celeba crops: a handful of faces are missed by the HOG detector
    recs = [r for s in ("train", "test") if (out / s / "metadata.jsonl").is_file() for r in MaskedFaces(out, s).records]
    assert {r["mask_type"] for r in recs} == set(MASK_TYPES)
    for split in ("train", "test"):
        if not (out / split / "metadata.jsonl").is_file():
            continue
        ds = MaskedFaces(out, split)
        for i in range(len(ds)):
            raw = cv2.imread(str(out / split / ds.records[i]["mask_file_name"]), cv2.IMREAD_UNCHANGED)
            assert raw.dtype == np.uint8 and raw.ndim == 2
            assert set(np.unique(raw)) <= {0, 255}
            s = ds[i]
            assert np.array_equal(s.masked[~s.mask], s.original[~s.mask])
            assert abs(s.mask.mean() - s.record["hole_fraction"]) < 1e-5


def _all_samples(out: Path):
    for split in ("train", "test"):
        if (out / split / "metadata.jsonl").is_file():
            yield from MaskedFaces(out, split)


@pytest.mark.slow
def test_masks_cover_nose_mouth_and_scarves_cover_chin(run200):
    out, _ = run200
    for s in _all_samples(out):
        lm = np.rint(np.array(s.record["landmarks"])).astype(int)
        h, w = s.mask.shape
        pts = [NOSE_TIP, *MOUTH] + ([8] if s.record["mask_type"] == "scarf" else [])
        for i in pts:
            x, y = np.clip(lm[i], 0, [w - 1, h - 1])
            assert s.mask[y, x], f"{s.record['id']} ({s.record['mask_type']}): landmark {i} not covered"


@pytest.mark.slow
def test_non_scarf_masks_stay_on_the_face_frontal_and_turned(run200):
    out, _ = run200
    outside = {"frontal": [], "turned": []}
    for s in _all_samples(out):
        if s.record["mask_type"] == "scarf":
            continue
        hull = face_outline(np.array(s.record["landmarks"]))
        inside = np.zeros(s.mask.shape, np.uint8)
        cv2.fillConvexPoly(inside, np.rint(hull).astype(np.int32), 1)
        frac = (s.mask & (inside == 0)).sum() / max(s.mask.sum(), 1)
        outside["turned" if abs(s.record["yaw"]) > 20 else "frontal"].append(frac)
    assert len(outside["turned"]) >= 5, "too few turned heads in the sample to check"
    for pose, fracs in outside.items():
        assert max(fracs) <= 0.03, f"{pose}: {max(fracs):.3f} of a mask lies outside the face outline"


@pytest.mark.slow
def test_mask_edges_have_no_bright_fringe(run200):
    out, _ = run200
    diffs = []
    for s in list(_all_samples(out))[:60]:
        m = s.mask.astype(np.uint8)
        edge = m - cv2.erode(m, np.ones((3, 3), np.uint8))  # the hole's outermost ring
        inner = cv2.erode(m, np.ones((3, 3), np.uint8)) - cv2.erode(m, np.ones((7, 7), np.uint8))
        outer = cv2.dilate(m, np.ones((5, 5), np.uint8)) - m
        lum = cv2.cvtColor(s.masked, cv2.COLOR_RGB2GRAY).astype(float)
        diffs.append(lum[edge > 0].mean() - max(lum[inner > 0].mean(), lum[outer > 0].mean()))
    # blended edges lie between the two sides; an additive bug makes the ring brighter than both
    assert np.median(diffs) < 2.0 and max(diffs) < 12.0


@pytest.mark.slow
def test_output_loads_with_datasets(run200, tmp_path):
    datasets = pytest.importorskip("datasets")
    out, report = run200
    d = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "hf-cache"))
    n = sum(len(d[s]) for s in d)
    assert n == report.written
    row = d[next(iter(d))][0]
    assert row["masked"].size == (256, 256) and len(row["landmarks"]) == 68
    meta = json.loads((out / "manifest.json").read_text())
    assert meta["config"]["seed"] == 3 and meta["counts"]["skipped"] == sum(report.skipped.values())


@pytest.mark.slow
def test_publish_to_disk_writes_loadable_parquet_and_card(run200, tmp_path):
    datasets = pytest.importorskip("datasets")
    out, report = run200
    r = _run_cli("publish", str(out), "--to-disk", str(tmp_path / "hub"))
    assert r.returncode == 0, r.stderr
    shards = sorted((tmp_path / "hub" / "data").glob("*.parquet"))
    assert shards and all("-of-" in p.name for p in shards)
    card = (tmp_path / "hub" / "README.md").read_text()
    assert card.startswith("---\nlicense: other") and "configs:" in card and "CelebA" in card
    d = datasets.load_dataset(str(tmp_path / "hub"), cache_dir=str(tmp_path / "hf-cache"))
    assert sum(len(d[s]) for s in d) == report.written
    assert d[next(iter(d))][0]["mask"].size == (256, 256)


# --------------------------------------------------------------------------- determinism and resume


@pytest.mark.slow
def test_same_seed_gives_identical_bytes_with_any_worker_count(celeba_dir, tmp_path):
    src = resolve_source("celeba", celeba_dir)
    synthesize(src, tmp_path / "a", SynthConfig(seed=7), limit=24, workers=1, progress=False)
    synthesize(src, tmp_path / "b", SynthConfig(seed=7), limit=24, workers=2, progress=False)
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert len(a) > 60 and a == b
    synthesize(src, tmp_path / "c", SynthConfig(seed=8), limit=24, workers=1, progress=False)
    assert _files(tmp_path / "c") != a


@pytest.mark.slow
def test_interrupted_run_resumes_to_the_same_dataset(celeba_dir, tmp_path):
    args = ["synth", "--src", "celeba", "--data-dir", str(celeba_dir), "--limit", "120", "--no-progress"]
    ref = _run_cli(*args, "--out", str(tmp_path / "ref"))
    assert ref.returncode == 0, ref.stderr
    proc = subprocess.Popen([sys.executable, "-m", "maskbench", *args, "--out", str(tmp_path / "cut")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    masked = tmp_path / "cut"
    deadline = time.time() + 120
    while time.time() < deadline and sum(1 for _ in masked.rglob("masked/*.png")) < 20:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = sum(1 for _ in masked.rglob("masked/*.png"))
    assert 0 < partial < 118, "the run was not interrupted mid-way"
    again = _run_cli(*args, "--out", str(tmp_path / "cut"))
    assert again.returncode == 0, again.stderr
    assert "already done" in again.stdout
    assert _files(tmp_path / "cut") == _files(tmp_path / "ref")


@pytest.mark.slow
def test_shards_of_a_job_array_add_up_to_one_run(celeba_dir, tmp_path):
    src = resolve_source("celeba", celeba_dir)
    synthesize(src, tmp_path / "one", SynthConfig(), limit=20, progress=False)
    for i in range(3):
        synthesize(src, tmp_path / "sharded", SynthConfig(), limit=20, num_shards=3, shard_index=i, progress=False)
    assert _files(tmp_path / "sharded") == _files(tmp_path / "one")


@pytest.mark.slow
def test_user_texture_photos_are_drawn_on_masks(celeba_dir, textures_dir, tmp_path):
    r = _run_cli("synth", "--src", "celeba", "--data-dir", str(celeba_dir), "--limit", "12", "--textures",
                 str(textures_dir), "--out", str(tmp_path / "o"), "--no-progress")
    assert r.returncode == 0, r.stderr
    recs = [json.loads(l) for s in ("train", "test") if (tmp_path / "o" / s / "metadata.jsonl").is_file()
            for l in (tmp_path / "o" / s / "metadata.jsonl").read_text().splitlines()]
    photo = [r["texture_id"] for r in recs if (r["texture_id"] or "").startswith("photo:")]
    assert len(photo) >= len(recs) // 2, [r["texture_id"] for r in recs]
    names = {p.name for p in textures_dir.iterdir()}
    assert all(t.split(":", 1)[1] in names for t in photo)


@pytest.mark.slow
def test_lfw_and_folder_layouts(celeba_dir, tmp_path):
    files = sorted((celeba_dir / "img_align_celeba").glob("*.jpg"))[:4]
    for k, f in enumerate(files):
        person = tmp_path / "lfw" / f"Person_{k % 2}"
        person.mkdir(parents=True, exist_ok=True)
        (person / f"Person_{k % 2}_{k:04d}.jpg").write_bytes(f.read_bytes())
    lfw = resolve_source("lfw", tmp_path / "lfw")
    assert [it.identity for it in lfw.items] == ["Person_0", "Person_0", "Person_1", "Person_1"]
    assert lfw.has_identities and lfw.license == "other"
    folder = resolve_source(str(tmp_path / "lfw"))
    assert len(folder.items) == 4 and all(it.identity is None for it in folder.items)
    assert folder.items[0].source_id == "Person_0/Person_0_0000.jpg"
    report = synthesize(lfw, tmp_path / "out", SynthConfig(test_fraction=0.5), progress=False)
    recs = [json.loads(l) for s in ("train", "test") if (tmp_path / "out" / s / "metadata.jsonl").is_file()
            for l in (tmp_path / "out" / s / "metadata.jsonl").read_text().splitlines()]
    assert len(recs) == report.written == 4
    assert all(len({r["split"] for r in recs if r["identity"] == p}) == 1 for p in ("Person_0", "Person_1"))


@pytest.mark.slow
def test_other_settings_into_the_same_folder_are_refused(celeba_dir, tmp_path):
    args = ["synth", "--src", "celeba", "--data-dir", str(celeba_dir), "--limit", "3", "--no-progress",
            "--out", str(tmp_path / "o")]
    assert _run_cli(*args).returncode == 0
    r = _run_cli(*args, "--seed", "5")
    assert r.returncode == 2 and "other settings" in r.stderr and "seed" in r.stderr


# --------------------------------------------------------------------------- bad input


def _jpeg(arr: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=95, **kw)
    return buf.getvalue()


@pytest.mark.slow
def test_bad_files_are_skipped_with_reasons_and_odd_formats_are_converted(celeba_dir, tmp_path):
    src_dir = tmp_path / "in"
    src_dir.mkdir()
    files = sorted((celeba_dir / "img_align_celeba").glob("*.jpg"))[:6]
    face = np.asarray(Image.open(files[0]).convert("RGB"))
    good = files[0].read_bytes()
    (src_dir / "corrupt.jpg").write_bytes(os.urandom(3000))
    (src_dir / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (src_dir / "notes.txt").write_text("not an image")
    (src_dir / "empty.png").write_bytes(b"")
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(src_dir / "noface.png")
    Image.fromarray(face[:20, :20]).save(src_dir / "tiny.png")
    Image.fromarray(face).convert("CMYK").save(src_dir / "cmyk.jpg")
    cv2.imwrite(str(src_dir / "rgb16.png"), (face[..., ::-1].astype(np.uint16) * 257))
    Image.fromarray((np.asarray(Image.fromarray(face).convert("L")).astype(np.uint16) * 257)).save(src_dir / "gray16.png")
    rgba = np.dstack([face, np.full(face.shape[:2], 255, np.uint8)])
    Image.fromarray(rgba).save(src_dir / "rgba.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: the stored pixels must be turned 90 deg clockwise to view
    (src_dir / "exif_rotated.jpg").write_bytes(_jpeg(np.rot90(face, 1).copy(), exif=exif))

    r = _run_cli("synth", "--src", str(src_dir), "--out", str(tmp_path / "o"), "--no-progress")
    assert r.returncode == 0, r.stderr
    import csv

    with open(tmp_path / "o" / "skipped.csv") as f:
        skipped = {row["source_id"]: row["reason"] for row in csv.DictReader(f)}
    bad = {"corrupt.jpg", "truncated.jpg", "notes.txt", "empty.png", "noface.png", "tiny.png"}
    assert set(skipped) == bad, skipped
    assert skipped["noface.png"] == "no face found"
    assert all(skipped[k].startswith("bad image") for k in bad - {"noface.png"})
    assert "6 inputs skipped" in r.stdout
    made = {rec["source_id"] for rec in
            (json.loads(line) for s in ("train", "test") if (tmp_path / "o" / s / "metadata.jsonl").is_file()
             for line in (tmp_path / "o" / s / "metadata.jsonl").read_text().splitlines())}
    assert made == {"cmyk.jpg", "rgb16.png", "gray16.png", "rgba.png", "exif_rotated.jpg"}


@pytest.mark.parametrize(
    "args, message",
    [
        (["synth", "--src", "/no/such/folder"], "no such folder"),
        (["synth", "--src", "ffhq"], "needs --data-dir"),
        (["synth", "--src", "celeba", "--data-dir", "/no/such/dir"], "/no/such/dir"),
        (["synth", "--src", "hf:maskbench-tests/does-not-exist-4f2a"], "hf:maskbench-tests/does-not-exist-4f2a"),
        (["synth", "--mask-types", "surgical,balaclava"], "unknown mask type"),
        (["publish", ".", "--to-disk", "hub"], "not a maskbench dataset"),
        (["publish", "."], "--repo-id is required"),
    ],
)
def test_bad_arguments_exit_nonzero_with_one_line(args, message, tmp_path):
    r = subprocess.run([sys.executable, "-m", "maskbench", *args], capture_output=True, text=True, timeout=120,
                       cwd=tmp_path, env={**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "0")})
    assert r.returncode != 0
    lines = [l for l in r.stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in r.stderr, r.stderr


@pytest.mark.slow
def test_demo_source_shows_every_mask_type(tmp_path):
    r = _run_cli("synth", "--out", str(tmp_path / "demo"), "--no-progress")
    assert r.returncode == 0, r.stderr
    recs = [json.loads(l) for s in ("train", "test") if (tmp_path / "demo" / s / "metadata.jsonl").is_file()
            for l in (tmp_path / "demo" / s / "metadata.jsonl").read_text().splitlines()]
    assert sorted(r["mask_type"] for r in recs) == sorted(MASK_TYPES)
    s = _run_cli("sheet", str(tmp_path / "demo"), "--split", recs[0]["split"], "--out", str(tmp_path / "sheet.png"))
    assert s.returncode == 0 and cv2.imread(str(tmp_path / "sheet.png")) is not None


@pytest.mark.slow
def test_readme_main_job_end_to_end(celeba_dir, tmp_path):
    """synth a test split -> evaluate telea -> leaderboard, through the command line as the README says."""
    data, results = tmp_path / "data", tmp_path / "results"
    r = _run_cli("synth", "--src", "celeba", "--data-dir", str(celeba_dir), "--split", "test", "--limit", "24",
                 "--out", str(data), "--workers", "2", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert not (data / "train").exists() and len((data / "test" / "metadata.jsonl").read_text().splitlines()) >= 20
    r = _run_cli("evaluate", "--method", "telea", "--data", str(data), "--save-outputs", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "psnr_hole" in r.stdout and "fid" in r.stdout and "identity_rank1" in r.stdout
    assert "FutureWarning" not in r.stderr and "DeprecationWarning" not in r.stderr
    r = _run_cli("leaderboard", cwd=tmp_path)  # README: no options -> results/leaderboard/
    assert r.returncode == 0, r.stderr
    board = results / "leaderboard"
    lb = pd.read_csv(board / "leaderboard.csv")
    assert lb.loc[lb["rank"] == 1, "method"].tolist() == ["telea"]
    assert {"identity_cosine", "identity_match", "identity_rank1"} <= set(lb.columns)
    assert "ceiling (original photos)" in lb["method"].tolist()
    assert (board / "index.html").is_file() and (board / "samples.png").is_file()
    r = _run_cli("compare", "telea", "telea", cwd=tmp_path)
    assert r.returncode == 0 and "no significant difference" in r.stdout


@pytest.mark.slow
def test_landmark_yaw_agrees_with_a_3dmm_pose_fit(run200, shared_data):
    """estimate_yaw's depth ratio was fitted to eos (Surrey Face Model) pose fits; re-check it on real faces."""
    eos = pytest.importorskip("eos")
    import re

    from scipy.spatial.transform import Rotation

    from maskbench.faces.landmarks import estimate_yaw

    sfm = shared_data / "3dmm-sfm"
    if not (sfm / "sfm_shape_3448.bin").is_file():
        pytest.skip(f"{sfm}: Surrey Face Model not found")
    model = eos.morphablemodel.load_model(str(sfm / "sfm_shape_3448.bin"))
    mapping = {int(a) - 1: int(b) for a, b in re.findall(r"^\s*(\d+)\s*=\s*(\d+)", (sfm / "ibug_to_sfm.txt").read_text(), re.M)}
    mean = np.array(model.get_shape_model().get_mean()).reshape(-1, 3)
    idx = sorted(mapping)
    ours, fitted = [], []
    for s in list(_all_samples(run200[0]))[:80]:
        lm = np.array(s.record["landmarks"])
        p = eos.fitting.estimate_orthographic_projection_linear(
            [lm[i].tolist() for i in idx], [mean[mapping[i]].tolist() + [1.0] for i in idx], True, s.mask.shape[0])
        q = eos.fitting.RenderingParameters(p, s.mask.shape[1], s.mask.shape[0]).get_rotation()
        r = Rotation.from_quat(np.array(q, np.float64)).as_matrix()
        fitted.append(np.degrees(np.arcsin(np.clip(r[0, 2], -1, 1))))
        ours.append(estimate_yaw(lm))
    ours, fitted = np.array(ours), np.array(fitted)
    assert np.abs(fitted).max() > 20  # the sample has turned heads
    assert np.sqrt(np.mean((ours - fitted) ** 2)) < 4.0


def test_profile_and_folded_landmarks_are_recognised():
    from maskbench.data.masks import canonical_landmarks, load_anchor_sets
    from maskbench.data.synth import MAX_FOLDED_TRIANGLES
    from maskbench.faces.landmarks import nose_inside_outline

    lm = canonical_landmarks(256).astype(np.float64)
    anchors = load_anchor_sets()["face"]
    warp = PiecewiseAffineWarp(anchors.points(lm))
    assert nose_inside_outline(lm) and warp.folded(anchors.points(lm)) == 0
    profile = lm.copy()
    profile[27:36, 0] += 100  # nose pushed past the right jaw line, as in a profile
    assert not nose_inside_outline(profile)
    assert warp.folded(anchors.points(profile)) > MAX_FOLDED_TRIANGLES


def test_a_log_line_cut_by_a_kill_is_dropped_before_appending(tmp_path):
    from maskbench.data.synth_folder import drop_partial_line, read_log

    log = tmp_path / "shard.jsonl"
    log.write_text('{"source_id": "a", "skipped": "no face found"}\n{"source_id": "b", "rec')
    drop_partial_line(log)
    with open(log, "a") as f:
        f.write('{"source_id": "c", "skipped": "no face found"}\n')
    assert [e["source_id"] for e in read_log(log)] == ["a", "c"]


@pytest.mark.slow
def test_a_failing_write_is_a_skip_and_every_logged_sample_has_its_files(celeba_dir, tmp_path, monkeypatch):
    # the PNGs are written on the worker's writer thread; a face is reported done only once they exist
    import maskbench.data.format as fmt
    import maskbench.data.synth as synth

    real = fmt.write_sample
    calls = []

    def flaky(split_dir, record, *images):
        calls.append(record.id)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        real(split_dir, record, *images)

    monkeypatch.setattr(synth, "write_sample", flaky)
    r = synthesize(resolve_source("celeba", celeba_dir), tmp_path / "out", SynthConfig(), limit=12, progress=False)
    assert len(calls) >= 10 and r.skipped["error"] == 1 and r.written == len(calls) - 1
    skipped = (tmp_path / "out" / "skipped.csv").read_text()
    assert "No space left on device" in skipped
    ids = [json.loads(line)["id"] for s in ("train", "test") if (tmp_path / "out" / s / "metadata.jsonl").is_file()
           for line in (tmp_path / "out" / s / "metadata.jsonl").read_text().splitlines()]
    assert calls[2] not in ids and len(ids) == r.written
    for s in ("train", "test"):
        for i in ids:
            if (tmp_path / "out" / s / "masked" / f"{i}.png").is_file():
                assert (tmp_path / "out" / s / "mask" / f"{i}.png").is_file()


# --------------------------------------------------------------------------- concurrent writers


def _consistent(out: Path) -> list[dict]:
    """The folder's records, after checking that tables, manifest counts and files agree."""
    recs = [json.loads(line) for s in ("train", "test") if (out / s / "metadata.jsonl").is_file()
            for line in (out / s / "metadata.jsonl").read_text().splitlines()]
    counts = json.loads((out / "manifest.json").read_text())["counts"]
    assert counts.get("train", 0) + counts.get("test", 0) == len(recs) == len({r["id"] for r in recs})
    for r in recs:
        for sub in ("masked", "original", "mask"):
            assert (out / r["split"] / sub / f"{r['id']}.png").is_file(), (sub, r["id"])
    assert not list((out / ".progress").glob("*")), "a finished run left its log or lock behind"
    return recs


def test_a_second_writer_is_refused_while_a_run_is_going_and_other_shards_join(celeba_dir, tmp_path, monkeypatch):
    # runs B.. start while run A (shard 0 of 2) is writing; one process, but flock locks are per open file
    import maskbench.data.synth as synth_mod

    src, out = resolve_source("celeba", celeba_dir), tmp_path / "o"
    real, refused, joined = synth_mod._run_jobs, {}, []

    def during_run_a(*args, **kwargs):
        monkeypatch.setattr(synth_mod, "_run_jobs", real)
        for name, cfg, kw in [("same shard", SynthConfig(), {"num_shards": 2, "shard_index": 0}),
                              ("other seed", SynthConfig(seed=1), {"num_shards": 2, "shard_index": 1}),
                              ("other shard count", SynthConfig(), {"num_shards": 3, "shard_index": 1}),
                              ("other limit", SynthConfig(), {"num_shards": 2, "shard_index": 1, "limit": 30})]:
            with pytest.raises(ValueError, match="is being written by another synth run") as e:  # Busy error
                synthesize(src, out, cfg, **{"limit": 4, **kw}, progress=False)
            refused[name] = str(e.value)
        joined.append(synthesize(src, out, SynthConfig(), limit=4, num_shards=2, shard_index=1, progress=False))
        return real(*args, **kwargs)

    monkeypatch.setattr(synth_mod, "_run_jobs", during_run_a)
    a = synthesize(src, out, SynthConfig(), limit=4, num_shards=2, shard_index=0, progress=False)
    assert set(refused) == {"same shard", "other seed", "other shard count", "other limit"}
    assert all(str(out) in m and "\n" not in m for m in refused.values())
    assert "same shard (shard 0 of 2)" in refused["same shard"]
    assert "seed 0 vs 1" in refused["other seed"] and "num_shards 2 vs 3" in refused["other shard count"]
    assert "limit 4 vs 30" in refused["other limit"]
    recs = _consistent(out)
    assert len(recs) == a.written + joined[0].written == 4
    assert json.loads((out / "manifest.json").read_text())["config"]["seed"] == 0


def _start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "maskbench", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_two_processes_on_one_shard_exactly_one_runs(celeba_dir, tmp_path):
    out = tmp_path / "o"
    base = ["synth", "--src", "celeba", "--data-dir", str(celeba_dir), "--no-progress", "--out", str(out)]
    procs = [_start(*base, "--limit", "40", "--seed", "0"), _start(*base, "--limit", "12", "--seed", "1")]
    results = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    ok = [r for r in results if r[0] == 0]
    bad = [r for r in results if r[0] != 0]
    assert len(ok) == 1 and len(bad) == 1, [r[0] for r in results]
    lines = [l for l in bad[0][2].splitlines() if l.strip()]
    assert len(lines) == 1 and "being written by another synth run" in lines[0] and str(out) in lines[0], bad[0][2]
    recs = _consistent(out)
    winner_seed = 0 if results[0][0] == 0 else 1
    assert json.loads((out / "manifest.json").read_text())["config"]["seed"] == winner_seed
    assert f"{len(recs)} samples written" in ok[0][1]


@pytest.mark.slow
def test_two_shards_of_one_job_run_together(celeba_dir, tmp_path):
    base = ["synth", "--src", "celeba", "--data-dir", str(celeba_dir), "--no-progress", "--limit", "20",
            "--templates", "procedural"]  # the library default of SynthConfig() it is compared with
    procs = [_start(*base, "--out", str(tmp_path / "sharded"), "--num-shards", "2", "--shard-index", str(i))
             for i in (0, 1)]
    results = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    assert [r[0] for r in results] == [0, 0], [r[2] for r in results]
    synthesize(resolve_source("celeba", celeba_dir), tmp_path / "one", SynthConfig(), limit=20, progress=False)
    _consistent(tmp_path / "sharded")
    assert _files(tmp_path / "sharded") == _files(tmp_path / "one")
