"""Benchmark scores in the warehouse: lm-evaluation-harness result files and CSV.

lm-eval names one task per language (`arc_hi`, `hellaswag_es`, `m_mmlu_ml`, `xling_mc_en`);
xling stores one row per (model, task, language, metric): task `arc`, lang `hi`, metric
`acc`. English Okapi scores come from `arc_challenge` and `hellaswag`. A group whose name
carries no language (`arc_multilingual`, `xling_mc`) is opened and its per-language members
stored; a per-language group without its own scores is folded the way lm-eval aggregates
groups by default (mean weighted by each subtask's sample count, pooled standard error).

A score replaces the stored one with the same (model_id, task, lang, metric, steer), so
importing a file twice stores it once. Tasks whose language the warehouse does not know are
reported and skipped; a NaN or infinite score rejects the whole import.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa

from xling.warehouse.errors import XlingError
from xling.warehouse.writer import append_arrow

log = logging.getLogger(__name__)

# lm-eval task names that are English without saying so (the Okapi papers' English baselines).
ENGLISH_TASKS = {"arc_challenge": "arc", "hellaswag": "hellaswag"}
# lm-eval task families whose per-language name differs from the benchmark's name.
TASK_RENAMES = {"m_mmlu": "mmlu"}
_LANG_SUFFIX = re.compile(r"^(?P<task>.+)_(?P<lang>[a-z]{2,3})$")

CSV_COLUMNS = ("model", "task", "lang", "metric", "value", "stderr", "n")
CSV_REQUIRED = ("task", "lang", "metric", "value")

BENCHMARK_SCHEMA = pa.schema(
    [
        ("model_id", pa.int32()),
        ("task", pa.string()),
        ("lang", pa.string()),
        ("metric", pa.string()),
        ("value", pa.float64()),
        ("stderr", pa.float64()),
        ("n_samples", pa.int64()),
        ("source", pa.string()),
        ("steer", pa.string()),
        ("num_fewshot", pa.int32()),
    ]
)


@dataclass(frozen=True)
class Score:
    """One benchmark number for one language, before it is attached to a model."""

    task: str
    lang: str
    metric: str
    value: float
    stderr: float | None = None
    n_samples: int | None = None
    num_fewshot: int | None = None


@dataclass
class ImportReport:
    """What an import stored: rows written, rows they replaced, and what was skipped."""

    rows: int = 0
    replaced: int = 0
    models: list[str] = field(default_factory=list)
    # "file: lm-eval task" -> why it was not stored (unknown language, no language in the name)
    skipped: dict[str, str] = field(default_factory=dict)


# -- lm-eval task names -----------------------------------------------------------------


def split_task_name(name: str, known_langs: Iterable[str] = ()) -> tuple[str, str] | None:
    """lm-eval task name -> (benchmark, language), or None when the name carries no language.

    `arc_hi` -> (arc, hi), `m_mmlu_hi` -> (mmlu, hi), `arc_challenge` -> (arc, en). A two- or
    three-letter suffix is a language when the warehouse knows it or it is a language code
    with CLDR data (so `arc_ar` is reported as a language the warehouse lacks, while
    `mmlu_law` and `xling_mc` carry no language).
    """
    from babel import localedata

    if name in ENGLISH_TASKS:
        return ENGLISH_TASKS[name], "en"
    m = _LANG_SUFFIX.match(name)
    if m is None or not (m["lang"] in set(known_langs) or localedata.exists(m["lang"])):
        return None
    return TASK_RENAMES.get(m["task"], m["task"]), m["lang"]


def _number(value: Any) -> float | None:
    """A JSON number as float; None for "N/A", null and other non-numbers."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _metric_values(entry: dict[str, Any]) -> dict[str, tuple[float, float | None]]:
    """{metric: (value, stderr)} from an lm-eval result entry (`acc,none`, `acc_stderr,none`).

    The filter is dropped when it is `none`, kept (`exact_match,strict-match`) otherwise.
    """
    out: dict[str, tuple[float, float | None]] = {}
    for key, raw in entry.items():
        metric, sep, filt = key.partition(",")
        if not sep or metric.endswith("_stderr"):
            continue
        value = _number(raw)
        if value is None:
            continue
        stderr = _number(entry.get(f"{metric}_stderr,{filt}"))
        if stderr is not None and not math.isfinite(stderr):
            stderr = None
        out[metric if filt == "none" else key] = (value, stderr)
    return out


