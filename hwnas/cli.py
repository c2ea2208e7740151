"""The ``hwnas`` command: search, jobs, report, devices, import-table, profile, front, export.

Errors a user can cause print one line (``error: ...``) and exit with code 2, or 1 when nothing
meets a budget; they never print a traceback.
"""
from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from hwnas.errors import HwnasError

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="Hardware-aware neural architecture and quantization-policy search.")
out = Console(width=100)
err = Console(stderr=True)

StoreOpt = typer.Option(None, "--store", help="SQLAlchemy URL of the job store [default: sqlite:///WORKDIR/hwnas.db]")
WorkdirOpt = typer.Option("runs", "--workdir", help="directory of job artifacts and the default store")


class Compute(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Format(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


FRONT_COLUMNS = ["id", "accuracy", "latency_ms", "energy_mj", "params", "flops", "bitops", "weight_kb",
                 "predicted_accuracy", "predicted_accuracy_std", "predicted_latency_ms", "measured", "arch"]


def _front_table(job, frame, title: str) -> Table:
    from hwnas.search.store import arch_of

    table = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    for name in ("id", "acc", "lat ms", "pred ms", "energy uJ", "params", "MFLOPs"):
        table.add_column(name, justify="right")
    table.add_column("arch")
    space = job.space()
    for _, r in frame.iterrows():
        table.add_row(str(int(r["id"])), f"{r['accuracy']:.4f}", f"{r['latency_ms']:.3f}",
                      f"{r['predicted_latency_ms']:.3f}", f"{r['energy_mj'] * 1000:.2f}",
                      f"{int(r['params']):,}", f"{r['flops'] / 1e6:.2f}", space.summary(arch_of(r)))
    return table


def _print_front(job, frame, fmt: Format, title: str) -> None:
    rows = frame.reindex(columns=FRONT_COLUMNS + [c for c in frame.columns if "@" in c])  # other devices' figures
    if fmt == Format.json:
        records = rows.to_dict("records")
        for rec in records:
            rec["arch"] = json.loads(rec["arch"])
            rec["id"] = int(rec["id"])
            rec["measured"] = bool(rec["measured"])
        print(json.dumps(records, indent=2))
    elif fmt == Format.csv:
        sys.stdout.write(rows.to_csv(index=False))
    else:
        out.print(_front_table(job, frame, title))


@app.command()
def search(
    config: Optional[Path] = typer.Argument(None, help="YAML config; omitted: the embedded default (digits-cnn)"),
    name: Optional[str] = typer.Option(None, "--name", help="job name [default: the config's name]"),
    resume: Optional[str] = typer.Option(None, "--resume", help="continue the named job with its stored config"),
    store: Optional[str] = StoreOpt,
    workdir: Optional[str] = typer.Option(None, "--workdir", help="directory of job artifacts [default: config's]"),
    seed: Optional[int] = typer.Option(None, "--seed", min=0, help="random seed [default: config's]"),
    overrides: list[str] = typer.Option([], "--set", help="override a config key: --set train.epochs=5"),
    compute: Optional[Compute] = typer.Option(None, "--compute", help="where to train and evaluate"),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="evaluate candidates on N local Ray workers"),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="evaluate on this Ray cluster"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bars"),
) -> None:
    """Train the supernet, profile the device, fit predictors, search, validate the front.

    Example: hwnas search experiments/digits-cnn.yaml --set train.epochs=5
    """
    from hwnas.pipeline import launch
    from hwnas.progress import Reporter, RichReporter

    if resume is not None:
        if config is not None or overrides:
            raise HwnasError("--resume takes the job's stored config: give no config file or --set")
        from hwnas.job import open_job

        stored = open_job(resume, store=store, workdir=workdir or "runs")
        config, name, workdir = stored.attrs["config"], resume, workdir or str(stored.config.workdir)
    job = launch(config, name=name, store=store, workdir=workdir, seed=seed,
                 compute=compute.value if compute else None, overrides=overrides, workers=workers,
                 ray_address=ray_address,
                 reporter=Reporter() if quiet else RichReporter(err))
    frame = job.front()
    _print_front(job, frame, Format.table, f"Validated Pareto front of {job.name} "
                 f"({len(frame)} of {len(job.candidates())} evaluated candidates)")
    out.print(f"job: {job.name}   store: {job.store.display}   status: {job.status}", soft_wrap=True,
              highlight=False, markup=False)


@app.command()
def jobs(store: Optional[str] = StoreOpt, workdir: str = WorkdirOpt) -> None:
    """List the jobs of a store. Example: hwnas jobs --workdir runs"""
    from hwnas.search.store import JobStore, default_store_url

    job_store = JobStore(store or default_store_url(workdir), create=False)
    rows = job_store.list_jobs()
    table = Table(show_edge=False, pad_edge=False)
    for col in ("name", "status", "space", "device", "evaluated", "hypervolume", "created"):
        table.add_column(col)
    for r in rows:
        evaluated = f"{r['candidates']}/{r['budget']}" if r.get("budget") else str(r["candidates"])
        hv = f"{r['hypervolume']:.4f}" if r.get("hypervolume") is not None else "-"
        table.add_row(r["name"], r["status"], r["space"], r["device"], evaluated, hv, r["created"])
    if rows:
        out.print(table)
    else:
        out.print(f"no jobs in {job_store.display}", soft_wrap=True, highlight=False, markup=False)


@app.command()
def report(
    job_name: str = typer.Argument(..., metavar="JOB"),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
    store: Optional[str] = StoreOpt,
    workdir: str = WorkdirOpt,
) -> None:
    """Print a job's predictor quality on holdout subnets, its device and stage times.

    Example: hwnas report digits-cnn
    """
    from hwnas.job import open_job

    job = open_job(job_name, store=store, workdir=workdir)
    rows = job.predictor_quality()
    if as_json:
        print(json.dumps({"job": job.name, "predictors": rows, "device": job.attrs.get("device_description"),
                          "stage_seconds": job.attrs.get("stage_seconds")}, indent=2, default=str))
        return
    table = Table(title=f"Predictor quality of {job.name} (holdout subnets)", title_justify="left",
                  show_edge=False, pad_edge=False)
    for col in ("predictor", "n", "kendall tau", "rmse", "mape", "within 10%"):
        table.add_column(col, justify="left" if col == "predictor" else "right")
    for r in rows:
        table.add_row(r["predictor"], str(r["n"]), f"{r['kendall_tau']:.3f}", f"{r['rmse']:.4f}",
                      f"{r['mape']:.3f}", f"{r['within_10pct']:.2f}")
    out.print(table)
    for r in rows:
        if "uncertainty_spearman" in r:
            out.print(f"{r['predictor']} uncertainty: mean std {r['mean_std']:.4f}, Spearman of std with |error| "
                      f"{r['uncertainty_spearman']:.2f} (above 0: the std flags its worse guesses)", soft_wrap=True,
                      highlight=False, markup=False)
    device = job.attrs.get("device_description", {})
    out.print(f"device: {device.get('name', '?')} ({device.get('kind', '?')})   stages: " + ", ".join(
        f"{k} {v:.0f}s" for k, v in job.attrs.get("stage_seconds", {}).items()), soft_wrap=True,
        highlight=False, markup=False)


@app.command()
def devices(workdir: str = WorkdirOpt) -> None:
    """List the devices a config can name in device.name. Example: hwnas devices"""
    from hwnas.config import DeviceConfig
    from hwnas.hwmodels.devices import list_devices

    columns = ("name", "kind", "processor", "runtime", "threads", "batch", "input", "date", "about")
    table = Table(show_edge=False, pad_edge=False)
    for col in columns:
        table.add_column(col, no_wrap=col != "about", max_width=48 if col == "about" else None)
    for row in list_devices(DeviceConfig(), workdir):
        table.add_row(*(str(row[k]) for k in columns))
    Console(width=max(out.width, 150)).print(table)
    out.print("Describe your own hardware in a YAML like hwnas/devices/edge-accel-45nm.yaml and set device.spec "
              "to its path, or bring a lookup table measured on it with hwnas import-table.", soft_wrap=True,
              highlight=False, markup=False)


class TableFormat(str, Enum):
    hwnas = "hwnas"
    ofa = "ofa"
    bitwidth = "bitwidth"


@app.command("import-table")
def import_table(
    source: Path = typer.Argument(..., help="the table file (YAML, JSON or CSV)"),
    name: str = typer.Option(..., "--name", help="the device name configs will use in device.name"),
    fmt: TableFormat = typer.Option(..., "--format", help="hwnas (the native schema), ofa or bitwidth keys"),
    processor: str = typer.Option("?", "--processor", help="where the table was measured"),
    runtime: str = typer.Option("?", "--runtime", help="runtime it was measured with (tflite, onnxruntime, ...)"),
    runtime_version: str = typer.Option("", "--runtime-version"),
    threads: Optional[int] = typer.Option(None, "--threads", min=1),
    batch_size: int = typer.Option(1, "--batch-size", min=1),
    resolution: Optional[str] = typer.Option(None, "--resolution", help="input resolution of the measured nets"),
    date: Optional[str] = typer.Option(None, "--date", help="when it was measured [default: today]"),
    workdir: str = WorkdirOpt,
) -> None:
    """Bring a lookup table measured elsewhere as a table device.

    Example: hwnas import-table pixel1_lut.yaml --format ofa --name pixel1 --processor "Pixel 1 CPU"
    """
    import datetime as dt
    import warnings

    from hwnas.hwmodels.devices import tables_dir
    from hwnas.hwmodels.table_formats import import_table as read_table
    from hwnas.pipeline import check_job_name

    check_job_name(name)
    meta = {"name": name, "kind": "table", "processor": processor, "runtime": runtime,
            "runtime_version": runtime_version, "threads": threads, "batch_size": batch_size,
            "resolution": resolution, "date": date or dt.date.today().isoformat(), "source": str(source),
            "format": fmt.value}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = read_table(source, fmt.value, {k: v for k, v in meta.items() if v not in (None, "")})
    for w in caught:
        err.print(f"warning: {w.message}", highlight=False, markup=False, soft_wrap=True)
    target = tables_dir(workdir) / f"{name}.csv"
    target.parent.mkdir(parents=True, exist_ok=True)
    table.save(target)
    energy = "with energy" if table.has_energy else "latency only (energy from device.energy_model)"
    out.print(f"imported {len(table)} entries ({table.granularity} granularity, {energy}) as device {name}: "
              f"{target}\nuse it with: --set device.name={name}", soft_wrap=True, highlight=False, markup=False)


@app.command()
def profile(
    device_name: str = typer.Option("local-cpu", "--device", help="a measured device (see hwnas devices)"),
    space_config: Optional[Path] = typer.Option(None, "--space", help="config whose space and data to cover "
                                                "[default: the embedded default]"),
    overrides: list[str] = typer.Option([], "--set", help="override a config key: --set device.repeats=50"),
    refresh: bool = typer.Option(False, "--refresh", help="also retry entries flagged high-spread"),
    workdir: Optional[str] = typer.Option(None, "--workdir", help="where tables live [default: config's]"),
) -> None:
    """Measure every distinct op a space can produce on a device, into its lookup table.

    Resumable: rerun the same command after a kill. Example: hwnas profile --device local-cpu --space experiments/digits-cnn.yaml
    """
    from hwnas.config import load_config
    from hwnas.data import load_data
    from hwnas.errors import ConfigError
    from hwnas.hwmodels.devices import build_device
    from hwnas.hwmodels.profiler import HIGH_SPREAD
    from hwnas.pipeline import profile_device
    from hwnas.progress import RichReporter
    from hwnas.spaces.registry import build_space

    config = load_config(space_config, [*overrides, f"device.name={device_name}"])
    work = Path(workdir or config.workdir)
    device = build_device(config.device, work)
    if not device.measures:
        raise ConfigError(f"device {device.name!r} is a {device.kind} device: it has nothing to measure")
    d = config.data
    data = load_data(d.dataset, d.root, d.image_size, d.val_fraction, d.test_fraction, d.split_seed)
    space = build_space(config.space, data.input_shape, data.num_classes)
    result = profile_device(device, space, config.space.type, work, RichReporter(err), config.device.max_spread,
                            refresh=refresh)
    rows = list(result.table.entries.values())
    summary = Table(title=f"{device.name}: {len(rows)} ops of the {config.space.type} space", title_justify="left",
                    show_edge=False, pad_edge=False)
    for col in ("kind", "entries", "median ms (min-max)", "median spread", "high-spread"):
        summary.add_column(col, justify="left" if col == "kind" else "right")
    for kind in sorted({r["kind"] for r in rows}):
        group = [r for r in rows if r["kind"] == kind]
        lat = sorted(r["latency_ms"] for r in group)
        spreads = sorted(r["spread_ms"] / r["latency_ms"] if r["latency_ms"] else 0.0 for r in group)
        summary.add_row(kind, str(len(group)), f"{lat[len(lat) // 2]:.4f} ({lat[0]:.4f}-{lat[-1]:.4f})",
                        f"{100 * spreads[len(spreads) // 2]:.1f}%", str(sum(r["note"] == HIGH_SPREAD for r in group)))
    out.print(summary)
    c = config.device
    out.print(f"table: {result.path}\nmeasured now {result.measured}, re-measured {result.remeasured} noisy, "
              f"flagged high-spread {result.flagged} (spread above {c.max_spread:.0%} of the median after retries)\n"
              f"method: each op timed inside its network, {c.threads} thread(s), batch {c.batch_size}, "
              f"{c.warmup} warmup runs, median and interquartile range of {c.repeats} runs", soft_wrap=True,
              highlight=False, markup=False)


@app.command()
def front(
    job_name: str = typer.Argument(..., metavar="JOB"),
    max_latency_ms: Optional[float] = typer.Option(None, "--max-latency-ms"),
    max_energy_mj: Optional[float] = typer.Option(None, "--max-energy-mj"),
    min_accuracy: Optional[float] = typer.Option(None, "--min-accuracy", help="a fraction in (0, 1]"),
    fmt: Format = typer.Option(Format.table, "--format"),
    store: Optional[str] = StoreOpt,
    workdir: str = WorkdirOpt,
) -> None:
    """Print the Pareto-optimal candidates meeting every budget, best accuracy first.

    Example: hwnas front digits-cnn --max-latency-ms 0.5 --format json
    """
    from hwnas.job import open_job

    job = open_job(job_name, store=store, workdir=workdir)
    frame = job.front(max_latency_ms, max_energy_mj, min_accuracy)
    _print_front(job, frame, fmt, f"Pareto front of {job.name}: {len(frame)} candidates")


@app.command()
def export(
    job_name: str = typer.Argument(..., metavar="JOB"),
    out_dir: Path = typer.Option(..., "--out", help="directory to write model.safetensors and manifest.json"),
    candidate: Optional[int] = typer.Option(None, "--candidate", min=0, help="candidate id (see hwnas front)"),
    max_latency_ms: Optional[float] = typer.Option(None, "--max-latency-ms"),
    max_energy_mj: Optional[float] = typer.Option(None, "--max-energy-mj"),
    min_accuracy: Optional[float] = typer.Option(None, "--min-accuracy"),
    fmt: str = typer.Option("pt", "--format", help="pt (safetensors + manifest), torchscript, or all"),
    store: Optional[str] = StoreOpt,
    workdir: str = WorkdirOpt,
) -> None:
    """Export one subnet as a standalone model: by id, or the most accurate under a budget.

    Example: hwnas export digits-cnn --max-latency-ms 0.5 --out exported/
    """
    from hwnas.job import open_job

    job = open_job(job_name, store=store, workdir=workdir)
    from hwnas.export import FORMATS

    formats = FORMATS if fmt == "all" else tuple(f.strip() for f in fmt.split(","))
    path = job.export(out_dir, candidate, max_latency_ms, max_energy_mj, min_accuracy, formats)
    manifest = json.loads((path / "manifest.json").read_text())
    m = manifest["metrics"]["measured"]
    out.print(f"exported candidate {manifest['candidate']} of {job.name} to {path}: accuracy "
              f"{m['export_test_accuracy']:.4f}, latency {m['latency_ms']:.3f} ms", soft_wrap=True,
              highlight=False, markup=False)
    lat = manifest["metrics"]["export_latency"]
    if lat.get("gap_above_10pct"):
        err.print(f"warning: the export runs in {lat['median_ms']:.3f} ms on {job.config.device.name}, "
                  f"{100 * lat['gap']:+.0f} % from the predicted {lat['predicted_ms']:.3f} ms", highlight=False,
                  markup=False, soft_wrap=True)


def main(argv: list[str] | None = None) -> int:
    command = typer.main.get_command(app)
    try:
        command.main(args=argv, prog_name="hwnas", standalone_mode=False)
    except HwnasError as exc:
        err.print(f"error: {exc}", highlight=False, markup=False, soft_wrap=True)
        return exc.exit_code
    except typer.Abort:
        err.print("aborted")
        return 130
    except typer.Exit as exc:
        return exc.exit_code
    except typer.TyperException as exc:  # usage errors: bad option values, unknown commands
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        if type(exc).__name__ == "NoArgsIsHelpError":  # bare `hwnas`: the help, as click does
            err.print(message, highlight=False, markup=False)
            return 2
        err.print(f"error: {message}", highlight=False, markup=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        err.print("interrupted: rerun the same command to resume")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
