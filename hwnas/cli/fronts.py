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
    """The front's rows with the front columns, then other devices' figures (``latency_ms@DEVICE``)."""
    return frame.reindex(columns=front_columns(quality) + [c for c in frame.columns if "@" in c])


def front_records(frame, quality) -> list[dict[str, Any]]:
    records = front_rows(frame, quality).to_dict("records")
    for rec in records:
        rec["arch"] = json.loads(rec["arch"])
        rec["id"] = int(rec["id"])
        rec["measured"] = bool(rec["measured"])
    return records


def front_table(job, frame, title: str, memory_budget: float | None = None) -> Table:
    """Memory (kB) takes the MFLOPs column's place where it is an objective or a budget: one more
    column would squeeze the arch column out of an 80-column terminal. A latency that is not per
    inference (a language model's, per generated token) says so in the title."""
    from hwnas.job.store import arch_of

    q = job.quality
    sources = set(frame["latency_source"]) if not frame.empty else {"measured"}
    latency = f"lat ms ({'/'.join(sorted(sources))})"
    memory = "memory" in job.objectives or memory_budget is not None or job.config.search.max_memory_kb is not None
    if job.latency_unit != "per inference":
        title += f" (latency {job.latency_unit})"
    table = make_table(("id", RIGHT), (f"val {q.short}", RIGHT), (f"test {q.short}", RIGHT), (latency, RIGHT),
                       ("pred ms", RIGHT), ("uJ", RIGHT), ("params", RIGHT), ("kB" if memory else "MFLOPs", RIGHT),
                       ("arch", {**FOLD, "min_width": 12}), title=title)
    space = job.space()
    for _, r in frame.iterrows():
        table.add_row(str(int(r["id"])), q.format(r[q.column]), q.format(r[q.test_column]), f"{r['latency_ms']:.3f}",
                      f"{r['predicted_latency_ms']:.3f}", f"{r['energy_mj'] * 1000:.2f}", f"{int(r['params']):,}",
                      f"{r['memory_kb']:.1f}" if memory else f"{r['flops'] / 1e6:.2f}", space.summary(arch_of(r)))
    return table
