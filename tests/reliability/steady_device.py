"""A measured device whose timings are a fixed function of what it times, for fault tests.

Real timings differ from run to run, so a job on ``local-cpu`` can never end with the same front
twice, killed or not. The kill tests need that comparison, so they run jobs on ``steady-cpu``: it
is :class:`~hwnas.hwmodels.devices.LocalCPU` in every way the pipeline sees (``measures`` is
True, so the profile stage builds and caches a lookup table network by network, the latency
correction measures subnets, and real evaluation times every candidate), except that each
network or model "measured" sleeps ``STEADY_SLEEP_S`` (so a kill can land inside it) and returns figures derived
from the op's key or the model's parameter count instead of a clock.

``python -m tests.reliability.steady_device ARGS`` is ``hwnas ARGS`` with the device registered.
"""
from __future__ import annotations

import hashlib
import sys
import time

import numpy as np

from hwnas.hwmodels.devices import LocalCPU, register_device
from hwnas.utils.timing import RoundTiming

STEADY_SLEEP_S = 0.05


def _ns(key: str) -> int:
    return 2_000 + int(hashlib.sha256(key.encode()).hexdigest()[:6], 16) % 40_000


class SteadyCPU(LocalCPU):
    runtime = "steady-fake-clock"

    def use_reference(self, model, input_shape, baseline_ms=None):
        self.reference_baseline_ms = 1.0

    def time_op_networks(self, networks, input_shape):
        out = []
        for _, ops in networks:
            time.sleep(STEADY_SLEEP_S)
            out.append({op.key: (_ns(op.key) / 1e6, 0.0, self.repeats) for op in ops})
        return out

    def time_models(self, models, input_shape):
        figures = []
        for model in models:
            time.sleep(STEADY_SLEEP_S)
            figures.append((0.01 + sum(p.numel() for p in model.parameters()) * 1e-5) * 1e6)
        return RoundTiming([np.full((self.repeats, 1), ns) for ns in figures],
                           [np.full((1, 1), ns) for ns in figures], [1.0], 1.0, 0, STEADY_SLEEP_S * len(models))


register_device("steady-cpu", SteadyCPU)

if __name__ == "__main__":
    from hwnas.cli.app import main

    sys.exit(main(sys.argv[1:]))
