"""Bad input for every command that reads files or user values: one `Error:` line on stderr,
a non-zero exit, no traceback, and every table of the warehouse unchanged, row for row.

Each case runs the CLI in-process against a copy of one populated warehouse (CLDR corpus,
three ingest runs of the tiny model, benchmark scores), snapshotted before and after.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from xling.warehouse import Warehouse

# -- the warehouse every case starts from ---------------------------------------------------

# Bookkeeping that a writable open may refresh (the installed views' hash) is not data.
_NOT_DATA = {"_xling_meta"}


def snapshot(db: Path) -> dict[str, tuple[int, int]]:
    """{table: (rows, order-free checksum of every row)} over all base tables, plus each
    sequence's last value.

    Opened read-only with DuckDB itself, so taking a snapshot cannot change what it measures."""
    with duckdb.connect(str(db), read_only=True) as con:
        tables = [
            r[0]
            for r in con.execute(
                "SELECT table_name FROM duckdb_tables() WHERE NOT temporary ORDER BY 1"
            ).fetchall()
            if r[0] not in _NOT_DATA
        ]
        out = {}
        for t in tables:
            n, h = con.execute(f'SELECT count(*), sum(hash(t)::HUGEINT) FROM "{t}" t').fetchone()
            out[t] = (int(n), int(h or 0))
        for name, value in con.execute(
            "SELECT sequence_name, last_value FROM duckdb_sequences()"
        ).fetchall():
            out[f"sequence {name}"] = (int(value or 0), 0)
    return out


def _ingest(wh, lm, sae_parent, progress=None, **kw) -> int:
    from xling.ingest.runner import IngestConfig, run_ingest

    config = IngestConfig(model=lm.source, sae_dir=str(sae_parent), **kw)
    return run_ingest(wh, config, progress, model=lm)


class _Stop(Exception):
    pass


def _stop_after_first_chunk(p) -> None:
    if p.chunks >= 1:
        raise _Stop


# Longer than any filesystem's name limit (255 bytes on ext4, xfs, tmpfs, btrfs).
LONG_NAME = "/tmp/" + "n" * 300

# A group of the CLDR corpus (every language present) and one holding English only.
CLDR_GROUP = "lang:aa"
EN_ONLY_GROUP = "extra:en-only"


@pytest.fixture(scope="session")
def template_db(tmp_path_factory, tiny_lm, tiny_sae_dirs) -> Path:
    """A closed warehouse file: 12 CLDR groups in ten languages plus one English-only group;
    run 1 (zh and hi only: no English), run 2 (all languages, residuals and neurons, the
    latest finished run), run 3 (failed after its first chunk); arc scores for model 1."""
    from xling.analysis.benchmarks import import_files
    from xling.ingest.tiny import cldr_phrases, insert_phrases

    db = tmp_path_factory.mktemp("template") / "w.duckdb"
    sae_parent = tiny_sae_dirs[0].parent
    with Warehouse(db) as wh:
        insert_phrases(wh, cldr_phrases(12))
        _ingest(wh, tiny_lm, sae_parent, langs=["zh", "hi"])
        _ingest(wh, tiny_lm, sae_parent, residuals=True, neurons=True)
        with pytest.raises(_Stop):
            _ingest(wh, tiny_lm, sae_parent, _stop_after_first_chunk, batch_size=4, chunk_rows=1)
        assert wh.scalar("SELECT status FROM runs WHERE run_id = 3") == "failed"
        wh.con.execute(
            "INSERT INTO phrases VALUES (1000, ?, 'en', 'the red house', 'test', NULL, NULL)",
            [EN_ONLY_GROUP],
        )
        scores = db.parent / "scores.csv"
        scores.write_text(
            "model,task,lang,metric,value\n"
            + "".join(f"1,arc,{lang},acc,0.{i + 3}\n" for i, lang in enumerate(("en", "zh", "hi")))
        )
        import_files(wh, [scores])
    return db


@pytest.fixture(scope="module", autouse=True)
def _command_built_once():
    """The `cli` fixture rebuilds typer's command tree on every call (~0.15 s, most of a
    refused command's time); this module's ~200 invocations share one build."""
    import typer.testing
    from typer.main import get_command

    from xling.cli import app

    command = get_command(app)
    build = typer.testing._get_command
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(typer.testing, "_get_command", lambda a: command if a is app else build(a))
        yield


@pytest.fixture(scope="session")
def template_snapshot(template_db) -> dict[str, tuple[int, int]]:
    return snapshot(template_db)


@pytest.fixture
def work(template_db, tmp_path) -> Path:
    """A fresh copy of the template warehouse."""
    db = tmp_path / "w.duckdb"
    shutil.copy(template_db, db)
    return db


def assert_unchanged(db: Path, template_db: Path, template_snapshot: dict) -> None:
    """`db`, a copy of the template, holds the template's rows: its bytes are the template's,
    or (a writable open may rewrite the file) every table's rows are."""
    if db.read_bytes() == template_db.read_bytes() and not db.with_suffix(".duckdb.wal").exists():
        return
    assert snapshot(db) == template_snapshot


def test_template_holds_what_the_cases_assume(work):
    with Warehouse(work, read_only=True) as wh:
        runs = wh.sql("SELECT run_id, status FROM runs ORDER BY run_id")
        assert runs.status.tolist() == ["finished", "finished", "failed"]
        assert wh.scalar("SELECT count(*) FROM residuals WHERE run_id = 2") == 120 * 4
        assert wh.scalar("SELECT count(*) FROM phrases WHERE group_id = ?", [CLDR_GROUP]) == 10
        assert wh.scalar("SELECT count(*) FROM benchmarks") == 3


# -- input files --------------------------------------------------------------------------


def _csv(*rows: str, header: str = "group_id,lang,text") -> bytes:
    return ("\n".join([header, *rows]) + "\n").encode()


