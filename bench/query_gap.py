"""`query gap` over a synthetic warehouse of ~100 M feature_acts rows (SPEC §8).

Builds (once, under bench/_data/, not committed) one warehouse per physical layout, each with
one finished run whose rows DuckDB generates itself from range() and random():

    layer-major   rows ordered by (layer, phrase_id, feature): a layer is a contiguous range
                  of row groups, so `layer = L` skips the others by their min/max statistics
    phrase-major  rows ordered by (phrase_id, layer, feature), as an ingest appending each
                  batch of phrases with all its layers would leave them: every row group
                  holds every layer

and times, on each: `query gap --layer L` (the library call the command makes), the full
per-layer gap (every layer), a hand-written DuckDB query for the same numbers, and a bare
filtered aggregate over the layer (the floor any query must pay). Prints times and ratios.

    .venv/bin/python bench/query_gap.py                  # 100 M rows, 8 layers, 2 threads
    .venv/bin/python bench/query_gap.py --rows 10e6      # quicker
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from xling.analysis import queries
from xling.ingest.runner import IngestConfig
from xling.warehouse import Warehouse

DATA = Path(__file__).resolve().parent / "_data"
LANGS = ("en", "zh", "ru", "es", "it", "id", "ca", "mr", "ml", "hi")
D_SAE = 16384
# Every phrase of a group shares its features, shifted by SHIFT·(language slot): a translation
# misses some of its English phrase's features, as real ones do (absent rows).
SHIFT = 10

# The hand-written equivalent of `activation_scores(mode := 'origin')` + gap for one layer:
# targets are each phrase's group origin feature, absent rows count as 0.
HAND_GAP = """
WITH origin AS (
    SELECT group_id, origin_feature AS feature FROM phrases
    WHERE lang = 'en' AND origin_layer = $layer
), targets AS (
    SELECT p.phrase_id, p.lang, o.feature
    FROM phrases p JOIN origin o USING (group_id)
    JOIN phrase_tokens t ON t.phrase_id = p.phrase_id AND t.run_id = $run
), hits AS (
    SELECT t.lang, t.feature, sum(f.act_max) AS s
    FROM feature_acts f JOIN targets t ON f.phrase_id = t.phrase_id AND f.feature = t.feature
    WHERE f.run_id = $run AND f.layer = $layer
    GROUP BY ALL
), per_feature AS (
    SELECT t.lang, t.feature, coalesce(any_value(h.s), 0) / count(*) AS m
    FROM targets t LEFT JOIN hits h USING (lang, feature)
    GROUP BY ALL
), scores AS (
    SELECT lang, avg(m) AS a FROM per_feature GROUP BY lang
)
SELECT 100 * (avg(a) FILTER (WHERE resource_group = 'high')
              - avg(a) FILTER (WHERE resource_group = 'low'))
       / avg(a) FILTER (WHERE resource_group = 'high') AS gap_pct
FROM scores JOIN languages USING (lang)
"""

# HAND_GAP for every layer at once (origin-mode A(L, l), then the gap per layer): what
# bench/run.py and bench/summary_queries.py time the full `query gap` against.
HAND_GAP_ALL = """
WITH origin AS (
    SELECT group_id, origin_layer AS layer, origin_feature AS feature FROM phrases
    WHERE lang = 'en' AND origin_layer IS NOT NULL
), targets AS (
    SELECT p.phrase_id, p.lang, o.layer, o.feature
    FROM phrases p JOIN origin o USING (group_id)
    JOIN phrase_tokens t ON t.phrase_id = p.phrase_id AND t.run_id = $run
), hits AS (
    SELECT t.layer, t.lang, t.feature, sum(f.act_max) AS s
    FROM feature_acts f JOIN targets t
      ON f.phrase_id = t.phrase_id AND f.layer = t.layer AND f.feature = t.feature
    WHERE f.run_id = $run
    GROUP BY ALL
), per_feature AS (
    SELECT t.layer, t.lang, t.feature, coalesce(any_value(h.s), 0) / count(*) AS m
    FROM targets t LEFT JOIN hits h USING (layer, lang, feature)
    GROUP BY ALL
), scores AS (
    SELECT layer, lang, avg(m) AS a FROM per_feature GROUP BY ALL
)
SELECT layer, 100 * (avg(a) FILTER (WHERE resource_group = 'high')
              - avg(a) FILTER (WHERE resource_group = 'low'))
       / avg(a) FILTER (WHERE resource_group = 'high') AS gap_pct
