"""Elastic layers: one weight tensor at the largest size, sliced for the active subnet.

As in Once-for-All, a layer keeps the largest convolution and batch norm; the active subnet uses
the first ``cout`` output and ``cin`` input channels (or, when channels are pruned, the channels
an index names) and the centre ``k x k`` crop of the largest kernel. The layer's operator type is
fixed at construction: ``mult`` (an ordinary convolution with LSQ-quantized weights), ``shift``
(power-of-two weights, DeepShift-Q) or ``adder`` (AdderNet's negative L1 distance).
:meth:`ElasticQConvBNAct.extract` copies exactly the weights the forward pass uses into a fixed
:class:`~hwnas.spaces.ops.layers.QConvBNAct`, so what is trained, costed and exported is one
computation.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hwnas.errors import ArchError
from hwnas.spaces.ops.adder import adder_conv2d
from hwnas.spaces.ops.layers import QConvBNAct, make_activation
from hwnas.spaces.ops.quant import FLOAT_BITS, ElasticLSQ, fake_quantize, qrange
from hwnas.spaces.ops.shift import shift_quantize, shift_weight

OP_TYPES = ("mult", "shift", "adder")


class ElasticQConvBNAct(nn.Module):
    """Quantize input -> conv (elastic channels, kernel, bits) -> elastic BN -> activation."""

    def __init__(self, max_cin: int, max_cout: int, kernel_choices: tuple[int, ...], stride: int,
                 depthwise: bool, wbit_choices: tuple[int, ...], abit_choices: tuple[int, ...],
                 act: str, act_signed: bool, op: str = "mult", pow2_scales: bool = False):
        super().__init__()
        if op not in OP_TYPES:
            raise ArchError(f"unknown operator type {op!r}; known: {list(OP_TYPES)}")
        self.op = op
        self.max_cin, self.max_cout = max_cin, max_cout
        self.kernel_choices = tuple(sorted(kernel_choices))
        self.max_kernel = max(self.kernel_choices)
        self.stride, self.depthwise, self.act_name, self.act_signed = stride, depthwise, act, act_signed
        in_per_group = 1 if depthwise else max_cin
        self.weight = nn.Parameter(torch.empty(max_cout, in_per_group, self.max_kernel, self.max_kernel))
        nn.init.kaiming_normal_(self.weight, mode="fan_out")
        self.bn = nn.BatchNorm2d(max_cout)
        self.wq = ElasticLSQ(wbit_choices, signed=True, pow2=pow2_scales)
        self.aq = ElasticLSQ(abit_choices, signed=act_signed, pow2=pow2_scales)
        self.act = make_activation(act)
        self.set_active(max_cin, max_cout, self.max_kernel, max(wbit_choices), max(abit_choices))

    # -- active configuration ----------------------------------------------------------------
    def set_active(self, cin: int, cout: int, kernel: int, wbits: int, abits: int,
                   in_index: torch.Tensor | None = None, out_index: torch.Tensor | None = None) -> None:
        """Activate a configuration; ``in_index`` / ``out_index`` pick channels instead of the first ones."""
        if self.depthwise and cin != cout:
            raise ArchError(f"depthwise layer needs cin == cout, got {cin} and {cout}")
        if not (0 < cin <= self.max_cin and 0 < cout <= self.max_cout):
            raise ArchError(f"channels {cin}->{cout} exceed the layer's {self.max_cin}->{self.max_cout}")
        if kernel not in self.kernel_choices:
            raise ArchError(f"kernel {kernel} is not one of {list(self.kernel_choices)}")
        if wbits not in self.wq.bit_choices or abits not in self.aq.bit_choices:
            raise ArchError(f"bits w{wbits}/a{abits} not among w{list(self.wq.bit_choices)} "
                            f"/ a{list(self.aq.bit_choices)}")
        self.cin, self.cout, self.kernel = cin, cout, kernel
        self.in_index = None if self.depthwise else in_index
        self.out_index = out_index
        self.wq.active_bits, self.aq.active_bits = wbits, abits

    def active_weight(self) -> torch.Tensor:
        """The float weights the active subnet uses (before weight quantization)."""
        # Dimensions at their full size are not sliced at all: a slice's backward writes its
        # gradient into a zero tensor of the full size, work the largest subnet should not pay.
        w = self.weight
        if self.kernel != self.max_kernel:
            start = (self.max_kernel - self.kernel) // 2
            w = w[:, :, start:start + self.kernel, start:start + self.kernel]
        if self.out_index is not None:
            w = w.index_select(0, self.out_index)
        elif self.cout != self.max_cout:
            w = w[: self.cout]
        if self.depthwise:
            return w
        if self.in_index is not None:
            return w.index_select(1, self.in_index)
        return w if self.cin == self.max_cin else w[:, : self.cin]

    def _transform_weight(self, w: torch.Tensor) -> torch.Tensor:
        if self.op == "shift":
            return shift_weight(w, self.wq.active_bits)
        return self.wq(w)

    # -- computation -----------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.aq(x)
        w = self._transform_weight(self.active_weight())
        groups = self.cout if self.depthwise else 1
        if self.op == "adder":
            y = adder_conv2d(x, w, self.stride, self.kernel // 2, groups)
        else:
            y = F.conv2d(x, w, None, self.stride, self.kernel // 2, 1, groups)
        return self.act(self._batch_norm(y))

    def _bn_params(self) -> tuple[torch.Tensor, ...]:
        bn, idx = self.bn, self.out_index
        if idx is None:
            if self.cout == self.max_cout:
                return bn.running_mean, bn.running_var, bn.weight, bn.bias
            c = self.cout
            return bn.running_mean[:c], bn.running_var[:c], bn.weight[:c], bn.bias[:c]
        return (bn.running_mean[idx], bn.running_var[idx], bn.weight.index_select(0, idx),
                bn.bias.index_select(0, idx))

    def _batch_norm(self, y: torch.Tensor) -> torch.Tensor:
        bn = self.bn
        mean, var, weight, bias = self._bn_params()
        factor = 0.0
        if self.training:
            bn.num_batches_tracked.add_(1)
            factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
        out = F.batch_norm(y, mean, var, weight, bias, self.training, factor, bn.eps)
        if self.training and self.out_index is not None:  # gathered copies: write the update back
            with torch.no_grad():
                bn.running_mean[self.out_index] = mean
                bn.running_var[self.out_index] = var
        return out

    # -- export ----------------------------------------------------------------------------
    @torch.no_grad()
    def quantized_weight(self) -> torch.Tensor:
        w = self.active_weight()
        bits = self.wq.active_bits
        if self.op == "shift":
            return shift_quantize(w, bits)
        if bits >= FLOAT_BITS:
            return w.clone()
        qn, qp = qrange(bits, True)
        return fake_quantize(w, self.wq.step(bits), qn, qp)

    def layer_spec(self) -> dict:
        """Arguments of the fixed layer equal to the active configuration."""
        return {"cin": self.cin, "cout": self.cout, "kernel": self.kernel, "stride": self.stride,
                "groups": self.cout if self.depthwise else 1, "wbits": self.wq.active_bits,
                "abits": self.aq.active_bits, "act": self.act_name, "act_signed": self.act_signed,
                "op": self.op}

    @torch.no_grad()
    def extract(self) -> QConvBNAct:
        layer = QConvBNAct(**self.layer_spec())
        layer.conv.weight.copy_(self.quantized_weight())
        mean, var, weight, bias = self._bn_params()
        layer.bn.weight.copy_(weight)
        layer.bn.bias.copy_(bias)
        layer.bn.running_mean.copy_(mean)
        layer.bn.running_var.copy_(var)
        layer.bn.eps = self.bn.eps
        if self.aq.active_bits < FLOAT_BITS:
            layer.quant.step.copy_(self.aq.step(self.aq.active_bits).detach())
        return layer



def reset_bn_for_recalibration(module: nn.Module) -> None:
    """Zero the running statistics and switch BN to a cumulative average (momentum None)."""
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None


def restore_bn_momentum(module: nn.Module, momentum: float = 0.1) -> None:
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = momentum
