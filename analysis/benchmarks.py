"""Benchmark scores in the warehouse: `import_files` reads lm-evaluation-harness result
files and score CSVs and stores them in one transaction (`xling bench import`).

The work is split by job: `lmeval_results` reads lm-eval documents, `bench_csv` score CSVs,
`bench_scores` owns the `benchmarks` table (storing, replacing, reading back). Tasks whose
language the warehouse does not know are reported and skipped; a NaN or infinite score
rejects the whole import. This module keeps their public names importable from one place.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from xling.analysis.bench_csv import CSV_COLUMNS, CSV_REQUIRED, scores_from_csv
from xling.analysis.bench_scores import (
    BENCHMARK_SCHEMA,
    Score,
    benchmark_scores,
    known_languages,
    models_table,
    resolve_model,
    scores_table,
    store_scores,
)
from xling.analysis.lmeval_results import (
    ENGLISH_TASKS,
    TASK_RENAMES,
    model_of_lmeval,
    scores_from_lmeval,
    split_task_name,
    steer_of_lmeval,
)
from xling.ingest.corpus_files import MAX_INPUT_BYTES, shown
from xling.warehouse.errors import XlingError

__all__ = [
    "BENCHMARK_SCHEMA",
    "CSV_COLUMNS",
    "CSV_REQUIRED",
    "ENGLISH_TASKS",
    "TASK_RENAMES",
    "ImportReport",
    "Score",
    "benchmark_scores",
    "import_files",
    "known_languages",
    "model_of_lmeval",
    "models_table",
    "resolve_model",
    "scores_from_csv",
    "scores_from_lmeval",
    "scores_table",
    "split_task_name",
    "steer_of_lmeval",
    "store_scores",
]

log = logging.getLogger(__name__)


@dataclass
class ImportReport:
    """What an import stored: rows written, rows they replaced, and what was skipped."""

    rows: int = 0
    replaced: int = 0
    models: list[str] = field(default_factory=list)
    # "file: lm-eval task" -> why it was not stored (unknown language, no language in the name)
    skipped: dict[str, str] = field(default_factory=dict)


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


def _check_regular_file(path: Path) -> None:
    """Only regular files of a sane size: a FIFO would block, /dev/zero never end, and a
    name longer than the filesystem allows is one line, not an OSError."""
    try:
        info = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        raise XlingError(f"no file {shown(path)}") from None
    except OSError as err:
        raise XlingError(f"{shown(path)}: cannot read ({err.strerror or err})") from None
    if stat.S_ISDIR(info.st_mode):
        raise XlingError(f"{shown(path)} is a directory; pass the results files in it")
    if not stat.S_ISREG(info.st_mode):
        raise XlingError(f"{shown(path)} is not a regular file (a device, FIFO or socket)")
    if info.st_size > MAX_INPUT_BYTES:
        raise XlingError(f"{shown(path)} is larger than {MAX_INPUT_BYTES // 2**30} GiB")


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
        _check_regular_file(path)
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
                    scores_table(
                        model_id, scores, source=source, steer=steer_of_lmeval(doc, where=str(path))
                    )
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
