"""End-to-end evaluation: results folder, caching and resume, failures, blind track, CLI errors."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from maskbench.bench.evaluate import EvalConfig, evaluate, summarize
from maskbench.cli import main
from maskbench.data.dataset import MaskedFaces
from maskbench.measures.stats import HOLE_BUCKET_LABELS, hole_buckets
from maskbench.methods import predictors as P

PLUGIN_DIR = Path(__file__).parent / "plugin"


@pytest.fixture(scope="module")
def real_runs(real_faces, isolated_cache, tmp_path_factory):
    """masked-input and telea on ~24 synthesized real faces, all metrics (FID + identity)."""
    out = tmp_path_factory.mktemp("results")
    runs = {}
    for method in ("masked-input", "telea"):
        runs[method] = evaluate(EvalConfig(method=method, data=str(real_faces), out=str(out), batch_size=10,
                                           device="cpu", save_outputs=(method == "telea")))
    return runs


def _worse(mi: dict, te: dict, k: str) -> bool:
    a, b = mi["metrics"][k]["mean"], te["metrics"][k]["mean"]
    return a < b if te["metrics"][k]["higher_is_better"] else a > b


@pytest.mark.slow
def test_masked_input_is_worse_than_telea_on_every_pixel_metric_and_fid(real_runs):
    """Pixel metrics and FID only: for every recognizer the unrestored input keeps more identity than
    telea's smear, so identity is not part of this ordering."""
    mi, te = real_runs["masked-input"].summary, real_runs["telea"].summary
    names = [k for k in te["metrics"] if not k.startswith(("raw_", "identity_"))]
    assert {"l1", "psnr", "ssim", "l1_hole", "psnr_hole", "ssim_hole"} <= set(names)
    for k in names:
        assert _worse(mi, te, k), k
    assert mi["fid"] > te["fid"] > 0


@pytest.mark.slow
def test_results_folder_contents(real_runs, real_faces, isolated_cache):
    res = real_runs["telea"]
    n = len(MaskedFaces(real_faces, "test"))
    d = res.run_dir
    assert d.parent.name == "telea"
    table = pd.read_parquet(d / "per_image.parquet")
    assert len(table) == n and table["error"].isna().all()
    assert {"id", "identity", "mask_type", "hole_fraction", "hole_face_fraction", "hole_bucket", "ssim_hole",
            "identity_cosine", "identity_match", "identity_rank1", "changed_outside_hole", "raw_ssim"} <= set(table.columns)
    assert set(table["hole_bucket"]) <= set(HOLE_BUCKET_LABELS)
    assert set(table["identity_match"].dropna()) <= {0.0, 1.0} and table["identity_cosine"].between(-1, 1).all()
    assert not table["changed_outside_hole"].any()
    s = json.loads((d / "summary.json").read_text())
    m = s["metrics"]["psnr_hole"]
    assert m["ci95"][0] <= m["mean"] <= m["ci95"][1] and m["n"] == n and m["higher_is_better"] is True
    assert set(s["by_mask_type"]) == set(table["mask_type"])
    assert sum(b["n"] for b in s["by_mask_type"].values()) == n
    assert sum(b["n"] for b in s["by_hole_bucket"].values()) == n
    assert s["identity_model"] == "sface-2021dec-int8bq" and s["fid_n"] == n
    assert s["identity_threshold"] == {"value": 0.363, "kind": "cosine"}
    ceil = s["ceiling"]
    assert ceil["identity_cosine"]["mean"] == 1.0 and ceil["identity_match"]["mean"] == 1.0
    # the originals identify their person at least as often as telea's outputs do
    assert ceil["identity_rank1"]["mean"] >= s["metrics"]["identity_rank1"]["mean"]
    man = json.loads((d / "manifest.json").read_text())
    assert man["complete"] and man["seed"] == 0
    assert len(man["fid_weights"]["sha256"]) == 64
    assert man["dataset"]["fingerprint"] == s["dataset_fingerprint"] == d.name.split("-")[0]
    assert man["identity_model"] == "sface-2021dec-int8bq"
    assert {"torch", "numpy", "python"} <= set(man["versions"]) and "cpu_count" in man["hardware"]
    assert "git_commit" in man
    assert len(list((d / "outputs").glob("*.png"))) == n
    assert not (d / "partial").exists()
    # reference statistics and original-face embeddings are cached by dataset fingerprint
    fp = s["dataset_fingerprint"]
    assert len(list((isolated_cache / "fid").glob(f"{fp}-*.npz"))) == 1
    assert (isolated_cache / "identity" / f"{fp}-sface-2021dec-int8bq.npy").is_file()


