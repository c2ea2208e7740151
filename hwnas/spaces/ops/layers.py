"""Fixed layers: what an exported subnet is made of, and what the profiler times.

A :class:`QConvBNAct` holds its convolution weights already quantized (float values on the
quantization grid, or exact powers of two for a shift layer), so inference runs no quantizer for
weights; inputs are quantized by a stored :class:`~hwnas.spaces.ops.quant.ActQuant` when the
activation bit-width is below 32. An adder layer runs AdderNet's convolution, which needs no
training code.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from hwnas.spaces.ops import lm_layers, vit_layers as v
from hwnas.spaces.ops.adder import AdderConv2d
from hwnas.spaces.ops.quant import FLOAT_BITS, ActQuant

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu6": nn.ReLU6, "relu": nn.ReLU, "none": nn.Identity}


def make_activation(name: str) -> nn.Module:
    return ACTIVATIONS[name]()


class QConvBNAct(nn.Sequential):
    """Input quantizer -> convolution -> batch norm -> activation, with fixed shapes and bits.

    A :class:`~torch.nn.Sequential` of named children (``quant``, ``conv``, ``bn``, ``act``) that
    holds only the steps this layer runs: no ``quant`` when the inputs are float, no ``act`` for a
    linear projection. An exported model is then the same chain of modules a hand-written
    PyTorch model would be: ``nn.Identity`` placeholders and a ``forward`` that reaches each child
    through ``nn.Module.__getattr__`` cost about 10 % of a small CNN's eager latency (measured by
    ``experiments/bench_export.py``). The state-dict keys (``quant.step``, ``conv.weight``,
    ``bn.*``) and attribute access (``layer.conv``) are those of named attributes.
    """

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1,
                 wbits: int = FLOAT_BITS, abits: int = FLOAT_BITS, act: str = "relu6",
                 act_signed: bool = True, op: str = "mult"):
        steps: dict[str, nn.Module] = {}
        if abits < FLOAT_BITS:
            steps["quant"] = ActQuant(abits, act_signed)
        if op == "adder":
            steps["conv"] = AdderConv2d(cin, cout, kernel, stride, kernel // 2, groups)
        else:  # mult, and shift, whose weights are stored as their exact powers of two
            steps["conv"] = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False)
        steps["bn"] = nn.BatchNorm2d(cout)
        if act != "none":
            steps["act"] = make_activation(act)
        super().__init__(OrderedDict(steps))
        self.wbits, self.abits, self.op = int(wbits), int(abits), op


class ResidualAdd(nn.Module):
    """The residual addition as a module of its own, so the profiler can time it like any other op."""

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x + y


class InvertedResidual(nn.Module):
    """MobileNetV2 block: optional 1x1 expand, depthwise kxk, 1x1 project, residual when shapes match."""

    def __init__(self, spec: dict[str, Any]):
        super().__init__()
        layers = spec["layers"]
        self.expand = QConvBNAct(**layers["expand"]) if "expand" in layers else None  # expand ratio 1: none
        self.depthwise = QConvBNAct(**layers["depthwise"])
        self.project = QConvBNAct(**layers["project"])
        self.residual = bool(spec["residual"])
        self.add = ResidualAdd() if self.residual else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.depthwise(x if self.expand is None else self.expand(x)))
        return self.add(x, out) if self.add is not None else out


class ClassifierHead(nn.Module):
    """Global average pooling and a linear classifier (kept in float, as is common practice)."""

    def __init__(self, cin: int, num_classes: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(x), 1))


def op_modules(model: nn.Module) -> list[nn.Module]:
    """The modules of a fixed model that each execute one op of its op graph, in graph order."""

    kinds = (QConvBNAct, ResidualAdd, ClassifierHead, v.QLinear, v.TokenLayerNorm, v.AttentionCore,
             v.TokenSelect, v.PatchEmbed, v.TokenClassifier, *lm_layers.OP_MODULES)
    return [m for m in model.modules() if isinstance(m, kinds)]
