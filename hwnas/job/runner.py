"""One search job, stage by stage: train -> profile -> fit predictor -> search -> evaluate.

Every stage leaves an artifact in the job directory (written atomically) or rows in the store,
and skips work that is already there, so rerunning the same command after a kill resumes the job:
training from its last epoch checkpoint, profiling from the last flushed lookup-table entry,
predictor sampling from the last flushed sample, real evaluation from the last committed
candidate.

Every artifact read back on resume is checked against the sha256 digest recorded when it was
written (the checkpoint and the supernet weights carry theirs inside; the lookup tables and the
sample caches have a ``FILE.sha256`` beside them), so one truncated or altered on disk is refused
with its name and what to do, never used (see :mod:`hwnas.utils.io`).

One process at a time runs a job: :meth:`SearchJob.run` holds an exclusive lock on the job
directory's ``.lock`` file, and a second process on the same job name is refused at once with the
holder's pid. The kernel drops the lock when its holder dies, even by SIGKILL, so a killed job is
resumed by simply rerunning it. Jobs of other names share the store freely.
"""
from __future__ import annotations

import io
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml

import hwnas
from hwnas.config import Config
from hwnas.errors import HwnasError, JobError, JobLockedError
from hwnas.hwmodels.devices import build_device, tables_dir
from hwnas.hwmodels.lut import verify_table_file
from hwnas.job.events import EventLog, NullLog
from hwnas.job.handle import Job
from hwnas.job.paths import JobPaths, config_hash, now, recorded_config
from hwnas.job.scorers import TIMED, stages_for
from hwnas.job.store import JobStore
from hwnas.spaces.dims import Arch
from hwnas.utils.io import LockBusy, atomic_path, atomic_path_with_digest, file_lock, verify_digest
from hwnas.utils.progress import Reporter


