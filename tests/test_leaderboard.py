"""Leaderboard: one row per method/options/weights/dataset, failures cannot buy rank, intervals and
significance marks, reported-numbers rows, paired comparison, CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from maskbench.bench.evaluate import EvalConfig, evaluate
from maskbench.bench.leaderboard import (
    REPORTED_NOTE,
    build_leaderboard,
    collect_results,
    compare_methods,
    load_reported,
)
from maskbench.cli import main
from maskbench.methods import predictors as P

REPO = Path(__file__).resolve().parent.parent


class _FailsOnMost(P.Predictor):
    """The plug-in from the issue: raises on most images and returns the masked input on the rest."""

    def predict(self, images, masks):
        if len(images) > 1 or images[0].mean() % 3 >= 0.5:
            raise RuntimeError("out of memory")
        return P.PredictorOutput(images.copy())


class _TeleaClone(P.Predictor):
    """Identical outputs to telea under another name: must be marked 'not significantly different'."""

    def predict(self, images, masks):
        from maskbench.baselines.classical import Telea

        return Telea().predict(images, masks)


def _eval(data, out, method, **kw):
    return evaluate(EvalConfig(method=method, data=str(data), out=str(out), fid=False, identity=False, **kw))


@pytest.fixture(scope="module")
def results(synthetic_faces, isolated_cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    P.register("test-fails-on-most", _FailsOnMost)
    P.register("test-telea-clone", _TeleaClone)
    try:
        for method in ("masked-input", "telea", "navier-stokes", "test-fails-on-most", "test-telea-clone"):
            _eval(synthetic_faces, out, method, save_outputs=method in ("masked-input", "telea"))
        _eval(synthetic_faces, out, "telea")  # the same method again, without --save-outputs: same row
    finally:
        P.unregister("test-fails-on-most")
        P.unregister("test-telea-clone")
    # an interrupted run (no manifest) must be ignored
    broken = out / "broken" / "x"
    broken.mkdir(parents=True)
    (broken / "summary.json").write_text(json.dumps({"method": "broken", "metrics": {}}))
    return out


def _legacy_run_that_dropped_failures(results: Path, tmp_path: Path) -> Path:
    """A run in the old format: failed images dropped, the survivors' mean looks best."""
    root = tmp_path / "legacy"
    src = next((results / "telea").iterdir())
    dst = root / "legacy-method" / src.name
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("outputs"))
    s = json.loads((dst / "summary.json").read_text())
    s.update(method="legacy-method", n_failed=5)
    s.pop("failures_scored_as")
    for m in s["metrics"].values():
        if m["mean"] is not None:
            m["mean"] = 0.999 if m["higher_is_better"] else 0.0
    (dst / "summary.json").write_text(json.dumps(s))
    (dst / "per_image.parquet").unlink()
    return root


def test_collect_ignores_incomplete_runs(results):
    df = collect_results(results)
    assert sorted(set(df["method"])) == ["masked-input", "navier-stokes", "telea", "test-fails-on-most",
                                         "test-telea-clone"]
    assert (df["method"] == "telea").sum() == 2  # two runs on disk ...


def test_one_row_per_method_and_dataset(results, tmp_path):
    build_leaderboard(results, tmp_path)
    df = pd.read_csv(tmp_path / "leaderboard.csv")
    measured = df[df["source"] == "measured"]
    assert (measured["method"] == "telea").sum() == 1  # ... one row
    assert measured.loc[measured["method"] == "telea", "runs"].item() == 2
    assert measured.loc[measured["method"] == "telea", "seeds"].item() == 1


def test_seeds_are_aggregated_with_their_spread(results, synthetic_faces, tmp_path):
    out = tmp_path / "r"
    shutil.copytree(results, out)
    _eval(synthetic_faces, out, "telea", seed=1)
    build_leaderboard(out, tmp_path / "lb")
    df = pd.read_csv(tmp_path / "lb" / "leaderboard.csv")
    row = df[(df["source"] == "measured") & (df["method"] == "telea")]
    assert len(row) == 1 and row["seeds"].item() == 2
    assert row["ssim_hole_seed_sd"].item() == pytest.approx(0.0)  # telea is deterministic


