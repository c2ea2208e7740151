"""Wall-clock timing of whole models and of the ops inside them, the same way for both.

Threads are pinned to the device's count, the model is warmed up, garbage collection is paused,
and each repeat is timed alone; the median is the figure and the interquartile range its spread.

Ops are timed *inside* a running network, between a forward pre-hook and a forward hook on the
op's module, not alone in a loop: on this project's 2-core x86 machine an op repeated alone ran
10-13 % faster than the same op inside a network (warm caches, a primed allocator), and a table of
such timings under-predicted every end-to-end latency by that much; timed in context, the sum of a
subnet's ops came within about 2 % of its end-to-end time.
"""
from __future__ import annotations

import gc
import time
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn


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


def time_ops_in_network(model: nn.Module, modules: Sequence[nn.Module], run: Callable[[], object],
                        warmup: int, repeats: int) -> list[list[int]]:
    """Per module, the nanoseconds each of ``repeats`` runs of ``run()`` spent inside it."""
    for _ in range(warmup):
        run()
    samples: list[list[int]] = [[] for _ in modules]
    started: dict[int, int] = {}
    handles = []
    for index, module in enumerate(modules):
        handles.append(module.register_forward_pre_hook(
            lambda m, inputs, i=index: started.__setitem__(i, time.perf_counter_ns())))
        handles.append(module.register_forward_hook(
            lambda m, inputs, output, i=index: samples[i].append(time.perf_counter_ns() - started[i])))
    try:
        with _gc_paused():
            for _ in range(repeats):
                run()
    finally:
        for handle in handles:
            handle.remove()
    return samples
