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
                # The layers a run's config names are its SAE layers (the catalog's
                # run_layers; a made-up sae_id per layer).
                cfg = configs.get(run, {})
                for layer in [s["layer"] for s in cfg.get("saes", [])] or cfg.get("layers", []):
                    con.execute(
                        "INSERT INTO run_layers VALUES (?, ?, ?)", [run, layer, 1000 + layer]
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


def toy_data() -> Toy:
    """The hand-checked warehouse of test_views (its docstring describes it)."""
    t = Toy()
    t.phrase(1, "g1", "en", (0, 5))
    t.phrase(2, "g1", "zh")
    t.phrase(3, "g1", "hi")
    t.phrase(4, "g1", "mr")
    t.phrase(5, "g2", "en", (0, 7))
    t.phrase(6, "g2", "zh", (1, 9))  # loses to English's origin
    t.phrase(7, "g2", "hi")
    t.phrase(8, "g3", "en")
    t.phrase(9, "g3", "mr", (1, 5))  # the group's only origin
    t.phrase(10, "g4", "zh", (0, 5))  # a group without English
    t.phrase(11, "g4", "hi")
    t.phrase(12, "g5", "en")  # no origin anywhere in g5
    t.phrase(13, "g5", "hi")
    t.tokens[1] = {pid: 3 + pid % 4 for pid in t.phrases}
    rows = {  # (phrase, layer, feature): act_max; act_mean = act_max / 2, n_active 1..3
        (1, 0, 5): 4.0,
        (1, 0, 2): 3.0,
        (1, 0, 7): 1.0,
        (2, 0, 5): 2.0,
        (2, 0, 2): 1.0,
        (3, 0, 2): 2.0,
        (4, 0, 5): 1.0,
        (5, 0, 7): 6.0,
        (5, 0, 1): 2.0,
        (6, 0, 7): 3.0,
        (10, 0, 5): 2.0,
        (11, 0, 5): 1.0,
        (12, 0, 3): 5.0,
        (13, 0, 3): 1.0,
        (8, 1, 5): 2.0,
        (9, 1, 5): 1.0,
        (1, 1, 5): 1.0,
    }
    t.acts[1] = {key: (v, v / 2, 1 + key[2] % 3) for key, v in rows.items()}
    # run 2: the same phrases "fine-tuned": other languages +50 %, English -10 %, one new row
    t.tokens[2] = dict(t.tokens[1])
    t.acts[2] = {
        key: (v * (0.9 if t.phrases[key[0]]["lang"] == "en" else 1.5), v * 0.5, n)
        for key, (v, _m, n) in t.acts[1].items()
    }
    t.acts[2][(1, 0, 9)] = (0.5, 0.25, 1)
    rng = np.random.default_rng(0)
    t.residuals[1] = {
        (pid, layer): rng.normal(size=8)
        for pid in t.phrases
        for layer in (0, 1)
        if (pid, layer) != (7, 1)
    }
    t.residuals[1][(13, 0)] = np.zeros(8)  # cosine undefined: skipped
    return t


TOY_CONFIGS = {1: {"saes": [{"layer": 0}, {"layer": 1}]}, 2: {"layers": [0, 1]}}


# -- LAPE: MLP neuron statistics with designed language-specific neurons --------------

LANGS = ["en", "hi", "mr", "zh"]  # the neuron warehouse's languages
TOKENS = {"en": 1000, "hi": 800, "mr": 500, "zh": 400}
N_NEURONS = 50
# Designed language-specific neurons: (layer, neuron) -> {lang: p}; other languages 0.
SPECIFIC = {
    (0, 3): {"hi": 0.9},
    (0, 7): {"hi": 0.9},
    (1, 5): {"mr": 0.8, "en": 0.01, "hi": 0.01, "zh": 0.01},
    (1, 9): {"hi": 0.7, "mr": 0.7},
}
EVERYWHERE = [(0, 20), (0, 21), (1, 30)]  # p = 0.65 in every language: kept, maximal entropy


def neuron_probs(seed: int = 0) -> np.ndarray:
    """p[layer, neuron, lang]: the designed neurons, plus flat low-p neurons (high entropy)."""
    rng = np.random.default_rng(seed)
    p = np.empty((2, N_NEURONS, len(LANGS)))
    base = rng.uniform(0.01, 0.1, size=(2, N_NEURONS, 1))
    p[:] = base * rng.uniform(0.95, 1.05, size=(2, N_NEURONS, len(LANGS)))
    for (layer, neuron), by_lang in SPECIFIC.items():
        p[layer, neuron] = [by_lang.get(lang, 0.0) for lang in LANGS]
    for layer, neuron in EVERYWHERE:
        p[layer, neuron] = 0.65
    return p


def write_neurons(wh, p: np.ndarray, run: int = 1, *, drop_zeros: bool = False) -> np.ndarray:
    """neuron_stats rows for `p` (counts rounded to whole tokens); returns the stored p."""
    counts = np.rint(p * np.array([TOKENS[lang] for lang in LANGS])).astype(np.int64)
    rows = {
        "run_id": [],
        "lang": [],
        "layer": [],
        "neuron": [],
        "n_tokens": [],
        "n_positive": [],
        "act_sum": [],
    }
    for layer in range(p.shape[0]):
        for neuron in range(p.shape[1]):
            for j, lang in enumerate(LANGS):
                if drop_zeros and counts[layer, neuron, j] == 0:
                    continue  # a missing row counts 0 positives
                rows["run_id"].append(run)
                rows["lang"].append(lang)
                rows["layer"].append(layer)
                rows["neuron"].append(neuron)
                rows["n_tokens"].append(TOKENS[lang])
                rows["n_positive"].append(int(counts[layer, neuron, j]))
                rows["act_sum"].append(float(counts[layer, neuron, j]) * 0.5)
    with wh.transaction() as con:
        if not wh.scalar("SELECT count(*) FROM models"):
            con.execute("INSERT INTO models (name, n_layers, d_model) VALUES ('toy', 2, 8)")
        con.execute(
            "INSERT INTO runs (run_id, model_id, status, config) VALUES (?, 1, 'finished', ?)",
            [run, json.dumps({"neurons": True})],
        )
        append_arrow(
            con,
            "neuron_stats",
            pa.table(
                {
                    **rows,
                    "run_id": pa.array(rows["run_id"], pa.int32()),
                    "layer": pa.array(rows["layer"], pa.int16()),
                    "neuron": pa.array(rows["neuron"], pa.int32()),
                }
            ),
        )
    return counts / np.array([TOKENS[lang] for lang in LANGS])


def ref_scores(
    toy: Toy,
    run: int,
    mode: str,
    stat: str = "max",
    k: int = 16,
    select_run: int | None = None,
    ref: str = "en",
    weights: dict[str, float] | None = None,
) -> dict[tuple[int, str], float]:
    """{(layer, lang): A(L, l)} from the raw rows (topk modes: F_g picked on `ref`'s phrase,
    or on the mean over the whole group for group-topk). `weights`: each group counted that
    many times (a bootstrap resample; groups not named count 0)."""
    select_run = select_run or run
    phrases = toy.run_phrases(run)
    if weights is not None:
        phrases = [q for q in phrases for _ in range(int(weights.get(q["group_id"], 0)))]
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
                group = [q for q in toy.run_phrases(select_run) if q["group_id"] == p["group_id"]]
                pickers = group if mode == "group-topk" else [q for q in group if q["lang"] == ref]
                if not pickers:
                    continue
                ids = {q["phrase_id"] for q in pickers}
                feats = {f for (pid, lay, f) in toy.acts[select_run] if pid in ids and lay == layer}
                fired = [
                    (np.mean([toy.act(select_run, i, layer, f, stat) for i in ids]), f)
                    for f in feats
                ]
                fired = [(a, f) for a, f in fired if a > 0]
                top = [f for _a, f in sorted(fired, key=lambda t: (-t[0], t[1]))[:k]]
                for f in top:
                    sums[p["lang"]] += toy.act(run, p["phrase_id"], layer, f, stat)
                    counts[p["lang"]] += 1
            out.update({(layer, lang): sums[lang] / counts[lang] for lang in counts})
    return out


def ref_gap(
    scores: dict[tuple[int, str], float], ref: str = "en", include_ref: bool = False
) -> dict[int, float]:
    """{layer: gap_pct} with H over high and W over low languages present, `ref` left out
    unless `include_ref`."""
    out = {}
    scores = {key: a for key, a in scores.items() if include_ref or key[1] != ref}
    for layer in sorted({lay for lay, _ in scores}):
        high = [a for (lay, lang), a in scores.items() if lay == layer and lang in HIGH]
        low = [a for (lay, lang), a in scores.items() if lay == layer and lang in LOW]
        out[layer] = float("nan")  # a group without languages: no gap
        if high and low:
            h, w = float(np.mean(high)), float(np.mean(low))
            out[layer] = 100 * (h - w) / h if h else float("nan")
    return out


LANGS10 = ("en", "zh", "ru", "es", "it", "id", "ca", "mr", "ml", "hi")


def paper_like(
    seed: int = 0, n_groups: int = 24, n_layers: int = 6, n_features: int = 64, d_model: int = 16
) -> Toy:
    """A warehouse shaped like the paper's: ten aligned languages, English origins, weaker
    low-resource activations (most in early layers), residuals, and a run 2 "fine-tuned"
    over the same phrases with the gap partly closed."""
    rng = np.random.default_rng(seed)
    strength = {
        lang: (
            1.0
            if lang == "en"
            else rng.uniform(0.8, 0.95)
            if lang in HIGH
            else rng.uniform(0.55, 0.8)
        )
        for lang in LANGS10
    }
    t = Toy()
    pid = 0
    for g in range(n_groups):
        origin = (g % n_layers, int(rng.integers(0, n_features)))
        for lang in LANGS10:
            pid += 1
            t.phrase(pid, f"g{g}", lang, origin if lang == "en" else None)
    for run in (1, 2):
        t.tokens[run] = {p: 12 for p in t.phrases}
        t.acts[run] = {}
        t.residuals[run] = {}
    for g in range(n_groups):
        base_feats = rng.choice(n_features, size=12, replace=False)
        origin = t.phrases[g * len(LANGS10) + 1]["origin"]
        shared = rng.normal(size=(n_layers, d_model))
        for j, lang in enumerate(LANGS10):
            p = g * len(LANGS10) + j + 1
            for layer in range(n_layers):
                depth = layer / max(1, n_layers - 1)  # the gap narrows with depth
                s = strength[lang] + (1 - strength[lang]) * 0.4 * depth
                feats = set(base_feats.tolist()) | ({origin[1]} if layer == origin[0] else set())
                for f in feats:
                    if lang != "en" and rng.random() < 0.15:
                        continue  # absent in the translation
                    v = float(rng.uniform(2, 6)) * s
                    boost = 1.0 if lang == "en" else 1 + 0.6 * (1 - strength[lang])
                    t.acts[1][(p, layer, int(f))] = (v, v / 3, int(rng.integers(1, 6)))
                    v2 = v * (0.97 if lang == "en" else boost)
                    t.acts[2][(p, layer, int(f))] = (v2, v2 / 3, int(rng.integers(1, 6)))
                noise = rng.normal(size=d_model) * (0.3 + 1.2 * (1 - strength[lang]))
                t.residuals[1][(p, layer)] = shared[layer] + noise
    return t
