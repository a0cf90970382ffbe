"""The in-the-wild track: FID/KID against a reference with bootstrap intervals, YuNet alignment, bad photos
listed and never fatal, --mask-from, mask left behind, the leaderboard's wild table."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from maskbench.bench.wild import LEFT_THRESHOLD, WildConfig, WildError, evaluate_wild, prepare_faces
from maskbench.cli import main
from maskbench.core.io import read_png, write_png
from maskbench.data.testing import Thumbnails
from maskbench.measures.fid import frechet_distance
from maskbench.measures.set_distances import ReferenceDistances, kernel_inception_distance, polynomial_kernel
from maskbench.methods import predictors as P


def _magenta(images: np.ndarray) -> np.ndarray:
    return (images[..., 0] > 200) & (images[..., 1] < 60) & (images[..., 2] > 200)


class MagentaRemover(P.Predictor):
    """Blind test double: its segmenter marks magenta pixels, its restoration paints them the mean colour of
    the rest (so the segmenter finds nothing on its outputs). Counts the images it sees."""

    track = "blind"
    calls = 0

    def predict(self, images, masks=None):
        type(self).calls += len(images)
        m = _magenta(images)
        out = images.copy()
        for i in range(len(images)):
            if m[i].any():
                out[i][m[i]] = images[i][~m[i]].mean(0).astype(np.uint8)
        return P.PredictorOutput(out, masks=m)


@pytest.fixture(scope="module")
def magenta_method():
    P.register("test-magenta", MagentaRemover)
    yield "test-magenta"
    P.unregister("test-magenta")


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("MASKBENCH_CACHE", str(d))
    return d


@pytest.fixture(scope="module")
def face_folders(real_faces, tmp_path_factory):
    """From the synthesized test split (real CelebA faces): ``originals/``, ``masked/`` and ``magenta/``
    (the originals with a flat magenta block over mouth and chin) as folders of photos."""
    root = tmp_path_factory.mktemp("wild")
    meta = [json.loads(line) for line in (real_faces / "test" / "metadata.jsonl").read_text().splitlines()]
    for name in ("originals", "masked", "magenta"):
        (root / name).mkdir()
    for rec in meta:
        original = read_png(real_faces / "test" / rec["original_file_name"])
        write_png(root / "originals" / f"{rec['id']}.png", original)
        write_png(root / "masked" / f"{rec['id']}.png", read_png(real_faces / "test" / rec["masked_file_name"]))
        blocked = original.copy()
        blocked[160:222, 76:180] = (255, 0, 255)
        write_png(root / "magenta" / f"{rec['id']}.png", blocked)
    return root


def _config(data: Path, reference: Path, out: Path, method: str, **kw) -> WildConfig:
    return WildConfig(method=method, data=f"wild:{data}", reference=str(reference), out=str(out), device="cpu",
                      batch_size=8, bootstraps=kw.pop("bootstraps", 20), **kw)


# ------------------------------------------------------------------------------------ FID / KID


def test_fid_matches_the_closed_form_and_resamples_match_explicit_duplicates():
    rng = np.random.default_rng(0)
    ref, x = rng.normal(size=(300, 32)), rng.normal(size=(200, 32)) * 1.3 + 0.2
    dist = ReferenceDistances(ref)
    expected = frechet_distance(x.mean(0), np.cov(x, rowvar=False), ref.mean(0), np.cov(ref, rowvar=False))
    assert dist.fid(x)[0] == pytest.approx(expected, rel=1e-6)
    idx = rng.integers(0, 200, 200)
    xb = x[idx]
    expected_b = frechet_distance(xb.mean(0), np.cov(xb, rowvar=False), ref.mean(0), np.cov(ref, rowvar=False))
    assert dist.fid(x, np.bincount(idx, minlength=200)[None])[0] == pytest.approx(expected_b, rel=1e-6)


def test_kid_is_clean_fids_unbiased_mmd_over_subsets():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(60, 16)), rng.normal(size=(50, 16)) + 0.5
    d = 16
    kxy = (x @ y.T / d + 1) ** 3
    assert np.allclose(polynomial_kernel(x, y), kxy)
    # all of both sets in one "subset" when m = n_x = n_y: the plain unbiased estimator
    xs = x[:50]
    kxx, kyy, kxy = ((xs @ xs.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (xs @ y.T / d + 1) ** 3)
    m = 50
    direct = ((kxx.sum() - np.trace(kxx)) + (kyy.sum() - np.trace(kyy))) / (m * (m - 1)) - 2 * kxy.sum() / m**2
    mean, std = kernel_inception_distance(xs, y, subsets=5)
    assert mean == pytest.approx(direct, rel=1e-9) and std == pytest.approx(0, abs=1e-12)
    assert ReferenceDistances(y).kid(xs)[0] == pytest.approx(direct, rel=1e-9)


def test_intervals_hold_the_estimate_and_kid_is_near_zero_for_one_distribution():
    rng = np.random.default_rng(2)
    ref = rng.normal(size=(200, 16))
    dist = ReferenceDistances(ref)
    same = dist.scores(rng.normal(size=(150, 16)), bootstraps=100)
    shifted = dist.scores(rng.normal(size=(150, 16)) + 0.4, bootstraps=100)
    for s in (same, shifted):
        for score in s.values():
            assert score.ci95[0] <= score.value <= score.ci95[1]
    assert same["kid"].ci95[0] < 0 < same["kid"].ci95[1]
    assert shifted["kid"].ci95[0] > same["kid"].ci95[1]
    assert shifted["fid"].value > same["fid"].value


# ------------------------------------------------------------------------------------ detection, alignment


def test_yunet_alignment_agrees_with_the_68_point_rule(celeba_dir):
    from maskbench.core.io import read_image
    from maskbench.faces.landmarks import FaceDetector, NoFaceError, ffhq_quad
    from maskbench.faces.yunet import YuNet, yunet_quad

    yunet, dlib = YuNet(), FaceDetector()
    errors = []
    for f in sorted((celeba_dir / "img_align_celeba").iterdir())[:24]:
        im = read_image(f)
        face = yunet(im)
        try:
            ref = ffhq_quad(dlib(im).landmarks)
        except NoFaceError:
            continue
        assert face is not None and face.points[0, 0] < face.points[1, 0]  # image-left eye first
        errors.append(np.abs(yunet_quad(face.points) - ref).max() / np.hypot(*(ref[3] - ref[0])))
    assert len(errors) >= 15 and np.median(errors) < 0.08, errors


def test_unreadable_photos_and_photos_without_a_face_are_listed_and_the_run_finishes(
        face_folders, cache, tmp_path, magenta_method):
    photos = tmp_path / "photos"
    photos.mkdir()
    for p in sorted((face_folders / "magenta").iterdir())[:4]:
        (photos / p.name).write_bytes(p.read_bytes())
    write_png(photos / "blank.png", np.full((200, 200, 3), 128, np.uint8))
    (photos / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    (photos / "empty-folder").mkdir()
    res = evaluate_wild(_config(photos, face_folders / "originals", tmp_path / "out", magenta_method), net=Thumbnails())
    errors = {f["id"]: f["error"] for f in res.failures}
    assert "no face found" in errors["blank.png"]
    assert "not a decodable image" in errors["corrupt.jpg"]
    assert "empty folder" in errors["empty-folder"]
    s = res.summary
    assert s["n_photos"] == 7 and s["n_faces"] == 4 and s["n_no_face"] == 3
    table = __import__("pandas").read_parquet(res.run_dir / "per_image.parquet")
    assert list(table["id"]) == sorted(table["id"]) and len(table) == 7
    assert (res.run_dir / "contact_sheet.jpg").is_file()
    manifest = json.loads((res.run_dir / "manifest.json").read_text())
    assert manifest["complete"] and manifest["kind"] == "wild" and manifest["mask_source"]["name"] == magenta_method


def test_mask_left_behind_and_mask_from_with_cached_detections_and_masks(face_folders, cache, tmp_path, magenta_method):
    data, ref, out = face_folders / "magenta", face_folders / "originals", tmp_path / "out"
    net = Thumbnails()
    MagentaRemover.calls = 0
    blind = evaluate_wild(_config(data, ref, out, magenta_method), net=net)
    n = blind.summary["n_faces"]
    assert n >= 10
    assert blind.summary["metrics"]["mask_left_behind"]["value"] == 0.0  # it removed every magenta pixel
    assert blind.summary["floor"]["mask_left_behind"]["value"] == 1.0  # and found one on every input
    lo, hi = blind.summary["metrics"]["mask_left_behind"]["ci95"]
    assert lo == 0.0 and 0 < hi < 0.35  # Wilson interval of 0 / n
    assert MagentaRemover.calls == 2 * n + blind.summary["n_reference"]  # restore, segment outputs and reference
    assert blind.summary["reference_mask_rate"]["value"] == 0.0  # no false alarm on the unmasked faces
    # a given-mask method through --mask-from: masked-input leaves every mask behind
    MagentaRemover.calls = 0
    given = evaluate_wild(_config(data, ref, out, "masked-input", mask_from=magenta_method), net=net)
    assert given.summary["metrics"]["mask_left_behind"]["value"] == 1.0
    assert given.summary["metrics"]["kid"]["value"] == pytest.approx(given.summary["floor"]["kid"]["value"])
    assert given.summary["metrics"]["kid"]["value"] > blind.summary["metrics"]["kid"]["value"]
    assert MagentaRemover.calls == 2 * n  # masks of the inputs (then cached), segmenting the outputs; the
    # reference's masks came from the cache the blind run filled (same segmenter, options, weights, seed)
    seen = net.images_seen
    MagentaRemover.calls = 0
    telea = evaluate_wild(_config(data, ref, out, "telea", mask_from=magenta_method), net=net)
    assert MagentaRemover.calls == n  # the mask source's masks came from the cache
    assert net.images_seen - seen == n  # only the outputs are featurized: inputs and reference are cached
    assert telea.summary["metrics"]["mask_left_behind"]["value"] < 0.5
    again = evaluate_wild(_config(data, ref, out, "telea", mask_from=magenta_method), net=net)
    assert again.reused and again.run_dir == telea.run_dir


class _Interrupt(BaseException):
    pass


def test_a_run_resumed_with_another_batch_size_scores_each_face_once(face_folders, cache, tmp_path, magenta_method):
    """Killed at batch size 4 after two batches, resumed at 5: the finished faces are not restored again,
    every other face is scored once, and the results equal an uninterrupted run's."""
    data, ref = face_folders / "magenta", face_folders / "originals"

    def stop_after_two(done, total):
        if done == 8:
            raise _Interrupt()

    with pytest.raises(_Interrupt):
        evaluate_wild(replace(_config(data, ref, tmp_path / "resumed", magenta_method, limit=13), batch_size=4),
                      net=Thumbnails(), on_progress=stop_after_two)
    MagentaRemover.calls = 0
    cfg = replace(_config(data, ref, tmp_path / "resumed", magenta_method, limit=13), batch_size=5)
    res = evaluate_wild(cfg, net=Thumbnails())
    assert MagentaRemover.calls == 2 * (13 - 8)  # restore and segment the five faces left
    whole = evaluate_wild(replace(cfg, out=str(tmp_path / "whole")), net=Thumbnails())
    table = pd.read_parquet(res.run_dir / "per_image.parquet")
    assert len(table) == 13 and table["id"].is_unique
    pd.testing.assert_frame_equal(table, pd.read_parquet(whole.run_dir / "per_image.parquet"))
    assert res.summary == whole.summary
    assert (res.run_dir / "contact_sheet.jpg").read_bytes() == (whole.run_dir / "contact_sheet.jpg").read_bytes()


