"""Metric queries from the summaries against hand-written DuckDB over the raw rows (issue 15).

On a synthetic warehouse (bench/query_gap.py's `build`: one run, ten languages, English
origins, stored as an ingest lands it without a finish rewrite, `--order chunked`, or
layer-major, the raw one-layer query's best case) this keeps the summaries the
way an ingest would, chunk by chunk (`update_summaries` over windows of whole phrases, each in
its own transaction, then `finish_summaries`), and times side by side:

    query gap --layer L   gap_by_layer over activation_scores_summary vs HAND_GAP
    query gap             all layers, vs the hand-written gap grouped by layer
    query languages       gap_by_lang_summary over the summaries vs a hand-written per-language
                          gap against English averaged over layers
    query lape            lape_selected over features from the summaries vs the same macro
                          over the raw rows (its selection has no shorter hand-written form)

Every pair is checked equal first. The summary-reading macros are today's gap views with
`activation_scores(` read as `activation_scores_summary(` (the rewrite the views take).

    .venv/bin/python bench/summary_queries.py --rows 20e6
    .venv/bin/python bench/summary_queries.py --rows 100e6      # builds under bench/_data/
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from query_gap import CHUNK_ROWS, DATA, HAND_GAP, HAND_GAP_ALL, build, register_layers, timed

from xling.warehouse import Warehouse
from xling.warehouse.summaries import finish_summaries, update_summaries

# `query languages` by hand: each language's gap against English, mean over layers.
HAND_LANGUAGES = (
    HAND_GAP_ALL.split("SELECT layer, 100 *")[0]
    + """
