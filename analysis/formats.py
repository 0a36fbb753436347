"""Rendering tables as CSV, JSON, Markdown, LaTeX (booktabs) and terminal text.

One number format for people (Markdown, LaTeX, the terminal), decided per float column:

- values the user already rounded (each value's shortest repr has at most `digits`
  decimals, e.g. `round(x, 1)`) keep exactly their decimals: 27.2 prints `27.2`;
- otherwise `digits` decimals, more for a column of small numbers so its smallest nonzero
  value keeps two significant digits (at most 6 decimals);
- a nonzero value that would still print as zero (1.2e-9, a tiny p-value), or one of 1e15
  or more, is written in scientific notation with two significant digits (`1.2e-09`);
- NaN prints `NaN`, infinities `inf`/`-inf`, NULL an empty cell; `-0.0000` loses its sign.

CSV and JSON keep full precision, for machines. JSON writes NULL as null and NaN/inf as the
strings "NaN", "Infinity", "-Infinity" (JSON has no such numbers); UUIDs, dates and decimals
as strings, BLOBs as hex ("0x..."), lists as arrays.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

TEXT_FORMATS = ("csv", "json", "markdown", "latex")
_MAX_DIGITS = 6
_HUGE = 1e15


@dataclass(frozen=True)
class Grid:
    """A table as plain Python values: NULL is None, NaN is float('nan').

    `kinds[i]` is "float", "int" or "text" (anything else, rendered with str()).
    """

    columns: list[str]
    kinds: list[str]
    rows: list[tuple[Any, ...]]

    @classmethod
    def from_frame(cls, df: pd.DataFrame) -> Grid:
        """From pandas, where a float column's NULL and NaN are both NaN (shown as NaN)."""
        import pandas as pd

        kinds = []
        for c in df.columns:
            col = df[c]
            if pd.api.types.is_bool_dtype(col):
                kinds.append("text")
            elif pd.api.types.is_float_dtype(col):
                kinds.append("float")
            elif pd.api.types.is_integer_dtype(col):
                kinds.append("int")
            else:
                kinds.append("text")
        rows = [
            tuple(_plain(v, kind) for v, kind in zip(row, kinds, strict=True))
            for row in df.itertuples(index=False, name=None)
        ]
        return cls([str(c) for c in df.columns], kinds, rows)

    @classmethod
    def from_arrow(cls, table: pa.Table) -> Grid:
        """From Arrow, which keeps NULL (None) apart from NaN."""
        import pyarrow as pa

        kinds = []
        for field in table.schema:
            t = field.type
            if pa.types.is_floating(t):
                kinds.append("float")
            elif pa.types.is_integer(t):
                kinds.append("int")
            else:
                kinds.append("text")
        cols = [table.column(i).to_pylist() for i in range(table.num_columns)]
        rows = list(zip(*cols, strict=True)) if cols else []
        return cls(list(table.column_names), kinds, rows)


def _plain(value: Any, kind: str) -> Any:
    """A pandas/numpy cell as a plain Python value; pandas' missing markers become None."""
    import pandas as pd

    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if kind == "float":
        return float(value)
    if kind == "int":
        return int(value)
    if isinstance(value, float) and math.isnan(value):
        return None  # pandas' string columns mark a missing value with NaN
    if hasattr(value, "item") and not isinstance(value, bytes | str):
        try:
            return value.item()
        except (ValueError, TypeError):
            return value
    return value


# -- numbers ------------------------------------------------------------------------------


def _short_decimals(x: float) -> int | None:
    """Decimals of x's shortest repr (27.2 -> 1), None when it needs an exponent."""
    text = repr(float(x))
    if "e" in text or "E" in text:
        return None
    return len(text.split(".", 1)[1]) if "." in text else 0


def column_decimals(values: Sequence[Any], digits: int) -> int:
    """Decimals for a float column (see the module docstring)."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not finite:
        return digits
    short = [_short_decimals(v) for v in finite]
    if all(s is not None and s <= digits for s in short):
        return max(s for s in short if s is not None)
    shown = [abs(v) for v in finite if 10.0**-_MAX_DIGITS <= abs(v) < _HUGE]
    if not shown:
        return digits
    need = 1 - math.floor(math.log10(min(shown)))
    return max(digits, min(need, _MAX_DIGITS))


def format_float(x: float | None, decimals: int) -> str:
    """One float cell at `decimals` (see the module docstring)."""
    if x is None:
        return ""
    x = float(x)
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x != 0 and (abs(x) < 0.5 * 10.0**-decimals or abs(x) >= _HUGE):
        return f"{x:.1e}"
    text = f"{x:.{decimals}f}"
    if text.startswith("-") and not text.strip("-0."):
        text = text[1:]  # no -0.0000
    return text


def format_value(value: Any) -> str:
    """A non-float cell as text: NULL empty, BLOBs as hex, the rest with str()."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, bytes | bytearray | memoryview):
        return "0x" + bytes(value).hex()
    if isinstance(value, float):
        return format_float(value, _short_decimals(value) or 4)
    return str(value)


def cell_texts(grid: Grid, digits: int) -> list[list[str]]:
    """Every cell of `grid` as text, row by row, numbers formatted per column."""
    decimals = [
        column_decimals([r[i] for r in grid.rows], digits) if kind == "float" else None
        for i, kind in enumerate(grid.kinds)
    ]
    return [
        [
            format_float(v, d) if d is not None else format_value(v)
            for v, d in zip(row, decimals, strict=True)
        ]
        for row in grid.rows
    ]


