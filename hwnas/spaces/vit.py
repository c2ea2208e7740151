"""The transformer space: a ViT / DeiT supernet built from timm's blocks.

Searchable globally: depth and embedding dimension. Per block: number of heads, MLP ratio,
attention variant (softmax, linear, binary), token keep-ratio, weight and activation bit-width.
As in AutoFormer and HAT, a head has a fixed width (``head_dim``), so heads and the embedding
dimension are sliced independently, and every linear layer keeps one weight at its largest size.

The supernet's modules carry timm's names (``blocks.N.attn.qkv``, ``blocks.N.mlp.fc1``, ...), so
a timm ViT whose size equals the supernet's largest subnet loads into it (InstaTune-style: the
supernet starts from a pretrained model and is fine-tuned as a supernet), and its largest subnet
then computes exactly what the timm model computes.

:meth:`ViTSpace.subnet_spec` is the one description of a subnet, read by the supernet, the
exporter (:class:`StandaloneViT`) and the cost model (:func:`hwnas.hwmodels.graph.vit_op_graph`).
"""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from timm.models.vision_transformer import Block
from torch import nn

from hwnas.errors import HwnasError
from hwnas.spaces.dims import Arch, Dim, SearchSpace
from hwnas.spaces.ops.attention import attention
from hwnas.spaces.ops.layers import ResidualAdd
from hwnas.spaces.ops.quant import FLOAT_BITS, ElasticLSQ, fake_quantize, qrange
from hwnas.spaces.ops.tokens import class_attention_scores, kept_count, select_tokens
from hwnas.spaces.ops.vit_layers import (AttentionCore, PatchEmbed, QLinear, TokenClassifier,
                                         TokenLayerNorm, TokenSelect)
from hwnas.spaces.registry import SpaceEntry, register_space
from hwnas.utils.models import StrictModel

BitChoices = list[Literal[2, 3, 4, 5, 6, 7, 8, 32]]
BLOCK_KEYS = ("heads", "mlp", "attn", "keep", "wbits", "abits")
LINEARS = ("qkv", "proj", "fc1", "fc2")


class ViTSpaceConfig(StrictModel):
    type: Literal["vit"] = "vit"
    patch_size: int = Field(2, gt=0, le=64)
    embed_dims: list[int] = Field([32, 48, 64], min_length=1)
    depths: list[int] = Field([2, 3, 4], min_length=1)
    heads: list[int] = Field([2, 4], min_length=1)
    head_dim: int | None = Field(None, gt=0, le=512, description="width of one head; default: max embed / max heads")
    mlp_ratios: list[float] = Field([1.0, 2.0, 4.0], min_length=1)
    attentions: list[Literal["softmax", "linear", "binary"]] = Field(["softmax", "linear"], min_length=1)
    keep_ratios: list[float] = Field([1.0], min_length=1)
    weight_bits: BitChoices = Field([8, 32], min_length=1)
    act_bits: BitChoices = Field([8, 32], min_length=1)
    qkv_bias: bool = True
    pow2_scales: bool = False
    pretrained: str | None = Field(None, description="a local timm checkpoint (.safetensors, .pth) to start from")

    @field_validator("embed_dims", "depths", "heads")
    @classmethod
    def _positive_distinct(cls, v: list[int]) -> list[int]:
        if any(x < 1 for x in v) or len(set(v)) != len(v):
            raise ValueError("choices must be distinct positive integers")
        return sorted(v)

    @field_validator("mlp_ratios")
    @classmethod
    def _ratios(cls, v: list[float]) -> list[float]:
        if any(not 0 < r <= 16 for r in v) or len(set(v)) != len(v):
            raise ValueError("MLP ratios must be distinct numbers in (0, 16]")
        return sorted(v)

    @field_validator("keep_ratios")
    @classmethod
    def _keeps(cls, v: list[float]) -> list[float]:
        if any(not 0 < r <= 1 for r in v) or len(set(v)) != len(v):
            raise ValueError("token keep ratios must be distinct numbers in (0, 1]")
        return sorted(v)

    @field_validator("attentions", "weight_bits", "act_bits")
    @classmethod
    def _distinct(cls, v: list) -> list:
        if len(set(v)) != len(v):
            raise ValueError("choices must be distinct")
        return v


