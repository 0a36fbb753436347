"""The catalog: the one owner of the `runs`, `models`, `saes` and `jobs` rows.

    register_model(con, ModelFacts(...)) -> model_id      reused when the same model is there
    register_sae(con, model_id, SaeFacts(...)) -> sae_id  one row per SAE: a trained SAE and the
                                                          same directory loaded later share it
    create_run(con, model_id, NewRun(...)) -> run_id      status 'running'
    commit_chunk(con, run_id, chunk, n_phrases, n_rows)   the ledger of one committed chunk
    restart_run / finish_run / fail_run                   the run's status moves
    get_run(con, run_id) -> RunRecord                     the typed record
    resolve_run(con, None | id, needs=...) -> run_id      the default run for metrics
    record_job(con, kind, config, model_id)               sae train / bench configs

Every other module calls these; none writes these tables itself. The caller owns the
transaction (each function runs its statements on `con` as given), except `fail_run`, which
must land even after a failed transaction and so is one statement.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from xling.warehouse.errors import XlingError

if TYPE_CHECKING:
    import duckdb

# What a metric may need from a run, and the SQL that says a run has it.
NEEDS = {
    "features": "EXISTS (SELECT 1 FROM run_layers l WHERE l.run_id = r.run_id "
    "AND l.sae_id IS NOT NULL)",
    "residuals": "r.residuals",
    "neurons": "r.neurons",
}
_NEEDS_HINT = {
    "features": "ingest with SAEs (--sae-release/--sae-id or --sae-dir)",
    "residuals": "ingest with --residuals",
    "neurons": "ingest with --neurons",
}


@dataclass(frozen=True)
class ModelFacts:
    """What `models` records about a loaded model."""

    name: str
    revision: str | None
    adapter: str | None
    n_layers: int
    d_model: int
    d_mlp: int | None = None
    arch: str | None = None
    source: str | None = None


@dataclass(frozen=True)
class SaeFacts:
    """What `saes` records about one SAE."""

    layer: int
    sae_name: str
    release: str | None
    path: str | None
    d_in: int
    d_sae: int
    architecture: str | None = None
    hook_name: str | None = None
    explained_variance: float | None = None
    l0: float | None = None


@dataclass(frozen=True)
class NewRun:
    """A run about to start: its reproducible config and the columns views read."""

    config: dict[str, Any]  # stored as runs.config
    layers: dict[int, int | None]  # layer read -> sae_id encoded there (None: no SAE)
    adapter: str | None = None
    steer: str | None = None
    residuals: bool = False
    neurons: bool = False
    engine: str = "local"
    n_selected: int | None = None  # phrases selected; the run is complete when it has them


@dataclass(frozen=True)
class RunRecord:
    """One `runs` row with its model's name. `record["key"]` reads a field too."""

    run_id: int
    model_id: int
    model: str  # models.name
    status: str  # running | finished | failed
    config: dict[str, Any]
    n_phrases: int
    n_rows: int
    started_at: datetime | None
    finished_at: datetime | None
    note: str | None = None
    adapter: str | None = None
    steer: str | None = None
    residuals: bool = False
    neurons: bool = False
    engine: str = "local"
    n_selected: int | None = None
    layers: list[int] = field(default_factory=list)  # every layer the run read
    sae_layers: list[int] = field(default_factory=list)  # the layers it has SAE features for

    @property
    def finished(self) -> bool:
        return self.status == "finished"

    @property
    def is_base(self) -> bool:
        """No adapter and no steering: the model as released."""
        return self.adapter is None and self.steer is None

    def __getitem__(self, key: str) -> Any:
        if key not in self.__dataclass_fields__:
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key) if key in self.__dataclass_fields__ else default

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


# -- models and SAEs ---------------------------------------------------------------------


def find_model(
    con: duckdb.DuckDBPyConnection, name: str, revision: str | None, adapter: str | None
) -> int | None:
    """The id of the `models` row with this name, revision and adapter, if any."""
    row = con.execute(
        "SELECT model_id FROM models WHERE name = ? AND revision IS NOT DISTINCT FROM ? "
        "AND adapter IS NOT DISTINCT FROM ? ORDER BY model_id LIMIT 1",
        [name, revision, adapter],
    ).fetchone()
    return int(row[0]) if row else None


def register_model(con: duckdb.DuckDBPyConnection, facts: ModelFacts) -> int:
    """The `models` row for `facts`, inserted if new."""
    found = find_model(con, facts.name, facts.revision, facts.adapter)
    if found is not None:
        return found
    return int(
        con.execute(
            "INSERT INTO models (name, revision, adapter, n_layers, d_model, d_mlp, arch, source) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING model_id",
            [
                facts.name,
                facts.revision,
                facts.adapter,
                facts.n_layers,
                facts.d_model,
                facts.d_mlp,
                facts.arch,
                facts.source,
            ],
        ).fetchone()[0]
    )


