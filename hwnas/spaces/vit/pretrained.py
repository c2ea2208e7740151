"""The vit space around a pretrained timm VisionTransformer (InstaTune-style: pretrained, then elastic).

With ``space.init: {timm: deit_tiny_patch16_224, checkpoint: PATH, kwargs: {...}}`` the timm network
is the space's largest subnet. :func:`settle_vit_config` (the space config's before-validator)
reads its patch size, embedding, depth, heads, head width, MLP ratio and qkv bias; a key the config
leaves out (or null) is taken from it, the lists as 1/2, 3/4 and all of the pretrained value
(:func:`~hwnas.spaces.pretrained.scaled_choices`), and a key that contradicts it is refused by
name. The input must be the model's: :func:`check_input` names ``data.image_size`` when it is not
(``kwargs: {img_size: N}`` instead resamples the checkpoint's position embedding, by timm's own
``checkpoint_filter_fn``).

The supernet's modules carry timm's names, so :func:`load_vit_pretrained` copies every tensor by
name, then checks the largest subnet reproduces the timm model before any training.

Only what the space computes is accepted: one class token, learned absolute position embeddings,
class-token pooling, pre-norm blocks with LayerNorm, attention without q/k norm or gating, a GELU
MLP, no layer scale. Anything else is refused naming the first timm layer that differs
(``blocks.0.ls1: layer scale is not in the vit space``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from timm.layers import Attention, Mlp
from timm.models.vision_transformer import Block, VisionTransformer, checkpoint_filter_fn
from torch import nn

from hwnas.errors import ConfigError, HwnasError
from hwnas.spaces.pretrained import Settle, TimmInit, scaled_choices, settle_config, start_from, structure


@dataclass(frozen=True)
class ViTStructure:
    img_size: tuple[int, int]
    in_chans: int
    patch_size: int
    embed_dim: int
    depth: int
    heads: int
    head_dim: int
    mlp_ratio: float
    qkv_bias: bool


def _refuse(init: TimmInit, layer: str, what: str) -> ConfigError:
    return ConfigError(f"space.init: {init.timm}: {layer}: {what} is not in the vit space")


def _is(module: Any, kind: type) -> bool:
    return type(module) is kind


def _layer_norm(init: TimmInit, name: str, norm: nn.Module) -> None:
    if not isinstance(norm, nn.LayerNorm):
        raise _refuse(init, name, f"a {type(norm).__name__}")
    if norm.eps != 1e-6 or not norm.elementwise_affine or norm.bias is None:
        raise _refuse(init, name, f"a LayerNorm with eps {norm.eps:g} (the space's is 1e-6, with weight and bias)")


def _check_block(init: TimmInit, i: int, block: nn.Module) -> tuple[int, int, int, bool]:
    """(heads, head width, MLP hidden width, qkv bias) of one block, or the first layer that differs."""
    name = f"blocks.{i}"
    if not _is(block, Block):
        raise _refuse(init, name, f"a {type(block).__name__} block (not timm's pre-norm Block)")
    for part in ("norm1", "norm2"):
        _layer_norm(init, f"{name}.{part}", getattr(block, part))
    attn = block.attn
    if not _is(attn, Attention):
        raise _refuse(init, f"{name}.attn", f"a {type(attn).__name__}")
    if not (_is(attn.q_norm, nn.Identity) and _is(attn.k_norm, nn.Identity)):
        raise _refuse(init, f"{name}.attn.q_norm", "q/k normalization")
    if not _is(attn.norm, nn.Identity) or getattr(attn, "gate", None) is not None:
        raise _refuse(init, f"{name}.attn.norm", "a normalized or gated attention output")
    if attn.proj.bias is None:
        raise _refuse(init, f"{name}.attn.proj", "a projection without bias")
    for part in ("ls1", "ls2"):
        if not _is(getattr(block, part), nn.Identity):
            raise _refuse(init, f"{name}.{part}", "layer scale")
    mlp = block.mlp
    if not _is(mlp, Mlp) or not _is(mlp.norm, nn.Identity) or mlp.fc1.bias is None or mlp.fc2.bias is None:
        raise _refuse(init, f"{name}.mlp", f"a {type(mlp).__name__} other than a plain two-layer MLP with biases")
    if not _is(mlp.act, nn.GELU) or mlp.act.approximate != "none":
        raise _refuse(init, f"{name}.mlp.act", f"activation {mlp.act!r}")
    return attn.num_heads, attn.head_dim, mlp.fc1.out_features, attn.qkv.bias is not None


def read_structure(model: nn.Module, init: TimmInit) -> ViTStructure:
    """What of the timm model the space must reproduce, or the first layer it cannot."""
    if not isinstance(model, VisionTransformer):
        raise ConfigError(f"space.init.timm: {init.timm} is a timm {type(model).__name__}; the vit space starts "
                          "from a VisionTransformer (vit_*, deit_* without distillation token)")
    embed = model.patch_embed
    proj = embed.proj
    if not (_is(proj, nn.Conv2d) and proj.kernel_size == proj.stride and proj.kernel_size[0] == proj.kernel_size[1]
            and proj.bias is not None and _is(embed.norm, nn.Identity)):
        raise _refuse(init, "patch_embed", "a patch embedding other than a square, biased, unnormalized convolution")
    if model.cls_token is None or model.num_prefix_tokens != 1 or type(model).__name__ != "VisionTransformer":
        raise _refuse(init, "cls_token", "a prefix other than one class token (register or distillation tokens)")
    if model.pos_embed is None or model.no_embed_class:
        raise _refuse(init, "pos_embed", "a position embedding other than a learned one over every token")
    if not _is(model.norm_pre, nn.Identity):
        raise _refuse(init, "norm_pre", "a normalization before the blocks")
    shapes = [_check_block(init, i, b) for i, b in enumerate(model.blocks)]
    if not shapes:
        raise _refuse(init, "blocks", "a network without blocks")
    for i, shape in enumerate(shapes):
        if shape != shapes[0]:
            raise _refuse(init, f"blocks.{i}", f"(heads, head width, MLP width, qkv bias) {shape} differing from "
                          f"blocks.0's {shapes[0]}")
    if model.global_pool != "token" or model.attn_pool is not None or not _is(model.fc_norm, nn.Identity):
        raise _refuse(init, "head", f"pooling {model.global_pool!r} (the space classifies the class token)")
    _layer_norm(init, "norm", model.norm)
    heads, head_dim, hidden, qkv_bias = shapes[0]
    return ViTStructure(tuple(embed.img_size), proj.in_channels, proj.kernel_size[0], model.embed_dim,
                        len(shapes), heads, head_dim, hidden / model.embed_dim, qkv_bias)


def vit_structure(init: TimmInit) -> ViTStructure:
    """The structure of ``init``'s architecture (built once per process and architecture)."""
    return structure(init, read_structure)