def _weighted_fold(
    parts: list[tuple[float, float | None, int | None]],
) -> tuple[float, float | None, int | None]:
    """Fold subtask (value, stderr, n) into one, as lm-eval's default group aggregation does.

    Weighted by n (`aggregate_subtask_metrics`) with the pooled standard error
    (`pooled_sample_stderr`); when a size is unknown, the plain mean and the standard error of
    a mean of independent means (lm-eval's `weight_by_size: false`).
    """
    values = [p[0] for p in parts]
    stderrs = [p[1] for p in parts]
    sizes = [p[2] for p in parts]
    if all(n is not None and n > 0 for n in sizes):
        total = sum(sizes)
        value = sum(v * n for v, n in zip(values, sizes, strict=True)) / total
        stderr = None
        if all(s is not None for s in stderrs) and total > len(sizes):
            pooled = sum((n - 1) * s**2 * n for s, n in zip(stderrs, sizes, strict=True))
            stderr = math.sqrt(pooled / (total - len(sizes)) / total)
        return value, stderr, total
    stderr = None
    if all(s is not None for s in stderrs):
        stderr = math.sqrt(sum(s**2 for s in stderrs)) / len(stderrs)
    return sum(values) / len(values), stderr, None


class _LmevalResults:
    """One lm-eval results document, walked from its top-level tasks and groups."""

    def __init__(self, doc: dict[str, Any], where: str) -> None:
        results = doc.get("results")
        if not isinstance(results, dict):
            raise XlingError(
                f"{where}: not an lm-evaluation-harness results file (no 'results' object); "
                "pass the results_*.json that lm-eval writes, not its samples"
            )
        self.where = where
        self.entries: dict[str, dict[str, Any]] = {}
        for section in (results, doc.get("groups") or {}):
            for name, entry in section.items():
                if isinstance(entry, dict):
                    self.entries.setdefault(name, {}).update(entry)
        self.children = {
            name: list(kids) for name, kids in (doc.get("group_subtasks") or {}).items() if kids
        }
        self.n_samples = doc.get("n-samples") or {}
        self.n_shot = doc.get("n-shot") or {}

    def roots(self) -> list[str]:
        inner = {kid for kids in self.children.values() for kid in kids}
        names = dict.fromkeys([*self.entries, *self.children])
        return [name for name in names if name not in inner]

    def leaves(self, name: str) -> list[str]:
        kids = self.children.get(name)
        if not kids:
            return [name]
        return [leaf for kid in kids for leaf in self.leaves(kid)]

    def size(self, name: str) -> int | None:
        counts = self.n_samples.get(name)
        if isinstance(counts, dict) and isinstance(counts.get("effective"), int):
            return counts["effective"]
        n = self.entries.get(name, {}).get("sample_len")
        if isinstance(n, int):
            return n
        if name in self.children:
            sizes = [self.size(leaf) for leaf in self.leaves(name)]
            return sum(sizes) if all(s is not None for s in sizes) else None
        return None

    def metrics(self, name: str) -> dict[str, tuple[float, float | None, int | None]]:
        """{metric: (value, stderr, n)}: the entry's own numbers, else its leaves folded."""
        own = _metric_values(self.entries.get(name, {}))
        if own:
            n = self.size(name)
            return {metric: (v, s, n) for metric, (v, s) in own.items()}
        parts: dict[str, list[tuple[float, float | None, int | None]]] = {}
        for leaf in self.leaves(name):
            if leaf == name:
                continue
            n = self.size(leaf)
            for metric, (v, s) in _metric_values(self.entries.get(leaf, {})).items():
                parts.setdefault(metric, []).append((v, s, n))
        return {metric: _weighted_fold(p) for metric, p in parts.items()}

    def num_fewshot(self, name: str) -> int | None:
        shots = self.n_shot.get(name)
        return shots if isinstance(shots, int) and not isinstance(shots, bool) else None


