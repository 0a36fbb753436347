"""Pipelines that chain ingest, analysis and fine-tuning into one command."""
