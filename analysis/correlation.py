"""Does the activation gap predict benchmark scores? (SPEC §3, benchmark correlation.)

Across languages, per layer L: Pearson r and Spearman ρ, each with its two-sided p-value,
between x(L, l) and the model's score on a task in language l, where x is

- `gap`: gap_vs_en_pct(L, l) = 100 · (A(L, en) − A(L, l)) / A(L, en). English is left out:
  its gap is 0 by definition, so it would be a point placed by construction, not measured.
- `score`: A(L, l), the language's activation score itself; English is kept.

The scores are those of the run's model (same model_id, hence the same adapter) measured
under the run's steering, if any. p-values are scipy's: Pearson's exact test under
normality, Spearman's t approximation; with a handful of languages read them with care.
Fewer than 3 languages, or a constant vector, give NaN statistics.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from xling.analysis.defaults import DEFAULT_K
from xling.analysis.queries import gap_vs_benchmark
from xling.warehouse.errors import XlingError

if TYPE_CHECKING:
    from xling.warehouse import Warehouse

AGAINST = ("gap", "score")
X_COLUMN = {"gap": "gap_vs_en_pct", "score": "act_score"}
MIN_LANGS = 3


def pick_metric(wh: Warehouse, model_id: int, task: str, metric: str | None) -> str:
    """`metric`, checked to be stored for (model, task); by default `acc`, else the only one."""
    stored = [
        r[0]
        for r in wh.con.execute(
            "SELECT DISTINCT metric FROM benchmarks WHERE model_id = ? AND task = ? ORDER BY 1",
            [model_id, task],
        ).fetchall()
    ]
    name = wh.scalar("SELECT name FROM models WHERE model_id = ?", [model_id])
    if not stored:
        tasks = [
            r[0]
            for r in wh.con.execute(
                "SELECT DISTINCT task FROM benchmarks WHERE model_id = ? ORDER BY 1", [model_id]
            ).fetchall()
        ]
        have = f"it has {', '.join(tasks)}" if tasks else "it has none"
        raise XlingError(
            f"no {task!r} scores for model {name} (model_id {model_id}); {have}. "
            "Import them with `xling bench import` or measure with `xling bench run`/`bench bpb`"
        )
    if metric is None:
        if "acc" in stored or len(stored) == 1:
            return "acc" if "acc" in stored else stored[0]
        raise XlingError(f"task {task!r} has metrics {', '.join(stored)}; pass --metric")
    if metric not in stored:
        raise XlingError(f"task {task!r} has no metric {metric!r}; it has {', '.join(stored)}")
    return metric


def correlation_points(
    wh: Warehouse,
    task: str,
    *,
    metric: str | None = None,
    layer: int | None = None,
    run: int | None = None,
    mode: str | None = None,
    stat: str = "max",
    k: int = DEFAULT_K,
) -> pd.DataFrame:
    """One row per (layer, lang): resource_group, act_score = A(L, l), gap_vs_en_pct and
    bench_value, for `run` (default: the latest finished run) at `layer` (default: all).

    The rows are the view gap_vs_benchmark's: the gaps of gap_by_lang beside the scores of
    the run's model under the run's steering. Only languages with both appear; `attrs`
    records the run, task and metric.
    """
    run_id = wh.resolve_run(run)
    model_id = wh.scalar("SELECT model_id FROM runs WHERE run_id = ?", [run_id])
    metric = pick_metric(wh, model_id, task, metric)
    points = gap_vs_benchmark(wh, task, metric, run_id, layer, mode, stat, k)
    points = points[
        ["layer", "lang", "resource_group", "act_score", "gap_vs_en_pct", "bench_value"]
    ].sort_values(["layer", "lang"], ignore_index=True)
    points.attrs.update(run=run_id, task=task, metric=metric)
    return points


def correlation_stats(points: pd.DataFrame, x: str, y: str = "bench_value") -> pd.DataFrame:
    """Per layer: n, Pearson r with its 95 % Fisher-z interval (pearson_lo, pearson_hi) and p,
    Spearman ρ and p of `x` against `y` across languages."""
    from scipy import stats

    from xling.analysis.stats import fisher_z_interval

    rows = []
    for layer, g in points.groupby("layer", sort=True):
        g = g.dropna(subset=[x, y])
        n = len(g)
        r = p_r = rho = p_rho = math.nan
        if n >= MIN_LANGS:
            with warnings.catch_warnings():
                # A constant vector has no correlation: scipy warns and returns NaN.
                warnings.simplefilter("ignore", stats.ConstantInputWarning)
                r, p_r = stats.pearsonr(g[x], g[y])
                rho, p_rho = stats.spearmanr(g[x], g[y])
        rows.append(
            {
                "layer": int(layer),
                "n": n,
                "pearson_r": float(r),
                "pearson_lo": fisher_z_interval(float(r), n)[0],
                "pearson_hi": fisher_z_interval(float(r), n)[1],
                "pearson_p": float(p_r),
                "spearman_rho": float(rho),
                "spearman_p": float(p_rho),
                "langs": ",".join(sorted(g["lang"])),
            }
        )
    return pd.DataFrame(
        rows,
        columns=[
            "layer",
            "n",
            "pearson_r",
            "pearson_lo",
            "pearson_hi",
            "pearson_p",
            "spearman_rho",
            "spearman_p",
            "langs",
        ],
    )


def points_against(wh: Warehouse, task: str, against: str, **kwargs) -> pd.DataFrame:
    """correlation_points (`kwargs` are its options) for `against`, as the table and the
    figure use them: English dropped against the gap; no point left is an error."""
    if against not in AGAINST:
        raise XlingError(f"--against must be gap or score, got {against!r}")
    points = correlation_points(wh, task, **kwargs)
    attrs = dict(points.attrs)
    if against == "gap":
        points = points[points["lang"] != "en"].reset_index(drop=True)
        points.attrs.update(attrs)
    if points.empty:
        raise XlingError(
            f"no language has both an activation score in run {attrs['run']} and a "
            f"{task!r} {attrs['metric']} score"
            + (" (English is left out against the gap)" if against == "gap" else "")
            + "; compare `xling bench list` with `xling query gap`"
        )
    return points


def correlate(
    wh: Warehouse,
    task: str,
    *,
    layer: int | None = None,
    metric: str | None = None,
    against: str = "gap",
    run: int | None = None,
    mode: str | None = None,
    stat: str = "max",
    k: int = DEFAULT_K,
) -> pd.DataFrame:
    """Correlation across languages between the activation gap against English (or the
    activation score A) and `task`'s score, one row per layer (only `layer` when given).

    `mode`, `stat` and `k` choose how A is computed (see the view activation_scores).
    """
    points = points_against(
        wh, task, against, metric=metric, layer=layer, run=run, mode=mode, stat=stat, k=k
    )
    out = correlation_stats(points, X_COLUMN[against])
    out.insert(1, "task", task)
    out.insert(2, "metric", points.attrs["metric"])
    out.insert(3, "against", against)
    return out


def plot_correlation(wh: Warehouse, task: str, layer: int, out: str | Path, **kwargs) -> Path:
    """The scatter of `task` against the gap at `layer` (drawn by analysis.plots)."""
    from xling.analysis.plots import plot_correlation as draw

    return draw(wh, task, layer, out, **kwargs)
