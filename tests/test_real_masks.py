"""The hand-checked real-photo mask labels (``maskbench.bench.real_masks``) and ``maskbench mask-iou``."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from maskbench.bench.real_masks import (
    LabelSet,
    LabelSetError,
    default_label_dir,
    grabcut_candidate,
    photo_crop,
    read_decisions,
    read_label_set,
    score_segmenter,
    summarize_iou,
    write_label_set,
)
from maskbench.cli import main
from maskbench.core.io import decode_image, read_csv_rows
from maskbench.data.realism import real_split_files
from maskbench.methods import predictors as P


@pytest.fixture(scope="module")
def labels() -> LabelSet:
    return read_label_set()


@pytest.fixture(scope="module")
def photos(shared_data) -> Path:
    path = shared_data / "real-masked-dev"
    if not path.is_dir():
        pytest.skip("real-masked-dev not in the shared data")
    return path


def test_the_shipped_set_is_the_reviews_accepted_photos_of_the_measurement_half(labels):
    decisions = read_decisions()
    accepted = [r["file"] for r in decisions if r["decision"] == "accept"]
    assert len(labels) == len(accepted) >= 60 and list(labels.ids) == accepted
    assert {r["decision"] for r in decisions} == {"accept", "reject", "no face"}
    assert set(labels.ids) <= real_split_files(None, "measurement")  # never a photo templates were keyed from
    split = {r["file"]: r["sha256"] for r in read_csv_rows(
        default_label_dir().parent / "real_masked_dev_split.csv")}
    assert all(split[f] == d for f, d in zip(labels.ids, labels.sha256))
    assert not (labels.masks & ~labels.valid).any()  # nothing labelled outside the photo
    share = labels.masks.sum((1, 2)) / labels.valid.sum((1, 2))
    assert 0.1 < share.min() and share.max() < 0.7  # a mask, not a face or a speck
    assert (default_label_dir() / "README.md").is_file()


def test_candidates_are_deterministic_and_the_labels_are_reproduced_from_the_photos(labels, photos):
    from maskbench.faces.yunet import YuNet, yunet_quad

    det = YuNet()
    for k in (0, len(labels) // 2, len(labels) - 1):
        image = decode_image((photos / labels.ids[k]).read_bytes(), labels.ids[k])
        quad = yunet_quad(det(image).points)
        assert np.allclose(quad, labels.quads[k], atol=1e-6)
        crop, valid = photo_crop(image, quad)
        assert np.array_equal(valid, labels.valid[k])
        grabcut_candidate(crop[::-1].copy(), valid[::-1].copy())  # another call in between changes nothing
        assert np.array_equal(grabcut_candidate(crop, valid), labels.masks[k])


class _Oracle(P.Predictor):
    """Blind test double: predicts the label of each crop it recognises (by content), else nothing."""

    track = "blind"
    table: dict[str, np.ndarray] = {}

    def predict(self, images, masks=None):
        out = np.zeros(images.shape[:3], bool)
        for i, im in enumerate(images):
            out[i] = self.table.get(hashlib.sha256(im.tobytes()).hexdigest(), out[i])
        return P.PredictorOutput(images.copy(), masks=out)


def test_iou_of_an_oracle_is_1_of_nothing_0_and_a_changed_photo_is_refused(labels, photos, tmp_path):
    sub = LabelSet(labels.ids[:6], labels.sha256[:6], labels.quads[:6], labels.valid[:6], labels.masks[:6])
    crops = [photo_crop(decode_image((photos / f).read_bytes(), f), q)[0] for f, q in zip(sub.ids, sub.quads)]
    _Oracle.table = {hashlib.sha256(c.tobytes()).hexdigest(): m for c, m in zip(crops[:4], sub.masks[:4])}
    table = score_segmenter(_Oracle(), sub, photos)
    assert table["iou"].tolist()[:4] == [1.0] * 4 and table["iou"].tolist()[4:] == [0.0, 0.0]
    assert table["label_fraction"].gt(0.1).all() and table["error"].isna().all()
    s = summarize_iou(table)
    assert s["value"] == pytest.approx(4 / 6) and s["ci95"][0] < s["value"] < s["ci95"][1] and s["n"] == 6
    write_label_set(tmp_path, sub)
    again = read_label_set(tmp_path)
    assert np.array_equal(again.masks, sub.masks) and np.array_equal(again.quads, sub.quads)
    (tmp_path / "photos").mkdir()
    for f in sub.ids:
        (tmp_path / "photos" / f).write_bytes((photos / f).read_bytes())
    (tmp_path / "photos" / sub.ids[2]).write_bytes((photos / sub.ids[3]).read_bytes())
    with pytest.raises(LabelSetError, match="SHA-256 differs"):
        score_segmenter(_Oracle(), sub, tmp_path / "photos")
    with pytest.raises(LabelSetError, match="no label set"):
        read_label_set(tmp_path / "photos")


def test_cli_mask_iou_scores_segmenters_and_refuses_a_given_mask_method_in_one_line(photos):
    P.register("test-oracle", _Oracle)
    try:
        _Oracle.table = {}
        r = CliRunner().invoke(main, ["mask-iou", "--segmenter", "test-oracle", "--segmenter", "test-oracle",
                                      "--photos", str(photos), "--device", "cpu"])
        assert r.exit_code == 0, r.output
        assert "0.000 [0.000, 0.000]" in r.output and "test-oracle - test-oracle: +0.000" in r.output
        r = CliRunner().invoke(main, ["mask-iou", "--segmenter", "telea", "--photos", str(photos)])
        assert r.exit_code == 2 and "not a blind method" in r.output and "Traceback" not in r.output
    finally:
        P.unregister("test-oracle")