def _jsonl(*records) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def _lmeval(change: dict) -> bytes:
    """An lm-eval results file for model 1 with one Hindi ARC score, sections replaced."""
    doc = {"results": {"arc_hi": {"acc,none": 0.5}}, "config": {"model_args": "pretrained=1"}}
    return json.dumps(doc | change).encode()


def _np(**change) -> dict:
    """One Neuronpedia activation record, with fields changed or (value ...) removed."""
    rec = {
        "modelId": "gemma-2-2b",
        "layer": "20-gemmascope-res-16k",
        "index": 7,
        "tokens": ["<bos>", "▁the", "▁red", "▁house"],
        "values": [0.0, 0.5, 3.0, 0.1],
        "maxValue": 3.0,
        "maxValueTokenIndex": 2,
    }
    rec.update(change)
    return {k: v for k, v in rec.items() if v is not ...}


def _np_line(text: str) -> bytes:
    """A record line with raw JSON tokens (NaN, Infinity) that json.dumps would not write."""
    return (text + "\n").encode()


def _parquet(table: pa.Table) -> Callable[[Path, dict], None]:
    def write(path: Path, _env: dict) -> None:
        pq.write_table(table, path)

    return write


def _gzip_truncated(path: Path, _env: dict) -> None:
    path.write_bytes(gzip.compress(_csv(*[f"g{i},en,text {i}" for i in range(2000)]))[:300])


def _gzip_corrupt(path: Path, _env: dict) -> None:
    # A valid gzip header followed by a damaged deflate stream (zlib, not gzip, complains).
    good = gzip.compress(_csv(*[f"g{i},en,text {i}" for i in range(2000)]))
    path.write_bytes(good[:40] + bytes(b ^ 0x5A for b in good[40:200]) + good[200:])


def _huge_cell(path: Path, _env: dict) -> None:
    path.write_bytes(_csv("g1,en," + "a" * 10_000_000))


def _huge_jsonl(path: Path, _env: dict) -> None:
    path.write_bytes(_jsonl({"group_id": "g1", "lang": "en", "text": "ab " * 3_400_000}))


def _narrow_saes(path: Path, _env: dict) -> None:
    from xling.ingest.tiny import build_tiny_saes

    build_tiny_saes(path, layers=[0], d_in=32)


SQL_INJECTION = "en'; DROP TABLE phrases; --"
ODD_LANGS = ["EN", "e n", SQL_INJECTION, "zz", ""]


@dataclass
class Case:
    """One command with bad input. `args` may use {db} {tmp} {model} {saes}; `files` are
    written under {tmp} first (bytes, or a function of the path and the placeholders)."""

    id: str
    args: list[str]
    files: dict[str, bytes | Callable[[Path, dict], None]] = field(default_factory=dict)
    match: str | None = None  # regex the error line must contain


def _load(name: str, content, *extra: str, match: str | None = None) -> Case:
    return Case(
        f"corpus-load-{name}", ["corpus", "load", f"{{tmp}}/{name}", *extra], {name: content}, match
    )


def _neuronpedia(name: str, content, *extra: str, match: str | None = None) -> Case:
    return Case(
        f"neuronpedia-{name}",
        ["corpus", "neuronpedia", f"{{tmp}}/{name}", *extra],
        {name: content},
        match,
    )


def _bench(name: str, content, *extra: str, match: str | None = None) -> Case:
    return Case(
        f"bench-import-{name}",
        ["bench", "import", f"{{tmp}}/{name}", *extra],
        {name: content},
        match,
    )


def _ingest_case(name: str, *extra: str, match: str | None = None) -> Case:
    return Case(
        f"ingest-{name}",
        ["ingest", "--model", "{model}", "--sae-dir", "{saes}", *extra],
        match=match,
    )


