"""The job store: Optuna's RDB storage, one study per job, one trial per real evaluation.

Optuna's schema is maintained, handles concurrent writers (SQLite by default, any SQLAlchemy URL
such as PostgreSQL for a team), and lets optuna-dashboard show a job. Each really evaluated
candidate is one COMPLETE trial whose params are the arch, whose values are the job's objectives
(named by ``study.metric_names``: ``accuracy``, ``latency_ms``, ...) and whose user attributes
hold every metric; :meth:`JobStore.add_candidate` commits it at once,
so a killed job loses nothing it evaluated. Job metadata lives in the study's user attributes.
"""
from __future__ import annotations

import json
import logging
import os
import time
import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, OperationalError

from hwnas.errors import HwnasError, JobError
from hwnas.metrics import quality_columns
from hwnas.search.objectives import MAXIMIZED, objective_column, phase_columns
from hwnas.spaces.dims import Arch
from hwnas.utils.io import file_lock, lock_held

optuna.logging.set_verbosity(logging.WARNING)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

# val_accuracy chooses (it is the accuracy objective); test_accuracy is reported only. latency_source
# says where latency_ms came from: "measured" in this job on its device, or the "table" or
# "analytical" model of a device that does not measure.
CANDIDATE_COLUMNS = ["id", "arch", "val_accuracy", "test_accuracy", "latency_ms", "latency_spread_ms", "latency_source",
                     "energy_mj",
                     "params", "flops", "macs", "bitops", "weight_kb", "memory_kb", "activation_kb",
                     "predicted_accuracy", "predicted_accuracy_std",
                     "predicted_latency_ms", "measured"]


SCHEMA_RACE_RETRIES = 5


def default_store_url(workdir: str | Path) -> str:
    return f"sqlite:///{Path(workdir) / 'hwnas.db'}"


