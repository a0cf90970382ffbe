"""``landmark-gan``: its three networks, the three training stages on tiny configs, resume, gender routing,
the blind predictor built from their weights, and the ``landmark_nme`` metric it is scored with (offline,
seconds each)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from maskbench.cli import main
from maskbench.data.testing import write_fake_dataset
from maskbench.measures.metrics import landmark_nme
from maskbench.methods import predictors as P

STAGES = ("segmenter", "landmarks", "generator")


def test_landmark_nme_is_the_mean_error_over_the_outer_eye_corner_distance():
    t = np.zeros((68, 2))
    t[36], t[45] = (10.0, 20.0), (50.0, 20.0)  # inter-ocular distance 40
    assert landmark_nme(t, t) == 0.0
    assert landmark_nme(t + [3.0, 4.0], t) == pytest.approx(5.0 / 40.0)  # every point 5 px off
    both = landmark_nme(np.stack([t, t + [0.0, 8.0]]), np.stack([t, t]))
    np.testing.assert_allclose(both, [0.0, 0.2])
    with pytest.raises(ValueError, match="68, 2"):
        landmark_nme(t[:5], t[:5])


def test_landmark_map_has_one_pixel_per_point_clamped_to_the_image():
    from maskbench.baselines.landmark_gan.model import landmark_map

    pts = torch.tensor([[[0.2, 0.4], [5.6, 7.4], [40.0, -3.0]] + [[5.6, 7.4]] * 65])
    m = landmark_map(pts, 16)
    assert m.shape == (1, 1, 16, 16) and set(m.unique().tolist()) == {0.0, 1.0}
    assert m[0, 0, 0, 0] == 1 and m[0, 0, 7, 6] == 1 and m[0, 0, 0, 15] == 1 and m.sum() == 3


@pytest.mark.slow
def test_network_shapes_and_gradients():
    from maskbench.baselines.landmark_gan.model import (
        Discriminator,
        LandmarkGenerator,
        LandmarkRegressor,
        landmark_map,
        mask_rcnn,
    )

    torch.manual_seed(0)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    hole = torch.zeros(2, 1, 32, 32)
    hole[:, :, 16:, 8:24] = 1
    lmap = landmark_map(torch.full((2, 68, 2), 10.0), 32)
    g = LandmarkGenerator(8, 2)
    y = g(x, lmap, hole)
    assert y.shape == x.shape and y.abs().max() <= 1
    d = Discriminator(8)(torch.cat([y, lmap], 1))
    d.mean().backward()
    assert all(p.grad is not None for n, p in g.named_parameters() if not n.startswith("attention.alpha"))
    r = LandmarkRegressor(0.25)
    assert r(x).shape == (2, 68, 2)
    pts, logit = LandmarkRegressor(0.25, gender=True)(x)
    assert pts.shape == (2, 68, 2) and logit.shape == (2,)
    seg = mask_rcnn(64, 16, 14)
    target = [{"boxes": torch.tensor([[8.0, 30.0, 56.0, 60.0]]), "labels": torch.tensor([1]),
               "masks": torch.zeros(1, 64, 64, dtype=torch.uint8)}] * 2
    losses = seg([torch.rand(3, 64, 64)] * 2, target)
    assert {"loss_mask", "loss_classifier", "loss_objectness"} <= set(losses)
    sum(losses.values()).backward()
    seg.eval()
    with torch.no_grad():
        out = seg([torch.rand(3, 64, 64)])
    assert out[0]["masks"].shape[1:] == (1, 64, 64)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A fake 64 px dataset (8 train, 4 test faces) and an isolated cache."""
    root = tmp_path_factory.mktemp("lgdata")
    write_fake_dataset(root, 8, size=64, seed=3, split="train")
    write_fake_dataset(root, 4, size=64, seed=4, split="test")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MASKBENCH_CACHE", str(tmp_path_factory.mktemp("lgcache")))
        yield root


def _trainer(stage, **over):
    from maskbench.methods.learned import trainer_class

    T = trainer_class(P.get_predictor_class("landmark-gan"))
    return T, T.load_config(f"tiny-{stage}", over)


def _method(stage, data, **over):
    from maskbench.train.losses import load_loss_network

    T, cfg = _trainer(stage, **over)
    m = T(cfg, "cpu", load_loss_network("dlib-resnet") if stage == "generator" else None)
    m.prepare(data, data.get(np.arange(2)))
    for net in m.nets.values():
        net.train()
    return m


