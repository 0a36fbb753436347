"""English phrases from Neuronpedia activation exports, the paper's dataset recipe.

Each export record is one top-activating snippet of one SAE feature. A record is kept when
its `maxValue` reaches `threshold` x the feature's largest `maxValue` among the records read;
its text is the window of `window` tokens either side of the max-activating token. Every
kept snippet becomes its own group holding one English phrase whose origin is the feature.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from xling.ingest.corpus_files import JsonlFixes, expand_paths, json_lines
from xling.ingest.corpus_load import LoadResult, load_phrases
from xling.warehouse.errors import XlingError

if TYPE_CHECKING:
    from xling.warehouse import Warehouse

log = logging.getLogger(__name__)

SUFFIXES = (".jsonl", ".ndjson")
REQUIRED_FIELDS = ("modelId", "layer", "index", "tokens", "maxValue", "maxValueTokenIndex")
# Model-specific control tokens that carry no text of the snippet.
SPECIAL_TOKENS = frozenset(
    {"<bos>", "<eos>", "<pad>", "<unk>", "<s>", "</s>", "<|endoftext|>", "<|begin_of_text|>"}
)
_BYTE_TOKEN = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")
_LAYER_NUMBER = re.compile(r"^(\d+)")


@dataclass
class NeuronpediaConfig:
    """How to turn Neuronpedia activation records into phrases (`xling corpus neuronpedia`)."""

    threshold: float = 0.8
    """Keep records with maxValue >= threshold x the top maxValue of their feature."""
    window: int = 10
    """Tokens kept on each side of the max-activating token."""
    lang: str = "en"
    """Language of the snippets (Neuronpedia exports carry none; Gemma Scope's are English)."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise XlingError(f"threshold {self.threshold} is outside 0..1; the paper uses 0.8")
        if self.window < 0:
            raise XlingError(f"window {self.window} is negative; use e.g. 10 tokens each side")


def layer_number(source_id: str | int) -> int:
    """The layer of a Neuronpedia source id: `20-gemmascope-res-16k` -> 20."""
    if isinstance(source_id, int) and not isinstance(source_id, bool):
        return source_id
    m = _LAYER_NUMBER.match(str(source_id))
    if not m:
        raise ValueError(f"layer {source_id!r} does not start with a layer number")
    return int(m.group(1))


def window_text(tokens: list[str], index: int, window: int) -> str:
    """Text of tokens[index - window : index + window + 1] (clipped to the snippet).

    Tokens are sentencepiece pieces: '▁' is a space, `<0xNN>` tokens are raw bytes, control
    tokens such as `<bos>` are dropped; runs of whitespace become one space.
    """
    lo, hi = max(0, index - window), min(len(tokens), index + window + 1)
    return _detokenize(tokens[lo:hi])


def _detokenize(pieces: list[str]) -> str:
    out: list[str] = []
    pending = bytearray()  # consecutive byte tokens form one UTF-8 sequence
    for piece in pieces:
        m = _BYTE_TOKEN.match(piece)
        if m:
            pending.append(int(m.group(1), 16))
            continue
        if pending:
            out.append(pending.decode("utf-8", errors="replace"))
            pending.clear()
        if piece not in SPECIAL_TOKENS:
            out.append(piece)
    if pending:
        out.append(pending.decode("utf-8", errors="replace"))
    return " ".join("".join(out).replace("▁", " ").split())


_JSONL_FIXES = JsonlFixes(
    utf8="is the file corrupt?",
    json="Neuronpedia exports hold one record per line",
    surrogate="is the file corrupt?",
)


def read_records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, record) for each record of a JSONL(.gz) export, checked for the fields
    the recipe needs."""
    for number, record in json_lines(path, _JSONL_FIXES):
        yield number, _checked(record, f"{path} line {number}")


def _checked(record: Any, where: str) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise XlingError(f"{where}: expected a JSON object, got {type(record).__name__}")
    missing = [k for k in REQUIRED_FIELDS if k not in record]
    if missing:
        raise XlingError(
            f"{where}: missing field(s) {', '.join(missing)}; is this a Neuronpedia "
            "activation export?"
        )
    tokens, index = record["tokens"], record["maxValueTokenIndex"]
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        raise XlingError(f"{where}: tokens must be a list of strings")
    if not _is_int(index):
        raise XlingError(f"{where}: maxValueTokenIndex {index!r} is not a token index")
    if not 0 <= index < len(tokens):
        raise XlingError(
            f"{where}: maxValueTokenIndex {index!r} is outside the {len(tokens)} tokens"
        )
    value = record["maxValue"]
    if not (_is_int(value) or isinstance(value, float)):
        raise XlingError(f"{where}: maxValue {value!r} is not a number")
    if not math.isfinite(value):
        raise XlingError(f"{where}: maxValue {value!r} is not a finite number")
    feature = record["index"]
    if not (_is_int(feature) or isinstance(feature, str)) or not str(feature).isdigit():
        raise XlingError(f"{where}: index {feature!r} is not a feature number")
    if int(feature) > _INT32_MAX:
        raise XlingError(f"{where}: index {feature} is out of range for a feature number")
    if not isinstance(record["modelId"], str):
        raise XlingError(f"{where}: modelId {record['modelId']!r} is not a model name")
    try:
        layer = layer_number(record["layer"])
    except ValueError as err:
        raise XlingError(f"{where}: {err}") from None
    if not 0 <= layer <= _INT32_MAX:
        raise XlingError(f"{where}: layer {record['layer']!r} is not a layer number")
    return record


_INT32_MAX = 2**31 - 1  # origin_layer and origin_feature are INTEGER columns


def _is_int(value: Any) -> bool:
    """A JSON integer (true and false are not)."""
    return isinstance(value, int) and not isinstance(value, bool)


def read_neuronpedia(
    paths: Iterable[str | os.PathLike], cfg: NeuronpediaConfig | None = None
) -> pd.DataFrame:
    """The kept snippets of every export in `paths` (globs allowed) as phrase rows."""
    cfg = cfg or NeuronpediaConfig()
    files = expand_paths(paths, SUFFIXES)
    # Column lists rather than a dict per record: exports run to millions of records.
    cols: dict[str, list] = {
        k: [] for k in ("model", "source_id", "feature", "max_value", "text", "_file", "_line")
    }
    for path in files:
        for number, rec in read_records(path):
            cols["model"].append(str(rec["modelId"]))
            cols["source_id"].append(str(rec["layer"]))
            cols["feature"].append(int(rec["index"]))
            cols["max_value"].append(float(rec["maxValue"]))
            cols["text"].append(window_text(rec["tokens"], rec["maxValueTokenIndex"], cfg.window))
            cols["_file"].append(f"{path} line")
            cols["_line"].append(number)
    if not cols["text"]:
        raise XlingError(f"no activation records in {', '.join(map(str, files))}")
    df = pd.DataFrame(cols)
    df["layer"] = df["source_id"].map(layer_number)
    # A feature is (model, SAE source, index): layer 20 of a 16k and a 65k SAE differ.
    # Sorted by layer number so layer 3 comes before layer 20.
    key = ["model", "layer", "source_id", "feature"]
    top = df.groupby(key)["max_value"].transform("max")
    kept = df[df["max_value"] >= cfg.threshold * top]
    n_kept = len(kept)
    # Snippets that are all control tokens leave no text; the same window twice in one
    # feature (Neuronpedia repeats snippets across its top and quantile lists) counts once.
    kept = kept[kept["text"] != ""]
    kept = kept.sort_values(
        [*key, "max_value"], ascending=[True] * len(key) + [False], kind="stable"
    )
    kept = kept.drop_duplicates([*key, "text"]).reset_index(drop=True)
    rank = kept.groupby(key).cumcount()
    log.info(
        "neuronpedia: %d records, %d above %.2f x feature max, %d phrases after dropping "
        "empty and repeated windows",
        len(df),
        n_kept,
        cfg.threshold,
        len(kept),
    )
    return pd.DataFrame(
        {
            "group_id": "np:"
            + kept["model"]
            + ":"
            + kept["source_id"]
            + ":"
            + kept["feature"].astype(str)
            + ":"
            + rank.astype(str),
            "lang": cfg.lang,
            "text": kept["text"],
            "source": "neuronpedia:" + kept["model"] + "/" + kept["source_id"],
            "origin_layer": kept["layer"],
            "origin_feature": kept["feature"],
            "_file": kept["_file"],
            "_line": kept["_line"],
        }
    )


def load_neuronpedia(
    wh: Warehouse, paths: Iterable[str | os.PathLike], cfg: NeuronpediaConfig | None = None
) -> LoadResult:
    """Read Neuronpedia exports and load the kept snippets (`xling corpus neuronpedia`)."""
    cfg = cfg or NeuronpediaConfig()
    rows = read_neuronpedia(paths, cfg)
    if rows.empty:
        raise XlingError("no snippet left after the threshold; lower --threshold")
    return load_phrases(wh, rows)
