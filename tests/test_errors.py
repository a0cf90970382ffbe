"""One error base for what a user can fix: the command line prints it as one line (exit 2); anything else is
a bug and keeps its traceback."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from click.testing import CliRunner

from maskbench.cli import main
from maskbench.core.errors import MaskbenchError, first_line, stable_message

ROOT = Path(__file__).resolve().parent.parent
#: Exceptions that are not the user's to fix: a method breaking its own contract is the method's bug.
NOT_USER_ERRORS = {"PredictorInputError", "PredictorOutputError"}


def _exception_classes():
    for root in (ROOT / "maskbench", ROOT / "baselines"):
        for path in root.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if not isinstance(node, ast.ClassDef) or node.name in ("UserError", "MaskbenchError"):
                    continue
                if node.name.endswith("Error"):
                    yield path, node


def test_every_error_class_a_user_can_fix_has_the_one_base():
    """Each ``*Error`` class of the package names MaskbenchError (or a subclass of it) among its bases."""
    classes = list(_exception_classes())
    names = {node.name for _, node in classes}
    assert len(classes) >= 30
    loose = []
    for path, node in classes:
        bases = {b.id if isinstance(b, ast.Name) else b.attr for b in node.bases}
        if node.name not in NOT_USER_ERRORS and not ({"MaskbenchError"} | (names - NOT_USER_ERRORS)) & bases:
            loose.append(f"{path.relative_to(ROOT)}: {node.name}")
    assert loose == []


def test_first_line_and_stable_message():
    assert first_line(ValueError("  one\ntwo")) == "one"
    assert first_line(KeyError()) == "KeyError"
    assert stable_message(OSError("<_io.BytesIO object at 0x7f00ab> broke\nmore")) == "OSError: <_io.BytesIO> broke"


def test_a_user_error_is_one_line_and_a_bug_is_a_traceback(monkeypatch, tmp_path):
    from maskbench.bench import leaderboard

    r = CliRunner().invoke(main, ["leaderboard", "--results", str(tmp_path / "none"), "--out", str(tmp_path / "lb")])
    assert r.exit_code == 2 and r.output.strip().count("\n") == 0 and "does not exist" in r.output

    def broken(*args, **kwargs):
        return {}["a key the code forgot"]  # a bug

    monkeypatch.setattr(leaderboard, "build_leaderboard", broken)
    (tmp_path / "res").mkdir()
    r = CliRunner().invoke(main, ["leaderboard", "--results", str(tmp_path / "res"), "--out", str(tmp_path / "lb")])
    assert r.exit_code == 1 and isinstance(r.exception, KeyError)


def test_a_missing_named_file_is_one_line(tmp_path):
    """An operating-system error on a named path becomes one line naming the path."""
    r = CliRunner().invoke(main, ["leaderboard", "--results", str(tmp_path), "--out", str(tmp_path / "x"),
                                  "--reported", str(tmp_path / "missing.csv")])
    assert r.exit_code == 2 and "missing.csv" in r.output and "Traceback" not in r.output


def test_an_unknown_method_option_is_refused_before_any_work(tmp_path):
    r = CliRunner().invoke(main, ["evaluate", "--method", "telea", "--method-arg", "radios=3",
                                  "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "res")])
    assert r.exit_code == 2, r.output
    assert "no option 'radios' (options: radius)" in r.output or "nowhere" in r.output
    assert not (tmp_path / "res").exists()


def test_maskbench_error_keeps_the_builtin_type_callers_catch():
    from maskbench.data.sources import SourceError

    with pytest.raises(ValueError):
        raise SourceError("still a ValueError")
    assert issubclass(SourceError, MaskbenchError)