class SearchJob:
    """Runs the stages of one job (those of its scorer, :func:`hwnas.job.scorers.stages_for`); see the module docstring
    for how it resumes."""

    def __init__(self, config: Config, name: str, store: JobStore, workdir: Path, compute: torch.device,
                 reporter: Reporter):
        self.config, self.name, self.store, self.reporter = config, name, store, reporter
        self.workdir = workdir
        self.paths = JobPaths(workdir / name)
        self.compute = compute
        self.seconds: dict[str, float] = {}
        self.events: EventLog | NullLog = NullLog()

    # -- bookkeeping ---------------------------------------------------------------------------
    def _open_or_create(self):
        chash = config_hash(self.config)
        objectives = list(self.config.search.objectives)
        attrs = {"status": "running", "space": self.config.space.type, "device": self.config.device.name,
                 "objectives": objectives, "created": now(), "config": recorded_config(self.config),
                 "seed": self.config.seed, "job_dir": str(self.paths.root.resolve()),
                 "hwnas_version": hwnas.__version__,
                 "config_hash": chash}  # last: its presence says the job was fully created
        if self.store.exists(self.name):
            study = self.store.open(self.name)
            recorded = study.user_attrs.get("config_hash")
            if recorded is None and not study.trials:  # a run killed while creating it: finish that
                self.store.describe(study, objectives, attrs)
            elif recorded != chash:
                raise JobError(f"job {self.name!r} already exists with a different config; pass --name "
                               "for a new job, or rerun with its config to resume it")
            return study
        return self.store.create(self.name, objectives, attrs)

    def add_seconds(self, stage: str, seconds: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    def _timed(self, stage: str, fn, *args):
        self.events.write("stage_started", stage=stage)
        started = time.perf_counter()
        result = fn(*args)
        elapsed = time.perf_counter() - started
        self.add_seconds(stage, elapsed)
        self.events.write("stage_finished", stage=stage, seconds=round(elapsed, 3))
        return result

    def run(self):
        """Run or resume the job, holding its lock (see the module docstring)."""
        try:
            with file_lock(self.paths.lock):
                return self._run()
        except LockBusy as busy:
            holder = busy.holder
            who = f"pid {holder.get('pid', '?')}"
            if holder.get("host") and holder["host"] != socket.gethostname():
                who += f" on {holder['host']}"
            raise JobLockedError(f"job {self.name!r} is running in another process ({who}, since "
                                 f"{holder.get('since', '?')}); wait for it to finish, or pass --name for "
                                 "a new job") from None

    def _run(self):
        self.study = self._open_or_create()
        if self.study.user_attrs.get("status") == "done":
            return Job(self.name, self.store, self.study)
        self.paths.root.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.paths.config) as tmp:
            tmp.write_text(yaml.safe_dump(recorded_config(self.config), sort_keys=False))
        self.events = EventLog(self.paths.events)
        found = self.study.user_attrs.get("status")
        # "running" with the lock free: the last run died without a word (SIGKILL, power cut)
        self.events.write("run_started", found=found, hwnas_version=hwnas.__version__)
        self.study.set_user_attr("status", "running")
        outcome = "interrupted"
        try:
            results: dict[str, Any] = {}
            for stage in stages_for(self.config):
                results[stage.name] = (self._timed(stage.name, stage.run, self, results) if stage.journaled
                                       else stage.run(self, results))
            outcome = "done"
        except HwnasError as exc:
            outcome = "failed"
            self._record_stop({"status": "failed"})
            self.events.write("error", message=str(exc))
            raise
        except BaseException:
            self._record_stop({"status": "interrupted"})
            raise
        finally:
            previous = self.study.user_attrs.get("stage_seconds", {})
            total = {k: previous.get(k, 0.0) + self.seconds.get(k, 0.0) for k in TIMED
                     if k in previous or k in self.seconds}
            self._record_stop({"stage_seconds": total})
            self.events.write("run_finished", status=outcome)
        self.study.set_user_attr("status", "done")
        self.study.set_user_attr("finished", now())
        return Job(self.name, self.store, self.store.open(self.name))

    def _record_stop(self, attrs: dict[str, Any]) -> None:
        """Record why and when a run stopped, if the store still takes writes: after a full disk
        it may not, and the error to report is the one that stopped the run, not this one. A
        status left at "running" is what a rerun expects after a kill anyway."""
        try:
            for key, value in attrs.items():
                self.study.set_user_attr(key, value)
        except Exception:  # noqa: BLE001 - best effort on the way out of a failed run
            pass

    # -- what the stages share ------------------------------------------------------------------
    def device(self, config):
        """The device ``config`` names; an imported table device's table (in ``WORKDIR/devices``,
        written by ``hwnas import-table``) must carry its digest, like every table hwnas writes."""
        device = build_device(config, self.workdir)
        path = getattr(device, "path", None)
        if getattr(device, "kind", None) == "table" and path is not None and \
                Path(path).resolve().parent == tables_dir(self.workdir).resolve():
            verify_table_file(Path(path), "import it again with hwnas import-table")
        return device

    def measure_resumably(self, archs: list[Arch], path: Path, column: str, measure,
                           description: str, batch: int = 0) -> np.ndarray:
        """``measure(arch)`` for every arch, committed to ``path`` (a CSV of arch and ``column``)
        after each one, so a killed job measures nothing twice and loses at most the one in
        flight (a rewrite of a few KB costs far less than one measurement); values in arch order.

        Each flush rewrites the whole file atomically (it is not appended to), so one digest of the
        whole file (``FILE.sha256``, updated with every flush, see
        :func:`~hwnas.utils.io.atomic_path_with_digest`) covers it; a cache that no longer matches
        it is refused, never resumed from.

        With ``batch``, ``measure`` takes a list of up to ``batch`` archs and returns their values
        (a measured device times a batch interleaved in rounds); each batch is committed whole."""
        done: dict[str, float] = {}
        remedy = "delete it to measure again"
        if path.exists():
            try:
                data = path.read_bytes()
                frame = pd.read_csv(io.BytesIO(data))
                done = dict(zip(frame["arch"].astype(str), pd.to_numeric(frame[column])))
            except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError, KeyError,
                    ValueError, TypeError) as exc:
                raise HwnasError(f"sample cache {path} is unreadable ({str(exc).splitlines()[0]}); "
                                 f"{remedy}") from None
            verify_digest(path, what="sample cache", remedy=remedy, data=data)
        todo = [a for a in archs if a.to_json() not in done]
        with self.reporter.task(description, len(archs)) as advance:
            advance(len(archs) - len(todo))
            size, count = max(batch, 1), len(archs) - len(todo)
            for start in range(0, len(todo), size):
                chunk = todo[start:start + size]
                for arch in chunk:
                    self.events.write("sample_started", column=column, arch=arch.to_json())
                values = measure(chunk) if batch else [measure(chunk[0])]
                for arch, value in zip(chunk, values):
                    done[arch.to_json()] = value
                with atomic_path_with_digest(path) as tmp:
                    pd.DataFrame({"arch": list(done), column: list(done.values())}).to_csv(tmp, index=False)
                for arch in chunk:
                    self.events.write("sampled", column=column, arch=arch.to_json())
                count += len(chunk)
                advance(count)
        return np.array([done[a.to_json()] for a in archs])
