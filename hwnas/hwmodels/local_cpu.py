"""``local-cpu``: this machine's CPU running eager PyTorch, the measured device every other
measured runtime (:mod:`hwnas.hwmodels.torchscript`) builds on."""
from __future__ import annotations

import os
import platform
from typing import Any

import torch
from torch import nn

from hwnas.ir import OpSig
from hwnas.spaces.ops.layers import op_modules
from hwnas.utils.io import stable_hash
from hwnas.utils.timing import pinned_threads, time_call, time_ops_in_network


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

    runtime = "pytorch-eager"

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name, "kind": self.kind, "processor": processor_name(),
            "machine": platform.machine(), "cpus": os.cpu_count(), "runtime": self.runtime,
            "runtime_version": torch.__version__, "torch": torch.__version__, "threads": self.config.threads,
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
