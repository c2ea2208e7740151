"""The ViT space's variants: log2 (power-of-two) weights, ReLU linear attention and the package
token, each searched per block on the shipped digits-vit-variants config, costed and exported."""
import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from hwnas.errors import ConfigError
from hwnas.export.formats import load_torchscript, save_scripted, save_shift_exponents, shift_layers
from hwnas.hwmodels.energy import Horowitz45nm
from hwnas.hwmodels.torchscript import script_model
from hwnas.ir import count
from hwnas.job.checks import load_job_config as load_config
from hwnas.spaces.ops.layers import op_modules
from hwnas.spaces.ops.shift import log2_quantize, log2_weight, shift_decompose
from hwnas.spaces.ops.vit_layers import QLinear
from hwnas.spaces.registry import build_space, op_graph
from hwnas.spaces.vit import StandaloneViT, ViTSupernet
from hwnas.spaces.vit.space import LINEARS
from tests.conftest import uniform_blocks

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def _space(name="digits-vit-variants"):
    return build_space(load_config(EXPERIMENTS / f"{name}.yaml").space, (1, 8, 8), 10)


# -- the log2 quantizer ------------------------------------------------------------------------
def _log2_reference(w: torch.Tensor, bits: int) -> torch.Tensor:
    """Per weight, the nearest (in log2) of the row's levels: +-2^(e + j), j = p_min..0, where
    2^e is the level nearest the row's largest |w|; 0 below the geometric mean of the lowest
    level and half of it."""
    p_min = -(2 ** (min(bits, 8) - 1) - 2)
    out = torch.zeros_like(w)
    for r, row in enumerate(w.tolist()):
        e = round(math.log2(max(abs(x) for x in row)))
        levels = [2.0 ** (e + j) for j in range(p_min, 1)]
        for c, x in enumerate(row):
            if abs(x) < levels[0] / math.sqrt(2):
                continue
            best = min(levels, key=lambda level: abs(math.log2(abs(x)) - math.log2(level)))
            out[r, c] = math.copysign(best, x)
    return out


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_log2_quantize_matches_a_per_weight_reference(bits):
    g = torch.Generator().manual_seed(bits)
    scales = torch.tensor([1e-3, 0.02, 0.1, 1.0, 7.0, 300.0])[:, None]  # rows of very different ranges
    w = torch.randn(6, 24, generator=g) * scales
    w[2, 3], w[3, 5] = 0.0, 1e-9
    q = log2_quantize(w, bits)
    assert torch.equal(q, _log2_reference(w, bits))
    mantissa, exponent = torch.frexp(q)
    assert bool(((mantissa.abs() == 0.5) | (q == 0)).all())  # exact signed powers of two
    for row, qrow in zip(w, q):
        e = round(math.log2(float(row.abs().max())))
        assert float(qrow.abs().max()) == 2.0**e  # the row's scale is a power of two, nothing clipped
        used = {int(x) for x in torch.frexp(qrow[qrow != 0])[1]}
        assert len(used) <= 2 ** (min(bits, 8) - 1) - 1


def test_log2_weight_is_straight_through_and_exponents_fit_int8():
    w = (torch.randn(5, 7) * torch.tensor([1e-30, 1e-3, 1.0, 5.0, 1e3])[:, None]).requires_grad_(True)
    grad = torch.randn(5, 7)
    y = log2_weight(w, 8)
    (y * grad).sum().backward()
    assert torch.equal(y.detach(), log2_quantize(w.detach(), 8))
    assert torch.equal(w.grad, grad)  # the gradient of the power-of-two value reaches w unchanged
    sign, exponent = shift_decompose(y.detach())  # even the 1e-30 row: exponents >= -126
    assert torch.equal(sign.float() * torch.exp2(exponent.float()), y.detach())


