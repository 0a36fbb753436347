"""Safety: `xling sql` cannot change data without --write, user values reach SQL only as
parameters, model files load as safetensors unless the user allows pickles, remote code never
runs by default, and every torch.load in the code refuses arbitrary pickles."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import json
import pickle
import pkgutil
import shutil
from pathlib import Path

import pytest
from test_bad_input import (  # noqa: F401 (an autouse fixture)
    SQL_INJECTION,
    _command_built_once,
    assert_one_error_line,
    snapshot,
)

from xling.warehouse import Warehouse

ROOT = Path(__file__).resolve().parents[1]
SOURCE_DIRS = ("warehouse", "ingest", "analysis", "finetune", "xling", "sql")


@pytest.fixture(scope="module")
def corpus_db(tmp_path_factory) -> Path:
    """A closed warehouse holding 3 aligned CLDR groups in ten languages."""
    from tinymodel import cldr_phrases, insert_phrases

    db = tmp_path_factory.mktemp("safety") / "w.duckdb"
    with Warehouse(db) as wh:
        insert_phrases(wh, cldr_phrases(3))
    return db


@pytest.fixture
def db(corpus_db, tmp_path) -> Path:
    out = tmp_path / "w.duckdb"
    shutil.copy(corpus_db, out)
    return out


def _files(tmp_path: Path) -> list[str]:
    return sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))


# -- xling sql is read-only without --write -------------------------------------------------

REFUSED = [
    "DROP TABLE phrases",
    "DELETE FROM phrases",
    "UPDATE phrases SET text = 'x'",
    "INSERT INTO languages VALUES ('xx', 'X', 'low')",
    "TRUNCATE phrases",
    "CREATE TABLE t (a INTEGER)",
    "CREATE TEMP TABLE t AS SELECT 1",
    "CREATE VIEW v AS SELECT 1",
    "CREATE MACRO m(x) AS x",
    "CREATE SEQUENCE s",
    "ALTER TABLE phrases ADD COLUMN x INTEGER",
    "ATTACH '{tmp}/other.duckdb' AS other",
    "DETACH w",
    "USE memory",
    "COPY phrases TO '{tmp}/out.csv'",
    "COPY (SELECT * FROM phrases) TO '{tmp}/out.parquet' (FORMAT parquet)",
    "COPY phrases FROM '{tmp}/in.csv'",
    "EXPORT DATABASE '{tmp}/dump'",
    "IMPORT DATABASE '{tmp}/dump'",
    "PRAGMA enable_external_access",
    "SET enable_external_access = true",
    "SET lock_configuration = false",
    "RESET enable_external_access",
    "SET VARIABLE v = 1",
    "CALL pragma_version()",
    "LOAD httpfs",
    "INSTALL httpfs",
    "CHECKPOINT",
    "VACUUM",
    "ANALYZE",
    "BEGIN TRANSACTION",
    "PREPARE p AS DELETE FROM phrases",
    "CREATE SECRET s (TYPE s3, KEY_ID 'k', SECRET 'v')",
    "UPDATE languages SET name = 'x' RETURNING *",
    # several statements, and statements hidden behind comments
    "SELECT 1; DROP TABLE phrases",
    "SELECT 1;; DELETE FROM phrases",
    "SELECT 1; -- harmless\nDROP TABLE phrases",
    "-- a comment\nDELETE FROM phrases",
    "/* SELECT 1; */ DROP TABLE phrases",
    "SELECT 1 /* ; */; DELETE FROM phrases",
    "SELECT 1 -- ; \n; DELETE FROM phrases",
    # data-changing statements inside read-looking ones
    "WITH x AS (SELECT 1) INSERT INTO languages SELECT 'xx', 'X', 'low'",
    "WITH d AS (DELETE FROM phrases RETURNING *) SELECT * FROM d",
    "EXPLAIN ANALYZE DELETE FROM phrases",
    "EXPLAIN DELETE FROM phrases",
    "SELECT nextval('run_id_seq')",
    "SELECT * FROM query('DROP TABLE phrases')",
    # reaching outside the warehouse
    "SELECT * FROM read_csv('{tmp}/in.csv')",
    "SELECT * FROM '{tmp}/in.csv'",
    "SELECT * FROM read_text('/etc/hostname')",
    "SELECT * FROM glob('/etc/*')",
    "SELECT * FROM read_parquet('https://example.com/x.parquet')",
    "SELECT * FROM duckdb_secrets()",
]

ALLOWED = [
    ("SELECT count(*) AS n FROM phrases; --", "30"),
    ("SELECT count(*) AS n FROM phrases /* ; DROP TABLE phrases */", "30"),
    ("FROM languages SELECT count(*) AS n", "10"),
    ("WITH x AS (SELECT count(*) AS n FROM phrases) SELECT n FROM x", "30"),
    ("SELECT 'DROP TABLE phrases; --' AS n", "DROP TABLE phrases; --"),
    ("DESCRIBE phrases", "group_id"),
    ("SUMMARIZE languages", "resource_group"),
    ("SHOW TABLES", "phrases"),
    ("EXPLAIN SELECT * FROM phrases", "physical_plan"),
]


@pytest.mark.parametrize("stmt", REFUSED)
def test_sql_without_write_cannot_change_data_or_reach_out(stmt, db, tmp_path, cli):
    (tmp_path / "in.csv").write_text("phrase_id,group_id,lang,text\n99,g,en,x\n")
    before = db.read_bytes()
    files = _files(tmp_path)
    # "--" ends the options: a statement may itself start with "--" (an SQL comment).
    res = cli("sql", "--db", db, "--", stmt.format(tmp=tmp_path))
    assert_one_error_line(res)
    assert db.read_bytes() == before
    assert _files(tmp_path) == files  # no export, dump, WAL or attached file appeared


@pytest.mark.parametrize(("stmt", "expect"), ALLOWED)
def test_read_only_sql_still_answers(stmt, expect, db, cli):
    before = db.read_bytes()
    res = cli("sql", stmt, "--db", db, "--format", "csv")
    assert res.exit_code == 0, res.stderr
    assert expect in res.stdout
    assert db.read_bytes() == before


def test_write_is_the_only_way_to_change_data(db, cli):
    res = cli("sql", "DELETE FROM phrases WHERE lang = 'hi'", "--db", db, "--write")
    assert res.exit_code == 0, res.stderr
    with Warehouse(db, read_only=True) as wh:
        assert wh.scalar("SELECT count(*) FROM phrases") == 27


# -- user values reach SQL only as parameters ------------------------------------------------

INJECTIONS = [
    SQL_INJECTION,
    "x' OR '1'='1",
    'x"; DROP TABLE phrases; --',
    "1; DELETE FROM phrases",
    "') UNION SELECT * FROM runs --",
]

# Commands taking a free-text value that code might be tempted to format into SQL.
VALUE_COMMANDS = [
    ["corpus", "cldr", "--langs", "{v}"],
    ["corpus", "translate", "--to", "{v}"],
    ["corpus", "load", "{tmp}/ok.csv", "--group-col", "{v}"],
    ["corpus", "load", "{tmp}/ok.csv", "--lang-col", "{v}", "--layout", "long"],
    ["corpus", "load", "{tmp}/wide.csv", "--text-pattern", "{v}{{lang}}"],
    ["corpus", "languages", "add", "{v}", "Name", "--group", "low"],
    ["corpus", "languages", "add", "de", "German", "--group", "{v}"],
    ["ingest", "--model", "{tmp}/nothere", "--langs", "{v}"],
    ["query", "lape", "--lang", "{v}"],
    ["query", "features", "--lang", "{v}", "--layer", "0"],
    ["bench", "list", "--model", "{v}"],
    ["bench", "list", "--task", "{v}"],
    ["bench", "list", "--metric", "{v}"],
    ["bench", "import", "{tmp}/scores.csv", "--model", "{v}"],
    ["steer", "show", "{v}"],
    ["steer", "delete", "{v}"],
    ["sql", "SELECT * FROM phrases WHERE lang = '{v}'"],
]


@pytest.mark.parametrize("value", INJECTIONS)
@pytest.mark.parametrize("args", VALUE_COMMANDS, ids=lambda a: "-".join(a[:2]))
def test_injected_values_are_data_not_sql(args, value, db, tmp_path, cli):
    (tmp_path / "ok.csv").write_text("group_id,lang,text\nnew,en,hello\n")
    (tmp_path / "wide.csv").write_text("group_id,en\nnew,hello\n")
    (tmp_path / "scores.csv").write_text("task,lang,metric,value\narc,en,acc,0.5\n")
    before = snapshot(db)
    res = cli(*[a.format(v=value, tmp=tmp_path) for a in args], "--db", db)
    assert isinstance(res.exception, SystemExit) or res.exception is None, res.exception
    if res.exit_code == 1:
        assert_one_error_line(res)
    else:
        assert res.exit_code in (0, 2), res.stderr  # an empty result or a usage error
    assert snapshot(db) == before


@pytest.mark.parametrize("value", INJECTIONS)
def test_injected_text_is_stored_verbatim(value, db, tmp_path, cli):
    """Values that are data (group ids, texts, sources, language names) arrive unchanged."""
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps({"group_id": value, "lang": "en", "text": value}) + "\n")
    assert cli("corpus", "load", path, "--source", value, "--db", db).exit_code == 0
    assert (
        cli("corpus", "languages", "add", "de", value, "--group", "low", "--db", db).exit_code == 0
    )
    with Warehouse(db, read_only=True) as wh:
        assert wh.con.execute(
            "SELECT text, source FROM phrases WHERE group_id = ?", [value]
        ).fetchall() == [(value, value)]
        assert wh.scalar("SELECT name FROM languages WHERE lang = 'de'") == value
        assert wh.scalar("SELECT count(*) FROM phrases") == 31


def test_cli_holds_no_sql():
    """Commands hand user values to library functions; SQL text lives in the library."""
    import re

    sql = re.compile(r"\b(SELECT|INSERT INTO|DELETE FROM|UPDATE \w+ SET|DROP TABLE)\b")
    offenders = [
        f"{path.name}:{n}"
        for path in sorted((ROOT / "xling" / "cli").glob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if sql.search(line) and "help=" not in line and not line.strip().startswith("#")
    ]
    assert offenders == []


# -- model files: safetensors unless asked, never remote code --------------------------------


class _Marker:
    """Unpickling this runs `Path(target).touch()`: what a malicious checkpoint does."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (Path.touch, (Path(self.target),))