@pytest.mark.slow
def test_rerun_reuses_complete_results(real_runs, real_faces, isolated_cache):
    res = real_runs["masked-input"]
    before = (res.run_dir / "summary.json").stat().st_mtime_ns
    cfg = EvalConfig(method="masked-input", data=str(real_faces), out=str(res.run_dir.parent.parent), batch_size=7)
    again = evaluate(cfg)  # a different batch size does not change results: same folder, reused
    assert again.reused and again.run_dir == res.run_dir
    assert (res.run_dir / "summary.json").stat().st_mtime_ns == before
    assert again.summary == res.summary


class _Interrupt(BaseException):
    pass


class _Counting(P.Predictor):
    """Counts predicted images; raises _Interrupt (like Ctrl-C) on a batch holding the image ``stop_on``."""

    calls: list[int] = []
    stop_on: np.ndarray | None = None

    def predict(self, images, masks):
        cls = type(self)
        if cls.stop_on is not None and any((im == cls.stop_on).all() for im in images):
            raise _Interrupt()
        cls.calls.extend([1] * len(images))
        return P.PredictorOutput(images.copy())


def test_interrupted_run_resumes_per_batch(synthetic_faces, tmp_path, isolated_cache):
    from maskbench.data.dataset import MaskedFaces

    P.register("test-counting", _Counting)
    try:
        cfg = EvalConfig(method="test-counting", data=str(synthetic_faces), out=str(tmp_path), batch_size=2,
                         fid=False, identity=False)
        # batches 0 and 1 finish, batch 2 (images 4, 5) is interrupted, whatever order the workers run in
        _Counting.calls, _Counting.stop_on = [], MaskedFaces(synthetic_faces)[4].masked
        with pytest.raises(_Interrupt):
            evaluate(cfg, progress=None)
        run = next((tmp_path / "test-counting").iterdir())
        assert sorted(p.name for p in (run / "partial").glob("*.parquet")) == ["batch-000000-000002.parquet",
                                                                             "batch-000002-000004.parquet"]
        assert not (run / "summary.json").exists()
        _Counting.calls, _Counting.stop_on = [], None
        res = evaluate(cfg)
        assert len(_Counting.calls) == 2  # only the last batch was predicted again
        assert not res.reused and res.summary["n"] == 6
    finally:
        P.unregister("test-counting")


@pytest.fixture(scope="module")
def faces_13(tmp_path_factory) -> Path:
    """13 synthetic 64 px faces (a prime: no batch size divides it)."""
    from maskbench.data.testing import write_fake_dataset

    return write_fake_dataset(tmp_path_factory.mktemp("syn13"), 13, size=64, seed=3)


@pytest.mark.parametrize("identity", [False, True])
@pytest.mark.parametrize("second", [3, 5])
def test_a_run_resumed_with_another_batch_size_scores_each_image_once(faces_13, tmp_path, isolated_cache, second,
                                                                      identity):
    """Killed at batch size 4 after two batches, resumed at 3 or 5: the finished batches are kept (not
    predicted again), every other image is scored once, and the results equal an uninterrupted run's."""
    P.register("test-counting", _Counting)
    try:
        kw = dict(method="test-counting", data=str(faces_13), fid=False, identity=identity, workers=1)
        _Counting.calls, _Counting.stop_on = [], MaskedFaces(faces_13)[8].masked  # the third batch of 4
        with pytest.raises(_Interrupt):
            evaluate(EvalConfig(out=str(tmp_path / "resumed"), batch_size=4, **kw))
        _Counting.calls, _Counting.stop_on = [], None
        res = evaluate(EvalConfig(out=str(tmp_path / "resumed"), batch_size=second, **kw))
        predicted = len(_Counting.calls)
        whole = evaluate(EvalConfig(out=str(tmp_path / "whole"), batch_size=second, **kw))
        table = pd.read_parquet(res.run_dir / "per_image.parquet")
        assert len(table) == 13 and table["id"].is_unique and res.summary["n"] == 13
        assert predicted == 13 - 8
        assert table["id"].tolist() == [r["id"] for r in MaskedFaces(faces_13).records]
        pd.testing.assert_frame_equal(table, pd.read_parquet(whole.run_dir / "per_image.parquet"))
        # identity embeddings are batched: another batch split moves them by float rounding (~1e-9) only
        assert res.summary["metrics"].keys() == whole.summary["metrics"].keys()
        for name, m in res.summary["metrics"].items():
            w = whole.summary["metrics"][name]
            assert m.keys() == w.keys(), name
            for k, v in m.items():
                assert v == (pytest.approx(w[k], rel=1e-6, nan_ok=True) if v is not None else None), (name, k)
        assert not (res.run_dir / "partial").exists()
    finally:
        P.unregister("test-counting")