# -- the variants in the space, the supernet and the export ------------------------------------
def test_the_variants_config_offers_each_variant_per_block():
    space = _space()
    assert space.dim("b0.attn").choices == ("softmax", "linear", "relu_linear", "binary")
    assert space.dim("b2.wquant").choices == ("uniform", "log2")
    assert {space.largest()[n] for n in space.names if n.endswith(".wquant")} == {"uniform"}
    assert {space.smallest()[n] for n in space.names if n.endswith(".wquant")} == {"uniform"}
    blocks = [b for arch in space.covering_archs() for b in space.subnet_spec(arch)["blocks"]]
    combos = set(itertools.product(space.config.attentions, space.config.weight_quant, space.config.weight_bits))
    assert {(b["attn"], b["wquant"], b["wbits"]) for b in blocks} == combos  # the profiler times each
    # a space with one weight quantizer has no such dimension: digits-vit's encoding is unchanged
    assert not any(n.endswith(".wquant") for n in _space("digits-vit").names)


def test_variant_subnets_export_what_the_supernet_computes(tmp_path):
    space = _space()
    torch.manual_seed(0)
    net = ViTSupernet(space)
    x = torch.randn(4, 1, 8, 8)
    mixed = uniform_blocks(space, attn="relu_linear", wquant="log2", keep=0.5, wbits=4).to_dict()
    mixed.update({"b1.wquant": "uniform", "b1.attn": "softmax", "b2.attn": "binary", "b2.wbits": 8})
    rng = np.random.default_rng(0)
    archs = [uniform_blocks(space, attn="relu_linear", wquant="log2", wbits=b) for b in (4, 8)]
    archs += [space.validate(mixed)] + [space.sample(rng) for _ in range(5)]
    for i, arch in enumerate(archs):
        net.train()
        net.set_active(arch)
        net.zero_grad()
        net(x).square().sum().backward()  # straight-through: the latent weights get gradients
        assert net.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
        net.eval()
        with torch.no_grad():
            reference = net(x)
            sub = net.extract()
            torch.testing.assert_close(sub(x), reference, rtol=1e-5, atol=1e-5)
        spec = net.spec
        log2 = [j for j, b in enumerate(spec["blocks"]) if b["wquant"] == "log2"]
        ops, modules = op_graph(spec), op_modules(sub)
        assert len(ops) == len(modules)
        assert [o.op for o in ops if o.kind == "linear"] == [m.op for m in modules if isinstance(m, QLinear)]
        layers = shift_layers(sub)
        assert set(layers) == {f"blocks.{j}.{name}" for j in log2 for name in LINEARS}
        for layer in layers.values():
            sign, exponent = shift_decompose(layer.weight)
            assert torch.equal(sign.float() * torch.exp2(exponent.float()), layer.weight)
        if i < 3:  # the TorchScript file's path, and the kernel's sign / exponent file
            scripted = script_model(sub, (x,))
            save_scripted(scripted, tmp_path / "model.pt")  # a file (binary attention's codes included)
            with torch.inference_mode():
                torch.testing.assert_close(load_torchscript(tmp_path / "model.pt")(x), reference,
                                           rtol=1e-4, atol=1e-4)
            info = save_shift_exponents(sub, tmp_path / "shifts.safetensors")
            assert info["layers"] == sorted(layers)
            stored = load_file(str(tmp_path / "shifts.safetensors"))
            name = sorted(layers)[0]
            assert torch.equal(stored[f"{name}.sign"].float() * torch.exp2(stored[f"{name}.exponent"].float()),
                               layers[name].weight)


def test_an_exported_spec_from_before_log2_weights_still_builds():
    space = _space()
    spec = space.subnet_spec(space.largest())
    old = {**spec, "blocks": [{k: v for k, v in b.items() if k != "wquant"} for b in spec["blocks"]]}
    assert [o.key for o in op_graph(old)] == [o.key for o in op_graph(spec)]
    assert all(m.op == "mult" for m in StandaloneViT(old).modules() if isinstance(m, QLinear))