def scores_from_lmeval(
    doc: dict[str, Any], known_langs: Iterable[str], *, where: str = "results"
) -> tuple[list[Score], dict[str, str]]:
    """Per-language scores of an lm-eval results document, and {task: why skipped}.

    Raises XlingError on a NaN or infinite score of a task that would be stored, and when two
    lm-eval tasks give the same (task, lang) (e.g. `arc_challenge` and an `arc_en`).
    """
    known = set(known_langs)
    res = _LmevalResults(doc, where)
    scores: list[Score] = []
    skipped: dict[str, str] = {}
    seen: dict[tuple[str, str], str] = {}

    def visit(name: str) -> bool:
        split = split_task_name(name, known)
        if split is None:
            if name not in res.children:
                skipped[name] = "no language in the task name"
                return False
            mark = len(skipped)
            stored = [visit(kid) for kid in res.children[name]]
            if any(stored):
                return True
            # Nothing below was stored: report the group once instead of each member.
            for kid in list(skipped)[mark:]:
                del skipped[kid]
            skipped[name] = "no per-language task inside"
            return False
        task, lang = split
        if lang not in known:
            skipped[name] = f"language '{lang}' is not in the warehouse"
            return False
        if (task, lang) in seen:
            raise XlingError(
                f"{where}: lm-eval tasks {seen[task, lang]} and {name} both give {task}/{lang}; "
                "import them from separate files"
            )
        seen[task, lang] = name
        metrics = res.metrics(name)
        if not metrics:
            skipped[name] = "no numeric metric"
            return False
        for metric, (value, stderr, n) in metrics.items():
            if not math.isfinite(value):
                raise XlingError(
                    f"{where}: {name} {metric} is {value}; nothing was imported "
                    "(fix or remove the task in the file)"
                )
            scores.append(Score(task, lang, metric, value, stderr, n, res.num_fewshot(name)))
        return True

    for root in res.roots():
        visit(root)
    return scores, skipped


def model_of_lmeval(doc: dict[str, Any]) -> tuple[str | None, str | None]:
    """(model name, adapter path) an lm-eval results document was produced with.

    From `config.model_args` (`pretrained=...`, `peft=...`; string or dict), else the
    top-level `model_name` (which lm-eval sets to the adapter path when there is one).
    """
    config = doc.get("config") or {}
    args = config.get("model_args") if isinstance(config, dict) else None
    parsed: dict[str, Any] = {}
    if isinstance(args, str):
        parsed = dict(part.split("=", 1) for part in args.split(",") if "=" in part)
    elif isinstance(args, dict):
        parsed = args
    adapter = parsed.get("peft")
    name = parsed.get("pretrained")
    if not isinstance(name, str) and not adapter and isinstance(doc.get("model_name"), str):
        name = doc["model_name"]
    return (name if isinstance(name, str) else None), (str(adapter) if adapter else None)


def steer_of_lmeval(doc: dict[str, Any]) -> str | None:
    """The intervention a file written by `xling bench run --out` was measured under."""
    steer = (doc.get("xling") or {}).get("steer")
    return steer if isinstance(steer, str) else None


# -- CSV --------------------------------------------------------------------------------


def scores_from_csv(
    path: Path, known_langs: Iterable[str], *, model: str | None = None
) -> tuple[dict[str, list[Score]], dict[str, str]]:
    """{model name: scores} of a CSV `model, task, lang, metric, value[, stderr, n]`.

    `model` replaces the file's model column (which may then be absent). Rows in a language
    the warehouse does not know are skipped and reported as `task/lang (line N)`.
    """
    known = set(known_langs)
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in reader.fieldnames or []]
            reader.fieldnames = header
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise XlingError(f"{path}: cannot read CSV ({err})") from None
    unknown = [h for h in header if h not in CSV_COLUMNS]
    missing = [c for c in CSV_REQUIRED if c not in header]
    if model is None and "model" not in header:
        missing.insert(0, "model")
    if unknown or missing:
        problem = f"unknown column '{unknown[0]}'" if unknown else f"no '{missing[0]}' column"
        raise XlingError(
            f"{path}: {problem}; columns are {', '.join(CSV_COLUMNS)} "
            "(model may be omitted with --model; stderr and n are optional)"
        )
    out: dict[str, list[Score]] = {}
    skipped: dict[str, str] = {}
    for line, row in enumerate(rows, start=2):
        cells = {k: (row.get(k) or "").strip() for k in CSV_COLUMNS}
        where = f"{path}:{line}"
        name = model or cells["model"]
        if not name or not cells["task"] or not cells["lang"] or not cells["metric"]:
            raise XlingError(f"{where}: model, task, lang and metric must not be empty")
        if cells["lang"] not in known:
            skipped[f"{cells['task']}/{cells['lang']} (line {line})"] = (
                f"language '{cells['lang']}' is not in the warehouse"
            )
            continue
        value = _parse_float(cells["value"], "value", where)
        if value is None or not math.isfinite(value):
            raise XlingError(
                f"{where}: value {cells['value'] or '(empty)'!r} is not a finite number; "
                "nothing was imported"
            )
        stderr = _parse_float(cells["stderr"], "stderr", where)
        n = None
        if cells["n"]:
            try:
                n = int(cells["n"])
            except ValueError:
                raise XlingError(f"{where}: n {cells['n']!r} is not an integer") from None
        score = Score(cells["task"], cells["lang"], cells["metric"], value, stderr, n)
        out.setdefault(name, []).append(score)
    return out, skipped


