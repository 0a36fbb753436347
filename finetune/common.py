"""Pieces both fine-tunes share: batch encoding, the `finetunes` record, the result object."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xling.warehouse.errors import XlingError

if TYPE_CHECKING:
    import pandas as pd
    import torch

    from xling.warehouse import Warehouse

log = logging.getLogger(__name__)


@dataclass
class FinetuneResult:
    """What a fine-tune produced: its warehouse record, artifact and per-step losses."""

    finetune_id: int
    kind: str
    adapter: str
    losses: list[dict[str, float]]
    n_trainable: int
    n_params: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def trainable_pct(self) -> float:
        return 100.0 * self.n_trainable / self.n_params


def encode(
    tokenizer, texts: list[str], max_length: int, device: torch.device | str
) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) for `texts`, tokenised and right-padded as ingest does, so
    every phrase's activations are those it has alone; phrases are cut at `max_length`."""
    from xling.ingest.hooks import pad_right

    seqs = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return pad_right(seqs, pad_id, device)


def shuffled_batches(n: int, batch_size: int, seed: int) -> Iterator[list[int]]:
    """Endless batches of indices into `n` examples, in a seeded order reshuffled each epoch."""
    import numpy as np

    rng = np.random.default_rng(seed)
    order: list[int] = []
    while True:
        while len(order) < batch_size:
            order.extend(rng.permutation(n).tolist())
        yield order[:batch_size]
        order = order[batch_size:]


def check_out(path: Path, names: tuple[str, ...]) -> None:
    """Refuse to overwrite an artifact: `path` must not hold any of `names` already."""
    if path.is_file() and path.name in names:
        raise XlingError(f"{path} exists; pick another --out or delete it")
    if path.is_dir() and any((path / n).exists() for n in names):
        raise XlingError(f"{path} already holds an adapter; pick another --out or delete it")


def record_finetune(
    wh: Warehouse,
    *,
    kind: str,
    base_run: int,
    config: str,
    losses: list[dict[str, float]],
    adapter: Path,
    n_trainable: int,
    n_params: int,
    extra: dict[str, Any] | None = None,
) -> FinetuneResult:
    """Insert the `finetunes` row of a trained artifact saved at `adapter`; returns the
    result every fine-tune method gives (`extra`: what is particular to the method)."""
    model_id = wh.run(base_run)["model_id"]
    with wh.transaction() as con:
        finetune_id = int(
            con.execute(
                "INSERT INTO finetunes (kind, base_run, model_id, config, losses, adapter, "
                "n_trainable, n_params) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING finetune_id",
                [
                    kind,
                    base_run,
                    model_id,
                    config,
                    json.dumps(losses),
                    str(adapter.resolve()),
                    n_trainable,
                    n_params,
                ],
            ).fetchone()[0]
        )
    return FinetuneResult(
        finetune_id=finetune_id,
        kind=kind,
        adapter=str(adapter.resolve()),
        losses=losses,
        n_trainable=n_trainable,
        n_params=n_params,
        extra=extra or {},
    )


def list_finetunes(wh: Warehouse) -> pd.DataFrame:
    """One row per fine-tune: kind, base run, steps, first and last loss, trainable share."""
    return wh.sql(
        "SELECT finetune_id, kind, base_run, "
        "json_array_length(losses) AS steps, "
        "CAST(losses->'$[0].loss' AS DOUBLE) AS first_loss, "
        "CAST(losses->'$[-1].loss' AS DOUBLE) AS last_loss, "
        "100.0 * n_trainable / n_params AS trainable_pct, adapter, created_at "
        "FROM finetunes ORDER BY finetune_id"
    )


def lape_neurons(wh: Warehouse, run: int, lang: str, top_rate: float) -> dict[int, list[int]]:
    """{layer: sorted neuron ids} of `lang`'s LAPE neurons in `run`'s neuron stats."""
    from xling.analysis.queries import lape

    _check_neuron_run(wh, run, lang)
    df = lape(wh, kind="neurons", lang=lang, top_rate=top_rate, run=run)
    out: dict[int, list[int]] = {}
    for layer, neuron in zip(df["layer"], df["neuron"], strict=True):
        out.setdefault(int(layer), []).append(int(neuron))
    if not out:
        raise XlingError(
            f"run {run} has no LAPE neurons for {lang!r} at top_rate {top_rate}; "
            "raise --top-rate or ingest more text in that language"
        )
    return {layer: sorted(ids) for layer, ids in sorted(out.items())}


