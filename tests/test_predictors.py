"""The Predictor contract, the registry, entry-point discovery and ``maskbench methods``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from maskbench.cli import main
from maskbench.methods import predictors as P

PLUGIN_DIR = Path(__file__).parent / "plugin"
REPO = Path(__file__).resolve().parent.parent
BUILTINS = ("masked-input", "telea", "navier-stokes", "biharmonic")


def _batch(n=2, size=40, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    masks = np.zeros((n, size, size), bool)
    masks[:, size // 2 :, size // 4 : 3 * size // 4] = True
    return images, masks


@pytest.fixture
def plugin_on_path(monkeypatch):
    """Put the example distribution (package + dist-info) on sys.path and rescan entry points."""
    monkeypatch.syspath_prepend(str(PLUGIN_DIR))
    P.reload_entry_points()
    yield
    monkeypatch.undo()
    sys.modules.pop("maskbench_example_plugin", None)
    P.reload_entry_points()


#: registered methods whose contract check takes several seconds (weights, 3D fits): full suite only
SLOW_CONTRACT = {"landmark-gan", "3dprior", "region-attentive"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_CONTRACT else n
                                  for n in P.list_methods()])
def test_every_registered_method_meets_the_contract(name):
    """Same checks for every registered method (pyiqa-style): batch in, batch out, hole filled,
    pixels outside the hole untouched on the given-mask track."""
    cls = P.get_predictor_class(name)
    if cls.needs_gpu and P.resolve_device("auto") == "cpu":
        pytest.skip(f"{name} needs a GPU")
    if cls.weights_status().startswith("missing"):
        pytest.skip(f"{name}: no committed weights yet ({cls.weights_status()})")
    pred = P.create_predictor(name)
    assert pred.track in P.TRACKS
    images, masks = _batch()
    out = P.run_predictor(pred, images, masks)
    assert out.images.shape == images.shape and out.images.dtype == np.uint8
    info = P.method_info(name)
    assert info.description
    if pred.track == "blind":
        assert out.masks is not None and out.masks.shape == masks.shape
        return
    assert out.masks is None
    if name in BUILTINS:  # the classical methods write only the hole
        np.testing.assert_array_equal(out.images[~masks], images[~masks])
        assert info.source == "built-in" and info.weights == "none needed"
    if name != "masked-input":
        assert (out.images[masks] != images[masks]).any()


def test_builtins_are_listed_and_lazy():
    """Listing methods imports none of them; asking for one imports only its module."""
    code = ("import sys, maskbench.methods.predictors as P; names = P.list_methods(); "
            "print('maskbench.baselines.classical' in sys.modules, 'telea' in names); "
            "P.get_predictor_class('telea'); print('maskbench.baselines.classical' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False", "True", "True"]
    assert set(BUILTINS) <= set(P.list_methods())
    P.register("test-lazy-missing", "no_such_module_xyz:Nope")  # a lazy target is not imported here ...
    try:
        assert "no_such_module_xyz" not in sys.modules
        with pytest.raises(P.RegistryError):  # ... but on use, with a clear error
            P.get_predictor_class("test-lazy-missing")
    finally:
        P.unregister("test-lazy-missing")


def test_unknown_name_suggests_close_matches():
    with pytest.raises(P.UnknownMethodError, match="did you mean telea"):
        P.get_predictor_class("teela")


class _Good(P.Predictor):
    def predict(self, images, masks):
        return P.PredictorOutput(images.copy())


def test_register_refuses_duplicates_and_non_predictors():
    P.register("test-good", _Good)
    try:
        with pytest.raises(P.RegistryError, match="already registered"):
            P.register("test-good", _Good)
        with pytest.raises(P.RegistryError, match="already registered"):
            P.register("telea", _Good)
        assert P.create_predictor("test-good").name == "test-good"
    finally:
        P.unregister("test-good")
    with pytest.raises(P.RegistryError, match="not a subclass"):
        P.register("test-dict", dict)
    with pytest.raises(P.RegistryError, match="module:Class"):
        P.register("test-lazy", "no_colon_here")
    with pytest.raises(P.RegistryError, match="non-empty word"):
        P.register("two words", _Good)


def test_lazy_target_errors_surface_on_use():
    P.register("test-missing", "maskbench_no_such_module:Thing")
    P.register("test-notpred", "collections:OrderedDict")
    try:
        with pytest.raises(P.RegistryError, match="cannot load"):
            P.get_predictor_class("test-missing")
        with pytest.raises(P.RegistryError, match="not a subclass"):
            P.get_predictor_class("test-notpred")
        assert "cannot load" in P.method_info("test-missing").error
    finally:
        P.unregister("test-missing")
        P.unregister("test-notpred")


class _BadShape(P.Predictor):
    name = "bad-shape"

    def predict(self, images, masks):
        return P.PredictorOutput(images[:, :-1])


class _BadDtype(P.Predictor):
    name = "bad-dtype"

    def predict(self, images, masks):
        return P.PredictorOutput(images.astype(np.float32))


class _BadType(P.Predictor):
    name = "bad-type"

    def predict(self, images, masks):
        return images


class _Blind(P.Predictor):
    name = "blind-no-mask"
    track = "blind"

    def predict(self, images, masks):
        return P.PredictorOutput(images.copy())  # forgets the predicted masks


def test_wrong_outputs_name_the_method():
    images, masks = _batch()
    with pytest.raises(P.PredictorOutputError, match=r"'bad-shape'.*\(2, 40, 40, 3\) uint8.*\(2, 39, 40, 3\)"):
        P.run_predictor(_BadShape(), images, masks)
    with pytest.raises(P.PredictorOutputError, match=r"'bad-dtype'.*uint8.*float32"):
        P.run_predictor(_BadDtype(), images, masks)
    with pytest.raises(P.PredictorOutputError, match=r"'bad-type'.*PredictorOutput.*ndarray"):
        P.run_predictor(_BadType(), images, masks)
    with pytest.raises(P.PredictorOutputError, match=r"'blind-no-mask'.*masks"):
        P.run_predictor(_Blind(), images, None)


def test_wrong_inputs_are_refused():
    images, masks = _batch()
    with pytest.raises(P.PredictorInputError, match="uint8"):
        P.run_predictor(_Good(), images.astype(np.float32), masks)
    with pytest.raises(P.PredictorInputError, match="masks are required"):
        P.run_predictor(_Good(), images, None)
    with pytest.raises(P.PredictorInputError, match="bool"):
        P.run_predictor(_Good(), images, masks.astype(np.uint8))


def test_input_size_is_honoured_and_outputs_resized_back():
    seen = {}

    class Fixed(P.Predictor):
        name = "fixed-32"
        input_size = 32

        def predict(self, images, masks):
            seen["shape"] = images.shape, masks.shape
            return P.PredictorOutput(np.full_like(images, 7))

    images, masks = _batch(n=3, size=40)
    out = P.run_predictor(Fixed(), images, masks)
    assert seen["shape"] == ((3, 32, 32, 3), (3, 32, 32))
    assert out.images.shape == (3, 40, 40, 3) and (out.images == 7).all()


def test_options_and_devices():
    with pytest.raises(P.MethodOptionError, match=r"'masked-input' has no option 'colour' \(options: none\)"):
        P.create_predictor("masked-input", colour="red")
    with pytest.raises(P.MethodOptionError, match=r"no option 'radios' \(options: radius\)"):
        P.create_predictor("telea", radios=5)
    assert P.create_predictor("telea", radius=5).radius == 5.0
    assert P.resolve_device("cpu") == "cpu"
    import torch

    for available, expected in ((True, "cuda"), (False, "cpu")):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(torch.cuda, "is_available", lambda: available)
            assert P.resolve_device("auto") == expected
    with pytest.raises(ValueError, match="auto, cpu or cuda"):
        P.resolve_device("tpu")


def test_a_bug_in_a_constructor_is_not_a_bad_option():
    """Options are checked against the signature before construction; a TypeError raised inside a
    constructor afterwards is the method's bug and keeps its type (the command line shows its traceback)."""

    class Buggy(P.Predictor):
        name = "buggy-ctor"

        def __init__(self, device="cpu", strength: float = 1.0):
            super().__init__(device)
            len(strength)  # TypeError: a bug, not a bad option

        def predict(self, images, masks, **kwargs):
            return P.PredictorOutput(images)

    P.check_options(Buggy, {"strength": 2.0})
    with pytest.raises(P.MethodOptionError):
        P.check_options(Buggy, {"strenght": 2.0})
    P.register("buggy-ctor", Buggy)
    try:
        with pytest.raises(TypeError, match="has no len"):
            P.create_predictor("buggy-ctor", strength=2.0)
    finally:
        P.unregister("buggy-ctor")


