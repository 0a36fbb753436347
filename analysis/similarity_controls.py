"""Residual similarity with its controls (SPEC §3): sim, baseline, centred and retrieval per
layer and language pair, and their bootstrap intervals over aligned groups.

For a reference language x (English by default) and a language l at layer L, over the groups G
whose x and l phrases both have a nonzero residual r (mean-pooled; n = |G|):

    sim(L, l)       = mean_g cos(r_{g,x}, r_{g,l})
    baseline(L, l)  = mean over ordered pairs g ≠ g' of cos(r_{g,x}, r_{g',l})
    centred(L, l)   = mean_g cos(r_{g,x} − μ_x, r_{g,l} − μ_l),  μ the mean r over G
    retrieval(L, l) = share of g whose own r_{g,l} has a strictly higher cosine to r_{g,x} than
                      every other r_{g',l} of G (top-1; a tie is a miss)

The baseline needs no cross join: with unit vectors e_g = r̂_{g,x} and s = Σ_g r̂_{g,l},
Σ_{g' ≠ g} cos(r_{g,x}, r_{g',l}) = e_g · s − e_g · r̂_{g,l}, so the per-group baseline term
b_g = (e_g · s − cos_g) / (n − 1) and baseline = mean_g b_g, in O(n·d). Retrieval needs the
n × n cosine matrix, computed in row blocks (memory O(block · n)). The view similarity_by_layer
computes sim alone in SQL; this module reads the raw residual rows one layer at a time.

Intervals resample the aligned groups (xling.analysis.stats): each metric is a mean of the
per-group terms above, and a resample reweights those terms. μ and the candidate set of
retrieval stay those of the full sample: the interval covers which groups were drawn, not the
re-estimation of μ.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from xling.analysis.stats import DEFAULT_N_BOOT, DEFAULT_SEED, check_boot_args, group_weights

if TYPE_CHECKING:
    from xling.warehouse import Warehouse

METRICS = ("sim", "baseline", "centred", "retrieval")
_BLOCK = 1024  # rows of the cosine matrix held at once in retrieval


def residual_layer(wh: Warehouse, run: int, layer: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{lang: (group ids [n], residuals float64 [n, d])} of `run` at `layer`, sorted by group."""
    tbl = wh.arrow(
        "SELECT p.lang, p.group_id, r.vec FROM residuals r JOIN phrases p USING (phrase_id) "
        "WHERE r.run_id = ? AND r.layer = ? ORDER BY p.lang, p.group_id",
        [run, layer],
    )
    if tbl.num_rows == 0:
        return {}
    vec = tbl.column("vec").combine_chunks()
    flat = np.asarray(vec.flatten(), dtype=np.float64)
    mats = flat.reshape(tbl.num_rows, -1)
    langs = np.asarray(tbl.column("lang").to_pylist(), dtype=object)
    groups = np.asarray(tbl.column("group_id").to_pylist(), dtype=object)
    out = {}
    for lang in dict.fromkeys(langs.tolist()):
        sel = langs == lang
        out[lang] = (groups[sel], mats[sel])
    return out


def _unit(m: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(m, axis=1, keepdims=True)
    return m / np.where(norms > 0, norms, 1)


def pair_terms(ref: np.ndarray, other: np.ndarray) -> dict[str, np.ndarray]:
    """Per-group terms of the four metrics for aligned rows `ref[g]`, `other[g]` ([n, d], every
    row nonzero): their means are sim, baseline, centred and retrieval."""
    n = len(ref)
    e, x = _unit(ref), _unit(other)
    cos = np.einsum("ij,ij->i", e, x)
    baseline = (e @ x.sum(axis=0) - cos) / (n - 1) if n > 1 else np.full(n, np.nan)
    rc, xc = ref - ref.mean(axis=0), other - other.mean(axis=0)
    nr, nx = np.linalg.norm(rc, axis=1), np.linalg.norm(xc, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        centred = np.einsum("ij,ij->i", rc, xc) / (nr * nx)
    hits = np.zeros(n)
    for start in range(0, n, _BLOCK):
        block = e[start : start + _BLOCK] @ x.T  # [b, n]
        rows = np.arange(block.shape[0])
        own = block[rows, start + rows]
        block[rows, start + rows] = -np.inf
        hits[start : start + len(rows)] = own > block.max(axis=1)
    return {"sim": cos, "baseline": baseline, "centred": centred, "retrieval": hits}


def _aligned(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]):
    """Group ids and rows of the groups both hold with nonzero residuals, in one order."""
    ga, ma = a
    gb, mb = b
    common, ia, ib = np.intersect1d(ga, gb, return_indices=True)
    ra, rb = ma[ia], mb[ib]
    ok = (np.abs(ra).sum(axis=1) > 0) & (np.abs(rb).sum(axis=1) > 0)  # cosine undefined
    return common[ok], ra[ok], rb[ok]


def _rows(by_lang, pairs, layer: int, group_index: dict, weights: np.ndarray | None) -> list[dict]:
    out = []
    for a, b in pairs:
        groups, ra, rb = _aligned(by_lang[a], by_lang[b])
        if len(groups) == 0:
            continue
        terms = pair_terms(ra, rb)
        row = {"layer": layer, "lang_a": a, "lang_b": b, "n_groups": len(groups)}
        with np.errstate(invalid="ignore"):
            for name in METRICS:
                t = terms[name]
                ok = np.isfinite(t)
                row[name] = float(t[ok].mean()) if ok.any() else np.nan
                if weights is not None:
                    w = weights[:, [group_index[g] for g in groups[ok]]]
                    samples = (w @ t[ok]) / w.sum(axis=1)
                    lo, hi = (
                        np.nanpercentile(samples, [2.5, 97.5])
                        if np.isfinite(samples).any()
                        else (np.nan, np.nan)
                    )
                    row[f"{name}_lo"], row[f"{name}_hi"] = float(lo), float(hi)
        out.append(row)
    return out


def similarity_table(
    wh: Warehouse,
    run: int,
    layers: list[int],
    pairs_of,
    *,
    ci: bool = False,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = DEFAULT_SEED,
) -> pd.DataFrame:
    """One row per (layer, lang_a, lang_b) of `pairs_of(langs)`: n_groups, sim, baseline,
    centred, retrieval (with `ci`: each metric's _lo and _hi, 95 % percentile bootstrap over
    the run's aligned groups, one weight matrix for every layer and pair)."""
    weights, group_index = None, {}
    if ci:
        check_boot_args(n_boot, seed)
        ids = [
            r[0]
            for r in wh.con.execute(
                "SELECT DISTINCT p.group_id FROM residuals r JOIN phrases p USING (phrase_id) "
                "WHERE r.run_id = ? ORDER BY 1",
                [run],
            ).fetchall()
        ]
        group_index = {g: i for i, g in enumerate(ids)}
        weights = group_weights(len(ids), n_boot, seed)
    rows: list[dict] = []
    for layer in layers:
        by_lang = residual_layer(wh, run, layer)
        rows += _rows(by_lang, pairs_of(sorted(by_lang)), layer, group_index, weights)
    cols = ["layer", "lang_a", "lang_b"]
    for name in METRICS:
        cols += [name] + ([f"{name}_lo", f"{name}_hi"] if ci else [])
    cols.append("n_groups")
    return pd.DataFrame(rows, columns=cols)
