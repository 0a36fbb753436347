"""Rendering DataFrames as CSV, JSON, Markdown and LaTeX (booktabs) text."""

from __future__ import annotations

import math

import pandas as pd

TEXT_FORMATS = ("csv", "json", "markdown", "latex")


def _round(value: object, digits: int) -> object:
    if isinstance(value, float) and math.isfinite(value):
        return round(value, digits)
    return value


def _cell(value: object, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _latex_escape(text: str) -> str:
    out = text
    for ch, rep in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("$", r"\$"),
                    ("#", r"\#"), ("_", r"\_"), ("{", r"\{"), ("}", r"\}"),
                    ("~", r"\textasciitilde{}"), ("^", r"\textasciicircum{}")):
        out = out.replace(ch, rep)
    return out


def to_latex(df: pd.DataFrame, *, caption: str, label: str, digits: int = 2) -> str:
    """A booktabs table with caption and label; numbers right-aligned and rounded."""
    align = "".join("r" if pd.api.types.is_numeric_dtype(df[c]) else "l" for c in df.columns)
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
        lines.append(" & ".join(_latex_escape(_cell(v, digits)) for v in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def to_markdown(df: pd.DataFrame, digits: int = 4) -> str:
    header = "| " + " | ".join(str(c) for c in df.columns) + " |"
    rule = "|" + "|".join("---:" if pd.api.types.is_numeric_dtype(df[c]) else "---"
                          for c in df.columns) + "|"
    body = ["| " + " | ".join(_cell(v, digits).replace("|", r"\|") for v in row) + " |"
            for row in df.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"


def format_frame(df: pd.DataFrame, fmt: str, *, name: str = "table", digits: int = 4) -> str:
    """`df` as text in one of TEXT_FORMATS."""
    if fmt == "csv":
        return df.to_csv(index=False)
    if fmt == "json":
        return df.to_json(orient="records", indent=2, date_format="iso", force_ascii=False) + "\n"
    if fmt == "markdown":
        return to_markdown(df, digits)
    if fmt == "latex":
        caption = name.replace("_", " ")
        return to_latex(df, caption=caption, label=f"tab:{name}", digits=min(digits, 2))
    raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(TEXT_FORMATS)}")
