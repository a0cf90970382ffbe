"""Synthesis never loses an input or locks a folder: failed first runs, bad --out, odd folder entries,
deterministic skip reasons."""

from __future__ import annotations

import csv
import json
import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def _cli(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "maskbench", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


def _one_line(r: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode != 0 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    return lines[0]


# --------------------------------------------------------------------------- synth: failed runs, --out


@pytest.mark.slow
def test_a_failed_first_run_does_not_lock_the_folder(tmp_path):
    (tmp_path / "no-textures").mkdir()
    out = tmp_path / "o"
    # two workers: a failing worker set-up must end the run, not hang it
    bad = _cli("synth", "--out", str(out), "--no-progress", "--workers", "2", "--textures",
               str(tmp_path / "no-textures"), timeout=180)
    assert "has no images" in _one_line(bad)
    good = _cli("synth", "--out", str(out), "--no-progress")
    assert good.returncode == 0, good.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["textures"] is None and manifest["counts"]["train"] + manifest["counts"]["test"] == 5
    # once it holds samples, other settings are refused as before
    assert "other settings" in _one_line(_cli("synth", "--out", str(out), "--no-progress", "--seed", "9"))


@pytest.mark.parametrize("workers", ["1", "2"])
def test_unreadable_texture_files_end_the_run_in_one_line(tmp_path, workers):
    """Texture photos that cannot be decoded are found in the parent before any worker starts: the run
    ends with one readable line (not a hang, not a traceback) and writes nothing."""
    textures = tmp_path / "textures"
    textures.mkdir()
    (textures / "a.jpg").write_bytes(b"not a jpeg")
    (textures / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    out = tmp_path / "o"
    r = _cli("synth", "--out", str(out), "--no-progress", "--workers", workers, "--textures", str(textures),
             timeout=120)
    assert "none of its 2 images could be read" in _one_line(r)
    assert not out.exists()


def test_out_below_a_file_gives_one_line(tmp_path):
    (tmp_path / "some_file").write_text("x")
    line = _one_line(_cli("synth", "--out", str(tmp_path / "some_file" / "x"), "--no-progress"))
    assert "some_file is a file, not a folder" in line


# --------------------------------------------------------------------------- synth: every input accounted for


@pytest.mark.slow
def test_hidden_files_odd_folders_and_links_are_each_accounted_for(celeba_dir, tmp_path):
    faces = sorted((celeba_dir / "img_align_celeba").glob("*.jpg"))[:4]
    src, elsewhere = tmp_path / "in", tmp_path / "elsewhere"
    for d in (src / "x.jpg", src / "empty.jpg", src / ".thumbs", elsewhere):
        d.mkdir(parents=True)
    shutil.copy(faces[0], src / "face.jpg")
    shutil.copy(faces[1], src / ".face.jpg")                     # hidden file: taken
    shutil.copy(faces[2], src / "x.jpg" / "inner.jpg")           # a folder named like an image: searched
    shutil.copy(faces[3], elsewhere / "linked.jpg")
    (src / "linked").symlink_to(elsewhere, target_is_directory=True)  # symlinked folder: followed
    (src / ".thumbs" / "t.jpg").write_bytes(b"x")
    (src / "loop").symlink_to(src, target_is_directory=True)
    (src / "dangling.jpg").symlink_to(tmp_path / "nowhere.jpg")
    os.mkfifo(src / "pipe.jpg")                                  # would block a reader forever
    expected_made = {"face.jpg", ".face.jpg", "x.jpg/inner.jpg", "linked/linked.jpg"}
    expected_skipped = {
        "empty.jpg": "empty folder",
        ".thumbs": "hidden folder, not searched",
        "loop": "folder already searched (a link loop or a second link)",
        "dangling.jpg": "broken symbolic link",
        "pipe.jpg": "not a regular file (a pipe, socket or device)",
    }
    r = _cli("synth", "--src", str(src), "--out", str(tmp_path / "o"), "--no-progress", timeout=120)
    assert r.returncode == 0, r.stderr
    assert "9 inputs found, 9 in this run: 4 gave 4 samples written, 5 inputs skipped" in r.stdout
    with open(tmp_path / "o" / "skipped.csv", newline="") as f:
        skipped = {row["source_id"]: row["reason"] for row in csv.DictReader(f)}
    assert skipped == expected_skipped
    made = {json.loads(line)["source_id"] for s in ("train", "test") if (tmp_path / "o" / s / "metadata.jsonl").is_file()
            for line in (tmp_path / "o" / s / "metadata.jsonl").read_text().splitlines()}
    assert made == expected_made
    ids = {json.loads(line)["id"] for s in ("train", "test") if (tmp_path / "o" / s / "metadata.jsonl").is_file()
           for line in (tmp_path / "o" / s / "metadata.jsonl").read_text().splitlines()}
    assert not any(i.startswith(".") for i in ids)


@pytest.mark.slow
def test_skipped_csv_is_byte_identical_across_runs(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    rnd = random.Random(0)
    (src / "corrupt.jpg").write_bytes(rnd.randbytes(3000))
    (src / "notes.txt").write_text("not an image")
    (src / "empty.png").write_bytes(b"")
    (src / "fake.png").write_bytes(b"\x89PNG\r\n\x1a\n" + rnd.randbytes(500))
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(src / "noface.png")
    outs = [tmp_path / "a", tmp_path / "b"]
    for o in outs:  # separate processes: object addresses would differ between them
        r = _cli("synth", "--src", str(src), "--out", str(o), "--no-progress", timeout=120)
        assert r.returncode == 0, r.stderr
    a, b = ((o / "skipped.csv").read_bytes() for o in outs)
    assert a == b and a.count(b"\n") == 6
    assert not re.search(rb"0x[0-9a-fA-F]{4,}", a), a


# --------------------------------------------------------------------------- synth: fsspec URL sources


@pytest.mark.slow
def test_an_fsspec_url_source_gives_the_faces_of_the_same_folder(celeba_dir, tmp_path):
    """``--src file:///...`` (any fsspec URL: ``s3://``, ``gs://``) lists the files and the workers read them: the
    same masked faces as the folder itself; a broken entry is skipped with its reason."""
    from maskbench.data.dataset import MaskedFaces
    from maskbench.data.sources import resolve_source
    from maskbench.data.synth import SynthConfig, synthesize

    src = tmp_path / "photos"
    (src / "sub").mkdir(parents=True)
    names = sorted(p.name for p in (celeba_dir / "img_align_celeba").iterdir())[:6]
    for n in names[:4]:
        shutil.copy(celeba_dir / "img_align_celeba" / n, src / n)
    for n in names[4:]:
        shutil.copy(celeba_dir / "img_align_celeba" / n, src / "sub" / n)
    (src / "notes.txt").write_text("not an image")
    url = src.resolve().as_uri()  # file:///...
    source = resolve_source(url)
    assert source.name == "url" and all(it.url and it.path is None for it in source.items)
    assert sorted(it.source_id for it in source.items) == sorted(names[:4] + [f"sub/{n}" for n in names[4:]] + ["notes.txt"])
    cfg = SynthConfig(seed=4, test_fraction=0.0)
    a = synthesize(source, tmp_path / "a", cfg, workers=2, progress=False)
    b = synthesize(resolve_source(str(src)), tmp_path / "b", cfg, workers=1, progress=False)
    assert a.written == b.written >= 5 and a.skipped.keys() == b.skipped.keys()
    for s_a, s_b in zip(MaskedFaces(tmp_path / "a", "train"), MaskedFaces(tmp_path / "b", "train")):
        assert s_a.record["source_id"] == s_b.record["source_id"]
        assert np.array_equal(s_a.masked, s_b.masked) and np.array_equal(s_a.mask, s_b.mask)


def test_an_url_fsspec_cannot_open_is_one_line(tmp_path):
    assert "fsspec cannot open" in _one_line(_cli("synth", "--src", "nosuchproto://bucket/x", "--out", str(tmp_path / "o")))
