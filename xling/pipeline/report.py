"""`xling report`: every item a paper on this method needs, written from the warehouse.

    build_report(wh, out_dir) -> Report

Each item is a figure (PDF + PNG) and a table (LaTeX + CSV) under `out_dir`, and all of them
are shown in one self-contained `report.html` (images inline as data: URIs, no script, no
network) with the provenance of every item: run ids, model, SAE release and ids, layers,
mode, stat, k, reference language, number of aligned groups, interval method.

Items, each skipped with the command that would produce its data when the warehouse lacks it:
similarity per layer and language (with its controls when the view has them), the gap per
layer between groups (the paper's Figure 3), the gap of each language against English (its
Appendix D table), LAPE language-specific features and neurons per language and layer,
benchmark scores and their correlation with the gap, information parity (when the warehouse
has it), and for each fine-tuned or steered run the improvement per language with English
retention (Tables 5-8) and the benchmark scores before and after.

Tables are written in catalogue order with the number format of analysis.formats; columns
are taken as the views return them, so controls (baseline, centred, retrieval) and interval
bounds (*_lo/*_hi) appear as soon as the views provide them.
"""

from __future__ import annotations

import base64
import html
import inspect
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xling.analysis import plots, queries
from xling.analysis.defaults import DEFAULT_K
from xling.analysis.export import one_thread
from xling.analysis.formats import Grid, cell_texts, format_grid
from xling.analysis.output import check_not_warehouse, protected_paths
from xling.analysis.style import catalogue, sort_rows
from xling.warehouse.errors import XlingError

if TYPE_CHECKING:
    import pandas as pd

    from xling.warehouse import Warehouse

log = logging.getLogger(__name__)

REFERENCE = "en"
# columns that describe how a table was made rather than what it found
_BOOKKEEPING = ("run_id", "mode", "ref", "stat", "k", "n_layers", "base_run", "tuned_run")


@dataclass
class Item:
    """One report item: its files (relative to the report folder) or why it was skipped."""

    key: str
    title: str
    files: list[str] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)
    skipped: str | None = None
    grid: Grid | None = None
    png: str | None = None


@dataclass
class Report:
    out: Path
    items: list[Item]
    seconds: float

    @property
    def written(self) -> list[Item]:
        return [i for i in self.items if i.skipped is None]


def _has_column(df: pd.DataFrame, suffix: str) -> bool:
    return any(str(c).endswith(suffix) for c in df.columns)


def _with_intervals(fn) -> dict[str, Any]:
    """{"ci": True} when the query function can add bootstrap intervals, else {}."""
    return {"ci": True} if "ci" in inspect.signature(fn).parameters else {}


def _interval_method(df: pd.DataFrame) -> str:
    if _has_column(df, "_lo") and _has_column(df, "_hi"):
        return "95% percentile bootstrap over aligned groups (*_lo, *_hi)"
    return "none in this warehouse's views"


def _has_relation(wh: Warehouse, name: str) -> bool:
    return bool(
        wh.scalar(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'main' "
            "AND table_name = ?",
            [name],
        )
    )


def run_provenance(wh: Warehouse, run: int) -> dict[str, Any]:
    """What produced a run's numbers: model, adapter, steering, SAEs, layers, groups."""
    rec = wh.run(run)
    cfg = rec["config"]
    saes = cfg.get("saes") or []
    releases = sorted({str(s.get("release")) for s in saes if s.get("release")})
    names = [str(s.get("sae_name")) for s in saes if s.get("sae_name")]
    layers = queries.run_layers(wh, run) or cfg.get("resolved_layers") or cfg.get("layers")
    groups = wh.scalar(
        "SELECT count(DISTINCT p.group_id) FROM phrase_tokens t JOIN phrases p USING (phrase_id) "
        "WHERE t.run_id = ?",
        [run],
    )
    return {
        "run": run,
        "model": rec["model"],
        "adapter": rec.get("adapter") or cfg.get("adapter"),
        "steering": cfg.get("steer"),
        "SAE release": ", ".join(releases) or "local",
        "SAE ids": ", ".join(names[:4]) + (f" (+{len(names) - 4})" if len(names) > 4 else ""),
        "layers": queries.span(layers or []),
        "groups": int(groups or 0),
    }