CASES: list[Case] = [
    # corpus load: emptiness
    _load("empty.csv", b"", match="empty file"),
    _load("header-only.csv", _csv(), match="no phrases"),
    _load("blank-text.csv", _csv("g1,en,   "), match="empty text"),
    _load("empty-text.csv", _csv('g1,en,""'), match="empty text"),
    _load("no-group.csv", _csv(",en,hello"), match="empty group_id"),
    _load("whitespace-only.csv", b"   \n\n  \n", match="empty|missing column"),
    _load("zero-width.csv", _csv("g1,en,\u200b\u200d\ufeff").decode().encode(), match="empty text"),
    _load("bidi-only.csv", _csv("g1,en,\u202e\u2066\u200f ").decode().encode(), match="empty text"),
    # corpus load: what is not a regular file, and names the filesystem refuses
    Case("corpus-load-dev-zero", ["corpus", "load", "/dev/zero"], match="not a regular file"),
    Case(
        "corpus-load-link-to-dev-zero",
        ["corpus", "load", "{tmp}/zero.csv"],
        {"zero.csv": lambda p, _env: p.symlink_to("/dev/zero")},
        match="not a regular file",
    ),
    Case(
        "corpus-load-fifo",
        ["corpus", "load", "{tmp}/pipe.csv"],
        {"pipe.csv": lambda p, _env: os.mkfifo(p)},
        match="not a regular file",
    ),
    Case("corpus-load-long-name", ["corpus", "load", LONG_NAME + ".csv"], match="too long"),
    Case(
        "neuronpedia-long-name", ["corpus", "neuronpedia", LONG_NAME + ".jsonl"], match="too long"
    ),
    Case("bench-import-long-name", ["bench", "import", LONG_NAME + ".json"], match="too long"),
    Case(
        "bench-import-fifo",
        ["bench", "import", "{tmp}/pipe.json"],
        {"pipe.json": lambda p, _env: os.mkfifo(p)},
        match="not a regular file",
    ),
    # corpus load: a lone surrogate escape (valid JSON, not a character)
    _load(
        "surrogate.jsonl",
        b'{"group_id": "g1", "lang": "en", "text": "a \\ud800 b"}\n',
        match="surrogate",
    ),
    # corpus load: a wide file's `id` column, row ids or Indonesian?
    _load("id-rows.csv", _csv("1,hello,ni hao", header="id,en,zh"), match="could be row ids"),
    _load(
        "id-integers.csv",
        _csv("g1,1,hello", "g2,2,hi", header="group_id,id,en"),
        match="holds only integers",
    ),
    _load(
        "langs-absent.csv", _csv("g1,hello", header="group_id,en"), "--langs", "en,zh", match="zh"
    ),
    # corpus load: language codes
    *[
        _load(f"lang-{i}.csv", _csv(f'g1,"{code}",hello'), match="unknown language code")
        for i, code in enumerate(ODD_LANGS)
    ],
    _load("wide-zz.csv", _csv("g1,hello,bonjour", header="group_id,en,zz"), match="'zz'"),
    _load(
        "lang-injection.jsonl",
        _jsonl({"group_id": "g1", "lang": SQL_INJECTION, "text": "x"}),
        match="unknown language code",
    ),
    # corpus load: duplicates
    _load("dup-pair.csv", _csv("g1,en,a", "g1,en,b"), match="duplicate phrase"),
    _load(
        "dup-id.csv",
        _csv("g1,en,a,7", "g2,en,b,7", header="group_id,lang,text,phrase_id"),
        match="duplicate phrase_id",
    ),
    _load(
        "taken-id.csv",
        _csv("g1,en,a,1", header="group_id,lang,text,phrase_id"),
        match="already in the warehouse",
    ),
    _load("taken-pair.csv", _csv(f"{CLDR_GROUP},en,Afar again"), match="already has a phrase"),
    # corpus load: encodings
    _load("latin1.csv", _csv("g1,en,café").decode().encode("latin-1"), match="UTF-8"),
    _load("mixed.csv", _csv("g1,en,café") + "g2,en,naïve\n".encode("latin-1"), match="UTF-8"),
    _load("utf16.csv", _csv("g1,en,hello").decode().encode("utf-16"), match="UTF-8"),
    _load(
        "bad-utf8.jsonl", b'{"group_id": "g1", "lang": "en", "text": "\xff\xfe"}\n', match="UTF-8"
    ),
    # corpus load: huge lines
    _load("huge-cell.csv", _huge_cell, match="characters"),
    _load("huge-line.jsonl", _huge_jsonl, match="characters"),
    # corpus load: wrong types and shapes
    _load(
        "text-object.jsonl",
        _jsonl({"group_id": "g1", "lang": "en", "text": {"a": 1}}),
        match="text",
    ),
    _load(
        "text-list.jsonl",
        _jsonl({"group_id": "g1", "lang": "en", "text": ["a", "b"]}),
        match="text",
    ),
    _load(
        "id-word.csv",
        _csv("g1,en,a,seven", header="group_id,lang,text,phrase_id"),
        match="not an integer",
    ),
    _load(
        "id-fraction.csv",
        _csv("g1,en,a,1.5", header="group_id,lang,text,phrase_id"),
        match="not an integer",
    ),
    _load(
        "id-overflow.csv",
        _csv("g1,en,a,99999999999999999999999", header="group_id,lang,text,phrase_id"),
        match="phrase_id",
    ),
    _load(
        "feature-overflow.jsonl",
        _jsonl(
            {
                "group_id": "g1",
                "lang": "en",
                "text": "x",
                "origin_layer": 1,
                "origin_feature": 99_999_999_999,
            }
        ),
        match="origin_feature",
    ),
    _load(
        "layer-word.csv",
        _csv("g1,en,a,x,3", header="group_id,lang,text,origin_layer,origin_feature"),
        match="not an integer",
    ),
    _load(
        "half-origin.csv",
        _csv("g1,en,a,3", header="group_id,lang,text,origin_layer"),
        match="come together",
    ),
    _load(
        "text-list.parquet",
        _parquet(pa.table({"group_id": ["g1"], "lang": ["en"], "text": [["a", "b"]]})),
        match="text",
    ),
    _load(
        "text-binary.parquet",
        _parquet(pa.table({"group_id": ["g1"], "lang": ["en"], "text": pa.array([b"\xff"])})),
        match="text",
    ),
    _load("random.parquet", b"PAR1 not really", match="Parquet"),
    # corpus load: malformed files
    _load("open-quote.csv", _csv('g1,en,"hello'), match="malformed CSV"),
    _load("extra-field.csv", _csv("g1,en,a,b"), match="malformed CSV"),
    _load("bad-json.jsonl", b'{"group_id": "g1",\n', match="invalid JSON"),
    _load("array.jsonl", b"[1, 2, 3]\n", match="JSON object"),
    _load("nan-text.jsonl", b'{"group_id": "g1", "lang": "en", "text": NaN}\n', match="empty text"),
    _load("truncated.csv.gz", _gzip_truncated, match="cannot read|malformed"),
    _load("corrupt.csv.gz", _gzip_corrupt, match="cannot read|malformed|corrupt"),
    _load("columns.csv", _csv("a,b", header="x,y"), match="no language columns"),
    # corpus load: paths and options
    Case(
        "corpus-load-missing-file", ["corpus", "load", "{tmp}/nothere.csv"], match="does not exist"
    ),
    Case("corpus-load-directory", ["corpus", "load", "{tmp}"], match="is a directory"),
    Case("corpus-load-under-a-file", ["corpus", "load", "/etc/hostname/x.csv"]),
    Case("corpus-load-suffix", ["corpus", "load", "{tmp}/a.txt"], {"a.txt": b"x"}, "unsupported"),
    Case("corpus-load-no-glob-match", ["corpus", "load", "{tmp}/*.csv"], match="no file matches"),
    _load("ok.csv", _csv("g1,en,a"), "--group-col", 'x"; DROP TABLE phrases; --', match="missing"),
    _load("ok2.csv", _csv("g1,hello", header="gid,en"), "--text-pattern", "{{lang", match="{lang}"),
    # corpus neuronpedia
    _neuronpedia("missing.jsonl", _jsonl(_np(tokens=...)), match="missing field"),
    _neuronpedia(
        "surrogate.jsonl",
        _jsonl(_np(tokens=["<bos>", "\udfff", "\u2581red"])),
        match="surrogate",
    ),
    _neuronpedia("tokens.jsonl", _jsonl(_np(tokens="the red house")), match="tokens"),
    _neuronpedia("token-int.jsonl", _jsonl(_np(tokens=["a", 1])), match="tokens"),
    _neuronpedia("index-end.jsonl", _jsonl(_np(maxValueTokenIndex=4)), match="outside"),
    _neuronpedia("index-negative.jsonl", _jsonl(_np(maxValueTokenIndex=-1)), match="outside"),
    _neuronpedia("index-bool.jsonl", _jsonl(_np(maxValueTokenIndex=True)), match="token index"),
    _neuronpedia("index-float.jsonl", _jsonl(_np(maxValueTokenIndex=2.0)), match="token index"),
    _neuronpedia("max-word.jsonl", _jsonl(_np(maxValue="high")), match="maxValue"),
    _neuronpedia(
        "max-nan.jsonl",
        _np_line(json.dumps(_np(maxValue=0.0)).replace("0.0", "NaN")),
        match="maxValue",
    ),
    _neuronpedia(
        "max-inf.jsonl",
        _np_line(json.dumps(_np(maxValue=0.0)).replace("0.0", "Infinity")),
        match="maxValue",
    ),
    _neuronpedia("feature-negative.jsonl", _jsonl(_np(index="-1")), match="index"),
    _neuronpedia("feature-overflow.jsonl", _jsonl(_np(index=99_999_999_999)), match="index"),
    _neuronpedia("layer-word.jsonl", _jsonl(_np(layer="res-16k")), match="layer"),
    _neuronpedia("layer-negative.jsonl", _jsonl(_np(layer=-3)), match="layer"),
    _neuronpedia("model-object.jsonl", _jsonl(_np(modelId={"a": 1})), match="modelId"),
    _neuronpedia("empty.jsonl", b"", match="no activation records"),
    _neuronpedia("not-json.jsonl", b"modelId,layer\n", match="invalid JSON"),
    _neuronpedia("list.jsonl", b"[]\n", match="JSON object"),
    _neuronpedia("latin1.jsonl", b'{"modelId": "caf\xe9"}\n', match="UTF-8"),
    _neuronpedia("corrupt.jsonl.gz", _gzip_corrupt, match="cannot read|corrupt"),
    _neuronpedia("ok-threshold.jsonl", _jsonl(_np()), "--threshold", "1.5", match="threshold"),
    _neuronpedia("ok-window.jsonl", _jsonl(_np()), "--window", "-1", match="window"),
    _neuronpedia("wrong.csv", _csv("g1,en,a"), match="unsupported"),
    Case("neuronpedia-directory", ["corpus", "neuronpedia", "{tmp}"], match="directory"),
    # corpus cldr
    *[
        Case(
            f"cldr-lang-{i}", ["corpus", "cldr", "--langs", code], match=re.escape(repr(code)[1:-1])
        )
        for i, code in enumerate(["EN", "e n", SQL_INJECTION, "zz"])
    ],
    Case("cldr-kind", ["corpus", "cldr", "--kinds", "bogus"], match="bogus"),
    Case("cldr-limit", ["corpus", "cldr", "--limit", "0"], match="limit"),
    # corpus translate (the English-only group lacks every other language)
    *[
        Case(f"translate-to-{i}", ["corpus", "translate", "--to", code], match="unknown language")
        for i, code in enumerate(["EN", "e n", SQL_INJECTION, "zz"])
    ],
    Case("translate-to-source", ["corpus", "translate", "--to", "en"], match="source language"),
    Case(
        "translate-no-model",
        ["corpus", "translate", "--to", "zh", "--model-template", "{tmp}/nothere-{{lang}}"],
        match="no model directory",
    ),
    Case(
        "translate-model-under-a-file",
        ["corpus", "translate", "--to", "zh", "--model-template", "/etc/hostname/{{lang}}"],
        match="model",
    ),
    Case(
        "translate-template",
        ["corpus", "translate", "--to", "zh", "--model-template", "opus"],
        match="{lang}",
    ),
    Case("translate-batch", ["corpus", "translate", "--batch-size", "0"], match="batch-size"),
    Case("translate-limit", ["corpus", "translate", "--limit", "0"], match="limit"),
    Case(
        "translate-tokens", ["corpus", "translate", "--max-new-tokens", "0"], match="max_new_tokens"
    ),
    # corpus languages
    Case(
        "languages-add-injection",
        ["corpus", "languages", "add", "xx'); DROP TABLE phrases; --", "X", "--group", "low"],
        match="not a language code",
    ),
    Case("languages-add-group", ["corpus", "languages", "add", "de", "German", "--group", "mid"]),
    Case("languages-add-existing", ["corpus", "languages", "add", "en", "E", "--group", "low"]),
    Case("languages-add-no-name", ["corpus", "languages", "add", "de", " ", "--group", "low"]),
    # ingest
    _ingest_case("layer-out-of-range", "--layers", "9", match="out of range"),
    _ingest_case("layer-words", "--layers", "a-b", match="bad layer list"),
    _ingest_case("layer-negative", "--layers", "-1", match="bad layer list"),
    _ingest_case("layer-reversed", "--layers", "3-1", match="bad layer list"),
    _ingest_case("layer-range-huge", "--layers", "0-300000000", match="layers go up to 255"),
    *[
        _ingest_case(f"langs-{i}", "--langs", code, match="unknown language code")
        for i, code in enumerate(["EN", "e n", SQL_INJECTION, "zz"])
    ],
    _ingest_case("shard", "--shard", "3/3", match="shard"),
    _ingest_case("features", "--features", "topk:0", match="features"),
    _ingest_case("dtype", "--dtype", "float8", match="dtype"),
    _ingest_case("device", "--device", "cuda:7", match="CUDA|device"),
    _ingest_case("limit", "--limit", "0", match="limit"),
    _ingest_case("chunk-rows", "--chunk-rows", "0", match="chunk-rows"),
    _ingest_case("max-tokens", "--max-tokens", "0", match="max-tokens"),
    _ingest_case(
        "batch-size",
        "--batch-size",
        "0",
        match="batch-size",
    ),
    Case(
        "ingest-sae-width",
        ["ingest", "--model", "{model}", "--sae-dir", "{tmp}/narrow"],
        {"narrow": _narrow_saes},
        match="d_in 32",
    ),
    Case(
        "ingest-sae-layer",
        ["ingest", "--model", "{model}", "--sae-dir", "{tmp}/swap_{{layer}}", "--layers", "0"],
        {"swap_0": lambda p, env: shutil.copytree(env["saes"] / "layer_1", p)},
        match="hook",
    ),
    Case(
        "ingest-sae-missing",
        ["ingest", "--model", "{model}", "--sae-dir", "{tmp}/nothere"],
        match="no SAE directory",
    ),
    Case(
        "ingest-sae-is-a-file",
        ["ingest", "--model", "{model}", "--sae-dir", "{tmp}/file"],
        {"file": b"not an SAE"},
    ),
    Case(
        "ingest-model-missing",
        ["ingest", "--model", "{tmp}/nothere", "--sae-dir", "{saes}"],
        match="nothere",
    ),
    Case(
        "ingest-model-empty-dir",
        ["ingest", "--model", "{tmp}/empty", "--sae-dir", "{saes}"],
        {"empty": lambda p, _env: p.mkdir()},
        match="empty",
    ),
    Case("ingest-model-is-a-file", ["ingest", "--model", "/etc/hostname", "--sae-dir", "{saes}"]),
    Case("ingest-resume-unknown", ["ingest", "--resume", "99"], match="no run 99"),
    Case("ingest-resume-finished", ["ingest", "--resume", "2"], match="already finished"),
    Case("ingest-no-model", ["ingest"], match="--model"),
    # sql
    Case("sql-syntax", ["sql", "SELEC 1"], match="does not parse"),
    Case("sql-empty", ["sql", "  "], match="no SQL"),
    Case("sql-unknown-table", ["sql", "SELECT * FROM nothere"], match="nothere"),
    Case("sql-drop", ["sql", "DROP TABLE phrases"], match="--write"),
    Case(
        "sql-write-rolls-back",
        ["sql", "--write", "DELETE FROM phrases; SELECT * FROM nothere"],
        match="nothere",
    ),
    Case(
        "sql-write-constraint",
        [
            "sql",
            "--write",
            "DELETE FROM languages; INSERT INTO phrases VALUES (1, 'g', 'en', 'x', "
            "NULL, NULL, NULL)",
        ],
        match="SQL error",
    ),
    # runs
    Case("runs-show-unknown", ["runs", "show", "99"], match="no run 99"),
    Case("runs-delete-unknown", ["runs", "delete", "99", "--yes"], match="no run 99"),
    # query
    Case("query-gap-run", ["query", "gap", "--run", "99"], match="no run 99"),
    Case("query-gap-layer", ["query", "gap", "--layer", "99"], match="layer 99"),
    Case("query-languages-layer", ["query", "languages", "--layer", "99"], match="layer 99"),
    Case("query-similarity-layer", ["query", "similarity", "--layer", "99"], match="layer 99"),
    Case("query-similarity-no-residuals", ["query", "similarity", "--run", "1"], match="residuals"),
    Case(
        "query-lape-no-neurons",
        ["query", "lape", "--kind", "neurons", "--run", "1"],
        match="neuron",
    ),
    Case("query-lape-top-rate", ["query", "lape", "--top-rate", "2"], match="top-rate"),
    *[
        Case(f"query-lape-lang-{i}", ["query", "lape", "--lang", code], match="no phrases in")
        for i, code in enumerate(ODD_LANGS[:4])
    ],
    *[
        Case(
            f"query-features-lang-{i}",
            ["query", "features", "--lang", code, "--layer", "0"],
            match="no phrases in",
        )
        for i, code in enumerate(ODD_LANGS)
    ],
    Case(
        "query-features-layer",
        ["query", "features", "--lang", "hi", "--layer", "99"],
        match="layer 99",
    ),
    Case("query-compare-same", ["query", "compare", "--base", "2", "--tuned", "2"], match="both"),
    Case(
        "query-compare-unknown",
        ["query", "compare", "--base", "2", "--tuned", "99"],
        match="no run 99",
    ),
    Case(
        "query-languages-no-english",
        ["query", "languages", "--run", "1"],
        match="English",
    ),
    Case(
        "query-gap-no-english",
        ["query", "gap", "--run", "1", "--mode", "english-topk"],
        match="English",
    ),
    # bench import
    _bench("nan.csv", _csv("1,arc,en,acc,nan", header="model,task,lang,metric,value"), match="nan"),
    _bench("inf.csv", _csv("1,arc,en,acc,inf", header="model,task,lang,metric,value"), match="inf"),
    _bench(
        "word.csv",
        _csv("1,arc,en,acc,high", header="model,task,lang,metric,value"),
        match="not a finite number|not a number",
    ),
    _bench(
        "n.csv",
        _csv("1,arc,en,acc,0.5,,1.5", header="model,task,lang,metric,value,stderr,n"),
        match="not an integer",
    ),
    _bench("columns.csv", _csv("g1,en,a"), match="column"),
    _bench("no-model.csv", _csv("arc,en,acc,0.5", header="task,lang,metric,value"), match="model"),
    _bench(
        "unknown-model.csv",
        _csv("nobody,arc,en,acc,0.5", header="model,task,lang,metric,value"),
        match="no model",
    ),
    _bench(
        "injection-model.csv",
        _csv(f'"{SQL_INJECTION}",arc,en,acc,0.5', header="model,task,lang,metric,value"),
        match="no model",
    ),
    _bench(
        "empty-cell.csv",
        _csv("1,,en,acc,0.5", header="model,task,lang,metric,value"),
        match="empty",
    ),
    _bench("empty.csv", b"", match="column"),
    _bench(
        "latin1.csv",
        _csv("1,arc,en,acc,0.5,café", header="model,task,lang,metric,value,x")
        .decode()
        .encode("latin-1"),
        match="CSV|column",
    ),
    _bench(
        "huge.csv",
        lambda p, _env: p.write_bytes(
            _csv("1,arc,en,acc," + "9" * 10_000_000, header="model,task,lang,metric,value")
        ),
        match="value|field",
    ),
    _bench(
        "nan.json",
        b'{"results": {"arc_hi": {"acc,none": NaN}}, "config": {"model_args": "pretrained=x"}}',
        "--model",
        "1",
        match="nan",
    ),
    _bench("bad.json", b'{"results": ', match="JSON"),
    _bench("list.json", b"[1, 2]", match="results"),
    _bench("no-results.json", b'{"samples": []}', match="results"),
    _bench("latin1.json", b'{"results": {"caf\xe9": 1}}', match="JSON"),
    # malformed lm-eval sections: each was a traceback (AttributeError, TypeError,
    # OverflowError, and a 2,996-line RecursionError for the group cycle)
    *[
        _bench(f"{name}.json", _lmeval(extra), match=match)
        for name, extra, match in [
            ("groups-list", {"groups": [1]}, "'groups' is a list"),
            ("subtasks-string", {"group_subtasks": "arc"}, "'group_subtasks' is a str"),
            ("subtasks-int", {"group_subtasks": {"g": 5}}, "not a list of task names"),
            ("n-samples-list", {"n-samples": [1]}, "'n-samples' is a list"),
            ("n-shot-list", {"n-shot": [1]}, "'n-shot' is a list"),
            ("xling-list", {"xling": [1]}, "'xling' is a list"),
            ("huge-score", {"results": {"arc_hi": {"acc,none": 10**400}}}, "inf"),
            ("group-cycle", {"group_subtasks": {"g": ["h"], "h": ["g"]}}, "cycle"),
            (
                "groups-3000-deep",
                {"group_subtasks": {f"g{i}": [f"g{i + 1}"] for i in range(3000)}},
                "deeper than",
            ),
        ]
    ],
    _bench(
        "ok.csv",
        _csv("1,arc,en,acc,0.5", header="model,task,lang,metric,value"),
        "--model",
        SQL_INJECTION,
        match="no model",
    ),
    Case("bench-import-missing", ["bench", "import", "{tmp}/nothere.csv"], match="nothere"),
    Case("bench-import-directory", ["bench", "import", "{tmp}"]),
    # export and plot: names, runs and unwritable outputs (tests run as root, so a path
    # under a regular file or a missing folder stands in for a read-only directory)
    *[
        Case(f"export-name-{i}", ["export", name, "--out", "{tmp}/a.csv"], match="no table or view")
        for i, name in enumerate(
            ["nothere", "phrases; DROP TABLE phrases", 'phrases"--', "../phrases", ""]
        )
    ],
    Case(
        "export-run",
        ["export", "gap_by_layer", "--run", "99", "--out", "{tmp}/g.csv"],
        match="no run 99",
    ),
    Case(
        "export-under-a-file",
        ["export", "phrases", "--out", "/etc/hostname/x.csv"],
        match="/etc/hostname is not a folder",
    ),
    Case(
        "export-missing-folder",
        ["export", "phrases", "--out", "{tmp}/no/such/a.csv"],
        match="does not exist",
    ),
    Case("export-to-a-directory", ["export", "phrases", "--out", "{tmp}"], match="directory"),
    Case("export-extension", ["export", "phrases", "--out", "{tmp}/a.xyz"], match="format"),
    Case(
        "export-parquet-not-empty",
        ["export-parquet", "{tmp}"],
        {"x": b"x"},
        match="not an empty directory",
    ),
    Case(
        "export-parquet-under-a-file",
        ["export-parquet", "/etc/hostname/x"],
    ),
    Case(
        "import-parts-missing",
        ["import-parts", "{tmp}/nothere", "--run", "2"],
        match="no ingest parts",
    ),
    Case("import-parts-run", ["import-parts", "{tmp}", "--run", "99"], match="no run 99"),
    Case(
        "plot-under-a-file",
        ["plot", "gap", "--out", "/etc/hostname/x.png"],
        match="/etc/hostname is not a folder",
    ),
    Case("plot-missing-folder", ["plot", "gap", "--out", "{tmp}/no/x.png"], match="does not exist"),
    Case("plot-extension", ["plot", "gap", "--out", "{tmp}/x.txt"], match="extension"),
    Case("plot-run", ["plot", "gap", "--run", "99", "--out", "{tmp}/x.png"], match="no run 99"),
    Case(
        "plot-no-residuals",
        ["plot", "similarity", "--run", "1", "--out", "{tmp}/x.png"],
        match="residuals",
    ),
    Case(
        "plot-compare-same",
        ["plot", "compare", "--base", "2", "--tuned", "2", "--out", "{tmp}/x.png"],
        match="both",
    ),
    Case(
        "plot-correlate-task",
        ["plot", "correlate", "--task", SQL_INJECTION, "--layer", "0", "--out", "{tmp}/x.png"],
        match="scores",
    ),
    Case(
        "plot-correlate-layer",
        ["plot", "correlate", "--task", "arc", "--layer", "99", "--out", "{tmp}/x.png"],
        match="layer 99",
    ),
    # sae train
    Case(
        "sae-train-layer",
        ["sae", "train", "--model", "{model}", "--layers", "9"],
        match="out of range",
    ),
    Case(
        "sae-train-layer-words",
        ["sae", "train", "--model", "{model}", "--layers", "a"],
        match="bad layer list",
    ),
    Case(
        "sae-train-model",
        ["sae", "train", "--model", "{tmp}/nothere", "--layers", "0"],
        match="nothere",
    ),
    Case(
        "sae-train-width",
        ["sae", "train", "--model", "{model}", "--layers", "0", "--d-sae", "0"],
        match="d-sae",
    ),
    Case(
        "sae-train-tokens",
        ["sae", "train", "--model", "{model}", "--layers", "0", "--tokens", "0"],
        match="tokens",
    ),
    Case(
        "sae-train-langs",
        ["sae", "train", "--model", "{model}", "--layers", "0", "--langs", "zz"],
        match="zz",
    ),
    Case(
        "sae-train-out-under-a-file",
        [
            "sae",
            "train",
            "--model",
            "{model}",
            "--layers",
            "0",
            "--tokens",
            "64",
            "--batch-tokens",
            "32",
            "--d-sae",
            "8",
            "--out",
            "/etc/hostname/x",
        ],
    ),
]