def test_a_plugin_failing_on_most_images_ranks_below_every_complete_row(results, tmp_path):
    legacy = _legacy_run_that_dropped_failures(results, tmp_path)
    build_leaderboard([results, legacy], tmp_path / "lb")
    df = pd.read_csv(tmp_path / "lb" / "leaderboard.csv")
    measured = df[df["source"] == "measured"].sort_values("rank")
    order = measured["method"].tolist()
    # failed images scored as the masked input: it can at best tie the floor
    fails = measured.set_index("method").loc["test-fails-on-most"]
    assert fails["n_failed"] >= 4 and bool(fails["complete"])
    floor = measured.set_index("method").loc["masked-input"]
    assert fails["ssim_hole"] == pytest.approx(floor["ssim_hole"])
    assert order.index("test-fails-on-most") > order.index("telea")
    # a run that dropped its failures is ranked last, whatever its survivors' mean
    assert order[-1] == "legacy-method" and not bool(measured.iloc[-1]["complete"])
    md = (tmp_path / "lb" / "leaderboard.md").read_text()
    assert "legacy-method (incomplete: failed images dropped)" in md and "| 5/6 " in md


def _run_with_nan_scores(results: Path, root: Path, method: str, columns, rows) -> None:
    """A copy of telea's run under another name, its per-image ``columns`` NaN on ``rows`` (and in the
    summary's means where every row is NaN), as a metric bug or a plug-in's own scoring could leave it."""
    src = next(d for d in (results / "telea").iterdir() if (d / "per_image.parquet").is_file())
    dst = root / method / src.name
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("outputs"))
    t = pd.read_parquet(dst / "per_image.parquet")
    for c in columns:
        t.loc[rows, c] = np.nan
    t.to_parquet(dst / "per_image.parquet", index=False)
    s = json.loads((dst / "summary.json").read_text())
    s["method"] = method
    for c in columns:
        if t[c].isna().all():
            s["metrics"][c].update(mean=None, ci95=[None, None], n=0)
    (dst / "summary.json").write_text(json.dumps(s))


def test_runs_with_nan_scores_are_flagged_and_not_ranked(results, tmp_path):
    nan_root = tmp_path / "nan"
    pixel = ["l1", "psnr", "ssim", "l1_hole", "psnr_hole", "ssim_hole"]
    _run_with_nan_scores(results, nan_root, "all-nan", pixel, slice(None))
    _run_with_nan_scores(results, nan_root, "half-nan", ["ssim_hole"], [0, 2, 4])
    build_leaderboard([results, nan_root], tmp_path / "lb")
    df = pd.read_csv(tmp_path / "lb" / "leaderboard.csv")
    measured = df[df["source"] == "measured"].set_index("method")
    # below every other row, never marked best, though half-nan's mean over 3 images is telea's
    others = measured.drop(["all-nan", "half-nan"])
    assert measured.loc[["all-nan", "half-nan"], "rank"].min() > others["rank"].max()
    assert not measured.loc["half-nan", "ssim_hole_best"]
    assert measured.loc["all-nan", "nan_images"] == 6 and measured.loc["half-nan", "nan_images"] == 3
    assert (others["nan_images"] == 0).all()
    md = (tmp_path / "lb" / "leaderboard.md").read_text()
    for name, k in (("half-nan", 3), ("all-nan", 6)):
        line = next(ln for ln in md.splitlines() if f" {name} (NaN" in ln and ln.startswith("| "))
        assert f"{name} (NaN scores on {k} images: not ranked)" in line and f"| 0/6 + {k} NaN |" in line, line
        assert f"| {name} (NaN scores on {k} images) " in md  # the breakdown tables say so too
    assert "6 NaN" in (tmp_path / "lb" / "index.html").read_text()


