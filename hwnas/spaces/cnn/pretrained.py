"""The cnn space around a pretrained timm MobileNetV2 / EfficientNet-Lite-style network.

With ``space.init: {timm: mobilenetv2_100, checkpoint: PATH}`` the timm network is the space's
largest subnet. :func:`read_structure` walks the model in execution order and takes its stem
width, each stage's (``blocks.i``) width, stride, depth, kernel and expand ratio, and its head
width; :func:`settle_cnn_config` (the space config's before-validator) fills the keys the config
leaves out (or null) from them: ``stages`` with each stage's own ``expand_ratios`` and
``kernel_sizes`` (1/2, 3/4 and all of the pretrained depth and expand ratio; the odd kernels up to
the pretrained one), and refuses a key that contradicts the model, by name.

The space's block is timm's inverted residual without extras: an optional 1x1 expansion
(conv + BN + ReLU6), a depthwise kxk (conv + BN + ReLU6), a 1x1 projection (conv + BN), the
residual wherever the shapes allow; timm's ``DepthwiseSeparableConv`` is that block at expand
ratio 1. ``mobilenetv2_*`` and ``efficientnet_lite*`` match; the first layer of anything else is
named: ``bn1: activation SiLU is not in the cnn space`` (EfficientNet-B0, MobileNetV3), or
``blocks.1.0.se: squeeze-excite is not in the cnn space`` when only the activation is changed.
Squeeze-excite and hard-swish would need new ops in the op graph, the cost model and every export
format, so they are refused rather than half supported.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from timm.models._efficientnet_blocks import DepthwiseSeparableConv, InvertedResidual
from torch import nn

from hwnas.errors import ConfigError
from hwnas.spaces.pretrained import (Settle, TimmInit, odd_kernels, scaled_choices, settle_config, start_from,
                                     structure)


@dataclass(frozen=True)
class StageStructure:
    channels: int
    stride: int
    depth: int
    kernel: int
    expand: int


@dataclass(frozen=True)
class CNNStructure:
    in_chans: int
    stem_channels: int
    stem_stride: int
    head_channels: int
    stages: tuple[StageStructure, ...]


class _Walk:
    """Checks the timm model layer by layer, in execution order, raising on the first that differs."""

    def __init__(self, init: TimmInit):
        self.init = init

    def refuse(self, layer: str, what: str) -> ConfigError:
        return ConfigError(f"space.init: {self.init.timm}: {layer}: {what} is not in the cnn space")

    def conv(self, m: nn.Module, name: str, kernel: int | None = None, depthwise: bool = False) -> nn.Conv2d:
        if type(m) is not nn.Conv2d:
            raise self.refuse(name, f"a {type(m).__name__} (e.g. the 'same' padding of tf_ models)")
        k = m.kernel_size[0]
        if m.kernel_size != (k, k) or m.padding != (k // 2, k // 2) or m.dilation != (1, 1) or m.stride[0] != m.stride[1]:
            raise self.refuse(name, f"a {m.kernel_size} convolution with padding {m.padding}, dilation {m.dilation}")
        if m.bias is not None:
            raise self.refuse(name, "a convolution bias")
        if kernel is not None and k != kernel:
            raise self.refuse(name, f"a {k}x{k} kernel here (the space has {kernel}x{kernel})")
        groups = m.in_channels if depthwise else 1
        if m.groups != groups or (depthwise and m.out_channels != m.in_channels):
            raise self.refuse(name, f"a convolution with {m.groups} groups here")
        return m

    def norm(self, m: nn.Module, name: str, act: bool) -> None:
        if not isinstance(m, nn.BatchNorm2d) or not m.affine or not m.track_running_stats:
            raise self.refuse(name, f"a {type(m).__name__} normalization")
        if m.eps != 1e-5:
            raise self.refuse(name, f"batch-norm eps {m.eps:g} (the space's is 1e-5)")
        activation = type(getattr(m, "act", nn.Identity()))
        if act and activation is not nn.ReLU6:
            raise self.refuse(name, f"activation {activation.__name__}")
        if not act and activation is not nn.Identity:
            raise self.refuse(name, f"activation {activation.__name__} after a projection")
        if type(getattr(m, "drop", nn.Identity())) is not nn.Identity:
            raise self.refuse(f"{name}.drop", "dropout after a norm")

    def plain(self, block: nn.Module, name: str) -> None:
        """Neither anti-aliasing nor squeeze-excite."""
        if type(getattr(block, "aa", nn.Identity())) is not nn.Identity:
            raise self.refuse(f"{name}.aa", "anti-aliased downsampling")
        if type(getattr(block, "se", nn.Identity())) is not nn.Identity:
            raise self.refuse(f"{name}.se", "squeeze-excite")

    def block(self, block: nn.Module, name: str) -> tuple[int, int, int, int, int]:
        """(in, mid, out, kernel, stride) of one block."""
        if getattr(block, "conv_s2d", None) is not None:
            raise self.refuse(f"{name}.conv_s2d", "space-to-depth")
        if type(block) is DepthwiseSeparableConv:
            dw = self.conv(block.conv_dw, f"{name}.conv_dw", depthwise=True)
            self.norm(block.bn1, f"{name}.bn1", act=True)
            self.plain(block, name)
            pw = self.conv(block.conv_pw, f"{name}.conv_pw", kernel=1)
            self.norm(block.bn2, f"{name}.bn2", act=False)
            cin, mid, cout = dw.in_channels, dw.in_channels, pw.out_channels
        elif type(block) is InvertedResidual:
            pw = self.conv(block.conv_pw, f"{name}.conv_pw", kernel=1)
            if pw.out_channels == pw.in_channels:
                raise self.refuse(f"{name}.conv_pw", "an expansion at ratio 1 (the space skips it at ratio 1)")
            self.norm(block.bn1, f"{name}.bn1", act=True)
            dw = self.conv(block.conv_dw, f"{name}.conv_dw", depthwise=True)
            self.norm(block.bn2, f"{name}.bn2", act=True)
            self.plain(block, name)
            pwl = self.conv(block.conv_pwl, f"{name}.conv_pwl", kernel=1)
            self.norm(block.bn3, f"{name}.bn3", act=False)
            cin, mid, cout = pw.in_channels, pw.out_channels, pwl.out_channels
        else:
            raise self.refuse(name, f"a {type(block).__name__} block (the space's is an inverted residual)")
        if mid % cin:
            raise self.refuse(name, f"{mid} expanded channels from {cin} (expand ratio {mid / cin:g})")
        stride = dw.stride[0]
        if block.has_skip != (stride == 1 and cin == cout):
            raise self.refuse(name, "a block whose residual differs from 'wherever the shapes allow'")
        return cin, mid, cout, dw.kernel_size[0], stride


def read_structure(model: nn.Module, init: TimmInit) -> CNNStructure:
    """What of the timm model the space must reproduce, or the first layer it cannot."""
    walk = _Walk(init)
    if not all(hasattr(model, a) for a in ("conv_stem", "bn1", "blocks", "conv_head", "global_pool")):
        raise ConfigError(f"space.init.timm: {init.timm} is a timm {type(model).__name__}; the cnn space starts from "
                          "MobileNetV2 / EfficientNet-Lite-style networks (timm's EfficientNet: mobilenetv2_*, "
                          "efficientnet_lite*)")
    stem = walk.conv(model.conv_stem, "conv_stem", kernel=3)
    walk.norm(model.bn1, "bn1", act=True)
    stages, c = [], stem.out_channels
    for i, stage in enumerate(model.blocks):
        first = None
        for j, block in enumerate(stage):
            name = f"blocks.{i}.{j}"
            cin, mid, cout, kernel, stride = walk.block(block, name)
            shape = (kernel, mid // cin)
            if first is None:
                first = (shape, stride, cout)
            elif stride != 1:
                raise walk.refuse(name, f"stride {stride} after the first block of a stage")
            elif shape != first[0]:
                raise walk.refuse(name, f"(kernel, expand ratio) {shape} differing from blocks.{i}.0's {first[0]} "
                                  "(the space has one list of each per stage)")
            c = cout
        if first is not None:
            stages.append(StageStructure(c, first[1], len(stage), *first[0]))
    if hasattr(model, "norm_head") or hasattr(model, "act2"):
        raise walk.refuse("conv_head", "a head convolution after the pooling (MobileNetV3's)")
    head = walk.conv(model.conv_head, "conv_head", kernel=1) if type(model.conv_head) is not nn.Identity else None
    if head is None:
        raise walk.refuse("conv_head", "a network without a head convolution")
    walk.norm(model.bn2, "bn2", act=True)
    if getattr(model.global_pool, "pool_type", None) != "avg":
        raise walk.refuse("global_pool", f"pooling {getattr(model.global_pool, 'pool_type', model.global_pool)!r}")
    if not stages:
        raise walk.refuse("blocks", "a network without blocks")
    return CNNStructure(stem.in_channels, stem.out_channels, stem.stride[0], head.out_channels, tuple(stages))


def cnn_structure(init: TimmInit) -> CNNStructure:
    """The structure of ``init``'s architecture (built once per process and architecture)."""
    return structure(init, read_structure)