def _parse_float(text: str, column: str, where: str) -> float | None:
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise XlingError(f"{where}: {column} {text!r} is not a number") from None


# -- the warehouse side -----------------------------------------------------------------


def resolve_model(wh, model: str, adapter: str | None = None) -> int:
    """model_id of an ingested model: a numeric id, or a name (with `adapter`, if any).

    Scores attach only to models already in the warehouse (ingested or registered by `bench
    run`/`bench bpb`): a score of a model without activations cannot be correlated with
    anything, and a name typo would otherwise create a second model silently.
    """
    if model.isdigit():
        if wh.scalar("SELECT count(*) FROM models WHERE model_id = ?", [int(model)]):
            return int(model)
        raise XlingError(f"no model with id {model}; `xling bench models` lists them")
    ids = [
        r[0]
        for r in wh.con.execute(
            "SELECT model_id FROM models WHERE name = ? AND adapter IS NOT DISTINCT FROM ? "
            "ORDER BY model_id",
            [model, adapter],
        ).fetchall()
    ]
    if len(ids) == 1:
        return ids[0]
    what = f"'{model}'" + (f" with adapter {adapter}" if adapter else "")
    if not ids:
        raise XlingError(
            f"no model {what} in the warehouse; ingest it first, or pass --model with the name "
            "or id of a model listed by `xling bench models`"
        )
    raise XlingError(f"model {what} matches model ids {', '.join(map(str, ids))}; pass --model ID")


def scores_table(
    model_id: int,
    scores: Sequence[Score],
    *,
    source: str,
    steer: str | None = None,
) -> pa.Table:
    """Rows for `benchmarks` (BENCHMARK_SCHEMA) from one model's scores."""
    cols: dict[str, list] = {name: [] for name in BENCHMARK_SCHEMA.names}
    for s in scores:
        for name, value in (
            ("model_id", model_id),
            ("task", s.task),
            ("lang", s.lang),
            ("metric", s.metric),
            ("value", s.value),
            ("stderr", s.stderr),
            ("n_samples", s.n_samples),
            ("source", source),
            ("steer", steer),
            ("num_fewshot", s.num_fewshot),
        ):
            cols[name].append(value)
    return pa.table(cols, schema=BENCHMARK_SCHEMA)


_KEY = ("model_id", "task", "lang", "metric", "steer")


def store_scores(con: duckdb.DuckDBPyConnection, rows: pa.Table) -> int:
    """Replace-or-insert `rows` (BENCHMARK_SCHEMA) by (model_id, task, lang, metric, steer).

    Returns how many stored rows were replaced. Within `rows`, a later duplicate key wins.
    The caller owns the transaction.
    """
    keys = zip(*(rows.column(k).to_pylist() for k in _KEY), strict=True)
    last = {key: i for i, key in enumerate(keys)}
    if len(last) < rows.num_rows:
        rows = rows.take(sorted(last.values()))
    match = " AND ".join(f"b.{k} IS NOT DISTINCT FROM n.{k}" for k in _KEY)
    # DuckDB 2 refuses register() while an earlier execute() on the connection has rows left
    # unfetched (a fetchone() of the caller's, e.g. register_model's); close it first.
    con.complete()
    con.register("_xling_bench_new", rows)
    try:
        replaced = con.execute(
            f"SELECT count(*) FROM benchmarks b, _xling_bench_new n WHERE {match}"
        ).fetchall()[0][0]
        con.execute(f"DELETE FROM benchmarks b USING _xling_bench_new n WHERE {match}")
    finally:
        con.unregister("_xling_bench_new")
    append_arrow(con, "benchmarks", rows)
    return int(replaced)