def test_track_errors(tmp_path, magenta_method):
    with pytest.raises(WildError, match="--mask-from"):
        evaluate_wild(_config(tmp_path, tmp_path, tmp_path, "telea"))
    with pytest.raises(WildError, match="not a blind method"):
        evaluate_wild(_config(tmp_path, tmp_path, tmp_path, "telea", mask_from="navier-stokes"))
    with pytest.raises(WildError, match="blind and finds its own masks"):
        evaluate_wild(_config(tmp_path, tmp_path, tmp_path, magenta_method, mask_from=magenta_method))
    with pytest.raises(WildError, match="no such folder"):
        prepare_faces(f"wild:{tmp_path / 'nope'}")


def test_a_method_that_cannot_load_fails_before_any_photo_is_read(tmp_path):
    """The methods load before detection and features (minutes on a real folder): a missing model fails first."""
    from maskbench.core.resources import ModelNotFoundError

    class Unloadable(P.Predictor):
        name = "test-unloadable"
        track = "blind"

        def __init__(self, device="cpu"):
            raise ModelNotFoundError("test-unloadable: weights not found")

        def predict(self, images, masks, **kwargs):
            raise AssertionError("never called")

    class Detector:
        calls = 0

        def __call__(self, image):
            Detector.calls += 1
            raise AssertionError("no photo should be read")

    P.register("test-unloadable", Unloadable)
    try:
        with pytest.raises(ModelNotFoundError):
            evaluate_wild(_config(tmp_path, tmp_path, tmp_path / "out", "test-unloadable"), detector=Detector())
        assert Detector.calls == 0 and not (tmp_path / "out").exists()
    finally:
        P.unregister("test-unloadable")


