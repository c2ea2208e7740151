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

import datetime as _dt
import io
import re
import socket
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import hwnas
from hwnas.config import Config, load_config
from hwnas.data import load_data
from hwnas.errors import ConfigError, HwnasError, JobError, JobLockedError
from hwnas.events import EVENTS_FILE, EventLog, NullLog
from hwnas.hwmodels.cost import CostModel
from hwnas.hwmodels.devices import build_device, tables_dir
from hwnas.hwmodels.energy import energy_model
from hwnas.hwmodels.graph import op_graph
from hwnas.hwmodels.lut import verify_table_file
from hwnas.hwmodels.profiler import ProfileResult, build_lookup_table
from hwnas.predictors.accuracy import ArchFeatures, fit_with_holdout
from hwnas.predictors.latency import LearnedLatencyPredictor, select_latency_predictor
from hwnas.progress import Reporter
from hwnas.search.store import JobStore, default_store_url, display_url
from hwnas.spaces.dims import Arch
from hwnas.spaces.evaluation import evaluate_subnet, initialize_quantizers, recalibrate_bn
from hwnas.spaces.registry import build_space, space_entry
from hwnas.spaces.trainer import SupernetTrainer
from hwnas.utils.io import (LockBusy, atomic_path, atomic_path_with_digest, check_digest, file_lock, stable_hash,
                            state_digest, verify_digest)

STAGES = ("load", "train", "profile", "predictor", "search", "evaluate")
EVAL_BATCH = 256  # batch for BN recalibration and accuracy: large batches, few calls
JOB_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
WEIGHTS_DIGEST_KEY = "hwnas_sha256"  # safetensors metadata: state_digest of the tensors
REBUILD_WEIGHTS = ("delete it and rerun `hwnas search` for its job: the weights are rebuilt from the job's "
                   "checkpoint.pt (or retrained if that is gone)")


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def check_job_name(name: str) -> str:
    # fullmatch: re.match's "$" also matches before a trailing newline ("name\n" would pass)
    if not re.fullmatch(JOB_NAME_PATTERN, name or "") or ".." in name:
        raise JobError(f"job name {name!r} must be 1-100 letters, digits, '.', '_' or '-', "
                       "start with a letter or digit, and contain no '..' or '/'")
    return name


def recorded_config(config: Config) -> dict[str, Any]:
    """The config as a job records it (store attributes, ``config.yaml``): the store URL's
    password masked, since both are read by people who must not learn it."""
    tree = config.to_dict()
    if tree.get("store"):
        tree["store"] = display_url(tree["store"])
    return tree


def resolve_compute(compute: str) -> torch.device:
    if compute == "cuda" and not torch.cuda.is_available():
        raise HwnasError("--compute cuda: no CUDA device is available (use auto or cpu)")
    if compute in ("cuda", "auto") and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def config_hash(config: Config) -> str:
    """What determines a job's results: everything but where it is stored and where it computes."""
    tree = config.to_dict()
    for key in ("name", "workdir", "store", "compute", "workers", "ray_address"):
        tree.pop(key, None)
    return stable_hash(tree)


@dataclass
class JobPaths:
    root: Path

    @property
    def checkpoint(self) -> Path:
        return self.root / "checkpoint.pt"

    @property
    def supernet(self) -> Path:
        return self.root / "supernet.safetensors"

    @property
    def lut(self) -> Path:
        return self.root / "lut.csv"

    @property
    def samples(self) -> Path:
        return self.root / "accuracy_samples.csv"

    @property
    def latency_samples(self) -> Path:
        return self.root / "latency_samples.csv"

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def lock(self) -> Path:
        return self.root / ".lock"

    @property
    def events(self) -> Path:
        return self.root / EVENTS_FILE


def save_weights(path: Path, state: dict[str, torch.Tensor]) -> None:
    """The supernet's weights as safetensors, with the digest of the tensors in the file's own
    metadata (one file, written atomically: weights and digest cannot disagree)."""
    tensors = {k: v.contiguous() for k, v in state.items()}
    digest = state_digest(dict(sorted(tensors.items())))
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={WEIGHTS_DIGEST_KEY: digest})