@pytest.mark.parametrize("stage,key", [("segmenter", "total"), ("landmarks", "landmark_l2"),
                                       ("generator", "l1_over_hole")])
@pytest.mark.slow
def test_a_few_steps_lower_the_loss_on_a_fixed_batch(env, stage, key):
    from maskbench.train.data import PairedFaces, to_batch
    from maskbench.train.loop import Optimizers

    torch.manual_seed(0)
    _, cfg = _trainer(stage)
    data = PairedFaces(env, "train", cfg["size"])
    m = _method(stage, data)
    opt = Optimizers(m.param_groups(), 1e-3, (0.5, 0.999), m.lr_scales)
    idx = np.arange(4)
    b = to_batch(*data.get(idx), idx)
    losses = [m.training_step(b, opt)[key] for _ in range(12)]
    assert np.isfinite(losses).all()
    assert np.mean(losses[-3:]) < np.mean(losses[:3]), losses


def test_the_discriminator_learns_at_a_tenth_of_the_generators_rate(env):
    from maskbench.train.data import PairedFaces
    from maskbench.train.loop import Optimizers

    data = PairedFaces(env, "train", 32)
    m = _method("generator", data)
    opt = Optimizers(m.param_groups(), 1e-4, (0.0, 0.9), m.lr_scales)
    assert opt.opts["generator"].param_groups[0]["lr"] == pytest.approx(1e-4)
    assert opt.opts["disc"].param_groups[0]["lr"] == pytest.approx(1e-5)


@pytest.mark.slow
def test_resume_continues_the_same_loss_curve(env, tmp_path):
    from maskbench.train.data import PairedFaces
    from maskbench.train.loop import train

    T, cfg = _trainer("generator", steps=6)
    data = PairedFaces(env, "train", cfg["size"])
    full = train(T, cfg, data, tmp_path / "full", method="landmark-gan", progress=False)
    train(T, cfg, data, tmp_path / "cut", method="landmark-gan", progress=False, max_steps=4)
    assert not (tmp_path / "cut" / "weights.safetensors").exists()
    train(T, cfg, data, tmp_path / "cut", method="landmark-gan", progress=False, resume=True)
    a = (tmp_path / "full" / "log.csv").read_text().splitlines()
    b = (tmp_path / "cut" / "log.csv").read_text().splitlines()
    cols = a[0].split(",")
    keep = [i for i, c in enumerate(cols) if c not in ("images_per_s", "elapsed_s")]
    assert [[r.split(",")[i] for i in keep] for r in a] == [[r.split(",")[i] for i in keep] for r in b]
    assert full.weights is not None


def _cli_train(env, out, stage, *extra):
    r = CliRunner().invoke(main, ["train", "--method", "landmark-gan", "--config", f"tiny-{stage}", "--data", str(env),
                                  "--out", str(out), "--device", "cpu", "--no-progress", *extra])
    assert r.exit_code == 0, r.output
    return out / "weights.safetensors"


@pytest.fixture(scope="module")
def tiny_weights(env, tmp_path_factory) -> Path:
    """The three stages trained 4 steps through `maskbench train`, joined into one file."""
    from maskbench.baselines.landmark_gan.predictor import LandmarkGan

    runs = tmp_path_factory.mktemp("lgruns")
    files = {s: _cli_train(env, runs / s, s) for s in STAGES}
    return LandmarkGan.combine(files, runs / "all.safetensors")


def _faces(env, n=3):
    from maskbench.data.dataset import MaskedFaces

    return np.stack([s.masked for s in MaskedFaces(env, "test")][:n])