@pytest.mark.parametrize("extra, message", [
    ([], "--mask-from"),
    (["--mask-from", "navier-stokes"], "not a blind method"),
])
def test_cli_given_mask_method_without_a_mask_source_exits_with_one_line(tmp_path, extra, message):
    r = CliRunner().invoke(main, ["wild", "--method", "telea", "--data", str(tmp_path), "--reference",
                                  str(tmp_path), *extra])
    assert r.exit_code == 2 and message in r.output
    assert len(r.output.strip().splitlines()) == 1 and "Traceback" not in r.output


def test_cli_wild_has_its_own_command_and_evaluate_points_to_it(tmp_path):
    r = CliRunner().invoke(main, ["wild", "--method", "telea", "--data", str(tmp_path), "--mask-from", "3dprior"])
    assert r.exit_code == 2 and "--reference" in r.output
    r = CliRunner().invoke(main, ["evaluate", "--method", "telea", "--data", f"wild:{tmp_path}"])
    assert r.exit_code == 2 and f"maskbench wild --data {tmp_path} --reference" in r.output
    assert len(r.output.strip().splitlines()) == 1
    r = CliRunner().invoke(main, ["evaluate", "--method", "telea", "--data", str(tmp_path), "--mask-from", "3dprior"])
    assert r.exit_code == 2 and "--mask-from" in r.output  # no such option: it belongs to maskbench wild


