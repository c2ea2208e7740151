"""hwnas profile: measuring a space's ops, re-measuring noisy ones, resuming a partial table."""
import copy

import pandas as pd
import pytest

from hwnas.cli.app import main
from hwnas.job.checks import load_job_config as load_config
from hwnas.hwmodels.profiler import HIGH_SPREAD, build_lookup_table
from hwnas.spaces.registry import build_space
from tests.conftest import TINY


class ScriptedDevice:
    """Times every op at 1 ms with a small spread, except scripted keys: ``noisy`` ops get a wide
    spread on their first ``noisy_runs`` measurements, then a small one."""

    name, kind, measures = "scripted", "measured", True

    def __init__(self, noisy: dict[str, int]):
        self.noisy, self.seen = noisy, {}

    def describe(self):
        return {"name": self.name, "kind": self.kind}

    def fingerprint(self):
        return "fixed"

    reference_baseline_ms = None

    def use_reference(self, model, input_shape, baseline_ms=None):
        self.reference_baseline_ms = baseline_ms or 2.0

    def time_op_networks(self, networks, input_shape):
        """Per op (median ms, spread ms, calls): 1 ms, with a spread of 62.5 % while noisy, 1 % after."""
        out = []
        for _, ops in networks:
            entries = {}
            for op in ops:
                n = self.seen[op.key] = self.seen.get(op.key, 0) + 1
                entries[op.key] = (1.0, 0.625, 4) if n <= self.noisy.get(op.key, 0) else (1.0, 0.01, 3)
            out.append(entries)
        return out


@pytest.fixture(scope="module")
def space():
    return build_space(load_config(copy.deepcopy(TINY)).space, (1, 8, 8), 10)


def test_noisy_entries_are_remeasured_and_flagged_if_they_stay_noisy(space, tmp_path):
    keys = sorted({op.key for a in space.covering_archs() for op in __import__("hwnas.spaces.registry").spaces.registry.op_graph(
        space.subnet_spec(a))})
    settles, stays = keys[0], keys[1]
    device = ScriptedDevice({settles: 10**9, stays: 10**9})
    first = build_lookup_table(device, space, lambda spec: None, tmp_path, max_spread=0.25, retries=2)
    # both start noisy; their retries fail too: flagged, kept
    assert first.remeasured == 2 and first.flagged == 2 and first.table.entries[stays]["note"] == HIGH_SPREAD
    device.noisy[settles] = 0
    again = build_lookup_table(device, space, lambda spec: None, tmp_path, max_spread=0.25)
    assert again.networks == 0  # flagged entries wait for a refresh
    refreshed = build_lookup_table(device, space, lambda spec: None, tmp_path, max_spread=0.25, refresh=True)
    assert refreshed.remeasured == 2 and refreshed.flagged == 1
    assert refreshed.table.entries[settles]["note"] == "" and refreshed.table.entries[settles]["spread_ms"] < 0.05
    assert pd.read_csv(refreshed.path).set_index("key").loc[stays, "note"] == HIGH_SPREAD


def test_profile_cli_resumes_a_partial_table(tiny_config_file, tmp_path, capsys):
    work = tmp_path / "w"
    args = ["profile", "--device", "local-cpu", "--space", str(tiny_config_file), "--workdir", str(work)]
    assert main(args) == 0
    out = capsys.readouterr().out
    table_path = next((work / "luts").glob("local-cpu-*.csv"))
    frame = pd.read_csv(table_path)
    assert f"measured now {len(frame)}" in out and "method: each op timed inside its network" in out
    assert (frame["repeats"] >= 5).all() and (frame["latency_ms"] > 0).all()
    frame.iloc[: len(frame) // 3].to_csv(table_path, index=False)  # as a killed run leaves it
    from hwnas.utils.io import record_digest

    record_digest(table_path)  # a real flush records the table's digest with it
    assert main(args) == 0
    assert f"measured now {len(frame) - len(frame) // 3}," in capsys.readouterr().out
    assert len(pd.read_csv(table_path)) == len(frame)
    assert main(args) == 0
    assert "measured now 0," in capsys.readouterr().out


def test_profile_refuses_a_device_that_does_not_measure(tiny_config_file, capsys):
    assert main(["profile", "--device", "edge-accel-45nm", "--space", str(tiny_config_file)]) == 2
    assert "analytical device: it has nothing to measure" in capsys.readouterr().err
