"""Fixtures shared by the benchmark tests: small datasets in the Masked-Faces format and an isolated
maskbench cache (imported by the test modules: ``from _fakedata import ...``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from maskbench.testing import write_fake_dataset


@pytest.fixture(scope="session")
def isolated_cache(tmp_path_factory) -> Path:
    """Point ``$MASKBENCH_CACHE`` at a session temp folder (FID stats, converted weights, embeddings)."""
    d = tmp_path_factory.mktemp("mbcache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MASKBENCH_CACHE", str(d))
        yield d


@pytest.fixture(scope="session")
def real_faces(tmp_path_factory, celeba_dir) -> Path:
    """24 CelebA faces, FFHQ-aligned to 256 px, with lower-face holes (skips without the shared data)."""
    return write_fake_dataset(tmp_path_factory.mktemp("real"), 24, source=celeba_dir, seed=1)


@pytest.fixture(scope="session")
def synthetic_faces(tmp_path_factory) -> Path:
    """6 synthetic 64 px faces (no data needed)."""
    return write_fake_dataset(tmp_path_factory.mktemp("syn"), 6, size=64, seed=2)
