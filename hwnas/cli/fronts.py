"""How ``hwnas search`` and ``hwnas front`` show a front: its columns (CSV, JSON) and its table.

The quality columns are the job's metric's (``val_accuracy`` ... for classification,
``val_perplexity`` ... and the next-token accuracies for a language model), so the commands print
what the job chose on without asking which kind of job it is.
"""
from __future__ import annotations

import json
from typing import Any

from rich.table import Table

from hwnas.cli.style import FOLD, RIGHT, make_table
from hwnas.search.objectives import PHASES, phase_columns

# val_accuracy chose the front (and any budget pick); test_accuracy is reported beside it. latency_ms
# is what latency_source says: measured on the job's device in this job, or a table's or analytical
# model's figure (then predicted_latency_ms is the same model's).
FRONT_COLUMNS = ["id", "val_accuracy", "test_accuracy", "latency_ms", "latency_source", "energy_mj", "memory_kb",
                 "activation_kb", "params", "flops", "bitops", "weight_kb", "predicted_accuracy",
                 "predicted_accuracy_std", "predicted_latency_ms", "measured", "arch"]


def front_columns(quality) -> list[str]:
    """:data:`FRONT_COLUMNS` with the accuracy columns replaced by those of ``quality`` (a
    :class:`hwnas.metrics.QualityMetric`), its other reported figures right after its test column."""
    rename = {"val_accuracy": quality.column, "test_accuracy": quality.test_column,
              "predicted_accuracy": quality.predicted_column,
              "predicted_accuracy_std": f"{quality.predicted_column}_std"}
    columns = [rename.get(c, c) for c in FRONT_COLUMNS]
    after = columns.index(quality.test_column) + 1
    others = [f"{split}_{name}" for name in quality.reported[1:] for split in ("val", "test")]
    return columns[:after] + others + columns[after:]


def front_rows(frame, quality):
    """The front's rows with the front columns (those of the latency phases the job priced, such as
    ``prefill_ms``, after ``latency_source``), then other devices' figures (``latency_ms@DEVICE``)."""
    columns = front_columns(quality)
    at = columns.index("latency_source") + 1
    phases = [c for phase in PHASES for c in phase_columns(phase) if c in frame.columns]
    return frame.reindex(columns=columns[:at] + phases + columns[at:] + [c for c in frame.columns if "@" in c])


def front_records(frame, quality) -> list[dict[str, Any]]:
    records = front_rows(frame, quality).to_dict("records")
    for rec in records:
        rec["arch"] = json.loads(rec["arch"])
        rec["id"] = int(rec["id"])
        rec["measured"] = bool(rec["measured"])
    return records


def front_table(job, frame, title: str, memory_budget: float | None = None) -> Table:
    """Memory (kB) takes the MFLOPs column's place where it is an objective or a budget: one more
    column would squeeze the arch column out of an 80-column terminal. So does a latency phase the
    job priced (an LM's prefill, on the same device as the latency), or the uJ column's where memory
    has that place (the CSV and JSON keep every column). A latency that is not per inference (a
    language model's, per generated token) says so in the title, and so does each phase."""
    from hwnas.job.store import arch_of

    q = job.quality
    sources = set(frame["latency_source"]) if not frame.empty else {"measured"}
    latency = f"lat ms ({'/'.join(sorted(sources))})"
    memory = "memory" in job.objectives or memory_budget is not None or job.config.search.max_memory_kb is not None
    units = ([f"latency {job.latency_unit}"] if job.latency_unit != "per inference" else []) + [
        f"{name} {unit}" for name, unit in job.latency_phases.items()]
    if units:
        title += f" ({', '.join(units)})"
    # the optional columns, by header: what each row shows there
    optional = {"uJ": lambda r: f"{r['energy_mj'] * 1000:.2f}", "params": lambda r: f"{int(r['params']):,}",
                "kB": lambda r: f"{r['memory_kb']:.1f}", "MFLOPs": lambda r: f"{r['flops'] / 1e6:.2f}"}
    shown = ["uJ", "params", "kB" if memory else "MFLOPs"]
    for name in job.latency_phases:
        place = "uJ" if memory else "MFLOPs"
        if place in shown:
            shown[shown.index(place)] = f"{name}\nms"  # two lines: as narrow as the column it replaces
            optional[f"{name}\nms"] = lambda r, column=f"{name}_ms": f"{r[column]:.3f}"
    table = make_table(("id", RIGHT), (f"val {q.short}", RIGHT), (f"test {q.short}", RIGHT), (latency, RIGHT),
                       ("pred ms", RIGHT), *((header, RIGHT) for header in shown),
                       ("arch", {**FOLD, "min_width": 12}), title=title)
    space = job.space()
    for _, r in frame.iterrows():
        table.add_row(str(int(r["id"])), q.format(r[q.column]), q.format(r[q.test_column]), f"{r['latency_ms']:.3f}",
                      f"{r['predicted_latency_ms']:.3f}", *(optional[header](r) for header in shown),
                      space.summary(arch_of(r)))
    return table
