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
    """A real Masked-Faces test split: ``maskbench synth`` on the first 24 CelebA images, all moved to
    the test split (skips without the shared data)."""
    from maskbench.sources import resolve_source
    from maskbench.synth import SynthConfig, synthesize

    out = tmp_path_factory.mktemp("real")
    synthesize(resolve_source("celeba", celeba_dir), out, SynthConfig(seed=1, test_fraction=1.0), limit=24,
               progress=False)
    return out


@pytest.fixture(scope="session")
def synthetic_faces(tmp_path_factory) -> Path:
    """6 synthetic 64 px faces (no data needed)."""
    return write_fake_dataset(tmp_path_factory.mktemp("syn"), 6, size=64, seed=2)
