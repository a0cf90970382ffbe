"""The predictor contract for learned and sampling methods: per-batch generators, method options,
extra record inputs, entry-point built-ins."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from maskbench.bench.evaluate import EvalConfig, evaluate, run_dir_for
from maskbench.cli import main
from maskbench.core.io import read_png
from maskbench.data.dataset import MaskedFaces
from maskbench.methods import predictors as P


class _Noise(P.Predictor):
    """Fills the hole with noise from the generator it is given (a stand-in for a sampling method)."""

    name = "test-noise"
    thread_safe = True

    def predict(self, images, masks, generator=None):
        import torch

        noise = torch.randint(0, 256, images.shape, generator=generator, dtype=torch.uint8).numpy()
        return P.PredictorOutput(np.where(masks[..., None], noise, images))


@pytest.fixture
def noise_method():
    P.register("test-noise", _Noise)
    yield
    P.unregister("test-noise")


def _outputs(run_dir, ids):
    return np.stack([read_png(run_dir / "outputs" / f"{i}.png") for i in ids])


def test_sampling_method_is_reproducible_across_worker_counts_and_varies_with_seed(
        noise_method, synthetic_faces, tmp_path, isolated_cache):
    ids = [r["id"] for r in MaskedFaces(synthetic_faces).records]
    runs = {}
    for workers, seed in ((1, 0), (2, 0), (2, 1)):
        cfg = EvalConfig(method="test-noise", data=str(synthetic_faces), out=str(tmp_path / f"w{workers}s{seed}"),
                         batch_size=2, workers=workers, seed=seed, fid=False, identity=False, save_outputs=True)
        runs[workers, seed] = _outputs(evaluate(cfg).run_dir, ids)
    np.testing.assert_array_equal(runs[1, 0], runs[2, 0])
    masks = np.stack([MaskedFaces(synthetic_faces)[i].mask for i in range(len(ids))])
    assert (runs[2, 0][masks] != runs[2, 1][masks]).mean() > 0.9  # fresh noise almost everywhere in the hole
    np.testing.assert_array_equal(runs[2, 0][~masks], runs[2, 1][~masks])


def test_batch_generator_depends_on_seed_and_ids_only():
    a = P.batch_generator(3, ["a", "b"]).initial_seed()
    assert a == P.batch_generator(3, ["a", "b"]).initial_seed()
    assert a != P.batch_generator(4, ["a", "b"]).initial_seed()
    assert a != P.batch_generator(3, ["a", "c"]).initial_seed()


def test_method_args_reach_the_method_and_change_the_results_key(synthetic_faces, tmp_path, isolated_cache):
    ds = MaskedFaces(synthetic_faces)
    base = EvalConfig(method="telea", data=str(synthetic_faces), out=str(tmp_path), fid=False, identity=False)
    other = EvalConfig(method="telea", data=str(synthetic_faces), out=str(tmp_path), fid=False, identity=False,
                       method_args=(("radius", 9),))
    assert run_dir_for(base, ds) != run_dir_for(other, ds)
    assert base.args_hash() != base.args_hash(weights="abc")  # a new weights file is a new results key
    r = CliRunner().invoke(main, ["evaluate", "--method", "telea", "--data", str(synthetic_faces), "--out",
                                  str(tmp_path), "--no-fid", "--no-identity", "--method-arg", "radius=9"])
    assert r.exit_code == 0, r.output
    import json

    manifest = json.loads((run_dir_for(other, ds) / "manifest.json").read_text())
    assert manifest["method"]["options"] == {"radius": 9}
    r = CliRunner().invoke(main, ["evaluate", "--method", "telea", "--data", str(synthetic_faces), "--out",
                                  str(tmp_path), "--no-fid", "--no-identity", "--method-arg", "colour=red"])
    assert r.exit_code == 2 and "colour" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(main, ["evaluate", "--method", "telea", "--data", str(synthetic_faces), "--method-arg", "radius"])
    assert r.exit_code == 2 and "key=value" in r.output


def test_parse_method_args_types():
    assert P.parse_method_args(["a=5", "b=0.5", "c=true", "d=x.safetensors"]) == \
        {"a": 5, "b": 0.5, "c": True, "d": "x.safetensors"}


class _WantsLandmarks(P.Predictor):
    name = "test-landmarks"
    input_size = 32
    extra_inputs = ("landmarks",)
    seen: list = []

    def predict(self, images, masks, landmarks):
        type(self).seen.append(landmarks)
        return P.PredictorOutput(images.copy())


def test_extra_inputs_arrive_scaled_with_the_image(synthetic_faces, tmp_path, isolated_cache):
    P.register("test-landmarks", _WantsLandmarks)
    try:
        _WantsLandmarks.seen = []
        evaluate(EvalConfig(method="test-landmarks", data=str(synthetic_faces), out=str(tmp_path), batch_size=6,
                            fid=False, identity=False))
    finally:
        P.unregister("test-landmarks")
    ds = MaskedFaces(synthetic_faces)
    want = np.array([r["landmarks"] for r in ds.records], np.float32) * (32 / ds[0].masked.shape[1])
    np.testing.assert_allclose(_WantsLandmarks.seen[0], want, rtol=1e-5)
    images = np.zeros((1, 64, 64, 3), np.uint8)
    with pytest.raises(P.PredictorInputError, match="landmarks"):
        P.run_predictor(_WantsLandmarks(), images, np.zeros((1, 64, 64), bool))


@pytest.mark.slow
def test_builtins_come_from_maskbench_entry_points():
    import importlib.metadata as md

    eps = {ep.name: ep.value for ep in md.entry_points(group=P.ENTRY_POINT_GROUP) if ep.dist.name == "maskbench"}
    assert {"telea", "masked-input", "region-attentive", "unet-l1"} <= set(eps)
    assert all(v.startswith("maskbench.baselines.") for v in eps.values())
    for name in eps:
        assert P.method_info(name).source == "built-in"
    assert P.method_info("region-attentive").trainable and not P.method_info("telea").trainable


def test_evaluate_without_data_scores_the_default_folder_or_the_demo_set(tmp_path, monkeypatch, isolated_cache,
                                                                       synthetic_faces):
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(main, ["evaluate", "--method", "masked-input", "--no-fid", "--no-identity"])
    assert r.exit_code == 0, r.output
    assert "scoring the built-in demo set" in r.output and "5/5 [" in r.output and "image/s]" in r.output  # tqdm
    import shutil

    shutil.copytree(synthetic_faces, tmp_path / "masked-faces")  # maskbench synth's default --out
    r = CliRunner().invoke(main, ["evaluate", "--method", "masked-input", "--no-fid", "--no-identity"])
    assert r.exit_code == 0, r.output
    assert "scoring masked-faces/ (test split" in r.output
