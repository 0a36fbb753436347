"""Whole-pipeline work that strings the layers below together: `demo` (corpus, SAEs, ingest,
tables in one call), the fine-tune round and the report: anything that drives ingest,
analysis and finetune in sequence, which none of them may import."""