def test_log2_linears_are_priced_as_shifts_and_relu_linear_without_exps():
    space = _space()
    block = dict(wbits=8, abits=8, keep=1.0)
    graphs = {(attn, wq): op_graph(space.subnet_spec(uniform_blocks(space, attn=attn, wquant=wq, **block)))
              for attn in ("linear", "relu_linear") for wq in ("uniform", "log2")}
    uniform, log2 = graphs["relu_linear", "uniform"], graphs["relu_linear", "log2"]
    linear_macs = sum(o.macs for o in log2 if o.kind == "linear")
    counts = count(log2)
    assert counts["shift_macs"] == linear_macs > 0
    assert counts["mult_macs"] == count(uniform)["mult_macs"] - linear_macs
    assert {o.key for o in log2 if o.kind == "linear"}.isdisjoint(o.key for o in uniform)  # own table rows
    energy = Horowitz45nm()
    saved = (energy.mac_pj(8, 8, "mult") - energy.mac_pj(8, 8, "shift")) * linear_macs / 1e9
    assert energy.energy_mj(uniform) - energy.energy_mj(log2) == pytest.approx(saved, rel=1e-9)
    assert saved > 0
    # the attention core: ReLU's feature map has no exp, ELU's has one per entry of q and k
    for elu, relu in zip(graphs["linear", "uniform"], uniform):
        if elu.kind == "attention":
            assert elu.macs - relu.macs == 2 * elu.cin * elu.h * elu.cout and elu.adds == relu.adds


@pytest.mark.parametrize("field,value,message", [("weight_quant", ["log2", "log2"], "distinct"),
                                                 ("weight_quant", ["log3"], "log2"),
                                                 ("attentions", ["relu"], "relu_linear")])
def test_bad_variant_choices_name_the_field(field, value, message):
    tree = load_config(EXPERIMENTS / "digits-vit-variants.yaml").to_dict()
    tree["space"][field] = value
    with pytest.raises(ConfigError, match=rf"space\.{field}.*{message}"):
        load_config(tree)


# -- token selection: the package token (HeatViT) / fused token (EViT) --------------------------
def test_the_package_token_is_the_score_weighted_average_and_stays_a_token():
    """HeatViT's package token and EViT's fused token: the pruned tokens' average weighted by the
    class token's attention to them, appended as one more token that later blocks process."""
    space = _space()
    torch.manual_seed(3)
    net = ViTSupernet(space)
    values = uniform_blocks(space, attn="softmax", keep=1.0).to_dict()
    values["b0.keep"] = 0.5
    net.set_active(space.validate(values))
    x = torch.randn(2, 1, 8, 8)
    net(x)  # a first forward sets the quantizers' steps from the weights
    sub = net.eval().extract()
    seen = {}
    sub.blocks[0].select.register_forward_hook(lambda m, args, out: seen.update(args=args, out=out))
    sub.blocks[1].register_forward_pre_hook(lambda m, args: seen.update(next_in=args[0]))
    with torch.no_grad():
        logits = sub(x)
    tokens, q, k = seen["args"]
    attn = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)  # the full matrix
    scores = attn[:, :, 0, 1:].mean(1)
    keep = net.spec["blocks"][0]["keep"]
    assert keep == 8 and seen["out"].shape[1] == 1 + keep + 1
    for i in range(2):
        order = sorted(range(16), key=lambda j: -float(scores[i, j]))
        kept, dropped = sorted(order[:keep]), order[keep:]
        weights = scores[i, dropped]
        package = (weights[:, None] * tokens[i, 1:][dropped]).sum(0) / weights.sum()
        torch.testing.assert_close(seen["out"][i, 1:1 + keep], tokens[i, 1:][kept])
        torch.testing.assert_close(seen["out"][i, -1], package)
    block = sub.blocks[0]
    with torch.no_grad():  # it went through the block's MLP as a token, and reaches the next block
        package = seen["out"][:, -1:]
        torch.testing.assert_close(seen["next_in"][:, -1:], package + block.fc2(block.fc1(block.ln2(package))))

    def zero_package(module, args):
        out = args[0].clone()
        out[:, -1] = 0
        return (out,)

    handle = sub.blocks[1].register_forward_pre_hook(zero_package)
    with torch.no_grad():
        assert not torch.allclose(sub(x), logits)  # the class token attends to it downstream
    handle.remove()
