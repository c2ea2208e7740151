"""The transformer space: a ViT / DeiT supernet built from timm's blocks.

Searchable globally: depth and embedding dimension. Per block: number of heads, MLP ratio,
attention variant (softmax, linear, relu_linear, binary), token keep-ratio, weight and activation
bit-width, and, when ``weight_quant`` lists more than one, the weight quantizer (uniform LSQ, or
log2: power-of-two weights, so the block's linear layers are shift layers).
As in AutoFormer and HAT, a head has a fixed width (``head_dim``), so heads and the embedding
dimension are sliced independently, and every linear layer keeps one weight at its largest size.

The supernet's modules carry timm's names (``blocks.N.attn.qkv``, ``blocks.N.mlp.fc1``, ...), so
with ``init`` the space is built around a pretrained timm ViT, which loads into the supernet as its
largest subnet (InstaTune-style: the supernet starts from a pretrained model and is fine-tuned as
a supernet; see :mod:`hwnas.spaces.vit.pretrained`).

:meth:`ViTSpace.subnet_spec` is the one description of a subnet, read by the supernet, the
exporter (:class:`StandaloneViT`) and the cost model (:func:`hwnas.spaces.vit.graph.vit_op_graph`).
"""
from __future__ import annotations

import itertools
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from hwnas.errors import HwnasError
from hwnas.spaces.dims import Arch, Dim, SearchSpace
from hwnas.spaces.ops.tokens import kept_count
from hwnas.spaces.pretrained import TimmInit
from hwnas.spaces.vit.pretrained import check_input, settle_vit_config
from hwnas.utils.models import StrictModel

BitChoices = list[Literal[2, 3, 4, 5, 6, 7, 8, 32]]
BLOCK_KEYS = ("heads", "mlp", "attn", "keep", "wbits", "abits", "wquant")
LINEARS = ("qkv", "proj", "fc1", "fc2")


class ViTSpaceConfig(StrictModel):
    type: Literal["vit"] = "vit"
    patch_size: int = Field(2, gt=0, le=64)
    embed_dims: list[int] = Field([32, 48, 64], min_length=1)
    depths: list[int] = Field([2, 3, 4], min_length=1)
    heads: list[int] = Field([2, 4], min_length=1)
    head_dim: int | None = Field(None, gt=0, le=512, description="width of one head; default: max embed / max heads")
    mlp_ratios: list[float] = Field([1.0, 2.0, 4.0], min_length=1)
    attentions: list[Literal["softmax", "linear", "relu_linear", "binary"]] = Field(["softmax", "linear"],
                                                                                  min_length=1)
    keep_ratios: list[float] = Field([1.0], min_length=1)
    weight_bits: BitChoices = Field([8, 32], min_length=1)
    act_bits: BitChoices = Field([8, 32], min_length=1)
    weight_quant: list[Literal["uniform", "log2"]] = Field(
        ["uniform"], min_length=1, description="weight quantizers per block: uniform (LSQ) or log2 (powers of two)")
    qkv_bias: bool = True
    pow2_scales: bool = False
    init: TimmInit | None = Field(None, description="a pretrained timm ViT the largest subnet starts as (keys left "
                                  "out are taken from it): see hwnas.spaces.vit.pretrained")

    @model_validator(mode="before")
    @classmethod
    def _from_pretrained(cls, raw: Any) -> Any:
        return settle_vit_config(raw)

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

    @field_validator("attentions", "weight_bits", "act_bits", "weight_quant")
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
        if config.init is not None:
            check_input(config.init, self.input_shape)
        self.head_dim = config.head_dim or max(config.embed_dims) // max(config.heads)
        dims = [Dim("depth", tuple(config.depths)), Dim("embed", tuple(config.embed_dims))]
        for j in range(max(config.depths)):
            dims += [Dim(f"b{j}.{key}", tuple(choices)) for key, choices in self.block_choices().items()]
        super().__init__(dims)

    def block_choices(self) -> dict[str, list]:
        """The per-block dimensions; a single weight quantizer is no dimension (so a space without
        log2 weights has the encoding it had before they existed)."""
        cfg = self.config
        out = {"heads": cfg.heads, "mlp": cfg.mlp_ratios, "attn": cfg.attentions, "keep": cfg.keep_ratios,
               "wbits": cfg.weight_bits, "abits": cfg.act_bits}
        if len(cfg.weight_quant) > 1:
            out["wquant"] = cfg.weight_quant
        return out

    def _first_listed(self, values: dict) -> dict:
        """``values`` with the attention kind and weight quantizer of every block at their first
        listed (reference) choice."""
        first = {"attn": self.config.attentions[0], "wquant": self.config.weight_quant[0]}
        return {n: first.get(n.rsplit(".", 1)[-1], v) for n, v in values.items()}

    def inactive_dims(self, values) -> set[str]:
        depth = values.get("depth", max(self.config.depths))
        return {f"b{j}.{k}" for j in range(depth, max(self.config.depths)) for k in BLOCK_KEYS}

    def largest(self) -> Arch:
        """Deepest and widest, float, every token kept, with the first listed attention and weight
        quantizer."""
        return self.canonical(self._first_listed(super().largest().to_dict()))

    def smallest(self) -> Arch:
        values = super().smallest().to_dict()
        values.update({n: min(self.config.keep_ratios) for n in values if n.endswith(".keep")})
        return self.canonical(self._first_listed(values))

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
                           "wquant": arch.get(f"{p}.wquant", self.config.weight_quant[0]),
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
        log2 = sum(arch.get(f"{b}.wquant", self.config.weight_quant[0]) == "log2" for b in blocks)
        return (f"L{depth} d{arch['embed']} attn:{attn} keep>={keeps:g} w{'/'.join(map(str, bits))}"
                + (f" log2:{log2}" if log2 else ""))

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "config": self.config.model_dump(),
                "input_shape": list(self.input_shape), "num_classes": self.num_classes}


# -- the supernet -------------------------------------------------------------------------------