def _finished_runs(wh: Warehouse) -> list[dict[str, Any]]:
    ids = [
        int(r[0])
        for r in wh.con.execute(
            "SELECT run_id FROM runs WHERE status = 'finished' ORDER BY run_id"
        ).fetchall()
    ]
    return [wh.run(i) for i in ids]


def _is_effect_run(rec: dict[str, Any]) -> bool:
    return bool(rec.get("adapter") or rec["config"].get("adapter") or rec["config"].get("steer"))


def default_base_run(wh: Warehouse) -> int:
    """The newest finished run without adapter or steering (else the newest finished)."""
    runs = _finished_runs(wh)
    if not runs:
        raise XlingError("no finished run in the warehouse; run `xling ingest` first")
    plain = [r for r in runs if not _is_effect_run(r)]
    return int((plain or runs)[-1]["run_id"])


class _Writer:
    """Writes one item's files into the staging folder and keeps what the HTML shows."""

    def __init__(self, wh: Warehouse, stage: Path, style: str) -> None:
        self.wh, self.stage, self.style = wh, stage, style
        self.order = catalogue(wh)

    def table(self, item: Item, df: pd.DataFrame, caption: str) -> None:
        """CSV with every column; LaTeX without the bookkeeping columns that hold one value
        in every row (the caption says them), so the table fits a page."""
        df = sort_rows(df, self.order)
        grid = Grid.from_frame(df)
        name = f"tables/{item.key}.csv"
        (self.stage / name).write_text(format_grid(grid, "csv"), encoding="utf-8")
        constant = [
            c
            for c in df.columns
            if c in _BOOKKEEPING and len(df) > 0 and df[c].astype(str).nunique() == 1
        ]
        extra = [f"{c} {df[c].iloc[0]}" for c in constant if c not in ("run_id", "mode")]
        slim = Grid.from_frame(df.drop(columns=constant))
        tex = format_grid(
            slim,
            "latex",
            name=item.key,
            caption=caption + (f"; {', '.join(extra)}" if extra else ""),
        )
        (self.stage / f"tables/{item.key}.tex").write_text(tex, encoding="utf-8")
        item.files += [name, f"tables/{item.key}.tex"]
        item.grid = grid

    def figure(self, item: Item, draw) -> None:
        """`draw(None, look)` returns the figure; it is drawn once, saved as PDF and PNG."""
        look = plots.Look(self.style)
        names = [f"figures/{item.key}.{suffix}" for suffix in ("pdf", "png")]
        plots.save_formats(draw(None, look), [self.stage / n for n in names], look)
        item.files += names
        item.png = names[1]


def _skip(items: list[Item], key: str, title: str, why: str) -> None:
    log.info("report: %s skipped: %s", key, why)
    items.append(Item(key, title, skipped=why))


def _score_caption(what: str, prov: dict[str, Any], mode: str, stat: str, k: int) -> str:
    return f"{what} (run {prov['run']}, {prov['model']}; {plots.metric_label(mode, stat, k)})"


def build_report(
    wh: Warehouse,
    out: str | os.PathLike,
    *,
    run: int | None = None,
    mode: str | None = None,
    stat: str = "max",
    k: int = DEFAULT_K,
    style: str = "paper",
    force: bool = False,
) -> Report:
    """Write every available item and report.html into the folder `out` (see the module
    docstring). The folder is filled in a staging folder beside it and moved into place; an
    existing folder is refused unless `force`, and then only the report's own files in it are
    replaced."""
    t0 = time.monotonic()
    out = Path(out)
    check_not_warehouse(out, protected_paths(wh.path))
    if os.path.lexists(out):
        if not out.is_dir():
            raise XlingError(f"{out} exists and is not a folder; pick another --out")
        if any(out.iterdir()) and not force:
            raise XlingError(f"{out} is not empty; pass --force to replace the report in it")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise XlingError(f"folder {parent} does not exist; create it or pick another --out")
    base = wh.resolve_run(run) if run is not None else default_base_run(wh)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".xling-tmp", dir=parent))
    try:
        (stage / "figures").mkdir()
        (stage / "tables").mkdir()
        with one_thread(wh):
            items = _items(_Writer(wh, stage, style), base, mode, stat, k)
        elapsed = time.monotonic() - t0
        (stage / "report.html").write_text(_html(wh, items, elapsed, stage), encoding="utf-8")
        _move_into_place(stage, out)
    except OSError as err:
        raise XlingError(f"cannot write the report to {out}: {err.strerror or err}") from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return Report(out, items, time.monotonic() - t0)


