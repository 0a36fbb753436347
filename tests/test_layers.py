"""The layers only point down, and no module reaches into another's private names.

warehouse <- ingest <- analysis <- finetune <- pipeline <- cli (docs/architecture.md). Every
import is parsed with `ast` — at module level, inside functions, under `if TYPE_CHECKING:` —
so a lazy or type-only import counts like any other. Each failure names file:line.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# (source folder, package it installs as), lowest layer first. `xling.sql` is data (the
# migrations and views) read by the warehouse, so it sits under it. The top-level `xling`
# package holds only the version and `python -m xling`, which starts the CLI.
LAYERS: list[tuple[str, str]] = [
    ("sql", "xling.sql"),
    ("warehouse", "xling.warehouse"),
    ("ingest", "xling.ingest"),
    ("analysis", "xling.analysis"),
    ("finetune", "xling.finetune"),
    ("xling/pipeline", "xling.pipeline"),
    ("xling/cli", "xling.cli"),
]
RANK = {package: i for i, (_, package) in enumerate(LAYERS)}
ENTRY_POINT = "xling.__main__"  # above everything: it runs the CLI


@dataclass(frozen=True)
class Source:
    path: Path
    module: str  # dotted name once installed
    is_package: bool  # an __init__.py: relative imports resolve against itself


def sources() -> list[Source]:
    """Every module of every layer, with its installed name."""
    out = []
    for folder, package in LAYERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out.append(Source(path, ".".join([package, *parts]), path.name == "__init__.py"))
    for path in sorted((ROOT / "xling").glob("*.py")):
        out.append(Source(path, f"xling.{path.stem}".removesuffix(".__init__"), False))
    return out


def layer_of(module: str) -> str | None:
    """The layer package `module` belongs to (None: outside xling, or `xling` itself)."""
    for package in sorted(RANK, key=len, reverse=True):
        if module == package or module.startswith(package + "."):
            return package
    return None


def rank_of(module: str) -> int | None:
    if module == ENTRY_POINT:
        return len(LAYERS)
    layer = layer_of(module)
    return None if layer is None else RANK[layer]


@dataclass(frozen=True)
class Imported:
    line: int
    module: str  # the module imported from (absolute)
    name: str | None  # the name taken from it (`from m import name`), None for `import m`


def resolve(source: Source, module: str | None, level: int) -> str:
    """The absolute module of a (possibly relative) `from ... import`."""
    if level == 0:
        return module or ""
    base = source.module.split(".")
    if not source.is_package:
        base = base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def imports(source: Source, tree: ast.AST) -> list[Imported]:
    """Every import in the file, wherever it sits, plus importlib.import_module("...")."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [Imported(node.lineno, alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = resolve(source, node.module, node.level)
            out += [Imported(node.lineno, module, alias.name) for alias in node.names]
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id)
            in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            out.append(Imported(node.lineno, node.args[0].value, None))
    return out


def target(imp: Imported) -> str:
    """The module an import runs: `from xling import analysis` runs xling.analysis;
    `from xling.analysis import queries` runs xling.analysis, whose layer is that of
    any submodule it names."""
    if imp.module == "xling" and imp.name is not None and imp.name != "*":
        return f"xling.{imp.name}"
    return imp.module


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def parsed() -> list[tuple[Source, ast.AST]]:
    return [(s, ast.parse(s.path.read_text(encoding="utf-8"), str(s.path))) for s in sources()]


def where(source: Source, line: int) -> str:
    return f"{source.path.relative_to(ROOT)}:{line}"


def upward(source: Source, tree: ast.AST) -> list[str]:
    """The imports of one module that reach a higher layer."""
    own = rank_of(source.module)
    if own is None:
        return []  # the top-level xling/__init__.py: checked to import nothing at all
    found, seen = [], set()
    for imp in imports(source, tree):
        reached = target(imp)
        rank = rank_of(reached)
        if rank is not None and rank > own and (imp.line, reached) not in seen:
            seen.add((imp.line, reached))
            found.append(
                f"{where(source, imp.line)}: {source.module} ({layer_of(source.module)}) "
                f"imports {reached} ({layer_of(reached) or reached}), a higher layer"
            )
    return sorted(found, key=lambda f: int(f.split(":")[1]))


