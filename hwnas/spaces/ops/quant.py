"""Fake quantization with learned step sizes (LSQ, Esser et al., ICLR 2020).

A b-bit quantizer maps x to ``round(clamp(x / s, -Qn, Qp)) * s``: 2^b levels when signed
(Qn = 2^(b-1), Qp = 2^(b-1) - 1), 2^b levels from 0 when unsigned (Qn = 0, Qp = 2^b - 1). The step
size s is a parameter trained with the LSQ gradient, scaled by 1 / sqrt(numel * Qp).

The forward value is computed by one function, :func:`fake_quantize`, in training, in the
supernet's evaluation and in the exported model, so the three agree to the last bit. The supernet
keeps one step size per (layer, bit-width): weights shared across bit-widths do not fight over one
scale.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from hwnas.ir import FLOAT_BITS  # noqa: E402  (a bit-width of 32 means "not quantized")


def qrange(bits: int, signed: bool) -> tuple[int, int]:
    """(Qn, Qp): the quantized integers run from -Qn to Qp, 2^bits levels in all."""
    if signed:
        return 2 ** (bits - 1), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def fake_quantize(x: torch.Tensor, step: torch.Tensor, qn: int, qp: int) -> torch.Tensor:
    """The quantizer's forward value, without gradients (export and evaluation use this)."""
    return torch.clamp(x / step, -qn, qp).round() * step


class _LSQFunction(torch.autograd.Function):
    """Forward equals :func:`fake_quantize`; backward is LSQ's straight-through estimator."""

    @staticmethod
    def forward(ctx, x, step, qn, qp, grad_scale):  # type: ignore[override]
        v = x / step
        ctx.save_for_backward(v)
        ctx.qn, ctx.qp, ctx.grad_scale = qn, qp, grad_scale
        return torch.clamp(v, -qn, qp).round() * step

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        (v,) = ctx.saved_tensors
        inside = (v >= -ctx.qn) & (v <= ctx.qp)
        grad_x = grad_out * inside
        # d out / d step: round(v) - v inside the range, the clamp bound outside it.
        d_step = torch.where(inside, v.round() - v, torch.clamp(v, -ctx.qn, ctx.qp))
        grad_step = (grad_out * d_step).sum().reshape(1) * ctx.grad_scale
        return grad_x, grad_step, None, None, None


def lsq(x: torch.Tensor, step: torch.Tensor, qn: int, qp: int) -> torch.Tensor:
    grad_scale = 1.0 / math.sqrt(max(x.numel(), 1) * max(qp, 1))
    return _LSQFunction.apply(x, step, qn, qp, grad_scale)


class _Pow2STE(torch.autograd.Function):
    """2 ** round(log2(step)) forward, identity backward: LSQ with power-of-two scales, so that
    rescaling is a shift in integer hardware."""

    @staticmethod
    def forward(ctx, step):  # type: ignore[override]
        return torch.exp2(torch.round(torch.log2(step)))

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        return grad


def pow2_step(step: torch.Tensor) -> torch.Tensor:
    return _Pow2STE.apply(step)


class ElasticLSQ(nn.Module):
    """A quantizer whose bit-width is chosen per forward, with one learned step per bit-width.

    A step size is initialized from the first tensor it sees at that bit-width (LSQ's
    2 * mean|x| / sqrt(Qp)), so a bit-width that is never trained still gets a sensible scale.
    """

    def __init__(self, bit_choices: tuple[int, ...], signed: bool, pow2: bool = False):
        super().__init__()
        self.signed, self.pow2 = signed, pow2
        self.bit_choices = tuple(sorted({int(b) for b in bit_choices}))
        low = [b for b in self.bit_choices if b < FLOAT_BITS]
        self.steps = nn.ParameterDict({f"b{b}": nn.Parameter(torch.ones(1)) for b in low})
        for b in low:
            self.register_buffer(f"init_b{b}", torch.zeros((), dtype=torch.bool))
        self.active_bits = max(self.bit_choices)

    def step(self, bits: int) -> torch.Tensor:
        """The step in use at ``bits``: the learned one (kept positive), or its power of two."""
        step = self.steps[f"b{bits}"].abs().clamp_min(1e-8)
        return pow2_step(step) if self.pow2 else step

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bits = self.active_bits
        if bits >= FLOAT_BITS:
            return x
        qn, qp = qrange(bits, self.signed)
        learned = self.steps[f"b{bits}"]
        flag = getattr(self, f"init_b{bits}")
        if not bool(flag):
            with torch.no_grad():
                init = 2 * x.detach().abs().mean() / math.sqrt(qp)
                learned.copy_(init.clamp_min(1e-6).reshape(1))
                flag.fill_(True)
        step = self.step(bits)
        if torch.is_grad_enabled() and (x.requires_grad or step.requires_grad):
            return lsq(x, step, qn, qp)
        return fake_quantize(x, step, qn, qp)


class ActQuant(nn.Module):
    """The exported (fixed) activation quantizer: a stored step and bit-width, no training code."""

    def __init__(self, bits: int, signed: bool, step: float = 1.0):
        super().__init__()
        self.bits, self.signed = int(bits), bool(signed)
        self.qn, self.qp = qrange(self.bits, self.signed)
        self.register_buffer("step", torch.tensor([float(step)]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fake_quantize(x, self.step, self.qn, self.qp)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, signed={self.signed}"