# ------------------------------------------------------------------------------------ real features


@pytest.mark.slow
def test_kid_of_originals_against_themselves_is_near_zero_and_of_masked_inputs_clearly_above(
        face_folders, cache, tmp_path, magenta_method):
    """The issue's acceptance test, with the FID network: synthesized faces used as wild photos."""
    ref, out = face_folders / "originals", tmp_path / "out"
    same = evaluate_wild(_config(ref, ref, out, magenta_method, bootstraps=50)).summary
    masked = evaluate_wild(_config(face_folders / "masked", ref, out, "masked-input", mask_from=magenta_method,
                                   bootstraps=50)).summary
    k_same, k_masked = same["floor"]["kid"], masked["floor"]["kid"]
    # a set against itself: slightly negative, since each face also meets itself in the cross term
    # (-0.02 at these 23 faces, shrinking as 1/n); the drawn-on masks give about 0.2
    assert k_masked["value"] > 0.1 and abs(k_same["value"]) < 0.15 * k_masked["value"]
    assert k_masked["ci95"][0] > max(0.0, k_same["ci95"][1])
    assert masked["metrics"]["kid"]["value"] == pytest.approx(k_masked["value"], rel=1e-6)  # masked-input = floor
    assert masked["floor"]["fid"]["value"] > same["floor"]["fid"]["value"]


