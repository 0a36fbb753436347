"""The parallel corpus: file readers and the one validated loader every corpus source uses.

Readers turn CSV/TSV/JSONL/Parquet files, wide (a column per language) or long (a `lang`
column), into one long frame of phrases. `load_phrases` validates such a frame against the
warehouse (languages known, text present, no duplicate ids or (group, language) pairs),
assigns phrase ids and appends everything in one transaction, or raises `XlingError` having
written nothing. Neuronpedia, CLDR and translation build frames and hand them to it too.
"""

from __future__ import annotations

import glob
import gzip
import json
import logging
import os
import re
import warnings
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
import pyarrow as pa

from xling.warehouse.errors import XlingError
from xling.warehouse.writer import append_arrow

if TYPE_CHECKING:
    from xling.warehouse import Warehouse

log = logging.getLogger(__name__)

# Column order and types of `phrases`; loaders build frames with (a subset of) these names.
PHRASE_SCHEMA = pa.schema(
    [
        ("phrase_id", pa.int64()),
        ("group_id", pa.string()),
        ("lang", pa.string()),
        ("text", pa.string()),
        ("source", pa.string()),
        ("origin_layer", pa.int32()),
        ("origin_feature", pa.int32()),
    ]
)
# Where a row came from, for error messages: `_file` ("a.csv line") and `_line` (a number).
LOCATION_COLUMNS = ("_file", "_line")

# (layer column, feature column) pairs naming a phrase's origin SAE feature, in order of
# preference: xling's own names, then names found in Neuronpedia-derived tables.
ORIGIN_COLUMN_PAIRS = (
    ("origin_layer", "origin_feature"),
    ("layer", "feature"),
    ("layer", "index"),
    ("Layer Number", "Index Number"),
    ("layer_number", "index_number"),
)
LANG_CODE = r"[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})*"
_LANG_CODE_RE = re.compile(f"^{LANG_CODE}$")
RESOURCE_GROUPS = ("high", "low")
# A phrase is a snippet (ingest reads at most --max-tokens tokens of it); a longer text is a
# broken file far more often than a real phrase, e.g. a quote left open swallowing lines.
MAX_TEXT_CHARS = 100_000
# What reading a damaged file raises: OSError (incl. gzip.BadGzipFile), EOFError (a truncated
# .gz) and zlib.error (a damaged deflate stream, not an OSError).
READ_ERRORS = (OSError, EOFError, zlib.error)

# Readers by file suffix (after an optional .gz).
_CSV_SUFFIXES = {".csv": ",", ".tsv": "\t"}
_JSONL_SUFFIXES = {".jsonl", ".ndjson"}
_PARQUET_SUFFIXES = {".parquet", ".pq"}
SUPPORTED_SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson", ".parquet", ".pq")


@dataclass
class CorpusFormat:
    """How to read the columns of corpus files (`xling corpus load`)."""

    layout: Literal["auto", "wide", "long"] = "auto"
    """`long`: one row per phrase (group, lang, text); `wide`: one row per group and a text
    column per language; `auto`: long when the file has the lang and text columns."""
    group_col: str = "group_id"
    """Column aligning translations. Wide files without it get `<file name>:<row>` ids."""
    lang_col: str = "lang"
    """Long files: the language code column."""
    text_col: str = "text"
    """Long files: the phrase text column."""
    text_pattern: str = "{lang}"
    """Wide files: text column names, `{lang}` standing for the code (`phraseWindow_{lang}`)."""
    source: str | None = None
    """Value of `phrases.source` where the file has no `source` column [default: file name]."""
    skip_empty: bool = False
    """Wide files: an empty cell means "no phrase in this language" instead of an error."""

    def __post_init__(self) -> None:
        if self.layout not in ("auto", "wide", "long"):
            raise XlingError(f"unknown layout {self.layout!r}; use auto, wide or long")
        if self.text_pattern.count("{lang}") != 1:
            raise XlingError(
                f"text pattern {self.text_pattern!r} must contain {{lang}} once, "
                "e.g. 'phraseWindow_{lang}'"
            )
        for name in ("group_col", "lang_col", "text_col"):
            if not getattr(self, name):
                raise XlingError(f"{name.replace('_', '-')} must not be empty")