@pytest.fixture
def bad_env(tmp_path, work, tiny_model_dir, tiny_sae_dirs):
    files = tmp_path / "in"
    files.mkdir()
    return {"db": work, "tmp": files, "model": tiny_model_dir, "saes": tiny_sae_dirs[0].parent}


def assert_one_error_line(res, match: str | None = None) -> str:
    """Exit 1 from a user error: no traceback, stderr exactly one `Error: ...` line."""
    assert isinstance(res.exception, SystemExit), f"uncaught {res.exception!r}\n{res.stderr}"
    assert res.exit_code == 1, (res.exit_code, res.stdout, res.stderr)
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.stderr
    if match:
        assert re.search(match, lines[0]), lines[0]
    return lines[0]


@pytest.mark.parametrize("case", [pytest.param(case, id=case.id) for case in CASES])
def test_bad_input_is_one_line_and_changes_nothing(
    case: Case, bad_env, cli, template_db, template_snapshot
):
    env = bad_env
    for name, content in case.files.items():
        path = env["tmp"] / name
        if callable(content):
            content(path, env)
        else:
            path.write_bytes(content)
    args = [a.format(**env) for a in case.args]
    files = sorted(env["tmp"].rglob("*"))
    res = cli(*args, "--db", env["db"])
    assert_one_error_line(res, case.match)
    assert_unchanged(env["db"], template_db, template_snapshot)
    assert sorted(env["tmp"].rglob("*")) == files  # no output, partial or temporary, left