class ViTSpace(SearchSpace):
    name = "vit"

    def __init__(self, config: ViTSpaceConfig, input_shape: tuple[int, int, int], num_classes: int):
        self.config = config
        self.input_shape = tuple(int(s) for s in input_shape)
        self.num_classes = int(num_classes)
        c, h, w = self.input_shape
        p = config.patch_size
        if h % p or w % p:
            raise HwnasError(f"space.patch_size: {p} does not divide the {h}x{w} input")
        self.patches = (h // p) * (w // p)
        self.head_dim = config.head_dim or max(config.embed_dims) // max(config.heads)
        dims = [Dim("depth", tuple(config.depths)), Dim("embed", tuple(config.embed_dims))]
        for j in range(max(config.depths)):
            dims += [Dim(f"b{j}.{key}", tuple(choices)) for key, choices in self.block_choices().items()]
        super().__init__(dims)

    def block_choices(self) -> dict[str, list]:
        cfg = self.config
        return {"heads": cfg.heads, "mlp": cfg.mlp_ratios, "attn": cfg.attentions, "keep": cfg.keep_ratios,
                "wbits": cfg.weight_bits, "abits": cfg.act_bits}

    def inactive_dims(self, values) -> set[str]:
        depth = values.get("depth", max(self.config.depths))
        return {f"b{j}.{k}" for j in range(depth, max(self.config.depths)) for k in BLOCK_KEYS}

    def largest(self) -> Arch:
        """Deepest and widest, float, every token kept, with the first listed attention."""
        values = super().largest().to_dict()
        values.update({n: self.config.attentions[0] for n in values if n.endswith(".attn")})
        return self.canonical(values)

    def smallest(self) -> Arch:
        values = super().smallest().to_dict()
        values.update({n: min(self.config.keep_ratios) for n in values if n.endswith(".keep")})
        values.update({n: self.config.attentions[0] for n in values if n.endswith(".attn")})
        return self.canonical(values)

    @property
    def max_embed(self) -> int:
        return max(self.config.embed_dims)

    @property
    def max_hidden(self) -> int:
        return int(round(self.max_embed * max(self.config.mlp_ratios)))

    def subnet_spec(self, arch: Arch | dict) -> dict[str, Any]:
        """Every op of the subnet with its widths, token counts and bits: JSON-able."""
        arch = self.validate(arch)
        d = int(arch["embed"])
        tokens = 1 + self.patches
        blocks = []
        for j in range(int(arch["depth"])):
            p = f"b{j}"
            heads, hidden = int(arch[f"{p}.heads"]), int(round(d * float(arch[f"{p}.mlp"])))
            keep_ratio = float(arch[f"{p}.keep"])
            keep = kept_count(tokens - 1, keep_ratio) if keep_ratio < 1 else tokens - 1
            out_tokens = tokens if keep == tokens - 1 else keep + 2
            blocks.append({"name": p, "dim": d, "tokens": tokens, "heads": heads, "head_dim": self.head_dim,
                           "hidden": hidden, "attn": arch[f"{p}.attn"],
                           "keep": keep if out_tokens != tokens else None, "out_tokens": out_tokens,
                           "wbits": int(arch[f"{p}.wbits"]), "abits": int(arch[f"{p}.abits"]),
                           "qkv_bias": self.config.qkv_bias})
            tokens = out_tokens
        return {"type": "vit", "input_shape": list(self.input_shape), "num_classes": self.num_classes,
                "patch_size": self.config.patch_size, "dim": d, "tokens": 1 + self.patches,
                "blocks": blocks, "final_tokens": tokens}

    def covering_archs(self) -> list[Arch]:
        """Archs that contain every per-block op at the token counts uniform choices reach.

        Token counts depend on the keep ratios of earlier blocks, so no finite set of profiling
        networks of reasonable size meets every count; the lookup table interpolates a missing
        count from its neighbours (see ``interpolated_field``). To give each op two or more counts
        to interpolate between, the first block also takes each keep ratio in turn.
        """
        cfg = self.config
        choices = self.block_choices()
        archs = []
        for embed, combo, first_keep in itertools.product(cfg.embed_dims, itertools.product(*choices.values()),
                                                          cfg.keep_ratios):
            values: dict[str, Any] = {"depth": max(cfg.depths), "embed": embed}
            for j in range(max(cfg.depths)):
                for key, value in zip(choices, combo):
                    values[f"b{j}.{key}"] = value
            values["b0.keep"] = first_keep
            archs.append(self.canonical(values))
        return list(dict.fromkeys(archs))

    interpolated_field = "h"  # ops of this space may be priced between measured token counts

    def summary(self, arch: Arch) -> str:
        depth = int(arch["depth"])
        blocks = [f"b{j}" for j in range(depth)]
        attn = "".join(str(arch[f"{b}.attn"])[0] for b in blocks)
        keeps = min(float(arch[f"{b}.keep"]) for b in blocks)
        bits = sorted({int(arch[f"{b}.wbits"]) for b in blocks})
        return f"L{depth} d{arch['embed']} attn:{attn} keep>={keeps:g} w{'/'.join(map(str, bits))}"

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "config": self.config.model_dump(),
                "input_shape": list(self.input_shape), "num_classes": self.num_classes}


