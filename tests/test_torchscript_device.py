"""The TorchScript device: scripted models equal eager ones, and ops and models are timed."""
import copy

import pytest
import torch
from torch import nn

from hwnas.config import DeviceConfig
from hwnas.job.checks import load_job_config as load_config
from hwnas.errors import HwnasError
from hwnas.hwmodels import torchscript
from hwnas.hwmodels.devices import LocalCPU
from hwnas.spaces.registry import op_graph
from hwnas.hwmodels.torchscript import TorchScriptCPU, script_model
from hwnas.spaces.ops.layers import QConvBNAct, ResidualAdd
from hwnas.spaces.registry import build_space, space_entry

from tests.conftest import TINY, uniform_blocks

INPUT = (1, 8, 8)
CNN = {**TINY["space"], "op_types": ["mult", "shift", "adder"], "weight_bits": [4, 32], "act_bits": [4, 32]}
VIT = {"type": "vit", "patch_size": 2, "embed_dims": [16], "depths": [1, 2], "heads": [1, 2], "head_dim": 8,
       "mlp_ratios": [2.0], "attentions": ["softmax", "linear", "binary"], "keep_ratios": [0.5, 1.0],
       "weight_bits": [8, 32], "act_bits": [8, 32]}
DEVICE = DeviceConfig(warmup=1, repeats=3)


def _space(space_tree):
    tree = copy.deepcopy(TINY)
    tree["space"] = space_tree
    return build_space(load_config(tree).space, INPUT, 10)


def _model(space, arch, seed=0):
    """The standalone model of ``arch``, with non-trivial batch-norm statistics to fold."""
    torch.manual_seed(seed)
    spec = space.subnet_spec(arch)
    model = space_entry(space.config.type).build_standalone(spec).eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return spec, model


CASES = [("cnn", {"op": op, "wbits": bits, "abits": bits}) for op in ("mult", "shift", "adder") for bits in (4, 32)]
CASES += [("vit", {"attn": attn, "keep": keep, "wbits": 8, "abits": 8})
          for attn in ("softmax", "linear", "binary") for keep in (0.5, 1.0)]


@pytest.mark.parametrize("kind,block", CASES, ids=[f"{k}-{'-'.join(map(str, b.values()))}" for k, b in CASES])
def test_a_scripted_model_computes_what_the_eager_model_does(kind, block):
    space = _space(CNN if kind == "cnn" else VIT)
    _, model = _model(space, uniform_blocks(space, **block))
    torch.manual_seed(1)
    x = torch.randn(2, *INPUT)
    scripted = script_model(model, (x,))
    assert isinstance(scripted, torch.jit.ScriptModule)
    with torch.inference_mode():
        expected, got = model(x), scripted(x)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-5), (got - expected).abs().max()


@pytest.mark.parametrize("kind,block", [("cnn", {"op": "adder", "wbits": 4, "abits": 4}),
                                        ("cnn", {"op": "shift", "wbits": 32, "abits": 32}),
                                        ("vit", {"attn": "binary", "keep": 0.5, "wbits": 8, "abits": 8})])
def test_time_ops_samples_every_op_of_the_graph(kind, block):
    space = _space(CNN if kind == "cnn" else VIT)
    spec, model = _model(space, uniform_blocks(space, **block))
    ops = op_graph(spec)
    entries = TorchScriptCPU(DEVICE).time_ops(model, ops, INPUT)
    assert set(entries) == {op.key for op in ops}
    for key, (median, spread, calls) in entries.items():
        assert median > 0 and spread >= 0
        assert calls == DEVICE.repeats  # 3 rounds of one timed call


def test_time_ops_checks_the_graph_matches_the_model():
    space = _space(CNN)
    spec, model = _model(space, space.smallest())
    with pytest.raises(ValueError, match="op modules but its graph"):
        TorchScriptCPU(DEVICE).time_ops(model, op_graph(spec)[:-1], INPUT)


@pytest.mark.parametrize("space_tree", [CNN, VIT], ids=["cnn", "vit"])
def test_time_model_gives_a_positive_median_and_spread(space_tree):
    space = _space(space_tree)
    _, model = _model(space, space.smallest())
    median, spread = TorchScriptCPU(DEVICE).time_model(model, INPUT)
    assert median > 0 and spread >= 0


def test_describe_names_the_runtime_and_the_fingerprint_differs_from_eager():
    script, eager = TorchScriptCPU(DEVICE), LocalCPU(DEVICE)
    d = script.describe()
    assert d["runtime"] == "torchscript" and d["runtime_version"] == torch.__version__
    assert d["kind"] == "measured" and script.measures and script.kind == "measured"
    assert {k: v for k, v in d.items() if k not in ("runtime", "script")} == \
        {k: v for k, v in eager.describe().items() if k != "runtime"}
    assert script.fingerprint() != eager.fingerprint()
    assert script.fingerprint() == TorchScriptCPU(DEVICE).fingerprint()


class _Untraceable(nn.Module):
    def forward(self, x: torch.Tensor):
        return x.sum().item()  # a Python number: nothing a trace can return


def test_an_untraceable_model_is_a_one_line_error():
    with pytest.raises(HwnasError, match="TorchScript cannot trace _Untraceable") as info:
        script_model(_Untraceable(), (torch.randn(1, 3),))
    assert "\n" not in str(info.value)


def test_an_op_that_cannot_be_scripted_is_named(monkeypatch):
    space = _space(CNN)
    spec, model = _model(space, uniform_blocks(space, op="mult", wbits=32, abits=32))

    def refuse_adds(module, inputs, optimize=True):
        if isinstance(module, ResidualAdd):
            raise HwnasError("TorchScript cannot trace ResidualAdd: nope")
        return script_model(module, inputs, optimize)

    monkeypatch.setattr(torchscript, "script_model", refuse_adds)
    with pytest.raises(HwnasError, match=r"op add \(add-in8x8x8.*\) cannot run in TorchScript: .*ResidualAdd"):
        TorchScriptCPU(DEVICE).time_ops(model, op_graph(spec), INPUT)


def test_optimize_for_inference_falls_back_to_the_frozen_graph_where_it_fails():
    # a convolution feeding an activation quantizer (integer clamp bounds) trips the pass's
    # MKL-DNN conversion; the frozen graph is used instead, and still computes the same values
    model = nn.Sequential(QConvBNAct(4, 8, 1, act="none"), QConvBNAct(8, 8, 3, wbits=4, abits=4)).eval()
    x = torch.randn(1, 4, 8, 8)
    with pytest.warns(UserWarning, match="optimize_for_inference failed on Sequential"):
        scripted = script_model(model, (x,), optimize=True)
    with torch.inference_mode():
        assert torch.allclose(scripted(x), model(x), atol=1e-5)
    assert TorchScriptCPU(DEVICE).describe()["script"] == "trace+freeze"
