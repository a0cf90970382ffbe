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
from maskbench.core.resources import ModelNotFoundError
from maskbench.data.testing import write_fake_dataset
from maskbench.methods import predictors as P
from maskbench.methods.learned import trainer_class
from maskbench.train.checkpoint import CheckpointError, export_weights, load_weights
from maskbench.train.config import ConfigError
from maskbench.train.data import PairedFaces, batch_indices, to_batch
from maskbench.train.loop import Optimizers

REPO = Path(__file__).resolve().parent.parent
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
    return _trainable(method).load_config(name, overrides)


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
    before = [p.detach().clone() for p in g.parameters()]
    opt = torch.optim.Adam(g.parameters(), 2e-4)
    loss = g(torch.randn(2, 4, 32, 32, generator=torch.Generator().manual_seed(0))).abs().mean()
    loss.backward()
    opt.step()
    assert torch.isfinite(loss) and loss > 0
    after = list(g.parameters())
    assert all(torch.isfinite(p).all() for p in after)
    moved = sum(not torch.equal(a, b) for a, b in zip(before, after))
    assert moved > len(before) // 2, f"the step changed {moved} of {len(before)} parameter tensors"


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
    with pytest.raises(ModelNotFoundError, match="missing.safetensors not found"):
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
    from maskbench.train.config import merge
    from maskbench.train.loop import _without_steps

    def _with_new_defaults(stored, defaults):  # what a resume compares (train.loop.train)
        return merge(defaults, stored, strict=False)

    defaults = {"steps": 10, "seed": 0, "new_option": 0.0, "loss": {"l1": 1.0, "new_term": 0.0}}
    stored = {"steps": 10, "seed": 0, "loss": {"l1": 1.0}}  # written before the two keys existed
    assert _without_steps(_with_new_defaults(stored, defaults)) == _without_steps({**defaults, "steps": 20})
    changed = {**defaults, "loss": {"l1": 1.0, "new_term": 0.5}}
    assert _without_steps(_with_new_defaults(stored, defaults)) != _without_steps(changed)
    assert _with_new_defaults({**stored, "new_option": 0.3}, defaults)["new_option"] == 0.3
    assert _with_new_defaults({**stored, "gone": 1}, defaults)["gone"] == 1  # a stored key today's defaults lack
    with pytest.raises(ConfigError, match="unknown config key 'gone'"):
        merge(defaults, {"gone": 1})
    with pytest.raises(ConfigError, match="'loss' must be a mapping"):
        merge(defaults, {"loss": 3})


#: the committed weights of the given-mask methods (their cards name their method)
COMMITTED = {"unet-l1": REPO / "baselines" / "unet_l1" / "weights.safetensors",
             "region-attentive": REPO / "baselines" / "region_attentive" / "weights.safetensors"}


@pytest.mark.parametrize("method, other", [("unet-l1", "region-attentive"), ("region-attentive", "unet-l1"),
                                           ("3dprior", "unet-l1"), ("landmark-gan", "region-attentive")])
def test_weights_of_another_method_are_refused_before_a_network_is_built(method, other):
    """The card's method is checked first: one CheckpointError line, not a KeyError from building the network."""
    with pytest.raises(CheckpointError, match=f"'{other}'.*not.*'{method}'"):
        P.create_predictor(method, weights=str(COMMITTED[other]))


