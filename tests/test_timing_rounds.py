"""Interleaved timing in rounds: the arithmetic of drift correction and re-timed rounds, checked on
subjects whose "time" is a known figure times a machine speed the test controls (no clock), and
the measured devices' batch timing on real models."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from hwnas.config import DeviceConfig
from hwnas.hwmodels.local_cpu import LocalCPU
from hwnas.hwmodels.torchscript import TorchScriptCPU
from hwnas.utils.timing import RoundPlan, time_in_rounds


class Machine:
    """A machine whose speed is a function of how many calls it has run so far."""

    def __init__(self, speed):
        self.calls, self.speed = 0, speed

    def subject(self, true_ns: float):
        def run(n: int) -> np.ndarray:
            out = np.empty((n, 1))
            for k in range(n):
                out[k, 0] = true_ns * self.speed(self.calls)
                self.calls += 1
            return out
        return run


def test_a_slow_drift_is_corrected_to_the_reference_baseline():
    # the machine slows steadily to 1.6x over the run: uncorrected medians come out ~30 % high
    machine = Machine(lambda calls: 1.0 + 0.6 * min(calls / 150, 1.0))
    truth = [1e6, 2e6, 3.5e6, 5e6]
    plan = RoundPlan(rounds=5, calls=6, warmup=0)
    timing = time_in_rounds([machine.subject(t) for t in truth], plan, reference=machine.subject(2e6),
                            baseline_ms=2.0)
    corrected = [timing.summary(i)[0] * 1e6 for i in range(len(truth))]
    assert np.allclose(corrected, truth, rtol=0.03)
    assert timing.speed > 1.1  # the batch ran slower than the baseline, and says so

    machine = Machine(lambda calls: 1.0 + 0.6 * min(calls / 150, 1.0))
    plain = time_in_rounds([machine.subject(t) for t in truth], plan)
    assert all(plain.summary(i)[0] * 1e6 > 1.1 * t for i, t in enumerate(truth))
    assert plain.speed == 1.0 and plain.baseline_ms is None


def test_without_a_baseline_the_batch_reference_median_is_the_baseline():
    machine = Machine(lambda calls: 2.0)
    timing = time_in_rounds([machine.subject(1e6)], RoundPlan(rounds=3, calls=4, warmup=2),
                            reference=machine.subject(1e6))
    assert timing.baseline_ms == pytest.approx(2.0)
    assert timing.summary(0) == (pytest.approx(2.0), pytest.approx(0.0))


def test_a_round_hit_by_a_burst_of_load_is_timed_again():
    # calls 100-160 run 3x slower: the round they fall in is thrown away and repeated
    machine = Machine(lambda calls: 3.0 if 100 <= calls < 160 else 1.0)
    truth = [1e6 * (1 + i % 5) for i in range(10)]
    timing = time_in_rounds([machine.subject(t) for t in truth], RoundPlan(rounds=5, calls=3, warmup=1, max_drift=0.1),
                            reference=machine.subject(1e6))
    assert timing.repeated_rounds >= 1
    assert len(timing.reference_ms) == 5
    assert np.allclose([timing.summary(i)[0] * 1e6 for i in range(10)], truth)


def test_every_subject_is_called_as_the_plan_says():
    machine = Machine(lambda calls: 1.0)
    counts = []

    def counting(n):
        counts.append(n)
        return machine.subject(1e6)(n)

    timing = time_in_rounds([counting], RoundPlan(rounds=4, calls=5, warmup=7))
    assert counts == [7] + [1, 5] * 4  # warm-up, then per round one untimed and the timed calls
    assert timing.samples_ns[0].shape == (20, 1)
    assert timing.round_medians_ns[0].shape == (4, 1)


def test_plan_spreads_the_repeats_over_rounds():
    assert RoundPlan.for_repeats(30, 5, 10) == RoundPlan(rounds=5, calls=6, warmup=10)
    assert RoundPlan.for_repeats(3, 5, 1) == RoundPlan(rounds=3, calls=1, warmup=1)
    assert RoundPlan.for_repeats(31, 5, 0).calls == 7  # never fewer timed calls than asked


@pytest.mark.parametrize("device_class", [LocalCPU, TorchScriptCPU])
def test_a_batch_of_models_is_timed_and_a_far_larger_model_is_slower(device_class):
    small = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 64, 10))
    large = nn.Sequential(*[nn.Conv2d(1 if i == 0 else 64, 64, 3, padding=1) for i in range(6)], nn.Flatten(),
                          nn.Linear(64 * 64, 10))
    device = device_class(DeviceConfig(warmup=2, repeats=6, rounds=3))
    device.use_reference(small, (1, 8, 8))
    before = torch.get_num_threads()
    timing = device.time_models([small, large], (1, 8, 8))
    assert torch.get_num_threads() == before
    (small_ms, small_spread), (large_ms, large_spread) = timing.summary(0), timing.summary(1)
    assert 0 < small_ms < large_ms and small_spread >= 0 and large_spread >= 0
    assert device.reference_baseline_ms == timing.baseline_ms > 0  # later batches correct to it
    assert set(timing.describe()) >= {"speed", "drift", "seconds_per_subject", "rounds"}
    again = device.time_models([small], (1, 8, 8))
    assert again.baseline_ms == timing.baseline_ms