# -- the supernet -------------------------------------------------------------------------------
class ElasticBlock(Block):
    """timm's pre-norm transformer block, computed on slices of its largest weights."""

    def __init__(self, space: ViTSpace):
        cfg = space.config
        heads = max(cfg.heads)
        super().__init__(dim=space.max_embed, num_heads=heads, mlp_ratio=space.max_hidden / space.max_embed,
                         qkv_bias=cfg.qkv_bias)
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
        return F.linear(self.quant[f"{name}_a"](x), self.quant[f"{name}_w"](weight), bias)

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
            if wq.active_bits < FLOAT_BITS:
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
        if cfg.pretrained:
            load_timm_checkpoint(self, Path(cfg.pretrained))
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
        self.heads, self.head_dim = s["heads"], s["head_dim"]
        self.ln1 = TokenLayerNorm(d, eps=1e-6)
        self.qkv = QLinear(d, 3 * inner, wb, ab, bias=s["qkv_bias"])
        self.attn = AttentionCore(s["attn"])
        self.proj = QLinear(inner, d, wb, ab)
        self.add1 = ResidualAdd()
        self.select = TokenSelect(s["keep"]) if s["keep"] is not None else None
        self.ln2 = TokenLayerNorm(d, eps=1e-6)
        self.fc1 = QLinear(d, s["hidden"], wb, ab, act="gelu")
        self.fc2 = QLinear(s["hidden"], d, wb, ab)
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


def load_timm_checkpoint(supernet: ViTSupernet, path: Path) -> None:
    """Load a timm ViT's weights into the supernet (its largest subnet), checking every tensor.

    Reads safetensors, or a PyTorch file with ``weights_only=True`` (a dict of tensors, possibly
    under ``model`` or ``state_dict``). The position embedding is resampled when the number of
    patches differs; a classifier for another number of classes is left at its initial value.
    """
    from safetensors.torch import load_file
    from timm.layers import resample_abs_pos_embed

    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
            for key in ("model", "state_dict"):
                if isinstance(state, dict) and isinstance(state.get(key), dict):
                    state = state[key]
    except FileNotFoundError:
        raise HwnasError(f"space.pretrained: {path} does not exist") from None
    except Exception as exc:
        raise HwnasError(f"space.pretrained: {path} is not a readable checkpoint "
                         f"({str(exc).splitlines()[0]})") from None
    own = supernet.state_dict()
    loaded = {}
    for key, value in state.items():
        if key not in own:
            continue
        if key == "pos_embed" and value.shape != own[key].shape and value.shape[-1] == own[key].shape[-1]:
            grid = int(round((own[key].shape[1] - 1) ** 0.5))
            value = resample_abs_pos_embed(value, (grid, grid), num_prefix_tokens=1)
        if key.startswith("head.") and value.shape != own[key].shape:
            continue  # another number of classes: the classifier is trained from scratch
        if value.shape != own[key].shape:
            raise HwnasError(f"space.pretrained: {path} has {key} of shape {tuple(value.shape)}, the supernet's "
                             f"largest subnet needs {tuple(own[key].shape)}")
        loaded[key] = value
    missing = [k for k in own if k not in loaded and ".quant." not in k and not k.startswith("head.")]
    if missing:
        raise HwnasError(f"space.pretrained: {path} lacks {missing[0]} (is it a timm ViT of the largest size?)")
    supernet.load_state_dict(loaded, strict=False)


register_space(SpaceEntry(name="vit", config_model=ViTSpaceConfig, build_space=ViTSpace,
                          build_supernet=ViTSupernet, build_standalone=StandaloneViT))
