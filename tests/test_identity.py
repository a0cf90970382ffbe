"""SFace's default runtime (OpenCV's DNN engine: weights dequantized once at load, chips in batches)
against the file as shipped, run by onnxruntime one chip at a time: the same embeddings, chip by chip."""

from __future__ import annotations

import numpy as np
import pytest

from maskbench.faces.identity import SFaceIdentity, cosine_similarity, opencv_runs_sface


def _both(chunk: int) -> tuple[SFaceIdentity, SFaceIdentity]:
    fast = SFaceIdentity()
    assert fast.runtime == "opencv"  # pyproject asks for OpenCV >= 5
    fast.CHUNK = chunk  # batch boundaries inside the batch: a reused output buffer or lost order shows
    return fast, SFaceIdentity(runtime="onnxruntime")


@pytest.mark.slow
def test_sface_opencv_runtime_matches_the_int8_graph_on_real_faces(real_faces):
    """Per chip, cosine >= 0.999 to the int8 graph run by onnxruntime (measured > 0.99999) on the real
    originals and their masked versions; and the same check rejects a plausible fault (RGB fed as BGR)."""
    from maskbench.data.dataset import MaskedFaces

    ds = MaskedFaces(real_faces)
    n = len(ds)
    assert n >= 16
    ims = np.stack([ds[i].original for i in range(n)] + [ds[i].masked for i in range(n)])
    lms = np.array([ds.records[i]["landmarks"] for i in range(n)] * 2, np.float64)
    fast, ref = _both(chunk=7)
    chips = fast.chips(ims, lms)
    got, want = fast.embed_chips(chips), ref.embed_chips(chips)
    assert got.shape == want.shape == (2 * n, 128) and got.dtype == np.float64
    cos = cosine_similarity(got, want)
    assert cos.min() >= 0.999, f"chip {cos.argmin()}: cosine {cos.min():.6f} to the int8 graph"
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * np.abs(want).max())  # measured ~3e-6
    # the comparison has teeth: the same chips with their channels swapped fail it
    swapped = cosine_similarity(fast.embed_chips(chips[..., ::-1]), want)
    assert np.median(swapped) < 0.99 and (swapped < 0.999).mean() > 0.9


def test_sface_opencv_runtime_matches_the_int8_graph_on_any_chip():
    """No data needed: noise chips, a batch that is not a multiple of the chunk, an empty batch."""
    fast, ref = _both(chunk=4)
    chips = np.random.default_rng(0).integers(0, 256, (9, 112, 112, 3), dtype=np.uint8)
    got, want = fast.embed_chips(chips), ref.embed_chips(chips)
    assert cosine_similarity(got, want).min() >= 0.999
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * np.abs(want).max())
    np.testing.assert_allclose(fast.embed_chips(chips[5:6])[0], got[5], rtol=0, atol=1e-5 * np.abs(want).max())
    assert fast.embed_chips(chips[:0]).shape == (0, 128)


def test_sface_runtime_choice(monkeypatch):
    import cv2

    assert opencv_runs_sface() and SFaceIdentity().runtime == "opencv"
    with pytest.raises(ValueError, match="runtime must be one of"):
        SFaceIdentity(runtime="tensorrt")
    monkeypatch.setattr(cv2, "__version__", "4.12.0")  # batches of SFace come out NaN there
    assert not opencv_runs_sface()
    assert SFaceIdentity().runtime == "onnxruntime"
    with pytest.raises(ValueError, match="OpenCV >= 5"):
        SFaceIdentity(runtime="opencv")
