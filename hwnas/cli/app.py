"""The ``hwnas`` command: search, jobs, report, devices, import-table, profile, front, export.

One style for every command:

- ``--help`` with a runnable ``Example:``;
- ``--quiet/-q``: no progress bars and no informational lines; results and errors still print;
- ``--json``: one JSON document on stdout holding what the table shows, and nothing else there;
- tables that follow the terminal's width (``COLUMNS`` where set) and fit 80 columns;
- progress bars with an ETA on stderr, so stdout stays a result.

Errors a user can cause print one line (``error: ...``) and exit with code 2, or 1 when nothing
meets a budget, or 74 when a file cannot be written (full disk, quota, file-size limit,
read-only or unwritable place); they never print a traceback.

The options every command shares are declared once, in :mod:`hwnas.cli.style`, as ``Annotated`` types; a command
takes them as parameters and hands ``quiet`` / ``as_json`` to :class:`Ui`, which decides what
goes where. A new option of one command is one more parameter of that command.

Each command imports the layers it runs inside its own body: the one place in hwnas where imports
sit inside functions for a reason other than an optional dependency. ``hwnas --help``, an argument
error or ``hwnas jobs`` then answers in about 0.15 s instead of the 6-8 s that importing torch,
timm and the rest of the stack takes on this project's 2-core machine. No import cycle can hide
here: nothing imports the CLI (the layers contract says so, see tests/test_architecture.py).
"""
from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from hwnas.cli.budgets import (MaxEnergy, MaxLatency, MaxMemory, MaxMemoryMb, MaxPerplexity, MaxPrefill,
                               MinAccuracy, budgets_of)
from hwnas.cli.fronts import front_records, front_rows, front_table
from hwnas.cli.style import (DEFAULT_WORKDIR, FOLD, RIGHT, ConfigWorkdir, Json, JobName, Overrides, Quiet, Store, Ui,
                             Workdir, _console, app, make_table)
from hwnas.errors import HwnasError


