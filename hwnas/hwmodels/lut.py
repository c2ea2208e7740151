"""Lookup tables: per-op latency (and optionally energy) on one device.

The schema (CSV, or JSON ``{"device": {...}, "entries": [row, ...]}``; a CSV keeps its device
metadata in a JSON file beside it) has one row per op signature:

- signature columns, the fields of :class:`~hwnas.ir.OpSig`: ``kind`` (required), ``cin``,
  ``h``, ``w``, ``cout``, ``kernel``, ``stride``, ``groups``, ``wbits``, ``abits``, ``act``, ``act_signed``,
  ``op`` (mult, shift or adder; an absent column means mult), ``mid`` (the expanded width of an
  ``mbconv`` block; absent means 0). A blank cell, or an absent column, is a wildcard that matches any
  value, for tables measured by tools that do not record a field (an OFA table has no bit-widths);
- ``latency_ms`` (required), and optionally ``energy_mj``, ``spread_ms`` (interquartile range of the
  repeats), ``repeats`` and ``note`` (``high-spread``: the spread stayed high after re-measuring;
  ``interpolated``: estimated from neighbouring entries, not measured);
- ``key``, the signature as a string, written for readers and ignored on load.

An op is priced by its exact row, else by the matching wildcard row that fixes the most fields.
A subnet's latency is the sum over its ops (or its blocks, for a table of ``mbconv`` rows, see
:attr:`LookupTable.granularity`). A missing op is an error that names it, unless its latency is
asked to be estimated from neighbours (:meth:`LookupTable.estimate`).

Integrity: :meth:`LookupTable.save` records the sha256 of every file it writes in ``FILE.sha256``
beside it (the CSV and its metadata JSON each have one; see
:func:`~hwnas.utils.io.atomic_path_with_digest`) and marks the metadata with
``"hwnas_digest": "sha256"``. :meth:`LookupTable.load` checks a table against its digest whenever
one exists or the metadata says one was written, and always when the caller requires it (the
profiler's cache, an imported table device in a job), so a table truncated or altered on disk is
refused by name. A table the user wrote by hand (``device.table``, a file to import) has neither and
is read as it is: it is the user's input, not an artifact hwnas recorded.
"""
from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from hwnas.errors import LookupTableError, TableIntegrityError
from hwnas.ir import OpSig, signature_key
from hwnas.utils.io import atomic_path_with_digest, has_digest, verify_digest, write_json_with_digest

SIG_COLUMNS = [f.name for f in fields(OpSig)]
FIXED_PARTS = ("head", "tail")  # kinds of rows pricing a network's fixed ops together (see fixed_parts)
SIG_DEFAULTS = {"op": "mult", "mid": 0}  # an absent column of these means the default, not a wildcard
VALUE_COLUMNS = ["latency_ms", "energy_mj", "spread_ms", "repeats", "note"]
INT_FIELDS = {f.name for f in fields(OpSig) if f.type == "int"}
INTERPOLABLE = ("h", "cout", "cin", "mid")  # fields a missing op may be interpolated along, in order
DIGEST_MARK = {"hwnas_digest": "sha256"}  # in a table's metadata: its files have FILE.sha256 digests
RECOMPUTE = "delete it (and the .json beside a .csv) and profile the device or import the table again"