def load_weights_file(path: Path, device: str = "cpu") -> dict[str, torch.Tensor]:
    """The tensors of a file :func:`save_weights` wrote, checked against their recorded digest."""
    try:
        state = load_file(str(path), device=device)
        with safe_open(str(path), framework="pt") as fh:
            recorded = (fh.metadata() or {}).get(WEIGHTS_DIGEST_KEY)
    except Exception as exc:
        raise HwnasError(f"supernet weights {path} are unreadable ({str(exc).splitlines()[0]}); "
                         f"{REBUILD_WEIGHTS}") from None
    check_digest(path, state_digest(dict(sorted(state.items()))), recorded, what="supernet weights",
                 remedy=REBUILD_WEIGHTS, where=f"its metadata entry {WEIGHTS_DIGEST_KEY!r}")
    return state


@dataclass
class Components:
    """What every consumer of a job rebuilds from its config: data, space and supernet."""

    config: Config
    data: Any
    space: Any
    supernet: Any
    compute: torch.device

    @classmethod
    def build(cls, config: Config, compute: torch.device) -> "Components":
        c = config.data
        data = load_data(c.dataset, c.root, c.image_size, c.val_fraction, c.test_fraction, c.split_seed)
        space = build_space(config.space, data.input_shape, data.num_classes)
        torch.manual_seed(config.seed)
        supernet = space_entry(config.space.type).build_supernet(space).to(compute)
        if compute.type == "cpu":
            # oneDNN's depthwise convolutions (forward and backward) run several times faster in
            # channels-last layout. The layout is set once here, for training, evaluation and
            # export alike: quantizers round, so even float-rounding differences between layouts
            # could move a value across a level and change an evaluated accuracy.
            supernet.to(memory_format=torch.channels_last)
        return cls(config, data, space, supernet, compute)

    def load_weights(self, path: Path) -> None:
        state = load_weights_file(path, str(self.compute))
        try:
            self.supernet.load_state_dict(state)
        except Exception as exc:
            raise HwnasError(f"supernet weights {path} are unreadable ({str(exc).splitlines()[0]})") from None

    def settle_quantizers(self) -> int:
        """Set the quantizer steps training never ran, identically in every process (see
        :func:`~hwnas.spaces.evaluation.initialize_quantizers`)."""
        return initialize_quantizers(self.supernet, self.space, self.data.train, device=self.compute)

    def evaluate(self, arch: Arch, split: str) -> float:
        t = self.config.train
        return evaluate_subnet(self.supernet, arch, self.data, split, t.recalibration_samples,
                               EVAL_BATCH, self.compute)

    def recalibrated_subnet(self, arch: Arch) -> torch.nn.Module:
        """The standalone subnet of ``arch`` with BN statistics recalibrated, on the CPU."""
        self.supernet.set_active(arch)
        recalibrate_bn(self.supernet, self.data.train, self.config.train.recalibration_samples,
                       EVAL_BATCH, self.compute)
        return self.supernet.extract().cpu().eval()


def profile_device(device, space, space_type: str, workdir: Path, reporter: Reporter, max_spread: float,
                   refresh: bool = False, events: EventLog | NullLog | None = None) -> ProfileResult:
    """Build or refresh a measured device's table in ``workdir/luts`` (see hwnas.hwmodels.profiler)."""
    build_standalone = space_entry(space_type).build_standalone
    journal = events or NullLog()
    with reporter.task(f"profile {device.name}", len(space.covering_archs())) as advance:
        return build_lookup_table(device, space, build_standalone, workdir / "luts",
                                  progress=lambda i, n: advance(i, total=n), max_spread=max_spread,
                                  refresh=refresh, on_commit=lambda keys: journal.write("ops_measured", keys=keys))


