"""Table devices: the native schema, the OFA and bit-width importers, wildcards and missing ops."""
import copy

import numpy as np
import pytest
import yaml

from hwnas.cli.app import main
from hwnas.config import DeviceConfig
from hwnas.job.checks import load_job_config as load_config
from hwnas.errors import LookupTableError
from hwnas.hwmodels.cost import CostModel, cost_units
from hwnas.hwmodels.devices import AnalyticalDevice, TableDevice, build_device, space_units
from hwnas.hwmodels.energy import Horowitz45nm
from hwnas.ir import OpSig, count
from hwnas.spaces.registry import block_graph, op_graph
from hwnas.hwmodels.lut import LookupTable
from hwnas.hwmodels.roofline import RooflineModel
from hwnas.hwmodels.table_formats import export_mapping, import_mapping, import_table
from hwnas.spaces.registry import build_space
from tests.conftest import TINY

OFA = {
    "Conv-input:32x32x3-output:16x16x16": {"count": 50, "mean": 0.31, "std": 0.01},
    "expanded_conv-input:16x16x16-output:16x16x16-expand:1-kernel:3-stride:1-idskip:1":
        {"count": 50, "mean": 0.12, "std": 0.004},
    "expanded_conv-input:16x16x16-output:8x8x24-expand:6-kernel:5-stride:2-idskip:0":
        {"count": 40, "mean": 0.85, "std": 0.02},
    "expanded_conv-input:8x8x24-output:8x8x24-expand:3-kernel:7-stride:1-idskip:1-se:0-hs:0":
        {"count": 40, "mean": 0.4, "std": 0.01},
    "Conv_1-input:4x4x32-output:4x4x128": {"count": 50, "mean": 0.05, "std": 0.001},
    "Logits-input:4x4x128-output:10": {"count": 50, "mean": 0.02, "std": 0.0005},
}
BITWIDTH = {
    "(16, 32, 8, 1, 1, 0, 1)-W4A8": {"latency_ms": 0.011, "energy_mj": 2.5e-5},
    "(32, 32, 8, 3, 2, 1, 32)-W8A8": {"latency_ms": 0.02, "energy_mj": 1e-5},
    "(32, 64, 4, 5, 1, 2, 1)-W32A32": {"latency_ms": 0.3, "energy_mj": 4e-4},
}


def tiny_space(**changes):
    tree = copy.deepcopy(TINY)
    tree["space"].update(changes)
    cfg = load_config(tree)
    return build_space(cfg.space, (1, 8, 8), 10)


@pytest.mark.parametrize("fmt,mapping,suffix", [("ofa", OFA, ".yaml"), ("bitwidth", BITWIDTH, ".json")])
def test_importers_round_trip_through_the_native_schema(tmp_path, fmt, mapping, suffix):
    source = tmp_path / f"table{suffix}"
    source.write_text(yaml.safe_dump(mapping) if suffix == ".yaml" else __import__("json").dumps(mapping))
    table = import_table(source, fmt, {"name": "phone", "processor": "SoC"})
    for native in ("native.csv", "native.json"):  # both native files keep every field
        table.save(tmp_path / native)
        back = LookupTable.load(tmp_path / native)
        assert back.entries == table.entries and back.device["processor"] == "SoC"
        assert export_mapping(back, fmt) == mapping


def test_ofa_keys_become_blocks_and_convs():
    table = import_mapping(OFA, "ofa", {})
    assert table.granularity == "block"
    block = table.entry(OpSig("mbconv", 16, 16, 16, 24, kernel=5, stride=2, wbits=4, abits=8, mid=96))
    assert block["latency_ms"] == 0.85 and block["repeats"] == 40  # bits are wildcards
    stem = table.entry(OpSig("conv", 3, 32, 32, 16, kernel=3, stride=2, act="relu6"))
    assert stem["latency_ms"] == 0.31
    assert table.entry(OpSig("classifier", 128, 4, 4, 10))["latency_ms"] == 0.02


