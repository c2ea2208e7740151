"""A stored search job: its candidates, its Pareto front under budgets, and export.

:func:`open_job` finds a job in a store; :class:`Job` reads it. Everything here reads the store
and the job directory; nothing trains or searches.
"""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pandas as pd

from hwnas.config import Config
from hwnas.errors import JobError
from hwnas.job.paths import JobPaths
from hwnas.job.store import JobStore, default_store_url, live_status
from hwnas.search.front import query_front
from hwnas.spaces.registry import build_space


def id_ranges(ids: list[int]) -> str:
    """``[0, 1, 2, 5, 7, 8]`` as ``0-2, 5, 7-8``: every id, however many, in a line."""
    runs = []
    for _, run in itertools.groupby(enumerate(sorted(set(ids))), key=lambda pair: pair[1] - pair[0]):
        values = [v for _, v in run]
        runs.append(str(values[0]) if len(values) == 1 else f"{values[0]}-{values[-1]}")
    return ", ".join(runs)


class Job:
    def __init__(self, name: str, store: JobStore, study):
        self.name, self.store, self.study = name, store, study

    def __repr__(self) -> str:
        return f"Job({self.name!r}, status={self.status!r}, store={self.store.display!r})"

    @property
    def attrs(self) -> dict[str, Any]:
        return self.study.user_attrs

    @property
    def status(self) -> str:
        """done, failed, interrupted, running, or killed (see :func:`~hwnas.job.store.live_status`)."""
        return live_status(self.attrs)

    @property
    def objectives(self) -> list[str]:
        return list(self.attrs["objectives"])

    @property
    def job_dir(self) -> Path:
        return Path(self.attrs["job_dir"])

    @property
    def paths(self) -> JobPaths:
        """Where the job's files are (checkpoint, supernet weights, tables, samples)."""
        return JobPaths(self.job_dir)

    @property
    def config(self) -> Config:
        return Config.model_validate(self.attrs["config"])

    def space(self):
        """The job's search space, rebuilt from its config and data shape (no data is loaded)."""

        return build_space(self.config.space, tuple(self.attrs["input_shape"]), int(self.attrs["num_classes"]))

    def predictor_quality(self) -> list[dict[str, Any]]:
        """Every fitted predictor's holdout quality: Kendall tau, RMSE, MAPE, share within 10 %."""
        rows = [{"predictor": f"accuracy ({self.config.predictor.model})",
                 **self.attrs.get("predictor_quality", {}).get("accuracy", {})}]
        latency = self.attrs.get("latency_predictor")
        if latency:
            for name in ("table_sum", "learned"):
                chosen = " *" if latency["chosen"] == name else ""
                rows.append({"predictor": f"latency {name.replace('_', ' ')}{chosen}", **latency[name]})
        return [r for r in rows if "kendall_tau" in r]

    def candidates(self) -> pd.DataFrame:
        """Every really evaluated candidate, one row each (``id`` is the candidate id)."""
        return self.store.candidates(self.study)

    def candidate(self, candidate_id: int) -> dict[str, Any]:
        frame = self.candidates()
        row = frame[frame["id"] == int(candidate_id)]
        if row.empty:
            ids = id_ranges(frame["id"].astype(int).tolist())
            raise JobError(f"job {self.name!r} has no candidate {candidate_id}; its candidates: {ids or 'none'} "
                           f"({len(frame)} in all)")
        return row.iloc[0].to_dict()

    def front(self, max_latency_ms: float | None = None, max_energy_mj: float | None = None,
              min_accuracy: float | None = None) -> pd.DataFrame:
        """Pareto-optimal candidates meeting every budget, best validation accuracy first (test
        accuracy is in the rows, never used to choose)."""
        return query_front(self.candidates(), self.objectives, max_latency_ms, max_energy_mj, min_accuracy)

    def export(self, out: str | Path, candidate: int | None = None, max_latency_ms: float | None = None,
               max_energy_mj: float | None = None, min_accuracy: float | None = None,
               formats: tuple[str, ...] = ("pt",), finetune_epochs: int = 0) -> Path:
        """Export one candidate (by id, or the one of best validation accuracy meeting the budgets) to ``out``,
        in ``formats`` (see :data:`hwnas.export.candidate.FORMATS`, or ``("all",)``), optionally fine-tuned."""

        budgets = (max_latency_ms, max_energy_mj, min_accuracy)
        if candidate is not None and any(b is not None for b in budgets):
            raise JobError("give a candidate id or budgets, not both: budgets choose the candidate")
        if candidate is None:
            if all(b is None for b in budgets):
                raise JobError("choose the subnet to export: give a candidate id or a budget")
            candidate = int(self.front(max_latency_ms, max_energy_mj, min_accuracy).iloc[0]["id"])
        # Imported here: export pulls in torch, timm and the training code, which reading a job and
        # querying its front never need (hwnas front answers in about 1 s instead of 4 s).
        from hwnas.export.candidate import export_candidate

        return export_candidate(self, int(candidate), Path(out), tuple(formats), finetune_epochs)


def open_job(name: str, store: str | None = None, workdir: str | Path = "runs") -> Job:
    """Open a stored job; ``store`` defaults to the SQLite file in ``workdir``."""
    job_store = JobStore(store or default_store_url(workdir), create=False)
    return Job(name, job_store, job_store.open(name))
