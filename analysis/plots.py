"""The paper's figures from the query functions: matplotlib (Agg), imported when drawing.

    plot_gap(wh, out)            A(L, ·) of the high and low groups with the gap, and each
                                 language's gap against English, by layer
    plot_similarity(wh, out)     residual similarity to English by layer, one line a language
    plot_languages(wh, out)      each language's mean gap against English ± std across layers
    plot_compare(wh, b, t, out)  activation improvement per language after a fine-tune

Colours are Okabe–Ito (colour-blind safe); high-resource languages draw solid lines,
low-resource ones dashed, so the groups read apart without colour too. Every title names the
model and the run. The format (PNG, PDF, SVG) follows `out`'s extension.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xling.analysis import queries
from xling.analysis.defaults import DEFAULT_K
from xling.analysis.export import check_out_path
from xling.warehouse.errors import XlingError

if TYPE_CHECKING:
    import pandas as pd

    from xling.warehouse import Warehouse

FIGURE_SUFFIXES = (".png", ".pdf", ".svg")
# Okabe–Ito without its yellow, too faint for lines on white; seven colours against eight
# markers make every (colour, marker) pair distinct for 56 languages
OKABE_ITO = ("#E69F00", "#56B4E9", "#009E73", "#0072B2", "#D55E00", "#CC79A7", "#000000")
GROUP_COLOURS = {"high": "#0072B2", "low": "#D55E00"}
OTHER_COLOUR = "#7F7F7F"
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # text stays text in SVG and PDF (TrueType), so figures remain editable for papers
    plt.rcParams.update(
        {
            "font.size": 10,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "svg.fonttype": "none",
            "pdf.fonttype": 42,
        }
    )
    return plt


def _run_label(wh: Warehouse, run: int) -> str:
    rec = wh.run(run)
    model = rec["model"] + (f" + {rec['adapter']}" if rec.get("adapter") else "")
    return f"{model}, run {run}"


def _names(wh: Warehouse) -> dict[str, str]:
    return dict(wh.sql("SELECT lang, name FROM languages").values.tolist())


def _lang_styles(langs: pd.Series, groups: pd.Series) -> dict[str, dict[str, Any]]:
    """A colour, marker and line style per language: solid high, dashed low."""
    styles = {}
    for i, (lang, group) in enumerate(
        sorted(zip(langs, groups, strict=True), key=lambda t: (t[1] != "high", t[0]))
    ):
        styles[lang] = {
            "color": OKABE_ITO[i % len(OKABE_ITO)],
            "marker": MARKERS[i % len(MARKERS)],
            "linestyle": "-" if group == "high" else "--",
        }
    return styles


def _save(fig, out: Path) -> Path:
    plt = _pyplot()
    tmp = out.with_name(f".{out.name}.xling-tmp")
    try:
        fig.savefig(tmp, format=out.suffix.lower().lstrip("."), dpi=200, bbox_inches="tight")
        os.replace(tmp, out)
    except OSError as err:
        raise XlingError(f"cannot write {out}: {err.strerror or err}") from None
    finally:
        tmp.unlink(missing_ok=True)
        plt.close(fig)
    return out


def _out(out: str | os.PathLike) -> Path:
    return check_out_path(Path(out), FIGURE_SUFFIXES)


def _by_lang_lines(ax, df: pd.DataFrame, y: str, names: dict[str, str]) -> None:
    styles = _lang_styles(
        df["lang"].drop_duplicates(), df.drop_duplicates("lang")["resource_group"].fillna("")
    )
    for lang, style in styles.items():
        rows = df[df["lang"] == lang].sort_values("layer")
        ax.plot(
            rows["layer"],
            rows[y],
            label=names.get(lang, lang),
            markersize=4,
            linewidth=1.4,
            **style,
        )


def plot_gap(
    wh: Warehouse,
    out: str | os.PathLike,
    run: int | None = None,
    mode: str | None = None,
    stat: str = "max",
    k: int = DEFAULT_K,
) -> Path:
    """Left: mean A(L, l) of high- and low-resource languages with gap_pct on a second axis;
    right: gap_vs_en_pct(L, l) of each language."""
    out = _out(out)
    gap = queries.gap(wh, run, None, mode, stat, k)
    by_lang = queries.gap_by_lang(wh, run, None, mode, stat, k)
    by_lang = by_lang[by_lang["lang"] != "en"]
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.4), constrained_layout=True)
    bars = left.twinx()
    bars.bar(
        gap["layer"],
        gap["gap_pct"],
        color="#BBBBBB",
        alpha=0.5,
        width=0.8,
        label="gap (%)",
        zorder=0,
    )
    bars.set_ylabel("gap = 100·(H − W)/H  (%)")
    bars.grid(False)
    left.set_zorder(bars.get_zorder() + 1)
    left.patch.set_visible(False)
    left.plot(
        gap["layer"],
        gap["high_score"],
        color=GROUP_COLOURS["high"],
        marker="o",
        markersize=4,
        label="high-resource (H)",
    )
    left.plot(
        gap["layer"],
        gap["low_score"],
        color=GROUP_COLOURS["low"],
        marker="s",
        markersize=4,
        linestyle="--",
        label="low-resource (W)",
    )
    left.set_xlabel("layer")
    left.set_ylabel(f"mean activation A(L, l)  ({stat})")
    handles = left.get_legend_handles_labels()[0] + bars.get_legend_handles_labels()[0]
    left.legend(handles, [h.get_label() for h in handles], loc="best", fontsize=8)
    left.set_title("Resource groups")
    _by_lang_lines(right, by_lang, "gap_vs_en_pct", _names(wh))
    right.axhline(0, color="black", linewidth=0.8)
    right.set_xlabel("layer")
    right.set_ylabel("gap vs English  (%)")
    right.set_title("Each language against English")
    right.legend(fontsize=8, ncol=2, loc="best")
    run_id = int(gap["run_id"].iloc[0])
    fig.suptitle(
        f"Activation gap by layer — {_run_label(wh, run_id)} ({gap['mode'].iloc[0]}, {stat})",
        fontsize=11,
    )
    return _save(fig, out)


def plot_similarity(wh: Warehouse, out: str | os.PathLike, run: int | None = None) -> Path:
    """Mean cosine of each language's residuals to English's, by layer."""
    out = _out(out)
    df = queries.similarity(wh, run)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.6), constrained_layout=True)
    _by_lang_lines(ax, df, "sim", _names(wh))
    ax.set_xlabel("layer")
    ax.set_ylabel("cosine similarity to English")
    ax.legend(fontsize=8, ncol=2, loc="best")
    ax.set_title(
        f"Residual similarity to English — {_run_label(wh, int(df['run_id'].iloc[0]))}",
        fontsize=11,
    )
    return _save(fig, out)


def _group_bars(ax, df: pd.DataFrame, y: str, names: dict[str, str], err: str | None = None):
    colours = [GROUP_COLOURS.get(g, OTHER_COLOUR) for g in df["resource_group"]]
    hatches = ["" if g == "high" else "//" for g in df["resource_group"]]
    labels = [names.get(lang, lang) for lang in df["lang"]]
    yerr = df[err].fillna(0) if err else None
    bars = ax.bar(labels, df[y], color=colours, yerr=yerr, capsize=3, edgecolor="white")
    for bar, hatch in zip(bars, hatches, strict=True):
        bar.set_hatch(hatch)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_axisbelow(True)
    ax.tick_params(axis="x", rotation=30)
    from matplotlib.patches import Patch

    ax.legend(
        handles=[
            Patch(facecolor=GROUP_COLOURS["high"], label="high-resource"),
            Patch(facecolor=GROUP_COLOURS["low"], hatch="//", label="low-resource"),
        ],
        fontsize=8,
        loc="best",
    )


def plot_languages(
    wh: Warehouse,
    out: str | os.PathLike,
    run: int | None = None,
    layer: int | None = None,
    mode: str | None = None,
    stat: str = "max",
    k: int = DEFAULT_K,
) -> Path:
    """Each language's mean gap against English across layers (± sample std), or at `layer`."""
    out = _out(out)
    df = queries.languages(wh, run, layer, mode, stat, k).sort_values("mean_gap_pct")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.4), constrained_layout=True)
    _group_bars(
        ax, df, "mean_gap_pct", _names(wh), err=None if layer is not None else "std_gap_pct"
    )
    where = f"layer {layer}" if layer is not None else "mean ± std across layers"
    ax.set_ylabel(f"gap vs English (%), {where}")
    ax.set_title(
        f"Activation gap against English — {_run_label(wh, int(df['run_id'].iloc[0]))} "
        f"({df['mode'].iloc[0]}, {stat})",
        fontsize=11,
    )
    return _save(fig, out)


