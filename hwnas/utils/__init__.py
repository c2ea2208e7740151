"""Helpers every layer may use: atomic writes, digests and locks, timing, progress, executors."""
