"""Leaderboard aggregation: sorting by direction, reported-numbers rows, outputs, CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from maskbench.cli import main
from maskbench.evaluate import EvalConfig, evaluate
from maskbench.leaderboard import REPORTED_NOTE, build_leaderboard, collect_results, load_reported


REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def results(synthetic_faces, isolated_cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    for method in ("masked-input", "telea", "navier-stokes"):
        evaluate(EvalConfig(method=method, data=str(synthetic_faces), out=str(out), fid=False, identity=False,
                            save_outputs=method != "navier-stokes"))
    # an interrupted run (no manifest) must be ignored
    broken = out / "broken" / "x"
    broken.mkdir(parents=True)
    (broken / "summary.json").write_text(json.dumps({"method": "broken", "metrics": {}}))
    return out


@pytest.fixture
def reported_csv(tmp_path) -> Path:
    """A fixture file (made-up values, not real paper numbers: the shipped file has a header only)."""
    p = tmp_path / "reported.csv"
    p.write_text("method,paper,protocol,ssim_hole,fid\n"
                 "fixture-net,Fixture et al. 2099,other masks and resolution,0.99,1.5\n")
    return p


def test_collect_ignores_incomplete_runs(results):
    df = collect_results(results)
    assert sorted(df["method"]) == ["masked-input", "navier-stokes", "telea"]
    assert (df["source"] == "measured").all()


@pytest.mark.parametrize("primary", ["ssim_hole", "l1_hole"])
def test_rows_sorted_by_primary_in_its_direction(results, tmp_path, primary):
    build_leaderboard(results, tmp_path, primary=primary)
    df = pd.read_csv(tmp_path / "leaderboard.csv")
    vals = df[primary].tolist()
    assert vals == sorted(vals, reverse=(primary == "ssim_hole"))
    assert df["rank"].tolist() == [1, 2, 3]
    assert df.iloc[-1]["method"] == "masked-input"


def test_outputs_and_reported_rows(results, tmp_path, reported_csv):
    paths = build_leaderboard(results, tmp_path / "lb", reported=reported_csv)
    names = {p.name for p in paths}
    assert {"leaderboard.csv", "leaderboard.md", "index.html", "by_mask_type.png", "samples.png"} <= names
    df = pd.read_csv(tmp_path / "lb" / "leaderboard.csv")
    rep = df[df["source"] == REPORTED_NOTE]
    assert rep["method"].tolist() == ["fixture-net"] and pd.isna(rep["rank"]).all()
    assert df.iloc[-1]["method"] == "fixture-net"  # reported rows come after the ranked measured rows
    md = (tmp_path / "lb" / "leaderboard.md").read_text()
    assert "fixture-net" in md and REPORTED_NOTE in md and "ssim_hole ↑" in md
    page = (tmp_path / "lb" / "index.html").read_text()
    assert "<script>" in page and "class='reported'" in page and "by_mask_type.png" in page


def test_reported_file_validation(tmp_path):
    shipped = load_reported(REPO / "leaderboard" / "reported.csv")
    assert shipped.empty  # the repository ships the mechanism, not numbers
    bad = tmp_path / "bad.csv"
    bad.write_text("method,paper,protocol,accuracy\nx,y,z,1\n")
    with pytest.raises(ValueError, match="not a known metric"):
        load_reported(bad)
    bad.write_text("method,ssim\nx,0.5\n")
    with pytest.raises(ValueError, match="missing column"):
        load_reported(bad)
    bad.write_text("method,paper,protocol,ssim\nx,y,z,high\n")
    with pytest.raises(ValueError, match="not a number"):
        load_reported(bad)


def test_default_reported_file_is_picked_up_from_out(results, tmp_path, reported_csv):
    out = tmp_path / "lb"
    out.mkdir()
    shutil.copy(reported_csv, out / "reported.csv")
    build_leaderboard(results, out)
    assert "fixture-net" in (out / "leaderboard.csv").read_text()


def test_cli(results, tmp_path):
    r = CliRunner().invoke(main, ["leaderboard", "--results", str(results), "--out", str(tmp_path / "lb")])
    assert r.exit_code == 0, r.output
    assert "leaderboard.csv" in r.output
    r = CliRunner().invoke(main, ["leaderboard", "--results", str(tmp_path / "none"), "--out", str(tmp_path / "lb")])
    assert r.exit_code == 2 and "does not exist" in r.output
    r = CliRunner().invoke(main, ["leaderboard", "--results", str(results), "--out", str(tmp_path / "x"), "--primary", "accuracy"])
    assert r.exit_code == 2 and "Error: unknown metric 'accuracy'" in r.output