# -- the warehouse file itself as bad input --------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [["sql", "SELECT 1"], ["corpus", "stats"], ["corpus", "cldr", "--limit", "1"], ["init"]],
    ids=["sql", "stats", "cldr", "init"],
)
def test_a_file_that_is_not_a_warehouse_is_refused_and_left_alone(args, cli, tmp_path):
    not_db = tmp_path / "phrases.csv"
    not_db.write_bytes(_csv("g1,en,hello"))
    res = cli(*args, "--db", not_db)
    assert_one_error_line(res, "not a DuckDB warehouse")
    assert not_db.read_bytes() == _csv("g1,en,hello")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["phrases.csv"]


@pytest.mark.parametrize(
    "db",
    ["{tmp}", "/etc/hostname/w.duckdb", "{tmp}/no/such/dir/w.duckdb"],
    ids=["directory", "under-a-file", "missing-parent"],
)
@pytest.mark.parametrize("args", [["sql", "SELECT 1"], ["init"]], ids=["read", "write"])
def test_bad_warehouse_paths(db, args, cli, tmp_path):
    res = cli(*args, "--db", db.format(tmp=tmp_path))
    assert_one_error_line(res)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "args",
    [
        ["query", "gap", "--run", "abc"],
        ["runs", "show", "abc"],
        ["query", "lape", "--k", "x"],
        ["query", "gap", "--layer", "-1"],
        ["corpus", "load", "{tmp}/a.csv", "--layout", "diagonal"],
    ],
    ids=["run-not-int", "show-not-int", "unknown-option", "layer-negative", "layout"],
)
def test_usage_errors_exit_2_and_change_nothing(
    args, cli, work, tmp_path, template_db, template_snapshot
):
    res = cli(*[a.format(tmp=tmp_path) for a in args], "--db", work)
    assert isinstance(res.exception, SystemExit) and res.exit_code == 2, res.stderr
    assert "Traceback" not in res.stderr
    assert_unchanged(work, template_db, template_snapshot)


