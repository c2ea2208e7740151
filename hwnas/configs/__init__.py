"""Configs shipped inside the package (the embedded default job)."""
