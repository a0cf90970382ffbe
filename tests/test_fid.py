"""The FID network is pytorch-fid's: same features as pytorch-fid's own InceptionV3 on the same weights."""

import shutil

import numpy as np
import pytest
import torch

from maskbench.measures import fid


@pytest.fixture(scope="module")
def weights():
    try:
        return fid.resolve_fid_weights()
    except fid.ModelNotFoundError as e:
        pytest.skip(f"no FID weights here: {e}")


@pytest.mark.slow
def test_features_match_pytorch_fid(weights, tmp_path, monkeypatch):
    pfi = pytest.importorskip("pytorch_fid.inception")
    # pytorch-fid reads its weights from the torch-hub cache when the file is there (no download)
    hub = tmp_path / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    shutil.copyfile(weights, hub / fid.FID_HUB_FILE)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    assert torch.hub.get_dir() == str(tmp_path / "hub")
    ref = pfi.InceptionV3([3]).eval()
    ours = fid.load_inception(weights)
    x = torch.rand(2, 3, 128, 160, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = ref(x)[0].flatten(1), ours(x)[0].flatten(1)
    assert a.shape == b.shape == (2, fid.FEATURE_DIM)
    assert torch.allclose(a, b, atol=1e-5)
    assert not torch.allclose(a[0], a[1])  # the features depend on the image


@pytest.mark.slow
def test_load_inception_does_not_touch_pytorch_fid_download(weights, monkeypatch):
    pfi = pytest.importorskip("pytorch_fid.inception")

    def refuse(*a, **k):
        raise AssertionError("pytorch-fid's download hook was called")

    monkeypatch.setattr(pfi, "load_state_dict_from_url", refuse)
    feats = fid.InceptionFeatures(weights)
    out = feats(np.zeros((1, 64, 64, 3), np.uint8))
    assert out.shape == (1, fid.FEATURE_DIM) and np.isfinite(out).all()