def known_languages(wh) -> set[str]:
    return {r[0] for r in wh.con.execute("SELECT lang FROM languages").fetchall()}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise XlingError(f"cannot read {path}: {err.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise XlingError(f"{path}: not valid JSON ({err}); pass an lm-eval results file") from None
    if not isinstance(doc, dict):
        raise XlingError(f"{path}: not an lm-evaluation-harness results file (not an object)")
    return doc


def import_files(
    wh, paths: Sequence[str | os.PathLike], *, model: str | None = None
) -> ImportReport:
    """Import lm-eval results JSON and score CSV files in one transaction.

    `model` (a name or model id) overrides the model the files name. Every file is read and
    checked before anything is written; any error leaves the warehouse unchanged.
    """
    if not paths:
        raise XlingError("no file given; pass lm-eval results JSON or score CSV files")
    known = known_languages(wh)
    report = ImportReport()
    tables: list[pa.Table] = []
    for raw in paths:
        path = Path(raw)
        if not path.is_file():
            raise XlingError(f"no file {path}")
        source = str(path.resolve())
        if path.suffix.lower() == ".csv":
            per_model, skipped = scores_from_csv(path, known, model=model)
            for name, scores in per_model.items():
                model_id = resolve_model(wh, name)
                tables.append(scores_table(model_id, scores, source=source))
                report.models.append(name)
        else:
            doc = _read_json(path)
            scores, skipped = scores_from_lmeval(doc, known, where=str(path))
            name, adapter = (model, None) if model else model_of_lmeval(doc)
            if name is None:
                raise XlingError(f"{path}: the file does not name its model; pass --model NAME")
            if scores:
                model_id = resolve_model(wh, name, adapter)
                tables.append(
                    scores_table(model_id, scores, source=source, steer=steer_of_lmeval(doc))
                )
                report.models.append(name)
        report.skipped.update({f"{path.name}: {task}": why for task, why in skipped.items()})
    rows = pa.concat_tables(tables) if tables else BENCHMARK_SCHEMA.empty_table()
    with wh.transaction() as con:
        report.replaced = store_scores(con, rows)
    report.rows = rows.num_rows
    report.models = list(dict.fromkeys(report.models))
    log.info("imported %d benchmark rows (%d replaced)", report.rows, report.replaced)
    return report


def benchmark_scores(
    wh,
    *,
    model: str | None = None,
    task: str | None = None,
    metric: str | None = None,
) -> pd.DataFrame:
    """Stored scores, one row each, with the model's name and adapter; optional filters."""
    return wh.sql(
        "SELECT b.model_id, m.name AS model, m.adapter, b.steer, b.task, b.lang, b.metric, "
        "b.value, b.stderr, b.n_samples, b.num_fewshot, b.source "
        "FROM benchmarks b JOIN models m USING (model_id) "
        "WHERE (CAST(? AS VARCHAR) IS NULL OR m.name = ? OR CAST(b.model_id AS VARCHAR) = ?) "
        "AND (CAST(? AS VARCHAR) IS NULL OR b.task = ?) "
        "AND (CAST(? AS VARCHAR) IS NULL OR b.metric = ?) "
        "ORDER BY b.model_id, b.steer NULLS FIRST, b.task, b.metric, b.lang",
        [model, model, model, task, task, metric, metric],
    )


def models_table(wh) -> pd.DataFrame:
    """The warehouse's models with how many runs and benchmark rows each has."""
    return wh.sql(
        "SELECT m.model_id, m.name, m.adapter, m.n_layers, m.d_model, "
        "(SELECT count(*) FROM runs r WHERE r.model_id = m.model_id) AS runs, "
        "(SELECT count(*) FROM benchmarks b WHERE b.model_id = m.model_id) AS benchmarks "
        "FROM models m ORDER BY m.model_id"
    )
