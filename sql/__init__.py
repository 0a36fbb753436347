"""xling's SQL: append-only migrations and one view a file."""
