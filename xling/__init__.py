"""xling: a cross-lingual activation warehouse."""

__version__ = "0.1.0"