@dataclass
class LookupTable:
    device: dict[str, Any]
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    _index: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __contains__(self, op: OpSig) -> bool:
        return self.entry(op) is not None

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, op: OpSig, latency_ms: float, spread_ms: float = 0.0, repeats: int = 0,
            energy_mj: float | None = None, note: str = "") -> None:
        self.add_row({**op.to_row(), "latency_ms": latency_ms, "spread_ms": spread_ms, "repeats": repeats,
                      "energy_mj": energy_mj, "note": note})

    def add_row(self, row: dict[str, Any]) -> None:
        """Add (or replace) a row whose signature fields may be None (wildcards)."""
        sig = {k: row.get(k) for k in SIG_COLUMNS}
        if sig["kind"] is None:
            raise LookupTableError("a lookup-table row needs its op kind")
        energy = row.get("energy_mj")
        self.entries[signature_key(sig)] = {
            **sig, "latency_ms": float(row["latency_ms"]), "spread_ms": float(row.get("spread_ms") or 0.0),
            "repeats": int(row.get("repeats") or 0), "energy_mj": None if energy is None else float(energy),
            "note": str(row.get("note") or "")}
        self._index.clear()

    # -- lookup --------------------------------------------------------------------------------
    def entry(self, op: OpSig) -> dict[str, Any] | None:
        """The op's exact row, else the matching wildcard row fixing the most fields."""
        found = self.entries.get(op.key)
        if found is not None:
            return found
        for names, rows in self._patterns():
            found = rows.get(tuple(getattr(op, n) for n in names))
            if found is not None:
                return found
        return None

    def _patterns(self) -> list[tuple[tuple[str, ...], dict[tuple, dict]]]:
        if "patterns" not in self._index:
            groups: dict[tuple[str, ...], dict[tuple, dict]] = {}
            for row in self.entries.values():
                names = tuple(k for k in SIG_COLUMNS if row[k] is not None)
                if len(names) < len(SIG_COLUMNS):
                    groups.setdefault(names, {}).setdefault(tuple(row[n] for n in names), row)
            self._index["patterns"] = sorted(groups.items(), key=lambda kv: (-len(kv[0]), kv[0]))
        return self._index["patterns"]

    def latency_ms(self, op: OpSig, interpolate: str | None = None) -> float:
        """The op's entry; with ``interpolate`` naming a field (the ViT's token count ``h``), a
        missing op is priced linearly between the measured ops that differ from it only there."""
        found = self.entry(op)
        if found is not None:
            return found["latency_ms"]
        if interpolate is not None:
            estimate = self._interpolate(op, interpolate)
            if estimate is not None:
                return estimate
        raise LookupTableError(f"lookup table for {self.device.get('name', '?')} has no entry for op {op.key}")

    def total_latency_ms(self, ops: Iterable[OpSig], interpolate: str | None = None) -> float:
        return sum(self.latency_ms(op, interpolate) for op in ops)

    @property
    def has_energy(self) -> bool:
        """Whether every row gives an energy, so the table, not a model, prices energy."""
        if "has_energy" not in self._index:
            self._index["has_energy"] = bool(self.entries) and all(
                r["energy_mj"] is not None for r in self.entries.values())
        return self._index["has_energy"]

    def total_energy_mj(self, ops: Iterable[OpSig]) -> float:
        total = 0.0
        for op in ops:
            found = self.entry(op)
            if found is None or found["energy_mj"] is None:
                raise LookupTableError(f"lookup table for {self.device.get('name', '?')} has no energy for op {op.key}")
            total += found["energy_mj"]
        return total

    @property
    def granularity(self) -> str:
        """``block`` when the table prices whole inverted-residual blocks (OFA-style), else ``op``."""
        if "granularity" not in self._index:
            self._index["granularity"] = "block" if any(r["kind"] == "mbconv" for r in self.entries.values()) else "op"
        return self._index["granularity"]

    def missing(self, ops: Iterable[OpSig]) -> list[OpSig]:
        return [op for op in ops if self.entry(op) is None]

    # -- fixed parts ---------------------------------------------------------------------------
    def fixed_parts(self) -> dict[str, dict[str, Any]]:
        """Rows of kind ``head`` and ``tail``: one figure for all of a network's fixed ops before
        (the stem) or after (head conv, pooling, classifier) its searched blocks, as tables measured
        on fixed backbones give them (APQ's BitFusion table)."""
        if "fixed" not in self._index:
            self._index["fixed"] = {r["kind"]: r for r in self.entries.values() if r["kind"] in FIXED_PARTS}
        return self._index["fixed"]

    def split_fixed(self, units: list[OpSig], leading: int, trailing: int) -> tuple[list[OpSig], list[dict[str, Any]]]:
        """The units priced one by one, and the fixed-part rows that price the ``leading`` first and
        ``trailing`` last units instead, where the table has them."""
        parts, rows = self.fixed_parts(), []
        if "head" in parts and leading:
            units, rows = units[leading:], [*rows, parts["head"]]
        if "tail" in parts and trailing:
            units, rows = units[:len(units) - trailing], [*rows, parts["tail"]]
        return units, rows

    # -- estimates -----------------------------------------------------------------------------
    def estimate(self, op: OpSig) -> tuple[float, str] | None:
        """(latency, how) for a missing op, interpolated linearly along the first field of
        :data:`INTERPOLABLE` that has two or more exact rows differing from the op only there."""
        for name in INTERPOLABLE:
            value = self._interpolate(op, name)
            if value is not None:
                return value, f"interpolated along {name}"
        return None

    def _interpolate(self, op: OpSig, field_name: str) -> float | None:
        index = self._index.get(("along", field_name))
        if index is None:
            index = self._index[("along", field_name)] = _index_by(self.entries, field_name)
        points = index.get(_without(op.to_row(), field_name))
        if not points or len(points) < 2:
            return None
        xs = np.array([p[0] for p in points], dtype=float)
        ys = np.array([p[1] for p in points], dtype=float)
        x = float(getattr(op, field_name))
        lo = int(np.clip(np.searchsorted(xs, x) - 1, 0, len(xs) - 2))  # extrapolates from the end pairs
        slope = (ys[lo + 1] - ys[lo]) / (xs[lo + 1] - xs[lo])
        return max(float(ys[lo] + slope * (x - xs[lo])), 0.0)

    # -- files ---------------------------------------------------------------------------------
    def rows(self) -> list[dict[str, Any]]:
        return [{"key": k, **row} for k, row in sorted(self.entries.items())]

    def save(self, path: str | Path, meta: dict[str, Any] | None = None) -> None:
        """A ``.json`` path gets the JSON schema; any other a CSV with its metadata JSON beside."""
        path = Path(path)
        extra = {**(meta or {}), **DIGEST_MARK}
        if path.suffix == ".json":
            write_json_with_digest(path, {"device": self.device, **extra, "entries": self.rows()})
            return
        frame = pd.DataFrame(self.rows(), columns=["key", *SIG_COLUMNS, *VALUE_COLUMNS])
        with atomic_path_with_digest(path) as tmp:
            frame.to_csv(tmp, index=False)
        write_json_with_digest(meta_path(path), {"device": self.device, **extra, "entries": len(self.entries)})

    @classmethod
    def load(cls, path: str | Path, require_digest: bool = False, remedy: str = RECOMPUTE) -> "LookupTable":
        """The table at ``path``, checked against its digest (see the module docstring);
        ``require_digest`` for a table hwnas wrote, which must have one. ``remedy`` ends the
        message of any error (what to do about the file)."""
        path = Path(path)
        try:
            return cls._load(path, require_digest, remedy)
        except TableIntegrityError:
            raise
        except LookupTableError as exc:
            if not require_digest:
                raise
            raise type(exc)(f"{exc}; {remedy}") from None

    @classmethod
    def _load(cls, path: Path, require_digest: bool, remedy: str) -> "LookupTable":
        if not path.exists():
            raise LookupTableError(f"lookup table {path} does not exist")
        data = _read_bytes(path)
        if path.suffix == ".json":
            device, records, tree = _read_json_table(path, data)
            marked = _marked(tree)
            columns = set().union(*(r.keys() for r in records)) if records else set()
        else:
            frame = _read_csv(path, data)
            records, columns = frame.to_dict("records"), set(frame.columns)
            meta = read_meta(path)
            device, marked = meta.get("device", {}), _marked(meta)
        for required in ("kind", "latency_ms"):
            if required not in columns:
                raise LookupTableError(f"lookup table {path} lacks column {required!r}")
        table = cls(device=device)
        for i, record in enumerate(records, start=2 if path.suffix != ".json" else 1):
            where = f"lookup table {path} {'line' if path.suffix != '.json' else 'entry'} {i}"
            row = parse_row(record, where)
            key = signature_key(row)
            if key in table.entries:
                raise LookupTableError(f"{where}: duplicate entry {key}")
            table.add_row(row)
        # after parsing, so that a file that does not even parse says where; before any use
        verify_digest(path, what="lookup table", remedy=remedy, data=data,
                      required=require_digest or marked or has_digest(path), error=TableIntegrityError)
        return table