FROM scores JOIN languages USING (lang)
GROUP BY layer ORDER BY layer
"""

# Rows per committed chunk of an ingest with the default --chunk-rows.
CHUNK_ROWS = IngestConfig.chunk_rows

FLOOR = "SELECT count(*), sum(act_max) FROM feature_acts WHERE run_id = $run AND layer = $layer"


def register_layers(con, run_id: int, layers: int) -> None:
    """An SAE and a run_layers row per layer, as an ingest records them: without them
    activation_layers falls back to a scan of every row, which a real run never pays."""
    con.execute(
        "INSERT INTO saes (model_id, layer, sae_name, d_in, d_sae) "
        "SELECT 1, l, 'synthetic-' || l, 64, ? FROM range(?) t(l)",
        [D_SAE, layers],
    )
    con.execute(
        "INSERT INTO run_layers SELECT ?, s.layer, s.sae_id FROM saes s "
        "WHERE s.sae_name LIKE 'synthetic-%' AND s.model_id = 1",
        [run_id],
    )


def build(path: Path, *, rows: int, layers: int, per_phrase: int, order: str) -> None:
    """A warehouse with one finished run of about `rows` feature_acts rows, in `order`."""
    n_phrases = max(len(LANGS), rows // (layers * per_phrase) // len(LANGS) * len(LANGS))
    # phrases per chunk for order="chunked": whole groups, >= an ingest's default chunk
    chunk = max(len(LANGS), -(-CHUNK_ROWS // (layers * per_phrase * len(LANGS))) * len(LANGS))
    n_phrases = max(chunk, n_phrases // chunk * chunk) if order == "chunked" else n_phrases
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    with Warehouse(tmp) as wh:
        con = wh.con
        con.execute("SET enable_progress_bar = false")
        con.execute(
            "INSERT INTO models (name, n_layers, d_model) VALUES ('synthetic', ?, 64)", [layers]
        )
        con.execute(
            "INSERT INTO runs (model_id, status, config, finished_at) "
            "VALUES (1, 'finished', ?, now())",
            [json.dumps({"layers": list(range(layers)), "synthetic": True})],
        )
        register_layers(con, 1, layers)
        # Phrase i belongs to group i // 10 in language slot i % 10. Origins on English
        # phrases: layer g % layers, feature at slot 200 of the group's feature list, which
        # every translation also holds (slot 200 - SHIFT·lang >= 0).
        con.execute(
            """
            INSERT INTO phrases (phrase_id, group_id, lang, text, origin_layer, origin_feature)
            SELECT i, 'group-' || (i // 10), ($langs)[i % 10 + 1], 'phrase ' || i,
                   CASE WHEN i % 10 = 0 THEN (i // 10) % $layers END,
                   CASE WHEN i % 10 = 0 THEN ((200 * 37 + (i // 10) * 101
                        + ((i // 10) % $layers) * 7) % $d_sae)::INTEGER END
            FROM range($n) t(i)
            """,
            {"langs": list(LANGS), "layers": layers, "d_sae": D_SAE, "n": n_phrases},
        )
        con.execute("INSERT INTO phrase_tokens SELECT 1, i, 21 FROM range(?) t(i)", [n_phrases])
        # Row i -> (layer, phrase, slot j) in the requested order. Feature of slot j for a
        # phrase in language slot s: ((j + SHIFT·s)·37 + group·101 + layer·7) mod D_SAE,
        # distinct per (phrase, layer) because 37 is odd. Low-resource phrases (slots 5-9)
        # fire 20 % weaker.
        if order == "layer-major":
            idx = "i // ($n * $r) AS layer, (i // $r) % $n AS phrase, i % $r AS j"
        elif order == "chunked":
            # as an ingest lands them without a finish rewrite: chunks of $c phrases (all
            # their layers, >= CHUNK_ROWS rows), each sorted by (layer, phrase) inside
            idx = (
                "(i % ($c * $layers * $r)) // ($c * $r) AS layer, "
                "(i // ($c * $layers * $r)) * $c + (i // $r) % $c AS phrase, i % $r AS j"
            )
        else:
            idx = "(i // $r) % $n AS layer, i // ($n * $r) AS phrase, i % $r AS j"
        sql = f"""
            INSERT INTO feature_acts
            SELECT 1, phrase, layer::SMALLINT,
                   (((j + {SHIFT} * (phrase % 10)) * 37 + (phrase // 10) * 101 + layer * 7)
                    % $d_sae)::INTEGER AS feature,
                   (act * 0.4)::FLOAT, act::FLOAT, (1 + (j % 7))::SMALLINT
            FROM (
                SELECT *, (CASE WHEN phrase % 10 >= 5 THEN 0.8 ELSE 1.0 END)
                          * (1 + 9 * random()) AS act
                FROM (SELECT {idx} FROM range($rows) t(i))
            )
            """
        params = {
            "n": n_phrases if order == "layer-major" else layers,
            "c": chunk,
            "layers": layers,
            "r": per_phrase,
            "d_sae": D_SAE,
            "rows": n_phrases * layers * per_phrase,
        }
        con.execute(sql, {k: v for k, v in params.items() if f"${k}" in sql})
        con.execute("CHECKPOINT")
    tmp.rename(path)


def timed(fn, repeat: int) -> float:
    """Median wall time of `repeat` calls after one warm-up."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(path: Path, layer: int, threads: int, repeat: int) -> dict[str, float]:
    """Times (s) of our gap at one layer and at all, the hand-written query and the floor."""
    Warehouse(path).close()  # installs views changed since the build
    with Warehouse(path, read_only=True) as wh:
        wh.con.execute(f"SET threads = {int(threads)}")
        wh.con.execute("SET enable_progress_bar = false")
        params = {"run": 1, "layer": layer}
        # the hand-written H includes English, the reference
        ours = float(queries.gap(wh, run=1, layer=layer, include_ref=True)["gap_pct"].iloc[0])
        hand = float(wh.scalar(HAND_GAP, params))
        assert abs(ours - hand) <= 1e-9 * max(1.0, abs(hand)), (ours, hand)
        return {
            "rows": float(wh.scalar("SELECT count(*) FROM feature_acts")),
            "gap_pct": ours,
            "gap_layer": timed(lambda: queries.gap(wh, run=1, layer=layer), repeat),
            "hand": timed(lambda: wh.scalar(HAND_GAP, params), repeat),
            "floor": timed(lambda: wh.scalar(FLOOR, params), repeat),
            "gap_all": timed(lambda: queries.gap(wh, run=1), 1),
            "topk_layer": timed(
                lambda: queries.gap(wh, run=1, layer=layer, mode="english-topk"), repeat
            ),
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=float, default=100e6, help="feature_acts rows (about)")
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--per-phrase", type=int, default=400, help="features stored per phrase/layer")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument(
        "--layout", choices=["layer-major", "phrase-major", "chunked", "both"], default="both"
    )
    args = ap.parse_args()
    DATA.mkdir(parents=True, exist_ok=True)
    layouts = ["layer-major", "phrase-major"] if args.layout == "both" else [args.layout]
    layer = args.layers // 2
    for layout in layouts:
        path = DATA / f"gap-{int(args.rows)}-{args.layers}-{args.per_phrase}-{layout}.duckdb"
        if not path.exists():
            t0 = time.perf_counter()
            build(
                path,
                rows=int(args.rows),
                layers=args.layers,
                per_phrase=args.per_phrase,
                order=layout,
            )
            print(f"built {path.name} in {time.perf_counter() - t0:.1f} s")
        t = measure(path, layer, args.threads, args.repeat)
        print(
            f"\n{layout}: {t['rows'] / 1e6:.1f} M rows, {args.layers} layers, "
            f"{args.threads} threads; layer {layer} gap {t['gap_pct']:.3f} %"
        )
        print(f"  query gap --layer {layer} (origin)   {t['gap_layer']:7.3f} s  target <= 0.3 s")
        print(
            f"  hand-written DuckDB query       {t['hand']:7.3f} s  ours/hand "
            f"{t['gap_layer'] / t['hand']:.2f}"
        )
        print(
            f"  bare filtered sum over layer    {t['floor']:7.3f} s  ours/floor "
            f"{t['gap_layer'] / t['floor']:.2f}"
        )
        print(f"  query gap --layer {layer} english-topk {t['topk_layer']:7.3f} s")
        print(
            f"  query gap, all layers (origin)  {t['gap_all']:7.3f} s  "
            f"{t['rows'] / t['gap_all'] / 1e6:.0f} M rows/s  target >= 150 M rows/s"
        )


if __name__ == "__main__":
    main()
