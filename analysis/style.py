"""One look for every table and figure: language order, a fixed colour and marker per language,
figure sizes.

Catalogue order is the order languages entered the `languages` table: the paper's ten as
seeded (en zh ru es it id ca mr ml hi), then the ones users add. Tables list layers, then
languages in that order; figures give each language the colour and marker of its catalogue
position, so regrouping a language never recolours it and a figure of three languages uses
the same colours as one of ten.

Colours: Paul Tol's "muted" qualitative scheme (nine colours designed to stay distinct under
the common colour-vision deficiencies) preceded by black for the first language (English,
the reference). Ten languages get ten colours and ten markers; beyond ten, colours repeat
with another marker, so every (colour, marker) pair stays unique up to 100 languages.
Resource groups are told apart by line style (high solid, low dashed), never by colour.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from xling.warehouse import Warehouse

COLOURS = (
    "#000000",  # black
    "#CC6677",  # rose
    "#332288",  # indigo
    "#DDCC77",  # sand
    "#117733",  # green
    "#88CCEE",  # cyan
    "#882255",  # wine
    "#44AA99",  # teal
    "#999933",  # olive
    "#AA4499",  # purple
)
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "h", "<")
# greys, so a group line is never mistaken for a language line
GROUP_COLOURS = {"high": "#333333", "low": "#8C8C8C"}
GROUP_MARKERS = {"high": "o", "low": "s"}
GROUP_LINES = {"high": "-", "low": "--"}
OTHER_COLOUR = "#7F7F7F"

# (width, height) in inches: one column of a two-column paper, the full text width, and the
# roomier screen default
SIZES = {"column": (3.3, 2.6), "wide": (6.9, 3.0), "screen": (8.0, 4.6)}
STYLES = ("screen", "paper")


def catalogue(wh: Warehouse) -> list[str]:
    """Language codes in catalogue order (insertion order of `languages`)."""
    try:
        rows = wh.con.execute("SELECT lang FROM languages ORDER BY rowid").fetchall()
    except Exception:  # a view (the parquet: export) has no rowid; fall back to codes
        rows = wh.con.execute("SELECT lang FROM languages ORDER BY lang").fetchall()
    return [r[0] for r in rows]


def lang_style(lang: str, order: list[str]) -> dict[str, Any]:
    """Colour and marker of `lang` from its catalogue position (unknown: after the rest)."""
    i = order.index(lang) if lang in order else len(order) + sum(map(ord, lang))
    return {
        "color": COLOURS[i % len(COLOURS)],
        "marker": MARKERS[(i + i // len(COLOURS)) % len(MARKERS)],
    }


def sort_rows(df: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    """`df` in table order: run, layer, then language in catalogue order (stable otherwise)."""
    keys = [c for c in ("run_id", "base_run", "tuned_run", "layer") if c in df.columns]
    pos = {lang: i for i, lang in enumerate(order)}
    extra = {}
    for c in ("lang", "lang_a", "lang_b"):
        if c in df.columns:
            extra[f"_pos_{c}"] = df[c].map(pos).fillna(len(pos))
            keys += [f"_pos_{c}", c]
    if not keys:
        return df.reset_index(drop=True)
    out = df.assign(**extra).sort_values(keys, kind="stable")
    return out.drop(columns=list(extra)).reset_index(drop=True)


def figure_size(
    style: str = "screen",
    *,
    wide: bool = False,
    width: float | None = None,
    height: float | None = None,
) -> tuple[float, float]:
    """Figure size in inches: `paper` gives one column (3.3 in) or, `wide`, two columns
    (6.9 in); `width`/`height` override either."""
    if style == "paper":
        w, h = SIZES["wide" if wide else "column"]
    else:
        w, h = SIZES["screen"]
        w = w * 1.5 if wide else w
    return (width or w, height or h)


def rc_params(style: str = "screen") -> dict[str, Any]:
    """matplotlib settings: legible fonts at print size, editable text in SVG and PDF."""
    paper = style == "paper"
    return {
        "font.size": 8 if paper else 10,
        "axes.titlesize": 8 if paper else 10,
        "axes.labelsize": 8 if paper else 10,
        "xtick.labelsize": 7 if paper else 9,
        "ytick.labelsize": 7 if paper else 9,
        "legend.fontsize": 7 if paper else 8,
        "lines.linewidth": 1.2 if paper else 1.5,
        "lines.markersize": 3.5 if paper else 5,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "svg.fonttype": "none",
        "pdf.fonttype": 42,
    }
