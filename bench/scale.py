"""Issue 15's measurements in one run, written as the "Scale" section of bench/RESULTS.md.

    .venv/bin/python bench/scale.py                      # defaults below, then --write
    .venv/bin/python bench/scale.py --query-rows 20e6 --storage-phrases 20000
    .venv/bin/python bench/scale.py --gemma              # adds ingest vs bare on Gemma 3 270M

Sections: bytes per stored nonzero by storage variant (bench/storage.py), layouts without
a finish rewrite (bench/layout.py), metric queries from the summaries against hand-written
raw-row queries with the summaries' upkeep (bench/summary_queries.py), ingest vs bare
forward + encode (bench/ingest.py, model load reported apart). bench/run.py can call
`section(args)` and append its markdown; alone, `--write` replaces the section between the
scale markers of RESULTS.md (or appends it).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import layout
import storage
import summary_queries

HERE = Path(__file__).resolve().parent
BEGIN, END = "<!-- scale:begin -->", "<!-- scale:end -->"


def ingest_ratio(gemma: bool, groups: int, repeat: int) -> str:
    """bench/ingest.py's summary lines (subprocess: its model stays out of this process)."""
    cmd = [
        sys.executable,
        str(HERE / "ingest.py"),
        "--groups",
        str(groups),
        "--repeat",
        str(repeat),
    ]
    if gemma:
        cmd.append("--gemma")
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        return f"failed: {out.stderr.strip().splitlines()[-1] if out.stderr else out.returncode}"
    return "; ".join(line.strip() for line in out.stdout.strip().splitlines())


def section(args: argparse.Namespace, queries: dict | None = None) -> str:
    """The section's markdown; `queries`: summary_queries.run's result when already measured."""
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    lines = [
        BEGIN,
        "## Scale (issue 15): storage, layout, summaries",
        "",
        f"`{' '.join(['bench/' + Path(sys.argv[0]).name, *sys.argv[1:]])}`; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load average at start {load}: "
        "absolute times depend on the load, the ratios (both sides back to back) are what count.",
        "",
    ]
    rows = storage.ingest_like_rows(args.storage_phrases)
    st = storage.measure(rows)
    info = st.pop("_rows")
    lines += [
        f"**Bytes per stored nonzero** ({info['rows']:,} ingest-shaped synthetic rows, 8 layers, "
        f"16,384 features; act_mean derivable from act_max on {info['derivable']:.0%}):",
        "",
        "| variant | B per nonzero |",
        "|---|---|",
    ]
    lines += [f"| {name} | {r['bytes']:.2f} |" for name, r in st.items()]
    with tempfile.TemporaryDirectory(dir=os.environ.get("XLING_BENCH_TMP")) as tmp:
        lay = layout.measure(
            storage.ingest_like_rows(args.layout_phrases), 8, Path(tmp), args.layouts.split(",")
        )
    data = lay.pop("_data")
    lines += [
        "",
        f"**Layouts** ({data['rows']:,} rows, 8 layers, appended per chunk as an ingest does):",
        "",
        "| layout | write s | one layer s | all layers s | layers per row group | file / data |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {n} | {r['write_s']:.1f} | {r['one_layer_s']:.3f} | {r['all_layers_s']:.3f} | "
        f"{r['layers_per_rg']:.2f} | {r['file_ratio']:.2f}x |"
        for n, r in lay.items()
    ]
    q = queries or summary_queries.run(args.query_rows, 8, 400, 2, 3)
    per100 = 100e6 / q["raw_rows"]
    lines += [
        "",
        f"**Metric queries** over {q['raw_rows'] / 1e6:,.0f} M synthetic rows (chunked as an "
        "ingest lands them, 8 layers, 2 threads; summaries numbers checked equal to the "
        "hand-written raw-row query's):",
        "",
        "| query | from summaries | hand-written over raw rows | ratio |",
        "|---|---|---|---|",
    ]
    for name, ours, hand in (
        (f"`query gap --layer {q['layer']}`", "gap_layer", "hand_layer"),
        ("`query gap` (all layers)", "gap_all", "hand_all"),
        ("`query languages`", "languages", "hand_languages"),
        ("`query lape` (raw: the same macro over the raw rows)", "lape", "raw_lape"),
    ):
        lines.append(f"| {name} | {q[ours]:.3f} s | {q[hand]:.3f} s | {q[hand] / q[ours]:.0f}x |")
    if "update_s" in q:
        lines += [
            "",
            f"Summary upkeep: {q['update_s']:.1f} s over {q['chunks']} chunks of "
            f"{q.get('chunk_rows', 500_000):,} rows "
            f"({q['update_s'] * per100:.0f} s per 100 M rows), finish {q['finish_s']:.1f} s "
            f"({q['finish_s'] * per100:.0f} s per 100 M rows); {q['rows']:,} summary rows.",
        ]
    if args.ingest:
        lines += ["", f"Ingest vs bare (tiny model): {ingest_ratio(False, 800, 2)}"]
    if args.gemma:
        lines += ["", f"Ingest vs bare (Gemma 3 270M): {ingest_ratio(True, args.gemma_groups, 2)}"]
    lines.append(END)
    return "\n".join(lines) + "\n"


def write(text: str) -> None:
    path = HERE / "RESULTS.md"
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    if BEGIN in old and END in old:
        new = re.sub(
            re.escape(BEGIN) + ".*?" + re.escape(END) + "\n?", lambda _m: text, old, flags=re.S
        )
    else:
        new = old.rstrip("\n") + "\n\n" + text
    path.write_text(new, encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--storage-phrases", type=int, default=40_000)
    ap.add_argument("--layout-phrases", type=int, default=20_000)
    ap.add_argument("--layouts", default="chunk-500k,chunk-2rg/layer,table-per-layer,rewrite")
    ap.add_argument("--query-rows", type=float, default=100e6)
    ap.add_argument("--ingest", action="store_true", help="ingest vs bare on the tiny model")
    ap.add_argument("--gemma", action="store_true", help="ingest vs bare on Gemma 3 270M")
    ap.add_argument("--gemma-groups", type=int, default=30)
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args()
    text = section(args)
    print(text)
    if not args.no_write:
        write(text)


if __name__ == "__main__":
    main()