def private(source: Source, tree: ast.AST) -> list[str]:
    """`from m import _x`, `import m._x`, and `m._x` on a name an import bound to module m,
    where m is another xling module."""
    found = []
    for imp in imports(source, tree):
        if not imp.module.startswith("xling") or imp.module == source.module:
            continue
        if any(is_private(p) for p in imp.module.split(".")):
            found.append(f"{where(source, imp.line)}: imports private module {imp.module}")
        if imp.name is not None and is_private(imp.name):
            found.append(f"{where(source, imp.line)}: imports {imp.name} from {imp.module}")
    bound: dict[str, str] = {}  # local name -> the xling object an import bound it to
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("xling."):
                    # `import a.b.c` binds `a`; `import a.b.c as m` binds m to a.b.c
                    bound[alias.asname or "xling"] = alias.name if alias.asname else "xling"
        elif isinstance(node, ast.ImportFrom):
            module = resolve(source, node.module, node.level)
            if module.startswith("xling"):
                for alias in node.names:
                    bound[alias.asname or alias.name] = f"{module}.{alias.name}"
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Attribute) and is_private(node.attr)):
            continue
        chain = dotted(node.value)  # `runner` in runner._plan, `xling.ingest.runner` in ...
        if chain is None or chain.split(".")[0] not in bound:
            continue
        head, *rest = chain.split(".")
        owner = ".".join([bound[head], *rest])
        if owner != source.module:
            found.append(f"{where(source, node.lineno)}: uses {chain}.{node.attr} ({owner})")
    return sorted(found, key=lambda f: int(f.split(":")[1]))


def dotted(node: ast.AST) -> str | None:
    """`a.b.c` for a chain of names and attributes, None for anything else (a call, ...)."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = dotted(node.value)
        return None if inner is None else f"{inner}.{node.attr}"
    return None


def test_every_package_is_in_a_layer():
    """A new or renamed package folder would otherwise pass the checks below unseen."""
    import tomllib

    for folder, package in LAYERS:
        assert (ROOT / folder / "__init__.py").is_file(), f"{folder} ({package}) has no __init__"
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    declared = {p for p in setuptools["packages"] if not p.startswith("xling.sql.")}
    declared -= {p for p in declared if p.startswith("xling.analysis.tasks")}  # data
    assert declared == {"xling", *RANK}, "a package outside LAYERS"
    on_disk = {s.module for s in sources()}
    for path in ROOT.glob("xling/*/__init__.py"):
        assert f"xling.{path.parent.name}" in on_disk, path


def test_imports_only_point_down():
    found = [f for source, tree in parsed() for f in upward(source, tree)]
    assert not found, "imports against the layers:\n" + "\n".join(found)


def test_top_level_package_imports_no_layer():
    """`import xling` stays free: it must not pull a layer in."""
    tree = ast.parse((ROOT / "xling" / "__init__.py").read_text(encoding="utf-8"))
    source = Source(ROOT / "xling" / "__init__.py", "xling", True)
    assert not [imp for imp in imports(source, tree) if imp.module.startswith("xling")]


def test_no_private_name_of_another_module():
    found = [f for source, tree in parsed() for f in private(source, tree)]
    assert not found, "private names used across modules:\n" + "\n".join(found)


def test_the_metrics_are_analysis_functions_not_warehouse_methods():
    """The warehouse knows nothing of the metrics; `xling.analysis` exports each one as a
    function of the warehouse."""
    import inspect

    from xling import analysis
    from xling.warehouse import Warehouse

    for name in analysis.__all__:
        params = list(inspect.signature(getattr(analysis, name)).parameters)
        assert params[0] == "wh", name
        assert not hasattr(Warehouse, name), name
    assert {"gap", "language_summary", "similarity", "lape", "compare", "correlate"} <= set(
        analysis.__all__
    )


# -- the checks themselves: each must fail on the code it exists to catch ------------------


def check(code: str, module: str, *, package: bool = False) -> tuple[list[str], list[str]]:
    """The (upward, private) findings of the real checks for `code` posing as `module`."""
    source = Source(ROOT / "posed.py", module, package)
    tree = ast.parse(code)
    return upward(source, tree), private(source, tree)


def reached(findings: list[str]) -> list[str]:
    """The higher modules named by `upward`'s findings."""
    return [re.search(r" imports (\S+) \(", f).group(1) for f in findings]