def _check_neuron_run(wh: Warehouse, run: int, lang: str) -> None:
    wh.run(run)
    langs = set(wh.sql("SELECT DISTINCT lang FROM neuron_stats WHERE run_id = ?", [run])["lang"])
    if not langs:
        raise XlingError(f"run {run} has no neuron stats; ingest with --neurons")
    if lang not in langs:
        raise XlingError(
            f"run {run} has no neuron stats for {lang!r}; it has {', '.join(sorted(langs))}"
        )


def load_run_model(wh: Warehouse, run_id: int, device: str | None = None):
    """(LoadedModel, recorded config) of a finished run's base model, loaded through the
    run's ModelSpec (source, revision, dtype and loading flags as recorded; `device`
    overrides the recorded one), without the run's steering."""
    from xling.ingest.models import run_spec

    run = wh.run(run_id)
    if run.status != "finished":
        raise XlingError(f"run {run_id} is {run.status}; fine-tune from a finished run")
    if run.adapter:
        raise XlingError(
            f"run {run_id} was made with an adapter; fine-tune from a run of the base model"
        )
    spec = run_spec(wh, run_id, steering=None)
    return (spec.on(device) if device else spec).load(), run.config


def finetune_record(wh: Warehouse, finetune_id: int) -> tuple[dict[str, Any], pd.DataFrame]:
    """(the `finetunes` row with its config parsed, one row per step of its losses)."""
    import pandas as pd

    df = wh.sql("SELECT * FROM finetunes WHERE finetune_id = ?", [finetune_id])
    if df.empty:
        raise XlingError(f"no fine-tune {finetune_id}; `xling finetune list` shows them")
    row = df.iloc[0].to_dict()
    losses = pd.DataFrame(json.loads(row.pop("losses")))
    row["config"] = json.loads(row["config"])
    return row, losses


# -- held-apart splits ---------------------------------------------------------------------


def make_split(wh: Warehouse, base_run: int, eval_frac: float = 0.2, seed: int = 0) -> int:
    """Partition `base_run`'s aligned groups (those holding English and at least one other
    language) into 'train' and 'eval' and record it; returns the split id.

    The groups are shuffled with `seed` (numpy's default generator over the sorted group
    ids) and the first round(eval_frac · n) become 'eval', at least one and at most n − 1.
    """
    import numpy as np
    import pandas as pd

    if not 0 < eval_frac < 1:
        raise XlingError(f"eval fraction must be in (0, 1), got {eval_frac}")
    groups = wh.sql(
        "SELECT p.group_id FROM phrases p JOIN phrase_tokens t USING (phrase_id) "
        "WHERE t.run_id = ? GROUP BY p.group_id "
        "HAVING bool_or(p.lang = 'en') AND bool_or(p.lang <> 'en') ORDER BY p.group_id",
        [base_run],
    )["group_id"].tolist()
    if len(groups) < 2:
        raise XlingError(
            f"run {base_run} holds {len(groups)} aligned group(s) with English; a held-apart "
            "split needs at least 2"
        )
    order = np.random.default_rng(seed).permutation(len(groups))
    n_eval = min(max(round(eval_frac * len(groups)), 1), len(groups) - 1)
    parts = np.where(np.arange(len(groups)) < n_eval, "eval", "train")
    rows = pd.DataFrame({"group_id": [groups[i] for i in order], "part": parts})
    with wh.transaction() as con:
        split_id = int(
            con.execute(
                "INSERT INTO splits (base_run, seed, eval_frac, n_train, n_eval) "
                "VALUES (?, ?, ?, ?, ?) RETURNING split_id",
                [base_run, seed, eval_frac, len(groups) - n_eval, n_eval],
            ).fetchone()[0]
        )
        con.register("split_rows", rows)
        con.execute("INSERT INTO split_groups SELECT ?, group_id, part FROM split_rows", [split_id])
        con.unregister("split_rows")
    log.info(
        "split %d of run %d: %d train, %d eval groups",
        split_id,
        base_run,
        len(groups) - n_eval,
        n_eval,
    )
    return split_id


def split_groups(wh: Warehouse, split_id: int, part: str) -> list[str]:
    """The group ids of one part ('train' or 'eval') of a recorded split."""
    if not wh.scalar("SELECT count(*) FROM splits WHERE split_id = ?", [split_id]):
        raise XlingError(f"no split {split_id}; `xling finetune round` makes them")
    return wh.sql(
        "SELECT group_id FROM split_groups WHERE split_id = ? AND part = ? ORDER BY group_id",
        [split_id, part],
    )["group_id"].tolist()
