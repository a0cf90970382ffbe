"""The training machinery (maskbench.train) and the learned methods, on tiny configs (seconds each)."""

from __future__ import annotations

import csv
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from maskbench.cli import main
from maskbench.data.testing import write_fake_dataset
from maskbench.methods import predictors as P
from maskbench.methods.learned import config_dir, trainer_class
from maskbench.train.checkpoint import CheckpointError, export_weights, load_weights
from maskbench.train.config import ConfigError, load_config
from maskbench.train.data import PairedFaces, batch_indices, to_batch
from maskbench.train.loop import Optimizers, method_defaults

LEARNED = ("region-attentive", "unet-l1")
#: LEARNED for the quick loop: region-attentive (about 8x unet-l1's time) in the full suite only
LEARNED_UNET_QUICK = (pytest.param("region-attentive", marks=pytest.mark.slow), "unet-l1")
LOSS_COLUMNS = {"region-attentive": ("g_total", "l1", "style", "perceptual", "gan_g", "gan_d"), "unet-l1": ("l1",)}


@pytest.fixture(scope="module")
def train_data(tmp_path_factory) -> Path:
    """A tiny Masked-Faces folder: 8 synthetic training faces and 4 test faces at 64 px."""
    root = tmp_path_factory.mktemp("traindata")
    write_fake_dataset(root, 8, size=64, seed=3, split="train")
    write_fake_dataset(root, 4, size=64, seed=4, split="test")
    return root


def _trainable(method):
    return trainer_class(P.get_predictor_class(method))


def _config(method, name="tiny", **overrides):
    cls = P.get_predictor_class(method)
    return load_config(method_defaults(trainer_class(cls)), name, config_dir(cls), overrides)


def _log(run: Path) -> list[dict[str, str]]:
    with (run / "log.csv").open() as f:
        return list(csv.DictReader(f))


def _losses(rows, method):
    return [(r["step"],) + tuple(r[k] for k in LOSS_COLUMNS[method]) for r in rows]


@pytest.mark.parametrize("method", LEARNED_UNET_QUICK)
def test_forward_shapes_and_a_few_steps_lower_the_loss(method):
    torch.manual_seed(0)
    T = _trainable(method)
    cfg = _config(method)
    loss_net = None
    if T.uses_loss_network:
        from maskbench.train.losses import load_loss_network

        loss_net = load_loss_network("dlib-resnet")
    m = T(cfg, "cpu", loss_net)
    s = 32
    yy, xx = np.mgrid[0:s, 0:s]
    orig = np.stack([np.stack([xx * 6, yy * 6, 255 - xx * 4], -1), np.stack([yy * 5, 100 + xx * 3, yy * 4], -1)])
    orig = orig.clip(0, 255).astype(np.uint8)  # smooth, learnable faces-to-be
    hole = np.zeros((2, s, s), bool)
    hole[:, 16:, 8:24] = True
    masked = np.where(hole[..., None], 200, orig).astype(np.uint8)
    b = to_batch(masked, orig, hole, np.arange(2))
    out = T.inpaint(m.nets, b.masked, b.hole)
    assert out.shape == (2, 3, s, s) and out.abs().max() <= 1
    out.mean().backward()  # gradients flow to the generator
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.nets["generator"].parameters())
    opt = Optimizers(m.param_groups(), 1e-3, (0.5, 0.999))
    l1 = [m.training_step(b, opt)["l1"] for _ in range(20)]
    assert np.mean(l1[-3:]) < 0.7 * np.mean(l1[:3])


def test_mcsam_works_at_every_supported_size():
    from maskbench.baselines.region_attentive.model import MCSAMBlock, RegionAttentiveGenerator

    blk = MCSAMBlock(16)
    for side in (2, 8, 16):  # bottlenecks of 32, 128 and 256 px inputs; dilation 8 included
        assert blk(torch.randn(1, 16, side, side)).shape == (1, 16, side, side)
    assert blk.attention.gamma.item() == 0.0  # starts as the identity on the attention path
    g = RegionAttentiveGenerator(4, single_scale=True)
    assert all(b[0].dilation == (1, 1) for blk in g.mid for b in blk.branches)
    assert RegionAttentiveGenerator(4)(torch.randn(1, 4, 128, 128)).shape == (1, 3, 128, 128)


@pytest.mark.slow
def test_paper_config_matches_the_public_code_and_takes_a_step():
    T = _trainable("region-attentive")
    cfg = _config("region-attentive", "paper", size=32, batch_size=2)
    nets = T.build(cfg)
    n = sum(p.numel() for p in nets["generator"].parameters())
    print(f"paper-width generator: {n / 1e6:.2f} M parameters")
    assert abs(n - 44.7e6) / 44.7e6 < 0.05
    g = nets["generator"]
    opt = torch.optim.Adam(g.parameters(), 2e-4)
    loss = g(torch.randn(2, 4, 32, 32)).abs().mean()
    loss.backward()
    opt.step()