# ------------------------------------------------------------------------------------ leaderboard


def test_leaderboard_gets_a_wild_table_and_the_synthetic_tables_do_not_change(
        face_folders, synthetic_faces, cache, tmp_path, magenta_method):
    from maskbench.bench.evaluate import EvalConfig, evaluate
    from maskbench.bench.leaderboard import WILD_FLOOR_NAME, WILD_REFERENCE_NAME, build_leaderboard

    synth_root, wild_root = tmp_path / "synthetic", tmp_path / "wild"
    evaluate(EvalConfig(method="telea", data=str(synthetic_faces), out=str(synth_root), fid=False, identity=False))
    data, ref = face_folders / "magenta", face_folders / "originals"
    for method, mask_from in ((magenta_method, None), ("telea", magenta_method)):
        evaluate_wild(_config(data, ref, wild_root, method, mask_from=mask_from), net=Thumbnails())
    build_leaderboard([synth_root], tmp_path / "lb0")
    build_leaderboard([synth_root, wild_root], tmp_path / "lb1")

    def without_date(p: Path) -> str:
        return "\n".join(line for line in p.read_text().splitlines() if "Generated" not in line)

    md0, md1 = without_date(tmp_path / "lb0" / "leaderboard.md"), without_date(tmp_path / "lb1" / "leaderboard.md")
    assert md1.startswith(md0) and "## In the wild" in md1[len(md0):]
    assert not (tmp_path / "lb0" / "wild.csv").exists()
    wild = __import__("pandas").read_csv(tmp_path / "lb1" / "wild.csv")
    assert set(wild["method"]) == {magenta_method, "telea", WILD_FLOOR_NAME, WILD_REFERENCE_NAME}
    assert "telea" in set(__import__("pandas").read_csv(tmp_path / "lb1" / "leaderboard.csv")["method"])
    page = (tmp_path / "lb1" / "index.html").read_text()
    assert "In the wild" in page and "mask left behind" in page and "KID ×10³" in page
    assert page.count("contact_sheet.jpg") >= 4  # link + image for each of the two runs
    assert f"telea ← masks of {magenta_method}" in page and f"(segmenter {magenta_method})" in page
    sheet = next(Path(tmp_path / "lb1").joinpath(p.split("'")[0]) for p in page.split("img src='")[1:])
    assert sheet.is_file()


def test_left_threshold_is_documented():
    import maskbench.bench.wild as W

    assert 0 < LEFT_THRESHOLD < 0.5 and "LEFT_THRESHOLD" in W.__doc__


# ------------------------------------------------------------------------------------ large photos


def _pasted_face(celeba_dir: Path, canvas_hw: tuple[int, int], at: tuple[int, int]):
    """The first CelebA crop, 4x enlarged (712 x 872 px), pasted on a flat grey canvas at ``at`` (x, y);
    returns ``(canvas, 68-point FFHQ quad of the face in canvas pixels, (x, y, w, h) of the pasted face)``."""
    from maskbench.core.io import read_image
    from maskbench.faces.landmarks import FaceDetector, ffhq_quad

    im = read_image(min((celeba_dir / "img_align_celeba").glob("*.jpg")))
    quad = ffhq_quad(FaceDetector()(im).landmarks) * 4 + at
    face = cv2.resize(im, None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC)
    canvas = np.full((*canvas_hw, 3), 90, np.uint8)
    x, y = at
    canvas[y:y + face.shape[0], x:x + face.shape[1]] = face
    return canvas, quad, (x, y, face.shape[1], face.shape[0])


