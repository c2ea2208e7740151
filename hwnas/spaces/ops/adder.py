"""Adder convolution (AdderNet, Chen et al., CVPR 2020).

An adder layer replaces the cross-correlation of a convolution by the negative L1 distance
between each input patch and each filter::

    out[n, o, i, j] = -sum_{c, kh, kw} |x_patch[n, c, kh, kw] - w[o, c, kh, kw]|

so inference needs additions and subtractions only. The true gradients of |.| are signs, which
train poorly; AdderNet's backward instead uses

* for the weights, the full-precision difference ``x - w`` (paper eq. 5), and
* for the input, ``HardTanh(w - x)`` (eq. 6): the difference clipped to [-1, 1], so that the
  gradient passed to earlier layers cannot explode through the chain of layers,

and rescales each layer's weight gradient to a norm of ``eta * sqrt(k)`` (eq. 12-13, the
"adaptive learning rate"), because adder-layer gradients are far smaller than a convolution's.

The forward value is computed by one function, :func:`_adder_forward`, in training, in evaluation
and in the exported :class:`AdderConv2d`, so they agree to the last bit. There is no fused adder
kernel in PyTorch, so the forward and the input gradient are computed with element-wise tensor
operations over bounded chunks (see :data:`max_chunk_elements`): the naive
N x Cout x (Cin*k*k) x (Ho*Wo) difference tensor would need gigabytes for ordinary layer sizes.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

# Element count of the largest temporary tensor the chunked forward / backward create (2^19
# float32 = 2 MiB), reused by every chunk of a call. Read at every call, so tests may monkeypatch
# it. 2 MiB keeps one adder layer's forward + backward within about 2x the peak memory of the same
# convolution's (x 8x32x16x16, w 64x32x3x3) and is about as fast as larger chunks (2^20..2^22
# are within ~15%, 2^22 often slower as its buffer falls out of the caches); much smaller chunks
# are slower from per-op overhead (2^16: ~2x).
max_chunk_elements = 2**19

_EPS = 1e-12  # keeps the adaptive scaling finite when a weight gradient is exactly zero


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(v, int):
        return v, v
    a, b = v
    return int(a), int(b)


def _spans(size: int, block: int) -> Iterator[slice]:
    for start in range(0, size, block):
        yield slice(start, min(start + block, size))


def _blocks(sizes: Sequence[int], order: Sequence[int], limit: int) -> list[int]:
    """Block lengths per dimension whose product is at most ``limit`` (when possible).

    Dimensions are shrunk in ``order`` until the product fits; a shrunk dimension is split into
    equal blocks (the last one never much shorter than the others).
    """
    blocks = list(sizes)
    for d in order:
        total = math.prod(blocks)
        if total <= limit:
            break
        other = total // blocks[d]
        per = max(1, limit // other)
        count = -(-sizes[d] // per)
        blocks[d] = -(-sizes[d] // count)
    return blocks


def _chunks(sizes: tuple[int, ...], blocks: Sequence[int], kh: int, kw: int) -> Iterator[tuple]:
    """(kernel row, kernel column, then batch, group, row, in-channel, out-channel spans): every
    chunk of the (n, g, o, c, rows) work of each kernel offset, one shared loop for forward and
    backward."""
    n, g, og, cg, ho = sizes
    bn, bg, bo, bc, br = blocks
    for i in range(kh):
        for j in range(kw):
            for sn in _spans(n, bn):
                for sg in _spans(g, bg):
                    for sr in _spans(ho, br):
                        for sc in _spans(cg, bc):
                            for so in _spans(og, bo):
                                yield i, j, sn, sg, sr, sc, so


def _tap(xp: torch.Tensor, i: int, j: int, out_hw: tuple[int, int], stride: tuple[int, int]):
    """The (N, C, Ho, Wo) strided view of the padded input seen by kernel offset (i, j).

    Iterating over the k*k offsets with such views gives every patch element without an unfolded
    (k*k times larger) copy of the input; for the gradient, the same views of a zero buffer
    receive each offset's contribution, which is col2im (``F.fold``) with overlaps summed.
    """
    (ho, wo), (sh, sw) = out_hw, stride
    return xp[:, :, i: i + (ho - 1) * sh + 1: sh, j: j + (wo - 1) * sw + 1: sw]


def _scratch(buffer: torch.Tensor, xs: torch.Tensor, ws: torch.Tensor) -> torch.Tensor:
    """A view of the chunk buffer shaped like ``xs - ws`` (n, g, o, c, r, Wo).

    Every chunk is written into one buffer allocated per call: allocating and freeing a
    MiB-sized tensor per chunk costs page faults (large blocks go back to the OS), and if the
    next chunk were allocated before the previous one is freed the peak would double.
    """
    shape = (xs.shape[0], xs.shape[1], ws.shape[2], xs.shape[3], xs.shape[4], xs.shape[5])
    return buffer[: math.prod(shape)].view(shape)


def _geometry(x: torch.Tensor, w: torch.Tensor, stride, padding, groups: int):
    if x.dim() != 4 or w.dim() != 4:
        raise ValueError(f"adder_conv2d expects 4-d x and w, got {tuple(x.shape)}, {tuple(w.shape)}")
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    if groups < 1 or c != cg * groups or o % groups:
        raise ValueError(
            f"channels do not match groups={groups}: x has {c}, w is {tuple(w.shape)}")
    (sh, sw), (ph, pw) = _pair(stride), _pair(padding)
    ho, wo = (h + 2 * ph - kh) // sh + 1, (wd + 2 * pw - kw) // sw + 1
    if ho < 1 or wo < 1:
        raise ValueError(f"kernel {kh}x{kw} larger than padded input {h + 2 * ph}x{wd + 2 * pw}")
    return (sh, sw), (ph, pw), (ho, wo)


@torch.no_grad()
def _adder_forward(x: torch.Tensor, w: torch.Tensor, stride=1, padding=0, groups: int = 1):
    """The adder layer's forward value, without gradients (training, evaluation and export).

    For each kernel offset the input view is compared with that offset's filter column in chunks
    of (batch, group, out-channel, in-channel, output-row) blocks; each chunk's |difference| is
    reduced over its in-channels at once and subtracted from the output.
    """
    (sh, sw), (ph, pw), (ho, wo) = _geometry(x, w, stride, padding, groups)
    n, c = x.shape[:2]
    o, cg, kh, kw = w.shape
    g, og = groups, o // groups
    xp = F.pad(x, (pw, pw, ph, ph)) if ph or pw else x
    wg = w.reshape(g, og, cg, kh, kw)
    out = x.new_zeros(n, g, og, ho, wo)
    # Temporary dims (n, g, o, c, row) x Wo; split output channels first (they only partition
    # the output), the reduced in-channels last (their partial sums cost extra additions).
    blocks = _blocks((n, g, og, cg, ho), (2, 1, 0, 4, 3), max(1, max_chunk_elements // wo))
    scratch = x.new_empty(math.prod(blocks) * wo)
    views = {}
    for i, j, sn, sg, sr, sc, so in _chunks((n, g, og, cg, ho), blocks, kh, kw):
        if (i, j) not in views:
            views = {(i, j): _tap(xp, i, j, (ho, wo), (sh, sw)).unflatten(1, (g, cg))}
        xs = views[(i, j)][sn, sg, sc, sr].unsqueeze(2)  # (n, g, 1, c, r, Wo)
        ws = wg[sg, so, sc, i, j][None, :, :, :, None, None]
        diff = torch.sub(xs, ws, out=_scratch(scratch, xs, ws))
        diff.abs_()
        out[sn, sg, so, sr].sub_(diff.sum(dim=3))
    return out.reshape(n, o, ho, wo)


@torch.no_grad()
def _adder_grad_input(x, w, grad_out, stride, padding, groups: int) -> torch.Tensor:
    """dL/dx: sum over o of grad_out * HardTanh(w - x_patch), folded back onto x (col2im)."""
    (sh, sw), (ph, pw), (ho, wo) = _geometry(x, w, stride, padding, groups)
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    g, og = groups, o // groups
    xp = F.pad(x, (pw, pw, ph, ph)) if ph or pw else x
    gxp = x.new_zeros(xp.shape)
    wg = w.reshape(g, og, cg, kh, kw)
    gout = grad_out.reshape(n, g, og, ho, wo)
    # Here the out-channels are reduced: split in-channels first and out-channels last.
    blocks = _blocks((n, g, og, cg, ho), (3, 1, 0, 4, 2), max(1, max_chunk_elements // wo))
    scratch = x.new_empty(math.prod(blocks) * wo)
    views = {}
    for i, j, sn, sg, sr, sc, so in _chunks((n, g, og, cg, ho), blocks, kh, kw):
        if (i, j) not in views:
            views = {(i, j): (_tap(xp, i, j, (ho, wo), (sh, sw)).unflatten(1, (g, cg)),
                              _tap(gxp, i, j, (ho, wo), (sh, sw)).unflatten(1, (g, cg)))}
        xv, gv = views[(i, j)]
        xs = xv[sn, sg, sc, sr].unsqueeze(2)  # (n, g, 1, c, r, Wo)
        ws = wg[sg, so, sc, i, j][None, :, :, :, None, None]
        ht = torch.sub(ws, xs, out=_scratch(scratch, xs, ws))
        ht.clamp_(-1.0, 1.0)
        ht.mul_(gout[sn, sg, so, sr].unsqueeze(3))
        gv[sn, sg, sc, sr] += ht.sum(dim=2)  # a view: offsets never overlap within one tap
    if ph or pw:
        return gxp[:, :, ph: ph + h, pw: pw + wd].contiguous()
    return gxp


def _adder_grad_weight(x, w, grad_out, stride, padding, groups: int) -> torch.Tensor:
    """dL/dw = sum over n, i, j of grad_out * (x_patch - w), AdderNet's full-precision gradient.

    The sum splits into ``sum grad_out * x_patch`` -- exactly a convolution's weight gradient,
    computed by PyTorch's own kernel without any chunking -- minus ``w * sum grad_out`` (zero
    padding included, as in the forward). The split can lose precision when |x| >> |x - w|; the
    inputs of adder layers are batch-normalized, so that cancellation stays mild.
    """
    grad_w = torch.nn.grad.conv2d_weight(x, w.shape, grad_out, _pair(stride), _pair(padding),
                                         1, groups)
    grad_w -= w * grad_out.sum(dim=(0, 2, 3)).reshape(-1, 1, 1, 1)
    return grad_w


class _AdderConv2dFunction(torch.autograd.Function):
    """Forward equals :func:`_adder_forward`; backward is AdderNet's (eq. 5, 6, 12-13).

    Only x and w are saved: the backward recomputes the differences chunk by chunk, so no
    output-sized (let alone patch-sized) tensor outlives the forward.
    """

    @staticmethod
    def forward(ctx, x, w, stride, padding, groups, eta):  # type: ignore[override]
        ctx.save_for_backward(x, w)
        ctx.stride, ctx.padding, ctx.groups, ctx.eta = stride, padding, groups, eta
        return _adder_forward(x, w, stride, padding, groups)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):  # type: ignore[override]
        x, w = ctx.saved_tensors
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = _adder_grad_input(x, w, grad_out, ctx.stride, ctx.padding, ctx.groups)
        if ctx.needs_input_grad[1]:
            grad_w = _adder_grad_weight(x, w, grad_out, ctx.stride, ctx.padding, ctx.groups)
            if ctx.eta:
                # Eq. 12-13: alpha = eta * sqrt(k) / ||grad_w||_2 scales the layer's learning
                # rate; applying it to the gradient is the same update for plain SGD.
                scale = ctx.eta * math.sqrt(grad_w.numel()) / (grad_w.norm() + _EPS)
                grad_w *= scale
        return grad_x, grad_w, None, None, None, None


def adder_conv2d(x: torch.Tensor, w: torch.Tensor, stride: int | Sequence[int] = 1,
                 padding: int | Sequence[int] = 0, groups: int = 1,
                 eta: float | None = 0.1) -> torch.Tensor:
    """Adder convolution of x (N, Cin, H, W) with w (Cout, Cin/groups, kh, kw); no bias.

    Zero padding, stride and any ``groups`` dividing both channel counts (1 and depthwise
    included); no dilation. The weight gradient is rescaled to L2 norm ``eta * sqrt(w.numel())``
    per call, which is AdderNet's layer-wise adaptive learning rate (eq. 12-13) folded into the
    gradient; ``eta=None`` or 0 leaves the raw eq. 5 gradient (for gradient checks). The temporary
    memory is bounded by :data:`max_chunk_elements` in forward and backward.
    """
    stride, padding = _pair(stride), _pair(padding)
    if torch.is_grad_enabled() and (x.requires_grad or w.requires_grad):
        return _AdderConv2dFunction.apply(x, w, stride, padding, int(groups), eta)
    return _adder_forward(x, w, stride, padding, int(groups))


def adder_conv2d_reference(x: torch.Tensor, w: torch.Tensor, stride: int | Sequence[int] = 1,
                           padding: int | Sequence[int] = 0, groups: int = 1) -> torch.Tensor:
    """The adder forward by its definition, one output position and channel at a time.

    Slow (Python loops over Cout * Ho * Wo); it exists to check :func:`adder_conv2d` and to read.
    """
    (sh, sw), (ph, pw), (ho, wo) = _geometry(x, w, stride, padding, groups)
    o, cg, kh, kw = w.shape
    og = o // groups
    xp = F.pad(x, (pw, pw, ph, ph))
    out = x.new_zeros(x.shape[0], o, ho, wo)
    for oc in range(o):
        g = oc // og
        for i in range(ho):
            for j in range(wo):
                patch = xp[:, g * cg: (g + 1) * cg, i * sh: i * sh + kh, j * sw: j * sw + kw]
                out[:, oc, i, j] = -(patch - w[oc]).abs().sum(dim=(1, 2, 3))
    return out


class AdderConv2d(nn.Module):
    """A fixed adder convolution layer (no bias), as the exported model and the profiler run it.

    The weight is initialized like ``nn.Conv2d``'s (Kaiming-uniform with a = sqrt(5)); AdderNet
    follows each adder layer with batch normalization, which absorbs the outputs' large negative
    offset. ``eta`` only affects training (the weight gradient's scaling).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | Sequence[int],
                 stride: int | Sequence[int] = 1, padding: int | Sequence[int] = 0,
                 groups: int = 1, eta: float | None = 0.1):
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"groups={groups} must divide {in_channels} and {out_channels}")
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size, self.stride, self.padding = (_pair(kernel_size), _pair(stride),
                                                       _pair(padding))
        self.groups, self.eta = int(groups), eta
        self.weight = nn.Parameter(
            torch.empty(out_channels, in_channels // groups, *self.kernel_size))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return adder_conv2d(x, self.weight, self.stride, self.padding, self.groups, self.eta)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, groups={self.groups}")
