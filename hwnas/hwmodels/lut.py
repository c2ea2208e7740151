"""Lookup tables: per-op latency on one device, as CSV with a JSON of device metadata beside it.

Columns: ``key`` (the op signature string), the :class:`~hwnas.hwmodels.graph.OpSig` fields,
``latency_ms`` (median), ``spread_ms`` (interquartile range) and ``repeats``. The predicted
latency of a subnet is the sum of its ops' entries; a missing op is an error that names it.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from hwnas.errors import LookupTableError
from hwnas.hwmodels.graph import OpSig
from hwnas.utils.io import atomic_path, write_json_atomic

SIG_COLUMNS = [f.name for f in fields(OpSig)]
VALUE_COLUMNS = ["latency_ms", "spread_ms", "repeats"]


@dataclass
class LookupTable:
    device: dict[str, Any]
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    _neighbours: dict[str, tuple[int, dict]] = field(default_factory=dict, repr=False, compare=False)

    def __contains__(self, op: OpSig) -> bool:
        return op.key in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, op: OpSig, latency_ms: float, spread_ms: float, repeats: int) -> None:
        self.entries[op.key] = {**op.to_row(), "latency_ms": float(latency_ms),
                                "spread_ms": float(spread_ms), "repeats": int(repeats)}

    def latency_ms(self, op: OpSig, interpolate: str | None = None) -> float:
        """The op's entry; with ``interpolate`` naming a field (the ViT's token count ``h``), a
        missing op is priced linearly between the measured ops that differ from it only there."""
        entry = self.entries.get(op.key)
        if entry is not None:
            return entry["latency_ms"]
        if interpolate is not None:
            estimate = self._interpolate(op, interpolate)
            if estimate is not None:
                return estimate
        raise LookupTableError(f"lookup table for {self.device.get('name', '?')} has no entry for op {op.key}")

    def total_latency_ms(self, ops: Iterable[OpSig], interpolate: str | None = None) -> float:
        return sum(self.latency_ms(op, interpolate) for op in ops)

    def _interpolate(self, op: OpSig, field_name: str) -> float | None:
        index = self._neighbours.get(field_name)
        if index is None or index[0] != len(self.entries):
            index = (len(self.entries), _index_by(self.entries, field_name))
            self._neighbours[field_name] = index
        points = index[1].get(_without(op.to_row(), field_name))
        if not points or len(points) < 2:
            return None
        xs = np.array([p[0] for p in points], dtype=float)
        ys = np.array([p[1] for p in points], dtype=float)
        x = float(getattr(op, field_name))
        lo = int(np.clip(np.searchsorted(xs, x) - 1, 0, len(xs) - 2))  # extrapolates from the end pairs
        slope = (ys[lo + 1] - ys[lo]) / (xs[lo + 1] - xs[lo])
        return max(float(ys[lo] + slope * (x - xs[lo])), 0.0)

    def missing(self, ops: Iterable[OpSig]) -> list[OpSig]:
        return [op for op in ops if op.key not in self.entries]

    # -- files -------------------------------------------------------------------------------
    def save(self, csv_path: str | Path) -> None:
        csv_path = Path(csv_path)
        frame = pd.DataFrame([{"key": k, **row} for k, row in sorted(self.entries.items())],
                             columns=["key", *SIG_COLUMNS, *VALUE_COLUMNS])
        with atomic_path(csv_path) as tmp:
            frame.to_csv(tmp, index=False)
        write_json_atomic(meta_path(csv_path), {"device": self.device, "entries": len(self.entries)})

    @classmethod
    def load(cls, csv_path: str | Path) -> "LookupTable":
        csv_path = Path(csv_path)
        try:
            frame = pd.read_csv(csv_path, dtype={"key": str, "kind": str, "act": str})
        except FileNotFoundError:
            raise LookupTableError(f"lookup table {csv_path} does not exist") from None
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as exc:
            raise LookupTableError(f"lookup table {csv_path} is unreadable: {str(exc).splitlines()[0]}") from None
        missing = [c for c in ["key", *SIG_COLUMNS, "latency_ms"] if c not in frame.columns]
        if missing:
            raise LookupTableError(f"lookup table {csv_path} lacks column {missing[0]!r}")
        device: dict[str, Any] = {}
        meta = meta_path(csv_path)
        if meta.exists():
            try:
                device = json.loads(meta.read_text())["device"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise LookupTableError(f"lookup table metadata {meta} is unreadable") from None
        table = cls(device=device)
        for i, row in enumerate(frame.to_dict("records"), start=2):
            try:
                op = OpSig.from_row(row)
                latency = float(row["latency_ms"])
            except (ValueError, TypeError, KeyError):
                raise LookupTableError(f"lookup table {csv_path} line {i}: malformed entry") from None
            if not math.isfinite(latency) or latency < 0:
                raise LookupTableError(f"lookup table {csv_path} line {i}: latency_ms {row['latency_ms']!r} "
                                       "is not a non-negative number")
            if op.key in table.entries:
                raise LookupTableError(f"lookup table {csv_path} line {i}: duplicate entry {op.key}")
            spread = row.get("spread_ms", 0.0)
            table.add(op, latency, 0.0 if pd.isna(spread) else float(spread), int(row.get("repeats", 0) or 0))
        return table


def meta_path(csv_path: Path) -> Path:
    return csv_path.with_suffix(".json")


def _without(row: dict[str, Any], field_name: str) -> tuple:
    return tuple((k, row[k]) for k in SIG_COLUMNS if k != field_name)


def _index_by(entries: dict[str, dict[str, Any]], field_name: str) -> dict[tuple, list[tuple[float, float]]]:
    """Entries grouped by every signature field but one, sorted along that one."""
    groups: dict[tuple, list[tuple[float, float]]] = {}
    for row in entries.values():
        groups.setdefault(_without(row, field_name), []).append((float(row[field_name]), row["latency_ms"]))
    return {k: sorted(v) for k, v in groups.items()}
