"""Build or refresh a measured device's lookup table for every op a space can produce, resumably.

The method (what ``hwnas profile`` and a search job's profile stage both run):

1. The space's covering subnets (which together contain every distinct op, see
   ``covering_archs``) are built as exported models with their initial weights; for every latency
   phase the caller names (an LM's prefill, see :class:`~hwnas.spaces.registry.LatencyPhase`) they
   are also timed as the phase runs them (:class:`~hwnas.hwmodels.phases.PhaseModel`), whose ops
   (the prefill's, on a prompt's tokens) join the same table.
2. They are timed in batches of ``batch_size`` networks, interleaved in rounds with the space's
   reference subnet (:func:`reference_arch`) in every round, each round corrected for the
   machine's speed (see :func:`hwnas.utils.timing.time_in_rounds`); every op is timed *inside*
   its running network, between hooks on its module (see :mod:`hwnas.utils.timing` for why not
   alone). An entry is the median of its corrected calls, with the interquartile range of its
   round medians as its spread and its timed calls as its repeats. The reference's baseline is
   saved with the table (``reference`` in its metadata): a job corrects every later
   measurement on the device to it, so the table and end-to-end figures share one speed.
3. Only ops missing from the cached table of the same device fingerprint (processor, runtime,
   threads, batch, method) are measured; the table is saved atomically after every batch by
   default (``flush_every``; a save costs milliseconds, a batch's measurement far more), so a
   killed run continues where it stopped and measures again at most the batch it was timing.
4. An entry whose spread exceeds ``max_spread`` x its median is re-measured, up to ``retries``
   more times on networks containing it, keeping the steadier measurement; if it stays that
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
from typing import Any, Callable, Mapping

import numpy as np

from hwnas.hwmodels.lut import LookupTable, read_meta
from hwnas.hwmodels.phases import PhaseModel
from hwnas.ir import OpSig
from hwnas.spaces.registry import LatencyPhase, op_graph, space_entry
from hwnas.utils.io import file_lock

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
    reference: dict | None = None  # the reference subnet ("arch") and the time ("ms") measurements are corrected to

    @property
    def reference_ms(self) -> float | None:
        return (self.reference or {}).get("ms")


def lut_path(cache_dir: str | Path, device) -> Path:
    return Path(cache_dir) / f"{device.name}-{device.fingerprint()}.csv"


def relative_spread(row: dict) -> float:
    return row["spread_ms"] / row["latency_ms"] if row["latency_ms"] > 0 else 0.0


def build_lookup_table(device, space, build_standalone: Callable, cache_dir: str | Path,
                       progress: Callable[[int, int], None] | None = None, flush_every: int = 1,
                       max_spread: float = 0.25, retries: int = 2, refresh: bool = False,
                       on_commit: Callable[[list[str]], None] | None = None, batch_size: int = 8,
                       phases: Mapping[str, LatencyPhase] | None = None) -> ProfileResult:
    """See the module docstring; ``on_commit(keys)`` is told the op keys each save made durable;
    ``phases``: the latency phases whose ops to measure too."""
    path = lut_path(cache_dir, device)
    with file_lock(path.with_name(path.name + ".lock"), blocking=True):
        return _build(device, space, build_standalone, path, progress, flush_every, max_spread, retries, refresh,
                      on_commit, batch_size, phases or {})


Network = tuple[dict[str, Any], list[OpSig], Callable[[], Any]]  # (subnet spec, its ops, builds the model timing them)


def covering_networks(space, build_standalone: Callable, phases: Mapping[str, LatencyPhase]) -> list[Network]:
    """The covering subnets as their op graph runs them, then as each phase runs them."""
    specs = [space.subnet_spec(a) for a in space.covering_archs()]
    nets: list[Network] = [(spec, op_graph(spec), lambda spec=spec: build_standalone(spec)) for spec in specs]
    for phase in phases.values():
        nets += [(spec, phase.op_graph(spec), lambda spec=spec, phase=phase: PhaseModel(build_standalone(spec), phase))
                 for spec in specs]
    return nets


def _build(device, space, build_standalone: Callable, path: Path, progress: Callable[[int, int], None] | None,
           flush_every: int, max_spread: float, retries: int, refresh: bool,
           on_commit: Callable[[list[str]], None] | None = None, batch_size: int = 8,
           phases: Mapping[str, LatencyPhase] | None = None) -> ProfileResult:
    if path.exists():
        table = LookupTable.load(path, require_digest=True, remedy=REPROFILE)
    else:
        table = LookupTable(device=device.describe())
    nets = covering_networks(space, build_standalone, phases or {})
    todo = [net for net in nets if table.missing(net[1])]
    total = len(nets)
    done = total - len(todo)
    if progress is not None:
        progress(done, total)

    uncommitted: list[str] = []
    reference = use_reference(device, space, build_standalone,
                              read_meta(path).get("reference", {}) if path.exists() else {})

    def save() -> None:
        table.save(path, meta={"updated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                               "input_shape": list(space.input_shape), "max_spread": max_spread,
                               "flagged": sum(r["note"] == HIGH_SPREAD for r in table.entries.values()),
                               "reference": {**reference, "ms": device.reference_baseline_ms}})
        if on_commit is not None and uncommitted:
            on_commit(list(uncommitted))
        uncommitted.clear()

    def run(batch: list[Network]) -> list[dict[str, tuple[float, float, int]]]:
        nonlocal done
        timed = device.time_op_networks([(build(), ops) for _, ops, build in batch], tuple(space.input_shape))
        done += len(batch)
        if progress is not None:
            progress(done, total)
        return timed

    measured = 0
    for i, batch in enumerate(_batches(todo, batch_size), start=1):
        for (_, ops, _), entries in zip(batch, run(batch)):
            for key, op in {op.key: op for op in table.missing(ops)}.items():
                table.add(op, *entries[key])
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
        for batch in _batches(chosen, batch_size):
            for (_, ops, _), entries in zip(batch, run(batch)):
                runs += 1
                for op in {op.key: op for op in ops if op.key in noisy}.values():
                    median, spread, repeats = entries[op.key]
                    row = table.entries[op.key]
                    if median > 0 and spread / median < relative_spread(row):
                        table.add(op, median, spread, repeats)
        noisy = {k for k in noisy if relative_spread(table.entries[k]) > max_spread}
    for key, row in table.entries.items():
        if row["repeats"] > 0:
            row["note"] = HIGH_SPREAD if relative_spread(row) > max_spread else ""
    if runs or not path.exists():
        save()
    flagged = sum(r["note"] == HIGH_SPREAD for r in table.entries.values())
    return ProfileResult(table, path, measured, remeasured, flagged, runs,
                         {**reference, "ms": device.reference_baseline_ms})


def reference_arch(space):
    """The subnet a measured device times in every round to see the machine's speed: a fixed one
    of the space (the first sampled with seed 0), so a table and later measurements agree on it."""
    return space.sample(np.random.default_rng(0))


def use_reference(device, space, build_standalone: Callable, recorded: dict) -> dict:
    """Make ``device`` time the space's reference subnet in every round, against the baseline
    ``recorded`` with its table (when the table was measured with the same reference)."""
    arch = reference_arch(space)
    baseline = recorded.get("ms") if recorded.get("arch") == arch.to_json() else None
    device.use_reference(build_standalone(space.subnet_spec(arch)), tuple(space.input_shape), baseline)
    return {"arch": arch.to_json()}


def _batches(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def _networks_covering(keys: set[str], nets: list[Network]) -> list[Network]:
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
                   refresh: bool = False, on_commit: Callable[[list[str]], None] | None = None,
                   phases: Mapping[str, LatencyPhase] | None = None) -> ProfileResult:
    """Build or refresh a measured device's table in ``workdir/luts`` (see hwnas.hwmodels.profiler)."""
    build_standalone = space_entry(space_type).build_standalone
    networks = len(space.covering_archs()) * (1 + len(phases or {}))
    with reporter.task(f"profile {device.name}", networks) as advance:
        return build_lookup_table(device, space, build_standalone, workdir / "luts",
                                  progress=lambda i, n: advance(i, total=n), max_spread=max_spread,
                                  refresh=refresh, on_commit=on_commit, phases=phases)
