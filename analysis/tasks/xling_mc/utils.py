"""Loader for the xling_mc task: lm-eval resolves `!function utils.load` next to the YAML.

lm-eval hands `data_files` to `datasets.load_dataset` relative to the working directory, so
the JSONL beside this file is read here instead, by path, wherever the task is installed.
"""

from __future__ import annotations

import json
from pathlib import Path


def load(lang: str, **_metadata: object):
    """The `test` split of xling_mc in `lang` (extra task metadata is ignored)."""
    import datasets

    path = Path(__file__).with_name(f"xling_mc_{lang}.jsonl")
    with path.open(encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})
