"""Experiment files: the whole pipeline (compress → recover → capture → costs → analyze) from one TOML."""
