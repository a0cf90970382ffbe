"""``--engine ray`` (issue 26) on a local Ray with 2 CPUs, started once for the module: synthesis gives the bytes
of ``--workers 2``, a killed driver resumes to the same bytes, evaluation gives the table and summary of a
run without Ray, and an actor that dies mid-run is replaced without losing a batch.

Skips without Ray (``pip install -e ".[ray]"``) or without the real test data (``$MASKBENCH_TEST_DATA``)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("ray", reason='Ray is not installed (pip install -e ".[ray]")')

from maskbench.bench.evaluate import EvalConfig, evaluate  # noqa: E402
from maskbench.bench.evaluate_ray import CRASH_ONCE_ENV, RayEvalEngine  # noqa: E402
from maskbench.core.cluster import RayEngine  # noqa: E402
from maskbench.core.errors import MaskbenchError  # noqa: E402
from maskbench.data.sources import resolve_source  # noqa: E402
from maskbench.data.synth import SynthConfig, synthesize  # noqa: E402
from maskbench.data.synth_ray import RaySynthEngine  # noqa: E402

pytestmark = pytest.mark.slow

N_FACES = 40
CONFIG = SynthConfig(seed=5, test_fraction=1.0)  # every face in the test split, which evaluate scores


@pytest.fixture(scope="module")
def ray_engine(tmp_path_factory, isolated_cache):
    """A local Ray with 2 CPUs for the module (the actors inherit the cache and the crash hook's variable)."""
    crash = tmp_path_factory.mktemp("crash") / "crash-once"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(CRASH_ONCE_ENV, str(crash))  # set before Ray starts: its workers inherit it
        engine = RayEngine(num_cpus=2)
        engine.connect()
        yield engine
        engine.close()


@pytest.fixture(scope="module")
def reference(tmp_path_factory, celeba_dir) -> Path:
    """40 CelebA faces synthesized with ``--workers 2``."""
    out = tmp_path_factory.mktemp("ref") / "ds"
    synthesize(resolve_source("celeba", celeba_dir), out, CONFIG, limit=N_FACES, workers=2, progress=False)
    return out


def hashes(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder`` but the run lock, by relative path."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"}


def test_synth_on_ray_gives_the_bytes_of_two_workers(ray_engine, reference, celeba_dir, tmp_path):
    out = tmp_path / "ds"
    report = synthesize(resolve_source("celeba", celeba_dir), out, CONFIG, limit=N_FACES,
                        engine=RaySynthEngine(ray_engine), progress=False)
    assert report.planned == N_FACES and report.faces + sum(report.skipped.values()) == N_FACES
    want = hashes(reference)
    assert len([k for k in want if k.endswith(".png")]) == 3 * report.faces > 0
    assert hashes(out) == want


def test_a_killed_driver_resumes_to_the_same_bytes(ray_engine, reference, celeba_dir, tmp_path):
    """``maskbench synth --engine ray --ray-address`` killed (SIGKILL) once its first block is logged, then run
    again: the finished faces are not redone and the folder ends as the ``--workers 2`` one."""
    import ray

    out = tmp_path / "ds"
    cmd = [sys.executable, "-m", "maskbench", "synth", "--src", "celeba", "--data-dir", str(celeba_dir), "--out",
           str(out), "--limit", str(N_FACES), "--seed", str(CONFIG.seed), "--test-fraction", "1", "--engine", "ray",
           "--ray-address", ray.get_runtime_context().gcs_address, "--templates", "procedural", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    logged = 0
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None:
        logs = list((out / ".progress").glob("shard-*.jsonl"))
        logged = sum(len(p.read_text().splitlines()) for p in logs)
        if logged:  # the first block is logged: kill now, while the others are in flight
            break
        time.sleep(0.02)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.communicate()}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 0 < logged < N_FACES and not (out / "test" / "metadata.jsonl").is_file()

    report = synthesize(resolve_source("celeba", celeba_dir), out, CONFIG, limit=N_FACES,
                        engine=RaySynthEngine(ray_engine), progress=False)
    assert report.resumed >= logged and report.resumed + report.faces + sum(report.skipped.values()) == N_FACES
    assert hashes(out) == hashes(reference)


def _eval(data: Path, out: Path, engine=None, on_progress=None):
    cfg = EvalConfig(method="telea", data=str(data), out=str(out), limit=20, batch_size=4, workers=2)
    return evaluate(cfg, engine=engine, on_progress=on_progress)


@pytest.fixture(scope="module")
def local_run(reference, tmp_path_factory, isolated_cache):
    """telea scored on 20 of the faces without Ray (5 batches)."""
    return _eval(reference, tmp_path_factory.mktemp("local"))


#: Columns computed by a network whose float sums depend on the thread count (OpenCV DNN's SFace): equal to 1e-6.
NETWORK_COLUMNS = ("identity_cosine",)


def _flat(d, prefix=""):
    out = {}
    for k, v in (d.items() if isinstance(d, dict) else enumerate(d)):
        if isinstance(v, (dict, list)):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _same_run(got, want) -> None:
    a = pd.read_parquet(got.run_dir / "per_image.parquet")
    b = pd.read_parquet(want.run_dir / "per_image.parquet")
    exact = [c for c in a.columns if c not in NETWORK_COLUMNS]
    pd.testing.assert_frame_equal(a[exact], b[exact], check_exact=True)  # pixel metrics: bit for bit
    pd.testing.assert_frame_equal(a[list(NETWORK_COLUMNS)], b[list(NETWORK_COLUMNS)], check_exact=False, rtol=1e-6)
    # FID and identity (and their means and stds in the summary): the actors run Inception and SFace on one thread
    # each, this process on all cores;
    # float32 convolutions then sum in another order, which moves FID in its 7th digit (105.225663 vs 105.225672)
    fa, fb = _flat(got.summary), _flat(want.summary)
    assert fa.keys() == fb.keys()
    for k in fa:
        if isinstance(fa[k], float) and isinstance(fb[k], float):
            assert fa[k] == pytest.approx(fb[k], rel=1e-5, abs=1e-6), k  # stds of a few cosines amplify 1e-7
        else:
            assert fa[k] == fb[k], k
    assert got.run_dir.name == want.run_dir.name and not (got.run_dir / "partial").exists()


def test_evaluate_on_ray_gives_the_table_and_summary_of_one_process(ray_engine, reference, local_run, tmp_path):
    res = _eval(reference, tmp_path, RayEvalEngine(ray_engine))
    assert res.summary["n"] == local_run.summary["n"] == 20 and res.summary["fid"] is not None
    _same_run(res, local_run)
    manifest = json.loads((res.run_dir / "manifest.json").read_text())
    assert manifest["complete"] and manifest["device"] == "cpu"


def test_an_actor_killed_mid_evaluate_is_replaced_and_nothing_is_lost(ray_engine, reference, local_run, tmp_path):
    crash = Path(os.environ[CRASH_ONCE_ENV])
    seen = []

    def on_progress(done: int, total: int) -> None:  # once a batch is written, the next actor call exits
        seen.append(done)
        if done and not crash.exists() and len(seen) == 2:
            crash.touch()

    restarts = ray_engine.restarts
    res = _eval(reference, tmp_path, RayEvalEngine(ray_engine), on_progress=on_progress)
    assert not crash.exists(), "the hook never ran"
    assert ray_engine.restarts == restarts + 1
    assert seen == sorted(seen) and seen[-1] == res.summary["n"]
    _same_run(res, local_run)


def test_an_actor_that_cannot_start_raises_its_own_error(ray_engine, tmp_path):
    """The scorer's own error (here: no dataset) reaches the caller as itself, not as a dead actor replaced."""
    from functools import partial

    from maskbench.bench.evaluate import SpanScorer
    from maskbench.bench.evaluate_ray import EvalActor
    from maskbench.bench.runs import Span

    recipe = partial(SpanScorer, EvalConfig(method="telea", data=str(tmp_path / "none")), tmp_path,
                     need_orig=False, orig_embed_cache=None)
    restarts = ray_engine.restarts
    with pytest.raises(MaskbenchError, match="none"):
        list(ray_engine.map(EvalActor, (recipe,), [Span(0, 1), Span(1, 2)]))
    assert ray_engine.restarts == restarts