def test_nan_scored_images_counts_only_due_scores():
    from maskbench.bench.leaderboard import nan_scored_images

    t = pd.DataFrame({"id": list("abcde"), "error": [None, None, "RuntimeError: x", None, None],
                      "hole_fraction": [0.2, 0.0, 0.2, 0.2, 0.2],
                      "ssim_hole": [0.5, np.nan, np.nan, 0.5, 0.5],  # b: no hole; c: failed
                      "psnr": [np.inf, 20.0, np.nan, 20.0, -np.inf],  # a: exact match; e: not a score
                      "identity_rank1": [np.nan] * 5, "landmark_nme": [np.nan] * 5})  # may be missing
    assert nan_scored_images(t) == 1
    t.loc[3, "ssim_hole"] = np.nan
    assert nan_scored_images(t) == 2


@pytest.mark.parametrize("primary", ["ssim_hole", "l1_hole"])
def test_rows_sorted_by_primary_in_its_direction(results, tmp_path, primary):
    build_leaderboard(results, tmp_path, primary=primary)
    df = pd.read_csv(tmp_path / "leaderboard.csv")
    df = df[df["source"] == "measured"].sort_values("rank")
    vals = df[primary].tolist()
    assert vals == sorted(vals, reverse=(primary == "ssim_hole"))
    assert df["rank"].tolist() == list(range(1, len(df) + 1))


def test_intervals_and_marks_of_rows_tied_with_the_best(results, tmp_path):
    build_leaderboard(results, tmp_path)
    df = pd.read_csv(tmp_path / "leaderboard.csv").set_index("method")
    for m in ("telea", "navier-stokes", "masked-input"):
        assert df.loc[m, "ssim_hole_lo"] <= df.loc[m, "ssim_hole"] <= df.loc[m, "ssim_hole_hi"]
    best = df["ssim_hole"].idxmax()
    assert best in ("telea", "test-telea-clone", "navier-stokes") and df.loc[best, "ssim_hole_best"]
    # identical per-image scores: not significantly different from telea, so both carry the mark
    assert df.loc["telea", "ssim_hole_best"] == df.loc["test-telea-clone", "ssim_hole_best"]
    if best in ("telea", "test-telea-clone"):
        assert df.loc["test-telea-clone", "ssim_hole_best"]
    # the unrestored input is worse on all 6 images: exact Wilcoxon p = 2/64 < 0.05
    assert not df.loc["masked-input", "ssim_hole_best"]
    page = (tmp_path / "index.html").read_text()
    assert "<small>[" in page and "class='best'" in page and "manifest.json" in page
    assert "maskbench 0.1.0" in page and "commit" in page and "max-width:1368px" in page


def test_compare_gives_paired_intervals_and_wilcoxon(results):
    table, info = compare_methods("telea", "masked-input", results)
    row = table.set_index("metric").loc["ssim_hole"]
    assert row["n"] == 6 and row["ci_low"] <= row["diff"] <= row["ci_high"]
    assert row["diff"] > 0 and row["better"] == "a" and row["p_wilcoxon"] == pytest.approx(2 / 64)
    same, _ = compare_methods("telea", "test-telea-clone", results)
    assert (same["diff"] == 0).all() and (same["p_wilcoxon"] == 1.0).all() and (same["better"] == "").all()
    with pytest.raises(ValueError, match="no complete run of 'nope'"):
        compare_methods("telea", "nope", results)


def test_compare_cli(results):
    r = CliRunner().invoke(main, ["compare", "telea", "navier-stokes", "--results", str(results)])
    assert r.exit_code == 0, r.output
    assert "telea - navier-stokes" in r.output and "95% interval" in r.output
    line = next(ln for ln in r.output.splitlines() if ln.startswith("ssim_hole"))
    assert "[" in line and "]" in line
    r = CliRunner().invoke(main, ["compare", "telea", "nope", "--results", str(results)])
    assert r.exit_code == 2 and r.output.count("Error") == 1 and "Traceback" not in r.output
    r = CliRunner().invoke(main, ["compare", "telea", "masked-input", "--results", str(results), "--metric", "acc"])
    assert r.exit_code == 2 and "unknown metric 'acc'" in r.output


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
    assert "by mask type" in md and "by hole area" in md
    page = (tmp_path / "lb" / "index.html").read_text()
    assert "<script>" in page and "by_mask_type.png" in page and "samples.png" in page


