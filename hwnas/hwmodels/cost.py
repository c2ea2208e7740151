"""Predicted costs of an architecture: lookup-table latency, analytical energy, counts.

Memoized per canonical Arch, since the search asks for the same subnets many times.
"""
from __future__ import annotations

from typing import Any

from hwnas.hwmodels.graph import OpSig, count, op_graph
from hwnas.hwmodels.lut import LookupTable
from hwnas.spaces.dims import Arch


class CostModel:
    """``latency`` is an optional fitted latency predictor (``predict(graphs)``); without one the
    latency is the lookup-table sum, which is always reported as ``latency_table_ms`` too."""

    def __init__(self, space, lut: LookupTable, energy, latency=None):
        self.space, self.lut, self.energy, self.latency = space, lut, energy, latency
        self._cache: dict[Arch, dict[str, Any]] = {}

    def ops(self, arch: Arch) -> list[OpSig]:
        return op_graph(self.space.subnet_spec(arch))

    def costs(self, arch: Arch) -> dict[str, Any]:
        arch = self.space.validate(arch)
        cached = self._cache.get(arch)
        if cached is None:
            ops = self.ops(arch)
            interpolate = getattr(self.space, "interpolated_field", None)
            table_ms = self.lut.total_latency_ms(ops, interpolate)
            latency = table_ms if self.latency is None else float(self.latency.predict([ops])[0])
            cached = {"latency_ms": latency, "latency_table_ms": table_ms,
                      "energy_mj": self.energy.energy_mj(ops), **count(ops)}
            self._cache[arch] = cached
        return cached