def _settle(raw: dict[str, Any], init: TimmInit) -> None:
    s = vit_structure(init)
    settle = Settle(raw, init)
    settle.fixed("patch_size", s.patch_size, "patch size")
    settle.fixed("head_dim", s.head_dim, "head width")
    settle.fixed("qkv_bias", s.qkv_bias, "qkv bias")
    settle.largest("embed_dims", s.embed_dim, "embedding dimension", scaled_choices(s.embed_dim))
    settle.largest("depths", s.depth, "depth", scaled_choices(s.depth))
    settle.largest("heads", s.heads, "heads", scaled_choices(s.heads))
    settle.largest("mlp_ratios", s.mlp_ratio, "MLP ratio", scaled_choices(s.mlp_ratio))
    settle.float_model()
    settle.includes("keep_ratios", 1.0, "the largest subnet keeps every token")
    settle.leads("attentions", "softmax", f"the largest subnet is {init.timm}, whose attention is softmax")


def settle_vit_config(raw: Any) -> Any:
    """The raw ``space:`` section with what ``init`` implies filled in (see the module docstring)."""
    return settle_config(raw, _settle)


def check_input(init: TimmInit, input_shape: tuple[int, int, int]) -> None:
    """Refuse data the pretrained model does not take, naming the key that fixes it."""
    s = vit_structure(init)
    c, h, w = input_shape
    if (h, w) != s.img_size:
        raise HwnasError(f"data.image_size: {init.timm} (kwargs {init.kwargs}) takes {s.img_size[0]}x{s.img_size[1]} "
                         f"images, the data is {h}x{w}: set data.image_size: {s.img_size[0]}, or space.init.kwargs."
                         f"img_size: {h} (timm then resamples the checkpoint's position embedding)")
    if c != s.in_chans:
        raise HwnasError(f"space.init.kwargs.in_chans: {init.timm} takes {s.in_chans}-channel images, the data has "
                         f"{c} channel(s)")


def load_vit_pretrained(supernet: nn.Module, space: Any) -> dict[str, Any] | None:
    """The ``load_pretrained`` hook of the vit space: start the supernet from ``space.init``."""
    init = space.config.init
    if init is None:
        return None
    return start_from(supernet, space, init, names=lambda model: {k: k for k in model.state_dict()},
                      untrained=lambda key: ".quant." in key, classifier=lambda net: net.head,
                      convert=checkpoint_filter_fn)