@pytest.mark.parametrize(
    ("code", "module", "expected"),
    [
        ("from xling.analysis.api import Mixin", "xling.warehouse.api", ["xling.analysis.api"]),
        (
            "def f():\n    from xling.finetune.steer import steering",
            "xling.ingest.runner",
            ["xling.finetune.steer"],
        ),
        (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import xling.pipeline",
            "xling.analysis.queries",
            ["xling.pipeline"],
        ),
        ("from xling import cli", "xling.pipeline.demo", ["xling.cli"]),
        (
            "from ..finetune import apply",
            "xling.analysis.lmeval_run",
            ["xling.finetune"],
        ),
        (
            "import importlib\nimportlib.import_module('xling.analysis.queries')",
            "xling.ingest.runner",
            ["xling.analysis.queries"],
        ),
        ("import xling.cli", "xling.__main__", []),
        ("from xling.warehouse import Warehouse", "xling.cli.query", []),
        ("from . import queries", "xling.analysis", []),
        ("from xling.analysis import queries", "xling.analysis.plots", []),
    ],
)
def test_the_layer_check_catches_upward_imports(code, module, expected):
    found = check(code, module)[0]
    assert reached(found) == expected
    assert all(f.startswith("posed.py:") for f in found)


@pytest.mark.parametrize(
    ("code", "module", "expected"),
    [
        ("from xling.ingest.runner import _Plan, run_ingest", "xling.ingest.ray_engine", 1),
        ("from xling.ingest import runner\nrunner._plan(1)", "xling.ingest.ray_engine", 1),
        ("import xling.ingest.runner as r\nr._Batch", "xling.ingest.ray_engine", 1),
        ("import xling.ingest.runner\nxling.ingest.runner._plan()", "xling.ingest.ray_engine", 1),
        ("from xling.ingest._private import x", "xling.analysis.queries", 1),
        ("from .runner import _Plan", "xling.ingest.ray_engine", 1),
        ("from xling import __version__", "xling.cli", 0),
        ("def _own():\n    pass\n_own()", "xling.ingest.runner", 0),
        ("import torch\ntorch._C", "xling.ingest.hooks", 0),  # third party: not ours to police
    ],
)
def test_the_private_check_catches_private_names(code, module, expected):
    assert len(check(code, module)[1]) == expected


def test_relative_imports_resolve_like_python():
    pkg = Source(ROOT / "analysis" / "__init__.py", "xling.analysis", True)
    mod = Source(ROOT / "analysis" / "queries.py", "xling.analysis.queries", False)
    assert resolve(pkg, "queries", 1) == "xling.analysis.queries"
    assert resolve(mod, "defaults", 1) == "xling.analysis.defaults"
    assert resolve(mod, "warehouse", 2) == "xling.warehouse"


def test_no_module_of_analysis_is_named_like_one_of_its_functions():
    """A submodule imported after the package (lazily, inside a function) replaces the
    package's attribute of the same name: `analysis.similarity` would become a module."""
    from xling import analysis

    modules = {p.stem for p in (ROOT / "analysis").glob("*.py")}
    assert not modules & set(analysis.__all__)
