"""The compression dimensions of the CNN space: operator type, mixed precision, power-of-two
scales and channel pruning, each trained, costed and exported consistently."""
import math

import numpy as np
import pytest
import torch

from hwnas.job.checks import load_job_config as load_config
from hwnas.data import load_data
from hwnas.hwmodels.energy import Horowitz45nm
from hwnas.ir import OpSig, count
from hwnas.spaces.registry import op_graph
from hwnas.spaces.cnn import CNNSupernet
from hwnas.spaces.cnn.space import pruned_width
from hwnas.train.evaluation import recalibrate_bn
from hwnas.spaces.ops.adder import AdderConv2d
from hwnas.spaces.registry import build_space
from hwnas.train.trainer import SupernetTrainer

OVERRIDES = ["space.op_types=[mult, shift, adder]", "space.prune_rates=[0.0, 0.5]",
             "space.weight_bits=[2, 3, 4, 6, 8, 32]", "space.act_bits=[2, 4, 8, 32]",
             "space.expand_ratios=[3, 6]", "space.kernel_sizes=[3, 5]"]


@pytest.fixture(scope="module")
def setup():
    cfg = load_config(None, OVERRIDES + ["space.pow2_scales=true"])
    data = load_data()
    space = build_space(cfg.space, data.input_shape, data.num_classes)
    torch.manual_seed(0)
    net = CNNSupernet(space)
    # a few real training steps so that weights, steps and BN are not at their initial values
    SupernetTrainer(net, data, cfg.train.model_copy(update={"epochs": 1}), 0, torch.device("cpu"), 64).train()
    return cfg, data, space, net


def _with(space, arch, **block_values):
    values = arch.to_dict()
    for name in values:
        key = name.rsplit(".", 1)[-1]
        if key in block_values and ".b" in name:
            values[name] = block_values[key]
    return space.validate(values)


def _exported_equals_supernet(net, data, arch):
    net.set_active(arch)
    recalibrate_bn(net, data.train, 256, 128)
    x = torch.stack([data.test[i][0] for i in range(48)])
    with torch.no_grad():
        torch.testing.assert_close(net.extract()(x), net(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("op", ["mult", "shift", "adder"])
@pytest.mark.parametrize("prune", [0.0, 0.5])
def test_every_operator_and_prune_rate_survives_export(setup, op, prune):
    _, data, space, net = setup
    arch = _with(space, space.largest(), op=op, prune=prune, wbits=6, abits=8)
    _exported_equals_supernet(net, data, arch)


@pytest.mark.parametrize("wbits", [2, 3, 4, 6, 8, 32])
def test_every_bit_width_survives_export(setup, wbits):
    _, data, space, net = setup
    _exported_equals_supernet(net, data, _with(space, space.largest(), wbits=wbits, abits=4))


def test_mixed_random_subnets_survive_export(setup):
    _, data, space, net = setup
    rng = np.random.default_rng(5)
    for _ in range(4):
        _exported_equals_supernet(net, data, space.sample(rng))


def test_shift_layers_export_exact_powers_of_two_and_adder_layers_adder_modules(setup):
    _, _, space, net = setup
    net.set_active(_with(space, space.largest(), op="shift", wbits=4))
    sub = net.extract()
    w = sub.blocks[0].project.conv.weight
    nonzero = w[w != 0].abs()
    assert torch.equal(torch.log2(nonzero), torch.log2(nonzero).round())
    assert torch.log2(nonzero).min() >= -(2 ** 3 - 2) and torch.log2(nonzero).max() <= 0
    net.set_active(_with(space, space.largest(), op="adder"))
    assert isinstance(net.extract().blocks[0].depthwise.conv, AdderConv2d)


def test_power_of_two_scales(setup):
    _, _, space, net = setup
    net.set_active(_with(space, space.largest(), wbits=4, abits=4))
    sub = net.extract()
    step = sub.blocks[0].depthwise.quant.step.item()
    assert math.log2(step) == round(math.log2(step))


def test_pruning_keeps_the_most_important_channels(setup):
    _, _, space, net = setup
    arch = _with(space, space.largest(), op="mult", prune=0.5, wbits=32, abits=32)
    net.set_active(arch)
    block = net.spec["blocks"][1]
    width, kept = block["width"], block["layers"]["depthwise"]["cout"]
    assert kept == pruned_width(width, 0.5) == width // 2
    core = net.stages[0][1].cores["mult"]
    importance = core.project.weight[:, :width].abs().sum(dim=(0, 2, 3))
    expected = importance.topk(kept).indices.sort().values
    sub = net.extract()
    torch.testing.assert_close(sub.blocks[1].expand.conv.weight, core.expand.weight[expected, :16])
    torch.testing.assert_close(sub.blocks[1].project.conv.weight, core.project.weight[:, expected])
    dropped = torch.ones(width, dtype=torch.bool)
    dropped[expected] = False
    assert importance[expected].min() >= importance[dropped].max()


def test_each_operator_type_has_its_own_weights(setup):
    _, _, _, net = setup
    cores = net.stages[1][0].cores
    assert set(cores) == {"mult", "shift", "adder"}
    assert cores["mult"].expand.weight.data_ptr() != cores["adder"].expand.weight.data_ptr()


def test_progressive_schedule_adds_one_operator_type_per_phase():
    cfg = load_config(None, OVERRIDES + ["train.progressive_ops=true", "train.epochs=6"])
    data = load_data()
    space = build_space(cfg.space, data.input_shape, data.num_classes)
    trainer = SupernetTrainer(CNNSupernet(space), data, cfg.train, 0, torch.device("cpu"), 64)
    assert [trainer.allowed_ops(e) for e in range(6)] == [
        ["mult"], ["mult"], ["mult", "shift"], ["mult", "shift"], ["mult", "shift", "adder"],
        ["mult", "shift", "adder"]]
    rng = np.random.default_rng(0)
    early = trainer._subnets(rng, trainer.allowed_ops(0))
    assert all(a[name] == "mult" for a in early for name in a if name.endswith(".op"))


def test_op_graph_and_costs_distinguish_operator_types(setup):
    _, _, space, _ = setup
    e = Horowitz45nm()
    for wbits, abits in [(8, 8), (4, 8), (32, 32)]:
        mult, shift, adder = (OpSig("conv", 32, 8, 8, 32, wbits=wbits, abits=abits, op=o)
                              for o in ("mult", "shift", "adder"))
        assert e.op_pj(shift) < e.op_pj(mult) and e.op_pj(adder) < e.op_pj(mult)
        assert len({mult.key, shift.key, adder.key}) == 3
        assert shift.bitops < mult.bitops or wbits == 1
    assert e.mac_pj(8, 8, "shift") == pytest.approx(0.024 + 0.1)
    assert e.mac_pj(8, 8, "adder") == pytest.approx(0.03 + 0.1)
    assert e.mac_pj(8, 8, "mult") == pytest.approx(0.2 + 0.1)
    arch = _with(space, space.largest(), op="shift")
    counts = count(op_graph(space.subnet_spec(arch)))
    assert counts["shift_macs"] > 0 and counts["adder_macs"] == 0
    assert counts["shift_macs"] + counts["mult_macs"] == counts["macs"]  # stem, head, classifier multiply
    pruned = count(op_graph(space.subnet_spec(_with(space, space.largest(), prune=0.5))))
    assert pruned["macs"] < count(op_graph(space.subnet_spec(space.largest())))["macs"]