def plot_compare(
    wh: Warehouse,
    base: int,
    tuned: int,
    out: str | os.PathLike,
    layer: int | None = None,
    mode: str | None = None,
    stat: str = "max",
    k: int = DEFAULT_K,
) -> Path:
    """Activation improvement per language after a fine-tune at `layer` (default: the last
    layer both runs hold), English retention in the title."""
    out = _out(out)
    df = queries.compare(wh, base, tuned, layer, mode, stat, k)
    layer = int(df["layer"].max()) if layer is None else layer
    df = df[df["layer"] == layer].sort_values("improvement_pct", ascending=False)
    retention = float(df["en_retention_pct"].iloc[0])
    cosine = float(df["en_cosine"].iloc[0])
    df = df[df["lang"] != "en"]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.4), constrained_layout=True)
    _group_bars(ax, df, "improvement_pct", _names(wh))
    for x, value in enumerate(df["improvement_pct"]):
        ax.annotate(
            f"{value:+.1f}%",
            (x, value),
            ha="center",
            va="bottom" if value >= 0 else "top",
            fontsize=7,
        )
    ax.set_ylabel(f"activation improvement at layer {layer} (%)")
    ax.set_title(
        f"Fine-tune effect — {_run_label(wh, tuned)} vs base run {base}\n"
        f"English retention {retention:.1f}%, English SAE-vector cosine {cosine:.3f} "
        f"({df['mode'].iloc[0]}, {stat})",
        fontsize=11,
    )
    return _save(fig, out)
