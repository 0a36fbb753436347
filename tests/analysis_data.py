"""Small warehouses for the analysis tests, written as raw rows, and numpy references.

`Toy` holds what a test inserts (phrases, per-run token counts and sparse activations) and
writes it with `append_arrow`; the `ref_*` functions recompute every metric from those raw
rows with plain Python/numpy — dense lookups where a missing row is 0 — independently of the
SQL views they check.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from xling.warehouse.writer import append_arrow

HIGH = ("en", "zh", "ru", "es", "it")
LOW = ("id", "ca", "mr", "ml", "hi")


@dataclass
class Toy:
    """Raw rows of a test warehouse. acts[run][(phrase, layer, feature)] = (max, mean, n)."""

    phrases: dict[int, dict] = field(default_factory=dict)
    tokens: dict[int, dict[int, int]] = field(default_factory=dict)
    acts: dict[int, dict[tuple[int, int, int], tuple[float, float, int]]] = field(
        default_factory=dict
    )
    residuals: dict[int, dict[tuple[int, int], np.ndarray]] = field(default_factory=dict)

    def phrase(self, pid: int, group: str, lang: str, origin: tuple[int, int] | None = None):
        self.phrases[pid] = {
            "phrase_id": pid,
            "group_id": group,
            "lang": lang,
            "text": f"{lang} {group}",
            "origin": origin,
        }

    def write(self, wh, configs: dict[int, dict] | None = None) -> None:
        """Insert a model, one finished run per key of `tokens`, and all rows."""
        configs = configs or {}
        con = wh.con
        with wh.transaction():
            con.execute("INSERT INTO models (name, n_layers, d_model) VALUES ('toy', 4, 8)")
            for run in sorted(self.tokens):
                con.execute(
                    "INSERT INTO runs (run_id, model_id, status, config, finished_at) "
                    "VALUES (?, 1, 'finished', ?, now())",
                    [run, json.dumps(configs.get(run, {}))],
                )
            ph = list(self.phrases.values())
            append_arrow(
                con,
                "phrases",
                pa.table(
                    {
                        "phrase_id": pa.array([p["phrase_id"] for p in ph], pa.int64()),
                        "group_id": [p["group_id"] for p in ph],
                        "lang": [p["lang"] for p in ph],
                        "text": [p["text"] for p in ph],
                        "origin_layer": pa.array(
                            [p["origin"] and p["origin"][0] for p in ph], pa.int32()
                        ),
                        "origin_feature": pa.array(
                            [p["origin"] and p["origin"][1] for p in ph], pa.int32()
                        ),
                    }
                ),
            )
            for run, toks in self.tokens.items():
                append_arrow(
                    con,
                    "phrase_tokens",
                    pa.table(
                        {
                            "run_id": pa.array([run] * len(toks), pa.int32()),
                            "phrase_id": pa.array(list(toks), pa.int64()),
                            "n_tokens": pa.array(list(toks.values()), pa.int32()),
                        }
                    ),
                )
            for run, rows in self.acts.items():
                keys = list(rows)
                append_arrow(
                    con,
                    "feature_acts",
                    pa.table(
                        {
                            "run_id": pa.array([run] * len(keys), pa.int32()),
                            "phrase_id": pa.array([k[0] for k in keys], pa.int64()),
                            "layer": pa.array([k[1] for k in keys], pa.int16()),
                            "feature": pa.array([k[2] for k in keys], pa.int32()),
                            "act_max": pa.array([rows[k][0] for k in keys], pa.float32()),
                            "act_mean": pa.array([rows[k][1] for k in keys], pa.float32()),
                            "n_active": pa.array([rows[k][2] for k in keys], pa.int16()),
                        }
                    ),
                )
            for run, vecs in self.residuals.items():
                keys = list(vecs)
                append_arrow(
                    con,
                    "residuals",
                    pa.table(
                        {
                            "run_id": pa.array([run] * len(keys), pa.int32()),
                            "phrase_id": pa.array([k[0] for k in keys], pa.int64()),
                            "layer": pa.array([k[1] for k in keys], pa.int16()),
                            "vec": pa.array(
                                [vecs[k].astype(np.float32).tolist() for k in keys],
                                pa.list_(pa.float32()),
                            ),
                        }
                    ),
                )

    # -- references ------------------------------------------------------------------------
    def act(self, run: int, pid: int, layer: int, feature: int, stat: str) -> float:
        row = self.acts[run].get((pid, layer, feature))
        if row is None:
            return 0.0
        return float(np.float32(row[0] if stat == "max" else row[1]))

    def run_phrases(self, run: int) -> list[dict]:
        return [self.phrases[p] for p in sorted(self.tokens[run])]

    def layers(self, run: int) -> list[int]:
        return sorted({k[1] for k in self.acts[run]})

    def group_origin(self, group: str) -> tuple[int, int] | None:
        """The English phrase's origin, else the lowest phrase id's."""
        cands = [p for p in self.phrases.values() if p["group_id"] == group and p["origin"]]
        if not cands:
            return None
        cands.sort(key=lambda p: (p["lang"] != "en", p["phrase_id"]))
        return cands[0]["origin"]


def ref_scores(
    toy: Toy, run: int, mode: str, stat: str = "max", k: int = 16, select_run: int | None = None
) -> dict[tuple[int, str], float]:
    """{(layer, lang): A(L, l)} from the raw rows."""
    select_run = select_run or run
    phrases = toy.run_phrases(run)
    out: dict[tuple[int, str], float] = {}
    for layer in toy.layers(run):
        if mode == "origin":
            per_feature: dict[tuple[str, int], list[float]] = defaultdict(list)
            for p in phrases:
                origin = toy.group_origin(p["group_id"])
                if origin and origin[0] == layer:
                    per_feature[(p["lang"], origin[1])].append(
                        toy.act(run, p["phrase_id"], layer, origin[1], stat)
                    )
            by_lang: dict[str, list[float]] = defaultdict(list)
            for (lang, _f), values in per_feature.items():
                by_lang[lang].append(float(np.mean(values)))
            out.update({(layer, lang): float(np.mean(ms)) for lang, ms in by_lang.items()})
        else:
            sums: dict[str, float] = defaultdict(float)
            counts: dict[str, int] = defaultdict(int)
            for p in phrases:
                en = [
                    q
                    for q in toy.run_phrases(select_run)
                    if q["group_id"] == p["group_id"] and q["lang"] == "en"
                ]
                if not en:
                    continue
                fired = [
                    (toy.act(select_run, en[0]["phrase_id"], layer, f, stat), f)
                    for (pid, lay, f) in toy.acts[select_run]
                    if pid == en[0]["phrase_id"] and lay == layer
                ]
                fired = [(a, f) for a, f in fired if a > 0]
                top = [f for _a, f in sorted(fired, key=lambda t: (-t[0], t[1]))[:k]]
                for f in top:
                    sums[p["lang"]] += toy.act(run, p["phrase_id"], layer, f, stat)
                    counts[p["lang"]] += 1
            out.update({(layer, lang): sums[lang] / counts[lang] for lang in counts})
    return out


def ref_gap(scores: dict[tuple[int, str], float]) -> dict[int, float]:
    """{layer: gap_pct} with H over high and W over low languages present."""
    out = {}
    for layer in sorted({lay for lay, _ in scores}):
        high = [a for (lay, lang), a in scores.items() if lay == layer and lang in HIGH]
        low = [a for (lay, lang), a in scores.items() if lay == layer and lang in LOW]
        if high and low:
            h, w = float(np.mean(high)), float(np.mean(low))
            out[layer] = 100 * (h - w) / h if h else float("nan")
    return out