def display_url(url: str) -> str:
    """The URL with any password masked: safe for logs, tables and manifests."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "<invalid store URL>"


def _redacted(url: str) -> str:
    """A URL that does not parse, with everything between its ``//`` and its last ``@`` masked:
    a malformed URL may still hold a password, and the error that echoes it must not."""
    head, at, tail = url.rpartition("@")
    if not at:
        return url
    scheme, slashes, _ = head.partition("//")
    return f"{scheme}//***@{tail}" if slashes else f"***@{tail}"


def live_status(attrs: dict[str, Any]) -> str:
    """A job's stored status, except that a "running" job whose lock nobody holds is "killed": it
    died without a word (SIGKILL, out of memory, power cut); rerunning it resumes it."""
    status = attrs.get("status", "?")
    if status == "running" and attrs.get("job_dir"):
        if lock_held(Path(attrs["job_dir"]) / ".lock") is False:
            return "killed"
    return status


class JobStore:
    def __init__(self, url: str, create: bool = True):
        self.url = url
        try:
            parsed = make_url(url)
        except (ArgumentError, ValueError):
            raise HwnasError(f"store URL {_redacted(url)!r} is not a SQLAlchemy URL (e.g. sqlite:///runs/hwnas.db)") from None
        creating = nullcontext()
        if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
            db = Path(parsed.database)
            if not db.exists() and not create:
                raise JobError(f"no job store at {db} (run `hwnas search` first, or pass --store)")
            db.parent.mkdir(parents=True, exist_ok=True)
            if not db.exists() and os.access(db.parent, os.W_OK):  # creators take turns (see _open_storage)
                creating = file_lock(db.with_name(db.name + ".lock"), blocking=True)
        with creating:
            self.storage = self._open_storage(url, parsed)

    def _open_storage(self, url: str, parsed) -> optuna.storages.RDBStorage:
        """Optuna's storage, its schema created if the database has none. Two processes creating
        one schema at once both find none, and the slower one's ``CREATE TABLE`` or schema-version
        insert collides with the faster one's: it then opens the schema the other made. (A new
        SQLite file is also created under a lock beside it, which avoids the collision there.)"""
        attempt = 0
        while True:
            try:
                return optuna.storages.RDBStorage(url, engine_kwargs=self._engine_kwargs(parsed))
            except Exception as exc:  # driver missing, server down, unwritable file: one clear line
                text = str(exc).lower()
                collided = isinstance(exc, (IntegrityError, OperationalError)) and (
                    "already exists" in text or "unique" in text)
                if not collided or attempt == SCHEMA_RACE_RETRIES:
                    raise HwnasError(f"cannot open store {display_url(url)}: {str(exc).splitlines()[0]}") from None
            attempt += 1
            time.sleep(0.5 * attempt)

    @staticmethod
    def _engine_kwargs(parsed) -> dict[str, Any]:
        if parsed.get_backend_name() == "sqlite":
            return {"connect_args": {"timeout": 60}}
        return {"pool_pre_ping": True}

    @property
    def display(self) -> str:
        return display_url(self.url)

    # -- jobs ------------------------------------------------------------------------------
    def job_names(self) -> list[str]:
        return [s.study_name for s in self.storage.get_all_studies()]

    def exists(self, name: str) -> bool:
        return name in self.job_names()

    def create(self, name: str, objectives: list[str], attrs: dict[str, Any]) -> optuna.Study:
        directions = ["maximize" if o in MAXIMIZED else "minimize" for o in objectives]  # accuracy up, the rest down
        try:
            study = optuna.create_study(study_name=name, storage=self.storage, directions=directions)
        except optuna.exceptions.DuplicatedStudyError:  # another process created it since exists()
            raise JobError(f"job {name!r} was just created in store {self.display} by another process; "
                           "rerun to resume it once that one is done, or pass --name for a new job") from None
        self.describe(study, objectives, attrs)
        return study

    @staticmethod
    def describe(study: optuna.Study, objectives: list[str], attrs: dict[str, Any]) -> None:
        """Name the study's values and set its attributes, in ``attrs``' order: a job puts the
        attribute it checks on resume last, so a process killed in here leaves a study that
        visibly lacks it (and :meth:`describe` is called again), never a half-described one that
        passes for whole."""
        # Named values: optuna-dashboard labels the Pareto-front and history axes with them.
        with warnings.catch_warnings():  # still marked experimental by optuna
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([objective_column(o) for o in objectives])
        for key, value in attrs.items():
            study.set_user_attr(key, value)

    def open(self, name: str) -> optuna.Study:
        try:
            return optuna.load_study(study_name=name, storage=self.storage)
        except KeyError:
            known = self.job_names()
            hint = f"; jobs here: {', '.join(known[:8])}" if known else "; the store has no jobs"
            raise JobError(f"no job named {name!r} in store {self.display}{hint}") from None

    def list_jobs(self) -> list[dict[str, Any]]:
        rows = []
        for summary in optuna.get_all_study_summaries(self.storage, include_best_trial=False):
            attrs = summary.user_attrs
            rows.append({"name": summary.study_name, "status": live_status(attrs),
                         "space": attrs.get("space", "?"), "device": attrs.get("device", "?"),
                         "candidates": summary.n_trials, "created": attrs.get("created", ""),
                         "budget": (attrs.get("progress") or {}).get("budget"),
                         "hypervolume": (attrs.get("progress") or {}).get("hypervolume")})
        return rows

    # -- candidates ------------------------------------------------------------------------
    @staticmethod
    def add_candidate(study: optuna.Study, space, arch: Arch, metrics: dict[str, Any]) -> int:
        """Commit one really evaluated candidate; return its id (the trial number)."""
        objectives = study.user_attrs["objectives"]
        values = [float(metrics[objective_column(o)]) for o in objectives]
        distributions = {d.name: optuna.distributions.CategoricalDistribution(list(d.choices)) for d in space.dims}
        trial = optuna.trial.create_trial(
            params=arch.to_dict(), distributions=distributions, values=values,
            user_attrs={**metrics, "arch": arch.to_json()})
        study.add_trial(trial)
        return _last_number(study, arch)

    @staticmethod
    def candidates(study: optuna.Study, extra: tuple[str, ...] = ()) -> pd.DataFrame:
        """One row per committed candidate: the standard columns, the columns of the job's quality
        metric where it is not accuracy (``val_perplexity``, ...), those of the latency phases it
        priced (``prefill_ms``, ...), any per-device objective columns (``energy_mj@DEVICE``) and the
        ``extra`` attributes asked for."""
        quality = [c for c in quality_columns(study.user_attrs.get("objectives") or ()) if c not in CANDIDATE_COLUMNS]
        phases = [c for phase in study.user_attrs.get("latency_phases") or {} for c in phase_columns(phase)]
        extra = tuple(dict.fromkeys(c for c in (*quality, *phases, *extra) if c not in CANDIDATE_COLUMNS))  # each once
        rows, device_columns = [], []
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
            attrs = t.user_attrs
            device_columns += [k for k in attrs if "@" in k and k not in device_columns]
            rows.append({"id": t.number, **{c: _attr(attrs, c) for c in CANDIDATE_COLUMNS if c != "id"},
                         **{c: attrs.get(c) for c in extra}, **{k: v for k, v in attrs.items() if "@" in k}})
        frame = pd.DataFrame(rows, columns=[*CANDIDATE_COLUMNS, *extra, *device_columns])
        frame["measured"] = frame["measured"].astype(bool)
        return frame


def _attr(attrs: dict[str, Any], column: str) -> Any:
    """A candidate's column; a store written before test and validation accuracy were named apart
    kept test accuracy as ``accuracy``, and no latency source (only whether it was measured)."""
    if column == "test_accuracy" and column not in attrs:
        return attrs.get("accuracy")
    if column == "latency_source" and column not in attrs:
        return "measured" if attrs.get("measured") else "model"
    return attrs.get(column)


def _last_number(study: optuna.Study, arch: Arch) -> int:
    key = arch.to_json()
    for t in reversed(study.get_trials(deepcopy=False)):
        if t.user_attrs.get("arch") == key:
            return t.number
    raise JobError("candidate was not stored")


def arch_of(row: dict[str, Any] | pd.Series) -> Arch:
    return Arch.from_dict(json.loads(row["arch"]))