def test_a_datasets_first_run_says_what_it_caches(synthetic_faces, tmp_path, monkeypatch):
    """The first run on a dataset says, in one line, that it also embeds the originals (the rank-1 gallery)
    and caches them; a second method's run reuses the cache and says nothing."""
    monkeypatch.setenv("MASKBENCH_CACHE", str(tmp_path / "cache"))
    lines: list[str] = []
    kw = dict(data=str(synthetic_faces), out=str(tmp_path / "res"), fid=False, identity=True, workers=1)
    evaluate(EvalConfig(method="telea", **kw), log=lines.append)
    assert len(lines) == 1 and lines[0].startswith("first run on ") and "embeddings (the rank-1 gallery)" in lines[0]
    assert list((tmp_path / "cache" / "identity").glob("*.npy"))
    evaluate(EvalConfig(method="navier-stokes", **kw), log=lines.append)
    assert len(lines) == 1


def test_plan_keeps_finished_batches_and_drops_stale_ones(tmp_path):
    from maskbench.bench.runs import Batches, Scored, Span

    ids = [f"i{k}" for k in range(10)]
    b = Batches(tmp_path / "partial", ids, 4)
    assert b.spans == [Span(0, 4), Span(4, 8), Span(8, 10)]
    b.write(Span(4, 8), Scored([{"id": i} for i in ids[4:8]], {"x": np.arange(4)}))
    (tmp_path / "partial" / "batch-000000-000004.npz").write_bytes(b"killed before its rows")
    b = Batches(tmp_path / "partial", ids, 3)
    assert b.spans == [Span(0, 3), Span(3, 4), Span(4, 8), Span(8, 10)]
    assert b.pending() == [Span(0, 3), Span(3, 4), Span(8, 10)]
    assert sorted(p.name for p in (tmp_path / "partial").iterdir()) == [
        "batch-000004-000008.npz", "batch-000004-000008.parquet", "plan.json"]
    assert Batches(tmp_path / "partial", ids[::-1], 3).pending() == Batches(tmp_path / "p2", ids, 3).spans  # other ids


class _FailsOnOne(P.Predictor):
    def predict(self, images, masks):
        if len(images) > 1 or images[0].mean() == _FailsOnOne.bad_mean:
            if any(im.mean() == _FailsOnOne.bad_mean for im in images):
                raise RuntimeError("cannot handle this face")
        return P.PredictorOutput(images.copy())


def test_a_failing_image_is_recorded_and_the_run_goes_on(synthetic_faces, tmp_path, isolated_cache):
    from maskbench.data.dataset import MaskedFaces

    _FailsOnOne.bad_mean = MaskedFaces(synthetic_faces)[3].masked.mean()
    P.register("test-fails-on-one", _FailsOnOne)
    try:
        r = CliRunner().invoke(main, ["evaluate", "--method", "test-fails-on-one", "--data", str(synthetic_faces),
                                      "--out", str(tmp_path), "--batch-size", "4", "--no-fid", "--no-identity"])
        assert r.exit_code == 0, r.output
        assert "1 of 6 images failed, e.g. 000003: RuntimeError: cannot handle this face" in r.output
        assert "scored as the masked input" in r.output
        run = next((tmp_path / "test-fails-on-one").iterdir())
        table = pd.read_parquet(run / "per_image.parquet").set_index("id")
        assert table["error"].notna().sum() == 1
        # the failed image is scored as the unrestored input (the floor), not dropped
        from maskbench.measures.metrics import image_scores

        sample = MaskedFaces(synthetic_faces)[3]
        floor = image_scores(sample.masked, sample.original, sample.mask)
        assert table.loc["000003", "ssim_hole"] == pytest.approx(floor["ssim_hole"][0])
        s = json.loads((run / "summary.json").read_text())
        assert s["n_failed"] == 1 and s["metrics"]["ssim"]["n"] == 6 and s["failures_scored_as"] == "masked-input"
        assert s["failures"] == [{"id": "000003", "error": "RuntimeError: cannot handle this face"}]
    finally:
        P.unregister("test-fails-on-one")