@dataclass
class LoadResult:
    """What a load added to `phrases`."""

    phrases: int
    groups: int
    new_groups: int
    by_lang: dict[str, int]
    skipped: int = 0
    """Rows whose (group, language) was already in the warehouse (when asked to skip)."""
    notes: list[str] = field(default_factory=list)
    """Things worth telling the user, e.g. columns that were ignored."""


# -- paths ---------------------------------------------------------------------------------


def expand_paths(patterns: Iterable[str | os.PathLike], suffixes: Sequence[str]) -> list[Path]:
    """Files named by `patterns` (paths or quoted globs), checked to exist and be readable."""
    out: list[Path] = []
    for pattern in patterns:
        text = str(pattern)
        path = Path(text)
        if not path.exists() and glob.has_magic(text):
            matches = sorted(Path(p) for p in glob.glob(text) if Path(p).is_file())
            if not matches:
                raise XlingError(f"no file matches {text}")
            candidates = matches
        else:
            candidates = [path]
        for p in candidates:
            if not p.exists():
                raise XlingError(f"{p} does not exist")
            if p.is_dir():
                raise XlingError(f"{p} is a directory; pass its files, e.g. {p}/*{suffixes[0]}")
            if _suffix(p) not in suffixes:
                raise XlingError(
                    f"{p}: unsupported file type; use {', '.join(suffixes)} (optionally .gz)"
                )
            out.append(p)
    if not out:
        raise XlingError("no input files given")
    return out


def _suffix(path: Path) -> str:
    """`.csv` for `a.csv` and `a.csv.gz`."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


def open_bytes(path: Path):
    """A binary file object, decompressing `.gz` files."""
    return gzip.open(path, "rb") if path.suffix.lower() == ".gz" else open(path, "rb")


def first_bad_utf8_line(path: Path) -> int | None:
    """1-based line number of the first line that is not valid UTF-8, if any."""
    try:
        with open_bytes(path) as f:
            for number, line in enumerate(f, start=1):
                try:
                    line.decode("utf-8")
                except UnicodeDecodeError:
                    return number
    except READ_ERRORS:
        return None
    return None


def _not_utf8(path: Path) -> XlingError:
    line = first_bad_utf8_line(path)
    where = f"{path} line {line}" if line else str(path)
    return XlingError(f"{where}: not valid UTF-8; re-save the file as UTF-8")


# -- reading one file ------------------------------------------------------------------------


@dataclass
class _Raw:
    """A file's columns as read, and how to name its rows in messages."""

    frame: pd.DataFrame
    unit: str
    """"line" (text files) or "row" (Parquet)."""
    numbers: np.ndarray
    """The line or row number of each frame row."""

    def where(self, path: Path, row: int) -> str:
        return f"{path} {self.unit} {self.numbers[row]}"


def read_table(path: Path) -> _Raw:
    """Read one CSV/TSV/JSONL/Parquet file; every CSV cell a string, empty cells null."""
    suffix = _suffix(path)
    if suffix in _CSV_SUFFIXES:
        frame = _read_csv(path, _CSV_SUFFIXES[suffix])
        # Line numbers assume no quoted line breaks, true of nearly every corpus file.
        return _Raw(frame, "line", np.arange(len(frame)) + 2)
    if suffix in _JSONL_SUFFIXES:
        return _read_jsonl(path)
    if suffix in _PARQUET_SUFFIXES:
        frame = _read_parquet(path)
        return _Raw(frame, "row", np.arange(len(frame)) + 1)
    raise XlingError(f"{path}: unsupported file type; use {', '.join(SUPPORTED_SUFFIXES)}")


def _read_csv(path: Path, sep: str) -> pd.DataFrame:
    kind = "TSV" if sep == "\t" else "CSV"
    try:
        # A first row with one field more than the header would silently become the index
        # (shifting every column); index_col=False makes that a ParserWarning, raised here.
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            # Only truly empty cells are missing: text such as "NA" or "null" is a phrase.
            return pd.read_csv(
                path,
                sep=sep,
                dtype=str,
                keep_default_na=False,
                na_values=[""],
                encoding="utf-8",
                encoding_errors="strict",
                engine="c",
                index_col=False,
            )
    except UnicodeDecodeError:
        raise _not_utf8(path) from None
    except pd.errors.EmptyDataError:
        raise XlingError(f"{path}: empty file; a {kind} file needs a header row") from None
    except (pd.errors.ParserError, pd.errors.ParserWarning, ValueError) as err:
        detail = str(err).strip().splitlines()[0].removeprefix("Error tokenizing data. C error: ")
        raise XlingError(f"{path}: malformed {kind} ({detail}); fix the file") from None
    except READ_ERRORS as err:
        raise XlingError(f"{path}: cannot read ({err}); is the file complete?") from None


