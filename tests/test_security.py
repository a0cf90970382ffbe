"""Untrusted datasets: names taken from data never reach outside the dataset or the results folder."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from maskbench.bench.evaluate import EvalConfig, evaluate
from maskbench.cli import main
from maskbench.data import dataset as D
from maskbench.data.card import dataset_card, public_text
from maskbench.data.dataset import MaskedFaces, UnsafePathError, check_name, safe_join
from maskbench.data.sources import resolve_source
from maskbench.data.synth import SynthConfig, synthesize
from maskbench.data.testing import write_fake_dataset
from maskbench.methods import predictors as P


@pytest.fixture(scope="module")
def clean_faces(tmp_path_factory) -> Path:
    """4 synthetic 64 px faces; copied per test, then tampered with."""
    return write_fake_dataset(tmp_path_factory.mktemp("clean") / "ds", 4, size=64, seed=3)


def _tamper(clean: Path, tmp_path: Path, field: str, value: str, row: int = 1) -> Path:
    root = tmp_path / "ds"
    shutil.copytree(clean, root)
    meta = root / "test" / "metadata.jsonl"
    recs = [json.loads(line) for line in meta.read_text().splitlines()]
    recs[row][field] = value
    meta.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return root


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() or p.is_symlink()}


@pytest.fixture
def reads(monkeypatch) -> list[Path]:
    """Every path the dataset reader opens, resolved."""
    seen: list[Path] = []
    for name in ("read_png", "read_mask"):
        real = getattr(D, name)

        def spy(path, _real=real):
            seen.append(Path(path).resolve())
            return _real(path)

        monkeypatch.setattr(D, name, spy)
    return seen


def _secret(tmp_path: Path, clean: Path) -> Path:
    """A valid PNG outside the dataset: reading it would succeed, so only a refusal keeps it unread."""
    secret = tmp_path / "secret" / "face.png"
    secret.parent.mkdir()
    shutil.copy(clean / "test" / "original" / "000000.png", secret)
    return secret


TRAVERSALS = [(f, kind) for f in D.FILE_FIELDS for kind in ("absolute", "dotdot", "link")]


@pytest.mark.parametrize("field, kind", TRAVERSALS)
def test_file_names_outside_the_dataset_are_refused_and_never_read(clean_faces, tmp_path, reads, field, kind):
    secret = _secret(tmp_path, clean_faces)
    if kind == "absolute":
        value = str(secret)
    elif kind == "dotdot":
        value = f"../../secret/{secret.name}"
    else:  # a name inside the folder that is a link to the outside
        value = f"{field.split('_')[0]}/link.png"
    root = _tamper(clean_faces, tmp_path, field, value)
    if kind == "link":
        (root / "test" / value).symlink_to(secret)
    out = tmp_path / "results"
    res = evaluate(EvalConfig(method="masked-input", data=str(root), out=str(out), fid=False, identity=False,
                              save_outputs=True))
    assert res.summary["n"] == 4 and res.summary["n_failed"] == 1
    assert len(res.failures) == 1 and res.failures[0]["id"] == "000001"
    assert res.failures[0]["error"].startswith("UnsafePathError: refused record: ") and field in res.failures[0]["error"]
    base = root.resolve()
    assert reads and all(p.is_relative_to(base) and p != secret.resolve() for p in reads)
    assert res.summary["metrics"]["l1"]["n"] == 3  # the other records were scored
    assert sorted(p.name for p in (res.run_dir / "outputs").iterdir()) == ["000000.png", "000002.png", "000003.png"]


def test_an_id_that_climbs_out_writes_nothing_outside_out(clean_faces, tmp_path, reads):
    out = tmp_path / "results"
    # from {out}/{method}/{run}/outputs, four levels up is tmp_path: "evil.png" would land in tmp_path/x/
    root = _tamper(clean_faces, tmp_path, "id", "../../../../x/evil", row=2)
    before = _files(tmp_path)
    r = CliRunner().invoke(main, ["evaluate", "--method", "masked-input", "--data", str(root), "--out", str(out),
                                  "--save-outputs", "--no-fid", "--no-identity"])
    assert r.exit_code == 0, r.output
    assert "1 of 4 images failed, e.g. ../../../../x/evil: UnsafePathError: refused record: id" in r.output
    new = {f for f in _files(tmp_path) - before if not f.startswith("results/")}
    assert new == set() and not (tmp_path / "x").exists()
    run = next((out / "masked-input").iterdir())
    table = pd.read_parquet(run / "per_image.parquet").set_index("id")
    assert "is not a safe name" in table.loc["../../../../x/evil", "error"]
    assert table["error"].isna().sum() == 3


@pytest.mark.parametrize("bad", ["../x", "/abs", ".hidden", "a/b", "", "a\\b", 7, None])
def test_unsafe_names_are_refused(bad):
    with pytest.raises(UnsafePathError):
        check_name(bad, "id")


@pytest.mark.parametrize("bad", ["/etc/passwd", "../x.png", "masked/../../x.png", "C:x.png", "a\\..\\x", "", None])
def test_safe_join_refuses_paths_leaving_the_root(tmp_path, bad):
    with pytest.raises(UnsafePathError):
        safe_join(tmp_path, bad)
    assert safe_join(tmp_path, "masked/a.png") == tmp_path / "masked" / "a.png"


def test_a_method_name_that_is_a_path_is_refused(clean_faces, tmp_path):
    P.register("../../escaped", P.get_predictor_class("masked-input"))
    try:
        with pytest.raises(UnsafePathError, match="method name"):
            evaluate(EvalConfig(method="../../escaped", data=str(clean_faces), out=str(tmp_path / "r" / "s"),
                                fid=False, identity=False))
        assert not (tmp_path / "escaped").exists() and not (tmp_path / "r").exists()
    finally:
        P.unregister("../../escaped")


def _as_synth_output(root: Path) -> Path:
    """Give a fake dataset the manifest ``maskbench synth`` writes, so publish accepts it."""
    (root / "manifest.json").write_text(json.dumps({
        "config": {"size": 64, "align": True, "seed": 0, "mask_types": ["surgical"], "variants": 1,
                   "test_fraction": 1.0, "textures": None},
        "source": {"name": "folder", "description": "synthetic faces"},
        "counts": {"test": 4, "train": 0, "skipped": 0},
    }))
    return root


@pytest.mark.parametrize("field, value", [("masked_file_name", "../../secret/face.png"),
                                          ("mask_file_name", "/etc/hostname"), ("id", "../evil"),
                                          ("id", "000000")])  # the last: a repeated id
def test_publish_to_disk_refuses_a_traversal_dataset_with_one_line(clean_faces, tmp_path, field, value):
    _secret(tmp_path, clean_faces)
    root = _as_synth_output(_tamper(clean_faces, tmp_path, field, value))
    r = CliRunner().invoke(main, ["publish", str(root), "--to-disk", str(tmp_path / "hub")])
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "refused record(s) (unsafe" in lines[0] and field in lines[0], r.output
    assert not (tmp_path / "hub").exists()


def test_publish_to_disk_with_a_damaged_manifest_gives_one_line(clean_faces, tmp_path):
    root = tmp_path / "ds"
    shutil.copytree(clean_faces, root)
    (root / "manifest.json").write_text('{"config": ')
    r = CliRunner().invoke(main, ["publish", str(root), "--to-disk", str(tmp_path / "hub")])
    assert r.exit_code == 2 and "manifest.json: damaged" in r.output and "Traceback" not in r.output


def test_refused_records_keep_indices_and_fingerprint(clean_faces, tmp_path):
    root = _tamper(clean_faces, tmp_path, "original_file_name", "/etc/hostname", row=0)
    ds = MaskedFaces(root)
    assert len(ds) == 4 and list(ds.refused) == [0] and "absolute" in ds.refused[0]
    with pytest.raises(UnsafePathError):
        ds[0]
    assert ds[1].masked.shape == (64, 64, 3)
    assert ds.fingerprint() != MaskedFaces(clean_faces).fingerprint()  # the metadata differs


def test_a_repeated_id_is_refused_and_the_first_record_is_scored_once(clean_faces, tmp_path):
    from maskbench.core.io import read_png

    root = _tamper(clean_faces, tmp_path, "id", "000001", row=2)  # record 3 repeats record 2's id
    ds = MaskedFaces(root)
    assert list(ds.refused) == [2] and "duplicate id '000001': record 2 " in ds.refused[2]
    with pytest.raises(D.SampleError, match="refused record: duplicate id") as e:
        ds[2]
    assert e.type.__name__ == "DuplicateIdError"
    assert ds[1].record["masked_file_name"] == "masked/000001.png"
    res = evaluate(EvalConfig(method="masked-input", data=str(root), out=str(tmp_path / "results"), fid=False,
                              identity=False, save_outputs=True))
    assert res.summary["n"] == 4 and res.summary["n_failed"] == 1
    assert [f["id"] for f in res.failures] == ["000001"]
    assert res.failures[0]["error"].startswith("DuplicateIdError: refused record: duplicate id '000001'")
    assert res.summary["metrics"]["l1"]["n"] == 3  # one score per id
    assert sorted(p.name for p in (res.run_dir / "outputs").iterdir()) == ["000000.png", "000001.png", "000003.png"]
    # the saved output of id 000001 is the first record's (masked-input returns its input), not overwritten
    saved = read_png(res.run_dir / "outputs" / "000001.png")
    assert np.array_equal(saved, read_png(root / "test" / "masked" / "000001.png"))
    from maskbench.bench.leaderboard import build_leaderboard

    build_leaderboard(tmp_path / "results", tmp_path / "lb")  # its sample grid reads the first 000001 only
    assert (tmp_path / "lb" / "samples.png").is_file()


def test_sheet_leaves_refused_samples_off(clean_faces, tmp_path):
    root = _tamper(clean_faces, tmp_path, "masked_file_name", "/etc/hostname", row=0)
    assert D.write_sample_sheet(root, tmp_path / "sheet.png") == 3
    assert os.path.getsize(tmp_path / "sheet.png") > 0


@pytest.mark.slow
def test_the_dataset_card_names_the_source_never_a_local_path(tmp_path):
    src = tmp_path / "private" / "alice-photos"
    src.mkdir(parents=True)
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(src / "noface.png")
    source = resolve_source(str(src))
    assert str(tmp_path) not in source.description and "alice-photos" in source.description
    out = tmp_path / "o"
    synthesize(source, out, SynthConfig(), progress=False)
    card = (out / "README.md").read_text()
    manifest = json.loads((out / "manifest.json").read_text())
    hub_card = dataset_card(manifest, hub_layout=True)
    for text in (card, hub_card):
        assert str(tmp_path) not in text and "/private/" not in text and "alice-photos" in text
    # a manifest written by an earlier version carried the full path: the card still leaves it out
    manifest["source"]["description"] = f"folder images from {src}"
    assert str(src) not in dataset_card(manifest) and "folder images from 'alice-photos'" in dataset_card(manifest)
    assert public_text("CelebA crops (C:\\Users\\bob\\celeba)") == "CelebA crops ('celeba')"


def test_leaderboard_does_not_read_outputs_linked_from_elsewhere(clean_faces, tmp_path):
    from maskbench.bench.leaderboard import build_leaderboard
    from maskbench.core.io import read_png

    out = tmp_path / "results"
    res = evaluate(EvalConfig(method="masked-input", data=str(clean_faces), out=str(out), fid=False, identity=False,
                              save_outputs=True))
    outside = tmp_path / "elsewhere.png"
    Image.fromarray(np.tile(np.array([255, 0, 0], np.uint8), (64, 64, 1))).save(outside)
    linked = res.run_dir / "outputs" / "000000.png"
    linked.unlink()
    linked.symlink_to(outside)
    build_leaderboard(out, tmp_path / "lb")
    grid = read_png(tmp_path / "lb" / "samples.png")
    assert not (grid == [255, 0, 0]).all(axis=2).any()