def test_every_case_command_exists():
    """The matrix covers each command that reads files or user values; a renamed command
    would otherwise turn its cases into usage errors that still 'fail cleanly'."""
    from typer.main import get_command

    from xling.cli import app

    root = get_command(app)
    for case in CASES:
        cmd = root
        for word in case.args:
            if word.startswith("-") or not hasattr(cmd, "commands"):
                break
            assert word in cmd.commands, (case.id, word)
            cmd = cmd.commands[word]


def test_translate_never_runs_model_code_even_when_answered_yes(cli, wh, db_path, tmp_path):
    """A translation model with its own code: transformers asks "Do you wish to run the
    custom code? [y/N]" unless trust_remote_code is passed; `corpus translate` passes False,
    so answering `y` runs nothing and the command ends in one line."""
    ran = tmp_path / "code-ran"
    model = tmp_path / "custom-zh"
    model.mkdir()
    (model / "config.json").write_text(
        json.dumps(
            {
                "model_type": "xling-custom",
                "auto_map": {"AutoConfig": "custom.Config", "AutoModelForSeq2SeqLM": "custom.M"},
            }
        )
    )
    (model / "custom.py").write_text(
        f"open({str(ran)!r}, 'w').close()\n"
        "from transformers import PretrainedConfig\n"
        "class Config(PretrainedConfig):\n"
        "    model_type = 'xling-custom'\n"
    )
    wh.con.execute("INSERT INTO phrases VALUES (1, 'g1', 'en', 'the red house', 't', NULL, NULL)")
    wh.close()
    template = str(tmp_path / "custom-{lang}")
    res = cli(
        "corpus",
        "translate",
        "--to",
        "zh",
        "--model-template",
        template,
        "--db",
        db_path,
        input="y\ny\n",
    )
    assert not ran.exists()
    assert_one_error_line(res, "own Python code")
    with Warehouse(db_path, read_only=True) as after:
        assert after.scalar("SELECT count(*) FROM phrases") == 1