def verify_table_file(path: Path, remedy: str = RECOMPUTE) -> None:
    """Check a table hwnas wrote, and its metadata, against their digests (both required)."""
    path = Path(path)
    verify_digest(path, what="lookup table", remedy=remedy, error=TableIntegrityError)
    if path.suffix != ".json":
        verify_digest(meta_path(path), what="lookup table metadata", remedy=remedy, error=TableIntegrityError)


def _marked(tree: dict[str, Any]) -> bool:
    return all(tree.get(k) == v for k, v in DIGEST_MARK.items())


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise LookupTableError(f"lookup table {path} is unreadable: {str(exc).splitlines()[0]}") from None


def parse_row(record: dict[str, Any], where: str) -> dict[str, Any]:
    """A schema row from a CSV or JSON record: typed signature fields (None for a wildcard) and
    checked values; an error names the place and the field."""
    row: dict[str, Any] = {}
    for name in SIG_COLUMNS:
        value = record.get(name, SIG_DEFAULTS.get(name))
        if _blank(value):
            row[name] = None
            continue
        try:
            if name in INT_FIELDS:
                number = float(value)
                if not number.is_integer():
                    raise ValueError
                row[name] = int(number)
            elif name == "act_signed":
                text = str(value).strip().lower()
                if text not in ("true", "false", "1", "0", "1.0", "0.0"):
                    raise ValueError
                row[name] = text in ("true", "1", "1.0")
            else:
                row[name] = _text(value, name, where)
        except (TypeError, ValueError):
            raise LookupTableError(f"{where}: {name} {value!r} is not a valid value") from None
    if row["kind"] is None:
        raise LookupTableError(f"{where}: kind is empty")
    for name in ("latency_ms", "energy_mj", "spread_ms"):
        value = record.get(name)
        if _blank(value):
            if name == "latency_ms":
                raise LookupTableError(f"{where}: latency_ms is empty")
            row[name] = None
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = float("nan")
        if not math.isfinite(number) or number < 0:
            raise LookupTableError(f"{where}: {name} {value!r} is not a non-negative number")
        row[name] = number
    try:
        row["repeats"] = 0 if _blank(record.get("repeats")) else int(float(record["repeats"]))
    except (TypeError, ValueError, OverflowError):
        raise LookupTableError(f"{where}: repeats {record['repeats']!r} is not a whole number") from None
    row["note"] = "" if _blank(record.get("note")) else _text(record["note"], "note", where)
    return row


