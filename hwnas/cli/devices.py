"""The device commands of ``hwnas``: ``devices`` (what a config can name), ``import-table`` (a
lookup table measured elsewhere, as a table device) and ``profile`` (measure a space's ops on a
device). Registered on :data:`hwnas.cli.style.app` when :mod:`hwnas.cli.app` imports this module;
in the one style of :mod:`hwnas.cli.style`."""
from __future__ import annotations

import datetime as dt
import warnings
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from hwnas.cli.style import (DEFAULT_WORKDIR, FOLD, RIGHT, ConfigWorkdir, Json, Overrides, Quiet, Ui, Workdir, _fits,
                             app, make_table)

DEVICE_COLUMNS = ("name", "kind", "processor", "runtime", "threads", "batch", "input", "date", "about")


@app.command()
def devices(workdir: Workdir = DEFAULT_WORKDIR, quiet: Quiet = False, as_json: Json = False) -> None:
    """List the devices a config can name in device.name.

    \b
    Example:
      hwnas devices --workdir runs
    """
    from hwnas.config import DeviceConfig
    from hwnas.hwmodels.devices import list_devices

    ui = Ui(quiet, as_json)
    rows = list_devices(DeviceConfig(), workdir)
    if ui.json:
        ui.emit(rows)
        return
    wide = [c for c in DEVICE_COLUMNS if c != "about"]
    if _fits(ui, rows, wide, 16):  # one column each, the description wrapped
        table = make_table(*[(c, {"no_wrap": True}) for c in wide], ("about", {"ratio": 1}))
        for row in rows:
            table.add_row(*(str(row[k]) for k in DEVICE_COLUMNS))
    else:  # narrow terminal: the details folded into one wrapping column
        table = make_table(("name", FOLD), ("kind", {"no_wrap": True}), ("details", {"ratio": 1}))
        for row in rows:
            known = lambda k: str(row[k]) not in ("-", "?", "", "None")  # noqa: E731
            details = [str(row[k]) for k in ("processor", "runtime") if known(k)] + [
                f"{label} {row[k]}" for k, label in (("threads", "threads"), ("batch", "batch"), ("input", "input"),
                                                     ("date", "measured")) if known(k)]
            table.add_row(row["name"], row["kind"], f"{', '.join(details)}: {row['about']}")
    ui.table(table)
    ui.info("Describe your own hardware in a YAML like hwnas/devices/edge-accel-45nm.yaml and set device.spec "
            "to its path, or bring a lookup table measured on it with hwnas import-table.")


class TableFormat(str, Enum):
    hwnas = "hwnas"
    ofa = "ofa"
    bitwidth = "bitwidth"
    fbnet = "fbnet"


@app.command("import-table")
def import_table(
    source: Annotated[Path, typer.Argument(help="the table file (YAML, JSON, CSV, or .npy for fbnet)")],
    name: Annotated[str, typer.Option("--name", help="the device name configs will use in device.name")],
    fmt: Annotated[TableFormat, typer.Option("--format", help="hwnas (the native schema), ofa, bitwidth (APQ) or fbnet "
                                                   "(HW-NAS-Bench .npy) keys")],
    processor: Annotated[str, typer.Option("--processor", help="where the table was measured")] = "?",
    runtime: Annotated[str, typer.Option("--runtime", help="runtime it was measured with (tflite, onnxruntime, "
                                         "...)")] = "?",
    runtime_version: Annotated[str, typer.Option("--runtime-version")] = "",
    threads: Annotated[Optional[int], typer.Option("--threads", min=1)] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 1,
    resolution: Annotated[Optional[str], typer.Option("--resolution", help="input resolution of the measured "
                                                      "nets")] = None,
    date: Annotated[Optional[str], typer.Option("--date", help="when it was measured [default: today]")] = None,
    workdir: Workdir = DEFAULT_WORKDIR,
    quiet: Quiet = False,
    as_json: Json = False,
) -> None:
    """Bring a lookup table measured elsewhere as a table device.

    \b
    Example:
      hwnas import-table pixel1_lut.yaml --format ofa --name pixel1 \\
        --processor "Pixel 1 CPU"
      hwnas import-table BitFusion_new.b16.dict --format bitwidth --name bitfusion
      hwnas import-table fbnet_edgegpu_lut.npy --format fbnet --name edgegpu
    """

    from hwnas.hwmodels.devices import tables_dir
    from hwnas.hwmodels.table_formats import import_table as read_table
    from hwnas.job.paths import check_job_name

    ui = Ui(quiet, as_json)
    check_job_name(name)
    meta = {"name": name, "kind": "table", "processor": processor, "runtime": runtime,
            "runtime_version": runtime_version, "threads": threads, "batch_size": batch_size,
            "resolution": resolution, "date": date or dt.date.today().isoformat(), "source": str(source),
            "format": fmt.value}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = read_table(source, fmt.value, {k: v for k, v in meta.items() if v not in (None, "")})
    for w in caught:
        ui.warn(str(w.message))
    target = tables_dir(workdir) / f"{name}.csv"
    target.parent.mkdir(parents=True, exist_ok=True)
    table.save(target)
    energy = "with energy" if table.has_energy else "latency only (energy from device.energy_model)"
    if ui.json:
        ui.emit({"device": name, "entries": len(table), "granularity": table.granularity,
                 "has_energy": bool(table.has_energy), "table": str(target), "meta": meta,
                 "warnings": [str(w.message) for w in caught], "use": f"--set device.name={name}"})
        return
    fixed = "".join(f", {part} priced as one entry" for part in table.fixed_parts())
    ui.result(f"imported {len(table)} entries ({table.granularity} granularity, {energy}{fixed}) as device {name}")
    ui.result(f"table: {target}", wrap=False)
    ui.info(f"use it with: --set device.name={name}", wrap=False)


