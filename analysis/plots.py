"""The paper's figures from the query functions: matplotlib (Agg), imported when drawing.

    plot_gap(wh, out)            A(L, ·) of the high and low groups with the gap, and each
                                 language's gap against English, by layer
    plot_similarity(wh, out)     residual similarity to English by layer, one line a language
    plot_languages(wh, out)      each language's mean gap against English ± std across layers
    plot_compare(wh, b, t, out)  activation improvement per language after a fine-tune or
                                 steering
    plot_correlation(wh, task, layer, out)  benchmark score against the gap, one point a
                                 language

Every language keeps one colour and marker in every figure (analysis.style: Paul Tol's
muted scheme plus black, ten markers); high-resource languages draw solid lines, low-resource
ones dashed. The x axis ticks are the layers the run holds; an axis whose values span more
than `LOG_SPAN` times switches to a log scale. Legends sit outside the axes. Titles name the
model, run, selection mode, statistic and k. `style="paper"` sizes a figure for one column
(3.3 in) or, for two-panel figures, two columns (6.9 in) with fonts legible at that size;
`width`/`height` override. The format (PNG, PDF, SVG) follows `out`'s extension (`out` None: the
open matplotlib Figure is returned instead, for notebooks and tests); files are written through analysis.output (never the warehouse, never over a file without `force`).
"""

from __future__ import annotations

import functools
import itertools
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xling.analysis import queries
from xling.analysis.defaults import DEFAULT_K
from xling.analysis.output import check_out_file, write_atomic
from xling.analysis.style import (
    GROUP_COLOURS,
    GROUP_LINES,
    GROUP_MARKERS,
    OTHER_COLOUR,
    STYLES,
    catalogue,
    figure_size,
    lang_style,
    rc_params,
    sort_rows,
)
from xling.warehouse.errors import XlingError

if TYPE_CHECKING:
    import pandas as pd

    from xling.warehouse import Warehouse

FIGURE_SUFFIXES = (".png", ".pdf", ".svg")
LOG_SPAN = 30.0  # max/min beyond which a positive axis goes logarithmic
MAX_LAYER_LABELS = 10
PNG_DPI = 200


@dataclass(frozen=True)
class Look:
    """How a figure is sized and written: `style` (screen or paper), inch overrides, and
    whether an existing file may be replaced."""

    style: str = "screen"
    width: float | None = None
    height: float | None = None
    force: bool = False

    def __post_init__(self) -> None:
        if self.style not in STYLES:
            raise XlingError(f"unknown style {self.style!r}; use one of {', '.join(STYLES)}")
        for name in ("width", "height"):
            v = getattr(self, name)
            if v is not None and not (0.5 <= v <= 40):
                raise XlingError(f"--{name} must be between 0.5 and 40 inches, got {v}")


