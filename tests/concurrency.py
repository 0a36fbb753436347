"""What the tests that run a second process beside an ingest share."""

from __future__ import annotations

from pathlib import Path

import duckdb


def committed_chunks(db: Path) -> int | None:
    """Chunks committed to `db` so far, read as another process's reader would; None while
    the file is held (an ingest committing)."""
    try:
        con = duckdb.connect(str(db), read_only=True)
    except duckdb.IOException:
        return None
    try:
        return con.execute("SELECT count(*) FROM run_chunks").fetchone()[0]
    finally:
        con.close()
