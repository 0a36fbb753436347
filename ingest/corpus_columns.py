"""What a corpus file's columns mean: wide or long layout, language columns, origins.

`read_corpus_file` turns one file (read by `corpus_files`) into the long frame every corpus
source produces (group_id, lang, text, optional phrase_id, source, origin_layer,
origin_feature, and the location columns `_file`/`_line`); `read_corpus` does it for many.
Values are checked as they are read: text must be text, integers must fit their column.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from xling.ingest.corpus_files import SUPPORTED_SUFFIXES, RawTable, expand_paths, read_table
from xling.ingest.languages import LANG_CODE
from xling.warehouse.errors import XlingError

# (layer column, feature column) pairs naming a phrase's origin SAE feature, in order of
# preference: xling's own names, then names found in Neuronpedia-derived tables.
ORIGIN_COLUMN_PAIRS = (
    ("origin_layer", "origin_feature"),
    ("layer", "feature"),
    ("layer", "index"),
    ("Layer Number", "Index Number"),
    ("layer_number", "index_number"),
)


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
    langs: list[str] | None = None
    """Wide files: read exactly these languages' columns [default: every column named like a
    language code]. Needed when a column such as `id` could be a row id or a language."""

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
            notes.append(f"{path.name}: ignored column(s) {column_list(ignored)}")
    return out


def _used_columns(
    columns: Iterable[str], fmt: CorpusFormat, layout: str, languages: set[str]
) -> set[str]:
    used = {fmt.group_col, "phrase_id", "source", *(_origin_pair(columns) or ())}
    if layout == "long":
        return used | {fmt.lang_col, fmt.text_col}
    return used | set(_language_columns(columns, fmt, languages).values())


def column_list(names: Iterable) -> str:
    """Column names for a message: plain, or quoted when they hold spaces, commas, line
    breaks or other control characters (NUL, terminal escapes), which are then escaped, so a
    message stays one line and prints as it reads whatever a header holds."""
    return ", ".join(
        str(n) if re.fullmatch(r"[^\s,'\"]+", str(n)) and str(n).isprintable() else repr(str(n))
        for n in names
    )


def _require(path: Path, df: pd.DataFrame, needed: Sequence[str], hint: str) -> None:
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise XlingError(
            f"{path}: missing column(s) {column_list(missing)} "
            f"(has: {column_list(df.columns[:12])}); {hint}"
        )


def _long_rows(path: Path, raw: RawTable, fmt: CorpusFormat) -> pd.DataFrame:
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


def _wide_rows(path: Path, raw: RawTable, fmt: CorpusFormat, languages: set[str]) -> pd.DataFrame:
    df = raw.frame
    lang_cols = _language_columns(df.columns, fmt, languages)
    if not lang_cols:
        raise XlingError(
            f"{path}: no language columns found (has: {column_list(df.columns[:12])}); "
            "wide files need a column per language such as en, zh (or pass --text-pattern "
            "'phraseWindow_{lang}'), long files need group_id, lang, text"
        )
    if fmt.langs is not None:
        absent = [lang for lang in fmt.langs if lang not in lang_cols]
        if absent:
            raise XlingError(
                f"{path}: no column for language(s) {column_list(absent)} named by --langs "
                f"(has: {column_list(df.columns[:12])})"
            )
    else:
        _refuse_id_like_language(path, raw, fmt, lang_cols)
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


# Language codes that are also what files call their row-id column: `id` is Indonesian.
ID_LIKE_CODES = ("id",)


def _refuse_id_like_language(
    path: Path, raw: RawTable, fmt: CorpusFormat, lang_cols: dict[str, str]
) -> None:
    """A wide file's `id` column is read as Indonesian only when that is unambiguous: the
    file has its group column and the column holds more than integers. Otherwise the user
    says which it is (--group-col id, or --langs naming the language columns)."""
    for code in ID_LIKE_CODES:
        col = lang_cols.get(code)
        if col is None:
            continue
        values = raw.frame[col].dropna().astype(str).str.strip()
        numbers = bool(len(values)) and bool(values.str.fullmatch(r"-?\d+").all())
        if fmt.group_col not in raw.frame.columns or numbers:
            why = "it holds only integers" if numbers else f"the file has no {fmt.group_col} column"
            raise XlingError(
                f"{path}: column {col!r} could be row ids or phrases in language {code!r} "
                f"({why}); pass --group-col {col} if it holds ids, or --langs naming the "
                f"language columns (e.g. --langs {','.join(lang_cols)})"
            )


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
    if fmt.langs is not None:
        out = {lang: col for lang, col in out.items() if lang in fmt.langs}
    return out


def _origin(path: Path, raw: RawTable) -> tuple[np.ndarray, np.ndarray] | None:
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


def as_strings(s: pd.Series) -> pd.Series:
    """Values as Python strings (numbers in JSON or Parquet become text), nulls as None.
    Booleans are written as JSON writes them (`true`, not Python's `True`)."""
    out = s.astype(str).astype(object).where(s.notna(), None)
    if s.dtype == bool or (
        s.dtype == object and pd.api.types.infer_dtype(s, skipna=True) not in ("string", "empty")
    ):
        is_bool = s.map(lambda v: isinstance(v, bool | np.bool_)).to_numpy(dtype=bool)
        if is_bool.any():
            out[is_bool] = ["true" if v else "false" for v in s[is_bool]]
    return out


_NOT_TEXT = (dict, list, tuple, bytes, bytearray, np.ndarray)


def _text_column(path: Path, raw: RawTable, col: str) -> pd.Series:
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
                f"{raw.where(path, i)}: {column_list([col])} holds a {kind} value "
                f"({str(value)[:40]!r}); "
                "expected text"
            )
    return as_strings(s)


_INT_RE = r"^\s*(-?\d+)(?:\.0*)?\s*$"
_INT_PREFIX_RE = r"^\s*(-?\d+)"


def _integers(
    path: Path, raw: RawTable, col: str, *, prefix_ok: bool, bits: int, minimum: int | None = None
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