@pytest.mark.slow
def test_predictor_contract_and_the_dlib_landmark_swap(tiny_weights, env):
    ims = _faces(env)
    # a 4-step Mask R-CNN is not confident: score threshold 0 keeps its best instance
    pred = P.create_predictor("landmark-gan", weights=str(tiny_weights), score_threshold=0.0)
    a = P.run_predictor(pred, ims, None)
    a2 = P.run_predictor(pred, ims, None)
    assert a.images.shape == ims.shape and a.images.dtype == np.uint8 and a.masks.shape == ims.shape[:3]
    assert a.masks.any() and a.landmarks.shape == (3, 68, 2) and a.landmarks.dtype == np.float32
    np.testing.assert_array_equal(pred.segment(ims), a.masks)  # the segmenter pass alone (wild's judges)
    np.testing.assert_array_equal(a.images[~a.masks], ims[~a.masks])  # outside its mask: the input
    np.testing.assert_array_equal(a.images, a2.images)  # deterministic
    assert (a.images[a.masks] != ims[a.masks]).any()
    swap = P.create_predictor("landmark-gan", weights=str(tiny_weights), score_threshold=0.0, landmarks="dlib")
    b = P.run_predictor(swap, ims, None)
    np.testing.assert_array_equal(a.masks, b.masks)
    assert not np.allclose(a.landmarks, b.landmarks)
    assert (b.landmarks >= -5).all() and (b.landmarks <= 70).all()  # dlib's points lie on the 64 px faces
    # no confident instance: the face is left as it is
    strict = P.create_predictor("landmark-gan", weights=str(tiny_weights), score_threshold=1.0)
    c = P.run_predictor(strict, ims, None)
    assert not c.masks.any()
    np.testing.assert_array_equal(c.images, ims)
    with pytest.raises(ValueError, match="landmarks must be one of"):
        P.create_predictor("landmark-gan", weights=str(tiny_weights), landmarks="oracle")