def _at_the_face(found, quad68: np.ndarray, rect) -> float:
    """Check the detection lies on the pasted face; returns the FFHQ quad's error over the quad's side."""
    from maskbench.faces.yunet import yunet_quad

    x, y, w, h = rect
    cx, cy = found.box[0] + found.box[2] / 2, found.box[1] + found.box[3] / 2
    assert x < cx < x + w and y < cy < y + h and 0.3 * w < found.box[2] < 1.2 * w, (found.box, rect)
    assert found.points[0, 0] < found.points[1, 0] and found.points[:2, 1].max() < found.points[3:, 1].min()
    return float(np.abs(yunet_quad(found.points) - quad68).max() / np.hypot(*(quad68[3] - quad68[0])))


def test_yunet_detects_a_large_photo_on_a_shrunk_copy_at_the_right_place(celeba_dir):
    from maskbench.faces.yunet import YuNet

    class SizeSpy:  # records the input sizes the network is run at
        def __init__(self, net):
            self.net, self.sizes = net, []

        def setInputSize(self, size):  # OpenCV's name
            self.sizes.append(tuple(size))
            self.net.setInputSize(size)

        def detect(self, image):
            return self.net.detect(image)

    canvas, quad68, rect = _pasted_face(celeba_dir, (2400, 3000), (1900, 1100))
    det = YuNet()
    det._net = SizeSpy(det._net)
    found = det(canvas)
    (w, h), = det._net.sizes
    assert w <= 2048 and h == round(2400 * w / 3000)  # YuNet ran on a shrunk copy (DETECT_MAX_SIDE)
    assert found is not None and _at_the_face(found, quad68, rect) < 0.1  # the 68-point rule's own median gap: 0.05
    small = canvas[:1000, :1000]  # photos within the limit are detected as they are
    det(small)
    assert det._net.sizes[-1] == (1000, 1000)


_BIG_PHOTO_SCRIPT = r"""
import json, re, sys
import cv2
import numpy as np
from maskbench.bench.wild import prepare_faces
from maskbench.faces.yunet import YuNet

def status_mb(key):  # this process's own counters (ru_maxrss would carry the parent's peak over the fork)
    return int(re.search(key + r":\s+(\d+) kB", open("/proc/self/status").read()).group(1)) / 1024

detector = YuNet()
base = status_mb("VmRSS")
faces = prepare_faces(sys.argv[1], detector=detector, cache=False)
detected = status_mb("VmHWM")
crop = faces.crops([0], 256)[0]
np.save(sys.argv[2], crop)
print(json.dumps({"base": base, "detected": detected, "cropped": status_mb("VmHWM"), "quad": faces.quads[0].tolist(),
                  "error": faces.errors[0]}))
"""

#: Peak memory (VmHWM) of detecting and cropping one 8000 x 8000 PNG in the wild track, over the memory in
#: use (VmRSS) after import and model load. Decoding the PNG alone takes about 1.1 GB (PIL's 4-byte pixels,
#: its copies, the RGB array) and the crop decodes it again; YuNet on the 2048 px copy adds ~350 MB at most
#: (measured here: 1.1 GB detecting, 1.4 GB with the crop), while at full resolution detection took 5.5 GB.
BIG_PHOTO_PEAK_MB = 1800


