"""The tests' short name for `xling.ingest.tiny` (the tiny seeded model, SAEs and corpus).

The builders live in the package so bench/ can use them without importing from tests/; test
modules written before the move import them from here.
"""

from xling.ingest.tiny import (
    build_tiny_model,
    build_tiny_saes,
    cldr_names,
    cldr_phrases,
    insert_phrases,
)

__all__ = ["build_tiny_model", "build_tiny_saes", "cldr_names", "cldr_phrases", "insert_phrases"]