def _pickled_model(src: Path, dst: Path) -> Path:
    """The tiny model with its weights as pytorch_model.bin (a real pickle, no safetensors)."""
    import torch
    from safetensors.torch import load_file

    shutil.copytree(src, dst)
    torch.save(load_file(dst / "model.safetensors"), dst / "pytorch_model.bin")
    (dst / "model.safetensors").unlink()
    return dst


def _evil_pickle(path: Path, marker: Path) -> None:
    with open(path, "wb") as f:
        pickle.dump({"model.embed_tokens.weight": _Marker(marker)}, f)


def test_pickle_weights_need_allow_pickle(tiny_model_dir, tiny_sae_dirs, tmp_path, db, cli):
    model = _pickled_model(tiny_model_dir, tmp_path / "bin-model")
    saes = tiny_sae_dirs[0].parent
    before = snapshot(db)
    res = cli("ingest", "--model", model, "--sae-dir", saes, "--limit", "4", "--db", db)
    assert_one_error_line(res, "--allow-pickle")
    assert snapshot(db) == before
    res = cli(
        "ingest", "--model", model, "--sae-dir", saes, "--limit", "4", "--allow-pickle", "--db", db
    )
    assert res.exit_code == 0, res.stderr
    with Warehouse(db, read_only=True) as wh:
        assert wh.scalar("SELECT status FROM runs") == "finished"
        assert wh.scalar("SELECT json_extract(config, '$.allow_pickle') FROM runs") == "true"


