import numpy as np
import pandas as pd
import pytest
import torch

from hwnas.job.checks import load_job_config as load_config
from hwnas.errors import LookupTableError
from hwnas.hwmodels.cost import CostModel
from hwnas.hwmodels.devices import LocalCPU
from hwnas.hwmodels.energy import Horowitz45nm
from hwnas.ir import OpSig
from hwnas.spaces.registry import op_graph
from hwnas.hwmodels.lut import LookupTable
from hwnas.hwmodels.profiler import build_lookup_table
from hwnas.spaces.cnn import StandaloneCNN
from hwnas.spaces.registry import build_space


@pytest.fixture(scope="module")
def tiny_space():
    from tests.conftest import TINY

    cfg = load_config(dict(TINY))
    return build_space(cfg.space, (1, 8, 8), 10), cfg


@pytest.fixture(scope="module")
def table(tiny_space, tmp_path_factory):
    space, cfg = tiny_space
    device = LocalCPU(cfg.device)
    cache = tmp_path_factory.mktemp("luts")
    result = build_lookup_table(device, space, StandaloneCNN, cache)
    return result.table, result.path, result.measured, device, cache


def test_profiler_covers_every_op_of_every_subnet(tiny_space, table):
    space, _ = tiny_space
    lut = table[0]
    rng = np.random.default_rng(0)
    for _ in range(50):
        assert not lut.missing(op_graph(space.subnet_spec(space.sample(rng))))
    row = next(iter(lut.entries.values()))
    assert row["repeats"] >= 5 and row["latency_ms"] > 0
    assert lut.device["threads"] == 1 and lut.device["batch_size"] == 1


def test_cached_table_is_reused_without_measuring(tiny_space, table):
    space, _ = tiny_space
    lut, path, measured, device, cache = table
    assert measured == len(lut)
    again = build_lookup_table(device, space, StandaloneCNN, cache)
    assert again.path == path and again.measured == 0 and again.networks == 0
    assert again.table.entries.keys() == lut.entries.keys()


def test_lut_sum_equals_sum_of_its_entries(tiny_space, table):
    space, _ = tiny_space
    lut, path = table[0], table[1]
    frame = pd.read_csv(path).set_index("key")
    cost = CostModel(space, LookupTable.load(path), Horowitz45nm())
    rng = np.random.default_rng(1)
    for _ in range(20):
        arch = space.sample(rng)
        keys = [op.key for op in op_graph(space.subnet_spec(arch))]
        assert cost.costs(arch)["latency_ms"] == pytest.approx(float(frame.loc[keys, "latency_ms"].sum()), rel=1e-12)


def test_table_round_trips_through_csv(table, tmp_path):
    lut = table[0]
    lut.save(tmp_path / "t.csv")
    back = LookupTable.load(tmp_path / "t.csv")
    assert back.entries == lut.entries and back.device == lut.device


def test_missing_entry_names_the_op(tiny_space):
    space, _ = tiny_space
    ops = op_graph(space.subnet_spec(space.largest()))
    with pytest.raises(LookupTableError, match=r"no entry for op conv-in1x8x8-out8-k3"):
        LookupTable(device={"name": "x"}).total_latency_ms(ops)


@pytest.mark.parametrize("content,message", [
    ("key,kind\nx,conv\n", "lacks column 'latency_ms'"),
    ("", "unreadable"),
    ("\x00\x01\x02garbage", "lacks column"),
])
def test_unreadable_tables_are_refused(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(LookupTableError, match=message):
        LookupTable.load(path)


def test_negative_and_duplicate_entries_are_refused(table, tmp_path):
    frame = pd.read_csv(table[1])
    bad = frame.copy()
    bad.loc[0, "latency_ms"] = -1.0
    bad.to_csv(tmp_path / "neg.csv", index=False)
    with pytest.raises(LookupTableError, match="line 2: latency_ms -1.0"):
        LookupTable.load(tmp_path / "neg.csv")
    pd.concat([frame, frame.iloc[:1]]).to_csv(tmp_path / "dup.csv", index=False)
    with pytest.raises(LookupTableError, match="duplicate entry"):
        LookupTable.load(tmp_path / "dup.csv")


def test_energy_model_against_hand_computation():
    e = Horowitz45nm()
    op = OpSig("conv", 16, 8, 8, 32, kernel=1, stride=1, groups=1, wbits=4, abits=8, act="relu6")
    macs = 32 * 16 * 8 * 8
    compute = macs * (0.2 * (4 * 8) / 64 + 0.1)
    weights = 32 * 16 * 4 * 1300 / 64
    activations = (16 * 64 + 32 * 64) * 8 * 10 / 64
    assert e.op_pj(op) == pytest.approx(compute + weights + activations)
    fp = OpSig("conv", 16, 8, 8, 32, wbits=32, abits=32)
    assert e.op_pj(fp) > 5 * e.op_pj(op)  # float MACs and 32-bit traffic cost far more
    assert e.energy_mj([op, op]) == pytest.approx(2 * e.op_pj(op) / 1e9)


def test_end_to_end_latency_is_measured_on_the_exported_model(tiny_space):
    space, cfg = tiny_space
    device = LocalCPU(cfg.device)
    model = StandaloneCNN(space.subnet_spec(space.largest()))
    before = torch.get_num_threads()
    median, spread = device.time_model(model, (1, 8, 8))
    assert median > 0 and spread >= 0
    assert torch.get_num_threads() == before  # the device's thread pinning is undone afterwards