def test_entry_point_plugin_is_discovered_and_runs(plugin_on_path):
    assert "example-meanfill" in P.list_methods()
    info = P.method_info("example-meanfill")
    assert info.source == "entry point maskbench-example-plugin"
    assert info.input_size == 128
    cls = P.get_predictor_class("example-meanfill")
    pred = P.create_predictor("example-meanfill")
    assert pred.name == "example-meanfill" and "name" not in vars(cls)  # the plug-in's class is left as it is
    images, masks = _batch(size=128)  # its input size: no resizing, so the fill is exact
    out = P.run_predictor(pred, images, masks).images
    np.testing.assert_array_equal(out[~masks], images[~masks])
    for im, o, m in zip(images, out, masks):
        mean = im[~m].mean(axis=0).round().astype(np.uint8)
        assert (o[m] == mean).all()
    # the plug-in's second entry point tries to take the built-in name and is ignored, with a warning
    assert P.get_predictor_class("telea").__module__ == "maskbench.baselines.classical"
    assert any("'telea'" in w for w in P.registry_warnings())


@pytest.mark.slow
def test_methods_cli_lists_plugin_in_a_fresh_process():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(PLUGIN_DIR)]))
    r = subprocess.run([sys.executable, "-m", "maskbench", "methods"], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = {ln.split()[0]: ln for ln in r.stdout.splitlines()[1:]}
    assert set(BUILTINS) | {"example-meanfill"} <= set(lines)
    assert "given-mask" in lines["example-meanfill"] and "128" in lines["example-meanfill"]
    assert "none needed" in lines["telea"]
    assert "entry point 'telea'" in r.stderr


def test_methods_cli_in_process():
    r = CliRunner().invoke(main, ["methods"])
    assert r.exit_code == 0
    assert r.output.splitlines()[0].split()[:5] == ["name", "track", "input", "device", "weights"]
    assert "masked-input" in r.output


def test_a_learned_method_has_one_name():
    """A trainable class states the name it is registered under (its trainer and weights use it) and may not
    be registered under another."""
    for name in ("unet-l1", "region-attentive", "3dprior", "landmark-gan"):
        assert P.get_predictor_class(name).name == name
    with pytest.raises(P.RegistryError, match="states the name 'unet-l1'"):
        P.register("unet-copy", P.get_predictor_class("unet-l1"))
    assert "unet-copy" not in P.list_methods()