def _derived_stage(s: StageStructure) -> dict[str, Any]:
    return {"channels": s.channels, "stride": s.stride, "depth": scaled_choices(s.depth),
            "expand_ratios": scaled_choices(s.expand), "kernel_sizes": odd_kernels(s.kernel)}


def settle_cnn_config(raw: Any) -> Any:
    """The raw ``space:`` section with what ``init`` implies filled in (see the module docstring)."""
    return settle_config(raw, _settle)


def _settle(raw: dict[str, Any], init: TimmInit) -> None:
    s = cnn_structure(init)
    settle = Settle(raw, init)
    settle.fixed("stem_channels", s.stem_channels, "stem width")
    settle.fixed("stem_stride", s.stem_stride, "stem stride")
    settle.fixed("head_channels", s.head_channels, "head width")
    settle.float_model()
    settle.leads("op_types", "mult", f"the largest subnet is {init.timm}, whose convolutions multiply")
    settle.includes("prune_rates", 0.0, f"the largest subnet is {init.timm}, unpruned")
    stages = raw.get("stages")
    if stages is None:
        raw["stages"] = [_derived_stage(stage) for stage in s.stages]
        return
    if not isinstance(stages, list):
        return  # the config model names what is wrong with it
    if len(stages) != len(s.stages):
        raise ConfigError(f"space.stages: the pretrained {init.timm} has {len(s.stages)} stages (blocks.0 to "
                          f"blocks.{len(s.stages) - 1}), the config lists {len(stages)}; leave the key out or null "
                          "to take them from the model")
    raw["stages"] = [dict(node) if isinstance(node, dict) else node for node in stages]
    for i, (node, stage) in enumerate(zip(raw["stages"], s.stages)):
        if not isinstance(node, dict):
            continue
        derived = _derived_stage(stage)
        sub = Settle(node, init, f"space.stages.{i}")
        sub.fixed("channels", stage.channels, f"blocks.{i} output width")
        sub.fixed("stride", stage.stride, f"blocks.{i} stride")
        sub.largest("depth", stage.depth, f"blocks.{i} depth", derived["depth"])
        sub.largest("expand_ratios", stage.expand, f"blocks.{i} expand ratio", derived["expand_ratios"])
        sub.largest("kernel_sizes", stage.kernel, f"blocks.{i} kernel", derived["kernel_sizes"])