class SearchJob:
    """Runs the stages of one job; see the module docstring for how it resumes."""

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

    def _timed(self, stage: str, fn, *args):
        self.events.write("stage_started", stage=stage)
        started = time.perf_counter()
        result = fn(*args)
        elapsed = time.perf_counter() - started
        self.seconds[stage] = self.seconds.get(stage, 0.0) + elapsed
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
        from hwnas.job import Job

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
            parts = self._timed("load", Components.build, self.config, self.compute)
            self.study.set_user_attr("input_shape", list(parts.data.input_shape))
            self.study.set_user_attr("num_classes", parts.data.num_classes)
            self._timed("train", self.train, parts)
            cost_model = self._timed("profile", self.profile, parts)
            extra_costs = self._timed("profile", self.extra_cost_models, parts)
            fitted = self._timed("predictor", self.fit_predictor, parts)
            self.search(parts, cost_model, extra_costs, fitted)
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
            total = {k: previous.get(k, 0.0) + self.seconds.get(k, 0.0) for k in STAGES
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

    # -- stages --------------------------------------------------------------------------------
    def train(self, parts: Components) -> None:
        if self.paths.supernet.exists():
            parts.load_weights(self.paths.supernet)
            return
        cfg = self.config.train
        with self.reporter.task("train supernet", cfg.epochs) as advance:
            def on_epoch(epoch: int, epochs: int, record: dict) -> None:  # after its checkpoint is saved
                self.events.write("epoch_finished", epoch=epoch - 1, loss=record["loss"])
                advance(epoch, note=f"loss {record['loss']:.3f}")
            if self.config.workers > 1 or self.config.ray_address:
                # Ray Train workers share each step's sandwich subnets: the same weights as serial
                from hwnas.spaces.distributed import RaySupernetTrainer

                trainer = RaySupernetTrainer(self.config, parts.supernet, parts.data, workers=self.config.workers,
                                             address=self.config.ray_address, checkpoint_path=self.paths.checkpoint,
                                             on_epoch=on_epoch)
            else:
                trainer = SupernetTrainer(parts.supernet, parts.data, cfg, self.config.seed, self.compute,
                                          self.config.data.batch_size, self.paths.checkpoint, on_epoch=on_epoch)
            if trainer.try_resume():
                advance(trainer.start_epoch)
            history = trainer.train()
        parts.settle_quantizers()
        # The weights file marks the stage done, so the attributes are recorded first: a kill
        # between the two resumes from the last epoch's checkpoint (training is over, nothing
        # retrains) and records them again, instead of leaving a trained job without its history.
        self.study.set_user_attr("train_history", history)
        largest = parts.evaluate(parts.space.largest(), "test")
        smallest = parts.evaluate(parts.space.smallest(), "test")
        self.study.set_user_attr("supernet_test_accuracy", {"largest": largest, "smallest": smallest})
        save_weights(self.paths.supernet, parts.supernet.state_dict())
        self.reporter.info(f"supernet test accuracy: largest {largest:.4f}, smallest {smallest:.4f}")

    def _device(self, config):
        """The device ``config`` names; an imported table device's table (in ``WORKDIR/devices``,
        written by ``hwnas import-table``) must carry its digest, like every table hwnas writes."""
        device = build_device(config, self.workdir)
        path = getattr(device, "path", None)
        if getattr(device, "kind", None) == "table" and path is not None and \
                Path(path).resolve().parent == tables_dir(self.workdir).resolve():
            verify_table_file(Path(path), "import it again with hwnas import-table")
        return device

    def profile(self, parts: Components) -> CostModel:
        device = self._device(self.config.device)
        lut_info: dict[str, Any] = {"cache": None, "measured_now": 0}
        if device.measures:
            result = profile_device(device, parts.space, self.config.space.type, self.workdir, self.reporter,
                                    self.config.device.max_spread, events=self.events)
            table = result.table
            lut_info = {"cache": str(result.path), "measured_now": result.measured,
                        "remeasured": result.remeasured, "flagged_high_spread": result.flagged}
        else:  # a table or analytical device prices every op without measuring
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                table = device.lookup_table(parts.space)
            for w in caught:
                self.reporter.info(f"warning: {w.message}")
            lut_info["interpolated"] = sum(r["note"] == "interpolated" for r in table.entries.values())
        table.save(self.paths.lut)
        self.study.set_user_attr("device_description", table.device)
        self.study.set_user_attr("lut", {"entries": len(table), **lut_info})
        energy = getattr(device, "energy", None) or energy_model(self.config.device.energy_model)
        latency = None
        if device.measures and self.config.device.correction_samples > 0:
            latency = self.fit_latency(parts, device, table)
        return CostModel(parts.space, table, energy, latency)

    def extra_cost_models(self, parts: Components) -> dict[str, CostModel]:
        """Cost models of the devices named in objectives such as ``energy@edge-accel-45nm``."""
        from hwnas.config import DeviceConfig
        from hwnas.search.problem import extra_devices

        models = {}
        for name in extra_devices(self.config.search.objectives):
            device = self._device(DeviceConfig(name=name))  # not a measured one: see check_devices
            energy = getattr(device, "energy", None) or energy_model(self.config.device.energy_model)
            models[name] = CostModel(parts.space, device.lookup_table(parts.space), energy)
        return models

    def fit_latency(self, parts: Components, device, table):
        """Measure sampled subnets end to end and keep the better of the table sum and the table
        sum with a learned correction, judged on a holdout (both qualities are stored)."""
        n = self.config.device.correction_samples
        rng = np.random.default_rng([self.config.seed, 2])
        archs = list(dict.fromkeys(parts.space.sample(rng) for _ in range(3 * n)))[:n]

        def measure(arch: Arch) -> float:
            parts.supernet.set_active(arch)
            return device.time_model(parts.supernet.extract().cpu(), parts.data.input_shape)[0]

        y = self._measure_resumably(archs, self.paths.latency_samples, "latency_ms", measure, "measure subnets")
        graphs = [op_graph(parts.space.subnet_spec(a)) for a in archs]
        interpolate = getattr(parts.space, "interpolated_field", None)
        choice, quality = select_latency_predictor(table, graphs, y, interpolate, self.config.predictor.holdout,
                                                   self.config.seed)
        record = {"chosen": choice, "samples": len(archs), "holdout": self.config.predictor.holdout, **quality}
        self.study.set_user_attr("latency_predictor", record)
        table.save(self.paths.lut, meta={"latency_correction": record})  # kept with the device's table
        self.reporter.info(f"latency predictor: {choice} (holdout MAPE table sum "
                           f"{quality['table_sum']['mape']:.3f}, learned {quality['learned']['mape']:.3f})")
        if choice == "table_sum":
            return None
        return LearnedLatencyPredictor(table, interpolate, self.config.seed).fit(graphs, y)

    def _measure_resumably(self, archs: list[Arch], path: Path, column: str, measure,
                           description: str) -> np.ndarray:
        """``measure(arch)`` for every arch, committed to ``path`` (a CSV of arch and ``column``)
        after each one, so a killed job measures nothing twice and loses at most the one in
        flight (a rewrite of a few KB costs far less than one measurement); values in arch order.

        Each flush rewrites the whole file atomically (it is not appended to), so one digest of the
        whole file (``FILE.sha256``, updated with every flush, see
        :func:`~hwnas.utils.io.atomic_path_with_digest`) covers it; a cache that no longer matches
        it is refused, never resumed from."""
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
            for arch in todo:
                key = arch.to_json()
                self.events.write("sample_started", column=column, arch=key)
                done[key] = measure(arch)
                with atomic_path_with_digest(path) as tmp:
                    pd.DataFrame({"arch": list(done), column: list(done.values())}).to_csv(tmp, index=False)
                self.events.write("sampled", column=column, arch=key)
                advance()
        return np.array([done[a.to_json()] for a in archs])

    def _sample_archs(self, space) -> list[Arch]:
        rng = np.random.default_rng([self.config.seed, 1])
        archs = {space.largest(): None, space.smallest(): None}
        attempts = 0
        while len(archs) < self.config.predictor.samples and attempts < 50 * self.config.predictor.samples:
            archs.setdefault(space.sample(rng), None)
            attempts += 1
        return list(archs)

    def fit_predictor(self, parts: Components):
        cfg = self.config.predictor
        archs = self._sample_archs(parts.space)
        y = self._measure_resumably(archs, self.paths.samples, "val_accuracy",
                                    lambda arch: parts.evaluate(arch, "val"), "sample subnets")
        features = ArchFeatures(parts.space)
        X = features.transform(archs)
        predictor, quality = fit_with_holdout(X, y, cfg.model, cfg.holdout, self.config.seed)
        self.study.set_user_attr("predictor_quality", {"accuracy": quality})
        uncertainty = (f", uncertainty vs error Spearman {quality['uncertainty_spearman']:.2f}"
                       if "uncertainty_spearman" in quality else "")
        self.reporter.info(f"accuracy predictor ({cfg.model}): holdout Kendall tau {quality['kendall_tau']:.3f}, "
                           f"RMSE {quality['rmse']:.4f} on {quality['n']} subnets{uncertainty}")
        return predictor, features, (archs, y)

    def search(self, parts: Components, cost_model: CostModel, extra_costs: dict, fitted) -> None:
        """Predictor-in-the-loop rounds (see :mod:`hwnas.rounds`); real evaluation time is the
        ``evaluate`` stage's, the rest the ``search`` stage's."""
        from hwnas.rounds import SearchRounds

        predictor, features, samples = fitted
        device = self._device(self.config.device)
        rounds = SearchRounds(self, parts, cost_model, extra_costs, predictor, features, samples, device)
        started = time.perf_counter()
        try:
            rounds.run()
        finally:
            total = time.perf_counter() - started
            self.seconds["evaluate"] = self.seconds.get("evaluate", 0.0) + rounds.evaluate_seconds
            self.seconds["search"] = self.seconds.get("search", 0.0) + total - rounds.evaluate_seconds


def check_devices(config: Config, workdir: Path) -> None:
    """Refuse an unknown device, or a measured one named in an objective (``energy@NAME`` needs a
    table or analytical device), before anything is written: found in the profile stage instead,
    it would leave a failed job behind."""
    from hwnas.config import DeviceConfig
    from hwnas.search.problem import extra_devices

    build_device(config.device, workdir)
    for name in extra_devices(config.search.objectives):
        if build_device(DeviceConfig(name=name), workdir).measures:
            raise ConfigError(f"search.objectives: {name} is a measured device; objectives on another device "
                              "need a table or analytical one (profile it and import its table)")


def launch(config: Config | str | Path | dict | None = None, *, name: str | None = None,
           store: str | None = None, workdir: str | Path | None = None, seed: int | None = None,
           compute: str | None = None, overrides: list[str] | tuple[str, ...] = (),
           reporter: Reporter | None = None, workers: int | None = None, ray_address: str | None = None):
    """Run (or resume) a search job and return its :class:`~hwnas.job.Job`.

    ``config`` is a :class:`Config`, a YAML path, a dict tree, or None for the embedded default.
    Keyword arguments override the config's own values.
    """
    if not isinstance(config, Config):
        config = load_config(config, overrides)
    elif overrides:
        raise ConfigError("overrides apply to a config file or dict, not to a Config object")
    updates: dict[str, Any] = {}
    if seed is not None:
        updates["seed"] = seed
    if compute is not None:
        updates["compute"] = compute
    if workdir is not None:
        updates["workdir"] = str(workdir)
    if store is not None:
        updates["store"] = store
    if workers is not None:
        updates["workers"] = workers
    if ray_address is not None:
        updates["ray_address"] = ray_address
    if updates:
        config = load_config(config.to_dict() | updates)
    job_name = check_job_name(name or config.name)
    work = Path(config.workdir)
    compute_device = resolve_compute(config.compute)
    check_devices(config, work)  # before the store or the job's directory exists
    job_store = JobStore(config.store or default_store_url(work))
    return SearchJob(config, job_name, job_store, work, compute_device, reporter or Reporter()).run()
