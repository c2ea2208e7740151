"""Build or refresh a device's lookup table for every op a space can produce, resumably.

The profiler runs the space's covering subnets (which together contain every distinct op, see
``covering_archs``), built as exported models with their initial weights, and times each op in
place. Only ops missing from the cached table for the same device fingerprint are measured; the
table is saved (atomically) every ``flush_every`` networks, so a killed run continues where it
stopped.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from hwnas.hwmodels.graph import op_graph
from hwnas.hwmodels.lut import LookupTable
from hwnas.hwmodels.timing import summarize


def lut_path(cache_dir: str | Path, device) -> Path:
    return Path(cache_dir) / f"{device.name}-{device.fingerprint()}.csv"


def build_lookup_table(device, space, build_standalone: Callable, cache_dir: str | Path,
                       progress: Callable[[int, int], None] | None = None,
                       flush_every: int = 10) -> tuple[LookupTable, Path, int]:
    """Return (table, its path, number of entries measured now)."""
    path = lut_path(cache_dir, device)
    table = LookupTable.load(path) if path.exists() else LookupTable(device=device.describe())
    covering = space.covering_archs()
    networks = []
    for arch in covering:
        spec = space.subnet_spec(arch)
        ops = op_graph(spec)
        if table.missing(ops):
            networks.append((spec, ops))
    measured = 0
    for i, (spec, ops) in enumerate(networks, start=1):
        missing = {op.key: op for op in table.missing(ops)}
        samples = device.time_ops(build_standalone(spec), ops, tuple(spec["input_shape"]))
        for key, op in missing.items():
            median, spread = summarize(samples[key])
            table.add(op, median, spread, len(samples[key]))
            measured += 1
        if progress is not None:
            progress(len(covering) - len(networks) + i, len(covering))
        if i % flush_every == 0:
            table.save(path)
    if networks or not path.exists():
        table.save(path)
    return table, path, measured