def test_bitwidth_keys_keep_bits_and_energy():
    table = import_mapping(BITWIDTH, "bitwidth", {})
    dw = OpSig("dwconv", 32, 8, 8, 32, kernel=3, stride=2, groups=32, wbits=8, abits=8, act="relu6")
    assert table.entry(dw)["energy_mj"] == 1e-5
    assert table.entry(OpSig("conv", 16, 8, 8, 32, wbits=4, abits=8))["latency_ms"] == 0.011
    assert OpSig("conv", 16, 8, 8, 32, wbits=8, abits=8) not in table  # other bits are other entries
    assert table.has_energy


@pytest.mark.parametrize("fmt,key,message", [
    ("ofa", "expanded_conv-input:8x8x16-output:8x8x16-expand:2-kernel:3-stride:1-idskip:0", "idskip:0"),
    ("ofa", "MBConv 3x3", "not an OFA-style key"),
    ("ofa", "expanded_conv-input:8x8x16-output:8x8x16-kernel:3-stride:1-idskip:1", "lacks expand"),
    ("bitwidth", "(16, 32, 8, 3, 1, 0, 1)-W4A4", "padding 0 with kernel 3"),
    ("bitwidth", "16-32-8-W4A4", "not a bit-width key"),
])
def test_malformed_keys_are_named(fmt, key, message):
    with pytest.raises(LookupTableError, match=message):
        import_mapping({key: 0.1}, fmt, {})


def test_unsupported_ofa_layers_are_skipped_with_a_warning():
    mapping = {**OFA, "expanded_conv-input:8x8x24-output:8x8x24-expand:3-kernel:3-stride:1-idskip:1-se:1-hs:1": 0.5}
    with pytest.warns(UserWarning, match="skipped 1 entries.*se:1-hs:1"):
        table = import_mapping(mapping, "ofa", {})
    assert len(table) == len(OFA)


def test_block_table_prices_a_subnet_block_by_block():
    space = tiny_space()
    truth = lambda op: 0.001 * (op.cin + op.cout + op.mid + op.kernel + op.h)  # noqa: E731
    table = LookupTable(device={})
    for op in space_units(space, LookupTable(device={}, entries={"x": {"kind": "mbconv"}})):
        table.add(op, truth(op))
    table = import_mapping(export_mapping(table, "ofa"), "ofa", {})  # through the OFA format
    cost = CostModel(space, table, Horowitz45nm())
    rng = np.random.default_rng(0)
    for _ in range(10):
        arch = space.sample(rng)
        spec = space.subnet_spec(arch)
        units = block_graph(spec)
        assert cost.costs(arch)["latency_ms"] == pytest.approx(sum(truth(u) for u in units))
        # a block signature counts what its ops count
        assert count(units)["macs"] == count(op_graph(spec))["macs"]
        assert count(units)["params"] == count(op_graph(spec))["params"]


def test_wildcards_match_and_the_most_specific_row_wins():
    table = LookupTable(device={})
    table.add_row({"kind": "add", "latency_ms": 0.5})
    table.add_row({"kind": "conv", "kernel": 3, "latency_ms": 2.0})
    table.add_row({"kind": "conv", "kernel": 3, "wbits": 4, "latency_ms": 1.0})
    exact = OpSig("conv", 8, 4, 4, 8, kernel=3, wbits=4, abits=4)
    table.add(exact, 0.25)
    assert table.latency_ms(OpSig("add", 16, 2, 2, 16)) == 0.5
    assert table.latency_ms(OpSig("conv", 16, 4, 4, 8, kernel=3, wbits=32)) == 2.0
    assert table.latency_ms(OpSig("conv", 16, 4, 4, 8, kernel=3, wbits=4)) == 1.0
    assert table.latency_ms(exact) == 0.25
    with pytest.raises(LookupTableError, match="no entry for op conv-in16x4x4-out8-k1"):
        table.latency_ms(OpSig("conv", 16, 4, 4, 8, kernel=1))


def _analytical_table(space):
    spec = RooflineModel.from_yaml(__import__("hwnas").hwmodels.devices.shipped_specs()["edge-accel-45nm"])
    return AnalyticalDevice(DeviceConfig(), spec).lookup_table(space)


