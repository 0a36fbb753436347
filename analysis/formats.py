"""Rendering DataFrames as CSV, JSON, Markdown and LaTeX (booktabs) text.

Markdown and LaTeX round each float column to one precision chosen from its values: `digits`
decimals, more for a column of small numbers so its smallest nonzero value keeps two
significant digits (at most 6). CSV and JSON keep full precision, for machines.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

TEXT_FORMATS = ("csv", "json", "markdown", "latex")
_MAX_DIGITS = 6


def column_digits(values: pd.Series, digits: int) -> int:
    """Decimals for a float column: `digits`, or enough for two significant digits."""
    finite = values.to_numpy(dtype=float, na_value=np.nan)
    small = np.abs(finite[np.isfinite(finite) & (finite != 0)])
    if small.size == 0:
        return digits
    need = 1 - math.floor(math.log10(float(small.min())))
    return max(digits, min(need, _MAX_DIGITS))


def _cell(value: object, decimals: int | None) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float) and decimals is not None:
        return f"{value:.{decimals}f}"
    return str(value)


def _decimals(df: pd.DataFrame, digits: int) -> list[int | None]:
    return [
        column_digits(df[c], digits) if pd.api.types.is_float_dtype(df[c]) else None
        for c in df.columns
    ]


def _latex_escape(text: str) -> str:
    out = text
    for ch, rep in (
        ("\\", r"\textbackslash{}"),
        ("&", r"\&"),
        ("%", r"\%"),
        ("$", r"\$"),
        ("#", r"\#"),
        ("_", r"\_"),
        ("{", r"\{"),
        ("}", r"\}"),
        ("~", r"\textasciitilde{}"),
        ("^", r"\textasciicircum{}"),
    ):
        out = out.replace(ch, rep)
    return out


def _latex_cell(value: object, decimals: int | None) -> str:
    text = _latex_escape(_cell(value, decimals))
    # a real minus sign, not a hyphen
    return "$-$" + text[1:] if decimals is not None and text.startswith("-") else text


def to_latex(df: pd.DataFrame, *, caption: str, label: str, digits: int = 2) -> str:
    """A booktabs table with caption and label; numbers right-aligned and rounded."""
    align = "".join("r" if pd.api.types.is_numeric_dtype(df[c]) else "l" for c in df.columns)
    decimals = _decimals(df, digits)
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        f"\\caption{{{_latex_escape(caption)}}}",
        f"\\label{{{label}}}",
        f"\\begin{{tabular}}{{{align}}}",
        r"\toprule",
        " & ".join(_latex_escape(str(c)) for c in df.columns) + r" \\",
        r"\midrule",
    ]
    for row in df.itertuples(index=False):
        lines.append(
            " & ".join(_latex_cell(v, d) for v, d in zip(row, decimals, strict=True)) + r" \\"
        )
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def to_markdown(df: pd.DataFrame, digits: int = 4) -> str:
    header = "| " + " | ".join(str(c) for c in df.columns) + " |"
    rule = (
        "|"
        + "|".join("---:" if pd.api.types.is_numeric_dtype(df[c]) else "---" for c in df.columns)
        + "|"
    )
    decimals = _decimals(df, digits)
    body = [
        "| "
        + " | ".join(_cell(v, d).replace("|", r"\|") for v, d in zip(row, decimals, strict=True))
        + " |"
        for row in df.itertuples(index=False)
    ]
    return "\n".join([header, rule, *body]) + "\n"


def format_frame(
    df: pd.DataFrame, fmt: str, *, name: str = "table", digits: int = 4, caption: str | None = None
) -> str:
    """`df` as text in one of TEXT_FORMATS; LaTeX gets `caption` (default: the name) and the
    label tab:<name>."""
    if fmt == "csv":
        return df.to_csv(index=False)
    if fmt == "json":
        return df.to_json(orient="records", indent=2, date_format="iso", force_ascii=False) + "\n"
    if fmt == "markdown":
        return to_markdown(df, digits)
    if fmt == "latex":
        return to_latex(
            df,
            caption=caption or name.replace("_", " "),
            label=f"tab:{name}",
            digits=min(digits, 2),
        )
    raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(TEXT_FORMATS)}")
