"""Power-of-two (shift) weights (DeepShift-Q, Elhoushi et al., 2021; ShiftAddNet, You et al., 2020).

Two forms: :func:`shift_quantize` (weights in [-1, 1], for the CNN space's shift convolutions,
which a batch norm rescales) and :func:`log2_quantize` (a power-of-two scale per output row, for
the transformer's linear layers, which nothing rescales).

A shift layer's weights are ``sign(w) * 2^p`` with an integer exponent p, or exactly zero, so each
multiplication of an activation by a weight becomes a bit shift by p and a sign flip: no
multiplier is needed on the device. DeepShift-Q keeps full-precision weights during training and
rounds them to the nearest power of two in the forward pass (round in the log domain, then sign),
passing the gradient straight through both roundings.

The forward value is computed by one function, :func:`shift_quantize`, in training (through
:func:`shift_weight`), in the supernet's evaluation and in the exported model, so the three agree
to the last bit. The exported model stores the (sign, exponent) pair of :func:`shift_decompose`
beside the weights, which is what a shift kernel consumes.
"""
from __future__ import annotations

import torch

MAX_SHIFT_BITS = 8  # bit-widths above this use the 8-bit exponent range


def shift_exponent_range(bits: int) -> tuple[int, int]:
    """(p_min, p_max) of the exponents a b-bit shift weight can take; p_max is always 0.

    One bit codes the sign and b - 1 bits code the exponent, one code of which is reserved for
    zero (DeepShift-Q's ternary "sign" lets a weight be switched off). That leaves
    ``2^(b-1) - 1`` exponents, taken as ``p_min..0`` with ``p_min = -(2^(b-1) - 2)``: weights live
    in [-1, 1] (the following normalization / batch norm rescales), so there is no use for left
    shifts. b = 2 gives only p = 0, i.e. weights in {-1, 0, +1}.

    Bit-widths above 8 (including 32, "float") are capped at the 8-bit range, p_min = -126: that
    already reaches float32's smallest normal number 2^-126, so a wider exponent code would only
    add subnormal or unrepresentable magnitudes. A "32-bit shift layer" is therefore still a shift
    layer, with the finest exponent grid float32 can hold, not an unquantized one.
    """
    bits = int(bits)
    if bits < 2:
        raise ValueError(f"a shift weight needs at least 2 bits (sign + exponent), got {bits}")
    bits = min(bits, MAX_SHIFT_BITS)
    return -(2 ** (bits - 1) - 2), 0


def shift_quantize(w: torch.Tensor, bits: int) -> torch.Tensor:
    """The shift weight's forward value, without gradients (export and evaluation use this).

    ``p = round(log2|w|)`` clamped to [p_min, 0], and ``sign(w) * 2^p``. Rounding in the log
    domain puts the boundary between 2^p and 2^(p+1) at their geometric mean 2^(p+1/2), as in
    DeepShift-Q. A weight whose exponent rounds below p_min (``|w| < 2^p_min / sqrt(2)``, and
    exact zeros) becomes 0 rather than being clamped up to 2^p_min: the zero code is the nearest
    level to it. The result is exactly a power of two or zero, so a device shift reproduces it.
    """
    p_min, p_max = shift_exponent_range(bits)
    p = torch.round(torch.log2(w.abs()))  # -inf for exact zeros
    keep = p >= p_min
    p = torch.clamp(p, p_min, p_max)  # clamp maps -inf to p_min; those are zeroed by `keep`
    sign = torch.sign(w) * keep
    return torch.ldexp(sign, p)  # sign * 2^p, exact for integer p in range


class _StraightThrough(torch.autograd.Function):
    """Forward is ``quantize(w, bits)``; backward is the straight-through estimator.

    DeepShift-Q passes the gradient unchanged through both the log-domain round and the sign, so
    the full-precision weights receive the gradient computed for their power-of-two values.
    """

    @staticmethod
    def forward(ctx, w, quantize, bits):  # type: ignore[override]
        return quantize(w, bits)

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        return grad_out, None, None


def shift_weight(w: torch.Tensor, bits: int) -> torch.Tensor:
    """Training-time shift weights: the value of :func:`shift_quantize`, the gradient of identity."""
    if torch.is_grad_enabled() and w.requires_grad:
        return _StraightThrough.apply(w, shift_quantize, bits)
    return shift_quantize(w, bits)


