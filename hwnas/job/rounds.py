"""A job's search stage: predictor-in-the-loop rounds over the supernet, committed as they go.

Round ``r`` refits the quality predictor (accuracy, or perplexity for a language model) on the
supernet samples plus the real evaluations of rounds ``< r`` (in a fixed order, so a replayed
round after a kill picks the same batch), searches
on the predictors, and evaluates a batch for real: BN recalibrated, test and validation quality,
latency measured on a measured device, costs on every device. Each candidate is committed to
the store with its round as soon as it is evaluated; a rerun skips what is stored. The stopping
rule watches the hypervolume of the real front on *validation* quality, so the test split never
steers the search. See :mod:`hwnas.search.loop` for the rules.
"""
from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from hwnas.config import Config
from hwnas.errors import HwnasError
from hwnas.hwmodels.phases import PhaseModel
from hwnas.job.paths import now
from hwnas.metrics import quality_of
from hwnas.predictors.accuracy import AccuracyPredictor
from hwnas.search.engine import evaluate_population
from hwnas.search.loop import LoopSettings, objective_bounds, run_loop
from hwnas.search.budgets import Budgets
from hwnas.search.objectives import FLOOR_COLUMNS, objective_matrix, phase_columns
from hwnas.search.problem import SubnetProblem
from hwnas.spaces.dims import Arch
from hwnas.train.components import Components
from hwnas.train.evaluation import split_quality
from hwnas.utils.executors import SerialExecutor, make_executor
from hwnas.utils.timing import pinned_threads


def subnet_accuracies(parts, arch_json: str) -> dict[str, float]:
    """Validation and test quality of one subnet after BN recalibration (``val_accuracy`` and
    ``test_accuracy``, or the perplexities of a language model), on one thread: float sums
    depend on the thread count, and a quantizer can round such a difference into another
    prediction, so pinning makes every worker (and a serial run) give the same answer."""

    arch = parts.space.validate(Arch.from_json(arch_json).to_dict())
    with pinned_threads(1):
        subnet = parts.recalibrated_subnet(arch)
        return split_quality(subnet, parts.data, parts.data.quality)


def accuracy_worker(config_tree: dict, weights: str, cwd: str) -> Callable[[str], dict[str, float]]:
    """Run once per Ray worker: rebuild the job's data and supernet from its config and weights
    (in the driver's working directory, where the config's relative paths point)."""


    os.chdir(cwd)
    parts = Components.build(Config.model_validate(config_tree), torch.device("cpu"))
    parts.load_weights(Path(weights))
    return partial(subnet_accuracies, parts)


BUDGET_PROBES = 2000  # random subnets scored against the budgets before a search starts