def _move_into_place(stage: Path, out: Path) -> None:
    if not out.exists():
        os.replace(stage, out)
        return
    for path in sorted(stage.rglob("*")):
        target = out / path.relative_to(stage)
        if path.is_dir():
            target.mkdir(exist_ok=True)
        else:
            if os.path.lexists(target) and not target.is_file():
                raise XlingError(f"{target} exists and is not a regular file; remove it")
            os.replace(path, target)


def _items(w: _Writer, base: int, mode: str | None, stat: str, k: int) -> list[Item]:
    wh = w.wh
    items: list[Item] = []
    prov = run_provenance(wh, base)
    has_sae = bool(queries.run_layers(wh, base))
    used_mode = queries.resolve_mode(wh, base, mode) if has_sae else None
    common = {**prov, "reference": REFERENCE}
    if used_mode:
        common.update(mode=used_mode, stat=stat, k=k if used_mode != "origin" else "n/a")

    # similarity per layer and language, with the controls the view provides
    try:
        sim = queries.similarity(wh, base, **_with_intervals(queries.similarity))
        item = Item("similarity", "Residual similarity to English per layer")
        item.provenance = {
            **prov,
            "reference": REFERENCE,
            "controls": ", ".join(
                c for c in ("baseline", "centred", "retrieval") if c in sim.columns
            )
            or "none in this warehouse's views",
            "interval": _interval_method(sim),
        }
        w.table(item, sim, f"residual similarity to English (run {base}, {prov['model']})")
        w.figure(item, lambda p, look: plots.plot_similarity(wh, p, base, look=look))
        items.append(item)
    except XlingError as err:
        _skip(items, "similarity", "Residual similarity", str(err))

    if not has_sae:
        why = f"run {base} has no SAE features; `xling ingest --sae-release/--sae-dir`"
        for key, title in (("gap_by_layer", "Gap per layer"), ("gap_by_lang", "Gap vs English")):
            _skip(items, key, title, why)
    else:
        gap = queries.gap(wh, base, None, used_mode, stat, k, **_with_intervals(queries.gap))
        item = Item("gap_by_layer", "Activation gap per layer between resource groups (Fig. 3)")
        item.provenance = {**common, "interval": _interval_method(gap)}
        w.table(item, gap, _score_caption("activation gap per layer", prov, used_mode, stat, k))
        w.figure(item, lambda p, look: plots.plot_gap(wh, p, base, used_mode, stat, k, look=look))
        items.append(item)
        try:
            summary = queries.languages(
                wh, base, None, used_mode, stat, k, **_with_intervals(queries.languages)
            )
            item = Item("gap_by_lang", "Gap of each language against English (App. D)")
            item.provenance = {**common, "interval": _interval_method(summary)}
            w.table(item, summary, _score_caption("gap against English", prov, used_mode, stat, k))
            w.figure(
                item,
                lambda p, look: plots.plot_languages(
                    wh, p, base, None, used_mode, stat, k, look=look
                ),
            )
            items.append(item)
        except XlingError as err:
            _skip(items, "gap_by_lang", "Gap vs English", str(err))

    for kind, how in (("features", "an SAE"), ("neurons", "--neurons")):
        key = f"lape_{kind}"
        try:
            sel = queries.lape(wh, kind, run=base)
        except XlingError as err:
            _skip(
                items,
                key,
                f"Language-specific {kind}",
                str(err) if "ingest" in str(err) else f"{err} (ingest with {how})",
            )
            continue
        counts = _unit_counts(wh, sel, base, kind)
        item = Item(key, f"Language-specific {kind} (LAPE, top rate 0.01) per language and layer")
        item.provenance = {**prov, "selection": "LAPE top_rate 0.01, filter_rate 0.95"}
        w.table(item, counts, f"LAPE language-specific {kind} (run {base}, {prov['model']})")
        if len(counts):
            w.figure(
                item,
                lambda p, look, c=counts, n=f"n_{kind}", t=kind: plots.plot_by_layer(
                    wh, p, c, n, f"language-specific {t}", f"LAPE {t} — run {base}", look=look
                ),
            )
        items.append(item)

    _benchmarks(w, items, base, prov, used_mode, stat, k)
    if _has_relation(wh, "information_parity"):
        par = wh.sql("SELECT * FROM information_parity")
        if "run_id" in par.columns:
            par = par[par["run_id"] == base]
        elif "model_id" in par.columns:
            par = par[par["model_id"] == wh.run(base)["model_id"]]
        item = Item("parity", "Information parity per language")
        item.provenance = {**prov, "interval": _interval_method(par)}
        w.table(item, par, f"information parity ({prov['model']})")
        items.append(item)
    else:
        _skip(
            items,
            "parity",
            "Information parity",
            "no information_parity view in this warehouse (xling versions with capability "
            "metrics compute it with `xling bench parity`)",
        )
    _effects(w, items, base, used_mode, stat, k)
    return items


