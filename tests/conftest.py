"""Shared fixtures. Real data comes from ``$MASKBENCH_TEST_DATA`` (``.ci/run`` points it at
``../shared/data``); tests that need it skip with a reason where it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from maskbench.data.testing import write_fake_dataset


def _data_root() -> Path | None:
    env = os.environ.get("MASKBENCH_TEST_DATA")
    if env and Path(env).is_dir():
        return Path(env)
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``$MASKBENCH_TEST_DATA`` (holds celeba-id200/, textures-dtd/, 3dmm-sfm/)."""
    root = _data_root()
    if root is None:
        pytest.skip("real test data not found: set MASKBENCH_TEST_DATA to the shared data folder")
    return root


@pytest.fixture(scope="session")
def celeba_dir(shared_data: Path) -> Path:
    """The CelebA-layout folder with 200 identities x 30 aligned crops."""
    d = shared_data / "celeba-id200"
    if not (d / "img_align_celeba").is_dir():
        pytest.skip(f"{d}/img_align_celeba not found")
    return d


@pytest.fixture(scope="session")
def textures_dir(shared_data: Path) -> Path:
    """400 DTD texture photos."""
    d = shared_data / "textures-dtd"
    if not d.is_dir():
        pytest.skip(f"{d} not found")
    return d


@pytest.fixture(scope="session")
def isolated_cache(tmp_path_factory) -> Path:
    """Point ``$MASKBENCH_CACHE`` at a session temp folder (FID stats, converted weights, embeddings)."""
    d = tmp_path_factory.mktemp("mbcache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MASKBENCH_CACHE", str(d))
        yield d


@pytest.fixture(scope="session")
def real_faces(tmp_path_factory, celeba_dir) -> Path:
    """A real Masked-Faces test split: ``maskbench synth`` on the first 24 CelebA images, all moved to
    the test split (skips without the shared data)."""
    from maskbench.data.sources import resolve_source
    from maskbench.data.synth import SynthConfig, synthesize

    out = tmp_path_factory.mktemp("real")
    synthesize(resolve_source("celeba", celeba_dir), out, SynthConfig(seed=1, test_fraction=1.0), limit=24,
               progress=False)
    return out


@pytest.fixture(scope="session")
def synthetic_faces(tmp_path_factory) -> Path:
    """6 synthetic 64 px faces (no data needed)."""
    return write_fake_dataset(tmp_path_factory.mktemp("syn"), 6, size=64, seed=2)


@pytest.fixture(scope="session")
def celeba_faces_two_splits(celeba_dir):
    """Real faces of several people, several photos each: ``(ims (N, H, W, 3) uint8, lms (N, 68, 2),
    ids (N,) str)``: the first 6 detectable photos of each of the first 6 identities in
    ``identity_CelebA.txt`` (CelebA aligned crops, landmarks from dlib)."""
    import numpy as np

    from maskbench.core.io import read_image
    from maskbench.faces.landmarks import FaceDetector, NoFaceError

    by_id: dict[str, list[str]] = {}
    for line in (celeba_dir / "identity_CelebA.txt").read_text().splitlines():
        name, ident = line.split()
        by_id.setdefault(ident, []).append(name)
    detect = FaceDetector()
    ims, lms, ids = [], [], []
    for ident in sorted(by_id)[:6]:
        k = 0
        for name in by_id[ident]:
            im = read_image(celeba_dir / "img_align_celeba" / name)
            try:
                face = detect(im)
            except NoFaceError:
                continue
            ims.append(im)
            lms.append(face.landmarks)
            ids.append(ident)
            k += 1
            if k == 6:
                break
    return np.stack(ims), np.array(lms, np.float64), np.array(ids)
