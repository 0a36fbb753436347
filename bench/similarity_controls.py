"""The similarity controls over n aligned groups: xling's baseline from sums of unit vectors
against a DuckDB cross join computing the same mean over every ordered pair g ≠ g'.

    .venv/bin/python bench/similarity_controls.py                 # n = 1,000, d = 640
    .venv/bin/python bench/similarity_controls.py --n 3000 --d 2304

Prints the seconds of: the baseline alone (O(n·d)), all four metrics (sim, baseline, centred,
retrieval; retrieval needs the n × n cosine matrix), and the cross join (O(n²·d) in SQL),
with the two baselines' difference.
"""

from __future__ import annotations

import argparse
import time

import duckdb
import numpy as np
import pyarrow as pa

from xling.analysis.similarity_controls import pair_terms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="aligned groups")
    parser.add_argument("--d", type=int, default=640, help="residual width")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    shared = rng.normal(size=args.d) * 3  # the common direction that makes raw cosines high
    ref = (shared + rng.normal(size=(args.n, args.d))).astype(np.float32)
    other = (ref + rng.normal(size=(args.n, args.d))).astype(np.float32)
    e, x = ref.astype(np.float64), other.astype(np.float64)

    t = time.perf_counter()
    eu = e / np.linalg.norm(e, axis=1, keepdims=True)
    xu = x / np.linalg.norm(x, axis=1, keepdims=True)
    baseline = float(((eu @ xu.sum(axis=0) - np.einsum("ij,ij->i", eu, xu)) / (args.n - 1)).mean())
    t_sums = time.perf_counter() - t

    t = time.perf_counter()
    pair_terms(e, x)
    t_all = time.perf_counter() - t

    con = duckdb.connect()
    con.execute(f"SET threads = {args.threads}")
    vec = pa.list_(pa.float32())
    con.register(
        "r",
        pa.table(
            {
                "g": pa.array(np.arange(args.n)),
                "a": pa.array(ref.tolist(), vec),
                "b": pa.array(other.tolist(), vec),
            }
        ),
    )
    t = time.perf_counter()
    joined = con.execute(
        "SELECT avg(list_cosine_similarity(x.a, y.b)) FROM r x JOIN r y ON x.g <> y.g"
    ).fetchone()[0]
    t_join = time.perf_counter() - t
    print(f"n = {args.n}, d = {args.d}, {args.threads} threads")
    print(f"  baseline from sums   {t_sums:8.3f} s   {baseline:.9f}")
    print(f"  all four metrics     {t_all:8.3f} s")
    print(f"  SQL cross join       {t_join:8.3f} s   {joined:.9f}  ({t_join / t_sums:,.0f}x)")


if __name__ == "__main__":
    main()