def _unit_counts(wh: Warehouse, sel: pd.DataFrame, run: int, kind: str) -> pd.DataFrame:
    """Selected units per (layer, language), 0 where a language has none at a layer."""
    import pandas as pd

    layers = sorted(set(sel["layer"]) | set(queries.run_layers(wh, run)))
    langs = queries.run_langs(wh, run)
    grid = pd.MultiIndex.from_product([layers, langs], names=["layer", "lang"])
    counts = sel.groupby(["layer", "lang"]).size().reindex(grid, fill_value=0)
    out = counts.rename(f"n_{kind}").reset_index()
    out.insert(0, "run_id", run)
    return out


def _benchmarks(w: _Writer, items: list[Item], base: int, prov, mode, stat, k) -> None:
    from xling.analysis.correlation import correlate

    wh = w.wh
    model_id = wh.run(base)["model_id"]
    tasks = [
        r[0]
        for r in wh.con.execute(
            "SELECT DISTINCT task FROM benchmarks WHERE model_id = ? ORDER BY task", [model_id]
        ).fetchall()
    ]
    if not tasks:
        _skip(
            items,
            "benchmarks",
            "Benchmark scores and their correlation with the gap",
            f"no benchmark scores for run {base}'s model; `xling bench bpb`, `xling bench run` "
            "or `xling bench import`",
        )
        return
    scores = wh.sql(
        "SELECT task, metric, lang, value, stderr, n_samples, source FROM benchmarks "
        "WHERE model_id = ? AND steer IS NULL ORDER BY task, metric",
        [model_id],
    )
    item = Item("benchmarks", "Benchmark scores per language")
    item.provenance = {**prov, "tasks": ", ".join(tasks)}
    w.table(item, scores, f"benchmark scores ({prov['model']})")
    items.append(item)
    if mode is None:
        return
    layers = queries.run_layers(wh, base)
    for task in tasks:
        key = f"correlation_{task}"
        try:
            table = correlate(wh, task, run=base, mode=mode, stat=stat, k=k)
        except XlingError as err:
            _skip(items, key, f"{task} against the gap", str(err))
            continue
        item = Item(key, f"Correlation of {task} with the gap against English, per layer")
        item.provenance = {
            **prov,
            "reference": REFERENCE,
            "mode": mode,
            "stat": stat,
            "task": task,
            "figure layer": layers[0],
        }
        w.table(
            item, table, f"{task} against the gap (run {base}; {plots.metric_label(mode, stat, k)})"
        )
        try:
            w.figure(
                item,
                lambda p, look, t=task: plots.plot_correlation(
                    wh, t, layers[0], p, run=base, mode=mode, stat=stat, k=k, look=look
                ),
            )
        except XlingError as err:
            item.provenance["figure"] = str(err)
        items.append(item)


