"""Score CSV files: `model, task, lang, metric, value[, stderr, n]`, one score a row."""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable
from pathlib import Path

from xling.analysis.bench_scores import Score
from xling.warehouse.errors import XlingError

CSV_COLUMNS = ("model", "task", "lang", "metric", "value", "stderr", "n")
CSV_REQUIRED = ("task", "lang", "metric", "value")


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
        problem = f"unknown column {unknown[0]!r}" if unknown else f"no '{missing[0]}' column"
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