def test_weights_round_trip_is_exact_in_float16(tmp_path):
    T = _trainable("unet-l1")
    cfg = _config("unet-l1")
    nets = T.build(cfg)
    export_weights(tmp_path / "w.safetensors", "unet-l1", nets, {"config": cfg})
    fresh = T.build(cfg)
    card = load_weights(tmp_path / "w.safetensors", "unet-l1", fresh)
    assert card["config"] == cfg
    for (k, a), b in zip(nets["generator"].state_dict().items(), fresh["generator"].state_dict().values()):
        want = a.half().float() if a.is_floating_point() else a
        assert torch.equal(want, b), k
    with pytest.raises(CheckpointError, match="not of 'region-attentive'"):
        load_weights(tmp_path / "w.safetensors", "region-attentive", fresh)


def test_batch_order_is_a_function_of_seed_and_step():
    a, e = batch_indices(10, 4, 0, seed=1)
    assert e == 0 and len(a) == 4
    assert list(batch_indices(10, 4, 1, seed=1)[0]) != list(a)
    assert batch_indices(10, 4, 2, seed=1)[1] == 1  # 2 full batches per epoch
    np.testing.assert_array_equal(batch_indices(10, 4, 5, seed=1)[0], batch_indices(10, 4, 5, seed=1)[0])
    r0, r1 = batch_indices(10, 4, 3, 1, rank=0, world=2)[0], batch_indices(10, 4, 3, 1, rank=1, world=2)[0]
    assert set(r0) | set(r1) == set(batch_indices(10, 4, 3, 1)[0]) and not set(r0) & set(r1)
    with pytest.raises(ValueError, match="fewer than one batch"):
        batch_indices(3, 4, 0, 0)


