"""Devices chosen by name: the measured CPU and analytical roofline models."""
import pytest
import yaml

import hwnas
from hwnas.cli.app import main
from hwnas.config import DeviceConfig
from hwnas.errors import ConfigError
from hwnas.hwmodels.devices import AnalyticalDevice, LocalCPU, build_device
from hwnas.ir import OpSig
from hwnas.hwmodels.roofline import RooflineModel, RooflineSpec

SPEC = {"name": "toy", "peak_macs_per_s": {"mult": {8: 1e9, 32: 1e8}, "shift": {8: 4e9}},
        "peak_elementwise_per_s": 1e9, "dram_bytes_per_s": 1e8, "onchip_buffer_bytes": 4096}


def test_roofline_matches_a_hand_computation():
    model = RooflineModel(RooflineSpec.model_validate(SPEC))
    compute_bound = OpSig("conv", 16, 8, 8, 32, kernel=3, wbits=8, abits=8)
    macs = 32 * 16 * 9 * 64
    weights, io = 32 * 16 * 9, 16 * 64 + 32 * 64
    assert weights + io > 4096  # spills: activations go to DRAM too
    expected = max(macs / 1e9, (weights * 8 / 8 + io * 8 / 8) / 1e8)
    assert model.op_seconds(compute_bound) == pytest.approx(expected)
    # a 6-bit MAC runs on the 8-bit units, a float one on the 32-bit units, a shift on its own
    assert model.unit_peak("mult", 6) == 1e9 and model.unit_peak("mult", 32) == 1e8
    small = OpSig("conv", 4, 4, 4, 4, kernel=1, wbits=8, abits=8, op="shift")
    assert model.op_seconds(small) == pytest.approx(max(4 * 4 * 16 / 4e9, 16 / 1e8))  # fits on chip
    add = OpSig("add", 8, 4, 4, 8)
    assert model.op_seconds(add) == pytest.approx(max(128 / 1e9, 0.0))
    assert model.latency_ms([compute_bound, add]) == pytest.approx(1e3 * (expected + 128 / 1e9))


@pytest.mark.parametrize("change,message", [
    ({"peak_macs_per_s": {"shift": {8: 1e9}}}, "needs at least the 'mult' unit"),
    ({"peak_macs_per_s": {"mult": {8: -1}}}, "give positive MAC/s"),
    ({"dram_bytes_per_s": 0}, "dram_bytes_per_s: Input should be greater than 0"),
    ({"energy": {"bogus_pj": 1}}, "unknown energy figure 'bogus_pj'"),
    ({"extra": 1}, "extra: unknown key"),
])
def test_bad_device_specs_name_the_field(tmp_path, change, message):
    path = tmp_path / "d.yaml"
    path.write_text(yaml.safe_dump({**SPEC, **change}))
    with pytest.raises(ConfigError, match=message):
        RooflineModel.from_yaml(path)


def test_devices_are_chosen_by_name_or_spec(tmp_path):
    assert isinstance(build_device(DeviceConfig()), LocalCPU)
    shipped = build_device(DeviceConfig(name="edge-accel-45nm"))
    assert isinstance(shipped, AnalyticalDevice) and shipped.describe()["kind"] == "analytical"
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(SPEC))
    assert build_device(DeviceConfig(name="toy", spec=str(path))).model.spec.name == "toy"
    with pytest.raises(ConfigError, match="does not match the name 'toy'"):
        build_device(DeviceConfig(name="other", spec=str(path)))
    with pytest.raises(ConfigError, match=r"unknown device 'tpu'; known: \['local-cpu', 'local-cpu-torchscript', 'edge-accel-45nm'\]"):
        build_device(DeviceConfig(name="tpu"))


def test_a_job_on_an_analytical_device(tiny_tree, tmp_path, capsys):
    tiny_tree["device"] = {"name": "edge-accel-45nm"}
    job = hwnas.launch(tiny_tree, workdir=tmp_path)
    frame = job.candidates()
    assert not frame["measured"].any()  # accuracy is measured, latency is the model's
    assert (frame["latency_ms"] == frame["predicted_latency_ms"]).all()
    assert job.attrs["device_description"]["model"] == "roofline"
    assert main(["devices"]) == 0
    listing = capsys.readouterr().out
    assert "local-cpu" in listing and "edge-accel-45nm" in listing and "analytical" in listing
