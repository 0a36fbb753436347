"""Rules over the whole code base, checked by parsing it (no imports, nothing run).

- Every Hugging Face load (`from_pretrained`, `pipeline(`) in xling and bench/ says
  `trust_remote_code` explicitly: left unset, transformers prompts "Do you wish to run the
  custom code? [y/N]" for a model with its own code, and `y` runs it.
- bench/ imports nothing from tests/ (the tiny model builders live in `xling.ingest.tiny`).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Package folders (see pyproject's package-dir) and the benchmarks; tests load only the
# tiny model they build themselves.
PRODUCT = ["xling", "warehouse", "ingest", "analysis", "finetune", "pipeline", "sql", "bench"]
# Loaders with no remote-code path at all: sae-lens reads tensors and a JSON config, peft an
# adapter config and tensors. Neither takes a trust_remote_code argument.
NO_REMOTE_CODE_PACKAGES = ("sae_lens", "peft")


def _files(folders: list[str]) -> list[Path]:
    return sorted(p for f in folders if (ROOT / f).is_dir() for p in (ROOT / f).rglob("*.py"))


def _imported_from(tree: ast.AST, packages: tuple[str, ...]) -> set[str]:
    """Names bound by `from <package>... import name` anywhere in the module."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in packages:
            names.update(a.asname or a.name for a in node.names)
    return names


def _dict_keys(func: ast.AST) -> dict[str, set[str]]:
    """{name: constant keys} of `name = {...}` dict literals inside `func`."""
    out: dict[str, set[str]] = {}
    for node in ast.walk(func):
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Dict)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
        ):
            keys = {k.value for k in node.value.keys if isinstance(k, ast.Constant)}
            out[node.targets[0].id] = keys
    return out


def hf_loads_without_trust_flag(path: Path, root: Path = ROOT) -> list[str]:
    """`file:line` of each from_pretrained/pipeline call that does not pass
    trust_remote_code, neither as a keyword nor in a `**kwargs` dict literal of its function."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    exempt = _imported_from(tree, NO_REMOTE_CODE_PACKAGES)
    functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    bad: list[str] = []
    seen: set[int] = set()
    # Innermost functions first (ast.walk lists outer ones first), so a call is judged by
    # the dict literals of the function it sits in.
    for scope in [*reversed(functions), tree]:
        kwargs_dicts = _dict_keys(scope)
        for node in ast.walk(scope):
            if not isinstance(node, ast.Call) or id(node) in seen:
                continue
            func = node.func
            is_load = (isinstance(func, ast.Attribute) and func.attr == "from_pretrained") or (
                isinstance(func, ast.Name) and func.id == "pipeline"
            )
            if not is_load:
                continue
            seen.add(id(node))
            receiver = func.value if isinstance(func, ast.Attribute) else None
            if isinstance(receiver, ast.Name) and receiver.id in exempt:
                continue
            explicit = any(k.arg == "trust_remote_code" for k in node.keywords) or any(
                k.arg is None
                and isinstance(k.value, ast.Name)
                and "trust_remote_code" in kwargs_dicts.get(k.value.id, set())
                for k in node.keywords
            )
            if not explicit:
                bad.append(f"{path.relative_to(root)}:{node.lineno}")
    return sorted(bad)


def test_every_hugging_face_load_says_trust_remote_code():
    bad = [site for path in _files(PRODUCT) for site in hf_loads_without_trust_flag(path)]
    assert bad == [], f"pass trust_remote_code explicitly at {', '.join(bad)}"


def test_the_check_flags_loads_without_the_flag(tmp_path):
    """The rule itself: what it must flag, and what it must accept."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from transformers import AutoModel, pipeline\n"
        "from sae_lens import SAE\n"
        "def f(name, trust):\n"
        "    AutoModel.from_pretrained(name)\n"
        "    AutoModel.from_pretrained(name, trust_remote_code=False)\n"
        "    kwargs = {'revision': None, 'trust_remote_code': trust}\n"
        "    AutoModel.from_pretrained(name, **kwargs)\n"
        "    other = {'revision': None}\n"
        "    AutoModel.from_pretrained(name, **other)\n"
        "    pipeline('translation', model=name)\n"
        "    SAE.from_pretrained('release', 'id')\n",
        encoding="utf-8",
    )
    got = hf_loads_without_trust_flag(sample, tmp_path)
    assert got == ["sample.py:10", "sample.py:4", "sample.py:9"]


def _imports(tree: ast.AST) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((node.lineno, a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            out.append((node.lineno, node.module or ""))
    return out


def test_bench_imports_nothing_from_tests():
    for path in _files(["bench"]):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for line, module in _imports(tree):
            top = module.split(".")[0]
            assert top not in {"tests", "tinymodel", "conftest"}, f"{path.name}:{line} {module}"
        # sys.path.insert(0, ".../tests") is how bench used to reach tests/; no string may
        # name that folder.
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                assert node.value.strip("/") != "tests", f"{path.name}:{node.lineno}"
