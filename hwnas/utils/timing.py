"""Wall-clock timing of whole models and of the ops inside them, the same way for both.

Threads are pinned to the device's count, the models are warmed up, garbage collection is paused,
and every call is timed alone. Measured devices time a batch in interleaved rounds with a
reference model correcting each round for the machine's speed (:func:`time_in_rounds`; why:
``experiments/bench_timing.py`` compares it with timing each model back to back, which
:func:`time_call` does). Ops are timed *inside* a running network, not alone in a loop, where warm
caches and a primed allocator make them faster than they run in a network (see
:meth:`hwnas.hwmodels.local_cpu.LocalCPU.op_subject`).
"""
from __future__ import annotations

import gc
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
import torch


@contextmanager
def pinned_threads(threads: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def _gc_paused() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def summarize(samples_ns: Sequence[float]) -> tuple[float, float]:
    """(median, interquartile range) in milliseconds."""
    q1, median, q3 = np.percentile(np.asarray(samples_ns, dtype=float) / 1e6, [25, 50, 75])
    return float(median), float(q3 - q1)


def time_call(fn: Callable[[], object], warmup: int, repeats: int) -> tuple[float, float]:
    """(median, interquartile range) of ``fn``'s wall time in milliseconds."""
    for _ in range(warmup):
        fn()
    samples = np.empty(repeats)
    with _gc_paused():
        for i in range(repeats):
            start = time.perf_counter_ns()
            fn()
            samples[i] = time.perf_counter_ns() - start
    return summarize(samples)


# -- interleaved rounds -------------------------------------------------------------------------
#: A subject of interleaved timing: called with ``n``, it makes ``n`` timed calls and returns their
#: nanoseconds as an ``(n, quantities)`` array (one quantity for a whole model, one per op for a
#: network timed op by op). Called with ``0`` it may do nothing.
Subject = Callable[[int], np.ndarray]


def relative_drift(reference_ms: Sequence[float]) -> np.ndarray:
    """Each round's reference median as a relative distance from the median over the rounds."""
    ref = np.asarray(reference_ms, dtype=float)
    return np.abs(ref / np.median(ref) - 1.0)


@dataclass(frozen=True)
class RoundPlan:
    """How a batch of subjects is timed: ``warmup`` untimed calls each, then ``rounds`` rounds in
    which every subject, in a fresh shuffled order, makes one untimed call (its caches were just
    evicted by the others) and ``calls`` timed ones. A round whose reference median strays more
    than ``max_drift`` from the batch's is timed again, at most ``rounds`` times in a batch."""

    rounds: int = 5
    calls: int = 6
    warmup: int = 10
    max_drift: float = 0.1

    @classmethod
    def for_repeats(cls, repeats: int, rounds: int, warmup: int, max_drift: float = 0.1) -> "RoundPlan":
        """``repeats`` timed calls per subject in all, spread over ``rounds`` rounds."""
        rounds = max(1, min(rounds, repeats))
        return cls(rounds=rounds, calls=max(1, -(-repeats // rounds)), warmup=warmup, max_drift=max_drift)


@dataclass
class RoundTiming:
    """What :func:`time_in_rounds` measured. ``samples_ns[i]`` holds subject ``i``'s timed calls,
    each divided by its round's speed factor (the reference's median that round over
    ``baseline_ms``), so a round the machine ran slow counts as if it had not."""

    samples_ns: list[np.ndarray]
    round_medians_ns: list[np.ndarray]
    reference_ms: list[float]   # the reference's raw median in each kept round
    baseline_ms: float | None   # what the corrections divide by (None: no reference)
    repeated_rounds: int
    seconds: float

    def summary(self, index: int, quantity: int = 0) -> tuple[float, float]:
        """(median over all corrected calls, interquartile range of the round medians) in ms."""
        median = float(np.median(self.samples_ns[index][:, quantity])) / 1e6
        q1, q3 = np.percentile(self.round_medians_ns[index][:, quantity], [25, 75]) / 1e6
        return median, float(q3 - q1)

    @property
    def speed(self) -> float:
        """The reference's median this batch over the baseline: above 1, the machine ran slower."""
        if self.baseline_ms is None or not self.reference_ms:
            return 1.0
        return float(np.median(self.reference_ms)) / self.baseline_ms

    @property
    def drift(self) -> float:
        """The largest relative distance of one round's reference median from the batch's."""
        return float(relative_drift(self.reference_ms).max()) if self.reference_ms else 0.0

    def describe(self) -> dict[str, float | int | None]:
        n = len(self.samples_ns)
        return {"subjects": n, "rounds": len(self.round_medians_ns[0]) if n else 0, "repeated_rounds": self.repeated_rounds,
                "reference_ms": float(np.median(self.reference_ms)) if self.reference_ms else None,
                "baseline_ms": self.baseline_ms, "speed": round(self.speed, 4), "drift": round(self.drift, 4),
                "seconds": round(self.seconds, 3), "seconds_per_subject": round(self.seconds / max(n, 1), 4)}


def time_in_rounds(subjects: Sequence[Subject], plan: RoundPlan, reference: Subject | None = None,
                   baseline_ms: float | None = None, seed: int = 0) -> RoundTiming:
    """Time ``subjects`` interleaved in rounds (see :class:`RoundPlan`), with ``reference`` spread
    through every round to see the machine's speed.

    Why rounds: on this project's shared 2-core machine, 100 subnets each timed back to back (30
    calls, median) agreed with a second such run within +-10 % for only 44-78 % of them; timed in 5
    interleaved rounds at the same cost, for 98 %. A slow spell of the machine then touches every
    subject a little instead of a few subjects a lot. The reference (one call after every few
    subjects, ``plan.calls`` per round in all) measures each round's speed; each round's calls are
    divided by its speed relative to ``baseline_ms`` (default: the reference's median over this
    batch), so batches timed minutes apart, corrected to one baseline, compare too.
    """
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    for subject in [*subjects, *([reference] if reference is not None else [])]:
        subject(plan.warmup)
    n = len(subjects)
    every = max(1, -(-n // plan.calls)) if reference is not None else 0
    rounds: list[tuple[list[np.ndarray], float | None]] = []
    repeated = 0
    with _gc_paused():
        while len(rounds) < plan.rounds:
            timed: list[np.ndarray | None] = [None] * n
            ref_calls: list[np.ndarray] = []
            for position, i in enumerate(rng.permutation(n)):
                if reference is not None and position % every == 0:
                    ref_calls.append(reference(1))
                subjects[i](1)
                timed[i] = np.asarray(subjects[i](plan.calls), dtype=float)
            if reference is not None:
                while len(ref_calls) < plan.calls:
                    ref_calls.append(reference(1))
            ref_ms = float(np.median(np.concatenate(ref_calls)[:, 0])) / 1e6 if ref_calls else None
            rounds.append((timed, ref_ms))
            if ref_ms is not None and len(rounds) == plan.rounds and repeated < plan.rounds:
                drift = relative_drift([r for _, r in rounds])
                worst = int(np.argmax(drift))
                if drift[worst] > plan.max_drift:
                    del rounds[worst]  # a burst of load: time that round again
                    repeated += 1
    refs = [r for _, r in rounds if r is not None]
    baseline = (baseline_ms if baseline_ms is not None else float(np.median(refs))) if refs else None
    samples, medians = [], []
    for i in range(n):
        per_round = [timed[i] * (baseline / ref if baseline else 1.0) for timed, ref in rounds]
        samples.append(np.concatenate(per_round))
        medians.append(np.stack([np.median(r, axis=0) for r in per_round]))
    return RoundTiming(samples, medians, refs, baseline, repeated, time.perf_counter() - started)


def model_subject(fn: Callable[[], object]) -> Subject:
    """A whole-model subject: ``fn()`` timed call by call."""
    def run(n: int) -> np.ndarray:
        out = np.empty((n, 1))
        for k in range(n):
            start = time.perf_counter_ns()
            fn()
            out[k, 0] = time.perf_counter_ns() - start
        return out
    return run