@pytest.mark.parametrize(
    "allow",
    [
        False,
        True,
    ],
    ids=["default", "allow-pickle"],
)
def test_a_malicious_pickle_never_runs(allow, tiny_model_dir, tmp_path):
    """Even with --allow-pickle, weights are unpickled with torch's weights_only loader."""
    from xling.ingest.models import load_model
    from xling.warehouse.errors import XlingError

    model = _pickled_model(tiny_model_dir, tmp_path / "evil")
    marker = tmp_path / "pwned"
    _evil_pickle(model / "pytorch_model.bin", marker)
    try:
        with pytest.raises(XlingError):
            load_model(str(model), allow_pickle=allow)
    finally:
        assert not marker.exists()


def test_a_malicious_lora_adapter_never_runs(tiny_model_dir, tmp_path):
    """peft adapters saved as pickles (.bin) are read with weights_only too."""
    from xling.finetune.apply import apply_adapter
    from xling.ingest.models import load_model
    from xling.warehouse.errors import XlingError

    adapter = tmp_path / "lora"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(
        json.dumps(
            {
                "peft_type": "LORA",
                "task_type": "CAUSAL_LM",
                "r": 2,
                "lora_alpha": 4,
                "target_modules": ["q_proj"],
                "base_model_name_or_path": str(tiny_model_dir),
            }
        )
    )
    marker = tmp_path / "pwned"
    _evil_pickle(adapter / "adapter_model.bin", marker)
    lm = load_model(str(tiny_model_dir))
    try:
        with pytest.raises(XlingError):
            apply_adapter(lm, adapter)
    finally:
        assert not marker.exists()


def _remote_code_model(src: Path, dst: Path, marker: Path) -> Path:
    """A model directory whose config asks for its own Python code, which touches `marker`."""
    shutil.copytree(src, dst)
    code = f"from pathlib import Path\nPath({str(marker)!r}).touch()\n"
    config = json.loads((dst / "config.json").read_text())
    config["model_type"] = "xling_evil"
    config["auto_map"] = {
        "AutoConfig": "evil.EvilConfig",
        "AutoModelForCausalLM": "evil.EvilModel",
        "AutoModelForSeq2SeqLM": "evil.EvilModel",
        "AutoTokenizer": ["evil.EvilTokenizer", None],
    }
    (dst / "config.json").write_text(json.dumps(config))
    tok = json.loads((dst / "tokenizer_config.json").read_text())
    tok["auto_map"] = {"AutoTokenizer": ["evil.EvilTokenizer", None]}
    (dst / "tokenizer_config.json").write_text(json.dumps(tok))
    (dst / "evil.py").write_text(code)
    return dst


