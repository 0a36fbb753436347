"""Corpus files on disk: which paths a load reads, and each file's cells as a frame.

`expand_paths` turns arguments (paths or quoted globs) into checked file paths; `read_table`
reads one CSV/TSV/JSONL/Parquet file (optionally gzipped) into a `RawTable`, every CSV cell a
string, with the line or row number of each row for messages; `json_lines` is the one JSON
Lines reader (the Neuronpedia import reads its exports with it too). What the columns mean is
`corpus_columns`' job.
"""

from __future__ import annotations

import glob
import gzip
import json
import os
import stat
import warnings
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa

from xling.warehouse.errors import XlingError

# What reading a damaged file raises: OSError (incl. gzip.BadGzipFile), EOFError (a truncated
# .gz) and zlib.error (a damaged deflate stream, not an OSError).
READ_ERRORS = (OSError, EOFError, zlib.error)

# Readers by file suffix (after an optional .gz).
_CSV_SUFFIXES = {".csv": ",", ".tsv": "\t"}
_JSONL_SUFFIXES = {".jsonl", ".ndjson"}
_PARQUET_SUFFIXES = {".parquet", ".pq"}
SUPPORTED_SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson", ".parquet", ".pq")
# Files are read whole into memory; a larger one is a mistake (or a disk image) far more often
# than a corpus.
MAX_INPUT_BYTES = 32 * 2**30


def expand_paths(patterns: Iterable[str | os.PathLike], suffixes: Sequence[str]) -> list[Path]:
    """Files named by `patterns` (paths or quoted globs), checked to be regular files of a
    supported type and size. Devices, FIFOs and sockets are refused: /dev/zero would be read
    forever, a FIFO would block."""
    out: list[Path] = []
    for pattern in patterns:
        text = str(pattern)
        path = Path(text)
        if _stat(path) is None and glob.has_magic(text):
            matches = sorted(Path(p) for p in glob.glob(text) if Path(p).is_file())
            if not matches:
                raise XlingError(f"no file matches {shown(text)}")
            candidates = matches
        else:
            candidates = [path]
        for p in candidates:
            info = _stat(p)
            if info is None:
                raise XlingError(f"{shown(p)} does not exist")
            if stat.S_ISDIR(info.st_mode):
                raise XlingError(
                    f"{shown(p)} is a directory; pass its files, e.g. {shown(p)}/*{suffixes[0]}"
                )
            if not stat.S_ISREG(info.st_mode):
                raise XlingError(
                    f"{shown(p)} is not a regular file (a device, FIFO or socket); pass a file"
                )
            if info.st_size > MAX_INPUT_BYTES:
                raise XlingError(
                    f"{shown(p)} is {info.st_size / 2**30:,.1f} GiB; files are read whole, so "
                    f"at most {MAX_INPUT_BYTES // 2**30} GiB: split it"
                )
            if _suffix(p) not in suffixes:
                raise XlingError(
                    f"{shown(p)}: unsupported file type; use {', '.join(suffixes)} (optionally .gz)"
                )
            out.append(p)
    if not out:
        raise XlingError("no input files given")
    return out


def _stat(path: Path) -> os.stat_result | None:
    """The file's status, None when there is none (missing, or a path under a regular file);
    other failures (a name longer than the filesystem allows, no permission) are one line."""
    try:
        return path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as err:
        raise XlingError(f"{shown(path)}: cannot read ({err.strerror or err})") from None


def shown(value: object, limit: int = 120) -> str:
    """A path or value as it may appear in a one-line message: control characters (NUL,
    terminal escapes, line breaks) written as escapes, and cut to `limit` characters."""
    text = str(value)
    if not text.isprintable():
        text = repr(text)[1:-1]
    return text if len(text) <= limit else text[: limit - 1] + "…"


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