def test_config_inherit_and_unknown_keys(tmp_path):
    cfg = _config("region-attentive", "small-single-scale")
    assert cfg["model"]["single_scale"] is True and cfg["model"]["width"] == _config("region-attentive", "small")["model"]["width"]
    with pytest.raises(ConfigError, match="unknown config key 'model.depth'"):
        _config("region-attentive", "small", **{"model.depth": 3})
    bad = tmp_path / "bad.yaml"
    bad.write_text("inherit: small\nlerning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="lerning_rate"):
        _config("region-attentive", str(bad))
    with pytest.raises(ConfigError, match="not found"):
        _config("region-attentive", "no-such-config")


def _cli_train(method, data, out, *extra):
    return [sys.executable, "-m", "maskbench", "train", "--method", method, "--config", "tiny", "--data", str(data),
            "--out", str(out), "--device", "cpu", "--no-progress", *extra]


@pytest.mark.slow
@pytest.mark.parametrize("method", LEARNED)
def test_sigkill_and_resume_continue_the_same_log(method, train_data, tmp_path):
    """An uninterrupted run and a run killed with SIGKILL after a checkpoint, then resumed, log the same
    losses at every step (CPU is deterministic)."""
    steps = ["--steps", "10", "--set", "checkpoint_every=2"]
    full = tmp_path / "full"
    r = subprocess.run(_cli_train(method, train_data, full, *steps), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    for name in ("config.yaml", "log.csv", "last.safetensors", "weights.safetensors"):
        assert (full / name).is_file(), name
    assert len(list((full / "samples").glob("step_*.png"))) >= 2

    cut = tmp_path / "cut"
    p = subprocess.Popen(_cli_train(method, train_data, cut, *steps), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 600
    while time.time() < deadline:
        if (cut / "log.csv").is_file() and len(_log(cut)) >= 3 and (cut / "last.safetensors").is_file():
            break
        if p.poll() is not None:
            break
        time.sleep(0.05)
    killed = p.poll() is None
    p.send_signal(signal.SIGKILL)
    p.wait()
    if killed:
        assert not (cut / "weights.safetensors").exists()
    r = subprocess.run(_cli_train(method, train_data, cut, *steps, "--resume"), capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    assert _losses(_log(cut), method) == _losses(_log(full), method)


def test_bad_training_input_gives_one_line(train_data, tmp_path):
    def run(*args):
        r = CliRunner().invoke(main, ["train", "--no-progress", "--device", "cpu", *args])
        return r.exit_code, r.output.strip()

    code, out = run("--method", "unet-l1", "--config", "tiny", "--data", str(tmp_path / "nothing"))
    assert code == 2 and "not found" in out and len(out.splitlines()) == 1
    empty = tmp_path / "empty"
    (empty / "train").mkdir(parents=True)
    (empty / "train" / "metadata.jsonl").write_text("")
    code, out = run("--method", "unet-l1", "--config", "tiny", "--data", str(empty))
    assert code == 2 and "no samples" in out
    code, out = run("--method", "unet-l1", "--config", "tiny", "--data", str(train_data), "--set", "model.depth=2")
    assert code == 2 and "model.depth" in out
    code, out = run("--method", "telea", "--data", str(train_data))
    assert code == 2 and "cannot be trained" in out
    # a checkpoint of another method in the run folder
    run_dir = tmp_path / "run"
    code, out = run("--method", "unet-l1", "--config", "tiny", "--data", str(train_data), "--out", str(run_dir),
                    "--steps", "2")
    assert code == 0, out
    code, out = run("--method", "region-attentive", "--config", "tiny", "--data", str(train_data), "--out",
                    str(run_dir), "--resume")
    assert code == 2 and "'unet-l1'" in out and "Traceback" not in out
    code, out = run("--method", "unet-l1", "--config", "tiny", "--data", str(train_data), "--out", str(run_dir))
    assert code == 2 and "--resume" in out


@pytest.mark.parametrize("method", LEARNED_UNET_QUICK)
def test_learned_predictor_contract(method, train_data, tmp_path):
    """Trained tiny weights through the predictor: shape, dtype, outside-hole pixels untouched, deterministic."""
    r = CliRunner().invoke(main, ["train", "--method", method, "--config", "tiny", "--data", str(train_data),
                                  "--out", str(tmp_path / "run"), "--no-progress", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    pred = P.create_predictor(method, weights=str(tmp_path / "run" / "weights.safetensors"))
    assert pred.card["steps"] == 4 and pred.card["loss_network"] in (None, "dlib-resnet", "vgg16")
    ds = PairedFaces(train_data, "test", 64)
    from maskbench.data.dataset import MaskedFaces

    test = MaskedFaces(train_data, "test")
    images = np.stack([s.masked for s in test])
    masks = np.stack([s.mask for s in test])
    out = P.run_predictor(pred, images, masks).images
    assert out.shape == images.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[~masks], images[~masks])
    assert (out[masks] != images[masks]).any()
    np.testing.assert_array_equal(out, P.run_predictor(pred, images, masks).images)
    assert len(ds) == 4
    with pytest.raises(Exception, match="not found"):
        P.create_predictor(method, weights=str(tmp_path / "missing.safetensors"))


def test_on_the_fly_masks_change_every_epoch(train_data):
    from maskbench.train.data import OnTheFlyFaces

    otf = OnTheFlyFaces.from_dataset(train_data, "train", 32, seed=0)
    m0, o0, h0 = otf.get(np.array([0, 1]), epoch=0)
    m1, o1, h1 = otf.get(np.array([0, 1]), epoch=1)
    np.testing.assert_array_equal(o0, o1)
    assert (h0 != h1).any()
    m0b, _, h0b = otf.get(np.array([0, 1]), epoch=0)
    np.testing.assert_array_equal(m0, m0b)
    assert h0.any() and not h0.all()


@pytest.mark.slow
def test_reconstruction_warmup_switches_the_adversarial_terms_on(train_data, tmp_path):
    """region-attentive's ``loss.adversarial_from_step``: L1 + perceptual only before it (no GAN term, the
    discriminators untouched), every term after."""
    r = subprocess.run(_cli_train("region-attentive", train_data, tmp_path / "run"), capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    rows = _log(tmp_path / "run")
    assert [int(x["step"]) for x in rows] == [1, 2, 3, 4]
    before, after = rows[:2], rows[2:]
    assert all(float(x["gan_g"]) == 0 and float(x["gan_d"]) == 0 for x in before)
    assert all(float(x["gan_g"]) > 0 and float(x["gan_d"]) > 0 for x in after)
    assert all(float(x["l1"]) > 0 for x in rows)


def test_resume_accepts_a_key_added_to_the_defaults_later_only_at_its_default():
    from maskbench.train.loop import _with_new_defaults, _without_steps

    defaults = {"steps": 10, "seed": 0, "new_option": 0.0, "loss": {"l1": 1.0, "new_term": 0.0}}
    stored = {"steps": 10, "seed": 0, "loss": {"l1": 1.0}}  # written before the two keys existed
    assert _without_steps(_with_new_defaults(stored, defaults)) == _without_steps({**defaults, "steps": 20})
    changed = {**defaults, "loss": {"l1": 1.0, "new_term": 0.5}}
    assert _without_steps(_with_new_defaults(stored, defaults)) != _without_steps(changed)
    assert _with_new_defaults({**stored, "new_option": 0.3}, defaults)["new_option"] == 0.3
