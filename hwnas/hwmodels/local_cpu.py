"""``local-cpu``: this machine's CPU running eager PyTorch, the measured device every other
measured runtime (:mod:`hwnas.hwmodels.torchscript`) builds on.

Everything it times, whole models and the ops inside covering networks alike, is timed in
interleaved rounds with a reference model spread through every round (see
:func:`hwnas.utils.timing.time_in_rounds`). The reference is a subnet the caller names with
:meth:`LocalCPU.use_reference`; the first batch timed with it fixes the baseline its speed is
compared with, unless the caller passes one (a job passes the one its lookup table recorded, so
every later measurement is corrected to the speed the table was measured at).
"""
from __future__ import annotations

import os
import platform
import time
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from hwnas.ir import OpSig
from hwnas.spaces.ops.layers import op_modules
from hwnas.utils.io import stable_hash
from hwnas.utils.timing import RoundPlan, RoundTiming, Subject, model_subject, pinned_threads, time_in_rounds


def processor_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


class LocalCPU:
    """This machine's CPU running eager PyTorch, pinned to ``threads`` threads."""

    kind = "measured"
    measures = True  # real evaluation times every candidate end to end here
    runtime = "pytorch-eager"
    default_repeats = 90  # timed calls per model when the config leaves device.repeats unset

    def __init__(self, config):
        self.config = config
        self.name = config.name
        self.reference_subject: Subject | None = None
        self.reference_baseline_ms: float | None = None
        self._batches = 0

    def describe(self) -> dict[str, Any]:
        c = self.config
        return {
            "name": self.name, "kind": self.kind, "processor": processor_name(),
            "machine": platform.machine(), "cpus": os.cpu_count(), "runtime": self.runtime,
            "runtime_version": torch.__version__, "torch": torch.__version__, "threads": c.threads,
            "batch_size": c.batch_size, "warmup": c.warmup, "repeats": self.repeats, "rounds": c.rounds,
        }

    def fingerprint(self) -> str:
        """Tables are reused only on the same processor, runtime, threads, batch size and method."""
        return stable_hash(self.describe())

    @property
    def repeats(self) -> int:
        """Timed calls per model in all: the config's, or this runtime's default."""
        return self.config.repeats or self.default_repeats

    def plan(self) -> RoundPlan:
        c = self.config
        return RoundPlan.for_repeats(self.repeats, c.rounds, c.warmup, c.max_drift)

    # -- what a runtime defines ------------------------------------------------------------------
    def runnable(self, model: nn.Module, x: torch.Tensor) -> Callable[[], object]:
        """A call that runs ``model`` on ``x`` as this runtime deploys it (eager: as it is)."""
        model = model.eval().cpu()
        return deployed_call(model, x)

    def op_subject(self, model: nn.Module, ops: list[OpSig], x: torch.Tensor) -> Subject:
        """A subject timing every op of ``model`` in place, between hooks on its module: an op
        repeated alone runs faster than inside a network (see :mod:`hwnas.utils.timing`)."""
        modules = checked_op_modules(model, ops)
        model = model.eval().cpu()
        started = [0] * len(modules)
        spent: list[int] = []

        def before(index):
            return lambda m, inputs: started.__setitem__(index, time.perf_counter_ns())

        def after(index):
            return lambda m, inputs, output: spent.append(time.perf_counter_ns() - started[index])

        handles = [h for index, module in enumerate(modules)
                   for h in (module.register_forward_pre_hook(before(index)),
                             module.register_forward_hook(after(index)))]

        call = deployed_call(model, x)

        def run(n: int) -> np.ndarray:
            out = np.empty((n, len(modules)))
            for k in range(n):
                spent.clear()
                call()
                if len(spent) != len(modules):
                    raise ValueError(f"{len(spent)} of {len(modules)} op modules ran in the model's forward")
                out[k] = spent
            return out
        run.close = lambda: [h.remove() for h in handles]  # type: ignore[attr-defined]
        return run

    # -- timing ------------------------------------------------------------------------------------
    def example(self, input_shape: Sequence[int], model: nn.Module | None = None) -> torch.Tensor:
        """A batch of inputs to time with: what ``model.example_input(batch_size)`` gives where the
        model states its own (a language model's token ids, which random floats cannot stand
        for), else standard normal values of ``input_shape``."""
        make = getattr(model, "example_input", None)
        return make(self.config.batch_size) if callable(make) else torch.randn(self.config.batch_size, *input_shape)

    @torch.inference_mode()
    def use_reference(self, model: nn.Module, input_shape: Sequence[int], baseline_ms: float | None = None) -> None:
        """Time ``model`` in every round from now on, and correct for the machine's speed relative to
        ``baseline_ms`` (default: the reference's median in the next batch timed)."""
        with pinned_threads(self.config.threads):
            self.reference_subject = model_subject(self.runnable(model, self.example(input_shape, model)))
        self.reference_baseline_ms = baseline_ms

    def _in_rounds(self, subjects: list[Subject]) -> RoundTiming:
        self._batches += 1
        with pinned_threads(self.config.threads):
            timing = time_in_rounds(subjects, self.plan(), self.reference_subject, self.reference_baseline_ms,
                                    seed=self._batches)
        if self.reference_subject is not None and self.reference_baseline_ms is None:
            self.reference_baseline_ms = timing.baseline_ms
        return timing

    @torch.inference_mode()
    def time_models(self, models: Sequence[nn.Module], input_shape: Sequence[int]) -> RoundTiming:
        """Every model of the batch end to end, interleaved in rounds; ``.summary(i)`` is model
        ``i``'s (median, spread) in ms."""
        x = self.example(input_shape, models[0] if models else None)
        with pinned_threads(self.config.threads):
            runnables = [self.runnable(m, x) for m in models]
        return self.time_prepared(runnables)

    def time_prepared(self, runnables: Sequence[Callable[[], object]]) -> RoundTiming:
        """Calls made by :meth:`runnable` (prepared once, e.g. scripted), timed in rounds."""
        return self._in_rounds([model_subject(r) for r in runnables])

    def time_model(self, model: nn.Module, input_shape: Sequence[int]) -> tuple[float, float]:
        """(median, spread) in ms of one model (see :meth:`time_models`)."""
        return self.time_models([model], input_shape).summary(0)

    @torch.inference_mode()
    def time_op_networks(self, networks: Sequence[tuple[nn.Module, list[OpSig]]],
                         input_shape: Sequence[int]) -> list[dict[str, tuple[float, float, int]]]:
        """Per network, every op key's (median ms, spread ms, timed calls), the networks timed
        interleaved in rounds."""
        x = self.example(input_shape, networks[0][0] if networks else None)
        with pinned_threads(self.config.threads):
            subjects = [self.op_subject(model, ops, x) for model, ops in networks]
        try:
            timing = self._in_rounds(subjects)
        finally:
            for subject in subjects:
                getattr(subject, "close", lambda: None)()
        out = []
        for index, (_, ops) in enumerate(networks):
            entries: dict[str, tuple[float, float, int]] = {}
            for q, op in enumerate(ops):
                if op.key not in entries:  # an op repeated in a network is timed at its first place
                    median, spread = timing.summary(index, q)
                    entries[op.key] = (median, spread, len(timing.samples_ns[index]))
            out.append(entries)
        return out

    def time_ops(self, model: nn.Module, ops: list[OpSig], input_shape: Sequence[int]) -> dict[str, tuple[float, float, int]]:
        """Every op of one network (see :meth:`time_op_networks`)."""
        return self.time_op_networks([(model, ops)], input_shape)[0]


def checked_op_modules(model: nn.Module, ops: list[OpSig]) -> list[nn.Module]:
    """The modules that run ``model``'s ops, one per op of its graph ``ops`` (else ValueError)."""
    modules = op_modules(model)
    if len(modules) != len(ops):
        raise ValueError(f"model has {len(modules)} op modules but its graph {len(ops)} ops")
    return modules


def deployed_call(model: nn.Module, x: torch.Tensor) -> Callable[[], object]:
    """``model(x)``, or the call the model says it is deployed as: a model with
    ``timed_call(batch_size)`` (a language model, whose costed unit is one decode step over a KV
    cache, on token ids) is timed by the zero-argument call it returns, ``x`` giving the batch size."""
    timed_call = getattr(model, "timed_call", None)
    if timed_call is not None:
        return timed_call(int(x.shape[0]))
    return lambda: model(x)
