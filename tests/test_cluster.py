"""``--engine ray`` without Ray installed, and engine options that do not fit: one line, exit status 2
(these run without Ray: its absence is simulated)."""

from __future__ import annotations

import sys

import pytest
from click.testing import CliRunner

from maskbench.cli import main
from maskbench.core.cluster import RAY_INSTALL, RayUnavailableError, import_ray


@pytest.fixture
def no_ray(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError


def test_import_ray_names_the_install_command(no_ray):
    with pytest.raises(RayUnavailableError, match='pip install -e ".\\[ray\\]"'):
        import_ray()


@pytest.mark.parametrize("args", [["synth", "--engine", "ray"], ["evaluate", "--method", "telea", "--engine", "ray"]])
def test_engine_ray_without_ray_is_one_line(no_ray, tmp_path, args):
    res = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "out")])
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and RAY_INSTALL in lines[0] and "Traceback" not in res.output
    assert not (tmp_path / "out").exists()  # refused before anything is written


def test_ray_address_needs_engine_ray(tmp_path):
    res = CliRunner().invoke(main, ["synth", "--ray-address", "auto", "--out", str(tmp_path / "out")])
    assert res.exit_code == 2 and "--ray-address needs --engine ray" in res.output
