"""Build or refresh a measured device's lookup table for every op a space can produce, resumably.

The method (what ``hwnas profile`` and a search job's profile stage both run):

1. The space's covering subnets (which together contain every distinct op, see
   ``covering_archs``) are built as exported models with their initial weights.
2. Each is run ``warmup`` times, then ``repeats`` times with garbage collection paused and the
   device's thread count pinned; every op is timed *inside* the running network, between hooks on
   its module (see :mod:`hwnas.utils.timing` for why not alone). An entry is the median of its
   samples, with the interquartile range as its spread and the sample count as its repeats.
3. Only ops missing from the cached table of the same device fingerprint (processor, runtime,
   threads, batch) are measured; the table is saved atomically after every network by default
   (``flush_every``; a save costs milliseconds, a network's measurement far more), so a killed run
   continues where it stopped and measures again at most the network it was timing.
4. An entry whose spread exceeds ``max_spread`` x its median is re-measured, up to ``retries``
   more times on a network containing it, keeping the steadier measurement; if it stays that
   noisy it is kept and flagged ``high-spread``. A refresh (``hwnas profile``) retries flagged
   entries too.

The cached table is checked against the digest recorded when it was saved (see
:mod:`hwnas.hwmodels.lut`): one truncated or altered on disk is refused by name, never completed or
used. Two processes profiling the same device (two jobs, or a job and ``hwnas profile``) take turns
on a lock file beside the table (``FILE.csv.lock``): the second waits, then finds the first one's
entries cached and measures only what is still missing.
"""
from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from hwnas.hwmodels.lut import LookupTable
from hwnas.ir import OpSig
from hwnas.spaces.registry import op_graph, space_entry
from hwnas.utils.io import file_lock
from hwnas.utils.timing import summarize

HIGH_SPREAD = "high-spread"
REPROFILE = "delete it to profile the device again"


@dataclass
class ProfileResult:
    table: LookupTable
    path: Path
    measured: int      # entries measured in this run
    remeasured: int    # noisy entries measured again
    flagged: int       # entries still noisy after their retries
    networks: int      # networks run


def lut_path(cache_dir: str | Path, device) -> Path:
    return Path(cache_dir) / f"{device.name}-{device.fingerprint()}.csv"


def relative_spread(row: dict) -> float:
    return row["spread_ms"] / row["latency_ms"] if row["latency_ms"] > 0 else 0.0


def build_lookup_table(device, space, build_standalone: Callable, cache_dir: str | Path,
                       progress: Callable[[int, int], None] | None = None, flush_every: int = 1,
                       max_spread: float = 0.25, retries: int = 2, refresh: bool = False,
                       on_commit: Callable[[list[str]], None] | None = None) -> ProfileResult:
    """See the module docstring; ``on_commit(keys)`` is told the op keys each save made durable."""
    path = lut_path(cache_dir, device)
    with file_lock(path.with_name(path.name + ".lock"), blocking=True):
        return _build(device, space, build_standalone, path, progress, flush_every, max_spread, retries, refresh,
                      on_commit)


def _build(device, space, build_standalone: Callable, path: Path, progress: Callable[[int, int], None] | None,
           flush_every: int, max_spread: float, retries: int, refresh: bool,
           on_commit: Callable[[list[str]], None] | None = None) -> ProfileResult:
    if path.exists():
        table = LookupTable.load(path, require_digest=True, remedy=REPROFILE)
    else:
        table = LookupTable(device=device.describe())
    nets = [(spec, op_graph(spec)) for spec in (space.subnet_spec(a) for a in space.covering_archs())]
    todo = [(spec, ops) for spec, ops in nets if table.missing(ops)]
    total = len(nets)
    done = total - len(todo)
    if progress is not None:
        progress(done, total)

    uncommitted: list[str] = []

    def save() -> None:
        table.save(path, meta={"updated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                               "input_shape": list(space.input_shape), "max_spread": max_spread,
                               "flagged": sum(r["note"] == HIGH_SPREAD for r in table.entries.values())})
        if on_commit is not None and uncommitted:
            on_commit(list(uncommitted))
        uncommitted.clear()

    def run(spec, ops) -> dict[str, list[int]]:
        nonlocal done
        samples = device.time_ops(build_standalone(spec), ops, tuple(spec["input_shape"]))
        done += 1
        if progress is not None:
            progress(done, total)
        return samples

    measured = 0
    for i, (spec, ops) in enumerate(todo, start=1):
        missing = {op.key: op for op in table.missing(ops)}
        samples = run(spec, ops)
        for key, op in missing.items():
            median, spread = summarize(samples[key])
            table.add(op, median, spread, len(samples[key]))
            uncommitted.append(key)
            measured += 1
        if i % flush_every == 0:
            save()

    noisy = {k for k, r in table.entries.items() if r["repeats"] > 0 and relative_spread(r) > max_spread
             and (refresh or r["note"] != HIGH_SPREAD)}
    remeasured, runs = len(noisy), len(todo)
    for _ in range(retries):
        if not noisy:
            break
        chosen = _networks_covering(noisy, nets)
        total += len(chosen)
        for spec, ops in chosen:
            samples = run(spec, ops)
            runs += 1
            for op in {op.key: op for op in ops if op.key in noisy}.values():
                median, spread = summarize(samples[op.key])
                row = table.entries[op.key]
                if median > 0 and spread / median < relative_spread(row):
                    table.add(op, median, spread, len(samples[op.key]))
        noisy = {k for k in noisy if relative_spread(table.entries[k]) > max_spread}
    for key, row in table.entries.items():
        if row["repeats"] > 0:
            row["note"] = HIGH_SPREAD if relative_spread(row) > max_spread else ""
    if runs or not path.exists():
        save()
    flagged = sum(r["note"] == HIGH_SPREAD for r in table.entries.values())
    return ProfileResult(table, path, measured, remeasured, flagged, runs)


def _networks_covering(keys: set[str], nets: list[tuple[dict, list[OpSig]]]) -> list[tuple[dict, list[OpSig]]]:
    """A few networks that together contain every op of ``keys`` (greedy: most uncovered first)."""
    left, chosen = set(keys), []
    while left:
        best = max(nets, key=lambda n: len(left & {op.key for op in n[1]}))
        hit = left & {op.key for op in best[1]}
        if not hit:
            break
        chosen.append(best)
        left -= hit
    return chosen


def profile_device(device, space, space_type: str, workdir: Path, reporter, max_spread: float,
                   refresh: bool = False, on_commit: Callable[[list[str]], None] | None = None) -> ProfileResult:
    """Build or refresh a measured device's table in ``workdir/luts`` (see hwnas.hwmodels.profiler)."""
    build_standalone = space_entry(space_type).build_standalone
    with reporter.task(f"profile {device.name}", len(space.covering_archs())) as advance:
        return build_lookup_table(device, space, build_standalone, workdir / "luts",
                                  progress=lambda i, n: advance(i, total=n), max_spread=max_spread,
                                  refresh=refresh, on_commit=on_commit)