class Compute(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Format(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


@app.command()
def search(
    config: Annotated[Optional[Path], typer.Argument(help="YAML config; omitted: the embedded default "
                                                     "(digits-cnn)")] = None,
    name: Annotated[Optional[str], typer.Option("--name", help="job name [default: the config's name]")] = None,
    resume: Annotated[Optional[str], typer.Option("--resume", metavar="JOB",
                                                  help="continue the named job with its stored config")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", min=0, help="random seed [default: config's]")] = None,
    overrides: Overrides = [],  # noqa: B006 (typer copies it)
    compute: Annotated[Optional[Compute], typer.Option("--compute", help="where to train and evaluate")] = None,
    workers: Annotated[Optional[int], typer.Option("--workers", min=1, metavar="N",
                                                   help="evaluate candidates on N local Ray workers")] = None,
    ray_address: Annotated[Optional[str], typer.Option("--ray-address", metavar="ADDRESS",
                                                       help="evaluate on this Ray cluster")] = None,
    store: Store = None,
    workdir: ConfigWorkdir = None,
    quiet: Quiet = False,
    as_json: Json = False,
) -> None:
    """Train the supernet, profile the device, fit predictors, search, validate the front.

    Progress bars on stderr cover training, profiling, subnet sampling, each search round and
    each round's real evaluations. Rerun the same command after a kill to resume.

    \b
    Example:
      hwnas search experiments/digits-cnn.yaml --set train.epochs=5
    """
    from hwnas.job.launch import launch

    ui = Ui(quiet, as_json)
    if resume is not None:
        if config is not None or overrides:
            raise HwnasError("--resume takes the job's stored config: give no config file or --set")
        from hwnas.job.handle import open_job

        stored = open_job(resume, store=store, workdir=workdir or DEFAULT_WORKDIR)
        config, name, workdir = stored.attrs["config"], resume, workdir or str(stored.config.workdir)
    job = launch(config, name=name, store=store, workdir=workdir, seed=seed,
                 compute=compute.value if compute else None, overrides=overrides, workers=workers,
                 ray_address=ray_address, reporter=ui.reporter())
    frame = job.front()
    evaluated = len(job.candidates())
    if ui.json:
        ui.emit({"job": job.name, "store": job.store.display, "status": job.status, "job_dir": str(job.job_dir),
                 "evaluated": evaluated, "objectives": job.objectives, "front": front_records(frame, job.quality)})
        return
    ui.table(front_table(job, frame, f"Validated Pareto front of {job.name} ({len(frame)} of {evaluated} "
                                      "evaluated candidates)"))
    ui.result(f"job: {job.name}   store: {job.store.display}   status: {job.status}", wrap=False)


@app.command()
def jobs(store: Store = None, workdir: Workdir = DEFAULT_WORKDIR, quiet: Quiet = False,
         as_json: Json = False) -> None:
    """List the jobs of a store: status, space, device, progress, hypervolume.

    \b
    Example:
      hwnas jobs --workdir runs
    """
    from hwnas.job.store import JobStore, default_store_url

    ui = Ui(quiet, as_json)
    job_store = JobStore(store or default_store_url(workdir), create=False)
    rows = job_store.list_jobs()
    if ui.json:
        ui.emit(rows)
        return
    if not rows:
        ui.result(f"no jobs in {job_store.display}", wrap=False)
        return
    table = make_table(("name", FOLD), "status", "space", ("device", FOLD), ("evaluated", RIGHT), ("hv", RIGHT),
                       ("created", {"no_wrap": True}))
    for r in rows:
        evaluated = f"{r['candidates']}/{r['budget']}" if r.get("budget") else str(r["candidates"])
        hv = f"{r['hypervolume']:.4f}" if r.get("hypervolume") is not None else "-"
        created = str(r["created"])[:16].replace("T", " ")  # to the minute; --json has it all
        table.add_row(r["name"], r["status"], r["space"], r["device"], evaluated, hv, created)
    ui.table(table)


@app.command()
def report(job_name: JobName,
           out_dir: Annotated[Optional[Path], typer.Option("--out", metavar="DIR", help="also write an HTML page "
                                                            "with PNG plots (index.html) to DIR")] = None,
           max_latency_ms: MaxLatency = None, max_prefill_ms: MaxPrefill = None, max_energy_mj: MaxEnergy = None,
           max_memory_kb: MaxMemory = None, max_memory_mb: MaxMemoryMb = None, min_accuracy: MinAccuracy = None,
           max_perplexity: MaxPerplexity = None,
           store: Store = None, workdir: Workdir = DEFAULT_WORKDIR,
           quiet: Quiet = False, as_json: Json = False) -> None:
    """Print a job's predictor quality on holdout subnets, its device and stage times; with --out,
    write the report page: the front (predicted and measured, budgets as lines), parity plots,
    choices along the front, predictor quality and training curves.

    \b
    Example:
      hwnas report digits-cnn --out report/ --max-latency-ms 0.5
    """
    from hwnas.job.handle import open_job

    budgets = budgets_of(locals())
    ui = Ui(quiet, as_json)
    job = open_job(job_name, store=store, workdir=workdir)
    page = None
    if out_dir is not None:
        from hwnas.report import write_report

        page = write_report(job, out_dir, budgets)
    elif budgets:
        raise HwnasError("budgets are drawn on the report page: give --out DIR with them")
    rows = job.predictor_quality()
    if ui.json:
        ui.emit({"job": job.name, "predictors": rows, "device": job.attrs.get("device_description"),
                 "stage_seconds": job.attrs.get("stage_seconds"), "page": str(page) if page else None})
        return
    table = make_table(("predictor", FOLD), ("n", RIGHT), ("kendall tau", RIGHT), ("rmse", RIGHT), ("mape", RIGHT),
                       ("within 10%", RIGHT), title=f"Predictor quality of {job.name} (holdout subnets)")
    for r in rows:
        table.add_row(r["predictor"], str(r["n"]), f"{r['kendall_tau']:.3f}", f"{r['rmse']:.4f}",
                      f"{r['mape']:.3f}", f"{r['within_10pct']:.2f}")
    ui.table(table)
    for r in rows:
        if "uncertainty_spearman" in r:
            ui.result(f"{r['predictor']} uncertainty: mean std {r['mean_std']:.4f}, Spearman of std with |error| "
                      f"{r['uncertainty_spearman']:.2f} (above 0: the std flags its worse guesses)")
    device = job.attrs.get("device_description", {})
    ui.result(f"device: {device.get('name', '?')} ({device.get('kind', '?')})   stages: " + ", ".join(
        f"{k} {v:.0f}s" for k, v in job.attrs.get("stage_seconds", {}).items()))
    if page is not None:
        ui.result(f"report page: {page}", wrap=False)


# devices, import-table and profile (the device commands) live in their own module; importing it
# here registers them on the app at this point, which is their place in --help
import hwnas.cli.devices  # noqa: E402,F401


@app.command()
def front(
    job_name: JobName,
    max_latency_ms: MaxLatency = None,
    max_prefill_ms: MaxPrefill = None,
    max_energy_mj: MaxEnergy = None,
    max_memory_kb: MaxMemory = None,
    max_memory_mb: MaxMemoryMb = None,
    min_accuracy: MinAccuracy = None,
    max_perplexity: MaxPerplexity = None,
    fmt: Annotated[Format, typer.Option("--format", help="table, csv, or json (the same as --json)")] = Format.table,
    store: Store = None,
    workdir: Workdir = DEFAULT_WORKDIR,
    quiet: Quiet = False,
    as_json: Json = False,
) -> None:
    """Print the Pareto-optimal candidates meeting every budget, best accuracy (or perplexity) first.

    \b
    Example:
      hwnas front digits-cnn --max-latency-ms 0.5 --json
    """
    from hwnas.job.handle import open_job

    if as_json and fmt not in (Format.table, Format.json):
        raise HwnasError(f"--json and --format {fmt.value} conflict: give one")
    budgets = budgets_of(locals())
    ui = Ui(quiet, as_json or fmt == Format.json)
    job = open_job(job_name, store=store, workdir=workdir)
    frame = job.front(budgets)
    if fmt == Format.csv:
        sys.stdout.write(front_rows(frame, job.quality).to_csv(index=False))
        return
    if ui.json:
        ui.emit(front_records(frame, job.quality))
        return
    ui.table(front_table(job, frame, f"Pareto front of {job.name}: {len(frame)} candidates", budgets.max_memory_kb))


@app.command()
def export(
    job_name: JobName,
    out_dir: Annotated[Path, typer.Option("--out", metavar="DIR", help="directory to write model.safetensors and "
                                          "manifest.json")],
    candidate: Annotated[Optional[int], typer.Option("--candidate", min=0, metavar="ID",
                                                     help="candidate id (see hwnas front)")] = None,
    max_latency_ms: MaxLatency = None,
    max_prefill_ms: MaxPrefill = None,
    max_energy_mj: MaxEnergy = None,
    max_memory_kb: MaxMemory = None,
    max_memory_mb: MaxMemoryMb = None,
    min_accuracy: MinAccuracy = None,
    max_perplexity: MaxPerplexity = None,
    fmt: Annotated[str, typer.Option("--format", metavar="FORMATS", help="comma-separated: pt (safetensors + "
                                     "manifest, always written), torchscript, onnx, int8 (all-8-bit subnets), "
                                     "a space's own (lm: hf, a LlamaForCausalLM folder), "
                                     "or all (every one this subnet allows)")] = "pt",
    finetune_epochs: Annotated[int, typer.Option("--finetune-epochs", min=0, metavar="N",
                                                 help="fine-tune the subnet alone for N epochs first")] = 0,
    store: Store = None,
    workdir: Workdir = DEFAULT_WORKDIR,
    quiet: Quiet = False,
    as_json: Json = False,
) -> None:
    """Export one subnet as a standalone model: by id, or the most accurate under a budget.

    Every file is checked against the supernet on validation inputs; the manifest records the
    checks, the latency measured now against the predicted one, and the int8 and fine-tuning
    figures.

    \b
    Example:
      hwnas export digits-cnn --max-latency-ms 0.5 --format all --out exported/
    """
    from hwnas.export.candidate import known_formats
    from hwnas.job.handle import open_job

    budgets = budgets_of(locals())
    formats = tuple(f.strip() for f in fmt.split(",") if f.strip())
    unknown = [f for f in formats if f not in (*known_formats(), "all")]
    if unknown:  # before the job is opened and its supernet loaded
        raise HwnasError(f"--format: unknown format {unknown[0]!r}; known: {known_formats()} or all")
    ui = Ui(quiet, as_json)
    job = open_job(job_name, store=store, workdir=workdir)
    path = job.export(out_dir, candidate, budgets, formats, finetune_epochs)
    manifest_path = path / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    metrics = manifest.get("metrics", {})
    evaluated = metrics.get("evaluated", {})
    search_latency = metrics.get("measured") or metrics.get("modelled") or {}
    source = "measured" if "measured" in metrics else search_latency.get("source", "model")
    lat = metrics.get("export_latency", {})
    if lat.get("gap_above_10pct"):
        ui.warn(f"the export runs in {lat['median_ms']:.3f} ms on {job.config.device.name}, "
                f"{100 * lat['gap']:+.0f} % from the predicted {lat['predicted_ms']:.3f} ms")
    files = {k: v["file"] for k, v in manifest.items() if isinstance(v, dict) and "file" in v}
    if ui.json:
        ui.emit({"job": job.name, "candidate": manifest.get("candidate"), "out": str(path),
                 "manifest": str(manifest_path), "files": files, "metrics": metrics,
                 "checks": manifest.get("checks", {}), "skipped_formats": manifest.get("skipped_formats", {}),
                 "int8": manifest.get("int8"), "finetune": manifest.get("finetune"),
                 "preprocessing": manifest.get("preprocessing")})
        return
    q = job.quality
    ui.result(f"exported candidate {manifest['candidate']} of {job.name} to {path}: validation {q.name} "
              f"{q.format(evaluated[q.column])} (chosen on), test {q.name} "
              f"{q.format(evaluated[f'export_{q.test_column}'])}, "
              f"latency {search_latency['latency_ms']:.3f} ms ({source})", wrap=False)
    if lat.get("measured"):
        ui.info(f"  re-measured now: {lat['median_ms']:.3f} ms against the predicted {lat['predicted_ms']:.3f} ms "
                f"({100 * lat['gap']:+.1f} %)")
    for name, check in manifest.get("checks", {}).items():
        flips = f", {check['rounding_flips']} rounding flip(s) excused" if check.get("rounding_flips") else ""
        ui.info(f"  {files.get(name, files.get('weights'))}: matches the "
                f"supernet within {check['tolerance'] * check.get('logit_scale', 1.0):.3g} on {check['inputs']} inputs{flips}")
    if gen := manifest.get("generation_check"):
        ui.info(f"  generates the supernet's greedy tokens: {gen['prompts']} prompts x {gen['new_tokens']} tokens")
    int8 = manifest.get("int8")
    if int8:
        ui.info(f"  {int8['file']}: accuracy {int8['test_accuracy']:.4f} (fake-quantized "
                f"{int8['fake_quant_test_accuracy']:.4f}), {int8['latency_ms']:.3f} ms vs "
                f"{int8['fake_quant_torchscript_latency_ms']:.3f} ms fake-quantized")
    for name, reason in manifest.get("skipped_formats", {}).items():
        ui.info(f"  {name} left out: {reason}")
    if raw := manifest.get("preprocessing", {}).get("raw_input"):
        itself = " and standardizes them itself" if manifest["preprocessing"].get("inside_model", True) else ""
        ui.info(f"  every file takes raw inputs ({raw}){itself}")
    ft = manifest.get("finetune")
    if ft:
        ui.info(f"  fine-tuned {ft['epochs']} epoch(s): test accuracy {ft['test_accuracy_before']:.4f} -> "
                f"{ft['test_accuracy_after']:.4f}")


def main(argv: list[str] | None = None) -> int:
    from hwnas.utils.write_errors import cannot_write_error

    command = typer.main.get_command(app)
    err = _console(stderr=True)
    # what moves the files a command writes elsewhere, for the message of a failed write: --out
    # for the commands that write to a directory of their own, --workdir for the others
    words = [a for a in (sys.argv[1:] if argv is None else argv) if not a.startswith("-")]
    elsewhere = "--out" if words[:1] in (["export"], ["report"]) else "--workdir"
    try:
        command.main(args=argv, prog_name="hwnas", standalone_mode=False)
    except HwnasError as exc:
        # a full disk or a read-only place that surfaced as another error (the store refusing to
        # open) is still a failure to write: one line and its own exit code (see hwnas.errors)
        exc = cannot_write_error(exc, elsewhere) or exc
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
    except Exception as exc:  # noqa: BLE001 - only failures to write are handled; the rest re-raised
        # no space left, a quota, the file-size limit, a read-only or unwritable place: every write
        # is atomic, so the last good artifacts are intact and a rerun resumes (exit 74, EX_IOERR)
        failure = cannot_write_error(exc, elsewhere)
        if failure is None:
            raise
        err.print(f"error: {failure}", highlight=False, markup=False, soft_wrap=True)
        return failure.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
