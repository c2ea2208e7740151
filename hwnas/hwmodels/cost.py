"""Predicted costs of an architecture: lookup-table latency, analytical energy, counts, memory.

Memoized per canonical Arch, since the search asks for the same subnets many times.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from hwnas.errors import LookupTableError
from hwnas.footprint import subnet_memory
from hwnas.hwmodels.lut import LookupTable
from hwnas.ir import OpSig, count
from hwnas.spaces.dims import Arch
from hwnas.spaces.registry import LatencyPhase, block_graph, op_graph, op_inputs


def cost_units(spec: dict[str, Any], table: LookupTable) -> list[OpSig]:
    """What a table prices a subnet by: its blocks for a block table (OFA-style), else its ops."""
    return block_graph(spec) if table.granularity == "block" else op_graph(spec)


def phase_units(name: str, phase: LatencyPhase, spec: dict[str, Any], table: LookupTable) -> list[OpSig]:
    """What a table prices a latency phase by: the phase's ops. A block table's rows are the blocks
    of one run of the op graph, which a phase's ops (an LM prefill's, on a prompt) are not."""
    if table.granularity == "block":
        raise LookupTableError(f"a block-granularity table prices the blocks of one inference, not the {name} "
                               "phase's ops; give an op table for this objective")
    return phase.op_graph(spec)


@dataclass(frozen=True)
class PhaseCost:
    """A latency phase as a :class:`CostModel` prices it: the table sum of its ops, or ``latency``
    (a predictor fitted on the phase's end-to-end measurements, ``predict(graphs)``)."""

    phase: LatencyPhase
    latency: Any = None


def fixed_op_counts(space) -> tuple[int, int]:
    """How many ops a subnet of ``space`` has before and after its blocks (0, 0 when the space
    has no block layout): what a table's ``head`` and ``tail`` rows price."""
    layout = space.block_layout() if hasattr(space, "block_layout") else None
    return (len(layout.leading), len(layout.trailing)) if layout is not None else (0, 0)


class CostModel:
    """``latency`` is an optional fitted latency predictor (``predict(graphs)``); without one the
    latency is the lookup-table sum, which is always reported as ``latency_table_ms`` too. Energy
    comes from the table when every row has one, else from ``energy`` (an analytical model).
    ``memory_kb`` and ``activation_kb`` are at ``batch_size``, the device's (see :mod:`hwnas.footprint`).
    Each of ``phases`` adds ``NAME_ms`` (and ``NAME_table_ms``), priced like ``latency_ms``."""

    def __init__(self, space, lut: LookupTable, energy, latency=None, batch_size: int = 1,
                 phases: Mapping[str, PhaseCost] | None = None):
        self.space, self.lut, self.energy, self.latency = space, lut, energy, latency
        self.batch_size = int(batch_size)
        self.phases = dict(phases or {})
        self._cache: dict[Arch, dict[str, Any]] = {}

    def ops(self, arch: Arch) -> list[OpSig]:
        return op_graph(self.space.subnet_spec(arch))

    def costs(self, arch: Arch) -> dict[str, Any]:
        arch = self.space.validate(arch)
        cached = self._cache.get(arch)
        if cached is None:
            spec = self.space.subnet_spec(arch)
            ops = op_graph(spec)
            units = cost_units(spec, self.lut)
            interpolate = getattr(self.space, "interpolated_field", None)
            priced, parts = self.lut.split_fixed(units, *fixed_op_counts(self.space))
            table_ms = self.lut.total_latency_ms(priced, interpolate) + sum(r["latency_ms"] for r in parts)
            latency = table_ms if self.latency is None else float(self.latency.predict([units])[0])
            energy = (self.lut.total_energy_mj(priced) + sum(r["energy_mj"] for r in parts) if self.lut.has_energy
                      else self.energy.energy_mj(ops))
            cached = {"latency_ms": latency, "latency_table_ms": table_ms, "energy_mj": energy, **count(ops),
                      **subnet_memory(ops, op_inputs(spec, ops), self.batch_size)}
            for name, priced in self.phases.items():
                graph = phase_units(name, priced.phase, spec, self.lut)
                phase_ms = self.lut.total_latency_ms(graph, interpolate)
                cached[f"{name}_table_ms"] = phase_ms
                cached[f"{name}_ms"] = phase_ms if priced.latency is None else float(priced.latency.predict([graph])[0])
            self._cache[arch] = cached
        return cached