class _NaNScores(P.Predictor):
    """Paints the hole of a batch's first image pure magenta (the poisoned metric below scores that NaN) and
    gives its second image landmarks that are NaN; the rest: the masked input, landmarks (32, 32)."""

    def predict(self, images, masks):
        out = images.copy()
        out[0][masks[0]] = (255, 0, 255)
        lms = np.full((len(images), 68, 2), 32.0, np.float32)
        lms[1] = np.nan
        return P.PredictorOutput(out, landmarks=lms)


def test_a_nan_score_is_a_failure_scored_as_the_masked_input(synthetic_faces, tmp_path, isolated_cache, monkeypatch):
    import maskbench.bench.evaluate as E
    from maskbench.measures.metrics import image_scores

    def poisoned(comp, org, m):  # a metric that gives NaN on one output (as a metric bug or a plug-in might)
        s = image_scores(comp, org, m)
        for i in range(len(comp)):
            if m[i].any() and (comp[i][m[i]] == (255, 0, 255)).all():
                s["ssim_hole"][i] = np.nan
        return s

    monkeypatch.setattr(E, "image_scores", poisoned)
    P.register("test-nan-scores", _NaNScores)
    try:
        res = evaluate(EvalConfig(method="test-nan-scores", data=str(synthetic_faces), out=str(tmp_path),
                                  batch_size=8, fid=False, identity=False))
    finally:
        P.unregister("test-nan-scores")
    s = res.summary
    assert s["n"] == 6 and s["n_failed"] == 2
    assert s["failures"] == [{"id": "000000", "error": "ScoreError: not a finite number: ssim_hole"},
                             {"id": "000001", "error": "ScoreError: not a finite number: landmark_nme"}]
    table = pd.read_parquet(res.run_dir / "per_image.parquet").set_index("id")
    assert table["ssim_hole"].notna().all() and s["metrics"]["ssim_hole"]["n"] == 6  # nothing averaged away
    sample = MaskedFaces(synthetic_faces)[0]
    floor = image_scores(sample.masked, sample.original, sample.mask)
    assert table.loc["000000", "ssim_hole"] == pytest.approx(floor["ssim_hole"][0])  # scored as the masked input
    assert table["landmark_nme"].isna().tolist() == [True, True, False, False, False, False]
    assert s["metrics"]["landmark_nme"]["n"] == 4


