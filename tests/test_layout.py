"""The package's imports follow the data flow: sources -> faces -> synth -> dataset -> predictor -> metrics
-> results -> leaderboard (-> cli). A module may import modules of its own stage or of earlier ones, never
of a later one. Imports inside functions count too: a lazy import is still a dependency."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: Where each importable package lives in the checkout (pyproject's package-dir).
PACKAGE_DIRS = {"maskbench": ROOT / "maskbench", "maskbench.baselines": ROOT / "baselines"}

#: The stages, in data-flow order; each module belongs to the first stage whose prefixes match it.
STAGES: list[tuple[str, tuple[str, ...]]] = [
    # shared by every stage: the package itself, file helpers, model files and the dataset format
    ("base", ("maskbench", "maskbench.io", "maskbench.resources", "maskbench.format", "maskbench.card")),
    ("sources", ("maskbench.sources",)),
    ("faces", ("maskbench.faces", "maskbench.dlib_resnet", "maskbench.yunet")),
    ("synth", ("maskbench.masks", "maskbench.synth", "maskbench.synth_folder")),
    ("dataset", ("maskbench.dataset", "maskbench.publish", "maskbench.testing")),
    ("predictor", ("maskbench.predictors", "maskbench.learned", "maskbench.train", "maskbench.baselines")),
    ("metrics", ("maskbench.metrics", "maskbench.fid", "maskbench.identity", "maskbench.set_distances")),
    ("results", ("maskbench.evaluate", "maskbench.stats", "maskbench.realism", "maskbench.demo", "maskbench.wild")),
    ("leaderboard", ("maskbench.leaderboard", "maskbench.report")),
    ("cli", ("maskbench.cli", "maskbench.__main__")),
]


def stage_of(module: str) -> int:
    """Index in :data:`STAGES` of the most specific prefix that matches ``module``."""
    best, best_len = None, -1
    for i, (_, prefixes) in enumerate(STAGES):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best_len:
                best, best_len = i, len(p)
    if best is None:
        raise KeyError(f"module {module} has no stage in tests/test_layout.py STAGES: add it")
    return best


def package_modules() -> dict[str, tuple[Path, bool]]:
    """``{module name: (file, is_package)}`` for every ``.py`` file of the package."""
    mods = {}
    for pkg, root in PACKAGE_DIRS.items():
        for path in root.rglob("*.py"):
            parts = [p for p in path.relative_to(root).with_suffix("").parts if p != "__init__"]
            mods[".".join([pkg, *parts])] = (path, path.name == "__init__.py")
    return mods


def imported_modules(source: str, module: str, is_package: bool, known: set[str]) -> set[str]:
    """The package modules ``source`` (the text of ``module``) imports, relative imports resolved."""
    here = module if is_package else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".")[: len(here.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [mod] + [f"{mod}.{a.name}" for a in node.names]  # `from pkg import submodule`
        else:
            continue
        for t in targets:
            while t and t not in known:  # `import maskbench.masks.frame` -> the deepest known module
                t = t.rpartition(".")[0]
            if t and t != module:
                found.add(t)
    return found


def violations(modules: dict[str, tuple[Path, bool]], sources: dict[str, str] | None = None) -> list[str]:
    """Every import that runs against the flow, as ``a (stage) -> b (stage)``."""
    known = set(modules)
    out = []
    for name, (path, is_package) in sorted(modules.items()):
        text = sources[name] if sources and name in sources else path.read_text(encoding="utf-8")
        for target in sorted(imported_modules(text, name, is_package, known)):
            a, b = stage_of(name), stage_of(target)
            if b > a:
                out.append(f"{name} ({STAGES[a][0]}) -> {target} ({STAGES[b][0]})")
    return out


def test_every_module_has_a_stage():
    for name in package_modules():
        stage_of(name)


def test_imports_follow_the_data_flow():
    assert violations(package_modules()) == []


@pytest.mark.parametrize(
    "module, text, bad",
    [
        ("maskbench.synth", "from .dataset import MaskedFaces\n", "maskbench.dataset"),
        ("maskbench.masks.spec", "def f():\n    from ..publish import publish\n", "maskbench.publish"),
        ("maskbench.sources", "import maskbench.faces\n", "maskbench.faces"),
        ("maskbench.metrics", "from maskbench import leaderboard\n", "maskbench.leaderboard"),
    ],
)
def test_a_backward_import_is_flagged(module, text, bad):
    """The check can fail: a synthetic import against the flow is reported (plain, lazy, absolute)."""
    found = violations(package_modules(), sources={module: text})
    assert len(found) == 1 and found[0].startswith(f"{module} (") and f"-> {bad} (" in found[0], found


def test_a_forward_import_is_allowed():
    assert violations(package_modules(), sources={"maskbench.dataset": "from .masks import load_templates\n"}) == []
