"""Peak tensor memory of a piece of CPU code, measured with the PyTorch profiler.

The process's resident set size is a poor measure of an operator's working memory: the allocator
keeps freed blocks, the OS maps pages lazily, and the Python interpreter and libraries allocate
beside the tensors. What a kernel's memory bound is about is the bytes held by tensors, so this
module counts exactly those.

Method: ``torch.profiler.profile(activities=[CPU], profile_memory=True)`` records one
``"[memory]"`` event per allocation and per free made by PyTorch's CPU allocator, whose ``nbytes``
is the signed change (positive: allocated, negative: freed). Taken in time order, the running sum
of these deltas is the tensor memory allocated since profiling began and still held, and its
maximum is the peak above the starting point. The allocator does not report frees of blocks
allocated before profiling began (it warns "Memory block of unknown size was allocated before the
profiling started"), so memory that ``fn`` releases from earlier tensors is not credited against
its own allocations: the result is the peak of what ``fn`` itself holds at once, an upper bound of
the growth of tensor memory. It is at least 0.

The events are read from the raw Kineto trace (``prof.profiler.kineto_results.events()``) rather
than from ``prof.events()``: in this torch version the aggregated ``FunctionEvent`` list folds most
allocations into the enclosing operator's ``cpu_memory_usage`` and keeps only some ``"[memory]"``
entries, which loses the time order the running sum needs. Events from every thread are included,
so memory allocated by the autograd engine during ``backward()`` counts.
"""
from __future__ import annotations

from typing import Callable

from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile


def _memory_deltas(prof: profile) -> list[tuple[int, int]]:
    """(time in ns, signed bytes) of every CPU allocation and free the profiler recorded."""
    events = prof.profiler.kineto_results.events()
    deltas = []
    for event in events:
        if event.name() != "[memory]" or event.device_type() != DeviceType.CPU:
            continue
        deltas.append((event.start_ns(), int(event.nbytes())))
    deltas.sort(key=lambda d: d[0])  # sort is stable: equal time stamps keep their record order
    return deltas


def peak_memory_bytes(fn: Callable[[], object]) -> int:
    """Peak bytes of CPU tensor memory allocated while ``fn()`` runs, above the level at its start.

    The result of ``fn`` is dropped only after profiling stops, so tensors it returns count as
    held to the end. See the module docstring for how the peak is computed.
    """
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = fn()
    del result
    running = peak = 0
    for _, nbytes in _memory_deltas(prof):
        running += nbytes
        peak = max(peak, running)
    return peak
