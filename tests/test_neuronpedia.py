"""Neuronpedia activation exports: exact window and threshold on a hand-built gzipped file."""

from __future__ import annotations

import gzip
import json
import re

import pytest

from xling.ingest.neuronpedia import NeuronpediaConfig, layer_number, load_neuronpedia, window_text
from xling.warehouse import Warehouse, XlingError

# Twelve tokens t0 .. t11 after <bos>; "▁" marks a preceding space as in sentencepiece.
TOKENS = ["<bos>"] + [f"▁t{i}" for i in range(12)]


def record(layer: str, index: int, max_value: float, at: int, tokens=TOKENS, **extra) -> dict:
    values = [0.0] * len(tokens)
    values[at] = max_value
    return {
        "modelId": "gemma-2-2b",
        "layer": layer,
        "index": index,
        "tokens": tokens,
        "values": values,
        "maxValue": max_value,
        "maxValueTokenIndex": at,
        "minValue": 0.0,
        "dataIndex": 0,
        **extra,
    }


def write_gz(path, records) -> None:
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")


L20 = "20-gemmascope-res-16k"
L3 = "3-gemmascope-res-16k"
# Feature (20, 5): top 10.0, so the 0.8 threshold is 8.0 exactly.
# Feature (3, 5): same index, another layer: its own top (2.0), threshold 1.6.
RECORDS = [
    record(L20, 5, 10.0, at=6),  # kept: window 4..8 -> t3..t7
    record(L20, 5, 8.0, at=1),  # kept (== 0.8 x top): window clipped at the start
    record(L20, 5, 7.999, at=7),  # dropped: just below
    record(L20, 5, 9.0, at=12),  # kept: window clipped at the end
    record(L3, 5, 2.0, at=3),  # kept
    record(L3, 5, 1.5, at=4),  # dropped (< 1.6)
]


def test_window_and_threshold_exact(wh, tmp_path):
    path = tmp_path / "batch-0.jsonl.gz"
    write_gz(path, RECORDS)
    result = load_neuronpedia(wh, [path], NeuronpediaConfig(threshold=0.8, window=2))
    got = wh.sql(
        "SELECT phrase_id, group_id, lang, text, source, origin_layer, origin_feature "
        "FROM phrases ORDER BY phrase_id"
    )
    # Features in (model, layer id, index) order, each by maxValue descending.
    assert got.text.tolist() == [
        "t0 t1 t2 t3 t4",  # L3, at=3 (token t2): tokens 1..5
        "t3 t4 t5 t6 t7",  # L20 10.0, at=6 (t5): tokens 4..8
        "t9 t10 t11",  # L20 9.0, at=12 (t11): tokens 10..12
        "t0 t1 t2",  # L20 8.0, at=1 (t0): tokens 0..3, <bos> dropped
    ]
    assert got.origin_layer.tolist() == [3, 20, 20, 20]
    assert got.origin_feature.tolist() == [5, 5, 5, 5]
    assert set(got.lang) == {"en"}
    assert got.group_id.tolist() == [
        f"np:gemma-2-2b:{L3}:5:0",
        f"np:gemma-2-2b:{L20}:5:0",
        f"np:gemma-2-2b:{L20}:5:1",
        f"np:gemma-2-2b:{L20}:5:2",
    ]
    assert (
        got.source.tolist()
        == [f"neuronpedia:gemma-2-2b/{L3}"] + [f"neuronpedia:gemma-2-2b/{L20}"] * 3
    )
    assert result.phrases == 4 and result.new_groups == 4