@pytest.mark.slow
def test_evaluate_scores_the_predicted_landmarks(tiny_weights, env, tmp_path):
    import pandas as pd

    r = CliRunner().invoke(main, ["evaluate", "--method", "landmark-gan", "--data", str(env), "--out", str(tmp_path),
                                  "--method-arg", f"weights={tiny_weights}", "--method-arg", "score_threshold=0",
                                  "--no-fid", "--no-identity", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    (table,) = list(tmp_path.glob("landmark-gan/*/per_image.parquet"))
    df = pd.read_parquet(table)
    assert {"mask_iou", "landmark_nme"} <= set(df.columns)
    assert df["landmark_nme"].notna().all() and (df["landmark_nme"] >= 0).all()


@pytest.mark.slow
def test_gender_routing_with_a_celeba_attribute_file(env, tmp_path):
    from maskbench.baselines.landmark_gan.predictor import LandmarkGan
    from maskbench.baselines.landmark_gan.training import read_gender

    from maskbench.data.dataset import MaskedFaces

    ids = [r["id"] for r in MaskedFaces(env, "train").records]
    attrs = tmp_path / "list_attr_celeba.txt"
    lines = [str(len(ids)), "Bald Male Smiling"]
    lines += [f"{i}.jpg -1 {1 if k % 2 else -1} 1" for k, i in enumerate(ids)]
    attrs.write_text("\n".join(lines) + "\n")
    genders = read_gender(attrs)
    assert sum(genders.values()) == len(ids) // 2

    runs = tmp_path / "runs"
    seg = _cli_train(env, runs / "seg", "segmenter")
    lm = _cli_train(env, runs / "lm", "landmarks", "--attributes", str(attrs))
    gens = {g: _cli_train(env, runs / g, "generator", "--set", f"gender={g}", "--attributes", str(attrs))
            for g in ("male", "female")}
    both = LandmarkGan.combine({"segmenter": seg, "landmarks": lm, "generator": gens}, runs / "all.safetensors")
    pred = P.create_predictor("landmark-gan", weights=str(both), score_threshold=0.0)
    assert pred.generators == ["generator_female", "generator_male"]
    ims = _faces(env, 2)
    # the routed output is the male generator's where the gender logit is positive, else the female one's
    with torch.no_grad():
        pred.nets["landmarks"].net.classifier[-1].bias[-1] = 50.0
    out_m = pred.predict(ims)
    with torch.no_grad():
        pred.nets["landmarks"].net.classifier[-1].bias[-1] = -50.0
    out_f = pred.predict(ims)
    assert (out_m.images != out_f.images).any()
    np.testing.assert_array_equal(out_m.masks, out_f.masks)

    r = CliRunner().invoke(main, ["train", "--method", "landmark-gan", "--config", "tiny-generator", "--data", str(env),
                                  "--out", str(tmp_path / "x"), "--set", "gender=male", "--no-progress"])
    assert r.exit_code != 0 and "needs attributes" in r.output
    r = CliRunner().invoke(main, ["train", "--method", "unet-l1", "--config", "tiny", "--data", str(env),
                                  "--out", str(tmp_path / "y"), "--attributes", str(attrs), "--no-progress"])
    assert r.exit_code != 0 and "unknown config key 'attributes'" in r.output


def test_missing_weights_say_how_to_train(tmp_path):
    from maskbench.core.resources import ModelNotFoundError

    with pytest.raises(ModelNotFoundError, match="maskbench train --method landmark-gan"):
        P.create_predictor("landmark-gan", weights=str(tmp_path / "none.safetensors"))


@pytest.mark.slow
def test_combine_refuses_a_stage_in_the_wrong_place_and_takes_stages_over_from_a_combined_file(tiny_weights,
                                                                                                 tmp_path):
    """A new segmenter with the committed file's other two stages: ``combine NEW_SEG COMBINED COMBINED OUT``."""
    from maskbench.baselines.landmark_gan.predictor import LandmarkGan
    from safetensors.torch import load_file

    from maskbench.train.checkpoint import CheckpointError, read_card

    runs = tiny_weights.parent
    with pytest.raises(CheckpointError, match="segmenter"):
        LandmarkGan.combine({**{s: tiny_weights for s in STAGES}, "segmenter": runs / "landmarks" / "weights.safetensors"},
                            tmp_path / "x.safetensors")
    out = LandmarkGan.combine({"segmenter": runs / "segmenter" / "weights.safetensors", "landmarks": tiny_weights,
                               "generator": tiny_weights}, tmp_path / "y.safetensors")
    a, b = load_file(str(out)), load_file(str(tiny_weights))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert read_card(out, "landmark-gan")["stages"] == read_card(tiny_weights, "landmark-gan")["stages"]


def test_landmark_targets_are_the_same_from_stored_pairs_and_on_the_fly_masks(env):
    from maskbench.baselines.landmark_gan.training import record_landmarks

    from maskbench.data.dataset import DatasetFormatError
    from maskbench.train.data import OnTheFlyFaces, PairedFaces

    stored = record_landmarks(PairedFaces(env, "train", 32), 32)
    fly = record_landmarks(OnTheFlyFaces.from_dataset(env, "train", 32), 32)
    assert stored.shape == (8, 68, 2)
    np.testing.assert_allclose(stored, fly, atol=1e-4)
    assert 0 < stored.min() and stored.max() < 32  # at the training size, not the stored one (64 px)

    class NoLandmarks:
        records = [{"id": "0"}]

    with pytest.raises(DatasetFormatError, match="68 landmarks"):
        record_landmarks(NoLandmarks(), 32)


@pytest.mark.slow
def test_the_exported_segmenter_has_its_batch_norm_statistics_recomputed(tiny_weights):
    from safetensors.torch import load_file

    run = tiny_weights.parent / "segmenter"
    last = {k.removeprefix("net/"): v for k, v in load_file(str(run / "last.safetensors")).items() if k.startswith("net/")}
    final = load_file(str(run / "weights.safetensors"))
    stats = [k for k in final if k.endswith("running_mean")]
    assert stats
    # the weights are the training state's (fp16), the statistics are not
    w = [k for k in final if k.endswith("conv.weight") or k.endswith(".0.weight")][0]
    torch.testing.assert_close(final[w].float(), last[w].float(), atol=1e-3, rtol=1e-3)
    assert any(not torch.allclose(final[k].float(), last[k].float(), atol=1e-3) for k in stats)
    assert all(final[k.replace("running_mean", "num_batches_tracked")].item() > 0 for k in stats)


@pytest.mark.slow
def test_stage_files_load_separately_and_a_file_in_the_wrong_place_is_refused(tiny_weights):
    from maskbench.train.checkpoint import CheckpointError

    seg, lm, gen = (str(tiny_weights.parent / s / "weights.safetensors") for s in STAGES)
    p = P.create_predictor("landmark-gan", segmenter_weights=seg, landmarks_weights=lm, generator_weights=gen)
    assert sorted(p.nets) == ["generator", "landmarks", "segmenter"] and p.weights_path is None
    with pytest.raises(CheckpointError, match="generator stage, not its landmarks"):
        P.create_predictor("landmark-gan", segmenter_weights=seg, landmarks_weights=gen, generator_weights=gen)
