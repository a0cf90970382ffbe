"""Nothing lost, nothing aborted: a damaged dataset file fails one image, a damaged results folder one run."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from maskbench.bench.evaluate import EvalConfig, evaluate
from maskbench.bench.leaderboard import DamagedRunWarning, collect_results
from maskbench.cli import main
from maskbench.data.testing import write_fake_dataset

# --------------------------------------------------------------------------- evaluate: damaged files


@pytest.fixture(scope="module")
def six_faces(tmp_path_factory) -> Path:
    return write_fake_dataset(tmp_path_factory.mktemp("six") / "ds", 6, size=64, seed=5)


def _damaged_copy(six_faces: Path, tmp_path: Path) -> Path:
    root = tmp_path / "ds"
    shutil.copytree(six_faces, root)
    png = root / "test" / "masked" / "000002.png"
    png.write_bytes(png.read_bytes()[: png.stat().st_size // 2])  # a truncated PNG
    return root


@pytest.mark.slow
def test_a_truncated_png_fails_one_image_and_the_rest_are_scored(six_faces, tmp_path, isolated_cache):
    root = _damaged_copy(six_faces, tmp_path)
    res = evaluate(EvalConfig(method="telea", data=str(root), out=str(tmp_path / "r"), batch_size=4, device="cpu"))
    s = res.summary
    assert s["n"] == 6 and s["n_failed"] == 1
    assert res.failures == [{"id": "000002", "error": "SampleError: masked/000002.png: cannot read image"}]
    for metric in ("l1", "ssim_hole", "identity_cosine"):
        assert s["metrics"][metric]["n"] == 5, metric
    assert s["fid"] is not None and s["fid_n"] == 5
    table = pd.read_parquet(res.run_dir / "per_image.parquet").set_index("id")
    assert np.isnan(table.loc["000002", "l1"]) and table.drop("000002")["identity_cosine"].notna().all()
    # references computed without one original are not cached under the dataset's fingerprint
    assert not list((isolated_cache / "fid").glob(f"{s['dataset_fingerprint']}-*"))
    assert not list((isolated_cache / "identity").glob(f"{s['dataset_fingerprint']}-*"))


def test_evaluate_cli_goes_on_past_a_damaged_sample(six_faces, tmp_path):
    root = _damaged_copy(six_faces, tmp_path)
    mask = root / "test" / "mask" / "000004.png"
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(mask)  # readable, but not the images' size
    r = CliRunner().invoke(main, ["evaluate", "--method", "masked-input", "--data", str(root), "--out",
                                  str(tmp_path / "r"), "--no-fid", "--no-identity"])
    assert r.exit_code == 0, r.output
    assert "2 of 6 images failed, e.g. 000002: SampleError: masked/000002.png: cannot read image" in r.output
    s = json.loads(next((tmp_path / "r" / "masked-input").glob("*/summary.json")).read_text())
    assert [f["id"] for f in s["failures"]] == ["000002", "000004"] and "sizes differ" in s["failures"][1]["error"]
    assert s["metrics"]["psnr"]["n"] == 4


# --------------------------------------------------------------------------- leaderboard: damaged summary


def test_a_damaged_summary_is_skipped_with_a_warning_naming_it(six_faces, tmp_path):
    out = tmp_path / "results"
    for method in ("masked-input", "telea"):
        evaluate(EvalConfig(method=method, data=str(six_faces), out=str(out), fid=False, identity=False))
    bad = next((out / "telea").glob("*/summary.json"))
    bad.write_text(bad.read_text()[:40])  # cut short, as by a full disk
    with pytest.warns(DamagedRunWarning, match=re.escape(str(bad))):
        rows = collect_results(out)
    assert list(rows["method"]) == ["masked-input"]

    r = CliRunner().invoke(main, ["leaderboard", "--results", str(out), "--out", str(tmp_path / "lb")])
    assert r.exit_code == 0, r.output
    warned = [ln for ln in r.output.splitlines() if ln.startswith("warning:")]
    assert len(warned) == 1 and str(bad) in warned[0]
    assert "masked-input" in (tmp_path / "lb" / "leaderboard.csv").read_text()

    bad.write_text("[1, 2]")  # valid JSON, not a summary
    (bad.parent / "manifest.json").write_text("{")
    with pytest.warns(DamagedRunWarning, match="manifest.json"):
        assert list(collect_results(out)["method"]) == ["masked-input"]