def _effects(w: _Writer, items: list[Item], base: int, mode, stat, k) -> None:
    wh = w.wh
    tuned = [r for r in _finished_runs(wh) if _is_effect_run(r) and r["run_id"] != base]
    if not tuned:
        _skip(
            items,
            "effect",
            "Fine-tune or steering effect",
            "no fine-tuned or steered run; `xling finetune align` then `xling ingest --adapter`, "
            "or `xling steer add` then `xling ingest --steer`",
        )
        return
    for rec in tuned:
        t = int(rec["run_id"])
        kind = plots.effect_kind(wh, t)
        key = f"effect_run{t}"
        try:
            df = queries.compare(wh, base, t, None, mode, stat, k)
        except XlingError as err:
            _skip(items, key, f"{kind} effect of run {t}", str(err))
            continue
        item = Item(
            key,
            f"{kind.capitalize()} effect of run {t} against base run {base} "
            "(Tables 5-8: improvement per language, English retention)",
        )
        item.provenance = {
            **run_provenance(wh, t),
            "base run": base,
            "mode": mode,
            "stat": stat,
            "reference": REFERENCE,
        }
        w.table(
            item,
            df,
            f"{kind} effect, run {t} vs base run {base} ({plots.metric_label(mode, stat, k)})",
        )
        w.figure(
            item,
            lambda p, look, t=t: plots.plot_compare(wh, base, t, p, None, mode, stat, k, look=look),
        )
        items.append(item)
        before = wh.sql(
            "SELECT b.task, b.metric, b.lang, b.value AS before, a.value AS after, "
            "a.value - b.value AS change FROM benchmarks b JOIN benchmarks a "
            "USING (task, metric, lang) WHERE b.model_id = ? AND a.model_id = ? "
            "AND b.steer IS NULL AND a.steer IS NOT DISTINCT FROM ? ORDER BY task, metric",
            [wh.run(base)["model_id"], rec["model_id"], rec["config"].get("steer")],
        )
        bkey = f"bench_before_after_run{t}"
        if before.empty:
            _skip(
                items,
                bkey,
                f"Benchmarks before/after run {t}",
                "no benchmark scores "
                f"measured with run {t}'s model; `xling bench run` or `xling bench bpb` on it",
            )
        else:
            item = Item(bkey, f"Benchmark scores before and after ({kind}, run {t})")
            item.provenance = {"base run": base, "run": t}
            w.table(item, before, f"benchmarks before and after ({kind}, run {t})")
            items.append(item)


# -- HTML --------------------------------------------------------------------------------


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:64em;color:#222}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:2em;border-top:1px solid #ccc;padding-top:1em}
table{border-collapse:collapse;font-size:.8em;margin:.5em 0}
td,th{border-bottom:1px solid #ddd;padding:.15em .5em;white-space:nowrap}
td.n{text-align:right;font-variant-numeric:tabular-nums}
dl{display:grid;grid-template-columns:max-content auto;gap:0 1em;font-size:.85em}
dt{color:#555}img{max-width:100%;height:auto}.skip{color:#8a4b00}
.scroll{overflow-x:auto;max-height:30em;overflow-y:auto}
"""


def _html(wh: Warehouse, items: list[Item], seconds: float, stage: Path) -> str:
    e = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>xling report</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>xling report</h1>",
        f"<p>Warehouse <code>{e(str(wh.path))}</code>; {len([i for i in items if not i.skipped])} "
        f"items written, {len([i for i in items if i.skipped])} skipped, in {seconds:.1f} s.</p>",
    ]
    for item in items:
        parts.append(f'<h2 id="{e(item.key)}">{e(item.title)}</h2>')
        if item.skipped:
            parts.append(f'<p class="skip">Skipped: {e(item.skipped)}</p>')
            continue
        if item.png:
            raw = (stage / item.png).read_bytes()
            # shown at print size: the PNG is drawn at PNG_DPI, a CSS inch is 96 px
            width = int.from_bytes(raw[16:20], "big") * 96 // plots.PNG_DPI
            data = base64.b64encode(raw).decode()
            parts.append(
                f'<img alt="{e(item.title)}" width="{width}" src="data:image/png;base64,{data}">'
            )
        parts.append(
            "<dl>"
            + "".join(
                f"<dt>{e(str(k))}</dt><dd>{e(str(v))}</dd>"
                for k, v in item.provenance.items()
                if v not in (None, "")
            )
            + "</dl>"
        )
        parts.append("<p>Files: " + ", ".join(f"<code>{e(f)}</code>" for f in item.files) + "</p>")
        if item.grid is not None:
            parts.append(_html_table(item.grid))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _html_table(grid: Grid, max_rows: int = 200) -> str:
    e = html.escape
    numeric = [k in ("float", "int") for k in grid.kinds]
    head = "".join(f"<th>{e(c)}</th>" for c in grid.columns)
    rows = []
    for cells in cell_texts(grid, 4)[:max_rows]:
        rows.append(
            "<tr>"
            + "".join(
                f'<td class="n">{e(t)}</td>' if n else f"<td>{e(t)}</td>"
                for t, n in zip(cells, numeric, strict=True)
            )
            + "</tr>"
        )
    more = len(grid.rows) - max_rows
    note = f"<p>… {more} more rows in the CSV.</p>" if more > 0 else ""
    return f'<div class="scroll"><table><tr>{head}</tr>{"".join(rows)}</table></div>{note}'