def test_sample_grid_shows_input_methods_and_ground_truth(results, tmp_path):
    from maskbench.core.io import read_png

    build_leaderboard(results, tmp_path)
    grid = read_png(tmp_path / "samples.png")
    # 2 methods saved outputs: columns = label + masked input + 2 methods + ground truth, 128 px each
    assert grid.shape[1] == 70 + 4 * 128 and grid.shape[0] == 22 + 4 * 128


@pytest.fixture
def reported_csv(tmp_path) -> Path:
    """A fixture file (made-up values, not real paper numbers: the shipped file has a header only)."""
    p = tmp_path / "reported.csv"
    p.write_text("method,paper,protocol,ssim_hole,fid\n"
                 "fixture-net,Fixture et al. 2099,other masks and resolution,0.99,1.5\n")
    return p


def test_reported_file_validation(tmp_path):
    shipped = load_reported(REPO / "leaderboard" / "reported.csv")
    # the shipped rows are papers' own numbers, each marked as another protocol and never ranked
    assert not shipped.empty and (shipped["source"] == REPORTED_NOTE).all()
    assert shipped["protocol"].str.contains("not comparable").all()
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


def test_cli_defaults_write_outside_the_committed_leaderboard(results, tmp_path, monkeypatch):
    """`maskbench leaderboard` with no options merges results/ and leaderboard/runs/ into results/leaderboard/."""
    work = tmp_path / "work"
    shutil.copytree(results, work / "results")
    committed = work / "leaderboard" / "runs" / "committed-method"
    shutil.copytree(next((results / "navier-stokes").iterdir()), committed / "run")
    s = json.loads((committed / "run" / "summary.json").read_text())
    (committed / "run" / "summary.json").write_text(json.dumps({**s, "method": "committed-method"}))
    monkeypatch.chdir(work)
    r = CliRunner().invoke(main, ["leaderboard"])
    assert r.exit_code == 0, r.output
    md = (work / "results" / "leaderboard" / "leaderboard.md").read_text()
    assert "committed-method" in md and "telea" in md
    assert sorted(p.name for p in (work / "leaderboard").iterdir()) == ["runs"]  # nothing written there


def test_cli_errors(results, tmp_path):
    r = CliRunner().invoke(main, ["leaderboard", "--results", str(tmp_path / "none"), "--out", str(tmp_path / "lb")])
    assert r.exit_code == 2 and "does not exist" in r.output
    r = CliRunner().invoke(main, ["leaderboard", "--results", str(results), "--out", str(tmp_path / "x"), "--primary", "accuracy"])
    assert r.exit_code == 2 and "Error: unknown metric 'accuracy'" in r.output


def test_weights_card_becomes_a_training_column(results, tmp_path):
    out = tmp_path / "r"
    shutil.copytree(results, out)
    run = next((out / "navier-stokes").iterdir())
    man = json.loads((run / "manifest.json").read_text())
    man["method"]["weights_card"] = {"resolution": 256, "steps": 1200, "images_seen": 38400, "device": "cpu",
                                     "wall_time_s": 3600.0}
    (run / "manifest.json").write_text(json.dumps(man))
    build_leaderboard(out, tmp_path / "lb")
    md = (tmp_path / "lb" / "leaderboard.md").read_text()
    assert "training" in md and "256 px, 1200 steps, 38400 images, cpu, 3600 s" in md
    assert np.isfinite(pd.read_csv(tmp_path / "lb" / "leaderboard.csv")["ssim_hole"]).all()


def test_rows_of_one_method_with_other_options_keep_their_own_label(results, synthetic_faces, tmp_path):
    root = tmp_path / "runs"
    shutil.copytree(results / "telea", root / "telea")
    _eval(synthetic_faces, root, "telea", method_args=(("radius", 9),))
    build_leaderboard(root, tmp_path / "lb")
    md = (tmp_path / "lb" / "leaderboard.md").read_text()
    by_type = md[md.index("by mask type"):]
    assert "telea [radius=9]" in by_type  # its own row in the breakdown, not merged into plain telea
    assert sum(line.startswith("| telea ") for line in by_type.splitlines()) >= 1
    assert "nan" not in md.lower().replace("nan_", "")