def _names(model: nn.Module) -> dict[str, str]:
    """Supernet tensor -> timm tensor: stem, each block's layers (of the reference operator), head."""
    names: dict[str, str] = {}

    def layer(ours: str, conv: str, bn: str) -> None:
        names[f"{ours}.weight"] = f"{conv}.weight"
        for key in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            names[f"{ours}.bn.{key}"] = f"{bn}.{key}"

    layer("stem", "conv_stem", "bn1")
    for i, stage in enumerate(model.blocks):
        for j, block in enumerate(stage):
            ours, theirs = f"stages.{i}.{j}.cores.mult", f"blocks.{i}.{j}"
            if type(block) is DepthwiseSeparableConv:
                layer(f"{ours}.depthwise", f"{theirs}.conv_dw", f"{theirs}.bn1")
                layer(f"{ours}.project", f"{theirs}.conv_pw", f"{theirs}.bn2")
            else:
                layer(f"{ours}.expand", f"{theirs}.conv_pw", f"{theirs}.bn1")
                layer(f"{ours}.depthwise", f"{theirs}.conv_dw", f"{theirs}.bn2")
                layer(f"{ours}.project", f"{theirs}.conv_pwl", f"{theirs}.bn3")
    layer("head", "conv_head", "bn2")
    names.update({"classifier.fc.weight": "classifier.weight", "classifier.fc.bias": "classifier.bias"})
    return names


def _untrained(key: str) -> bool:
    """Quantizer steps, and the weights of operator types other than the reference multiply."""
    return ".wq." in key or ".aq." in key or (".cores." in key and ".cores.mult." not in key)


def load_cnn_pretrained(supernet: nn.Module, space: Any) -> dict[str, Any] | None:
    """The ``load_pretrained`` hook of the cnn space: start the supernet from ``space.init``."""
    init = space.config.init
    if init is None:
        return None
    if space.input_shape[0] != cnn_structure(init).in_chans:
        raise ConfigError(f"space.init.kwargs.in_chans: {init.timm} takes {cnn_structure(init).in_chans}-channel "
                          f"images, the data has {space.input_shape[0]} channel(s)")
    return start_from(supernet, space, init, names=_names, untrained=_untrained,
                      classifier=lambda net: net.classifier.fc)