class SearchRounds:
    """The rounds of one job. By default a real evaluation is the supernet's subnet
    (:func:`subnet_accuracies`, on Ray workers with ``--workers``) and each round refits the
    predictor on the real evaluations so far. A training-free job (:mod:`hwnas.job.training_free`)
    passes ``quality`` (arch JSON -> validation and test quality: the subnet trained alone),
    ``batch`` (all its budget in one round) and ``refit=False``: its predictor learns a proxy's
    ranking, which real accuracies must not be mixed into."""

    def __init__(self, job, parts, cost_model, extra_costs: dict[str, Any], predictor, features,
                 samples: tuple[list[Arch], np.ndarray], device,
                 quality: Callable[[str], dict[str, float]] | None = None, batch: int | None = None,
                 refit: bool = True):
        self.quality_of_subnet, self.batch, self.refit = quality, batch, refit
        self.job, self.parts, self.cost_model, self.extra_costs = job, parts, cost_model, extra_costs
        self.predictor, self.features, self.device = predictor, features, device
        self.sample_archs, self.sample_y = samples
        self.cfg = job.config.search
        self.phases = cost_model.phases  # latency phases (an LM's prefill), priced and timed beside latency
        self.budgets = Budgets.from_config(self.cfg).columns()  # metric column -> bound
        self.quality = quality_of(self.cfg.objectives)  # accuracy, or perplexity for a language model
        self.problems: dict[int, SubnetProblem] = {}
        self.evaluate_seconds = 0.0
        self.in_flight: tuple[int, list[Arch]] = (0, [])

    # -- what the loop asks ------------------------------------------------------------------
    def stored(self) -> list[dict]:
        frame = self.job.store.candidates(self.job.study, extra=("round",))
        return frame.to_dict("records")

    def done(self, r: int | None) -> tuple[list[Arch], np.ndarray]:
        rows = [c for c in self.stored() if r is None or int(c["round"]) < r]
        rows.sort(key=lambda c: (int(c["round"]), c["arch"]))
        F = objective_matrix(rows, self.cfg.objectives) if rows else np.zeros((0, len(self.cfg.objectives)))
        return [Arch.from_json(c["arch"]) for c in rows], F

    def make_problem(self, r: int) -> SubnetProblem:
        predictor = self.predictor
        if r > 0 and self.refit:
            archs, _ = self.done(r)
            stored = {c["arch"]: c[self.quality.column] for c in self.stored()}
            X = self.features.transform(self.sample_archs + archs)
            y = np.concatenate([self.sample_y, [stored[a.to_json()] for a in archs]])
            predictor = AccuracyPredictor(self.job.config.predictor.model, self.job.config.seed,
                                          self.quality.name).fit(X, y)
        problem = SubnetProblem(self.parts.space, self.cfg.objectives, predictor, self.features, self.cost_model,
                                self.budgets, self.extra_costs)
        self.problems[r] = problem
        return problem

    def anchors(self, r: int, problem: SubnetProblem) -> list[Arch]:
        """The space's extremes, evaluated in the first round when they meet the budgets."""
        if r > 0:
            return []
        space = self.parts.space
        return [a for a in (space.largest(), space.smallest()) if problem.feasible(a)]

    def evaluate(self, archs: list[Arch], r: int) -> None:
        """Latency here first, the batch timed together in interleaved rounds before any worker
        starts (timings taken beside running work would share cores and caches), then accuracies
        on the executor's workers (in parallel with ``--workers``)."""
        started = time.perf_counter()
        stored = {c["arch"] for c in self.stored()}
        todo = [a for a in archs if a.to_json() not in stored]
        predicted = self.problems[r].rows(todo)
        events = self.job.events
        events.write("stage_started", stage="evaluate", round=r, todo=len(todo))
        with self.job.reporter.task(f"evaluate round {r + 1}", len(archs)) as advance:
            advance(len(archs) - len(todo))
            for arch in todo:  # the workers take them in this order
                events.write("evaluation_started", round=r, arch=arch.to_json())
            latencies = self.time_batch(todo, r)
            self.in_flight = (r, todo)
            for index, accuracies in self.executor.imap_unordered([a.to_json() for a in todo]):
                metrics = self.measure(todo[index], predicted[index], r, accuracies, latencies[index])
                number = self.job.store.add_candidate(self.job.study, self.parts.space, todo[index], metrics)
                events.write("evaluated", round=r, arch=todo[index].to_json(), id=number)
                advance()
        events.write("stage_finished", stage="evaluate", round=r)
        self.evaluate_seconds += time.perf_counter() - started

    def time_batch(self, archs: list[Arch], r: int) -> list[dict[str, tuple[float, float]] | None]:
        """Per arch on a measured device, (median, spread) in ms of its latency and of each latency
        phase (by name: ``latency``, ``prefill``), all timed together in interleaved rounds; the
        batch's timing (speed against the table's reference, drift, seconds) is kept with the study."""
        if not self.device.measures or not archs:
            return [None] * len(archs)
        models = self.parts.subnets_to_time(archs)
        subjects = models + [PhaseModel(m, priced.phase) for priced in self.phases.values() for m in models]
        timing = self.device.time_models(subjects, self.parts.data.input_shape)
        record = {"round": r, **timing.describe()}
        self.job.study.set_user_attr("timing", [*self.job.study.user_attrs.get("timing", []), record])
        names = ["latency", *self.phases]
        return [{name: timing.summary(k * len(archs) + i) for k, name in enumerate(names)} for i in range(len(archs))]

    def measure(self, arch: Arch, predicted: dict, r: int, accuracies: dict[str, float],
                timed: dict[str, tuple[float, float]] | None) -> dict[str, Any]:
        costs = self.cost_model.costs(arch)
        q = self.quality
        # a table or analytical device: its figure is the only latency there is
        phases = {name: timed[name] if timed is not None else (costs[f"{name}_ms"], 0.0)
                  for name in ("latency", *self.phases)}
        latency, spread = phases["latency"]
        metrics = {**accuracies, "latency_ms": latency, "latency_spread_ms": spread, "energy_mj": costs["energy_mj"],
                   **{k: costs[k] for k in ("params", "flops", "macs", "bitops", "weight_kb", "memory_kb",
                                            "activation_kb")},
                   q.predicted_column: predicted[q.column], f"{q.predicted_column}_std": predicted[f"{q.column}_std"],
                   "predicted_latency_ms": predicted["latency_ms"], "predicted_energy_mj": predicted["energy_mj"],
                   "measured": timed is not None, "latency_source": "measured" if timed is not None else self.device.kind,
                   "round": r, "evaluated_at": now()}
        for name in self.phases:
            figure, column_spread, column_predicted = phase_columns(name)
            metrics[figure], metrics[column_spread] = phases[name]
            metrics[column_predicted] = predicted[figure]
        for device, model in self.extra_costs.items():
            extra = model.costs(arch)
            metrics[f"latency_ms@{device}"], metrics[f"energy_mj@{device}"] = extra["latency_ms"], extra["energy_mj"]
        return metrics

    # -- the stage -----------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        settings = LoopSettings(budget=cfg.evaluate + 2, batch=self.batch or cfg.batch, algorithm=cfg.algorithm,
                                population=cfg.population, generations=cfg.generations, seed=self.job.config.seed,
                                patience=cfg.patience, uncertainty_weight=cfg.uncertainty_weight)
        # Hypervolume bounds fixed once from the supernet samples (stored, so a resume agrees).
        sample_rows = self.make_problem(0).rows(self.sample_archs)
        for row, y in zip(sample_rows, self.sample_y):
            row[self.quality.column] = float(y)
        bounds = objective_bounds(objective_matrix(sample_rows, cfg.objectives))
        self.check_budgets()

        def on_round(info: dict) -> None:
            progress = {**info, "budget": settings.budget}
            self.job.study.set_user_attr("progress", progress)
            self.job.reporter.info(f"round {info['round'] + 1}: {info['evaluated']} evaluated, real-front "
                                   f"hypervolume {info['hypervolume']:.4f}")

        config = self.job.config
        if self.quality_of_subnet is not None:
            quality = self.quality_of_subnet
            executor = SerialExecutor(lambda: quality)
        elif config.workers > 1 or config.ray_address:
            setup = partial(accuracy_worker, config.model_dump(mode="json"), str(self.job.paths.supernet.resolve()),
                            str(Path.cwd()))
            executor = make_executor(config.workers, config.ray_address, setup, on_retry=self.worker_died)
        else:
            executor = SerialExecutor(lambda: partial(subnet_accuracies, self.parts))
        with executor as self.executor:
            state = run_loop(settings, self.make_problem, self.done, self.evaluate, bounds,
                             extra_picks=self.anchors, on_round=on_round, searching=self.searching)
        summary = {"rounds": state.rounds, "stopped": state.stopped, "budget": settings.budget}
        self.job.study.set_user_attr("search_rounds", json.loads(json.dumps(summary, default=float)))
        return summary

    def worker_died(self, index: int, reason: str) -> None:
        """A Ray worker died evaluating ``todo[index]``; the executor has resubmitted it to a new one."""
        r, todo = self.in_flight
        arch = todo[index].to_json()
        self.job.events.write("worker_retry", round=r, arch=arch, error=reason)
        retries = [*self.job.study.user_attrs.get("worker_retries", []), {"round": r, "arch": arch, "error": reason}]
        self.job.study.set_user_attr("worker_retries", retries)
        self.job.reporter.info(f"a worker died evaluating a round {r + 1} candidate ({reason}); retrying it")

    @contextmanager
    def searching(self, r: int):
        """Round ``r``'s evolutionary search on the predictors (the ``search`` stage's time)."""
        self.job.events.write("stage_started", stage="search", round=r)
        with self.job.reporter.task(f"search round {r + 1}", self.cfg.generations) as advance:
            yield advance
        self.job.events.write("stage_finished", stage="search", round=r)

    def check_budgets(self) -> None:
        """Refuse budgets no subnet meets before any round: the smallest subnet, then
        :data:`BUDGET_PROBES` random ones, scored on the predictors in one vectorized call each.
        The refusal says what was checked: a subnet the probes missed may still meet them."""
        problem, space = self.problems[0], self.parts.space
        if not self.budgets:
            return
        smallest = space.smallest()
        if evaluate_population(problem, np.array([space.encode(smallest)]))[1].any():
            return
        rng = np.random.default_rng(0)
        probes = [space.sample(rng) for _ in range(BUDGET_PROBES)]
        if evaluate_population(problem, np.array([space.encode(a) for a in probes]))[1].any():
            return
        rows = problem.rows([smallest, *probes])
        best = {column: (max if column in FLOOR_COLUMNS else min)(r[column] for r in rows) for column in self.budgets}
        closest = ", ".join(f"{'best' if c in FLOOR_COLUMNS else 'lowest'} {c} {v:.4g} (budget {self.budgets[c]:g})"
                            for c, v in best.items())
        raise HwnasError(
            f"no subnet meets the search budgets {self.budgets}: checked on the predictors the smallest subnet and "
            f"{BUDGET_PROBES:,} random ones ({closest}); loosen a budget, or add cheaper choices to the space")