# -- values shown back to the user ------------------------------------------------------------


def test_stored_markup_is_shown_as_written(cli, db_path, wh):
    """A language named `[/x]` crashed `corpus languages list` and `corpus stats` (rich read
    it as a closing tag) on every later call; `[bold]...` was applied instead of shown."""
    wh.close()
    for code, name in (("xa", "[/x]"), ("xb", "[bold]B[/bold]")):
        assert cli("corpus", "languages", "add", code, name, "--group", "low", "--db", db_path)
    for args in (["corpus", "languages", "list"], ["corpus", "stats"]):
        res = cli(*args, "--db", db_path)
        assert res.exit_code == 0, res.stderr
        assert "[/x]" in res.stdout and "[bold]B[/bold]" in res.stdout


@pytest.mark.parametrize(
    "header",
    [b"group_id,lang,te\x00xt", b"group_id,lang,\x1b[31mtext\x1b[0m", b"group_id,\x1b]0;pwn\x07,x"],
    ids=["nul", "colour", "title"],
)
def test_control_characters_of_a_header_are_not_echoed_raw(cli, db_path, wh, tmp_path, header):
    wh.close()
    path = tmp_path / "h.csv"
    path.write_bytes(header + b"\ng1,en,hello\n")
    res = cli("corpus", "load", path, "--layout", "long", "--db", db_path)
    line = assert_one_error_line(res, "missing column")
    assert "\x00" not in line and "\x1b" not in line and "\x07" not in line
    assert "\\x1b" in line or "\\x00" in line


