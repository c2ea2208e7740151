"""A measured device whose timings are a fixed function of what it times, for fault tests.

Real timings differ from run to run, so a job on ``local-cpu`` can never end with the same front
twice, killed or not. The kill tests need that comparison, so they run jobs on ``steady-cpu``: it
is :class:`~hwnas.hwmodels.devices.LocalCPU` in every way the pipeline sees (``measures`` is
True, so the profile stage builds and caches a lookup table network by network, the latency
correction measures subnets, and real evaluation times every candidate), except that each
"measurement" sleeps ``STEADY_SLEEP_S`` (so a kill can land inside it) and returns figures derived
from the op's key or the model's parameter count instead of a clock.

``python -m tests.reliability.steady_device ARGS`` is ``hwnas ARGS`` with the device registered.
"""
from __future__ import annotations

import hashlib
import sys
import time

from hwnas.hwmodels.devices import LocalCPU, register_device

STEADY_SLEEP_S = 0.05


def _ns(key: str) -> int:
    return 2_000 + int(hashlib.sha256(key.encode()).hexdigest()[:6], 16) % 40_000


class SteadyCPU(LocalCPU):
    runtime = "steady-fake-clock"

    def time_ops(self, model, ops, input_shape):
        time.sleep(STEADY_SLEEP_S)
        return {op.key: [_ns(op.key)] * self.config.repeats for op in ops}

    def time_model(self, model, input_shape):
        time.sleep(STEADY_SLEEP_S)
        params = sum(p.numel() for p in model.parameters())
        return 0.01 + params * 1e-5, 0.0


register_device("steady-cpu", SteadyCPU)

if __name__ == "__main__":
    from hwnas.cli.app import main

    sys.exit(main(sys.argv[1:]))
