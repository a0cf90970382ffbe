"""Shared fixtures. Real data comes from ``$MASKBENCH_TEST_DATA`` (``.ci/run`` points it at
``../shared/data``); tests that need it skip with a reason where it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


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