def test_missing_entry_is_an_error_or_interpolated_with_a_warning(tmp_path):
    space = tiny_space(expand_ratios=[2, 3, 4])
    table = _analytical_table(space)
    gone = OpSig("conv", 8, 8, 8, 24, wbits=4, abits=4, act="relu6", act_signed=True)
    assert gone in table
    true_ms = table.latency_ms(gone)
    del table.entries[gone.key]
    table.device = {"name": "sparse"}
    table.save(tmp_path / "sparse.csv")
    device = TableDevice(DeviceConfig(name="sparse"), tmp_path / "sparse.csv")
    with pytest.raises(LookupTableError, match=rf"no entry for op {gone.key}; add .*interpolate_missing"):
        device.lookup_table(space)
    lenient = TableDevice(DeviceConfig(name="sparse", interpolate_missing=True), tmp_path / "sparse.csv")
    with pytest.warns(UserWarning, match=rf"{gone.key} is not in the table; interpolated along cout"):
        full = lenient.lookup_table(space)
    row = full.entry(gone)
    assert row["note"] == "interpolated" and row["latency_ms"] == pytest.approx(true_ms, rel=0.05)
    assert not full.missing(op_graph(space.subnet_spec(space.largest())))


def test_table_energy_replaces_the_energy_model():
    space = tiny_space()
    table = _analytical_table(space)
    for row in table.entries.values():
        row["energy_mj"] = 1e-6
    table._index.clear()
    arch = space.largest()
    units = cost_units(space.subnet_spec(arch), table)
    assert CostModel(space, table, Horowitz45nm()).costs(arch)["energy_mj"] == pytest.approx(1e-6 * len(units))


def test_import_table_cli_makes_a_device_configs_name(tmp_path, capsys):
    source = tmp_path / "lut.yaml"
    source.write_text(yaml.safe_dump(OFA))
    work = tmp_path / "w"
    assert main(["import-table", str(source), "--format", "ofa", "--name", "phone", "--processor", "Pixel 1",
                 "--runtime", "tflite", "--resolution", "32", "--workdir", str(work)]) == 0
    assert "imported 6 entries (block granularity" in capsys.readouterr().out
    device = build_device(DeviceConfig(name="phone"), work)
    assert isinstance(device, TableDevice) and device.describe()["processor"] == "Pixel 1"
    assert main(["devices", "--workdir", str(work)]) == 0
    listed = capsys.readouterr().out
    assert "phone" in listed and "Pixel 1" in listed and "tflite" in listed
    assert main(["import-table", str(source), "--format", "bitwidth", "--name", "x", "--workdir", str(work)]) == 2
    assert "is not a bit-width key" in capsys.readouterr().err


def test_a_job_on_a_table_device_uses_its_latency_and_energy(tiny_tree, tmp_path):
    import hwnas

    space = tiny_space()
    table = _analytical_table(space)
    for row in table.entries.values():
        row["energy_mj"] = 2e-6
    for key in [k for k, r in table.entries.items() if r["kind"] == "add"]:
        del table.entries[key]
    table.add_row({"kind": "add", "latency_ms": 0.0, "energy_mj": 0.0})  # one wildcard row prices every add
    table.device = {}
    table.save(tmp_path / "board.json")
    work = tmp_path / "w"
    assert main(["import-table", str(tmp_path / "board.json"), "--format", "hwnas", "--name", "board",
                 "--processor", "lab FPGA", "--workdir", str(work)]) == 0
    tiny_tree["device"] = {"name": "board"}
    job = hwnas.launch(tiny_tree, workdir=work)
    frame = job.candidates()
    assert not frame["measured"].any() and (frame["latency_ms"] == frame["predicted_latency_ms"]).all()
    for _, row in frame.iterrows():
        arch = hwnas.spaces.dims.Arch.from_json(row["arch"])
        units = [u for u in op_graph(space.subnet_spec(arch))]
        assert row["energy_mj"] == pytest.approx(2e-6 * sum(u.kind != "add" for u in units))
        assert row["latency_ms"] == pytest.approx(table.total_latency_ms(units))
    assert job.attrs["device_description"]["processor"] == "lab FPGA"
    assert job.attrs["device_description"]["kind"] == "table"