# -- Markdown and LaTeX -------------------------------------------------------------------

_LATEX = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "|": r"\textbar{}",
    "\n": " ",
    "\r": " ",
    "\t": " ",
}
_MARKDOWN_SPECIAL = set("\\`*[]<>|~")


def latex_escape(text: str) -> str:
    """`text` safe inside a LaTeX table cell or caption (one pass, so no double escapes)."""
    return "".join(_LATEX.get(ch, ch) for ch in text)


def markdown_escape(text: str) -> str:
    """`text` safe inside a Markdown (GFM) table cell: specials backslashed, no newlines.

    An underscore inside a word (run_id) cannot start emphasis in GFM and stays bare.
    """
    out = []
    for i, ch in enumerate(text):
        if ch in "\r\n":
            out.append(" ")
        elif ch == "_":
            inner = 0 < i < len(text) - 1 and text[i - 1].isalnum() and text[i + 1].isalnum()
            out.append("_" if inner else "\\_")
        elif ch in _MARKDOWN_SPECIAL:
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


def _latex_number(text: str) -> str:
    if text in ("inf", "-inf"):
        return r"$\infty$" if text == "inf" else r"$-\infty$"
    if "e" in text and text != "":
        mantissa, exp = text.split("e")
        sign = "$-$" if mantissa.startswith("-") else ""
        return f"{sign}${mantissa.lstrip('-')}\\times 10^{{{int(exp)}}}$"
    # a real minus sign, not a hyphen
    return "$-$" + text[1:] if text.startswith("-") else text


def to_latex(grid: Grid, *, caption: str, label: str, digits: int = 2) -> str:
    """A booktabs table with caption and label; numbers right-aligned and rounded."""
    numeric = [k in ("float", "int") for k in grid.kinds]
    align = "".join("r" if n else "l" for n in numeric)
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        f"\\caption{{{latex_escape(caption)}}}",
        f"\\label{{{re.sub(r'[^A-Za-z0-9_:.-]', '-', label)}}}",
        f"\\begin{{tabular}}{{{align}}}",
        r"\toprule",
        " & ".join(latex_escape(c) for c in grid.columns) + r" \\",
        r"\midrule",
    ]
    for cells in cell_texts(grid, digits):
        lines.append(
            " & ".join(
                _latex_number(t) if n else latex_escape(t)
                for t, n in zip(cells, numeric, strict=True)
            )
            + r" \\"
        )
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def to_markdown(grid: Grid, digits: int = 4) -> str:
    """A GFM pipe table; numbers right-aligned and rounded, text escaped."""
    numeric = [k in ("float", "int") for k in grid.kinds]
    header = "| " + " | ".join(markdown_escape(c) for c in grid.columns) + " |"
    rule = "|" + "|".join("---:" if n else "---" for n in numeric) + "|"
    body = [
        "| "
        + " | ".join(t if n else markdown_escape(t) for t, n in zip(cells, numeric, strict=True))
        + " |"
        for cells in cell_texts(grid, digits)
    ]
    return "\n".join([header, rule, *body]) + "\n"


# -- machine formats ----------------------------------------------------------------------


def json_value(value: Any) -> Any:
    """A cell as a JSON-ready value (see the module docstring)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return "0x" + bytes(value).hex()
    if isinstance(value, uuid.UUID | decimal.Decimal | dt.timedelta):
        return str(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_value(v) for v in value]
    if hasattr(value, "tolist"):
        return json_value(value.tolist())
    if hasattr(value, "item"):
        return json_value(value.item())
    return str(value)


def to_json(grid: Grid) -> str:
    records = [
        {c: json_value(v) for c, v in zip(grid.columns, row, strict=True)} for row in grid.rows
    ]
    return json.dumps(records, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def to_csv(grid: Grid) -> str:
    """Full precision; NULL empty, NaN `nan`, infinities `inf`/`-inf` (as DuckDB's COPY)."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(grid.columns)
    for row in grid.rows:
        writer.writerow(
            [
                ""
                if v is None
                else ("nan" if math.isnan(v) else repr(v))
                if isinstance(v, float)
                else format_value(v)
                for v in row
            ]
        )
    return buf.getvalue()


def format_grid(
    grid: Grid, fmt: str, *, name: str = "table", digits: int = 4, caption: str | None = None
) -> str:
    """`grid` as text in one of TEXT_FORMATS; LaTeX gets `caption` (default: the name) and
    the label tab:<name>."""
    if fmt == "csv":
        return to_csv(grid)
    if fmt == "json":
        return to_json(grid)
    if fmt == "markdown":
        return to_markdown(grid, digits)
    if fmt == "latex":
        return to_latex(
            grid,
            caption=caption or name.replace("_", " "),
            label=f"tab:{name}",
            digits=min(digits, 2),
        )
    raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(TEXT_FORMATS)}")


def format_frame(
    df: pd.DataFrame, fmt: str, *, name: str = "table", digits: int = 4, caption: str | None = None
) -> str:
    """`df` as text in one of TEXT_FORMATS (see format_grid)."""
    return format_grid(Grid.from_frame(df), fmt, name=name, digits=digits, caption=caption)
