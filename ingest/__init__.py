"""Corpus readers, model and SAE loading, hooks, pooling, the ingest runner."""