def _read_jsonl(path: Path) -> _Raw:
    records, numbers = [], []
    try:
        with open_bytes(path) as f:
            for number, raw in enumerate(f, start=1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise XlingError(
                        f"{path} line {number}: not valid UTF-8; re-save the file as UTF-8"
                    ) from None
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise XlingError(
                        f"{path} line {number}: invalid JSON ({err.msg}); one object per line"
                    ) from None
                if not isinstance(record, dict):
                    raise XlingError(
                        f"{path} line {number}: expected a JSON object, got {type(record).__name__}"
                    )
                records.append(record)
                numbers.append(number)
    except READ_ERRORS as err:
        raise XlingError(f"{path}: cannot read ({err}); is the file complete?") from None
    if not records:
        raise XlingError(f"{path}: no records; expected one JSON object per line")
    return _Raw(pd.DataFrame.from_records(records), "line", np.array(numbers))


def _read_parquet(path: Path) -> pd.DataFrame:
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pandas()
    except (pa.ArrowException, OSError) as err:
        detail = str(err).strip().splitlines()[0]
        raise XlingError(f"{path}: not a readable Parquet file ({detail})") from None


# -- one file into the long frame -------------------------------------------------------------


def read_corpus_file(
    path: Path, fmt: CorpusFormat, languages: Iterable[str], notes: list[str] | None = None
) -> pd.DataFrame:
    """One file as a long frame: group_id, lang, text (+ phrase_id, source, origin, location).

    Columns the file has but the load does not use are named in `notes`."""
    raw = read_table(path)
    df = raw.frame
    df.columns = [str(c) for c in df.columns]
    columns = set(df.columns)
    long = fmt.lang_col in columns and fmt.text_col in columns
    layout = fmt.layout if fmt.layout != "auto" else ("long" if long else "wide")
    if layout == "long":
        out = _long_rows(path, raw, fmt)
    else:
        out = _wide_rows(path, raw, fmt, set(languages))
    if out.empty:
        raise XlingError(f"{path}: no phrases in the file; it needs a header and data rows")
    origin = _origin(path, raw)
    rows = out.pop("_row").to_numpy()
    if origin is not None:
        out["origin_layer"] = origin[0][rows]
        out["origin_feature"] = origin[1][rows]
    out["_line"] = raw.numbers[rows]
    if "source" not in out:
        out["source"] = None
    out["source"] = out["source"].fillna(fmt.source or path.name)
    out["_file"] = f"{path} {raw.unit}"
    if notes is not None:
        used = _used_columns(df.columns, fmt, layout, set(languages))
        ignored = [c for c in df.columns if c not in used]
        if ignored:
            notes.append(f"{path.name}: ignored column(s) {_column_list(ignored)}")
    return out


def _used_columns(
    columns: Iterable[str], fmt: CorpusFormat, layout: str, languages: set[str]
) -> set[str]:
    used = {fmt.group_col, "phrase_id", "source", *(_origin_pair(columns) or ())}
    if layout == "long":
        return used | {fmt.lang_col, fmt.text_col}
    return used | set(_language_columns(columns, fmt, languages).values())


def _column_list(names: Iterable) -> str:
    """Column names for a message: plain, or quoted when they hold spaces, commas or line
    breaks (a message stays one line whatever a header holds)."""
    return ", ".join(str(n) if re.fullmatch(r"[^\s,'\"]+", str(n)) else repr(str(n)) for n in names)


def _require(path: Path, df: pd.DataFrame, needed: Sequence[str], hint: str) -> None:
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise XlingError(
            f"{path}: missing column(s) {_column_list(missing)} "
            f"(has: {_column_list(df.columns[:12])}); {hint}"
        )


def _long_rows(path: Path, raw: _Raw, fmt: CorpusFormat) -> pd.DataFrame:
    df = raw.frame
    _require(
        path,
        df,
        [fmt.group_col, fmt.lang_col, fmt.text_col],
        "long files need group_id, lang, text (rename with --group-col/--lang-col/--text-col)",
    )
    out = pd.DataFrame(
        {
            "_row": np.arange(len(df)),
            "group_id": _text_column(path, raw, fmt.group_col),
            "lang": _text_column(path, raw, fmt.lang_col),
            "text": _text_column(path, raw, fmt.text_col),
        }
    )
    if "phrase_id" in df.columns:
        out["phrase_id"] = _integers(path, raw, "phrase_id", prefix_ok=False, bits=64)
    if "source" in df.columns:
        out["source"] = _text_column(path, raw, "source")
    return out


def _wide_rows(path: Path, raw: _Raw, fmt: CorpusFormat, languages: set[str]) -> pd.DataFrame:
    df = raw.frame
    lang_cols = _language_columns(df.columns, fmt, languages)
    if not lang_cols:
        raise XlingError(
            f"{path}: no language columns found (has: {_column_list(df.columns[:12])}); "
            "wide files need a column per language such as en, zh (or pass --text-pattern "
            "'phraseWindow_{lang}'), long files need group_id, lang, text"
        )
    if "phrase_id" in df.columns:
        raise XlingError(
            f"{path}: a phrase_id column is ambiguous in a wide file (one row holds several "
            "phrases); drop it, or use a long file (group_id, lang, text, phrase_id)"
        )
    n, k = len(df), len(lang_cols)
    if fmt.group_col in df.columns:
        groups = _text_column(path, raw, fmt.group_col).to_numpy()
    elif fmt.group_col != CorpusFormat.group_col:
        raise XlingError(f"{path}: no column {fmt.group_col!r} (from --group-col)")
    else:
        # Without group ids every row is its own group, named after the file and row, so
        # loading the same file twice is caught as a duplicate.
        groups = np.array([f"{path.name}:{i + 1}" for i in range(n)], dtype=object)
    texts = np.column_stack(
        [_text_column(path, raw, c).to_numpy(dtype=object) for c in lang_cols.values()]
    )
    # Row-major flattening keeps file order: row 0's languages, then row 1's, ...
    out = pd.DataFrame(
        {
            "_row": np.repeat(np.arange(n), k),
            "group_id": np.repeat(groups, k),
            "lang": np.tile(np.array(list(lang_cols), dtype=object), n),
            "text": texts.reshape(-1),
        }
    )
    if "source" in df.columns:
        out["source"] = np.repeat(_text_column(path, raw, "source").to_numpy(dtype=object), k)
    if fmt.skip_empty:
        out = out[out["text"].notna()].reset_index(drop=True)
    return out


def _language_columns(
    columns: Iterable[str], fmt: CorpusFormat, languages: set[str]
) -> dict[str, str]:
    """{lang: column} for the columns that `fmt.text_pattern` names.

    With a bare `{lang}` pattern only codes in the languages table and two-letter lowercase
    codes count (so columns like `url` or `note` are ignored); with a pattern such as
    `phraseWindow_{lang}` every match does, and an unknown code is then an error later.
    """
    prefix, suffix = fmt.text_pattern.split("{lang}")
    regex = re.compile(f"^{re.escape(prefix)}(?P<lang>{LANG_CODE}){re.escape(suffix)}$")
    reserved = {fmt.group_col, "phrase_id", "source"} | {c for p in ORIGIN_COLUMN_PAIRS for c in p}
    bare = not prefix and not suffix
    out: dict[str, str] = {}
    for col in columns:
        m = regex.match(col)
        if not m or col in reserved:
            continue
        lang = m.group("lang")
        if bare and lang not in languages and not re.fullmatch(r"[a-z]{2}", lang):
            continue
        out[lang] = col
    return out


def _origin(path: Path, raw: _Raw) -> tuple[np.ndarray, np.ndarray] | None:
    """(layer, feature) per file row as nullable integers, or None if the file has none."""
    df = raw.frame
    if ("origin_layer" in df.columns) != ("origin_feature" in df.columns):
        raise XlingError(
            f"{path}: origin_layer and origin_feature come together; add the missing one"
        )
    pair = _origin_pair(df.columns)
    if pair is None:
        return None
    layer_col, feature_col = pair
    layer = _integers(path, raw, layer_col, prefix_ok=True, bits=32, minimum=0)
    feature = _integers(path, raw, feature_col, prefix_ok=False, bits=32, minimum=0)
    return layer.to_numpy(), feature.to_numpy()


def _origin_pair(columns: Iterable[str]) -> tuple[str, str] | None:
    have = set(columns)
    return next((p for p in ORIGIN_COLUMN_PAIRS if set(p) <= have), None)


def _strings(s: pd.Series) -> pd.Series:
    """Values as Python strings (numbers in JSON or Parquet become text), nulls as None."""
    return s.astype(str).astype(object).where(s.notna(), None)


_NOT_TEXT = (dict, list, tuple, bytes, bytearray, np.ndarray)


def _text_column(path: Path, raw: _Raw, col: str) -> pd.Series:
    """A file column as strings; JSON objects or arrays, Parquet lists or binary are refused
    (their Python repr would otherwise be stored as a phrase)."""
    s = raw.frame[col]
    if s.dtype == object:
        bad = s.map(lambda v: isinstance(v, _NOT_TEXT)).to_numpy(dtype=bool)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            value = s.iloc[i]
            kind = "binary" if isinstance(value, bytes | bytearray) else type(value).__name__
            raise XlingError(
                f"{raw.where(path, i)}: {col} holds a {kind} value ({str(value)[:40]}); "
                "expected text"
            )
    return _strings(s)


_INT_RE = r"^\s*(-?\d+)(?:\.0*)?\s*$"
_INT_PREFIX_RE = r"^\s*(-?\d+)"


def _integers(
    path: Path, raw: _Raw, col: str, *, prefix_ok: bool, bits: int, minimum: int | None = None
) -> pd.Series:
    """Column `col` as nullable Int64, each value checked to fit a signed `bits`-bit column
    (and to be >= `minimum`). `prefix_ok` reads Neuronpedia layer ids such as
    `20-gemmascope-res-16k` as 20."""
    s = raw.frame[col]
    if pd.api.types.is_integer_dtype(s.dtype):
        digits = s.astype(object).where(s.notna(), None)
    else:
        text = s.astype(object).where(s.notna(), None)
        text = text.map(lambda v: None if v is None else str(v))
        digits = text.str.extract(_INT_PREFIX_RE if prefix_ok else _INT_RE, expand=False)
        bad = text.notna() & digits.isna()
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise XlingError(
                f"{raw.where(path, i)}: {col} {text.iloc[i]!r} is not an integer; fix the value"
            )
    # Python ints (a list, not a Series that would turn missing values into NaN floats):
    # exact however many digits the file holds, then checked against the column's range.
    values = [None if pd.isna(d) else int(d) for d in digits]
    lo = -(2 ** (bits - 1)) if minimum is None else minimum
    hi = 2 ** (bits - 1) - 1
    for i, v in enumerate(values):
        if v is not None and not lo <= v <= hi:
            raise XlingError(f"{raw.where(path, i)}: {col} {v} is out of range ({lo} to {hi})")
    return pd.array(values, dtype="Int64")


def read_corpus(
    paths: Iterable[str | os.PathLike],
    fmt: CorpusFormat,
    languages: Iterable[str],
    notes: list[str] | None = None,
) -> pd.DataFrame:
    """Every file of `paths` (globs allowed) as one long frame, in file order."""
    langs = list(languages)
    files = expand_paths(paths, SUPPORTED_SUFFIXES)
    frames = [read_corpus_file(p, fmt, langs, notes) for p in files]
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


# -- the loader ------------------------------------------------------------------------------


def load_files(
    wh: Warehouse, paths: Iterable[str | os.PathLike], fmt: CorpusFormat | None = None
) -> LoadResult:
    """Read corpus files and load them (`xling corpus load`)."""
    fmt = fmt or CorpusFormat()
    notes: list[str] = []
    rows = read_corpus(paths, fmt, known_languages(wh), notes)
    result = load_phrases(wh, rows)
    result.notes.extend(notes)
    return result


def known_languages(wh: Warehouse) -> list[str]:
    return [r[0] for r in wh.con.execute("SELECT lang FROM languages ORDER BY lang").fetchall()]


def load_phrases(
    wh: Warehouse,
    rows: pd.DataFrame,
    *,
    on_existing: Literal["error", "skip"] = "error",
) -> LoadResult:
    """Validate `rows` and append them to `phrases` in one transaction.

    `rows` needs group_id, lang, text; phrase_id, source, origin_layer, origin_feature and
    the location columns `_file`/`_line` are optional. Missing phrase ids are assigned after
    the largest id in use. Phrases without an origin inherit their group's (from these rows
    or the warehouse) when the group has exactly one. A (group, language) pair already in
    the warehouse is an error, or is skipped with `on_existing="skip"`. Any problem raises
    `XlingError` before anything is written.
    """
    df = rows.reset_index(drop=True).copy()
    for col in ("phrase_id", "source", "origin_layer", "origin_feature", *LOCATION_COLUMNS):
        if col not in df:
            df[col] = None
    df["phrase_id"] = df["phrase_id"].astype("Int64")
    _check_values(wh, df)
    skipped = 0
    existing = _existing_pairs(wh, df)
    if existing.any():
        if on_existing == "skip":
            skipped = int(existing.sum())
            df = df[~existing].reset_index(drop=True)
        else:
            i = int(np.flatnonzero(existing)[0])
            raise XlingError(
                f"{_where(df, i)}group {df.group_id[i]!r} already has a phrase in "
                f"{df.lang[i]} in the warehouse; drop it from the input, or delete the old one "
                "first"
            )
    _check_ids(wh, df)
    table = _finish(wh, df)
    new_groups = _count_new_groups(wh, table)
    with wh.transaction() as con:
        append_arrow(con, "phrases", table)
    by_lang = df["lang"].value_counts(sort=False).to_dict()
    log.info("loaded %d phrases (%d skipped)", table.num_rows, skipped)
    return LoadResult(
        phrases=table.num_rows,
        groups=int(df["group_id"].nunique()),
        new_groups=new_groups,
        by_lang={str(k): int(v) for k, v in sorted(by_lang.items())},
        skipped=skipped,
    )


def _loc(df: pd.DataFrame, i: int) -> str | None:
    """'a.csv line 7' for row i, or None when rows carry no location."""
    file = df["_file"].iloc[i]
    return None if pd.isna(file) else f"{file} {int(df['_line'].iloc[i])}"


def _where(df: pd.DataFrame, i: int) -> str:
    loc = _loc(df, i)
    return f"{loc}: " if loc else ""


def _check_values(wh: Warehouse, df: pd.DataFrame) -> None:
    group = df["group_id"]
    bad_group = group.isna() | (group.fillna("").astype(str).str.strip() == "")
    if bad_group.any():
        i = int(np.flatnonzero(bad_group.to_numpy())[0])
        raise XlingError(f"{_where(df, i)}empty group_id; every phrase needs a group id")
    text = df["text"]
    empty = text.isna() | (text.fillna("").astype(str).str.strip() == "")
    if empty.any():
        i = int(np.flatnonzero(empty.to_numpy())[0])
        raise XlingError(
            f"{_where(df, i)}empty text for group {df.group_id[i]!r} ({df.lang[i]}); "
            "fill it in or drop the row (wide files: --skip-empty treats empty cells as "
            "missing translations)"
        )
    long = text.str.len().to_numpy(dtype=float) > MAX_TEXT_CHARS
    if long.any():
        i = int(np.flatnonzero(long)[0])
        raise XlingError(
            f"{_where(df, i)}text of {len(text.iloc[i]):,} characters for group "
            f"{df.group_id[i]!r} ({df.lang[i]}); phrases are at most {MAX_TEXT_CHARS:,} "
            "characters: split it, or look for a quote left open in the file"
        )
    known = set(known_languages(wh))
    unknown = ~df["lang"].isin(known) | df["lang"].isna()
    if unknown.any():
        i = int(np.flatnonzero(unknown.to_numpy())[0])
        code = df.lang[i]
        raise XlingError(
            f"{_where(df, i)}unknown language code {code!r}; add it first with "
            f"`xling corpus languages add {code} NAME --group high|low` or "
            f"`xling sql \"INSERT INTO languages VALUES ('{code}', 'NAME', 'low')\" --write`"
        )
    pairs = df.duplicated(["group_id", "lang"], keep=False)
    if pairs.any():
        i, j = (int(k) for k in np.flatnonzero(pairs.to_numpy())[:2])
        first = f" (first at {_loc(df, i)})" if _loc(df, i) else ""
        raise XlingError(
            f"{_where(df, j)}duplicate phrase for group {df.group_id[j]!r} ({df.lang[j]})"
            f"{first}; keep one"
        )


def _check_ids(wh: Warehouse, df: pd.DataFrame) -> None:
    ids = df["phrase_id"]
    given = ids.notna()
    if not given.any():
        return
    dup = ids.duplicated(keep="first") & given
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise XlingError(
            f"{_where(df, i)}duplicate phrase_id {int(ids.iloc[i])}; phrase ids must be unique"
        )
    wanted = pa.table({"phrase_id": pa.array(ids[given].astype("int64").to_numpy())})
    hit = _first_match(
        wh, wanted, "SELECT t.phrase_id FROM {t} t JOIN phrases p USING (phrase_id) LIMIT 1"
    )
    if hit is not None:
        i = int(np.flatnonzero((ids == hit[0]).fillna(False).to_numpy())[0])
        raise XlingError(
            f"{_where(df, i)}phrase_id {hit[0]} is already in the warehouse; drop the phrase_id "
            "column to let xling number the phrases"
        )


def _existing_pairs(wh: Warehouse, df: pd.DataFrame) -> np.ndarray:
    """Mask of rows whose (group_id, lang) is already in `phrases`."""
    keys = pa.table(
        {
            "i": pa.array(np.arange(len(df))),
            "group_id": pa.array(df["group_id"].astype(str).to_numpy(), pa.string()),
            "lang": pa.array(df["lang"].astype(str).to_numpy(), pa.string()),
        }
    )
    name = "_xling_keys"
    wh.con.register(name, keys)
    try:
        hits = wh.con.execute(
            f"SELECT k.i FROM {name} k JOIN phrases p USING (group_id, lang)"
        ).fetchnumpy()["i"]
    finally:
        wh.con.unregister(name)
    mask = np.zeros(len(df), dtype=bool)
    mask[np.asarray(hits, dtype=np.int64)] = True
    return mask


def _first_match(wh: Warehouse, table: pa.Table, query: str) -> tuple | None:
    name = "_xling_probe"
    wh.con.register(name, table)
    try:
        rows = wh.con.execute(query.format(t=name)).fetchall()
        return rows[0] if rows else None
    finally:
        wh.con.unregister(name)


def _finish(wh: Warehouse, df: pd.DataFrame) -> pa.Table:
    """The rows as a `phrases` Arrow table: ids assigned, origins inherited."""
    ids = df["phrase_id"]
    missing = ids.isna().to_numpy()
    if missing.any():
        in_use = wh.con.execute("SELECT coalesce(max(phrase_id), 0) FROM phrases").fetchall()
        start = max(int(in_use[0][0]), int(ids.max()) if (~missing).any() else 0) + 1
        ids = ids.copy()
        ids[missing] = np.arange(start, start + int(missing.sum()))
    table = pa.table(
        {
            "phrase_id": pa.array(ids.to_numpy(dtype=np.int64), pa.int64()),
            "group_id": pa.array(df["group_id"].astype(str).to_numpy(), pa.string()),
            "lang": pa.array(df["lang"].astype(str).to_numpy(), pa.string()),
            "text": pa.array(df["text"].astype(str).to_numpy(), pa.string()),
            "source": pa.array(_strings(df["source"]).to_numpy(), pa.string()),
            "origin_layer": _int32(df["origin_layer"]),
            "origin_feature": _int32(df["origin_feature"]),
        },
        schema=PHRASE_SCHEMA,
    )
    return _inherit_origin(wh, table)


def _int32(s: pd.Series) -> pa.Array:
    return pa.array(pd.array(s, dtype="Int64")).cast(pa.int32())


def _inherit_origin(wh: Warehouse, table: pa.Table) -> pa.Table:
    """Fill a phrase's missing origin from its group when the group has exactly one origin
    (translations added later belong to the same SAE feature as their English phrase)."""
    if table.column("origin_layer").null_count == 0:
        return table
    name = "_xling_new"
    wh.con.register(name, table)
    try:
        return wh.con.sql(
            f"""
            WITH known AS (
                SELECT group_id, origin_layer, origin_feature FROM phrases
                WHERE origin_layer IS NOT NULL AND group_id IN (SELECT group_id FROM {name})
                UNION ALL
                SELECT group_id, origin_layer, origin_feature FROM {name}
                WHERE origin_layer IS NOT NULL
            ), single AS (
                SELECT group_id, min(origin_layer) AS l, min(origin_feature) AS f FROM known
                GROUP BY group_id
                HAVING count(DISTINCT (origin_layer, origin_feature)) = 1
            )
            SELECT n.phrase_id, n.group_id, n.lang, n.text, n.source,
                   coalesce(n.origin_layer, s.l)::INTEGER AS origin_layer,
                   CASE WHEN n.origin_layer IS NULL THEN s.f ELSE n.origin_feature END::INTEGER
                       AS origin_feature
            FROM {name} n LEFT JOIN single s USING (group_id)
            ORDER BY n.phrase_id
            """
        ).to_arrow_table()
    finally:
        wh.con.unregister(name)


def _count_new_groups(wh: Warehouse, table: pa.Table) -> int:
    name = "_xling_new"
    wh.con.register(name, table.select(["group_id"]))
    try:
        query = (
            f"SELECT count(DISTINCT group_id) FROM {name} "
            "WHERE group_id NOT IN (SELECT group_id FROM phrases)"
        )
        return int(wh.con.execute(query).fetchall()[0][0])
    finally:
        wh.con.unregister(name)


# -- languages and stats ------------------------------------------------------------------


def add_language(wh: Warehouse, code: str, name: str, group: str) -> None:
    """Add a language to `languages` (needed before phrases in it can be loaded)."""
    if not _LANG_CODE_RE.match(code):
        raise XlingError(f"{code!r} is not a language code; use e.g. de, pt_BR, yue")
    if group not in RESOURCE_GROUPS:
        raise XlingError(f"resource group must be one of {', '.join(RESOURCE_GROUPS)}")
    if not name.strip():
        raise XlingError("the language needs a name, e.g. German")
    if wh.con.execute("SELECT 1 FROM languages WHERE lang = ?", [code]).fetchall():
        raise XlingError(
            f'language {code!r} exists; regroup it with `xling sql "UPDATE languages SET '
            f"resource_group = 'low' WHERE lang = '{code}'\" --write`"
        )
    with wh.transaction() as con:
        con.execute("INSERT INTO languages VALUES (?, ?, ?)", [code, name.strip(), group])


@dataclass
class CorpusStats:
    """Per-language counts and group completeness of the corpus."""

    by_lang: pd.DataFrame
    """One row per language of the languages table: lang, name, resource_group, phrases,
    groups_pct (share of all groups holding the language)."""
    phrases: int
    groups: int
    complete: int
    """Groups holding every language that occurs in the corpus."""
    with_english: int
    corpus_langs: int


def corpus_stats(wh: Warehouse) -> CorpusStats:
    by_lang = wh.sql(
        """
        SELECT l.lang, l.name, l.resource_group, count(p.phrase_id) AS phrases,
               100.0 * count(p.phrase_id)
                   / nullif((SELECT count(DISTINCT group_id) FROM phrases), 0) AS groups_pct
        FROM languages l LEFT JOIN phrases p USING (lang)
        GROUP BY ALL ORDER BY l.resource_group, phrases DESC, l.lang
        """
    )
    (row,) = wh.con.execute(
        """
        WITH g AS (
            SELECT group_id, count(*) AS n, bool_or(lang = 'en') AS has_en
            FROM phrases GROUP BY group_id
        )
        SELECT (SELECT count(*) FROM phrases),
               count(*),
               count(*) FILTER (WHERE n = (SELECT count(DISTINCT lang) FROM phrases)),
               count(*) FILTER (WHERE has_en),
               (SELECT count(DISTINCT lang) FROM phrases)
        FROM g
        """
    ).fetchall()
    phrases, groups, complete, with_en, n_langs = (int(v or 0) for v in row)
    return CorpusStats(by_lang, phrases, groups, complete, with_en, n_langs)
