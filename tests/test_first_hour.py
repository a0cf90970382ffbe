"""A new user's first hour (issue 23): compare on the latest common dataset and a verdict that follows one
rule, superseded builds out of the main tables, paths recorded as given, FID flagged at small n, the demo
set that evaluate finds, library chatter kept quiet."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from maskbench.bench.evaluate import EvalConfig, evaluate
from maskbench.bench.leaderboard import build_leaderboard, compare_methods, format_comparison, superseded_builds
from maskbench.cli import main
from maskbench.core.paths import CACHE_MARK, expand_recorded, recorded_path
from maskbench.data.testing import write_fake_dataset
from maskbench.measures.stats import FID_MIN_N, summary_lines


def _eval(data: Path, out: Path, method: str):
    return evaluate(EvalConfig(method=method, data=str(data), out=str(out), fid=False, identity=False))


def _set_finished(run_dir: Path, when: str) -> None:
    m = json.loads((run_dir / "manifest.json").read_text())
    m["finished"] = when
    (run_dir / "manifest.json").write_text(json.dumps(m))


@pytest.fixture(scope="module")
def three_builds(tmp_path_factory, isolated_cache):
    """telea and navier-stokes on three datasets named ``faces``: an old build, its rebuild (same ids,
    other pixels) and a smaller build made last (other ids: a ``--limit`` build, not a rebuild)."""
    root = tmp_path_factory.mktemp("builds")
    out = root / "results"
    builds = {"old": write_fake_dataset(root / "a" / "faces", 6, size=64, seed=2),
              "new": write_fake_dataset(root / "b" / "faces", 6, size=64, seed=3),
              "small": write_fake_dataset(root / "c" / "faces", 4, size=64, seed=4)}
    labels = {}
    for when, (name, data) in zip(("2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z"),
                                  builds.items()):
        for method in ("telea", "navier-stokes"):
            res = _eval(data, out, method)
            _set_finished(res.run_dir, when)
            labels[name] = f"faces/test@{res.run_dir.name[:8]}"
    assert len(set(labels.values())) == 3
    return out, labels


def test_a_rebuild_supersedes_the_older_build_and_a_smaller_build_does_not(three_builds, tmp_path):
    out, labels = three_builds
    from maskbench.bench.leaderboard import collect_results

    assert superseded_builds(collect_results(out)) == {labels["old"]: labels["new"]}
    build_leaderboard(out, tmp_path)
    df = pd.read_csv(tmp_path / "leaderboard.csv", keep_default_na=False)
    assert set(df.loc[df["dataset"] == labels["old"], "superseded_by"]) == {labels["new"]}
    assert set(df.loc[df["dataset"] != labels["old"], "superseded_by"]) == {""}
    md = (tmp_path / "leaderboard.md").read_text()
    head, tail = md.split("## Superseded builds")
    assert labels["new"] in head and labels["small"] in head and labels["old"] not in head
    assert f"{labels['old']} — given-mask track" in tail and f"superseded by {labels['new']}" in tail
    assert "Superseded builds" in (tmp_path / "index.html").read_text()


def test_compare_takes_the_latest_common_dataset_and_says_which(three_builds):
    out, labels = three_builds
    table, info = compare_methods("telea", "navier-stokes", out)
    assert info["dataset"] == labels["small"] and sorted(info["others"]) == sorted([labels["old"], labels["new"]])
    assert table["n"].max() == 4
    _, info = compare_methods("telea", "navier-stokes", out, dataset=labels["old"].split("@")[1][:6])
    assert info["dataset"] == labels["old"] and info["others"] == []
    r = CliRunner().invoke(main, ["compare", "telea", "navier-stokes", "--results", str(out)])
    assert r.exit_code == 0, r.output
    assert f"comparing on {labels['small']}" in r.stderr and "--dataset" in r.stderr
    assert f"on {labels['small']}, paired over the 4 images" in r.stdout and "comparing" not in r.stdout


def test_compare_prefers_the_users_own_runs(three_builds, tmp_path):
    out, labels = three_builds
    import shutil

    committed = tmp_path / "committed"
    shutil.copytree(out, committed)
    mine = tmp_path / "mine"
    for run in out.glob(f"*/{labels['old'].split('@')[1]}*"):
        shutil.copytree(run, mine / run.parent.name / run.name)
    # the committed copy holds newer builds, but the user's own results come first
    _, info = compare_methods("telea", "navier-stokes", [mine, committed])
    assert info["dataset"] == labels["old"]


def _row(metric, diff, lo, hi, p, better):
    return {"metric": metric, "n": 501, "mean_a": 0.0158, "mean_b": 0.0157, "diff": diff, "ci_low": lo,
            "ci_high": hi, "p_wilcoxon": p, "better": better}


def test_the_verdict_follows_the_interval_and_a_disagreeing_test_is_explained():
    table = pd.DataFrame([_row("l1", 0.000068, -0.000040, 0.000157, 5.4e-8, ""),
                          _row("l1_hole", 0.0012, 0.0007, 0.0018, 5e-10, "a"),
                          _row("ssim_hole", 0.004, 0.001, 0.008, 0.3, "a"),
                          _row("psnr_hole", -0.14, -0.18, -0.10, 7.6e-11, "b")])
    text = format_comparison(table, {"a": "telea", "b": "navier-stokes", "dataset": "d@1"})
    lines = {ln.split()[0]: ln for ln in text.splitlines() if ln.split() and ln.split()[0] in set(table["metric"])}
    assert "[-0.000040, +0.000157]" in lines["l1"] and "-0.0000," not in text
    assert lines["l1"].endswith("no significant difference *")
    assert lines["l1_hole"].endswith("telea") and lines["psnr_hole"].endswith("navier-stokes")
    assert lines["ssim_hole"].endswith("telea *")
    assert "the interval contains 0 but Wilcoxon p < 0.05" in text
    assert "the interval excludes 0 but Wilcoxon p >= 0.05" in text
    assert "verdict follows the interval" in text and "95% bootstrap interval" in text.splitlines()[1]


def test_fid_is_flagged_below_its_stated_n():
    small = "\n".join(summary_lines({"fid": 250.0, "fid_n": 5, "metrics": {}}))
    assert "n=5" in small and f"n < {FID_MIN_N}" in small and "biased" in small and "KID" in small
    big = "\n".join(summary_lines({"fid": 12.0, "fid_n": FID_MIN_N, "metrics": {}}))
    assert "biased" not in big


def test_recorded_paths_hold_no_machine_layout(isolated_cache):
    assert recorded_path("data/celeba-masked") == "data/celeba-masked"
    assert recorded_path("wild:../shared/photos") == "wild:../shared/photos"
    assert recorded_path("hf:user/name") == "hf:user/name"
    assert recorded_path(Path.home() / "photos") == "~/photos"
    assert recorded_path(f"wild:{Path.home() / 'photos'}") == "wild:~/photos"
    assert recorded_path(isolated_cache / "fid" / "w.pth") == f"{CACHE_MARK}/fid/w.pth"
    assert recorded_path(None) is None
    assert expand_recorded(f"{CACHE_MARK}/fid/w.pth") == isolated_cache / "fid" / "w.pth"
    assert expand_recorded("~/photos") == Path.home() / "photos"


def test_an_evaluation_records_the_data_path_as_given(tmp_path, monkeypatch, isolated_cache):
    write_fake_dataset(tmp_path / "data" / "faces", 4, size=64, seed=1)
    monkeypatch.chdir(tmp_path)
    res = _eval(Path("data/faces"), Path("results"), "masked-input")
    summary = json.loads((tmp_path / res.run_dir / "summary.json").read_text())
    manifest = json.loads((tmp_path / res.run_dir / "manifest.json").read_text())
    assert summary["data"] == "data/faces" and manifest["dataset"]["path"] == "data/faces"
    assert str(tmp_path) not in json.dumps(manifest)


def test_the_demo_synth_fills_the_test_split_that_evaluate_reads(tmp_path, monkeypatch, isolated_cache):
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(main, ["synth", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "train 0, test 5" in r.output
    r = CliRunner().invoke(main, ["evaluate", "--method", "masked-input", "--no-fid", "--no-identity"])
    assert r.exit_code == 0, r.output
    assert "scoring masked-faces/ (test split" in r.stderr


def test_evaluate_says_when_the_default_folder_has_no_test_split(tmp_path, monkeypatch, isolated_cache):
    monkeypatch.chdir(tmp_path)
    write_fake_dataset(tmp_path / "masked-faces", 3, size=64, split="train", seed=5)
    r = CliRunner().invoke(main, ["evaluate", "--method", "masked-input", "--no-fid", "--no-identity"])
    assert r.exit_code == 0, r.output
    assert "./masked-faces has no test split" in r.stderr and "not found" not in r.stderr


def test_yunet_creation_prints_no_opencv_warning(capfd):
    import cv2

    from maskbench.faces.yunet import YuNet

    before = cv2.utils.logging.getLogLevel()
    try:
        YuNet()
    except Exception as e:  # no model file on this machine
        pytest.skip(f"YuNet unavailable: {e}")
    assert "WARN" not in capfd.readouterr().err
    assert cv2.utils.logging.getLogLevel() == before


def test_publishing_a_test_only_dataset_prints_no_datasets_chatter(tmp_path, capfd):
    root = write_fake_dataset(tmp_path / "ds", 3, size=64, seed=6)
    (root / "manifest.json").write_text(json.dumps({
        "config": {"size": 64, "align": True, "seed": 0, "mask_types": ["surgical"], "variants": 1,
                   "test_fraction": 1.0, "textures": None},
        "source": {"name": "folder", "description": "synthetic faces"},
        "counts": {"test": 3, "train": 0, "skipped": 0}}))
    r = CliRunner().invoke(main, ["publish", str(root), "--to-disk", str(tmp_path / "hub")])
    assert r.exit_code == 0, r.output
    err = capfd.readouterr().err + r.stderr
    assert "Generating" not in err and "Downloading" not in err and "Map" not in err, err
