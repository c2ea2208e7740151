"""The ViT supernet (timm blocks computed on slices of their largest weights) and the standalone
ViT an exported subnet is, both built from :meth:`ViTSpace.subnet_spec`."""
from __future__ import annotations

from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block
from torch import nn

from hwnas.ir import FLOAT_BITS
from hwnas.spaces.dims import Arch
from hwnas.spaces.ops.attention import attention
from hwnas.spaces.ops.layers import ResidualAdd
from hwnas.spaces.ops.quant import ElasticLSQ, fake_quantize, qrange
from hwnas.spaces.ops.shift import log2_quantize, log2_weight
from hwnas.spaces.ops.tokens import class_attention_scores, select_tokens
from hwnas.spaces.ops.vit_layers import AttentionCore, PatchEmbed, QLinear, TokenClassifier, TokenLayerNorm, TokenSelect
from hwnas.spaces.vit.graph import LINEAR_OPS
from hwnas.spaces.vit.space import LINEARS, ViTSpace


class ElasticBlock(Block):
    """timm's pre-norm transformer block, computed on slices of its largest weights."""

    def __init__(self, space: ViTSpace):
        cfg = space.config
        heads = max(cfg.heads)
        super().__init__(dim=space.max_embed, num_heads=heads, mlp_ratio=space.max_hidden / space.max_embed,
                         qkv_bias=cfg.qkv_bias, norm_layer=partial(nn.LayerNorm, eps=1e-6))  # timm ViT's, FixedBlock's
        if heads * space.head_dim != space.max_embed:  # timm derives head_dim from dim / heads
            inner = heads * space.head_dim
            self.attn.qkv = nn.Linear(space.max_embed, 3 * inner, bias=cfg.qkv_bias)
            self.attn.proj = nn.Linear(inner, space.max_embed)
        self.max_heads, self.head_dim = heads, space.head_dim
        self.quant = nn.ModuleDict()
        for name in LINEARS:
            self.quant[f"{name}_w"] = ElasticLSQ(tuple(cfg.weight_bits), signed=True, pow2=cfg.pow2_scales)
            self.quant[f"{name}_a"] = ElasticLSQ(tuple(cfg.act_bits), signed=True, pow2=cfg.pow2_scales)
        self.spec: dict[str, Any] = {}

    def set_active(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        for name in LINEARS:
            self.quant[f"{name}_w"].active_bits = spec["wbits"]
            self.quant[f"{name}_a"].active_bits = spec["abits"]

    # -- the sliced weights of each linear layer ----------------------------------------------
    def _qkv_rows(self) -> torch.Tensor:
        inner, full = self.spec["heads"] * self.head_dim, self.max_heads * self.head_dim
        return torch.cat([torch.arange(inner) + i * full for i in range(3)]).to(self.attn.qkv.weight.device)

    def active_linear(self, name: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        s = self.spec
        d, inner, hidden = s["dim"], s["heads"] * self.head_dim, s["hidden"]
        if name == "qkv":
            rows = self._qkv_rows()
            layer = self.attn.qkv
            return (layer.weight.index_select(0, rows)[:, :d],
                    None if layer.bias is None else layer.bias.index_select(0, rows))
        layer, out_dim, in_dim = {"proj": (self.attn.proj, d, inner), "fc1": (self.mlp.fc1, hidden, d),
                                  "fc2": (self.mlp.fc2, d, hidden)}[name]
        return layer.weight[:out_dim, :in_dim], None if layer.bias is None else layer.bias[:out_dim]

    def _linear(self, name: str, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.active_linear(name)
        return F.linear(self.quant[f"{name}_a"](x), self._quantized_weight(name, weight), bias)

    def _quantized_weight(self, name: str, weight: torch.Tensor) -> torch.Tensor:
        """The block's weight quantizer on ``weight``: log2 (powers of two, straight-through in
        training; no learned state) or the uniform LSQ quantizer of the active bit-width."""
        if self.spec.get("wquant") == "log2":
            return log2_weight(weight, self.spec["wbits"])
        return self.quant[f"{name}_w"](weight)

    def _norm(self, norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
        d = self.spec["dim"]
        return F.layer_norm(x, (d,), norm.weight[:d], norm.bias[:d], norm.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        s = self.spec
        B, N, _ = x.shape
        qkv = self._linear("qkv", self._norm(self.norm1, x))
        q, k, v = qkv.reshape(B, N, 3, s["heads"], self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        out = attention(s["attn"], q, k, v).transpose(1, 2).reshape(B, N, s["heads"] * self.head_dim)
        x = x + self._linear("proj", out)
        if s["keep"] is not None:
            x = select_tokens(x, class_attention_scores(q, k), s["keep"])
        hidden = F.gelu(self._linear("fc1", self._norm(self.norm2, x)))
        return x + self._linear("fc2", hidden)

    @torch.no_grad()
    def extract(self) -> "FixedBlock":
        s = self.spec
        block, d = FixedBlock(s), s["dim"]
        for fixed, elastic in ((block.ln1, self.norm1), (block.ln2, self.norm2)):
            fixed.weight.copy_(elastic.weight[:d])
            fixed.bias.copy_(elastic.bias[:d])
        for name in LINEARS:
            weight, bias = self.active_linear(name)
            wq, aq = self.quant[f"{name}_w"], self.quant[f"{name}_a"]
            if s.get("wquant") == "log2":
                weight = log2_quantize(weight, s["wbits"])
            elif wq.active_bits < FLOAT_BITS:
                weight = fake_quantize(weight, wq.step(wq.active_bits), *qrange(wq.active_bits, True))
            target = getattr(block, name)
            target.linear.weight.copy_(weight)
            if bias is not None:
                target.linear.bias.copy_(bias)
            if aq.active_bits < FLOAT_BITS:
                target.quant.step.copy_(aq.step(aq.active_bits).detach())
        return block


class ViTSupernet(nn.Module):
    """All subnets of a :class:`ViTSpace` in one set of weights, named as timm names them."""

    def __init__(self, space: ViTSpace):
        super().__init__()
        self.space = space
        cfg = space.config
        c = space.input_shape[0]
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(c, space.max_embed, cfg.patch_size, cfg.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, space.max_embed))
        self.pos_embed = nn.Parameter(torch.randn(1, 1 + space.patches, space.max_embed) * 0.02)
        self.blocks = nn.ModuleList([ElasticBlock(space) for _ in range(max(cfg.depths))])
        self.norm = nn.LayerNorm(space.max_embed, eps=1e-6)
        self.head = nn.Linear(space.max_embed, space.num_classes)
        nn.init.trunc_normal_(self.cls_token, std=1e-6)
        self.set_active(space.largest())

    def set_active(self, arch: Arch | dict) -> Arch:
        arch = self.space.validate(arch)
        self.spec = self.space.subnet_spec(arch)
        self.active_arch = arch
        for block, spec in zip(self.blocks, self.spec["blocks"]):
            block.set_active(spec)
        return arch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.spec["dim"]
        conv = self.patch_embed.proj
        x = F.conv2d(x, conv.weight[:d], conv.bias[:d], conv.stride).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token[:, :, :d].expand(x.shape[0], -1, -1), x], dim=1)
        x = x + self.pos_embed[:, :, :d]
        for block in self.blocks[: len(self.spec["blocks"])]:
            x = block(x)
        x = F.layer_norm(x, (d,), self.norm.weight[:d], self.norm.bias[:d], self.norm.eps)
        return F.linear(x[:, 0], self.head.weight[:, :d], self.head.bias)

    @torch.no_grad()
    def extract(self) -> "StandaloneViT":
        d = self.spec["dim"]
        model = StandaloneViT(self.spec)
        model.embed.proj.weight.copy_(self.patch_embed.proj.weight[:d])
        model.embed.proj.bias.copy_(self.patch_embed.proj.bias[:d])
        model.embed.cls_token.copy_(self.cls_token[:, :, :d])
        model.embed.pos_embed.copy_(self.pos_embed[:, :, :d])
        model.blocks = nn.Sequential(*[b.extract() for b in self.blocks[: len(self.spec["blocks"])]])
        model.norm.weight.copy_(self.norm.weight[:d])
        model.norm.bias.copy_(self.norm.bias[:d])
        model.head.fc.weight.copy_(self.head.weight[:, :d])
        model.head.fc.bias.copy_(self.head.bias)
        return model.eval()


class FixedBlock(nn.Module):
    """One exported transformer block; its children run in op-graph order."""

    def __init__(self, s: dict[str, Any]):
        super().__init__()
        inner, d, wb, ab = s["heads"] * s["head_dim"], s["dim"], s["wbits"], s["abits"]
        op = LINEAR_OPS[s.get("wquant", "uniform")]  # exports written before log2 weights have no wquant
        self.heads, self.head_dim = s["heads"], s["head_dim"]
        self.ln1 = TokenLayerNorm(d, eps=1e-6)
        self.qkv = QLinear(d, 3 * inner, wb, ab, bias=s["qkv_bias"], op=op)
        self.attn = AttentionCore(s["attn"])
        self.proj = QLinear(inner, d, wb, ab, op=op)
        self.add1 = ResidualAdd()
        self.select = TokenSelect(s["keep"]) if s["keep"] is not None else None
        self.ln2 = TokenLayerNorm(d, eps=1e-6)
        self.fc1 = QLinear(d, s["hidden"], wb, ab, act="gelu", op=op)
        self.fc2 = QLinear(s["hidden"], d, wb, ab, op=op)
        self.add2 = ResidualAdd()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, _ = x.shape
        qkv = self.qkv(self.ln1(x))
        q, k, v = qkv.reshape(B, N, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        out = self.attn(q, k, v).transpose(1, 2).reshape(B, N, self.heads * self.head_dim)
        x = self.add1(x, self.proj(out))
        if self.select is not None:
            x = self.select(x, q, k)
        return self.add2(x, self.fc2(self.fc1(self.ln2(x))))


class StandaloneViT(nn.Module):
    """A fixed ViT subnet rebuilt from its spec alone."""

    def __init__(self, spec: dict[str, Any]):
        super().__init__()
        d = spec["dim"]
        self.embed = PatchEmbed(spec["input_shape"][0], d, spec["patch_size"], spec["tokens"])
        self.blocks = nn.Sequential(*[FixedBlock(b) for b in spec["blocks"]])
        self.norm = TokenLayerNorm(d, eps=1e-6)
        self.head = TokenClassifier(d, spec["num_classes"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.blocks(self.embed(x))))