def test_cli_several_files_glob_threshold_window(cli, db_path, tmp_path):
    write_gz(tmp_path / "batch-1.jsonl.gz", RECORDS[:3])
    (tmp_path / "batch-2.jsonl").write_text("\n".join(json.dumps(r) for r in RECORDS[3:]) + "\n")
    res = cli(
        "corpus", "neuronpedia", str(tmp_path / "batch-1.*"), tmp_path / "batch-2.jsonl",
        "--threshold", "0.75", "--window", "0", "--db", db_path,
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "loaded 6 Neuronpedia phrases in 6 groups (6 new): en 6" in res.stdout
    with Warehouse(db_path, read_only=True) as wh:
        texts = wh.sql("SELECT text FROM phrases ORDER BY phrase_id").text.tolist()
    # The top of a feature spans files: (20, 5) keeps >= 7.5 (all four), (3, 5) >= 1.5 (both).
    assert texts == ["t2", "t3", "t5", "t11", "t0", "t6"]


def test_repeated_snippets_and_control_tokens(wh, tmp_path):
    only_bos = ["<bos>", "<eos>"]
    path = tmp_path / "r.jsonl"
    records = [
        record(L20, 9, 4.0, at=6),
        record(L20, 9, 3.9, at=6),  # same window text as the first: counted once
        record(L20, 9, 3.8, at=0, tokens=only_bos),  # no text at all: dropped
    ]
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    result = load_neuronpedia(wh, [path], NeuronpediaConfig(window=1))
    assert result.phrases == 1
    assert wh.con.execute("SELECT text FROM phrases").fetchall() == [("t4 t5 t6",)]


def test_window_text_detokenizes():
    pieces = ["▁Hello", ",", "▁wor", "ld", "<0x0A>", "<0xE2>", "<0x82>", "<0xAC>", "▁5", "</s>"]
    assert window_text(pieces, 2, 10) == "Hello, world\n€ 5".replace("\n", " ")
    assert window_text(pieces, 0, 0) == "Hello"
    assert window_text([" spaced", " tokens "], 0, 3) == "spaced tokens"
    assert layer_number("20-gemmascope-res-16k") == 20 and layer_number(7) == 7


BAD = [
    ("missing field", lambda: {k: v for k, v in record(L20, 1, 1.0, 2).items() if k != "maxValue"},
     r"line 2: missing field\(s\) maxValue; is this a Neuronpedia activation export"),
    ("index outside tokens", lambda: {**record(L20, 1, 1.0, 2), "maxValueTokenIndex": 99},
     r"line 2: maxValueTokenIndex 99 is outside the 13 tokens"),
    ("layer without number", lambda: record("res-16k", 1, 1.0, 2),
     r"line 2: layer 'res-16k' does not start with a layer number"),
    ("maxValue not a number", lambda: record(L20, 1, "high", 2),
     r"line 2: maxValue 'high' is not a number"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "make", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_records_change_nothing(cli, db_path, tmp_path, name, make, message):
    with Warehouse(db_path) as wh:
        wh.con.execute("INSERT INTO phrases VALUES (1, 'g', 'en', 'kept', NULL, NULL, NULL)")
    path = tmp_path / "bad.jsonl.gz"
    write_gz(path, [record(L20, 1, 1.0, 2), make()])
    res = cli("corpus", "neuronpedia", path, "--db", db_path)
    assert res.exit_code == 1
    assert re.search(message, res.stderr), res.stderr
    with Warehouse(db_path, read_only=True) as wh:
        assert wh.con.execute("SELECT phrase_id, text FROM phrases").fetchall() == [(1, "kept")]


def test_corrupt_files(tmp_path, wh):
    truncated = tmp_path / "t.jsonl.gz"
    write_gz(truncated, RECORDS)
    truncated.write_bytes(truncated.read_bytes()[:-20])
    with pytest.raises(XlingError, match=r"t.jsonl.gz: cannot read"):
        load_neuronpedia(wh, [truncated])
    not_gz = tmp_path / "n.jsonl.gz"
    not_gz.write_text("plain text")
    with pytest.raises(XlingError, match=r"n.jsonl.gz: cannot read"):
        load_neuronpedia(wh, [not_gz])
    bad_json = tmp_path / "b.jsonl"
    bad_json.write_text(json.dumps(RECORDS[0]) + "\n{oops\n")
    with pytest.raises(XlingError, match=r"b.jsonl line 2: invalid JSON"):
        load_neuronpedia(wh, [bad_json])
    with pytest.raises(XlingError, match=r"threshold 1.5 is outside 0..1"):
        NeuronpediaConfig(threshold=1.5)
    assert wh.con.execute("SELECT count(*) FROM phrases").fetchall() == [(0,)]