@pytest.mark.slow
def test_wild_detection_of_an_8000px_photo_stays_in_bounded_memory(celeba_dir, tmp_path):
    import subprocess
    import sys

    from maskbench.faces.landmarks import warp_quad

    photos = tmp_path / "photos"
    photos.mkdir()
    canvas, quad68, rect = _pasted_face(celeba_dir, (8000, 8000), (1300, 5100))
    cv2.imwrite(str(photos / "big.png"), canvas[..., ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 1])
    face_only = canvas[rect[1] - 300:rect[1] + rect[3] + 300, rect[0] - 300:rect[0] + rect[2] + 300].copy()
    del canvas
    r = subprocess.run([sys.executable, "-c", _BIG_PHOTO_SCRIPT, str(photos), str(tmp_path / "crop.npy")],
                       capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    m = json.loads(r.stdout.strip().splitlines()[-1])
    assert m["error"] is None
    peak = max(m["detected"], m["cropped"]) - m["base"]
    print(f"peak {m['detected'] - m['base']:.0f} MB detecting, {peak:.0f} MB with the crop, over {m['base']:.0f} MB")
    assert peak < BIG_PHOTO_PEAK_MB, f"peak {peak:.0f} MB over the baseline"
    quad = np.array(m["quad"])
    side = np.hypot(*(quad68[3] - quad68[0]))
    assert np.abs(quad - quad68).max() / side < 0.1  # at the right place (the 68-point rule's own median gap: 0.05)
    # the aligned crop is cut from the full-resolution photo: the same as cutting the face alone
    offset = np.array([rect[0] - 300, rect[1] - 300])
    ref = warp_quad(face_only, quad - offset, 256)[0].astype(np.float64)
    assert np.abs(np.load(tmp_path / "crop.npy").astype(np.float64) - ref).mean() < 2.0


# ------------------------------------------------------------------------------------ ceiling


def test_kid_gap_closed_is_0_for_the_inputs_and_1_for_real_faces():
    from maskbench.measures.set_distances import gap_closed

    rng = np.random.default_rng(0)
    d = 16
    reference, ceiling, real = (rng.standard_normal((n, d)) for n in (300, 150, 150))
    floor = rng.standard_normal((150, d)) + 0.8
    dist = ReferenceDistances(reference, subset_size=100, subsets=20)
    none = gap_closed(dist, floor, floor, ceiling, bootstraps=50)
    assert none["value"] == pytest.approx(0.0, abs=1e-12) and none["ci95"][0] <= 0.0 <= none["ci95"][1]
    full = gap_closed(dist, real, floor, ceiling, bootstraps=50)
    assert 0.85 < full["value"] < 1.15 and full["ci95"][0] < 1.0 < full["ci95"][1]
    with pytest.raises(ValueError, match="inputs"):
        gap_closed(dist, real[:10], floor, ceiling)


def test_a_ceiling_held_out_of_the_reference_gives_the_gap_closed(face_folders, cache, tmp_path, magenta_method):
    from maskbench.bench.leaderboard import WILD_CEILING_NAME, WILD_FLOOR_NAME, wild_rows
    from maskbench.bench.wild import ceiling_part, format_wild_summary

    data, ref = face_folders / "magenta", face_folders / "originals"
    res = evaluate_wild(_config(data, ref, tmp_path / "out", magenta_method, ceiling_share=0.5), net=Thumbnails())
    s = res.summary
    held = sum(ceiling_part(p.name, 0.5) for p in ref.iterdir())
    assert s["n_ceiling"] == held and s["n_reference"] == len(list(ref.iterdir())) - held > 2
    closed = s["metrics"]["kid_gap_closed"]
    # the magenta remover restores the faces it was given: most of the gap to the real faces is closed
    assert closed["value"] > 0.5 and closed["ci95"][0] <= closed["value"] <= closed["ci95"][1]
    assert s["ceiling"]["kid"]["value"] < s["floor"]["kid"]["value"]
    assert any("gap closed" in line for line in format_wild_summary(s))
    rows = wild_rows([tmp_path / "out"]).set_index("method")
    assert rows.loc[magenta_method, "kid_gap_closed"] == pytest.approx(closed["value"])
    assert rows.loc[WILD_CEILING_NAME, "kid_gap_closed"] == 1.0 and rows.loc[WILD_FLOOR_NAME, "kid_gap_closed"] == 0.0
    assert rows.loc[WILD_CEILING_NAME, "kid"] == pytest.approx(s["ceiling"]["kid"]["value"])
    assert rows.loc[magenta_method, "reference"].endswith(f"minus a {held}-face ceiling")  # its own section


class MarksEverything(P.Predictor):
    """Blind test double whose segmenter marks every pixel (a judge that flags every face)."""

    track = "blind"

    def predict(self, images, masks=None):
        return P.PredictorOutput(images.copy(), masks=np.ones(images.shape[:3], bool))


def test_judges_grade_the_outputs_beside_the_segmenter_and_two_runs_compare_paired(face_folders, cache, tmp_path,
                                                                                     magenta_method):
    from maskbench.bench.wild import compare_wild, format_wild_summary, parse_judge

    assert parse_judge("3dprior:variant=procedural,threshold=0.4") == (
        "3dprior", (("threshold", 0.4), ("variant", "procedural")))
    with pytest.raises(WildError, match="KEY=VALUE"):
        parse_judge("3dprior:variant")
    P.register("test-everything", MarksEverything)
    try:
        data, ref, out = face_folders / "magenta", face_folders / "originals", tmp_path / "out"
        judges = ((magenta_method, ()), ("test-everything", ()))
        plain = evaluate_wild(_config(data, ref, out, magenta_method, limit=12), net=Thumbnails())
        blind = evaluate_wild(_config(data, ref, out, magenta_method, limit=12, judges=judges), net=Thumbnails())
        assert blind.run_dir != plain.run_dir  # the judges are part of the options hash
        s = blind.summary
        assert [j["label"] for j in s["judges"]] == [magenta_method, "test-everything"]
        by = s["metrics"]["mask_left_behind_judged"]
        assert by[magenta_method]["value"] == 0.0 and by["test-everything"]["value"] == 1.0
        assert s["floor"]["mask_left_behind_judged"][magenta_method]["value"] == 1.0
        assert s["reference_mask_rate_judged"]["test-everything"]["value"] == 1.0
        assert s["reference_mask_rate_judged"][magenta_method]["value"] == 0.0
        assert any(line.startswith("judged by test-everything") for line in format_wild_summary(s))
        table = pd.read_parquet(blind.run_dir / "per_image.parquet")
        assert table["left_behind_j0"].eq(False).all() and table["left_behind_j1"].eq(True).all()
        # the unrestored input leaves every mask behind: the paired comparison says so, judge by judge
        given = evaluate_wild(_config(data, ref, out, "masked-input", mask_from=magenta_method, limit=12,
                                      judges=judges), net=Thumbnails())
        cmp = compare_wild(blind.run_dir, given.run_dir).set_index("metric")
        row = cmp.loc[f"mask_left_behind[{magenta_method}]"]
        assert row["n"] == 12 and row["diff"] == -1.0 and row["better"] == "a"
        assert cmp.loc["mask_left_behind[test-everything]", "better"] == ""  # both flagged everywhere
        with pytest.raises(WildError, match="share no judge"):
            compare_wild(blind.run_dir, plain.run_dir)
        r = CliRunner().invoke(main, ["compare", str(blind.run_dir), str(given.run_dir)])
        assert r.exit_code == 0, r.output
        printed = r.output
        assert f"mask_left_behind[{magenta_method}]" in printed and "A - B, paired over the 12 photos" in printed
    finally:
        P.unregister("test-everything")


def test_half_keeps_the_photos_of_one_half_of_a_split_file(face_folders, cache, tmp_path, magenta_method):
    data, ref = face_folders / "magenta", face_folders / "originals"
    names = sorted(p.name for p in data.iterdir())
    split = tmp_path / "split.csv"
    split.write_text("# a test split\nfile,sha256,half\n"
                     + "".join(f"{n},-,{'measurement' if i % 3 == 0 else 'harvest'}\n" for i, n in enumerate(names)))
    res = evaluate_wild(_config(data, ref, tmp_path / "out", magenta_method, half="measurement",
                                split_file=str(split)), net=Thumbnails())
    ids = pd.read_parquet(res.run_dir / "per_image.parquet")["id"].tolist()
    assert ids == names[::3] and res.summary["n_photos"] == len(names[::3])
    with pytest.raises(WildError, match="no file in half"):
        evaluate_wild(_config(data, ref, tmp_path / "out", magenta_method, half="other", split_file=str(split)),
                      net=Thumbnails())
    r = CliRunner().invoke(main, ["wild", "--method", magenta_method, "--data", str(data), "--reference", str(ref),
                                  "--half", "measurement", "--split-file", str(tmp_path / "none.csv")])
    assert r.exit_code == 2 and "cannot read the split file" in r.output and "Traceback" not in r.output