# -- the machine failing under a load ----------------------------------------------------------

# A child that loads with a file-size limit just above the warehouse's size: its writes then
# fail with EFBIG, the same failed write(2) a full disk gives (ENOSPC), without filling one.
_LIMITED_LOAD = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
sys.argv = ["xling", "corpus", "load", *sys.argv[2:]]
from xling.cli import main
main()
"""


def _big_long_csv(path: Path, groups: int) -> Path:
    with path.open("w", encoding="utf-8") as f:
        f.write("group_id,lang,text\n")
        f.writelines(f"g{g},en,phrase number {g} of a corpus far too big\n" for g in range(groups))
    return path


def _phrases(db: Path) -> int:
    with Warehouse(db, read_only=True) as w:
        return w.scalar("SELECT count(*) FROM phrases")


def test_full_disk_during_corpus_load_is_one_line_and_loads_nothing(tmp_path):
    import subprocess
    import sys

    db = tmp_path / "w.duckdb"
    Warehouse(db).close()
    corpus = _big_long_csv(tmp_path / "big.csv", 200_000)
    limit = db.stat().st_size + 64 * 1024
    res = subprocess.run(
        [sys.executable, "-c", _LIMITED_LOAD, str(limit), str(corpus), "--db", str(db)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = res.stderr.splitlines()
    assert res.returncode == 1 and len(lines) == 1, res.stderr[-2000:]
    assert lines[0].startswith("Error: cannot write to the warehouse"), lines[0]
    assert "nothing was loaded" in lines[0]
    assert _phrases(db) == 0


def _holds_open(pid: int, path: Path) -> bool:
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False
    for fd in fds:
        with contextlib.suppress(OSError):
            if Path(os.readlink(fd)) == path:
                return True
    return False


def test_ctrl_c_during_corpus_load_is_one_line_and_loads_nothing(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    db = tmp_path / "w.duckdb"
    Warehouse(db).close()
    corpus = _big_long_csv(tmp_path / "big.csv", 600_000)
    xling = Path(sys.executable).with_name("xling")
    proc = subprocess.Popen(
        [str(xling), "corpus", "load", str(corpus), "--db", str(db)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONFAULTHANDLER": "1"},
        # A suite started in the background (`make test &`) ignores SIGINT, and so would the
        # child: give it the default, as a terminal would.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    # Interrupt once the load is under way: the command holds the warehouse open from before
    # the file is read until the load ends.
    deadline = time.monotonic() + 120
    while not _holds_open(proc.pid, db) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)
    assert proc.poll() is None, "the load ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    lines = err.splitlines()
    assert proc.returncode == 1 and lines == ["Error: interrupted; nothing was loaded"], err[-2000:]
    assert _phrases(db) == 0