def register_sae(con: duckdb.DuckDBPyConnection, model_id: int, facts: SaeFacts) -> int:
    """The `saes` row for one SAE, inserted if new.

    An SAE on disk is identified by its directory (model, layer, path); a pretrained one by its
    release and name. So `sae train` and a later ingest that loads the same directory share one
    row, and measurements given now (explained variance, L0) fill in a row that lacks them.
    """
    if facts.path is not None:
        key_sql, key = "path = ?", [facts.path]
    else:
        key_sql, key = (
            "path IS NULL AND release IS NOT DISTINCT FROM ? AND sae_name = ?",
            [
                facts.release,
                facts.sae_name,
            ],
        )
    row = con.execute(
        f"SELECT sae_id FROM saes WHERE model_id = ? AND layer = ? AND {key_sql} "
        "ORDER BY sae_id LIMIT 1",
        [model_id, facts.layer, *key],
    ).fetchone()
    if row:
        sae_id = int(row[0])
        if facts.explained_variance is not None or facts.l0 is not None:
            con.execute(
                "UPDATE saes SET explained_variance = coalesce(?, explained_variance), "
                "l0 = coalesce(?, l0) WHERE sae_id = ?",
                [facts.explained_variance, facts.l0, sae_id],
            )
        return sae_id
    return int(
        con.execute(
            "INSERT INTO saes (model_id, layer, release, sae_name, path, d_in, d_sae, "
            "architecture, hook_name, explained_variance, l0) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING sae_id",
            [
                model_id,
                facts.layer,
                facts.release,
                facts.sae_name,
                facts.path,
                facts.d_in,
                facts.d_sae,
                facts.architecture,
                facts.hook_name,
                facts.explained_variance,
                facts.l0,
            ],
        ).fetchone()[0]
    )


def registered_sae_paths(con: duckdb.DuckDBPyConnection, model_id: int) -> dict[int, str]:
    """{layer: directory} of the newest SAE on disk registered for each layer of the model."""
    rows = con.execute(
        "SELECT layer, arg_max(path, sae_id) FROM saes WHERE model_id = ? AND path IS NOT NULL "
        "GROUP BY layer ORDER BY layer",
        [model_id],
    ).fetchall()
    return {int(layer): str(path) for layer, path in rows}


# -- runs --------------------------------------------------------------------------------


def create_run(con: duckdb.DuckDBPyConnection, model_id: int, run: NewRun) -> int:
    """Insert a 'running' run with its layers; returns its id."""
    run_id = int(
        con.execute(
            "INSERT INTO runs (model_id, status, config, n_phrases, n_rows, adapter, steer, "
            "residuals, neurons, engine, n_selected) VALUES (?, 'running', ?, 0, 0, ?, ?, ?, ?, ?, ?) "
            "RETURNING run_id",
            [
                model_id,
                json.dumps(run.config),
                run.adapter,
                run.steer,
                run.residuals,
                run.neurons,
                run.engine,
                run.n_selected,
            ],
        ).fetchone()[0]
    )
    for layer, sae_id in sorted(run.layers.items()):
        con.execute("INSERT INTO run_layers VALUES (?, ?, ?)", [run_id, layer, sae_id])
    return run_id


def commit_chunk(
    con: duckdb.DuckDBPyConnection, run_id: int, chunk: int, n_phrases: int, n_rows: int
) -> None:
    """Record a committed chunk (the ledger --resume reads) and advance the run's counts."""
    con.execute(
        "INSERT INTO run_chunks (run_id, chunk, n_phrases, n_rows) VALUES (?, ?, ?, ?)",
        [run_id, chunk, n_phrases, n_rows],
    )
    con.execute(
        "UPDATE runs SET n_phrases = n_phrases + ?, n_rows = n_rows + ? WHERE run_id = ?",
        [n_phrases, n_rows, run_id],
    )


def next_chunk(con: duckdb.DuckDBPyConnection, run_id: int) -> int:
    """The number the run's next chunk gets."""
    return int(
        con.execute(
            "SELECT coalesce(max(chunk) + 1, 0) FROM run_chunks WHERE run_id = ?", [run_id]
        ).fetchone()[0]
    )


def set_counts(con: duckdb.DuckDBPyConnection, run_id: int, n_phrases: int, n_rows: int) -> None:
    """Set the run's counts outright (an import of Parquet parts recounts them)."""
    con.execute(
        "UPDATE runs SET n_phrases = ?, n_rows = ? WHERE run_id = ?", [n_phrases, n_rows, run_id]
    )


def restart_run(con: duckdb.DuckDBPyConnection, run_id: int) -> None:
    """A killed or failed run is running again (resume)."""
    con.execute("UPDATE runs SET status = 'running', note = NULL WHERE run_id = ?", [run_id])


def finish_run(con: duckdb.DuckDBPyConnection, run_id: int) -> None:
    con.execute(
        "UPDATE runs SET status = 'finished', finished_at = current_timestamp, note = NULL "
        "WHERE run_id = ?",
        [run_id],
    )


