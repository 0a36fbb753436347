"""The built wheel ships every module, every .sql file and the lm-eval task files, and works
once installed: its migrations build a warehouse and its task folder is found.

The wheel is built offline from a copy of the sources (`pip wheel --no-build-isolation`
with the setuptools of the dev extra), so the working tree gets no build/ folder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# source folder -> where it lands in the wheel (pyproject's package-dir)
INSTALLED_AS = {
    "xling": "xling",
    "warehouse": "xling/warehouse",
    "ingest": "xling/ingest",
    "analysis": "xling/analysis",
    "finetune": "xling/finetune",
    "sql": "xling/sql",
}
PIP = [sys.executable, "-m", "pip", "--no-input", "--disable-pip-version-check"]
BUILD_NOISE = ("__pycache__", "*.pyc", "*.egg-info", "build", "dist")


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, str]:
    """(the wheel, what the build printed)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for folder in INSTALLED_AS:
        shutil.copytree(ROOT / folder, src / folder, ignore=shutil.ignore_patterns(*BUILD_NOISE))
    out = tmp / "dist"
    result = subprocess.run(
        [*PIP, "wheel", "--no-deps", "--no-build-isolation", "-v", "-w", str(out), str(src)],
        capture_output=True,
        text=True,
        env={**os.environ, "PIP_NO_INDEX": "1"},  # offline: nothing to fetch
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (wheel,) = out.glob("xling-*.whl")
    return wheel, result.stdout + result.stderr


def shipped(folder: str, pattern: str) -> set[str]:
    """The wheel paths that `pattern` files under `folder` of the sources must have."""
    base = INSTALLED_AS[folder.split("/")[0]]
    return {
        f"{base}/{p.relative_to(ROOT / folder.split('/')[0]).as_posix()}"
        for p in (ROOT / folder).rglob(pattern)
        if "__pycache__" not in p.parts
    }


def test_the_wheel_holds_every_sql_file_task_file_and_module(built):
    wheel, _ = built
    names = set(zipfile.ZipFile(wheel).namelist())
    sql = shipped("sql", "*.sql")
    assert {n for n in sql if "/migrations/" in n} and {n for n in sql if "/views/" in n}
    assert sql <= names, sorted(sql - names)
    tasks = {p for p in shipped("analysis/tasks", "*")}
    tasks = {n for n in tasks if not n.endswith("/xling_mc")}  # the folder itself
    assert "xling/analysis/tasks/xling_mc/_xling_mc_yaml" in tasks
    assert tasks <= names, sorted(tasks - names)
    modules = set().union(*(shipped(folder, "*.py") for folder in INSTALLED_AS))
    assert "xling/pipeline/demo.py" in modules and "xling/cli/__init__.py" in modules
    assert modules <= names, sorted(modules - names)
    assert "xling/py.typed" in names


def test_the_build_declares_its_data_packages(built):
    """setuptools warns when a data folder ships only as an undeclared package."""
    _, log = built
    assert "absent from the `packages` configuration" not in log
    assert "SetuptoolsDeprecationWarning" not in log


def test_the_installed_wheel_builds_a_warehouse(built, tmp_path):
    wheel, _ = built
    site = tmp_path / "site"
    subprocess.run(
        [*PIP, "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
        check=True,
        capture_output=True,
        env={**os.environ, "PIP_NO_INDEX": "1"},  # offline: nothing to fetch
    )
    probe = """
import json, sys
from pathlib import Path
import xling, xling.cli, xling.pipeline.demo
from xling.analysis.lmeval_run import local_tasks_dir
from xling.warehouse import Warehouse

site = Path(sys.argv[1]).resolve()
assert Path(xling.__file__).resolve().is_relative_to(site), xling.__file__
tasks = Path(local_tasks_dir()).resolve()
assert tasks.is_relative_to(site), tasks
with Warehouse(Path(sys.argv[2])) as wh:
    applied = wh.sql("SELECT * FROM _xling_migrations").iloc[:, 0].astype(str).tolist()
    views = wh.sql(
        "SELECT view_name AS name FROM duckdb_views() WHERE NOT internal UNION "
        "SELECT function_name FROM duckdb_functions() WHERE function_type = 'table_macro'"
    )["name"]
print(json.dumps({"applied": applied, "views": sorted(views), "tasks": str(tasks)}))
"""
    result = subprocess.run(
        [sys.executable, "-c", probe, str(site), str(tmp_path / "w.duckdb")],
        capture_output=True,
        text=True,
        cwd=tmp_path,  # not the repository: nothing found by accident from the sources
        env={**os.environ, "PYTHONPATH": str(site)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    got = json.loads(result.stdout)
    migrations = sorted(p.stem for p in (ROOT / "sql" / "migrations").glob("*.sql"))
    assert len(got["applied"]) == len(migrations)
    assert all(any(m in a for a in got["applied"]) for m in migrations)
    # each file of sql/views/ creates the view or table macro it is named after
    assert {p.stem for p in (ROOT / "sql" / "views").glob("*.sql")} <= set(got["views"])
    assert (Path(got["tasks"]) / "xling_mc" / "xling_mc_hi.jsonl").is_file()
