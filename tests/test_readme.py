"""The README's first run, as a new user types it: every ``maskbench`` command of its "First run" block, in a
fresh copy of the repository laid out as a checkout beside ``shared/data``, with an empty home folder (no
cache, no configuration) and no ``MASKBENCH_*`` variable. Each command must succeed, and the repository must
stay clean (``git status --porcelain``): what the commands write goes to git-ignored folders."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: synth's --limit in the test (the README's command builds the whole test split: minutes)
SYNTH_LIMIT = 16


def first_run_commands(readme: str) -> list[list[str]]:
    """The ``maskbench`` commands of the README's "First run" section's first ``bash`` block, split as a
    shell would (comments dropped, ``\\`` continuations joined)."""
    section = readme.split("\n## First run", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1).replace("\\\n", " ")
    cmds = [shlex.split(line, comments=True) for line in block.splitlines()]
    return [c for c in cmds if c and c[0] == "maskbench"]


def test_the_first_run_block_is_the_main_job():
    cmds = first_run_commands((ROOT / "README.md").read_text("utf-8"))
    assert [c[1] for c in cmds] == ["synth", "sheet", "evaluate", "evaluate", "compare", "leaderboard"]


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout


@pytest.mark.slow
def test_readme_first_run_as_typed_keeps_the_repository_clean(shared_data, tmp_path):
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs git and a git checkout")
    # a clone-like copy: the tracked files as they are in this working tree, committed in a new repository
    repo = tmp_path / "maskbench"
    files = [f for f in _git(ROOT, "ls-files", "-z").split("\0") if f and (ROOT / f).is_file()]
    for f in files:
        (repo / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, repo / f)
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "clone")
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "data").symlink_to(shared_data)  # the README's ../shared/data
    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home), "PATH": os.pathsep.join([str(Path(sys.executable).parent), "/usr/bin", "/bin"]),
           "LANG": os.environ.get("LANG", "C.UTF-8")}
    if os.environ.get("HF_HUB_OFFLINE"):
        env["HF_HUB_OFFLINE"] = os.environ["HF_HUB_OFFLINE"]

    cmds = first_run_commands((ROOT / "README.md").read_text("utf-8"))
    outputs = {}
    for cmd in cmds:
        if cmd[1] == "synth":
            cmd = [*cmd, "--limit", str(SYNTH_LIMIT)]
        r = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=1200)
        assert r.returncode == 0, f"{shlex.join(cmd)}\n{r.stdout}\n{r.stderr}"
        assert "Traceback" not in r.stderr and "[ WARN" not in r.stderr, f"{shlex.join(cmd)}\n{r.stderr}"
        outputs[" ".join(cmd[1:3])] = r

    assert _git(repo, "status", "--porcelain") == "", "the README's commands left files git sees"
    # compare picked the user's own dataset (the --limit build, the latest), and said so on stderr
    compare = outputs["compare telea"]
    mine = re.search(r"on (celeba-masked/test@[0-9a-f]{8})", compare.stdout).group(1)
    assert "comparing on " + mine in compare.stderr
    runs = list((repo / "results" / "telea").glob("*/summary.json"))
    assert len(runs) == 1 and mine.split("@")[1] in runs[0].parent.name
    # the run records the dataset as typed, not this machine's absolute path
    assert '"data": "data/celeba-masked"' in runs[0].read_text()
    assert str(tmp_path) not in (runs[0].parent / "manifest.json").read_text()
    board = (repo / "results" / "leaderboard" / "leaderboard.md").read_text()
    assert mine in board and "## Superseded builds" in board
