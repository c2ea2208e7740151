"""The device registry and ``local-cpu``, a device measured on the spot.

A device answers three questions: what it is (:meth:`describe`, recorded with every table and
export), how long each op of a network takes (:meth:`time_ops`, for its lookup table) and how long
a whole model takes (:meth:`time_model`, for real evaluation). Both run the fixed layers the
exporter builds; see :mod:`hwnas.hwmodels.timing` for the method.
"""
from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from hwnas.errors import ConfigError
from hwnas.hwmodels.graph import OpSig, op_graph
from hwnas.hwmodels.lut import LookupTable
from hwnas.hwmodels.roofline import RooflineModel
from hwnas.hwmodels.timing import pinned_threads, time_call, time_ops_in_network
from hwnas.spaces.ops.layers import op_modules
from hwnas.utils.io import stable_hash


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

    def __init__(self, config):
        self.config = config
        self.name = config.name

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name, "kind": self.kind, "processor": processor_name(),
            "machine": platform.machine(), "cpus": os.cpu_count(), "runtime": "pytorch-eager",
            "torch": torch.__version__, "threads": self.config.threads,
            "batch_size": self.config.batch_size, "warmup": self.config.warmup,
            "repeats": self.config.repeats,
        }

    def fingerprint(self) -> str:
        """Tables are reused only on the same processor, runtime, threads and batch size."""
        return stable_hash(self.describe())

    @torch.inference_mode()
    def _time(self, module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> tuple[float, float]:
        with pinned_threads(self.config.threads):
            return time_call(lambda: module(*inputs), self.config.warmup, self.config.repeats)

    @torch.inference_mode()
    def time_ops(self, model: nn.Module, ops: list[OpSig], input_shape: tuple[int, ...]) -> dict[str, list[int]]:
        """Nanosecond samples of every op of ``model`` (whose op graph is ``ops``), timed in place."""
        modules = op_modules(model)
        if len(modules) != len(ops):
            raise ValueError(f"model has {len(modules)} op modules but its graph {len(ops)} ops")
        model = model.eval().cpu()
        x = torch.randn(self.config.batch_size, *input_shape)
        with pinned_threads(self.config.threads):
            samples = time_ops_in_network(model, modules, lambda: model(x), self.config.warmup,
                                          self.config.repeats)
        out: dict[str, list[int]] = {}
        for op, s in zip(ops, samples):
            out.setdefault(op.key, []).extend(s)
        return out

    def time_model(self, model: nn.Module, input_shape: tuple[int, ...]) -> tuple[float, float]:
        x = torch.randn(self.config.batch_size, *input_shape)
        return self._time(model.eval().cpu(), (x,))


class AnalyticalDevice:
    """Hardware described by a roofline model: costs are computed, never measured."""

    kind = "analytical"
    measures = False  # real evaluation measures accuracy; latency stays the model's prediction

    def __init__(self, config, model: RooflineModel):
        self.config, self.model, self.name = config, model, model.spec.name
        self.energy = model.energy

    def describe(self) -> dict[str, Any]:
        return {**self.model.describe(), "batch_size": 1}

    def fingerprint(self) -> str:
        return stable_hash(self.describe())

    def lookup_table(self, space) -> LookupTable:
        """Every op of the space priced by the model (what a measured device's profiler measures)."""
        table = LookupTable(device=self.describe())
        for arch in space.covering_archs():
            for op in op_graph(space.subnet_spec(arch)):
                if op not in table:
                    table.add(op, 1e3 * self.model.op_seconds(op), 0.0, 0)
        return table


SHIPPED_DEVICES = Path(__file__).resolve().parents[1] / "devices"
DEVICES: dict[str, Callable[[Any], Any]] = {"local-cpu": LocalCPU}


def register_device(name: str, factory: Callable[[Any], Any]) -> None:
    DEVICES[name] = factory


def shipped_specs() -> dict[str, Path]:
    return {p.stem: p for p in sorted(SHIPPED_DEVICES.glob("*.yaml"))}


def build_device(config):
    """A built-in device, a shipped analytical one by name, or the one ``device.spec`` describes."""
    if config.spec is not None:
        model = RooflineModel.from_yaml(config.spec)
        if model.spec.name != config.name:
            raise ConfigError(f"device.name {config.name!r} does not match the name {model.spec.name!r} "
                              f"in {config.spec}")
        return AnalyticalDevice(config, model)
    if config.name in DEVICES:
        return DEVICES[config.name](config)
    if config.name in shipped_specs():
        return AnalyticalDevice(config, RooflineModel.from_yaml(shipped_specs()[config.name]))
    known = sorted(DEVICES) + sorted(shipped_specs())
    raise ConfigError(f"device.name: unknown device {config.name!r}; known: {known} (or give device.spec)")


def list_devices(config) -> list[dict[str, Any]]:
    """Every device chosen by name: built-in measured ones and the shipped analytical ones."""
    rows = [{"name": name, "kind": "measured", "about": f"{processor_name()}, eager PyTorch"} for name in DEVICES]
    for name, path in shipped_specs().items():
        model = RooflineModel.from_yaml(path)
        rows.append({"name": name, "kind": "analytical", "about": model.spec.description})
    return rows