def shift_decompose(wq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sign, exponent) int8 tensors with ``sign * 2.0**exponent == wq`` exactly (sign 0 -> 0).

    ``wq`` must be an output of :func:`shift_quantize` (zeros and signed powers of two); anything
    else raises ``ValueError``, since it could not be reconstructed. Zeros get exponent 0. Exponents
    from :func:`shift_exponent_range` fit int8 (at least -126).
    """
    mantissa, exponent = torch.frexp(wq)  # wq = mantissa * 2^exponent, |mantissa| in [0.5, 1)
    nonzero = wq != 0
    if not bool(torch.all((mantissa.abs() == 0.5) | ~nonzero)):
        raise ValueError("shift_decompose expects zeros and signed powers of two only")
    exponent = torch.where(nonzero, exponent - 1, torch.zeros_like(exponent))
    if exponent.numel() and (int(exponent.min()) < -128 or int(exponent.max()) > 127):
        raise ValueError("an exponent does not fit int8")
    return torch.sign(wq).to(torch.int8), exponent.to(torch.int8)


# -- log2 weights with a power-of-two scale per output row (P2-ViT, DeepShift) -----------------
FLOAT32_MIN_EXPONENT = -126  # 2^-126, float32's smallest normal number


def log2_quantize(w: torch.Tensor, bits: int) -> torch.Tensor:
    """Power-of-two weights for a layer with no normalization after it: ``sign(w) * 2^p`` or 0,
    with each output row's exponents in ``e + p_min .. e``.

    ``e = round(log2 max|w_row|)``, the exponent the row's largest weight rounds to, is the row's
    scale exponent, so the scale ``2^e`` is itself a power of two (the shift-friendly scale of
    P^2-ViT, Shi et al., "P^2-ViT: Power-of-Two Post-Training Quantization and Acceleration for
    Fully Quantized Vision Transformer", 2024). ``w / 2^e`` is quantized to
    :func:`shift_quantize`'s b-bit code (a sign and one of ``2^(b-1) - 1`` exponents
    ``p_min..0``, or zero), and folding the scale back in only adds ``e`` to each exponent. The
    stored weight is therefore exactly a signed power of two, and a product with it is a shift
    (DeepShift, Elhoushi et al. 2021), whatever the row's range; a kernel keeps ``e`` per row and
    the b-bit code per weight. A shift layer in the CNN space needs no scale because a batch norm
    follows it; a transformer's linear layers have none. Taking the row maximum's own level as the
    top one means no weight is clipped, and even at 2 bits (the levels ``{-2^e, 0, 2^e}``) the
    largest weight survives.

    Since ``e`` is an integer, ``round(log2|w / 2^e|) + e == round(log2|w|)``: the rounding is done
    on ``w`` directly, and no exponent exceeds ``e``. A weight whose exponent rounds below
    ``e + p_min`` becomes 0 (the nearest level, as in :func:`shift_quantize`); so does one below
    float32's smallest normal exponent, so that every weight is a normal float and its exponent
    fits an int8 (:func:`shift_decompose`).
    """
    if w.dim() != 2:
        raise ValueError(f"log2 weights are a linear layer's (out, in) matrix, got shape {tuple(w.shape)}")
    p_min, _ = shift_exponent_range(bits)
    p = torch.round(torch.log2(w.abs()))  # -inf for exact zeros
    e = p.amax(dim=1, keepdim=True).clamp_min(FLOAT32_MIN_EXPONENT)  # = round(log2 max|w_row|)
    low = torch.clamp(e + p_min, min=FLOAT32_MIN_EXPONENT)
    keep = p >= low
    p = torch.maximum(p, low)  # exponents below `low` are zeroed by `keep`
    return torch.ldexp(torch.sign(w) * keep, p)


def log2_weight(w: torch.Tensor, bits: int) -> torch.Tensor:
    """Training-time log2 weights: the value of :func:`log2_quantize`, the gradient of identity
    (straight through, as for :func:`shift_weight`)."""
    if torch.is_grad_enabled() and w.requires_grad:
        return _StraightThrough.apply(w, log2_quantize, bits)
    return log2_quantize(w, bits)
