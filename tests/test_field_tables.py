"""Lookup tables as published in the field: APQ's BitFusion JSON (bit-width keys plus ``head`` and
``tail`` entries with ``latency`` and ``energy`` fields) and HW-NAS-Bench's FBNet-space ``.npy``
files (a pickled dict of ``ConvBlock_...``-style keys to milliseconds). The test writes small
files of exactly those shapes for a small CNN space, imports them with ``hwnas import-table``, and
checks that a subnet is priced by the right entries, the fixed stem and classifier included."""
from __future__ import annotations

import copy
import json
import os

import numpy as np
import pytest

from hwnas.cli.app import main
from hwnas.config import DeviceConfig
from hwnas.hwmodels.cost import CostModel
from hwnas.hwmodels.devices import build_device
from hwnas.hwmodels.energy import energy_model
from hwnas.job.checks import load_job_config
from hwnas.search.vectorized import VectorizedCosts
from hwnas.spaces.registry import block_graph, build_space, op_graph
from tests.conftest import TINY

# depth 1 and a channel change in every stage: no block adds its input, as in APQ's backbone
STAGES = [{"channels": 12, "stride": 1, "depth": [1]}, {"channels": 16, "stride": 2, "depth": [1]}]


@pytest.fixture(scope="module")
def space():
    tree = copy.deepcopy(TINY)
    tree["space"]["stages"] = STAGES
    return build_space(load_job_config(tree).space, (1, 8, 8), 10)


def apq_key(op) -> str:
    pad = op.kernel // 2
    return f"({op.cin}, {op.cout}, {op.h}, {op.kernel}, {op.stride}, {pad}, {op.groups})-W{op.wbits}A{op.abits}"


def apq_table(space) -> tuple[dict, dict[str, float]]:
    """APQ's shape: every block op of every subnet at its bits, and head / tail."""
    table, price = {}, {}
    for arch in space.covering_archs():
        ops = op_graph(space.subnet_spec(arch))
        for op in ops[1:-2]:  # the blocks' ops; the stem, head conv and classifier are head / tail
            key = apq_key(op)
            latency = 0.001 * (op.cin + op.cout + op.kernel + op.wbits)
            table[key] = {"latency": latency, "energy": latency / 10}
            price[key] = latency
    table["head"] = {"latency": 0.5, "energy": 0.05}
    table["tail"] = {"latency": 0.25, "energy": 0.025}
    return table, price


def test_an_apq_bitfusion_table_imports_and_prices_the_fixed_parts_from_head_and_tail(space, tmp_path, capsys):
    table, price = apq_table(space)
    source = tmp_path / "BitFusion_new.b16.dict"  # APQ's file: JSON, named .dict
    source.write_text(json.dumps(table))
    assert main(["import-table", str(source), "--format", "bitwidth", "--name", "bitfusion",
                 "--workdir", str(tmp_path)]) == 0
    out = " ".join(capsys.readouterr().out.split())  # unwrapped
    assert "with energy" in out and "head priced as one entry" in out and "tail priced as one entry" in out
    device = build_device(DeviceConfig(name="bitfusion"), tmp_path)
    lut = device.lookup_table(space)
    assert set(lut.fixed_parts()) == {"head", "tail"}
    model = CostModel(space, lut, energy_model("horowitz-45nm"))
    for arch in [space.largest(), space.smallest()]:
        ops = op_graph(space.subnet_spec(arch))
        expected = 0.5 + 0.25 + sum(price[apq_key(op)] for op in ops[1:-2])
        costs = model.costs(arch)
        assert costs["latency_ms"] == pytest.approx(expected)
        assert costs["energy_mj"] == pytest.approx(expected / 10)  # the table's energy, not a model's
    fast = VectorizedCosts(space, model)  # the search's vectorized path agrees
    X = np.array([space.encode(a) for a in (space.largest(), space.smallest())])
    assert np.allclose(fast.costs(X)["latency_ms"], [model.costs(space.decode(x))["latency_ms"] for x in X])


def fbnet_key(unit) -> str | None:
    if unit.kind == "mbconv":
        return (f"ConvBlock_H{unit.h}_W{unit.w}_Cin{unit.cin}_Cout{unit.cout}_exp{unit.mid // unit.cin}"
                f"_kernel{unit.kernel}_stride{unit.stride}_group1")
    if unit.kind == "conv":
        return (f"ConvNorm_H{unit.h}_W{unit.w}_Cin{unit.cin}_Cout{unit.cout}_kernel{unit.kernel}"
                f"_stride{unit.stride}_group{unit.groups}")
    return None


def test_an_fbnet_npy_table_imports_block_by_block_and_skipped_kinds_get_one_line_each(space, tmp_path, capsys):
    entries, price = {}, {}
    for arch in space.covering_archs():
        for unit in block_graph(space.subnet_spec(arch)):
            key = fbnet_key(unit)
            if key is not None:
                entries[key] = price[key] = 0.01 * (unit.cin + unit.cout + unit.kernel + unit.mid)
    classifier = block_graph(space.subnet_spec(space.largest()))[-1]
    entries[f"AvgP_H{classifier.h}_W{classifier.w}_Cin{classifier.cin}_Cout{classifier.cin}_kernel{classifier.h}"
            f"_stride1"] = 0.03
    entries[f"FC_Cin{classifier.cin}_Cout{classifier.cout}"] = 0.07
    entries["Skip_H8_W8_Cin12_Cout12_stride1"] = 0.001  # kinds hwnas cannot use, one line each
    entries["Skip_H4_W4_Cin16_Cout16_stride1"] = 0.001
    entries["ConvBlock_H8_W8_Cin12_Cout12_exp1_kernel3_stride1_group2"] = 0.2
    source = tmp_path / "fbnet_edgegpu_lut.npy"
    np.save(source, {k: np.float64(v) for k, v in entries.items()})  # as HW-NAS-Bench saved them
    assert main(["import-table", str(source), "--format", "fbnet", "--name", "edgegpu", "--workdir", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert "block granularity" in " ".join(captured.out.split())
    skipped = [line for line in captured.err.split("warning:") if "skipped" in line]
    assert len(skipped) == 2, captured.err
    assert any("skipped 2 skip-connection" in line for line in skipped)
    assert any("skipped 1 blocks with grouped 1x1" in line for line in skipped)
    lut = build_device(DeviceConfig(name="edgegpu"), tmp_path).lookup_table(space)
    model = CostModel(space, lut, energy_model("horowitz-45nm"))
    for arch in [space.largest(), space.smallest()]:
        units = block_graph(space.subnet_spec(arch))
        expected = sum(price[fbnet_key(u)] for u in units[:-1]) + 0.03 + 0.07  # classifier: pooling + FC
        assert model.costs(arch)["latency_ms"] == pytest.approx(expected)


def test_an_npy_table_holding_anything_but_numbers_is_refused_without_running_it(tmp_path, capsys):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    source = tmp_path / "lut.npy"
    np.save(source, {"ConvNorm_H8_W8_Cin1_Cout8_kernel3_stride1_group1": Payload()}, allow_pickle=True)
    assert main(["import-table", str(source), "--format", "fbnet", "--name", "x", "--workdir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "refused" in err and "system" in err and len(err.strip().splitlines()) == 1
    assert not marker.exists()