@app.command()
def profile(
    device_name: Annotated[str, typer.Option("--device", metavar="NAME", help="a measured device (see hwnas "
                                             "devices)")] = "local-cpu",
    space_config: Annotated[Optional[Path], typer.Option("--space", metavar="CONFIG", help="config whose space "
                                                         "and data to cover [default: the embedded default]")] = None,
    overrides: Overrides = [],  # noqa: B006 (typer copies it)
    refresh: Annotated[bool, typer.Option("--refresh", help="also retry entries flagged high-spread")] = False,
    workdir: ConfigWorkdir = None,
    quiet: Quiet = False,
    as_json: Json = False,
) -> None:
    """Measure every distinct op a space can produce on a device, into its lookup table.

    Resumable: rerun the same command after a kill.

    \b
    Example:
      hwnas profile --device local-cpu --space experiments/digits-cnn.yaml
    """
    from hwnas.job.checks import job_phases, load_job_config as load_config
    from hwnas.data import load_configured
    from hwnas.errors import ConfigError
    from hwnas.hwmodels.devices import build_device
    from hwnas.hwmodels.profiler import HIGH_SPREAD
    from hwnas.hwmodels.profiler import profile_device
    from hwnas.spaces.registry import build_space

    ui = Ui(quiet, as_json)
    config = load_config(space_config, [*overrides, f"device.name={device_name}"])
    work = Path(workdir or config.workdir)
    device = build_device(config.device, work)
    if not device.measures:
        raise ConfigError(f"device {device.name!r} is a {device.kind} device: it has nothing to measure")
    data = load_configured(config.data)
    space = build_space(config.space, data.input_shape, data.num_classes)
    result = profile_device(device, space, config.space.type, work, ui.reporter(), config.device.max_spread,
                            refresh=refresh, phases=job_phases(config))  # the prefill's ops too, where asked
    rows = list(result.table.entries.values())
    kinds = []
    for kind in sorted({r["kind"] for r in rows}):
        group = [r for r in rows if r["kind"] == kind]
        lat = sorted(r["latency_ms"] for r in group)
        spreads = sorted(r["spread_ms"] / r["latency_ms"] if r["latency_ms"] else 0.0 for r in group)
        kinds.append({"kind": kind, "entries": len(group), "median_ms": lat[len(lat) // 2], "min_ms": lat[0],
                      "max_ms": lat[-1], "median_spread": spreads[len(spreads) // 2],
                      "high_spread": sum(r["note"] == HIGH_SPREAD for r in group)})
    c = config.device
    method = {"threads": c.threads, "batch_size": c.batch_size, "warmup": c.warmup, "repeats": device.repeats,
              "rounds": c.rounds, "max_drift": c.max_drift, "max_spread": c.max_spread,
              "reference_ms": result.reference_ms}
    if ui.json:
        ui.emit({"device": device.name, "space": config.space.type, "table": str(result.path), "entries": len(rows),
                 "measured": result.measured, "remeasured": result.remeasured, "flagged": result.flagged,
                 "kinds": kinds, "method": method})
        return
    summary = make_table("kind", ("entries", RIGHT), ("median ms (min-max)", RIGHT), ("median spread", RIGHT),
                         ("high-spread", RIGHT),
                         title=f"{device.name}: {len(rows)} ops of the {config.space.type} space")
    for k in kinds:
        summary.add_row(k["kind"], str(k["entries"]), f"{k['median_ms']:.4f} ({k['min_ms']:.4f}-{k['max_ms']:.4f})",
                        f"{100 * k['median_spread']:.1f}%", str(k["high_spread"]))
    ui.table(summary)
    ui.result(f"table: {result.path}", wrap=False)
    ui.result(f"measured now {result.measured}, re-measured {result.remeasured} noisy, flagged high-spread "
              f"{result.flagged} (spread above {c.max_spread:.0%} of the median after retries)")
    ui.info(f"method: each op timed inside its network, {c.threads} thread(s), batch {c.batch_size}, "
            f"{c.warmup} warm-up calls, {device.repeats} timed calls in {c.rounds} interleaved rounds with a reference "
            f"subnet ({result.reference_ms or float('nan'):.4f} ms) correcting each round for the machine's speed; median of the "
            f"corrected calls, interquartile range of the round medians")
