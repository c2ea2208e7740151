"""The LM supernet: every layer's weights at full size, sliced for the active subnet.

Its parameters carry Hugging Face's ``LlamaForCausalLM`` names (``model.embed_tokens.weight``,
``model.layers.N.self_attn.q_proj.weight``, ..., ``model.norm.weight``, ``lm_head.weight`` when
untied), so a pretrained checkpoint loads tensor by tensor (:mod:`hwnas.spaces.lm.pretrained`).

Slicing (see :mod:`hwnas.spaces.lm.space` for why by whole GQA groups): the query projection keeps
the rows of the first ``heads / kv`` query heads of each of the first ``kv`` groups, the output
projection the same columns, the key and value projections the rows of the first ``kv`` heads;
the MLP keeps the first ``mlp`` rows of gate and up and the first ``mlp`` columns of down. A
skipped layer is the identity. Weights are fake-quantized after slicing, per group along the input
(:func:`~hwnas.spaces.ops.group_quant.group_quantize`); :meth:`LMSupernet.extract` stores the same
values, so the exported subnet computes what the supernet computed.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hwnas.spaces.dims import Arch
from hwnas.spaces.lm.space import LMSpace
from hwnas.spaces.lm.standalone import FixedLayer, StandaloneLM
from hwnas.spaces.ops.group_quant import group_quantize, group_quantize_value, token_quantize
from hwnas.spaces.ops.lm_layers import apply_rope, causal_attention, rms_norm, rope_cos_sin

ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")


class _Norm(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))


def _linear(cin: int, cout: int, std: float) -> nn.Linear:
    layer = nn.Linear(cin, cout, bias=False)
    nn.init.normal_(layer.weight, std=std)
    return layer


class ElasticLayer(nn.Module):
    """One decoder layer at full size, computed on the slices of the active spec."""

    def __init__(self, space: LMSpace, std: float):
        super().__init__()
        cfg = space.config
        d, hd = cfg.hidden_size, cfg.head_dim
        self.head_dim, self.group, self.group_size, self.eps = hd, space.group, cfg.group_size, cfg.rms_norm_eps
        self.self_attn = nn.Module()
        for name, cin, cout in (("q_proj", d, cfg.heads * hd), ("k_proj", d, cfg.kv_heads * hd),
                                ("v_proj", d, cfg.kv_heads * hd), ("o_proj", cfg.heads * hd, d)):
            setattr(self.self_attn, name, _linear(cin, cout, std))
        self.mlp = nn.Module()
        for name, cin, cout in (("gate_proj", d, cfg.intermediate_size), ("up_proj", d, cfg.intermediate_size),
                                ("down_proj", cfg.intermediate_size, d)):
            setattr(self.mlp, name, _linear(cin, cout, std))
        self.input_layernorm, self.post_attention_layernorm = _Norm(d), _Norm(d)
        self.spec: dict[str, Any] | None = None
        self.abits = 16

    def set_active(self, spec: dict[str, Any] | None, abits: int) -> None:
        self.spec, self.abits = spec, abits

    def _q_rows(self) -> torch.Tensor:
        s, hd = self.spec, self.head_dim
        heads = [g * self.group + r for g in range(s["kv_heads"]) for r in range(s["heads"] // s["kv_heads"])]
        device = self.self_attn.q_proj.weight.device
        return (torch.tensor(heads, device=device)[:, None] * hd + torch.arange(hd, device=device)).reshape(-1)

    def active_weights(self) -> dict[str, torch.Tensor]:
        """The float slices of the active subnet, by projection name."""
        s, a, m = self.spec, self.self_attn, self.mlp
        rows, kv, width = self._q_rows(), s["kv_heads"] * self.head_dim, s["mlp"]
        return {"q_proj": a.q_proj.weight.index_select(0, rows), "k_proj": a.k_proj.weight[:kv],
                "v_proj": a.v_proj.weight[:kv], "o_proj": a.o_proj.weight.index_select(1, rows),
                "gate_proj": m.gate_proj.weight[:width], "up_proj": m.up_proj.weight[:width],
                "down_proj": m.down_proj.weight[:, :width]}

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        if self.spec is None:
            return x
        s, hd = self.spec, self.head_dim
        w = {k: group_quantize(v, s["wbits"], self.group_size) for k, v in self.active_weights().items()}
        B, T, _ = x.shape
        h = token_quantize(rms_norm(x, self.input_layernorm.weight, self.eps), self.abits)
        q = F.linear(h, w["q_proj"]).view(B, T, s["heads"], hd).transpose(1, 2)
        k = F.linear(h, w["k_proj"]).view(B, T, s["kv_heads"], hd).transpose(1, 2)
        v = F.linear(h, w["v_proj"]).view(B, T, s["kv_heads"], hd).transpose(1, 2)
        out = causal_attention(apply_rope(q, cos, sin), apply_rope(k, cos, sin), v)
        x = x + F.linear(token_quantize(out, self.abits), w["o_proj"])
        h = token_quantize(rms_norm(x, self.post_attention_layernorm.weight, self.eps), self.abits)
        hidden = F.silu(F.linear(h, w["gate_proj"])) * F.linear(h, w["up_proj"])
        return x + F.linear(token_quantize(hidden, self.abits), w["down_proj"])

    @torch.no_grad()
    def extract(self, spec: dict[str, Any]) -> FixedLayer:
        s = self.spec
        layer = FixedLayer(s, spec)
        for name, weight in self.active_weights().items():
            getattr(layer, name).weight.copy_(group_quantize_value(weight, s["wbits"], self.group_size))
        layer.input_norm.weight.copy_(self.input_layernorm.weight)
        layer.post_norm.weight.copy_(self.post_attention_layernorm.weight)
        return layer


class LMSupernet(nn.Module):
    """All subnets of an :class:`LMSpace` in one set of weights (Hugging Face Llama names)."""

    def __init__(self, space: LMSpace, init_std: float = 0.02):
        super().__init__()
        self.space = space
        cfg = space.config
        self.model = nn.Module()
        self.model.embed_tokens = nn.Embedding(space.vocab_size, cfg.hidden_size)
        nn.init.normal_(self.model.embed_tokens.weight, std=init_std)
        self.model.layers = nn.ModuleList([ElasticLayer(space, init_std) for _ in range(cfg.num_layers)])
        self.model.norm = _Norm(cfg.hidden_size)
        self.lm_head = None if cfg.tie_word_embeddings else _linear(cfg.hidden_size, space.vocab_size, init_std)
        self.set_active(space.largest())

    def set_active(self, arch: Arch | dict) -> Arch:
        arch = self.space.validate(arch)
        self.spec = self.space.subnet_spec(arch)
        self.active_arch = arch
        by_source = {layer["source"]: layer for layer in self.spec["layers"]}
        for j, layer in enumerate(self.model.layers):
            layer.set_active(by_source.get(j), self.spec["abits"])
        return arch

    def head_weight(self) -> torch.Tensor:
        return self.model.embed_tokens.weight if self.lm_head is None else self.lm_head.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.space.config
        h = self.model.embed_tokens(x)
        cos, sin = rope_cos_sin(0, x.shape[1], cfg.head_dim, cfg.rope_theta, x.device)
        for layer in self.model.layers:
            h = layer(h, cos, sin)
        return F.linear(rms_norm(h, self.model.norm.weight, cfg.rms_norm_eps), self.head_weight())

    @torch.no_grad()
    def extract(self) -> StandaloneLM:
        kept = [layer for layer in self.model.layers if layer.spec is not None]
        model = StandaloneLM(self.spec, [layer.extract(self.spec) for layer in kept])
        model.embed.weight.copy_(self.model.embed_tokens.weight)
        model.norm.weight.copy_(self.model.norm.weight)
        if model.lm_head.weight is not None:
            model.lm_head.weight.copy_(self.lm_head.weight)
        return model.eval()
