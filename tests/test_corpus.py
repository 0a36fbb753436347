"""Corpus import: every file format and layout, validation leaving the warehouse unchanged,
adding languages to existing groups, stats, languages, CLDR."""

from __future__ import annotations

import csv
import gzip
import json
import re
import unicodedata

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from xling.ingest.corpus import CorpusFormat, load_files
from xling.warehouse import Warehouse, XlingError

# Three aligned groups in three scripts; one text holds a comma, quotes and "NA" to check
# that quoting and missing-value handling never touch real text.
GROUPS = {
    "g1": {"en": "the red house", "zh": "红房子", "hi": "लाल घर"},
    "g2": {"en": 'a "quoted", comma', "zh": "逗号", "hi": "अल्पविराम"},
    "g3": {"en": "NA", "zh": "不适用", "hi": "लागू नहीं"},
}
LANGS = ("en", "zh", "hi")


def expected_rows() -> list[tuple[str, str, str]]:
    return [(g, lang, texts[lang]) for g, texts in GROUPS.items() for lang in LANGS]


def wide_frame(pattern: str = "{lang}") -> pd.DataFrame:
    data = {"group_id": list(GROUPS)}
    for lang in LANGS:
        data[pattern.format(lang=lang)] = [GROUPS[g][lang] for g in GROUPS]
    return pd.DataFrame(data)


def long_frame() -> pd.DataFrame:
    return pd.DataFrame(expected_rows(), columns=["group_id", "lang", "text"])


def write(df: pd.DataFrame, path) -> None:
    name = str(path)
    if name.endswith((".csv", ".csv.gz")):
        df.to_csv(path, index=False)
    elif name.endswith(".tsv"):
        df.to_csv(path, sep="\t", index=False)
    elif name.endswith(".jsonl"):
        df.to_json(path, orient="records", lines=True, force_ascii=False)
    elif name.endswith(".parquet"):
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path)
    else:
        raise AssertionError(name)


def phrases(db_path) -> pd.DataFrame:
    with Warehouse(db_path, read_only=True) as wh:
        return wh.sql("SELECT * FROM phrases ORDER BY phrase_id")


def snapshot(db_path) -> tuple[list, list]:
    with Warehouse(db_path, read_only=True) as wh:
        return (
            wh.con.execute("SELECT * FROM phrases ORDER BY phrase_id").fetchall(),
            wh.con.execute("SELECT * FROM languages ORDER BY lang").fetchall(),
        )


@pytest.mark.parametrize("layout", ["wide", "long"])
@pytest.mark.parametrize("ext", ["csv", "tsv", "jsonl", "parquet", "csv.gz"])
def test_load_every_format(cli, db_path, tmp_path, layout, ext):
    path = tmp_path / f"corpus.{ext}"
    write(wide_frame() if layout == "wide" else long_frame(), path)
    res = cli("corpus", "load", path, "--db", db_path)
    assert res.exit_code == 0, res.output
    assert "loaded 9 phrases in 3 groups (3 new)" in res.stdout
    got = phrases(db_path)
    # File order: wide files row by row, each row's languages in column order.
    assert list(zip(got.group_id, got.lang, got.text, strict=True)) == expected_rows()
    assert got.phrase_id.tolist() == list(range(1, 10))
    assert set(got.source) == {path.name}
    assert got.origin_layer.isna().all() and got.origin_feature.isna().all()


def test_paper_columns_with_text_pattern(cli, db_path, tmp_path):
    """The paper's CSV: Neuronpedia layer ids, feature index, extra per-language columns and
    no group id column (each row is a group named after the file and row)."""
    df = wide_frame("phraseWindow_{lang}").drop(columns="group_id")
    df.insert(
        0, "layer", ["20-gemmascope-res-16k", "20-gemmascope-res-16k", "3-gemmascope-res-16k"]
    )
    df.insert(1, "index", [101, 101, 7])
    df["Sentence_en"] = ["whole sentence"] * 3
    df["MaxValue_en"] = [1.5, 2.5, 3.5]
    path = tmp_path / "paper.csv"
    write(df, path)
    res = cli("corpus", "load", path, "--text-pattern", "phraseWindow_{lang}", "--db", db_path)
    assert res.exit_code == 0, res.output
    assert "ignored column(s) Sentence_en, MaxValue_en" in res.stderr
    got = phrases(db_path)
    assert len(got) == 9
    assert got.group_id.unique().tolist() == ["paper.csv:1", "paper.csv:2", "paper.csv:3"]
    assert got.origin_layer.tolist() == [20] * 6 + [3] * 3
    assert got.origin_feature.tolist() == [101] * 6 + [7] * 3
    assert got.text.iloc[0] == GROUPS["g1"]["en"]
    # The same file again is a duplicate, not a second copy.
    res = cli("corpus", "load", path, "--text-pattern", "phraseWindow_{lang}", "--db", db_path)
    assert res.exit_code == 1 and "already has" in res.stderr