FORMULA_PREFIXES = ("=", "+", "-", "@")  # what makes a spreadsheet evaluate a cell (CSV injection)


def _text(value: Any, name: str, where: str) -> str:
    """A text cell, refused when a spreadsheet would run it as a formula: tables are saved again
    as CSV (the job's lut.csv) that people open in spreadsheets."""
    text = str(value)
    if text.lstrip().startswith(FORMULA_PREFIXES):
        raise LookupTableError(f"{where}: {name} {text!r} looks like a spreadsheet formula; refused")
    return text


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or (
        isinstance(value, str) and value.strip() in ("", "*"))


def _read_csv(path: Path, data: bytes) -> pd.DataFrame:
    try:
        # Only an empty cell is blank: a cell reading "nan", "NA" or "null" is a value and is refused as
        # one (pandas' default reads it as blank: a wildcard, or an "empty" latency).
        return pd.read_csv(io.BytesIO(data), dtype={"key": str, "kind": str, "act": str, "op": str, "note": str,
                                         "act_signed": str}, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as exc:
        raise LookupTableError(f"lookup table {path} is unreadable: {str(exc).splitlines()[0]}") from None


def _read_json_table(path: Path, data: bytes) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    try:
        tree = json.loads(data.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, OSError, RecursionError) as exc:  # RecursionError: absurd nesting
        raise LookupTableError(f"lookup table {path} is unreadable: {str(exc).splitlines()[0]}") from None
    if not isinstance(tree, dict) or not isinstance(tree.get("entries"), list) or not all(
            isinstance(r, dict) for r in tree["entries"]):
        raise LookupTableError(f"lookup table {path}: expected {{\"device\": {{...}}, \"entries\": [rows]}}")
    device = tree.get("device") or {}
    if not isinstance(device, dict):
        raise LookupTableError(f"lookup table {path}: device must be a mapping")
    return device, tree["entries"], tree


def meta_path(csv_path: Path) -> Path:
    return Path(csv_path).with_suffix(".json")


def read_meta(path: Path) -> dict[str, Any]:
    """The metadata of a table: the JSON beside a CSV, or a JSON table's own keys but its rows;
    checked against its digest when it has one or says it has."""
    path = Path(path)
    source = path if path.suffix == ".json" else meta_path(path)
    if not source.exists():
        return {}
    try:
        data = source.read_bytes()
        tree = json.loads(data.decode("utf-8"))
        if not isinstance(tree, dict) or not isinstance(tree.get("device", {}), dict):
            raise TypeError
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError, RecursionError, OSError):
        raise LookupTableError(f"lookup table metadata {source} is unreadable") from None
    verify_digest(source, what="lookup table metadata", remedy=RECOMPUTE, data=data,
                  required=_marked(tree) or has_digest(source), error=TableIntegrityError)
    return {k: v for k, v in tree.items() if not (k == "entries" and isinstance(v, list))}


def _without(row: dict[str, Any], field_name: str) -> tuple:
    return tuple((k, row[k]) for k in SIG_COLUMNS if k != field_name)


def _index_by(entries: dict[str, dict[str, Any]], field_name: str) -> dict[tuple, list[tuple[float, float]]]:
    """Exact rows grouped by every signature field but one, sorted along that one."""
    groups: dict[tuple, list[tuple[float, float]]] = {}
    for row in entries.values():
        if any(row[k] is None for k in SIG_COLUMNS):
            continue
        groups.setdefault(_without(row, field_name), []).append((float(row[field_name]), row["latency_ms"]))
    return {k: sorted(v) for k, v in groups.items()}