def fail_run(con: duckdb.DuckDBPyConnection, run_id: int, note: str) -> None:
    """Mark the run failed with a one-line note (kept short: it is shown in `runs list`)."""
    con.execute(
        "UPDATE runs SET status = 'failed', note = ? WHERE run_id = ?", [note[:300], run_id]
    )


def delete_run(con: duckdb.DuckDBPyConnection, run_id: int) -> None:
    """Every row the run wrote, and the run. The caller owns the transaction."""
    for table in (
        "feature_acts",
        "feature_acts_single",
        "feature_acts_compact",
        "summary_origin",
        "summary_topk",
        "summary_topk_hits",
        "summary_feature_lang",
        "summary_runs",
        "residuals",
        "neuron_stats",
        "phrase_tokens",
        "run_chunks",
        "run_layers",
        "runs",
    ):
        con.execute(f"DELETE FROM {table} WHERE run_id = ?", [run_id])


_RUN_COLUMNS = (
    "r.run_id, r.model_id, m.name, r.status, r.config, coalesce(r.n_phrases, 0), "
    "coalesce(r.n_rows, 0), r.started_at, r.finished_at, r.note, "
    "coalesce(r.adapter, m.adapter), r.steer, coalesce(r.residuals, false), "
    "coalesce(r.neurons, false), coalesce(r.engine, 'local'), r.n_selected, "
    "(SELECT list(layer ORDER BY layer) FROM run_layers l WHERE l.run_id = r.run_id), "
    "(SELECT list(layer ORDER BY layer) FROM run_layers l WHERE l.run_id = r.run_id "
    "AND l.sae_id IS NOT NULL)"
)


def get_run(con: duckdb.DuckDBPyConnection, run_id: int) -> RunRecord:
    """The run's record; an unknown id is one XlingError line."""
    row = con.execute(
        f"SELECT {_RUN_COLUMNS} FROM runs r JOIN models m USING (model_id) WHERE r.run_id = ?",
        [run_id],
    ).fetchone()
    if row is None:
        raise XlingError(f"no run {run_id}; `xling runs list` shows the runs")
    *head, layers, sae_layers = row
    return RunRecord(
        *head[:4],
        json.loads(head[4]),
        *head[5:],
        layers=[int(x) for x in layers or []],
        sae_layers=[int(x) for x in sae_layers or []],
    )


def resolve_run(
    con: duckdb.DuckDBPyConnection, run_id: int | None, needs: str | None = None
) -> int:
    """`run_id` checked to exist (and to hold `needs`), or the default run for metrics: the
    newest finished run of the model as released (no adapter, no steering) that holds `needs`.

    `needs` is one of NEEDS (features | residuals | neurons) or None. When the run asked for
    lacks it, the error names a run that has it.
    """
    if needs is not None and needs not in NEEDS:
        raise ValueError(f"unknown need {needs!r}")
    has = NEEDS[needs] if needs else "true"
    if run_id is not None:
        get_run(con, run_id)
        if (
            needs
            and not con.execute(
                f"SELECT {has} FROM runs r WHERE r.run_id = ?", [run_id]
            ).fetchone()[0]
        ):
            other = _newest(con, has, base_only=False)
            where = f"; run {other} has them" if other is not None else ""
            raise XlingError(f"run {run_id} has no {needs}{where} ({_NEEDS_HINT[needs]})")
        return run_id
    found = _newest(con, has, base_only=True)
    if found is not None:
        return found
    tuned = _newest(con, has, base_only=False)
    if tuned is not None:
        raise XlingError(
            f"no finished run of a base model{' with ' + needs if needs else ''}; run {tuned} "
            f"has an adapter or steering: pass --run {tuned} to use it"
        )
    if needs and _newest(con, "true", base_only=False) is not None:
        raise XlingError(f"no finished run has {needs}; {_NEEDS_HINT[needs]}")
    raise XlingError("no finished run in the warehouse; run `xling ingest` first")


def _newest(con: duckdb.DuckDBPyConnection, has: str, *, base_only: bool) -> int | None:
    base = "AND coalesce(r.adapter, m.adapter) IS NULL AND r.steer IS NULL" if base_only else ""
    row = con.execute(
        f"SELECT max(r.run_id) FROM runs r JOIN models m USING (model_id) "
        f"WHERE r.status = 'finished' AND {has} {base}"
    ).fetchone()
    return int(row[0]) if row and row[0] is not None else None


# -- other jobs --------------------------------------------------------------------------


def record_job(
    con: duckdb.DuckDBPyConnection, kind: str, config: dict[str, Any], model_id: int | None
) -> int:
    """Store the config of a job that is not a run (sae-train, bench-run, bench-bpb)."""
    return int(
        con.execute(
            "INSERT INTO jobs (kind, model_id, config) VALUES (?, ?, ?) RETURNING job_id",
            [kind, model_id, json.dumps(config, default=str)],
        ).fetchone()[0]
    )
