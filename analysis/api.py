"""Analysis methods of `Warehouse` (each returns a DataFrame; the CLI renders them)."""

from __future__ import annotations


class AnalysisMixin:
    """Mixed into `xling.warehouse.Warehouse`; methods call the query functions."""
