"""The device registry: measured, table and analytical devices, chosen by name.

A device answers what it is (:meth:`describe`, recorded with every table and export) and how long
a network takes. A *measured* device (``local-cpu``, ``local-cpu-torchscript``) times each op of a
network for its lookup table (:meth:`time_ops`) and whole models for real evaluation
(:meth:`time_model`), on the fixed layers the exporter builds; see :mod:`hwnas.utils.timing`
for the method. A *table* device prices ops from a lookup table measured elsewhere, and an
*analytical* one from a roofline model; neither measures, so their latency is their prediction.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable, Mapping

from hwnas.errors import ConfigError, LookupTableError
from hwnas.hwmodels.cost import cost_units, fixed_op_counts, phase_units
from hwnas.hwmodels.local_cpu import LocalCPU
from hwnas.hwmodels.lut import LookupTable, read_meta
from hwnas.hwmodels.roofline import RooflineModel
from hwnas.hwmodels.torchscript import TorchScriptCPU
from hwnas.ir import OpSig
from hwnas.spaces.registry import LatencyPhase
from hwnas.utils.io import stable_hash


class AnalyticalDevice:
    """Hardware described by a roofline model: costs are computed, never measured."""

    kind = "analytical"
    measures = False  # real evaluation measures accuracy; latency stays the model's prediction

    def __init__(self, config, model: RooflineModel):
        self.config, self.model, self.name = config, model, model.spec.name
        self.energy = model.energy

    def describe(self) -> dict[str, Any]:
        return {**self.model.describe(), "batch_size": 1}

    def fingerprint(self) -> str:
        return stable_hash(self.describe())

    def lookup_table(self, space, phases: Mapping[str, LatencyPhase] | None = None) -> LookupTable:
        """Every op of the space (and of its ``phases``) priced by the model (what a measured
        device's profiler measures)."""
        table = LookupTable(device=self.describe())
        for op in space_units(space, table, phases):
            table.add(op, 1e3 * self.model.op_seconds(op), 0.0, 0)
        return table


def space_units(space, table: LookupTable, phases: Mapping[str, LatencyPhase] | None = None) -> list[OpSig]:
    """Every distinct costed unit (op, or block for a block table) of the space's subnets, but the
    fixed ops a table's ``head`` and ``tail`` entries price; then every op of the latency
    ``phases`` (see :func:`~hwnas.hwmodels.cost.phase_units`)."""
    units: dict[str, OpSig] = {}
    fixed = fixed_op_counts(space)
    for arch in space.covering_archs():
        spec = space.subnet_spec(arch)
        for op in table.split_fixed(cost_units(spec, table), *fixed)[0]:
            units.setdefault(op.key, op)
        for name, phase in (phases or {}).items():
            for op in phase_units(name, phase, spec, table):
                units.setdefault(op.key, op)
    return list(units.values())


class TableDevice:
    """A device known by a lookup table measured elsewhere (see :mod:`hwnas.hwmodels.lut` for the
    schema and ``hwnas import-table`` for the OFA and bit-width formats). Its energy comes from the
    table when every row has one, else from the configured energy model."""

    kind = "table"
    measures = False

    def __init__(self, config, path: Path):
        self.config, self.path = config, Path(path)
        self.table = LookupTable.load(self.path)
        declared = self.table.device.get("name")
        if declared and declared != config.name:
            raise ConfigError(f"device.name {config.name!r} does not match the name {declared!r} in {self.path}")
        self.name = config.name
        self.energy = None

    def describe(self) -> dict[str, Any]:
        return {**self.table.device, "name": self.name, "kind": self.kind, "table": str(self.path),
                "granularity": self.table.granularity, "entries": len(self.table)}

    def fingerprint(self) -> str:
        return stable_hash({**self.describe(), "rows": self.table.rows()})

    def lookup_table(self, space, phases: Mapping[str, LatencyPhase] | None = None) -> LookupTable:
        """The table, checked to price every op the space (and its latency ``phases``) can produce.
        A missing op is an error naming it; with ``device.interpolate_missing`` it is estimated from
        its neighbours, marked ``interpolated`` and warned about."""
        table = LookupTable(device=self.describe(), entries=dict(self.table.entries))
        missing = [op for op in space_units(space, table, phases) if op not in table]
        if missing and not self.config.interpolate_missing:
            raise LookupTableError(
                f"table device {self.name} ({self.path}) has no entry for op {missing[0].key}"
                + (f" nor for {len(missing) - 1} more ops of the space" if len(missing) > 1 else "")
                + f"; add {'rows for them' if len(missing) > 1 else 'a row for it'} (a row with blank fields "
                  "matches any value) or set device.interpolate_missing: true")
        for op in missing:
            estimate = table.estimate(op)
            if estimate is None:
                raise LookupTableError(f"table device {self.name}: op {op.key} is missing and has no two entries "
                                       "that differ from it in one size only to interpolate between")
            table.add(op, estimate[0], note="interpolated")
            warnings.warn(f"table device {self.name}: op {op.key} is not in the table; {estimate[1]}: "
                          f"{estimate[0]:.4g} ms", stacklevel=2)
        return table


def _torchscript_cpu(config):
    return TorchScriptCPU(config)


SHIPPED_DEVICES = Path(__file__).resolve().parents[1] / "devices"
DEVICES: dict[str, Callable[[Any], Any]] = {"local-cpu": LocalCPU, "local-cpu-torchscript": _torchscript_cpu}
TABLE_SUFFIXES = (".csv", ".json")


def register_device(name: str, factory: Callable[[Any], Any]) -> None:
    DEVICES[name] = factory


def shipped_specs() -> dict[str, Path]:
    return {p.stem: p for p in sorted(SHIPPED_DEVICES.glob("*.yaml"))}


def tables_dir(workdir: str | Path) -> Path:
    """Where ``hwnas import-table`` puts table devices, which configs then name by name."""
    return Path(workdir) / "devices"


def find_table(name: str, workdir: str | Path | None) -> Path | None:
    if workdir is None or Path(name).name != name or name in (".", ".."):
        return None  # a device name, not a path: "../x" must not read a table outside tables_dir
    for suffix in TABLE_SUFFIXES:
        path = tables_dir(workdir) / f"{name}{suffix}"
        if path.exists():
            return path
    return None


def build_device(config, workdir: str | Path | None = None):
    """A built-in device, a shipped analytical one, a table device imported into ``workdir``, or
    the one ``device.spec`` (a roofline YAML) or ``device.table`` (a lookup table) describes."""
    if config.spec is not None and config.table is not None:
        raise ConfigError("device.spec and device.table: give one, a roofline model or a lookup table")
    if config.table is not None:
        return TableDevice(config, Path(config.table))
    if config.spec is not None:
        model = RooflineModel.from_yaml(config.spec)
        if model.spec.name != config.name:
            raise ConfigError(f"device.name {config.name!r} does not match the name {model.spec.name!r} "
                              f"in {config.spec}")
        return AnalyticalDevice(config, model)
    if config.name in DEVICES:
        return DEVICES[config.name](config)
    if config.name in shipped_specs():
        return AnalyticalDevice(config, RooflineModel.from_yaml(shipped_specs()[config.name]))
    table = find_table(config.name, workdir)
    if table is not None:
        return TableDevice(config, table)
    known = sorted(DEVICES) + sorted(shipped_specs()) + [p.stem for p in _table_files(workdir)]
    raise ConfigError(f"device.name: unknown device {config.name!r}; known: {known} (or give device.spec "
                      "or device.table)")


def _table_files(workdir: str | Path | None) -> list[Path]:
    if workdir is None or not tables_dir(workdir).is_dir():
        return []
    return sorted(p for p in tables_dir(workdir).iterdir() if p.suffix in TABLE_SUFFIXES
                  and not (p.suffix == ".json" and p.with_suffix(".csv").exists()))


def list_devices(config, workdir: str | Path | None = None) -> list[dict[str, Any]]:
    """Every device a config can name: the built-in measured ones (with the date of their newest
    lookup table in ``workdir``), the shipped analytical ones and the table devices in ``workdir``."""
    rows = []
    for name, factory in DEVICES.items():
        d = factory(config.model_copy(update={"name": name})).describe()
        profiled = [read_meta(p) for p in sorted((Path(workdir) / "luts").glob(f"{name}-*.csv"))] if workdir else []
        dates = sorted(m.get("updated", "") for m in profiled if m)
        rows.append({"name": name, "kind": d["kind"], "processor": d["processor"],
                     "runtime": f"{d['runtime']} {d['runtime_version']}", "threads": d["threads"],
                     "batch": d["batch_size"], "input": "any", "date": dates[-1][:10] if dates else "-",
                     "about": f"{len(profiled)} profiled table(s)" if profiled else "measured on this machine"})
    for name, path in shipped_specs().items():
        model = RooflineModel.from_yaml(path)
        rows.append({"name": name, "kind": "analytical", "processor": model.spec.name, "runtime": "roofline model",
                     "threads": "-", "batch": 1, "input": "any", "date": "-", "about": model.spec.description})
    for path in _table_files(workdir):
        try:
            meta = read_meta(path).get("device", {})
        except LookupTableError as exc:
            meta = {"about": str(exc)}
        rows.append({"name": path.stem, "kind": "table", "processor": meta.get("processor", "?"),
                     "runtime": " ".join(str(meta[k]) for k in ("runtime", "runtime_version") if meta.get(k)) or "?",
                     "threads": meta.get("threads", "?"), "batch": meta.get("batch_size", "?"),
                     "input": meta.get("resolution", "?"), "date": meta.get("date", "?"),
                     "about": meta.get("about", f"imported from {meta.get('source', '?')}")})
    return rows