SELECT s.lang, avg(100 * (e.a - s.a) / e.a) AS mean_gap_pct
FROM scores s JOIN scores e ON e.layer = s.layer AND e.lang = 'en'
WHERE s.lang <> 'en'
GROUP BY s.lang ORDER BY s.lang
"""
)


def keep_summaries(wh: Warehouse, chunk_rows: int) -> dict[str, float]:
    """Summaries over the run's phrases in ingest-sized chunks; seconds per step."""
    con = wh.con
    per_phrase = wh.scalar("SELECT count(*) FROM feature_acts") / wh.scalar(
        "SELECT count(*) FROM phrase_tokens"
    )
    n = int(wh.scalar("SELECT count(*) FROM phrase_tokens"))
    step = max(10, int(chunk_rows / per_phrase) // 10 * 10)
    start = time.perf_counter()
    for lo in range(0, n, step):
        with wh.transaction() as c:
            update_summaries(c, 1, range(lo, min(n, lo + step)))
    update_s = time.perf_counter() - start
    start = time.perf_counter()
    with wh.transaction() as c:
        finish_summaries(c, 1)
    finish_s = time.perf_counter() - start
    rows = sum(
        con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
        for t in ("summary_feature_lang", "summary_origin", "summary_topk", "summary_topk_hits")
    )
    return {"update_s": update_s, "finish_s": finish_s, "chunks": -(-n // step), "rows": rows}


SUMMARY_TABLES = (
    "summary_origin",
    "summary_topk_hits",
    "summary_feature_lang",
    "summary_topk",
    "summary_runs",
)


def measure(
    path: Path, layers: int, threads: int, repeat: int, chunk_rows: int = CHUNK_ROWS
) -> dict[str, float]:
    layer = layers // 2
    with Warehouse(path) as wh:
        con = wh.con
        con.execute(f"SET threads = {int(threads)}")
        con.execute("SET enable_progress_bar = false")
        out: dict[str, float] = {"raw_rows": float(wh.scalar("SELECT count(*) FROM feature_acts"))}
        # the upkeep is measured once, when the summaries are kept, and stored beside the file
        upkeep = path.with_suffix(".upkeep.json")
        if not wh.scalar("SELECT count(*) FROM run_layers WHERE run_id = 1"):
            # a file built before build() registered its layers: register them, and keep the
            # summaries again (their upkeep scanned every row for the layers)
            with wh.transaction() as c:
                register_layers(c, 1, layers)
                for table in SUMMARY_TABLES:
                    c.execute(f"DELETE FROM {table} WHERE run_id = 1")
            upkeep.unlink(missing_ok=True)
        if not wh.scalar("SELECT count(*) FROM summary_runs WHERE run_id = 1"):
            upkeep.write_text(
                json.dumps(keep_summaries(wh, chunk_rows) | {"chunk_rows": chunk_rows})
            )
        if upkeep.exists():
            out.update(json.loads(upkeep.read_text()))
        p = {"run": 1, "layer": layer}
        # the shipped macros, told to read the summaries (as analysis.queries does for a run
        # that has them); H includes English, like the hand-written queries
        opts = "mode := 'origin', at_run := 1, from_summaries := true"
        one = f"SELECT gap_pct FROM gap_by_layer({opts}, include_ref := true, at_layer := {layer})"
        every = f"SELECT layer, gap_pct FROM gap_by_layer({opts}, include_ref := true) ORDER BY 1"
        langs = f"SELECT lang, mean_gap_pct FROM gap_by_lang_summary({opts}) ORDER BY lang"
        # LAPE over features (query lape): the shipped macro from the summaries against the
        # same macro over the raw rows (no simpler hand-written form computes its selection)
        lape = (
            "SELECT layer, unit, lang, p FROM lape_selected(top_rate := 0.01, "
            "filter_rate := 0.95, from_summaries := {}, at_run := 1, at_kind := 'features') "
            "ORDER BY ALL"
        )
        lape_ours, lape_raw = lape.format("true"), lape.format("false")
        # same numbers first
        assert abs(con.execute(one).fetchone()[0] - con.execute(HAND_GAP, p).fetchone()[0]) < 1e-9
        for ours, hand in ((every, HAND_GAP_ALL), (langs, HAND_LANGUAGES)):
            a = con.execute(ours).fetchall()
            b = con.execute(hand, {"run": 1}).fetchall()
            assert [r[0] for r in a] == [r[0] for r in b], (a, b)
            assert all(
                abs(x[1] - y[1]) < 1e-9 * max(1, abs(y[1])) for x, y in zip(a, b, strict=True)
            )
        a, b = con.execute(lape_ours).fetchall(), con.execute(lape_raw).fetchall()
        assert a and [r[:3] for r in a] == [r[:3] for r in b], (len(a), len(b))
        assert all(abs(x[3] - y[3]) < 1e-12 for x, y in zip(a, b, strict=True))
        out.update(
            {
                "lape": timed(lambda: con.execute(lape_ours).fetchall(), repeat),
                "raw_lape": timed(lambda: con.execute(lape_raw).fetchall(), 1),
                "gap_layer": timed(lambda: con.execute(one).fetchall(), repeat),
                "hand_layer": timed(lambda: con.execute(HAND_GAP, p).fetchall(), repeat),
                "gap_all": timed(lambda: con.execute(every).fetchall(), repeat),
                "hand_all": timed(lambda: con.execute(HAND_GAP_ALL, {"run": 1}).fetchall(), 1),
                "languages": timed(lambda: con.execute(langs).fetchall(), repeat),
                "hand_languages": timed(
                    lambda: con.execute(HAND_LANGUAGES, {"run": 1}).fetchall(), 1
                ),
            }
        )
        return out


def run(
    rows: float,
    layers: int,
    per_phrase: int,
    threads: int,
    repeat: int,
    order: str = "chunked",
    chunk_rows: int = CHUNK_ROWS,
) -> dict:
    """Build (once) and measure; the dict bench/run.py reports from."""
    DATA.mkdir(parents=True, exist_ok=True)
    path = DATA / f"summ-{int(rows)}-{layers}-{per_phrase}-{order}.duckdb"
    built = None
    if not path.exists():
        t0 = time.perf_counter()
        build(path, rows=int(rows), layers=layers, per_phrase=per_phrase, order=order)
        built = time.perf_counter() - t0
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    out = measure(path, layers, threads, repeat, chunk_rows)
    out["build_s"] = built
    out["layer"] = layers // 2
    out["measured"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    out["load"] = load
    # kept beside the data: bench/run.py reports the largest measurement it finds
    path.with_suffix(".result.json").write_text(json.dumps(out))
    return out


def largest_result() -> dict | None:
    """The stored measurement over the most rows (see run), or None."""
    results = [json.loads(p.read_text()) for p in DATA.glob("summ-*-chunked.result.json")]
    return max(results, key=lambda r: r["raw_rows"], default=None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=float, default=20e6)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--per-phrase", type=int, default=400)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--order", choices=["chunked", "layer-major"], default="chunked")
    ap.add_argument(
        "--chunk-rows",
        type=float,
        default=CHUNK_ROWS,
        help="rows per summary update (an ingest's --chunk-rows); larger is quicker to build",
    )
    args = ap.parse_args()
    t = run(
        args.rows,
        args.layers,
        args.per_phrase,
        args.threads,
        args.repeat,
        args.order,
        int(args.chunk_rows),
    )
    if t.get("build_s"):
        print(f"  built in {t['build_s']:.0f} s")
    print(f"{t['raw_rows'] / 1e6:.1f} M raw rows, {args.layers} layers, {args.threads} threads")
    if "update_s" in t:
        per100 = 100e6 / t["raw_rows"]
        print(
            f"  summaries kept in {t['chunks']} chunks: {t['update_s']:.1f} s "
            f"({t['update_s'] * per100:.1f} s per 100 M rows, {t.get('chunk_rows', 500_000):,} rows "
            f"per update), finish {t['finish_s']:.2f} s, "
            f"{t['rows']:,} summary rows"
        )
    for name, ours, hand in (
        (f"query gap --layer {t['layer']}", "gap_layer", "hand_layer"),
        ("query gap (all layers)", "gap_all", "hand_all"),
        ("query languages", "languages", "hand_languages"),
        ("query lape (features)", "lape", "raw_lape"),
    ):
        print(
            f"  {name:24s} summaries {t[ours]:.3f} s   raw hand-written {t[hand]:.3f} s   "
            f"{t[hand] / t[ours]:.0f}x"
        )


if __name__ == "__main__":
    main()
