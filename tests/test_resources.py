"""Model downloads: one helper, pinned SHA-256 checked before a file lands; offline (file:// URLs)."""

from __future__ import annotations

import bz2
import hashlib
import importlib.util
import random
import re
from pathlib import Path

import pytest

from maskbench.core import resources
from maskbench.core.resources import (
    ChecksumError,
    DownloadError,
    ModelFile,
    ModelNotFoundError,
    download,
    resolve_dlib_model,
)

PACKAGE = Path(__file__).resolve().parent.parent / "maskbench"


def _pinned(tmp_path: Path, data: bytes, *, compress: bool = False, **over) -> ModelFile:
    src = tmp_path / "mirror" / ("model.bin.bz2" if compress else "model.bin")
    src.parent.mkdir(exist_ok=True)
    src.write_bytes(bz2.compress(data) if compress else data)
    fields = dict(name="model.bin", url=src.as_uri(), sha256=hashlib.sha256(data).hexdigest(), size=len(data),
                  compression="bz2" if compress else None)
    return ModelFile(**{**fields, **over})


@pytest.mark.parametrize("compress", [False, True])
def test_download_writes_the_file_when_its_checksum_matches(tmp_path, compress):
    data = bytes(range(256)) * 5000
    dest = tmp_path / "cache" / "model.bin"
    assert download(_pinned(tmp_path, data, compress=compress), dest) == dest
    assert dest.read_bytes() == data
    assert [p.name for p in dest.parent.iterdir()] == ["model.bin"]


def test_a_wrong_checksum_is_refused_and_leaves_nothing(tmp_path):
    data = b"weights" * 1000
    model = _pinned(tmp_path, data, sha256="0" * 64)
    dest = tmp_path / "cache" / "model.bin"
    with pytest.raises(ChecksumError, match="expected the pinned 0000"):
        download(model, dest)
    assert list(dest.parent.iterdir()) == []  # no file, no temporary left over


def test_an_oversized_or_truncated_download_is_refused(tmp_path):
    data = random.Random(0).randbytes(12_800)  # incompressible
    dest = tmp_path / "cache" / "model.bin"
    with pytest.raises(DownloadError, match="larger than its pinned"):
        download(_pinned(tmp_path, data, compress=True, size=4000), dest)
    truncated = _pinned(tmp_path, data, compress=True)
    blob = Path(truncated.url.removeprefix("file://"))
    blob.write_bytes(blob.read_bytes()[:200])
    with pytest.raises(DownloadError):
        download(truncated, dest)
    assert list(dest.parent.iterdir()) == []


def test_plain_http_is_refused(tmp_path):
    model = _pinned(tmp_path, b"abc", url="http://dlib.net/files/x.bz2")
    with pytest.raises(DownloadError, match="refusing to download over http"):
        download(model, tmp_path / "x", opener=lambda *a: pytest.fail("must not connect"))


def test_every_pin_is_https_and_well_formed():
    for m in [*resources.DLIB_MODELS.values(), resources.FID_INCEPTION, resources.SFACE_MODEL]:
        assert m.url.startswith("https://") and re.fullmatch(r"[0-9a-f]{64}", m.sha256) and m.size > 0
    # torch-hub file names carry the first 8 hex digits of the file's sha256
    assert resources.FID_INCEPTION.sha256.startswith(resources.FID_INCEPTION.name.rsplit("-", 1)[1][:8])


def test_dlib_pins_match_the_installed_model_files():
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None:
        pytest.skip("face-recognition-models is not installed")
    models = Path(spec.origin).parent / "models"
    for m in resources.DLIB_MODELS.values():
        resources.verify_file(m, models / m.name)


def test_no_module_downloads_outside_the_helper():
    pattern = re.compile(r"urlopen|urlretrieve|download_url_to_file|hf_hub_download|snapshot_download|requests\.get")
    offenders = [p.name for p in PACKAGE.rglob("*.py") if p.name != "resources.py" and pattern.search(p.read_text())]
    assert offenders == []


@pytest.fixture
def no_packaged_models(monkeypatch, tmp_path):
    """dlib models resolve as if face-recognition-models were absent, with an empty cache."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "face_recognition_models" else real(name, *a))
    monkeypatch.setenv("MASKBENCH_CACHE", str(tmp_path / "cache"))
    resources._verify_once.cache_clear()
    spec = real("face_recognition_models")
    if spec is None:
        pytest.skip("face-recognition-models is not installed (its file is the download fixture)")
    return Path(spec.origin).parent / "models"


def test_dlib_fallback_downloads_through_the_checked_helper(no_packaged_models, monkeypatch, tmp_path):
    name = "mmod_human_face_detector.dat"  # the smallest dlib model
    good = no_packaged_models / name
    mirror = tmp_path / f"{name}.bz2"
    mirror.write_bytes(bz2.compress(good.read_bytes(), 1))
    pin = resources.DLIB_MODELS[name]
    monkeypatch.setitem(resources.DLIB_MODELS, name, ModelFile(name, mirror.as_uri(), pin.sha256, pin.size, "bz2"))
    p = resolve_dlib_model(name)
    assert p == tmp_path / "cache" / "dlib" / name and p.read_bytes() == good.read_bytes()

    # a tampered mirror: refused with the checksum named, nothing cached
    p.unlink()
    data = bytearray(good.read_bytes())
    data[1000] ^= 0xFF
    mirror.write_bytes(bz2.compress(bytes(data), 1))
    with pytest.raises(ModelNotFoundError, match="sha256"):
        resolve_dlib_model(name)
    assert not p.exists()

    # a cached copy that does not match its pin is not used either
    p.write_bytes(bytes(data))
    with pytest.raises(ModelNotFoundError, match="pinned sha256"):
        resolve_dlib_model(name)
