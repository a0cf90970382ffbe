"""The package's tree shows its design and its imports follow the data flow.

Stages, in data-flow order: core -> faces -> measures (shared parts) -> data (the dataset half: format ->
sources -> synthesis -> dataset, realism) -> train -> methods (the predictor contract, learned methods,
``baselines/``) -> harvest (photo templates, keyed out with the blind methods' networks) -> bench (the benchmark
half: evaluate, wild, leaderboard) -> cli. A module may import
modules of its own stage or of earlier ones, never of a later one; no two modules import each other, directly
or round a longer circle; no module imports another module's private (``_name``) names. Imports inside
functions count too: a lazy import is still a dependency."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: Where each importable package lives in the checkout (pyproject's package-dir).
PACKAGE_DIRS = {"maskbench": ROOT / "maskbench", "maskbench.baselines": ROOT / "baselines"}

#: The stages, in data-flow order; each module belongs to the stage of its most specific matching prefix.
STAGES: list[tuple[str, tuple[str, ...]]] = [
    ("core", ("maskbench", "maskbench.core")),
    ("faces", ("maskbench.faces",)),
    ("measures", ("maskbench.measures",)),
    ("data: format", ("maskbench.data", "maskbench.data.format", "maskbench.data.card")),
    ("data: sources", ("maskbench.data.sources",)),
    ("data: synthesis", ("maskbench.data.masks", "maskbench.data.synth", "maskbench.data.synth_folder",
                         "maskbench.data.synth_ray")),
    ("data: dataset", ("maskbench.data.dataset", "maskbench.data.publish", "maskbench.data.testing",
                       "maskbench.data.realism")),
    ("train", ("maskbench.train",)),
    ("methods", ("maskbench.methods", "maskbench.baselines")),
    ("harvest", ("maskbench.harvest",)),
    ("bench", ("maskbench.bench",)),
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
            # `from pkg import submodule` depends on the submodule, `from pkg import name` on pkg
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:  # `import maskbench.data.masks.frame` -> the deepest known module
                t = t.rpartition(".")[0]
            if t and t != module:
                found.add(t)
    return found


def _sources(modules, sources):
    for name, (path, is_package) in sorted(modules.items()):
        yield name, is_package, sources[name] if sources and name in sources else path.read_text(encoding="utf-8")


def violations(modules: dict[str, tuple[Path, bool]], sources: dict[str, str] | None = None) -> list[str]:
    """Every import that runs against the flow, as ``a (stage) -> b (stage)``."""
    known = set(modules)
    out = []
    for name, is_package, text in _sources(modules, sources):
        for target in sorted(imported_modules(text, name, is_package, known)):
            a, b = stage_of(name), stage_of(target)
            if b > a:
                out.append(f"{name} ({STAGES[a][0]}) -> {target} ({STAGES[b][0]})")
    return out


def circles(modules: dict[str, tuple[Path, bool]], sources: dict[str, str] | None = None) -> list[list[str]]:
    """The import circles: strongly connected sets of two or more modules (Tarjan's algorithm), sorted.

    A package's ``__init__`` that re-exports its submodules is an edge package -> submodule; a submodule
    importing its own package's ``__init__`` back would close a circle and is reported like any other.
    """
    known = set(modules)
    graph = {name: sorted(imported_modules(text, name, is_pkg, known)) for name, is_pkg, text in _sources(modules, sources)}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:  # recursion depth is bounded by the number of modules (~100)
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def private_imports(modules: dict[str, tuple[Path, bool]], sources: dict[str, str] | None = None) -> list[str]:
    """Every ``from m import _name`` across modules (dunder names such as ``__version__`` are public)."""
    known = set(modules)
    out = []
    for name, is_package, text in _sources(modules, sources):
        here = name if is_package else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level:
                base = here.split(".")[: len(here.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod not in known:
                continue
            for a in node.names:
                if a.name.startswith("_") and not (a.name.startswith("__") and a.name.endswith("__")):
                    out.append(f"{name} imports {mod}.{a.name}")
    return out


def test_every_module_has_a_stage():
    for name in package_modules():
        stage_of(name)


def test_imports_follow_the_data_flow():
    assert violations(package_modules()) == []


def test_no_import_circle():
    assert circles(package_modules()) == []


def test_no_private_name_crosses_a_module():
    assert private_imports(package_modules()) == []


@pytest.mark.parametrize(
    "module, text, bad",
    [
        ("maskbench.data.synth", "from .dataset import MaskedFaces\n", "maskbench.data.dataset"),
        ("maskbench.data.masks.spec", "def f():\n    from ..publish import publish\n", "maskbench.data.publish"),
        ("maskbench.faces.landmarks", "import maskbench.data.sources\n", "maskbench.data.sources"),
        ("maskbench.measures.metrics", "from maskbench.bench import leaderboard\n", "maskbench.bench.leaderboard"),
        ("maskbench.train.loop", "from ..methods.learned import LearnedPredictor\n", "maskbench.methods.learned"),
    ],
)
def test_a_backward_import_is_flagged(module, text, bad):
    """The check can fail: a synthetic import against the flow is reported (plain, lazy, absolute)."""
    found = violations(package_modules(), sources={module: text})
    assert len(found) == 1 and found[0].startswith(f"{module} (") and f"-> {bad} (" in found[0], found


def test_a_forward_import_is_allowed():
    assert violations(package_modules(), sources={"maskbench.data.dataset": "from .masks import load_templates\n"}) == []


def test_a_circle_is_flagged():
    """Two modules of one stage importing each other (lazily) form a circle; the check names both."""
    mods = package_modules()
    report = mods["maskbench.bench.report"][0].read_text(encoding="utf-8")
    found = circles(mods, sources={"maskbench.bench.report": report + "\ndef f():\n    from .leaderboard import x\n"})
    assert found == [["maskbench.bench.leaderboard", "maskbench.bench.report"]]


def test_a_private_import_is_flagged():
    found = private_imports(package_modules(), sources={"maskbench.data.synth": "from .synth_folder import _x, __all__\n"})
    assert found == ["maskbench.data.synth imports maskbench.data.synth_folder._x"]


def test_the_tree_shows_the_two_halves():
    """No loose modules: beside the package's ``__init__``/``__main__`` only ``cli.py`` sits at the top."""
    top = sorted(p.name for p in PACKAGE_DIRS["maskbench"].glob("*.py"))
    assert top == ["__init__.py", "__main__.py", "cli.py"]
