"""The proxy registry: every zero-cost proxy is a function registered under a name.

A proxy is ``fn(model, batch) -> float``: ``model`` is a private copy that :func:`hwnas.proxies.score`
made for this proxy alone (already in the mode the entry asks for, gradients cleared, the seed set),
so a proxy may change its weights, modes and gradients freely; ``batch`` is the
:class:`~hwnas.proxies.batch.ProxyBatch`. Adding a proxy is one function and one
:func:`register_proxy` call, in hwnas or outside it; the built-in ones are imported the first time
a proxy is looked up.
"""
from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from typing import Callable, Literal

from torch import nn

from hwnas.errors import ProxyError
from hwnas.proxies.batch import ProxyBatch

ProxyFn = Callable[[nn.Module, ProxyBatch], float]
Samples = Literal["batch", "one", "none"]


@dataclass(frozen=True)
class ProxyEntry:
    """A registered proxy and what it needs.

    ``train``: the mode the copy of the model runs in (the references score gradients and
    activations in training mode; counts and synflow in evaluation mode). ``samples``: what of
    the batch the proxy reads, for the batch size its score states: ``"batch"`` all of it,
    ``"one"`` a single input (the first sample, or one all-ones input), ``"none"`` no input.
    """

    name: str
    fn: ProxyFn
    needs_targets: bool = False
    train: bool = True
    samples: Samples = "batch"

    def batch_size(self, batch: ProxyBatch) -> int:
        return {"batch": batch.size, "one": 1, "none": 0}[self.samples]


PROXIES: dict[str, ProxyEntry] = {}
BUILTIN_PROXIES = ("hwnas.proxies.synflow", "hwnas.proxies.naswot", "hwnas.proxies.gradients",
                   "hwnas.proxies.jacob_cov", "hwnas.proxies.meco", "hwnas.proxies.counts")


def register_proxy(name: str, fn: ProxyFn | None = None, *, needs_targets: bool = False,
                   train: bool = True, samples: Samples = "batch"):
    """Register ``fn`` as the proxy ``name``; without ``fn``, a decorator that does.

    >>> @register_proxy("weight_sum", train=False, samples="none")
    ... def weight_sum(model, batch):
    ...     return float(sum(p.detach().sum() for p in model.parameters()))
    """
    if samples not in ("batch", "one", "none"):
        raise ValueError(f"register_proxy: samples must be 'batch', 'one' or 'none' (got {samples!r})")

    def add(function: ProxyFn) -> ProxyFn:
        PROXIES[name] = ProxyEntry(name, function, needs_targets=needs_targets, train=train, samples=samples)
        return function

    return add if fn is None else add(fn)


def _load_builtins() -> dict[str, ProxyEntry]:
    _import_builtins()
    return PROXIES


@functools.cache
def _import_builtins() -> None:
    """Import each built-in proxy module once (each registers its proxies)."""
    for module in BUILTIN_PROXIES:
        importlib.import_module(module)


def proxy_names() -> tuple[str, ...]:
    """The names of every registered proxy, sorted."""
    return tuple(sorted(_load_builtins()))


def proxy_entry(name: str) -> ProxyEntry:
    try:
        return _load_builtins()[name]
    except KeyError:
        raise ProxyError(f"unknown proxy {name!r}; known: {', '.join(proxy_names())}") from None