class _BlindPaintsEverything(P.Predictor):
    """Blind: claims the lower half is the hole and paints it grey (and touches one outside pixel)."""

    track = "blind"

    def predict(self, images, masks):
        assert masks is None
        out = images.copy()
        h = images.shape[1]
        pm = np.zeros(images.shape[:3], bool)
        pm[:, h // 2 :] = True
        out[pm] = 128
        out[:, 0, 0] = 0
        return P.PredictorOutput(out, pm)


def test_blind_track_scores_masks_and_raw_output(synthetic_faces, tmp_path, isolated_cache):
    P.register("test-blind", _BlindPaintsEverything)
    try:
        res = evaluate(EvalConfig(method="test-blind", data=str(synthetic_faces), out=str(tmp_path), fid=False, identity=False))
        table = pd.read_parquet(res.run_dir / "per_image.parquet")
        assert table["changed_outside_hole"].all()
        assert (table["raw_l1"] > table["l1"]).all()  # the raw output also changed the upper half
        assert ((table["mask_iou"] > 0) & (table["mask_iou"] < 1)).all()
        assert res.summary["track"] == "blind"
        assert res.summary["metrics"]["mask_f1"]["higher_is_better"]
    finally:
        P.unregister("test-blind")


def test_entry_point_method_evaluates(synthetic_faces, tmp_path, monkeypatch, isolated_cache):
    monkeypatch.syspath_prepend(str(PLUGIN_DIR))
    P.reload_entry_points()
    try:
        r = CliRunner().invoke(main, ["evaluate", "--method", "example-meanfill", "--data", str(synthetic_faces),
                                      "--out", str(tmp_path), "--no-fid", "--no-identity", "--limit", "4"])
        assert r.exit_code == 0, r.output
        run = next((tmp_path / "example-meanfill").iterdir())
        man = json.loads((run / "manifest.json").read_text())
        assert man["method"]["class"] == "maskbench_example_plugin:MeanFill" and man["method"]["input_size"] == 128
        assert json.loads((run / "summary.json").read_text())["n"] == 4
    finally:
        monkeypatch.undo()
        sys.modules.pop("maskbench_example_plugin", None)
        P.reload_entry_points()


@pytest.mark.parametrize(
    "args,message",
    [
        (["--method", "teela"], "did you mean telea"),
        (["--method", "telea", "--data", "/nonexistent/dataset"], "not found"),
        (["--method", "telea", "--batch-size", "0"], "batch-size"),
        (["--method", "telea", "--split", "train"], "has no 'train' split"),
        (["--method", "telea", "--device", "tpu"], "device"),
    ],
)
def test_bad_arguments_give_one_line_and_nonzero_exit(args, message, synthetic_faces, tmp_path):
    full = ["evaluate", "--data", str(synthetic_faces), "--out", str(tmp_path), "--no-fid", "--no-identity"]
    r = CliRunner().invoke(main, full + args)
    assert r.exit_code == 2
    assert message in r.output
    assert "Traceback" not in r.output
    assert len([ln for ln in r.output.splitlines() if ln.startswith("Error")]) == 1


def test_hole_buckets_and_summary():
    assert HOLE_BUCKET_LABELS[0] == "0-10%" and HOLE_BUCKET_LABELS[-1] == "90-100%" and len(HOLE_BUCKET_LABELS) == 10
    got = hole_buckets([0.0, 0.099, 0.1, 0.35, 0.9, 1.7]).astype(str).tolist()
    assert got == ["0-10%", "0-10%", "10-20%", "30-40%", "90-100%", "90-100%"]
    t = pd.DataFrame({"id": ["a", "b", "c"], "mask_type": ["cloth", "cloth", "n95"],
                      "hole_bucket": ["30-40%", "30-40%", "40-50%"],
                      "ssim": [0.5, 0.7, np.nan], "psnr": [10.0, math.inf, 20.0], "error": [None, None, "x"]})
    s = summarize(t)
    assert s["metrics"]["ssim"]["mean"] == pytest.approx(0.6) and s["metrics"]["ssim"]["n"] == 2
    lo, hi = s["metrics"]["ssim"]["ci95"]
    assert 0.5 <= lo < 0.6 < hi <= 0.7
    assert s["n_failed"] == 1 and s["by_mask_type"]["cloth"]["n"] == 2
    assert s["by_hole_bucket"]["30-40%"]["n"] == 2 and list(s["by_hole_bucket"]) == ["30-40%", "40-50%"]
    assert s["metrics"]["psnr"]["mean"] == pytest.approx((10 + 100 + 20) / 3)  # +inf capped at 100 dB


class _Overlap(P.Predictor):
    """Records whether two predict calls were ever inside predict at the same time."""

    active = 0
    overlapped = False
    lock = None
    entered = None

    def predict(self, images, masks):
        cls = type(self)
        with cls.lock:
            cls.active += 1
            if cls.active > 1:
                cls.overlapped = True
                cls.entered.set()
        # give another worker the chance to enter: a thread-safe method is joined quickly (the event
        # fires), a serialised one waits the full 0.3 s and nobody comes in
        cls.entered.wait(10 if cls.thread_safe else 0.3)
        with cls.lock:
            cls.active -= 1
        return P.PredictorOutput(images.copy())


@pytest.mark.parametrize("thread_safe", [False, True])
def test_predict_calls_are_serialised_unless_thread_safe(thread_safe, synthetic_faces, tmp_path):
    import threading

    cls = type("OverlapCheck", (_Overlap,), {"thread_safe": thread_safe, "lock": threading.Lock(),
                                              "entered": threading.Event(), "active": 0, "overlapped": False})
    P.register("test-overlap", cls)
    try:
        evaluate(EvalConfig(method="test-overlap", data=str(synthetic_faces), out=str(tmp_path), batch_size=2,
                            fid=False, identity=False, workers=2))
        assert cls.overlapped is thread_safe
    finally:
        P.unregister("test-overlap")
