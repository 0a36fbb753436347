"""Where applying a fine-tune went.

Applying an adapter or a steering recipe to a loaded model is part of loading it, so it lives
in ingest: `xling.ingest.models.ModelSpec.load()` (with `xling.ingest.adapters.apply_adapter`,
still importable from here, and `xling.ingest.steering`). The fine-tune round is pipeline
work: `xling.pipeline.round.run_round`.
"""

from __future__ import annotations

from xling.ingest.adapters import apply_adapter

__all__ = ["apply_adapter"]
