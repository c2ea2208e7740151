"""The transformer space: every dimension out through export, costs per op (timm weights in: test_pretrained.py)."""
import numpy as np
import pytest
import torch

from hwnas.job.checks import load_job_config as load_config
from hwnas.ir import count
from hwnas.spaces.registry import op_graph
from hwnas.hwmodels.lut import LookupTable
from hwnas.ir import OpSig
from hwnas.spaces.ops.layers import op_modules
from hwnas.spaces.ops.vit_layers import TokenSelect
from hwnas.spaces.registry import build_space
from hwnas.spaces.vit import StandaloneViT, ViTSupernet

SPACE = {"type": "vit", "patch_size": 2, "embed_dims": [16, 32], "depths": [1, 2, 3], "heads": [1, 2],
         "head_dim": 16, "mlp_ratios": [1.0, 2.0], "attentions": ["softmax", "linear", "binary"],
         "keep_ratios": [0.5, 1.0], "weight_bits": [4, 8, 32], "act_bits": [8, 32]}


def _space(**changes):
    cfg = load_config(None, [])
    tree = cfg.to_dict()
    tree["space"] = {**SPACE, **changes}
    return build_space(load_config(tree).space, (1, 8, 8), 10)


def test_every_dimension_survives_export():
    space = _space()
    torch.manual_seed(1)
    net = ViTSupernet(space)
    x = torch.randn(5, 1, 8, 8)
    rng = np.random.default_rng(0)
    net.train()
    for arch in [space.largest(), space.smallest()] + [space.sample(rng) for _ in range(12)]:
        net.set_active(arch)
        net(x).sum().backward()  # initializes quantizer steps at this arch, exercises every backward
        net.eval()
        with torch.no_grad():
            torch.testing.assert_close(net.extract()(x), net(x), rtol=1e-5, atol=1e-5)
        net.train()


def test_token_pruning_keeps_exactly_the_requested_count():
    space = _space()
    net = ViTSupernet(space).eval()
    values = space.largest().to_dict()
    values.update({"b0.keep": 0.5, "b1.keep": 1.0, "b2.keep": 0.5})
    arch = space.validate(values)
    net.set_active(arch)
    sub = net.extract()
    seen = []
    for block in sub.blocks:
        block.register_forward_hook(lambda m, i, o: seen.append(o.shape[1]))
    sub(torch.randn(2, 1, 8, 8))
    # 16 patches: keep 8 (+ class + package token), keep all, then ceil(0.5 * 9) = 5 (+2)
    assert seen == [10, 10, 7]
    assert [b["out_tokens"] for b in net.spec["blocks"]] == seen
    assert sum(isinstance(m, TokenSelect) for m in sub.modules()) == 2


def test_op_graph_matches_the_exported_modules_and_counts_attention_kinds():
    space = _space()
    rng = np.random.default_rng(2)
    for _ in range(10):
        arch = space.sample(rng)
        spec = space.subnet_spec(arch)
        assert len(op_graph(spec)) == len(op_modules(StandaloneViT(spec)))
    values = space.largest().to_dict()
    costs = {}
    for kind in ("softmax", "linear", "binary"):
        values.update({n: kind for n in values if n.endswith(".attn")})
        ops = op_graph(space.subnet_spec(space.validate(values)))
        costs[kind] = sum(o.macs for o in ops if o.kind == "attention")
    assert costs["binary"] < costs["linear"] and costs["binary"] < costs["softmax"]
    params = count(op_graph(space.subnet_spec(space.largest())))["params"]
    assert params == sum(p.numel() for p in StandaloneViT(space.subnet_spec(space.largest())).parameters())


def test_lookup_table_interpolates_token_counts_linearly():
    table = LookupTable(device={"name": "t"})
    for n, latency in [(5, 1.0), (9, 2.0), (17, 4.0)]:
        table.add(OpSig("linear", 32, n, 1, 64), latency, 0.0, 3)
    assert table.latency_ms(OpSig("linear", 32, 7, 1, 64), interpolate="h") == pytest.approx(1.5)
    assert table.latency_ms(OpSig("linear", 32, 13, 1, 64), interpolate="h") == pytest.approx(3.0)
    assert table.latency_ms(OpSig("linear", 32, 3, 1, 64), interpolate="h") == pytest.approx(0.5)
    with pytest.raises(Exception, match="no entry for op linear-in32x7x1-out64"):
        table.latency_ms(OpSig("linear", 32, 7, 1, 64))
    with pytest.raises(Exception, match="no entry"):
        table.latency_ms(OpSig("linear", 32, 7, 1, 128), interpolate="h")
