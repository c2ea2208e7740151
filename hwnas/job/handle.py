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
from hwnas.errors import HwnasError, JobError
from hwnas.footprint import subnet_memory
from hwnas.job.paths import JobPaths
from hwnas.job.store import JobStore, arch_of, default_store_url, live_status
from hwnas.metrics import QualityMetric, quality_of
from hwnas.search.budgets import Budgets
from hwnas.search.front import query_front
from hwnas.spaces.registry import build_space, op_graph, op_inputs


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
    def quality(self) -> QualityMetric:
        """The job's quality metric: accuracy, or perplexity for a language model."""
        return quality_of(self.objectives)

    @property
    def latency_unit(self) -> str:
        """What one latency figure of the job times, as its space states it (``space.latency_unit``)."""
        return self.attrs.get("latency_unit") or "per inference"

    @property
    def latency_phases(self) -> dict[str, str]:
        """The latency phases the job priced beside its latency (``prefill``: an LM's prefill), each
        with what one figure times, as its space states it; ``{}`` for none."""
        return dict(self.attrs.get("latency_phases") or {})

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
        name = self.quality.name
        rows = [{"predictor": f"{name} ({self.config.predictor.model})",
                 **self.attrs.get("predictor_quality", {}).get(name, {})}]
        for phase in ("latency", *self.latency_phases):
            latency = self.attrs.get(f"{phase}_predictor")
            if latency:
                for name in ("table_sum", "learned"):
                    chosen = " *" if latency["chosen"] == name else ""
                    rows.append({"predictor": f"{phase} {name.replace('_', ' ')}{chosen}", **latency[name]})
        return [r for r in rows if "kendall_tau" in r]

    def candidates(self) -> pd.DataFrame:
        """Every really evaluated candidate, one row each (``id`` is the candidate id)."""
        return self._with_memory(self.store.candidates(self.study))

    def _with_memory(self, frame: pd.DataFrame) -> pd.DataFrame:
        """A job stored before ``memory_kb`` existed gets it from each candidate's op graph, at the
        config's device batch size: the figure the search would have stored (it needs no device)."""
        missing = frame["memory_kb"].isna()
        if not missing.any() or not {"config", "input_shape", "num_classes"} <= set(self.attrs):
            return frame.astype({"memory_kb": float, "activation_kb": float})  # a hand-made store: NaN
        try:
            space, batch = self.space(), self.config.device.batch_size
            for i in frame.index[missing]:
                spec = space.subnet_spec(space.validate(arch_of(frame.loc[i]).to_dict()))
                ops = op_graph(spec)
                figures = subnet_memory(ops, op_inputs(spec, ops), batch)
                frame.loc[i, ["memory_kb", "activation_kb"]] = figures["memory_kb"], figures["activation_kb"]
        except HwnasError:  # a space this hwnas cannot rebuild: the figures stay NaN
            pass
        return frame.astype({"memory_kb": float, "activation_kb": float})

    def candidate(self, candidate_id: int) -> dict[str, Any]:
        frame = self.candidates()
        row = frame[frame["id"] == int(candidate_id)]
        if row.empty:
            ids = id_ranges(frame["id"].astype(int).tolist())
            raise JobError(f"job {self.name!r} has no candidate {candidate_id}; its candidates: {ids or 'none'} "
                           f"({len(frame)} in all)")
        return row.iloc[0].to_dict()

    def front(self, budgets: Budgets | dict | None = None, **limits: float | None) -> pd.DataFrame:
        """Pareto-optimal candidates meeting every budget, best validation quality first (accuracy, or
        perplexity for a language model; test figures are in the rows, never used to choose). Budgets
        are a :class:`Budgets` and / or keywords: ``max_latency_ms``, ``max_prefill_ms`` (a job that
        priced prefill), ``max_energy_mj``, ``max_memory_kb``, ``min_accuracy``, ``max_perplexity``."""
        return query_front(self.candidates(), self.objectives, Budgets.of(budgets, **limits))

    def export(self, out: str | Path, candidate: int | None = None, budgets: Budgets | dict | None = None,
               formats: tuple[str, ...] = ("pt",), finetune_epochs: int = 0, **limits: float | None) -> Path:
        """Export one candidate (by id, or the one of best validation accuracy meeting the budgets,
        given as in :meth:`front`) to ``out``, in ``formats`` (see :data:`hwnas.export.candidate.FORMATS`,
        or ``("all",)``), optionally fine-tuned."""

        chosen_by = Budgets.of(budgets, **limits)
        if candidate is not None and chosen_by:
            raise JobError("give a candidate id or budgets, not both: budgets choose the candidate")
        if candidate is None:
            if not chosen_by:
                raise JobError("choose the subnet to export: give a candidate id or a budget")
            candidate = int(self.front(chosen_by).iloc[0]["id"])
        # Imported here: export pulls in torch, timm and the training code, which reading a job and
        # querying its front never need (hwnas front answers in about 1 s instead of 4 s).
        from hwnas.export.candidate import export_candidate

        return export_candidate(self, int(candidate), Path(out), tuple(formats), finetune_epochs)


def open_job(name: str, store: str | None = None, workdir: str | Path = "runs") -> Job:
    """Open a stored job; ``store`` defaults to the SQLite file in ``workdir``."""
    job_store = JobStore(store or default_store_url(workdir), create=False)
    return Job(name, job_store, job_store.open(name))