def test_explicit_columns_and_source(cli, db_path, tmp_path):
    df = long_frame().rename(columns={"group_id": "item", "lang": "language", "text": "phrase"})
    path = tmp_path / "custom.csv"
    write(df, path)
    res = cli(
        "corpus", "load", path, "--group-col", "item", "--lang-col", "language",
        "--text-col", "phrase", "--source", "my-corpus", "--db", db_path,
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    got = phrases(db_path)
    assert list(zip(got.group_id, got.lang, got.text, strict=True)) == expected_rows()
    assert set(got.source) == {"my-corpus"}


def test_layout_override(cli, db_path, tmp_path):
    """A wide file that happens to have `lang` and `text` columns is read wide when asked."""
    df = wide_frame()
    df["lang"], df["text"] = "note", "note"
    path = tmp_path / "w.csv"
    write(df, path)
    assert cli("corpus", "load", path, "--db", db_path).exit_code == 1  # auto: long, 'note'
    res = cli("corpus", "load", path, "--layout", "wide", "--db", db_path)
    assert res.exit_code == 0, res.output
    assert len(phrases(db_path)) == 9


def test_phrase_ids_from_file_then_assigned(wh, tmp_path):
    df = long_frame()
    df["phrase_id"] = [100 + 10 * i for i in range(len(df))]
    df["source"] = ["src-a"] * 3 + [None] * 6
    path = tmp_path / "ids.jsonl"
    write(df, path)
    load_files(wh, [path])
    got = wh.sql("SELECT phrase_id, source FROM phrases ORDER BY phrase_id")
    assert got.phrase_id.tolist() == df.phrase_id.tolist()
    assert got.source.tolist() == ["src-a"] * 3 + ["ids.jsonl"] * 6
    more = tmp_path / "more.csv"
    write(pd.DataFrame({"group_id": ["g9", "g10"], "en": ["x", "y"]}), more)
    load_files(wh, [more])
    assert wh.sql("SELECT phrase_id FROM phrases WHERE group_id IN ('g9', 'g10') ORDER BY 1")[
        "phrase_id"
    ].tolist() == [181, 182]


def test_new_languages_for_existing_groups_inherit_origin(wh, tmp_path):
    en = pd.DataFrame(
        {"group_id": ["g1", "g2"], "en": ["one", "two"], "origin_layer": [5, 6],
         "origin_feature": [50, 60]}
    )  # fmt: skip
    write(en, tmp_path / "en.csv")
    load_files(wh, [tmp_path / "en.csv"])
    zh = pd.DataFrame({"group_id": ["g1", "g2", "g3"], "lang": "zh", "text": ["一", "二", "三"]})
    write(zh, tmp_path / "zh.csv")
    result = load_files(wh, [tmp_path / "zh.csv"])
    assert (result.phrases, result.groups, result.new_groups) == (3, 3, 1)
    got = wh.sql("SELECT group_id, lang, origin_layer, origin_feature FROM phrases ORDER BY 1, 2")
    assert got.values.tolist() == [
        ["g1", "en", 5, 50], ["g1", "zh", 5, 50], ["g2", "en", 6, 60], ["g2", "zh", 6, 60],
        ["g3", "zh", pd.NA, pd.NA],
    ]  # fmt: skip


def test_skip_empty_cells_in_wide_files(wh, tmp_path):
    df = wide_frame()
    df.loc[1, "zh"] = None
    write(df, tmp_path / "gaps.csv")
    with pytest.raises(XlingError, match=r"gaps.csv line 3: empty text for group 'g2' \(zh\)"):
        load_files(wh, [tmp_path / "gaps.csv"])
    assert wh.con.execute("SELECT count(*) FROM phrases").fetchall() == [(0,)]
    result = load_files(wh, [tmp_path / "gaps.csv"], CorpusFormat(skip_empty=True))
    assert result.phrases == 8 and result.by_lang == {"en": 3, "hi": 3, "zh": 2}


def _csv(path, header: str, *lines: str) -> None:
    path.write_text("\n".join([header, *lines]) + "\n", encoding="utf-8")


# (name, file name, writer, extra CLI args, expected message fragment)
BAD_INPUTS = [
    ("empty text", "e.csv", lambda p: _csv(p, "group_id,lang,text", "a,en,x", "b,en,"), [],
     r"e.csv line 3: empty text for group 'b' \(en\)"),
    ("empty text after a blank line", "bl.jsonl",
     lambda p: p.write_text('{"group_id": "a", "lang": "en", "text": "x"}\n\n'
                            '{"group_id": "b", "lang": "en", "text": " "}\n'), [],
     r"bl.jsonl line 3: empty text for group 'b'"),
    ("empty text in Parquet", "e.parquet",
     lambda p: write(pd.DataFrame({"group_id": ["a", "b"], "lang": "en", "text": ["x", ""]}), p),
     [], r"e.parquet row 2: empty text for group 'b'"),
    ("whitespace text", "w.csv", lambda p: _csv(p, "group_id,en,zh", "a,x,  "), [],
     r"w.csv line 2: empty text for group 'a' \(zh\)"),
    ("unknown language", "u.csv", lambda p: _csv(p, "group_id,lang,text", "a,en,x", "a,xx,y"),
     [], r"u.csv line 3: unknown language code 'xx'; add it first with `xling corpus languages add xx"),
    ("unknown language in pattern", "p.csv",
     lambda p: _csv(p, "group_id,phraseWindow_en,phraseWindow_de", "a,x,y"),
     ["--text-pattern", "phraseWindow_{lang}"], r"unknown language code 'de'.*INSERT INTO languages"),
    ("duplicate phrase id", "d.csv",
     lambda p: _csv(p, "phrase_id,group_id,lang,text", "7,a,en,x", "7,b,en,y"), [],
     r"d.csv line 3: duplicate phrase_id 7"),
    ("phrase id in warehouse", "dw.csv",
     lambda p: _csv(p, "phrase_id,group_id,lang,text", "1,new,en,x"), [],
     r"phrase_id 1 is already in the warehouse"),
    ("duplicate group and language", "dg.jsonl",
     lambda p: p.write_text('{"group_id": "a", "lang": "en", "text": "x"}\n'
                            '{"group_id": "a", "lang": "en", "text": "y"}\n'), [],
     r"dg.jsonl line 2: duplicate phrase for group 'a' \(en\) \(first at .*dg.jsonl line 1\)"),
    ("group and language in warehouse", "gw.csv",
     lambda p: _csv(p, "group_id,lang,text", "new,en,x", "old,en,again"), [],
     r"gw.csv line 3: group 'old' already has a phrase in en in the warehouse"),
    ("phrase id not an integer", "pi.csv",
     lambda p: _csv(p, "phrase_id,group_id,lang,text", "x1,a,en,x"), [],
     r"pi.csv line 2: phrase_id 'x1' is not an integer"),
    ("bad origin", "o.csv", lambda p: _csv(p, "group_id,en,layer,feature", "a,x,twenty,3"), [],
     r"o.csv line 2: layer 'twenty' is not an integer"),
    ("half an origin", "h.csv", lambda p: _csv(p, "group_id,en,origin_layer", "a,x,3"), [],
     r"origin_layer and origin_feature come together"),
    ("too many fields", "f.csv", lambda p: _csv(p, "group_id,lang,text", "a,en,x", "b,en,y,z"),
     [], r"f.csv: malformed CSV \(Expected 3 fields in line 3, saw 4\)"),
    ("unterminated quote", "q.csv", lambda p: _csv(p, "group_id,lang,text", 'a,en,"x'), [],
     r"q.csv: malformed CSV \(EOF inside string"),
    ("invalid UTF-8 in CSV", "b.csv",
     lambda p: p.write_bytes(b"group_id,lang,text\na,en,ok\nb,en,caf\xe9\n"), [],
     r"b.csv line 3: not valid UTF-8"),
    ("invalid UTF-8 in JSONL", "b.jsonl",
     lambda p: p.write_bytes(b'{"group_id": "a", "lang": "en", "text": "caf\xe9"}\n'), [],
     r"b.jsonl line 1: not valid UTF-8"),
    ("invalid JSON", "j.jsonl",
     lambda p: p.write_text('{"group_id": "a", "lang": "en", "text": "x"}\n{"group_id": \n'), [],
     r"j.jsonl line 2: invalid JSON"),
    ("JSON not an object", "a.jsonl", lambda p: p.write_text("[1, 2]\n"), [],
     r"a.jsonl line 1: expected a JSON object"),
    ("not Parquet", "n.parquet", lambda p: p.write_text("group_id,lang,text\n"), [],
     r"n.parquet: not a readable Parquet file"),
    ("empty file", "empty.csv", lambda p: p.write_text(""), [], r"empty.csv: empty file"),
    ("missing long columns", "m.csv", lambda p: _csv(p, "group_id,lang", "a,en"),
     ["--layout", "long"], r"m.csv: missing column\(s\) text \(has: group_id, lang\)"),
    ("no language columns", "nl.csv", lambda p: _csv(p, "group_id,words", "a,x"), [],
     r"nl.csv: no language columns found"),
    ("missing group column", "mg.csv", lambda p: _csv(p, "en,zh", "x,y"),
     ["--group-col", "item"], r"mg.csv: no column 'item'"),
    ("wide phrase ids", "wp.csv", lambda p: _csv(p, "phrase_id,group_id,en", "5,a,x"), [],
     r"phrase_id column is ambiguous in a wide file"),
    ("unsupported extension", "c.txt", lambda p: p.write_text("x"), [],
     r"c.txt: unsupported file type"),
]  # fmt: skip


@pytest.fixture
def loaded(db_path, tmp_path):
    """A warehouse already holding two phrases (ids 1-2, group 'old')."""
    write(pd.DataFrame({"group_id": ["old"], "en": ["before"], "zh": ["之前"]}), tmp_path / "o.csv")
    with Warehouse(db_path) as wh:
        load_files(wh, [tmp_path / "o.csv"])
    return db_path


@pytest.mark.parametrize(
    ("name", "filename", "make", "args", "message"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS]
)
def test_bad_input_changes_nothing(cli, loaded, tmp_path, name, filename, make, args, message):
    before = snapshot(loaded)
    good = tmp_path / "good.csv"
    # Long, with an `item` column for the --group-col case, so every case's options suit it.
    write(pd.DataFrame({"group_id": ["f"], "item": ["f"], "lang": ["en"], "text": ["f"]}), good)
    bad = tmp_path / filename
    make(bad)
    # A good file first: its rows must not be written either.
    res = cli("corpus", "load", good, bad, *args, "--db", loaded)
    assert res.exit_code == 1, res.output
    assert res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.stderr
    assert re.search(message, lines[0]), lines[0]
    assert snapshot(loaded) == before


@pytest.mark.parametrize("target", ["missing.csv", "dir", "nothing-*.csv"])
def test_bad_paths(cli, loaded, tmp_path, target):
    (tmp_path / "dir").mkdir()
    before = snapshot(loaded)
    res = cli("corpus", "load", tmp_path / target, "--db", loaded)
    assert res.exit_code == 1
    msg = {
        "missing.csv": "does not exist",
        "dir": "is a directory",
        "nothing-*.csv": "no file matches",
    }
    assert msg[target] in res.stderr
    assert snapshot(loaded) == before


def test_glob_of_files(cli, db_path, tmp_path):
    for i, g in enumerate(GROUPS):
        write(pd.DataFrame([{"group_id": g, **GROUPS[g]}]), tmp_path / f"part-{i}.csv")
    res = cli("corpus", "load", str(tmp_path / "part-*.csv"), "--db", db_path)
    assert res.exit_code == 0, res.output
    got = phrases(db_path)
    assert list(zip(got.group_id, got.lang, got.text, strict=True)) == expected_rows()


def test_stats_against_raw_rows(cli, db_path, tmp_path):
    rows = [("g1", "en"), ("g1", "zh"), ("g1", "hi"), ("g2", "en"), ("g2", "zh"), ("g3", "zh")]
    df = pd.DataFrame(rows, columns=["group_id", "lang"]).assign(text="t")
    write(df, tmp_path / "s.csv")
    assert cli("corpus", "load", tmp_path / "s.csv", "--db", db_path).exit_code == 0
    res = cli("corpus", "stats", "--db", db_path, "--format", "json")
    assert res.exit_code == 0, res.output
    got = {r["lang"]: r for r in json.loads(res.stdout)}
    n_groups = df.group_id.nunique()
    for lang, n in df.lang.value_counts().items():
        assert got[lang]["phrases"] == n
        assert got[lang]["groups_pct"] == pytest.approx(100 * n / n_groups)
    assert got["ru"]["phrases"] == 0
    per_group = df.groupby("group_id").lang.agg(set)
    complete = sum(s == set(df.lang) for s in per_group)
    with_en = sum("en" in s for s in per_group)
    assert res.stderr.strip() == (
        f"6 phrases in 3 groups; {complete} complete (all 3 corpus languages), "
        f"{with_en} with English"
    )
    table = cli("corpus", "stats", "--db", db_path)
    assert table.exit_code == 0 and "Hindi" in table.stdout and "1 complete" in table.stdout


def test_languages_add_then_load(cli, db_path, tmp_path):
    write(pd.DataFrame({"group_id": ["g"], "en": ["house"], "de": ["Haus"]}), tmp_path / "d.csv")
    res = cli("corpus", "load", tmp_path / "d.csv", "--db", db_path)
    assert res.exit_code == 1 and "unknown language code 'de'" in res.stderr
    res = cli("corpus", "languages", "add", "de", "German", "--group", "high", "--db", db_path)
    assert res.exit_code == 0, res.output
    assert cli("corpus", "load", tmp_path / "d.csv", "--db", db_path).exit_code == 0
    assert phrases(db_path).lang.tolist() == ["en", "de"]
    listed = cli("corpus", "languages", "list", "--db", db_path, "-f", "csv")
    assert "de,German,high" in listed.stdout
    for args, msg in [
        (["de", "German", "--group", "high"], "exists"),
        (["fr", "French", "--group", "medium"], "resource group must be one of high, low"),
        (["not a code", "X", "--group", "low"], "is not a language code"),
    ]:
        res = cli("corpus", "languages", "add", *args, "--db", db_path)
        assert res.exit_code == 1 and msg in res.stderr, res.stderr


def test_gzip_jsonl_numbers_become_text(wh, tmp_path):
    path = tmp_path / "n.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write(json.dumps({"group_id": 17, "lang": "en", "text": 42}) + "\n")
    load_files(wh, [path])
    assert wh.con.execute("SELECT group_id, text FROM phrases").fetchall() == [("17", "42")]


def test_csv_quoting_round_trip(wh, tmp_path):
    """Texts with newlines, quotes and separators survive the CSV reader."""
    path = tmp_path / "q.csv"
    texts = ["line one\nline two", 'say "hi", then go', "tab\there"]
    with path.open("w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(["group_id", "lang", "text"])
        out.writerows([f"g{i}", "en", t] for i, t in enumerate(texts))
    load_files(wh, [path])
    assert [
        r[0] for r in wh.con.execute("SELECT text FROM phrases ORDER BY 1").fetchall()
    ] == sorted(texts)


# -- CLDR -------------------------------------------------------------------------------

TEN = ("en", "zh", "ru", "es", "it", "id", "ca", "mr", "ml", "hi")
NON_LATIN = ("zh", "ru", "mr", "ml", "hi")


def latin_only(text: str) -> bool:
    """Independent of the loader: every letter's Unicode name says LATIN."""
    return all(unicodedata.name(c).startswith("LATIN") for c in text if c.isalpha())


def test_cldr_all_kinds_ten_languages(wh):
    from xling.ingest.cldr import load_cldr

    result = load_cldr(wh)
    got = wh.sql("SELECT group_id, lang, text FROM phrases")
    assert result.phrases == len(got) > 10_000
    assert set(got.lang) == set(TEN)
    assert set(got.group_id.str.split(":").str[0]) == {
        "languages", "territories", "scripts", "currencies", "months", "weekdays",
    }  # fmt: skip
    assert not (got.text.str.strip() == "").any()
    non_latin = got[got.lang.isin(NON_LATIN)]
    assert not non_latin.text.map(latin_only).any()
    names = got.set_index(["group_id", "lang"]).text
    assert names["territories:DE", "en"] == "Germany"
    assert names["territories:DE", "zh"] == "德国"
    assert names["months:1", "ru"] == "январь"
    assert names["weekdays:mon", "hi"] == "सोमवार"
    assert (got.groupby("group_id").size() == 10).sum() > 1000
    # A rerun adds nothing and changes nothing.
    again = load_cldr(wh)
    assert again.phrases == 0 and again.skipped == result.phrases


def test_cldr_cli_kinds_langs_limit(cli, db_path):
    res = cli(
        "corpus", "cldr", "--kinds", "months,weekdays", "--langs", "en,zh,hi", "--db", db_path
    )
    assert res.exit_code == 0, res.output
    got = phrases(db_path)
    assert len(got) == 19 * 3 and set(got.lang) == {"en", "zh", "hi"}
    assert got[got.group_id == "weekdays:sun"].text.tolist() == ["Sunday", "星期日", "रविवार"]
    res = cli("corpus", "cldr", "--kinds", "territories", "--limit", "5", "--db", db_path)
    assert res.exit_code == 0, res.output
    terr = phrases(db_path).query("group_id.str.startswith('territories:')")
    assert terr.group_id.nunique() == 5
    assert (terr.groupby("group_id").size() == 10).all()  # complete groups first
    res = cli("corpus", "cldr", "--kinds", "planets", "--db", db_path)
    assert res.exit_code == 1 and "unknown CLDR kind(s) planets" in res.stderr


def test_is_latin():
    from xling.ingest.cldr import is_latin, locale_script

    assert is_latin("Germany") and is_latin("Čeština") and is_latin("ISO 4217")
    assert not is_latin("德国") and not is_latin("यूरो") and not is_latin("Германия")
    assert [locale_script(x) for x in ("en", "ru", "hi", "ml", "zh")] == [
        "Latn", "Cyrl", "Deva", "Mlym", "Hans",
    ]  # fmt: skip


# -- values and columns that could be read two ways ------------------------------------------


def test_json_booleans_are_stored_as_json_writes_them(wh, tmp_path):
    path = tmp_path / "b.jsonl"
    path.write_text(
        '{"group_id": "g1", "lang": "en", "text": true}\n'
        '{"group_id": "g2", "lang": "en", "text": false, "source": true}\n'
    )
    load_files(wh, [path])
    got = wh.sql("SELECT group_id, text, source FROM phrases ORDER BY group_id")
    assert got.text.tolist() == ["true", "false"]
    assert got.source.tolist() == ["b.jsonl", "true"]


def test_a_wide_id_column_is_read_as_the_user_says(wh, tmp_path):
    """`id` is the code of Indonesian and the usual name of a row-id column: a file where it
    could be either is refused (see the bad-input matrix); naming the id column or the
    language columns settles it."""
    rows = tmp_path / "rows.csv"
    rows.write_text("id,en,zh\n1,hello,ni hao\n2,bye,zai jian\n")
    load_files(wh, [rows], CorpusFormat(group_col="id"))
    got = wh.sql("SELECT group_id, lang, text FROM phrases ORDER BY group_id, lang")
    assert list(zip(got.group_id, got.lang, got.text, strict=True)) == [
        ("1", "en", "hello"), ("1", "zh", "ni hao"), ("2", "en", "bye"), ("2", "zh", "zai jian"),
    ]  # fmt: skip
    both = tmp_path / "both.csv"
    both.write_text("group_id,id,en\ng7,7,seven\n")
    load_files(wh, [both], CorpusFormat(langs=["en"]))
    assert wh.sql("SELECT lang, text FROM phrases WHERE group_id = 'g7'").values.tolist() == [
        ["en", "seven"]
    ]
    indonesian = tmp_path / "indonesian.csv"
    indonesian.write_text("group_id,en,id\ng8,house,rumah\n")
    load_files(wh, [indonesian])
    got = wh.sql("SELECT lang, text FROM phrases WHERE group_id = 'g8' ORDER BY lang")
    assert got.values.tolist() == [["en", "house"], ["id", "rumah"]]
