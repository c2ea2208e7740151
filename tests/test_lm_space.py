"""The lm space: encoding, slicing against a dense Llama written out by hand, the standalone subnet
with its KV cache, the op graph against a hand count and the real modules, memory, the profiler."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hwnas.config import DeviceConfig
from hwnas.errors import ArchError, ConfigError
from hwnas.footprint import activation_profile, subnet_memory, weight_bits
from hwnas.hwmodels.local_cpu import LocalCPU
from hwnas.hwmodels.profiler import build_lookup_table
from hwnas.ir import count
from hwnas.spaces.lm import LMSpace, LMSupernet, StandaloneLM, greedy_generate, kv_cache_bytes, lm_prefill_graph
from hwnas.spaces.lm.graph import lm_op_graph, lm_op_inputs
from hwnas.spaces.ops.group_quant import group_quantize_value, token_quantize
from hwnas.spaces.ops.layers import ResidualAdd, op_modules
from hwnas.spaces.ops.lm_layers import KVAttention, LMHead, LMLinear, RMSNorm, Rotary, SwiGLU, TokenEmbedding
from hwnas.spaces.registry import build_space, op_graph, parse_space_config

VOCAB, CONTEXT = 256, 16
TINY = dict(type="lm", hidden_size=32, num_layers=3, heads=4, kv_heads=2, intermediate_size=48, context_length=CONTEXT,
            group_size=8, head_choices=[2, 4], kv_head_choices=[1, 2], mlp_choices=[24, 48],
            weight_bits=[2, 4, 8, 16], act_bits=[8, 16], rope_theta=500.0, rms_norm_eps=1e-6,
            depth="any")  # any skip pattern: the general case; prefix depth is tested on its own


def tiny_space(**overrides) -> LMSpace:
    return build_space(parse_space_config({**TINY, **overrides}), (CONTEXT,), VOCAB)


def supernet(space: LMSpace, seed: int = 0) -> LMSupernet:
    torch.manual_seed(seed)
    net = LMSupernet(space).eval()
    with torch.no_grad():  # norms away from 1, so a wrong norm weight would show
        for name, p in net.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    return net


def tokens(batch: int = 2, length: int = 12, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def arch_of(space: LMSpace, layers: list[tuple[int, int, int, int, int]], abits: int = 16):
    """(keep, heads, kv, mlp, wbits) per layer."""
    values = {"abits": abits}
    for j, (keep, heads, kv, mlp, wbits) in enumerate(layers):
        values.update({f"l{j}.keep": keep, f"l{j}.heads": heads, f"l{j}.kv": kv, f"l{j}.mlp": mlp,
                       f"l{j}.wbits": wbits})
    return space.validate(values)


# -- the space ------------------------------------------------------------------------------------------
def test_encoding_round_trips_and_every_decoded_arch_is_valid():
    space = tiny_space()
    rng = np.random.default_rng(0)
    for _ in range(200):
        x = [rng.integers(len(d.choices)) for d in space.dims]
        arch = space.decode(x)
        assert space.decode(space.encode(arch)) == arch and space.validate(arch) == arch
        spec = space.subnet_spec(arch)
        assert len(spec["layers"]) >= space.config.min_layers == 2
        for layer in spec["layers"]:
            assert layer["heads"] % layer["kv_heads"] == 0 and layer["heads"] // layer["kv_heads"] <= 2
    largest, smallest = space.subnet_spec(space.largest()), space.subnet_spec(space.smallest())
    assert [(x["heads"], x["kv_heads"], x["mlp"], x["wbits"]) for x in largest["layers"]] == [(4, 2, 48, 16)] * 3
    assert [x["source"] for x in smallest["layers"]] == [0, 1]  # the earliest skipped layers kept again
    assert {(x["heads"], x["kv_heads"], x["mlp"], x["wbits"]) for x in smallest["layers"]} == {(2, 1, 24, 2)}
    assert largest["abits"] == 16 and smallest["abits"] == 8


def test_an_invalid_arch_is_refused_and_an_invalid_encoding_decodes_to_the_nearest_valid_one():
    space = tiny_space()
    with pytest.raises(ArchError, match="keeps 1 layers; space.min_layers is 2"):
        arch_of(space, [(1, 4, 2, 48, 16), (0, 4, 2, 48, 16), (0, 4, 2, 48, 16)])
    with pytest.raises(ArchError, match="l1: 4 heads over 1 kv heads"):
        arch_of(space, [(1, 4, 2, 48, 16), (1, 4, 1, 48, 16), (1, 4, 2, 48, 16)])
    values = space.largest().to_dict() | {"l1.kv": 1}  # 4 heads over 1 kv head: 4 per group, the model has 2
    assert space.canonical(values)["l1.kv"] == 2
    with pytest.raises(ConfigError, match="head_choices: 3 heads fit no kv_head_choices"):
        tiny_space(head_choices=[3, 4])
    with pytest.raises(ConfigError, match="mlp_choices: the largest choice must be the full model's 48"):
        tiny_space(mlp_choices=[24, 32])


def test_prefix_depth_keeps_only_the_first_layers_and_is_the_default_from_scratch():
    space = tiny_space(depth=None)
    assert space.config.depth == "prefix"
    with pytest.raises(ArchError, match=r"keeps layers \[0, 2\]; space.depth is prefix"):
        arch_of(space, [(1, 4, 2, 48, 16), (0, 4, 2, 48, 16), (1, 4, 2, 48, 16)])
    # an encoding keeping layers 1 and 2 decodes to the first two, each layer's own choices kept
    values = {"abits": 16}
    for j, (keep, heads, kv, mlp, wbits) in enumerate([(0, 2, 1, 24, 4), (1, 4, 2, 48, 8), (1, 2, 2, 24, 16)]):
        values.update({f"l{j}.keep": keep, f"l{j}.heads": heads, f"l{j}.kv": kv, f"l{j}.mlp": mlp, f"l{j}.wbits": wbits})
    spec = space.subnet_spec(space.canonical(values))
    assert [(x["source"], x["heads"], x["wbits"]) for x in spec["layers"]] == [(0, 2, 4), (1, 4, 8)]
    rng = np.random.default_rng(0)
    depths = set()
    for _ in range(100):
        sources = [x["source"] for x in space.subnet_spec(space.sample(rng))["layers"]]
        assert sources == list(range(len(sources))) and len(sources) >= 2
        depths.add(len(sources))
    assert depths == {2, 3}
    assert space.subnet_spec(space.smallest())["layers"][-1]["source"] == 1


def test_covering_archs_hold_every_op_of_sampled_subnets():
    space = tiny_space()
    covered = {op.key for a in space.covering_archs() for op in op_graph(space.subnet_spec(a))}
    rng = np.random.default_rng(1)
    for _ in range(30):
        assert {op.key for op in op_graph(space.subnet_spec(space.sample(rng)))} <= covered


# -- the supernet against a dense Llama written out by hand ----------------------------------------------------
def dense_llama(net: LMSupernet, spec: dict, ids: torch.Tensor) -> torch.Tensor:
    """Logits of the float subnet ``spec``, head by head and token by token from the full weights."""
    sd = {k: v.double() for k, v in net.state_dict().items()}
    hd, group, eps, theta = spec["head_dim"], spec["group"], spec["rms_norm_eps"], spec["rope_theta"]
    half = hd // 2
    T = ids.shape[0]
    angle = torch.arange(T, dtype=torch.float64)[:, None] * theta ** (-torch.arange(half, dtype=torch.float64) * 2 / hd)

    def norm(x, w):
        return w * x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps)

    def rope(v):  # v [T, hd]: rotate the pairs (i, i + hd/2) by angle i
        a, b = v[:, :half], v[:, half:]
        return torch.cat([a * angle.cos() - b * angle.sin(), b * angle.cos() + a * angle.sin()], dim=1)

    x = sd["model.embed_tokens.weight"][ids]
    for layer in spec["layers"]:
        p = f"model.layers.{layer['source']}."
        h = norm(x, sd[p + "input_layernorm.weight"])
        outs, cols = [], []
        for g in range(layer["kv_heads"]):
            k = rope(h @ sd[p + "self_attn.k_proj.weight"][g * hd:(g + 1) * hd].T)
            v = h @ sd[p + "self_attn.v_proj.weight"][g * hd:(g + 1) * hd].T
            for r in range(layer["heads"] // layer["kv_heads"]):
                head = g * group + r
                q = rope(h @ sd[p + "self_attn.q_proj.weight"][head * hd:(head + 1) * hd].T)
                scores = (q @ k.T) / math.sqrt(hd) + torch.full((T, T), float("-inf"), dtype=torch.float64).triu(1)
                outs.append(torch.softmax(scores, dim=-1) @ v)
                cols += list(range(head * hd, (head + 1) * hd))
        x = x + torch.cat(outs, dim=1) @ sd[p + "self_attn.o_proj.weight"][:, cols].T
        h = norm(x, sd[p + "post_attention_layernorm.weight"])
        m = layer["mlp"]
        gate, up = h @ sd[p + "mlp.gate_proj.weight"][:m].T, h @ sd[p + "mlp.up_proj.weight"][:m].T
        x = x + (gate * torch.sigmoid(gate) * up) @ sd[p + "mlp.down_proj.weight"][:, :m].T
    head = sd["model.embed_tokens.weight"] if net.lm_head is None else sd["lm_head.weight"]
    return norm(x, sd["model.norm.weight"]) @ head.T


@pytest.mark.parametrize("tied", [True, False])
def test_subnets_compute_the_dense_llama_of_their_slices(tied):
    space = tiny_space(tie_word_embeddings=tied)
    net = supernet(space)
    ids = tokens(1)
    for arch in (space.largest(), arch_of(space, [(1, 2, 2, 24, 16), (0, 4, 2, 48, 16), (1, 2, 1, 48, 16)])):
        net.set_active(arch)
        with torch.no_grad():
            ours = net(ids)[0].double()
        assert torch.allclose(ours, dense_llama(net, net.spec, ids[0]), atol=1e-4)


def test_group_quantizer_against_a_per_group_loop():
    w = torch.randn(3, 20)
    w[1, 5] = 40.0  # an outlier moves only its own group's scale
    for bits in (2, 3, 4, 8):
        q = group_quantize_value(w, bits, 8)
        qp = 2 ** (bits - 1) - 1
        for row in range(3):
            for start in range(0, 20, 8):
                g = w[row, start:start + 8]
                s = g.abs().max() / qp
                assert torch.allclose(q[row, start:start + 8], torch.clamp(torch.round(g / s), -qp - 1, qp) * s)
        assert len(torch.unique(q[0, :8])) <= 2 ** bits
    assert torch.equal(group_quantize_value(w, 16, 8), w)
    x = torch.randn(2, 5, 7)
    xq = token_quantize(x, 8)
    scale = x.abs().amax(-1, keepdim=True) / 127
    assert torch.allclose(xq, torch.round(x / scale) * scale)


def test_gradients_reach_only_the_active_slices_through_the_quantizer():
    space = tiny_space()
    net = supernet(space).train()
    net.set_active(arch_of(space, [(1, 2, 1, 24, 4), (1, 4, 2, 48, 2), (0, 4, 2, 48, 16)], abits=8))
    ids = tokens()
    loss = torch.nn.functional.cross_entropy(net(ids).flatten(0, 1), ids.flatten())
    loss.backward()
    q0 = net.model.layers[0].self_attn.q_proj.weight.grad  # heads 0 and 1 (kv head 0's group) of 4, width 8
    assert q0[:16].abs().sum() > 0 and q0[16:].abs().sum() == 0
    assert net.model.layers[0].mlp.down_proj.weight.grad[:, 24:].abs().sum() == 0
    assert net.model.layers[0].mlp.down_proj.weight.grad[:, :24].abs().sum() > 0
    assert net.model.layers[2].self_attn.q_proj.weight.grad is None


# -- the standalone subnet --------------------------------------------------------------------------------------
def test_extract_equals_the_supernet_and_holds_only_its_weights():
    space = tiny_space(tie_word_embeddings=False)
    net = supernet(space)
    rng = np.random.default_rng(3)
    ids = tokens()
    for arch in [space.largest(), space.smallest()] + [space.sample(rng) for _ in range(4)]:
        net.set_active(arch)
        model = net.extract()
        with torch.no_grad():
            assert torch.allclose(model(ids), net(ids), atol=1e-5)
        ops = lm_op_graph(net.spec)
        weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, (LMLinear, TokenEmbedding, LMHead)))
        assert weights == sum(op.weight_count for op in ops)


def test_kv_cache_logits_and_generation_equal_running_the_whole_prefix():
    space = tiny_space()
    net = supernet(space)
    net.set_active(arch_of(space, [(1, 4, 2, 48, 4), (1, 2, 1, 24, 8), (1, 2, 2, 48, 16)], abits=8))
    model = net.extract()
    ids = tokens(1, 10)
    with torch.no_grad():
        first, past = model.step(ids[:, :6])
        rest, _ = model.step(ids[:, 6:], past)
        assert torch.allclose(torch.cat([first, rest], dim=1), model(ids), atol=1e-5)
    prompt = ids[0, :4].tolist()
    cached = model.generate(prompt, 8)
    assert cached.shape == (1, 12) and cached[0, :4].tolist() == prompt
    assert torch.equal(cached, model.generate(prompt, 8, use_cache=False))
    assert torch.equal(cached, greedy_generate(net, prompt, 8))  # the supernet's active subnet, no cache


# -- the op graph ------------------------------------------------------------------------------------------
KIND_OF = {TokenEmbedding: "embedding", RMSNorm: "rmsnorm", LMLinear: "linear", Rotary: "rope",
           KVAttention: "kv_attention", SwiGLU: "swiglu", ResidualAdd: "add", LMHead: "linear"}


def test_decode_graph_is_the_decode_step_op_for_op_and_counts_by_hand():
    space = tiny_space()
    spec = space.subnet_spec(arch_of(space, [(1, 4, 2, 48, 4), (0, 2, 1, 24, 8), (1, 2, 1, 24, 16)]))
    ops = lm_op_graph(spec)
    assert len(ops) == 1 + 14 * 2 + 2
    ran: list[str] = []
    keys: list[int] = []
    model = StandaloneLM(spec)
    hooks = [m.register_forward_hook(lambda m, i, o: ran.append(KIND_OF[type(m)])) for m in op_modules(model)]
    hooks.append(model.layers[0].attn.register_forward_hook(lambda m, i, o: keys.append(o[1][0].shape[2])))
    with torch.no_grad():  # what a measured device times: one decode step
        assert model.timed_call(1)().shape == (1, 1, VOCAB)
    for h in hooks:
        h.remove()
    assert ran == [op.kind for op in ops]
    assert keys == [CONTEXT]  # the attention read 15 cached keys and the new one
    assert [op.w for op in ops if op.kind == "kv_attention"] == [CONTEXT, CONTEXT]
    d, hd, C = 32, 8, CONTEXT
    linear_macs = ((d * 4 * hd + 2 * d * 2 * hd + 4 * hd * d + 3 * d * 48)
                   + (d * 2 * hd + 2 * d * hd + 2 * hd * d + 3 * d * 24))
    attention_mults = 4 * (2 * C * hd + 2 * C) + 2 * (2 * C * hd + 2 * C)
    head_macs = d * VOCAB
    other = 3 * d * 5 + 2 * (4 + 2) * hd + 2 * (2 + 1) * hd + 3 * 48 + 3 * 24  # 5 rmsnorms, ropes, swiglus
    assert count(ops)["macs"] == linear_macs + attention_mults + head_macs + other
    prefill = lm_prefill_graph(spec, 5)
    attn = [op for op in prefill if op.kind == "kv_attention"][0]
    assert attn.macs == 4 * (2 * 15 * hd + 2 * 15)  # 5 + 4 + 3 + 2 + 1 causal pairs per head


def test_memory_of_an_lm_subnet():
    space = tiny_space()
    arch = arch_of(space, [(1, 4, 2, 48, 4), (1, 2, 1, 24, 8), (0, 2, 1, 24, 16)])
    spec = space.subnet_spec(arch)
    ops = op_graph(spec)
    memory = subnet_memory(ops, lm_op_inputs(spec, ops), 1)
    d, hd = 32, 8
    layer0 = (d * 4 * hd * 2 + 2 * d * 2 * hd + 3 * d * 48) * 4
    layer1 = (d * 2 * hd * 2 + 2 * d * 1 * hd + 3 * d * 24) * 8
    head = VOCAB * d * 16  # tied: counted once, at the head, float16
    biases = (4 * hd + 2 * 2 * hd + d + 2 * 48 + d) + (2 * hd + 2 * 1 * hd + d + 2 * 24 + d) + VOCAB  # as linear counts
    floats = (5 * d + biases) * 32  # five norms
    assert weight_bits(ops) == layer0 + layer1 + head + floats
    cache = 2 * (2 * hd + 1 * hd) * CONTEXT  # keys and values of the kept layers' kv heads, alive throughout
    live = [e - cache for e in activation_profile(ops, lm_op_inputs(spec, ops))]
    # layer 0's attention: rotated q and k, v, its output, and the layer's input held for the add;
    # its swiglu: gate, up, its output, and the attention's residual sum held for the second add
    assert live[1 + 5] == (4 + 2) * hd + 2 * hd + 4 * hd + d and live[1 + 11] == 3 * 48 + d
    assert max(live) == live[-1] == d + VOCAB  # the head: the final norm's output and the logits
    assert memory["memory_kb"] * 1024 == weight_bits(ops) / 8 + 4 * (d + VOCAB) + kv_cache_bytes(spec)
    assert kv_cache_bytes(spec) == 4 * cache


def test_a_few_sandwich_steps_lower_the_loss_of_the_largest_and_smallest_subnets(one_thread):
    space = tiny_space()
    net = supernet(space).train()
    ids = tokens(4, 16)
    x, y = ids[:, :-1], ids[:, 1:]
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)

    def loss(arch) -> torch.Tensor:
        net.set_active(arch)
        return torch.nn.functional.cross_entropy(net(x).flatten(0, 1), y.flatten())
    archs = (space.largest(), space.smallest())  # the smallest: 2-bit weights, 8-bit activations
    before = [float(loss(a).detach()) for a in archs]
    for _ in range(15):
        opt.zero_grad()
        sum(loss(a) for a in archs).backward()
        opt.step()
    after = [float(loss(a).detach()) for a in archs]
    assert after[0] < 0.7 * before[0] and after[1] < 0.9 * before[1], (before, after)


def test_the_local_cpu_profiler_times_every_op_of_the_decode_step(tmp_path, one_thread):
    space = tiny_space(weight_bits=[4, 16], act_bits=[16], kv_head_choices=[2])
    device = LocalCPU(DeviceConfig(repeats=3, rounds=1, warmup=1))
    result = build_lookup_table(device, space, StandaloneLM, tmp_path)
    rng = np.random.default_rng(2)
    for arch in (space.largest(), space.smallest(), space.sample(rng)):
        assert not result.table.missing(op_graph(space.subnet_spec(arch)))
    assert {row["kind"] for row in result.table.entries.values()} == set(KIND_OF.values())
    ms, _ = device.time_model(StandaloneLM(space.subnet_spec(space.largest())), space.input_shape)
    assert ms > 0