def _styled(fn):
    """Draw and save under the rc settings of the call's `look` (fonts sized for print)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, look: Look | None = None, **kwargs: Any):
        look = look or Look()
        with _pyplot().rc_context(rc_params(look.style)):
            return fn(*args, look=look, **kwargs)

    return wrapper


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _figure(look: Look, *, ncols: int = 1, wide: bool = False):
    fig, axes = _pyplot().subplots(
        1,
        ncols,
        figsize=figure_size(look.style, wide=wide, width=look.width, height=look.height),
        layout="constrained",
    )
    fig.set_dpi(100)
    return fig, axes


def run_label(wh: Warehouse, run: int) -> str:
    """'google/gemma-2-2b, run 3' (with the adapter or steering when the run has one)."""
    rec = wh.run(run)
    model = rec["model"] + (f" + {rec['adapter']}" if rec.get("adapter") else "")
    steer = rec["config"].get("steer")
    return f"{model}{f' steered by {steer}' if steer else ''}, run {run}"


def metric_label(mode: str, stat: str, k: int | None) -> str:
    """'origin, max' or 'english-topk k=16, max': how A(L, l) was computed."""
    return f"{mode}{f' k={k}' if mode != 'origin' and k else ''}, {stat}"


def _names(wh: Warehouse) -> dict[str, str]:
    return dict(wh.sql("SELECT lang, name FROM languages").values.tolist())


def _savefig(fig, path: Path, suffix: str) -> None:
    """`fig` into `path` in the format of `suffix` (.png, .pdf, .svg)."""
    fig.savefig(path, format=suffix.lower().lstrip("."), dpi=PNG_DPI, bbox_inches="tight")


def _save(fig, out: Path | None, force: bool):
    """Write `fig` to `out` and close it; with `out` None return the open figure."""
    if out is None:
        return fig
    plt = _pyplot()
    try:
        write_atomic(out, lambda tmp: _savefig(fig, tmp, out.suffix))
    finally:
        plt.close(fig)
    return out


def save_formats(fig, paths: list[Path], look: Look) -> None:
    """Write one drawn figure to several files (e.g. PDF and PNG), then close it."""
    plt = _pyplot()
    try:
        with plt.rc_context(rc_params(look.style)):
            for path in paths:
                _savefig(fig, path, path.suffix)
    finally:
        plt.close(fig)


def _out(wh: Warehouse, out: str | os.PathLike | None, look: Look) -> Path | None:
    if out is None:
        return None
    return check_out_file(Path(out), warehouse=wh.path, force=look.force, suffixes=FIGURE_SUFFIXES)


def layer_ticks(ax, layers) -> None:
    """Integer ticks at the layers present (labels thinned past MAX_LAYER_LABELS)."""
    layers = sorted({int(x) for x in layers})
    step = max(1, math.ceil(len(layers) / MAX_LAYER_LABELS))
    ax.set_xticks(layers[::step])
    ax.set_xticks(layers, minor=True)
    ax.set_xlabel("layer")


def scale_axis(ax, values, axis: str = "y") -> bool:
    """A log scale when the positive `values` span more than LOG_SPAN; True when set."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if vals and min(vals) > 0 and max(vals) / min(vals) > LOG_SPAN:
        (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
        return True
    return False


def _lang_lines(ax, df: pd.DataFrame, y: str, names: dict[str, str], order: list[str]) -> None:
    df = sort_rows(df, order)
    pos = {lang: i for i, lang in enumerate(order)}
    for lang in sorted(dict.fromkeys(df["lang"]), key=lambda x: (pos.get(x, len(pos)), x)):
        rows = df[df["lang"] == lang].sort_values("layer")
        group = rows["resource_group"].iloc[0] if "resource_group" in rows else None
        ax.plot(
            rows["layer"],
            rows[y],
            label=names.get(lang, lang),
            linestyle=GROUP_LINES.get(group, ":"),
            **lang_style(lang, order),
        )


def _legend_outside(fig, ax, ncol: int | None = None) -> None:
    """The legend of `ax` below the axes, `ncol` entries a row (default: up to five)."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(
            handles,
            labels,
            loc="outside lower center",
            ncol=ncol or min(5, len(handles)),
            frameon=False,
        )


def _lang_columns(look: Look) -> int:
    """Languages a legend row: three fit a paper column, five a screen figure."""
    return 3 if look.style == "paper" else 5


@_styled
def plot_gap(
    wh: Warehouse,
    out: str | os.PathLike | None,
    run: int | None = None,
    mode: str | None = None,
    stat: str = "max",
    k: int = DEFAULT_K,
    look: Look = Look(),
) -> Path:
    """Left: mean A(L, l) of high- and low-resource languages (log axis when they span
    orders of magnitude) with gap_pct; right: gap_vs_en_pct(L, l) of each language."""
    out = _out(wh, out, look)
    gap = queries.gap(wh, run, None, mode, stat, k)
    by_lang = queries.gap_by_lang(wh, run, None, mode, stat, k)
    by_lang = by_lang[by_lang["lang"] != "en"]
    order = catalogue(wh)
    fig, (left, right) = _figure(look, ncols=2, wide=True)
    for group, col, name in (("high", "high_score", "high (H)"), ("low", "low_score", "low (W)")):
        left.plot(
            gap["layer"],
            gap[col],
            color=GROUP_COLOURS[group],
            marker=GROUP_MARKERS[group],
            linestyle=GROUP_LINES[group],
            label=name,
        )
    bars = left.twinx()  # the gap itself, behind the two group lines
    steps = sorted(set(gap["layer"]))
    spacing = min((b - a for a, b in itertools.pairwise(steps)), default=1)
    bars.bar(gap["layer"], gap["gap_pct"], color="#DDDDDD", width=0.6 * spacing, label="gap (%)")
    bars.set_ylabel("gap (%)")
    bars.grid(False)
    bars.spines["right"].set_visible(True)
    left.set_zorder(bars.get_zorder() + 1)
    left.patch.set_visible(False)
    logged = scale_axis(left, list(gap["high_score"]) + list(gap["low_score"]))
    left.set_ylabel(f"A(L, l){' (log)' if logged else ''}")
    layer_ticks(left, gap["layer"])
    left.set_title("resource groups; gap = 100·(H − W)/H")
    handles = left.get_legend_handles_labels()[0] + bars.get_legend_handles_labels()[0]
    left.legend(
        handles,
        [h.get_label() for h in handles],
        loc="lower left",
        bbox_to_anchor=(0, 1.08),
        ncol=3,
        frameon=False,
    )
    _lang_lines(right, by_lang, "gap_vs_en_pct", _names(wh), order)
    right.axhline(0, color="black", linewidth=0.6)
    layer_ticks(right, by_lang["layer"])
    right.set_ylabel("gap vs English (%)")
    right.set_title("each language against English")
    _legend_outside(fig, right)
    run_id = int(gap["run_id"].iloc[0])
    fig.suptitle(
        f"Activation gap — {run_label(wh, run_id)} ({metric_label(gap['mode'].iloc[0], stat, k)})",
        fontsize="medium",
    )
    return _save(fig, out, look.force)


@_styled
def plot_similarity(
    wh: Warehouse, out: str | os.PathLike | None, run: int | None = None, look: Look = Look()
) -> Path:
    """Mean cosine of each language's residuals to English's, by layer."""
    out = _out(wh, out, look)
    df = queries.similarity(wh, run)
    df = df[df["lang"] != "en"]
    y = "similarity" if "similarity" in df.columns else "sim"
    fig, ax = _figure(look)
    _lang_lines(ax, df, y, _names(wh), catalogue(wh))
    layer_ticks(ax, df["layer"])
    ax.set_ylabel("cosine to English")
    _legend_outside(fig, ax, ncol=_lang_columns(look))
    ax.set_title(f"Residual similarity — {run_label(wh, int(df['run_id'].iloc[0]))}")
    return _save(fig, out, look.force)


@_styled
def plot_by_layer(
    wh: Warehouse,
    out: str | os.PathLike | None,
    df: pd.DataFrame,
    y: str,
    ylabel: str,
    title: str,
    look: Look = Look(),
) -> Path:
    """Any per-(layer, lang) column of `df` as one line a language (e.g. LAPE counts)."""
    out = _out(wh, out, look)
    groups = wh.sql("SELECT lang, resource_group FROM languages")
    if "resource_group" not in df.columns:
        df = df.merge(groups, on="lang", how="left")
    fig, ax = _figure(look)
    _lang_lines(ax, df, y, _names(wh), catalogue(wh))
    layer_ticks(ax, df["layer"])
    logged = scale_axis(ax, df[y])
    if not logged and df[y].dtype.kind in "iu":
        from matplotlib.ticker import MaxNLocator

        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(ylabel + (" (log)" if logged else ""))
    _legend_outside(fig, ax, ncol=_lang_columns(look))
    ax.set_title(title)
    return _save(fig, out, look.force)


def _lang_bars(ax, df: pd.DataFrame, y: str, order: list[str], err: str | None = None):
    """One bar per language in its own colour; low-resource bars hatched."""
    styles = [lang_style(lang, order) for lang in df["lang"]]
    yerr = df[err].fillna(0) if err else None
    bars = ax.bar(
        list(df["lang"]),
        df[y],
        color=[s["color"] for s in styles],
        yerr=yerr,
        capsize=2,
        edgecolor="white",
        linewidth=0.5,
    )
    for bar, group in zip(bars, df["resource_group"], strict=True):
        bar.set_hatch("" if group == "high" else "////")
        bar.set_label(None)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_axisbelow(True)
    from matplotlib.patches import Patch

    ax.figure.legend(
        handles=[
            Patch(facecolor="white", edgecolor="black", label="high-resource"),
            Patch(facecolor="white", edgecolor="black", hatch="////", label="low-resource"),
        ],
        loc="outside lower center",
        ncol=2,
        frameon=False,
    )
    return bars


@_styled
def plot_languages(
    wh: Warehouse,
    out: str | os.PathLike | None,
    run: int | None = None,
    layer: int | None = None,
    mode: str | None = None,
    stat: str = "max",
    k: int = DEFAULT_K,
    look: Look = Look(),
) -> Path:
    """Each language's mean gap against English across layers (± sample std), or at `layer`."""
    out = _out(wh, out, look)
    order = catalogue(wh)
    df = sort_rows(queries.languages(wh, run, layer, mode, stat, k), order)
    fig, ax = _figure(look)
    _lang_bars(ax, df, "mean_gap_pct", order, err=None if layer is not None else "std_gap_pct")
    where = f"at layer {layer}" if layer is not None else "mean ± std over layers"
    ax.set_ylabel(f"gap vs English (%)\n{where}")
    ax.set_title(
        f"Gap against English — {run_label(wh, int(df['run_id'].iloc[0]))}\n"
        f"({metric_label(df['mode'].iloc[0], stat, k)})"
    )
    return _save(fig, out, look.force)


def effect_kind(wh: Warehouse, run: int) -> str:
    """'steering' for a steered run, else 'fine-tune'."""
    rec = wh.run(run)
    return "steering" if rec["config"].get("steer") else "fine-tune"


@_styled
def plot_compare(
    wh: Warehouse,
    base: int,
    tuned: int,
    out: str | os.PathLike | None,
    layer: int | None = None,
    mode: str | None = None,
    stat: str = "max",
    k: int = DEFAULT_K,
    look: Look = Look(),
) -> Path:
    """Activation improvement per language after a fine-tune or steering at `layer`
    (default: the last layer both runs hold), English retention in the title."""
    out = _out(wh, out, look)
    order = catalogue(wh)
    df = queries.compare(wh, base, tuned, layer, mode, stat, k)
    layer = int(df["layer"].max()) if layer is None else layer
    df = sort_rows(df[df["layer"] == layer], order)
    retention = float(df["en_retention_pct"].iloc[0])
    cosine = float(df["en_cosine"].iloc[0])
    df = df[df["lang"] != "en"]
    fig, ax = _figure(look)
    _lang_bars(ax, df, "improvement_pct", order)
    for x, value in enumerate(df["improvement_pct"]):
        ax.annotate(
            f"{value:+.0f}%",
            (x, value),
            ha="center",
            va="bottom" if value >= 0 else "top",
            fontsize="x-small",
        )
    ax.set_ylabel(f"improvement at layer {layer} (%)")
    ax.set_title(
        f"{effect_kind(wh, tuned).capitalize()} effect — {run_label(wh, tuned)} vs base run "
        f"{base}\n({metric_label(df['mode'].iloc[0], stat, k)}); English retention "
        f"{retention:.1f}%, cosine {cosine:.3f}",
        wrap=True,
    )
    return _save(fig, out, look.force)


@_styled
def plot_correlation(
    wh: Warehouse,
    task: str,
    layer: int,
    out: str | os.PathLike | None,
    *,
    metric: str | None = None,
    against: str = "gap",
    run: int | None = None,
    mode: str | None = None,
    stat: str = "max",
    k: int = DEFAULT_K,
    look: Look = Look(),
) -> Path:
    """Scatter of `task`'s score against the gap (or A) at `layer`: one labelled point per
    language in its colour and marker, a least-squares line, r, ρ and n in the title."""
    import numpy as np

    from xling.analysis.correlation import X_COLUMN, correlation_stats, points_against

    out = _out(wh, out, look)
    order = catalogue(wh)
    points = points_against(
        wh, task, against, metric=metric, layer=layer, run=run, mode=mode, stat=stat, k=k
    )
    x = X_COLUMN[against]
    row = correlation_stats(points, x).iloc[0]
    used_mode = queries.resolve_mode(wh, points.attrs["run"], mode)
    names = _names(wh)
    fig, ax = _figure(look)
    for p in sort_rows(points, order).itertuples(index=False):
        ax.scatter(
            getattr(p, x),
            p.bench_value,
            s=22,
            zorder=3,
            label=names.get(p.lang, p.lang),
            **lang_style(p.lang, order),
        )
        ax.annotate(
            p.lang,
            (getattr(p, x), p.bench_value),
            xytext=(3, 2),
            textcoords="offset points",
            fontsize="x-small",
        )
    if points[x].nunique() > 1:
        slope, intercept = np.polyfit(points[x], points["bench_value"], 1)
        xs = np.linspace(points[x].min(), points[x].max(), 2)
        ax.plot(xs, slope * xs + intercept, color=OTHER_COLOUR, linewidth=0.8, zorder=2)
    metric_name = points.attrs["metric"]
    score = task if metric_name == task else f"{task} ({metric_name})"
    ax.set_xlabel(
        f"gap vs English at layer {layer} (%)" if against == "gap" else f"A(L, l) at layer {layer}"
    )
    ax.set_ylabel(score)
    _legend_outside(fig, ax, ncol=_lang_columns(look))
    ax.set_title(
        f"{score} vs {'gap' if against == 'gap' else 'A'}, layer {layer} "
        f"({metric_label(used_mode, stat, k)})\n"
        f"r = {row.pearson_r:.2f}, ρ = {row.spearman_rho:.2f}, n = {row.n} — "
        f"{run_label(wh, points.attrs['run'])}"
    )
    return _save(fig, out, look.force)