def lone_surrogate(line: str, record: object) -> bool:
    """True when JSON `line`, parsed as `record`, holds a \\uD800-\\uDFFF escape that is
    not part of a pair: Python keeps it as a lone surrogate, which no UTF-8 writer accepts.
    Only lines with such an escape are checked further, so the common line costs a search."""
    if "\\ud" not in line and "\\uD" not in line:
        return False
    try:
        json.dumps(record, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _not_utf8(path: Path) -> XlingError:
    line = first_bad_utf8_line(path)
    where = f"{path} line {line}" if line else str(path)
    return XlingError(f"{where}: not valid UTF-8; re-save the file as UTF-8")


# -- reading one file ------------------------------------------------------------------------


@dataclass
class RawTable:
    """A file's columns as read, and how to name its rows in messages."""

    frame: pd.DataFrame
    unit: str
    """"line" (text files) or "row" (Parquet)."""
    numbers: np.ndarray
    """The line or row number of each frame row."""

    def where(self, path: Path, row: int) -> str:
        return f"{path} {self.unit} {self.numbers[row]}"


def read_table(path: Path) -> RawTable:
    """Read one CSV/TSV/JSONL/Parquet file; every CSV cell a string, empty cells null."""
    suffix = _suffix(path)
    if suffix in _CSV_SUFFIXES:
        frame = _read_csv(path, _CSV_SUFFIXES[suffix])
        # Line numbers assume no quoted line breaks, true of nearly every corpus file.
        return RawTable(frame, "line", np.arange(len(frame)) + 2)
    if suffix in _JSONL_SUFFIXES:
        return _read_jsonl(path)
    if suffix in _PARQUET_SUFFIXES:
        frame = _read_parquet(path)
        return RawTable(frame, "row", np.arange(len(frame)) + 1)
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


class JsonlFixes(NamedTuple):
    """What an error on a bad line of a JSON Lines file tells the user to do, per case."""

    utf8: str  # the line is not UTF-8
    json: str  # the line is not JSON
    surrogate: str  # a \u escape names half a surrogate pair


def json_lines(path: Path, fixes: JsonlFixes) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) for each non-blank line of a JSON Lines file (.gz too).

    A line that is not UTF-8, not JSON, or holds a lone surrogate escape is one XlingError
    naming the file and line, ending with `fixes`' hint for that case; an unreadable file is
    one too.
    """
    try:
        with open_bytes(path) as f:
            for number, raw in enumerate(f, start=1):
                where = f"{path} line {number}"
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise XlingError(f"{where}: not valid UTF-8; {fixes.utf8}") from None
                if not line.strip():
                    continue
                try:
                    value = json.loads(line)
                except json.JSONDecodeError as err:
                    raise XlingError(f"{where}: invalid JSON ({err.msg}); {fixes.json}") from None
                if lone_surrogate(line, value):
                    raise XlingError(
                        f"{where}: a \\u escape names half a surrogate pair (e.g. \\ud800 "
                        f"alone), which is not a character; {fixes.surrogate}"
                    )
                yield number, value
    except READ_ERRORS as err:
        raise XlingError(f"{path}: cannot read ({err}); is the file complete?") from None


_JSONL_FIXES = JsonlFixes(
    utf8="re-save the file as UTF-8", json="one object per line", surrogate="fix the text"
)


def _read_jsonl(path: Path) -> RawTable:
    records, numbers = [], []
    for number, record in json_lines(path, _JSONL_FIXES):
        if not isinstance(record, dict):
            raise XlingError(
                f"{path} line {number}: expected a JSON object, got {type(record).__name__}"
            )
        records.append(record)
        numbers.append(number)
    if not records:
        raise XlingError(f"{path}: no records; expected one JSON object per line")
    return RawTable(pd.DataFrame.from_records(records), "line", np.array(numbers))


def _read_parquet(path: Path) -> pd.DataFrame:
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pandas()
    except (pa.ArrowException, OSError) as err:
        detail = str(err).strip().splitlines()[0]
        raise XlingError(f"{path}: not a readable Parquet file ({detail})") from None