def test_weights_without_a_card_or_with_a_broken_one_are_refused(train_data, tmp_path):
    import json

    from safetensors.torch import save_file

    bare = tmp_path / "bare.safetensors"
    save_file({"generator/x": torch.zeros(1)}, str(bare))
    with pytest.raises(CheckpointError, match="no maskbench card"):
        P.create_predictor("unet-l1", weights=str(bare))
    for config, expect in (({"size": 32, "model": {"width": -3}}, "'model.width'"),
                           ({"size": 32, "model": {"depth": 3}}, "'model.depth'"),
                           ("small", "config")):
        broken = tmp_path / "broken.safetensors"
        card = {"method": "unet-l1", "config": config}
        save_file({"generator/x": torch.zeros(1)}, str(broken), metadata={"maskbench": json.dumps(card)})
        with pytest.raises(CheckpointError, match=expect):
            P.create_predictor("unet-l1", weights=str(broken))
    # on the command line: one line, exit status 2
    r = CliRunner().invoke(main, ["evaluate", "--method", "unet-l1", "--weights", str(COMMITTED["region-attentive"]),
                                  "--data", str(train_data), "--out", str(tmp_path / "res"), "--no-fid",
                                  "--no-identity", "--device", "cpu"])
    out = r.output.strip()
    assert r.exit_code == 2 and len(out.splitlines()) == 1 and "'region-attentive'" in out, (r.exit_code, out)


@pytest.mark.parametrize("setting, key", [
    ("steps=-5", "steps"), ("steps=0", "steps"), ("batch_size=0", "batch_size"),
    ("checkpoint_every=0", "checkpoint_every"), ("optim.lr=abc", "optim.lr"), ("size=abc", "size"),
    ("size=3", "size"), ("model.width=-3", "model.width"), ("amp=maybe", "amp"),
])
def test_set_values_are_checked_like_the_options_are(setting, key, train_data, tmp_path):
    """``--set`` goes through the same checks as ``--steps`` or ``--size``: one line naming the key, exit 2,
    nothing trained or exported."""
    r = CliRunner().invoke(main, ["train", "--method", "unet-l1", "--config", "tiny", "--data", str(train_data),
                                  "--out", str(tmp_path / "run"), "--no-progress", "--device", "cpu", "--set", setting])
    out = r.output.strip()
    assert r.exit_code == 2 and len(out.splitlines()) == 1 and f"'{key}'" in out, (r.exit_code, out)
    assert not (tmp_path / "run" / "weights.safetensors").exists()


@pytest.mark.parametrize("method", ("unet-l1", "region-attentive", "3dprior", "landmark-gan"))
def test_every_config_of_every_learned_method_loads_and_passes_the_checks(method):
    """``defaults.yaml`` holds every key (the shared ones included) and every named config passes the checks."""
    from maskbench.train.config import COMMON_KEYS, config_names

    T = _trainable(method)
    defaults = T.default_config()
    assert set(COMMON_KEYS) <= set(defaults)
    assert T.check_config(defaults) == defaults
    names = [n for n in config_names(T.config_dir()) if n != "defaults"]
    assert names
    for name in names:
        T.load_config(name)
    with pytest.raises(ConfigError, match="'optim.betas' must be a list of 2"):
        T.load_config(names[0], {"optim.betas": [0.5]})


def test_the_conversion_round_trips_and_pastes_only_inside_the_hole():
    from maskbench.train.tensors import (
        holes_to_tensor,
        images_to_tensor,
        network_inputs,
        paste_into_holes,
        tensor_to_images,
    )

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 40, 40, 3), dtype=np.uint8)
    x = images_to_tensor(images)
    assert x.shape == (2, 3, 40, 40) and x.min() >= -1 and x.max() <= 1
    np.testing.assert_array_equal(tensor_to_images(x), images)
    holes = np.zeros((2, 40, 40), bool)
    holes[:, 20:, 10:30] = True
    assert holes_to_tensor(holes).shape == (2, 1, 40, 40)
    xs, ms = network_inputs(images, holes, 16)
    assert xs.shape == (2, 3, 16, 16) and ms.shape == (2, 1, 16, 16) and set(ms.unique().tolist()) == {0.0, 1.0}
    out = paste_into_holes(images, np.full((2, 16, 16, 3), 7, np.uint8), holes)
    np.testing.assert_array_equal(out[~holes], images[~holes])
    assert (out[holes] == 7).all()
