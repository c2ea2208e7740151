"""The stages of a search job, as data: what each reads and writes, how it runs and how it resumes.

:class:`~hwnas.job.runner.SearchJob` runs :data:`STAGES` (a supernet job's; a training-free job's
are in :mod:`hwnas.job.training_free`, see :mod:`hwnas.job.scorers`) in order, handing each the
results of the stages before it; adding a stage is one more entry here. Every stage leaves an artifact in
the job directory (written atomically) or rows in the store, and skips work that is already
there, so rerunning the same command after a kill resumes the job where it stopped.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from hwnas.config import DeviceConfig
from hwnas.hwmodels.cost import CostModel, PhaseCost
from hwnas.hwmodels.energy import energy_model
from hwnas.hwmodels.phases import PhaseModel
from hwnas.hwmodels.profiler import profile_device
from hwnas.job.checks import job_phases
from hwnas.job.rounds import SearchRounds
from hwnas.metrics import quality_of
from hwnas.predictors.accuracy import ArchFeatures, fit_with_holdout
from hwnas.predictors.latency import fit_search_latency_predictor
from hwnas.predictors.proxy_features import ProxyFeatures
from hwnas.search.objectives import extra_devices
from hwnas.spaces.dims import Arch
from hwnas.spaces.registry import LatencyPhase, load_pretrained, op_graph
from hwnas.train.components import Components, save_weights
from hwnas.train.distributed import RaySupernetTrainer
from hwnas.train.trainer import SupernetTrainer
from hwnas.utils.timing import pinned_threads

MEASURE_BATCH = 10  # subnets a measured device times together, interleaved in rounds, per commit


@dataclass(frozen=True)
class Stage:
    """One step of a job. ``run(job, results)`` gets the results of the stages before it by name.

    ``journaled`` stages are timed and journaled by the runner as a whole; the search stage times
    and journals its rounds itself (its real evaluations are the ``evaluate`` stage's time).
    """

    name: str
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    resumes: str
    run: Callable[[Any, dict[str, Any]], Any]
    journaled: bool = True


# -- load ------------------------------------------------------------------------------------------
def load(job, results: dict[str, Any]) -> Components:
    parts = Components.build(job.config, job.compute)
    job.study.set_user_attr("input_shape", list(parts.data.input_shape))
    job.study.set_user_attr("num_classes", parts.data.num_classes)
    unit = getattr(parts.space, "latency_unit", None)  # e.g. "per generated token" (a language model)
    if unit:
        job.study.set_user_attr("latency_unit", unit)
    phases = job_phases(job.config)  # e.g. an LM's prefill: what one figure of each times, in words
    if phases:
        spec = parts.space.subnet_spec(parts.space.largest())
        job.study.set_user_attr("latency_phases", {name: phase.unit(spec) for name, phase in phases.items()})
    return parts


# -- train -----------------------------------------------------------------------------------------
def train(job, results: dict[str, Any]) -> None:
    parts: Components = results["load"]
    if job.paths.supernet.exists():
        parts.load_weights(job.paths.supernet)
        return
    config, cfg = job.config, job.config.train
    if not job.paths.checkpoint.exists():  # a fresh start; a resumed one continues from its checkpoint
        started = load_pretrained(config.space.type, parts.supernet, parts.space)
        if started is not None:
            job.study.set_user_attr("pretrained_init", started)
            for line in (started["summary"], *started.get("notes", [])):
                job.reporter.info(line)
    with job.reporter.task("train supernet", cfg.epochs) as advance:
        def on_epoch(epoch: int, epochs: int, record: dict) -> None:  # after its checkpoint is saved
            job.events.write("epoch_finished", epoch=epoch - 1, loss=record["loss"])
            advance(epoch, note=f"loss {record['loss']:.3f}")
        if config.workers > 1 or config.ray_address:
            # data-parallel on Ray Train workers (Ray itself is imported only when it trains)
            trainer = RaySupernetTrainer(config, parts.supernet, parts.data, workers=config.workers,
                                         address=config.ray_address, checkpoint_path=job.paths.checkpoint,
                                         on_epoch=on_epoch)
        else:
            trainer = SupernetTrainer(parts.supernet, parts.data, cfg, config.seed, job.compute,
                                      config.data.batch_size, job.paths.checkpoint, on_epoch=on_epoch)
        if trainer.try_resume():
            advance(trainer.start_epoch)
        history = trainer.train()
    untrained = parts.settle_quantizers()
    job.study.set_user_attr("untrained_quantizer_steps", untrained)
    if untrained:
        job.reporter.info(f"{untrained} quantizer step(s) training never ran were set from fixed training images "
                          "(see hwnas.train.evaluation.initialize_quantizers); more epochs train them")
    # The weights file marks the stage done, so the attributes are recorded first: a kill
    # between the two resumes from the last epoch's checkpoint (training is over, nothing
    # retrains) and records them again, instead of leaving a trained job without its history.
    job.study.set_user_attr("train_history", history)
    largest = parts.evaluate(parts.space.largest(), "test")
    smallest = parts.evaluate(parts.space.smallest(), "test")
    q = quality_of(config.search.objectives)
    job.study.set_user_attr(f"supernet_test_{q.name}", {"largest": largest, "smallest": smallest})
    save_weights(job.paths.supernet, parts.supernet.state_dict())
    job.reporter.info(f"supernet test {q.name}: largest {q.format(largest)}, smallest {q.format(smallest)}")


# -- profile ---------------------------------------------------------------------------------------
def profile(job, results: dict[str, Any]) -> tuple[CostModel, dict[str, CostModel], Any]:
    """The cost model of the job's device, of every device named in an objective, and the device
    (a measured one times its reference subnet in every round, against the table's baseline).
    The job's latency phases (an LM's prefill) are priced on the job's device alike: their ops in
    its table, their end-to-end correction fitted on its measurements."""
    parts: Components = results["load"]
    device = job.device(job.config.device)
    phases = job_phases(job.config)
    lut_info: dict[str, Any] = {"cache": None, "measured_now": 0}
    meta: dict[str, Any] = {}
    if device.measures:
        result = profile_device(device, parts.space, job.config.space.type, job.workdir, job.reporter,
                                job.config.device.max_spread,
                                on_commit=lambda keys: job.events.write("ops_measured", keys=keys), phases=phases)
        table = result.table
        lut_info = {"cache": str(result.path), "measured_now": result.measured,
                    "remeasured": result.remeasured, "flagged_high_spread": result.flagged,
                    "network_runs": result.networks,
                    "reference_ms": result.reference_ms}
        meta["reference"] = result.reference
        # The progress bar counts networks run (each times its ops in place), not ops: say both.
        job.reporter.info(f"lookup table: {len(table)} ops, {result.measured} measured now in {result.networks} "
                          f"network runs" + (f" ({result.remeasured} noisy ops re-measured, {result.flagged} "
                                             "still flagged high-spread)" if result.remeasured else ""))
    else:  # a table or analytical device prices every op without measuring
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            table = device.lookup_table(parts.space, phases)
        for w in caught:
            job.reporter.info(f"warning: {w.message}")
        lut_info["interpolated"] = sum(r["note"] == "interpolated" for r in table.entries.values())
    table.save(job.paths.lut, meta=meta)
    job.study.set_user_attr("device_description", table.device)
    job.study.set_user_attr("lut", {"entries": len(table), **lut_info})
    energy = getattr(device, "energy", None) or energy_model(job.config.device.energy_model)
    latency, phase_latency = None, {name: None for name in phases}
    if device.measures and job.config.device.correction_samples > 0:
        latency = fit_latency(job, parts, device, table, meta)
        for name, phase in phases.items():
            phase_latency[name] = fit_latency(job, parts, device, table, meta, name, phase)
    cost_model = CostModel(parts.space, table, energy, latency, batch_size=job.config.device.batch_size,
                           phases={name: PhaseCost(phase, phase_latency[name]) for name, phase in phases.items()})
    return cost_model, extra_cost_models(job, parts), device


def extra_cost_models(job, parts: Components) -> dict[str, CostModel]:
    """Cost models of the devices named in objectives such as ``energy@edge-accel-45nm``."""
    models = {}
    for name in extra_devices(job.config.search.objectives):
        device = job.device(DeviceConfig(name=name))  # not a measured one: see check_devices
        energy = getattr(device, "energy", None) or energy_model(job.config.device.energy_model)
        models[name] = CostModel(parts.space, device.lookup_table(parts.space), energy)
    return models


def fit_latency(job, parts: Components, device, table, meta: dict[str, Any], name: str = "latency",
                phase: LatencyPhase | None = None):
    """Measure sampled subnets end to end and keep the better of the table sum and the table
    sum with a learned correction, judged on a holdout (both qualities are stored). ``phase``: of
    that latency phase (``name``, e.g. ``prefill``) instead of the op graph's latency, on the same
    subnets."""
    n = job.config.device.correction_samples
    rng = np.random.default_rng([job.config.seed, 2])
    archs = list(dict.fromkeys(parts.space.sample(rng) for _ in range(3 * n)))[:n]

    def measure(batch: list[Arch]) -> list[float]:
        models = parts.subnets_to_time(batch)
        if phase is not None:
            models = [PhaseModel(m, phase) for m in models]
        timing = device.time_models(models, parts.data.input_shape)
        return [timing.summary(i)[0] for i in range(len(batch))]

    samples = job.paths.latency_samples if phase is None else job.paths.phase_samples(name)
    y = job.measure_resumably(archs, samples, f"{name}_ms", measure,
                              "measure subnets" if phase is None else f"measure subnets' {name}", batch=MEASURE_BATCH)
    graph = op_graph if phase is None else phase.op_graph
    graphs = [graph(parts.space.subnet_spec(a)) for a in archs]
    interpolate = getattr(parts.space, "interpolated_field", None)
    predictor, choice, quality = fit_search_latency_predictor(table, graphs, y, interpolate,
                                                              job.config.predictor.holdout, job.config.seed)
    record = {"chosen": choice, "samples": len(archs), "holdout": job.config.predictor.holdout, **quality}
    job.study.set_user_attr(f"{name}_predictor", record)
    meta[f"{name}_correction"] = record
    table.save(job.paths.lut, meta=meta)  # kept with the device's table
    job.reporter.info(f"{name} predictor: {choice} (holdout MAPE table sum "
                      f"{quality['table_sum']['mape']:.3f}, learned {quality['learned']['mape']:.3f})")
    return None if choice == "table_sum" else predictor


# -- predictor -------------------------------------------------------------------------------------
def sample_archs(space, samples: int, seed: int) -> list[Arch]:
    """The space's extremes and distinct random subnets, ``samples`` in all (fewer for a tiny space)."""
    rng = np.random.default_rng([seed, 1])
    archs = {space.largest(): None, space.smallest(): None}
    attempts = 0
    while len(archs) < samples and attempts < 50 * samples:
        archs.setdefault(space.sample(rng), None)
        attempts += 1
    return list(archs)


def sample_accuracy(parts: Components, arch: Arch) -> float:
    """Validation quality (accuracy, perplexity) of a sampled subnet, on one thread, as the search's
    evaluations run.

    Why one thread: these models are small, and OpenMP threads meet at a barrier after every op.
    With another CPU-bound process on one of this project's two cores, two threads made this stage
    10x slower (one thread spins at the barrier while its partner waits for a core); on one thread
    it slows in proportion to the CPU it gets. Quiet, two threads are about 1.5x faster, so the
    stage costs that much more on an idle machine. One thread also makes the figure independent of
    the machine's core count (float sums depend on the thread count)."""
    with pinned_threads(1):
        return parts.evaluate(arch, "val")


def arch_features(job, parts: Components) -> ArchFeatures:
    """The predictor's features: the space's dimensions and counts, and the scores of
    ``predictor.proxies`` (if any) on each subnet at initialization, on one fixed seeded batch."""
    cfg = job.config
    if not cfg.predictor.proxies:
        return ArchFeatures(parts.space)
    inputs, targets = parts.proxy_batch(cfg.predictor.proxy_batch, cfg.seed)
    return ArchFeatures(parts.space, ProxyFeatures(cfg.predictor.proxies, parts.initial_subnet, inputs, targets,
                                                   cfg.seed))


def fit_predictor(job, results: dict[str, Any]):
    parts: Components = results["load"]
    cfg = job.config.predictor
    archs = sample_archs(parts.space, cfg.samples, job.config.seed)
    q = quality_of(job.config.search.objectives)
    y = job.measure_resumably(archs, job.paths.samples, q.column,
                              lambda arch: sample_accuracy(parts, arch), "sample subnets")
    features = arch_features(job, parts)
    X = features.transform(archs)
    predictor, quality = fit_with_holdout(X, y, cfg.model, cfg.holdout, job.config.seed, q.name)
    job.study.set_user_attr("predictor_quality", {q.name: quality})
    uncertainty = (f", uncertainty vs error Spearman {quality['uncertainty_spearman']:.2f}"
                   if "uncertainty_spearman" in quality else "")
    job.reporter.info(f"{q.name} predictor ({cfg.model}): holdout Kendall tau {quality['kendall_tau']:.3f}, "
                      f"RMSE {quality['rmse']:.4f} on {quality['n']} subnets{uncertainty}")
    return predictor, features, (archs, y)


# -- search ----------------------------------------------------------------------------------------
def search(job, results: dict[str, Any]) -> None:
    """Predictor-in-the-loop rounds (see :mod:`hwnas.job.rounds`); real evaluation time is the
    ``evaluate`` stage's, the rest the ``search`` stage's."""
    parts: Components = results["load"]
    cost_model, extra_costs, device = results["profile"]
    predictor, features, samples = results["predictor"]
    run_rounds(job, SearchRounds(job, parts, cost_model, extra_costs, predictor, features, samples, device))


def run_rounds(job, rounds: SearchRounds) -> None:
    """Run ``rounds``, its real evaluations timed as the ``evaluate`` stage, the rest as ``search``."""
    started = time.perf_counter()
    try:
        rounds.run()
    finally:
        total = time.perf_counter() - started
        job.add_seconds("evaluate", rounds.evaluate_seconds)
        job.add_seconds("search", total - rounds.evaluate_seconds)


STAGES: tuple[Stage, ...] = (
    Stage("load", reads=("config",), writes=("store: input_shape, num_classes",),
          resumes="always reruns (data and space are rebuilt from the config)", run=load),
    Stage("train", reads=("load",), writes=("checkpoint.pt", "supernet.safetensors",
                                             "store: train_history, pretrained_init"),
          resumes="skipped once supernet.safetensors exists; else from the last epoch in checkpoint.pt (a fresh "
                  "start first loads and checks space.init's pretrained model)", run=train),
    Stage("profile", reads=("load", "device"), writes=("luts/DEVICE.csv", "lut.csv", "latency_samples.csv",
                                                      "PHASE_samples.csv"),
          resumes="measures only the ops (and subnets) the cached table lacks", run=profile),
    Stage("predictor", reads=("load",), writes=("accuracy_samples.csv", "store: predictor_quality"),
          resumes="samples only the subnets the sample cache lacks", run=fit_predictor),
    Stage("search", reads=("load", "profile", "predictor"), writes=("store: candidates, search_rounds",),
          resumes="replays finished rounds from the store; evaluates only candidates not yet stored",
          run=search, journaled=False),
)