def test_remote_code_never_runs_by_default(tiny_model_dir, tiny_sae_dirs, tmp_path, db, cli):
    marker = tmp_path / "pwned"
    model = _remote_code_model(tiny_model_dir, tmp_path / "remote", marker)
    before = snapshot(db)
    res = cli("ingest", "--model", model, "--sae-dir", tiny_sae_dirs[0].parent, "--db", db)
    assert_one_error_line(res, "cannot load model")
    assert snapshot(db) == before
    template = str(tmp_path / "remote-{lang}")
    shutil.copytree(model, tmp_path / "remote-zh")
    with Warehouse(db) as wh:  # a group holding English only, so zh has work to do
        wh.con.execute(
            "INSERT INTO phrases VALUES (500, 'en-only', 'en', 'hello', NULL, NULL, NULL)"
        )
    before = snapshot(db)
    res = cli("corpus", "translate", "--to", "zh", "--model-template", template, "--db", db)
    assert_one_error_line(res, "translation model")
    assert snapshot(db) == before
    assert not marker.exists()


def _cli_params():
    from typer.main import get_command

    from xling.cli import app

    def walk(cmd, path):
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                yield from walk(sub, [*path, name])
        else:
            for p in cmd.params:
                yield " ".join(path), p

    return list(walk(get_command(app), []))


def test_risky_loading_is_opt_in_on_every_command():
    """Every option that would unpickle files or run a repository's code defaults to off."""
    risky = [
        (cmd, p) for cmd, p in _cli_params() if p.name in ("trust_remote_code", "allow_pickle")
    ]
    assert {cmd for cmd, _ in risky} >= {"ingest", "corpus translate"}
    for cmd, p in risky:
        assert p.default is False and p.is_flag, (cmd, p.name)


def _config_classes():
    names = [
        m.name
        for pkg in ("xling.warehouse", "xling.ingest", "xling.analysis", "xling.finetune")
        for m in pkgutil.walk_packages(importlib.import_module(pkg).__path__, f"{pkg}.")
    ]
    for name in names:
        module = importlib.import_module(name)
        for obj in vars(module).values():
            if dataclasses.is_dataclass(obj) and isinstance(obj, type) and obj.__module__ == name:
                yield obj


def test_risky_loading_is_off_in_every_job_config():
    found = []
    for cls in _config_classes():
        for f in dataclasses.fields(cls):
            if f.name in ("trust_remote_code", "allow_pickle"):
                found.append(cls.__name__)
                assert f.default is False, (cls.__name__, f.name)
    assert {"IngestConfig", "TranslateConfig"} <= set(found)


UNPICKLERS = {
    "pickle.load",
    "pickle.loads",
    "dill.load",
    "joblib.load",
    "pd.read_pickle",
    "pandas.read_pickle",
    "torch.jit.load",
    "eval",
    "exec",
}


def unsafe_calls(source: str) -> list[str]:
    """'line: call' for each torch.load without weights_only=True, each unpickler or eval,
    and each literal allow_pickle=True / trust_remote_code=True in `source`."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        func = ast.unparse(node.func)
        kw = {k.arg: k.value for k in node.keywords}
        opted_in = [
            name
            for name in ("weights_only", "allow_pickle", "trust_remote_code")
            if isinstance(kw.get(name), ast.Constant) and kw[name].value is True
        ]
        if (func == "torch.load" and "weights_only" not in opted_in) or func in UNPICKLERS:
            out.append(f"{node.lineno}: {func}")
        out += [
            f"{node.lineno}: {func}({name}=True)" for name in opted_in if name != "weights_only"
        ]
    return out


def test_no_unsafe_deserialisation_in_the_source():
    problems = [
        f"{path.relative_to(ROOT)}:{found}"
        for top in SOURCE_DIRS
        for path in sorted((ROOT / top).rglob("*.py"))
        for found in unsafe_calls(path.read_text())
    ]
    assert problems == []


def test_the_source_scan_flags_what_it_looks_for():
    bad = (
        "import torch, pickle\n"
        "torch.load('a')\n"
        "torch.load('b', weights_only=False)\n"
        "torch.load('c', weights_only=True)\n"
        "pickle.loads(b'')\n"
        "f(trust_remote_code=True, allow_pickle=False)\n"
    )
    assert unsafe_calls(bad) == [
        "2: torch.load",
        "3: torch.load",
        "5: pickle.loads",
        "6: f(trust_remote_code=True)",
    ]
