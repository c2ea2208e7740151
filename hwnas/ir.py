"""The op-graph IR every layer speaks: an op with shapes, stride and bits, and what it costs to run.

An :class:`OpSig` is the unit a lookup table is keyed by, a predictor featurizes and an energy
model prices. A space turns its subnet spec (the same description its supernet activates and its
exporter builds) into a list of them (its registered ``op_graph``, see :mod:`hwnas.spaces.registry`),
so the costed network is the exported network. This module knows no space: it sits at the bottom
of the layers, and per-kind counting rules (:data:`COUNTERS`) are all it holds.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from functools import cached_property
from typing import Any, Iterable

FLOAT_BITS = 32  # a bit-width of 32 means "not quantized"
OPTIONAL_FIELDS = ("op", "mid")  # fields added after the first table format; their default applies
BLOCK_KINDS = ("mbconv",)  # kinds only a block-granularity graph has (see block_graph)


@dataclass(frozen=True)
class OpSig:
    """One op: kind, input shape (cin, h, w), output channels, kernel, stride, groups, bits.

    ``mid`` is used by the block-granularity kind ``mbconv`` only (an inverted-residual block:
    1x1 expand to ``mid`` channels, ``kernel`` x ``kernel`` depthwise, 1x1 project, and the
    residual add when stride is 1 and ``cin == cout``); it is 0 for every other kind.
    """

    kind: str
    cin: int
    h: int
    w: int
    cout: int
    kernel: int = 1
    stride: int = 1
    groups: int = 1
    wbits: int = FLOAT_BITS
    abits: int = FLOAT_BITS
    act: str = "none"
    act_signed: bool = True
    op: str = "mult"
    mid: int = 0

    @property
    def key(self) -> str:
        return signature_key(self.to_row())

    @property
    def out_hw(self) -> tuple[int, int]:
        if self.kind in ("conv", "dwconv"):
            pad = self.kernel // 2
            return ((self.h + 2 * pad - self.kernel) // self.stride + 1,
                    (self.w + 2 * pad - self.kernel) // self.stride + 1)
        if self.kind == "patch":
            return self.h // self.stride, self.w // self.stride
        if self.kind == "mbconv":
            return _conv_out(self.h, self.kernel, self.stride), _conv_out(self.w, self.kernel, self.stride)
        return self.h, self.w

    @cached_property
    def counts(self) -> "OpCounts":
        return COUNTERS[self.kind](self)

    @property
    def macs(self) -> int:
        """Multiply-accumulates of one sample."""
        return self.counts.macs

    @property
    def adds(self) -> int:
        """Additions that are not part of a MAC (residual adds, pooling, normalization)."""
        return self.counts.adds

    @property
    def weight_count(self) -> int:
        return self.counts.weights

    @property
    def params(self) -> int:
        return self.counts.params

    @property
    def io_elements(self) -> int:
        """Activations read and written by the op, for the memory-traffic part of its energy."""
        return self.counts.io

    @property
    def weight_storage_bits(self) -> int:
        """Bits stored per weight: a shift weight's sign and exponent fit in at most 8."""
        return min(self.wbits, 8) if self.op == "shift" else self.wbits

    @property
    def bitops(self) -> int:
        """Bit operations of the multiply-accumulates, by operator type.

        A b_w x b_a multiply counts b_w * b_a (the usual BitOps); a shift of a b_a-bit operand
        counts b_a, since its cost grows with the operand's width, not the shift amount; an adder
        MAC's subtraction counts max(b_w, b_a), the width of the add.
        """
        if self.op == "shift":
            return self.macs * self.abits
        if self.op == "adder":
            return self.macs * max(self.wbits, self.abits)
        return self.macs * self.wbits * self.abits

    def to_row(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "OpSig":
        kwargs = {}
        for f in fields(cls):
            if f.name not in row and f.name in OPTIONAL_FIELDS:
                continue
            value = row[f.name]
            if f.type in ("int",):
                value = int(value)
            elif f.type in ("bool",):
                value = value if isinstance(value, bool) else str(value).lower() in ("1", "true")
            else:
                value = str(value)
            kwargs[f.name] = value
        return cls(**kwargs)


def signature_key(row: dict[str, Any]) -> str:
    """The key string of a signature row; a field that is None (a table wildcard) prints as ``*``."""
    v = {k: "*" if row.get(k) is None else row[k] for k in ("kind", "cin", "h", "w", "cout", "kernel", "stride",
                                                             "groups", "wbits", "abits", "act", "op")}
    signed = row.get("act_signed")
    sign = "*" if signed is None else ("s" if signed else "u")
    op = "" if row.get("op", "mult") == "mult" else f"-{v['op']}"
    mid = f"-m{row['mid'] if row.get('mid') is not None else '*'}" if row.get("kind") == "mbconv" else ""
    return (f"{v['kind']}{op}-in{v['cin']}x{v['h']}x{v['w']}-out{v['cout']}{mid}-k{v['kernel']}-s{v['stride']}"
            f"-g{v['groups']}-w{v['wbits']}a{v['abits']}-{v['act']}-{sign}")


def _conv_out(size: int, kernel: int, stride: int) -> int:
    return (size + 2 * (kernel // 2) - kernel) // stride + 1


@dataclass(frozen=True)
class OpCounts:
    macs: int
    adds: int
    weights: int
    params: int
    io: int


def _conv_counts(op: OpSig) -> OpCounts:
    """A convolution followed by BN (whose affine pair counts as params, folded at inference)."""
    oh, ow = op.out_hw
    weights = op.cout * (op.cin // op.groups) * op.kernel**2
    return OpCounts(weights * oh * ow, 0, weights, weights + 2 * op.cout,
                    op.cin * op.h * op.w + op.cout * oh * ow)


def _patch_counts(op: OpSig) -> OpCounts:
    """Patch embedding: a kernel = stride convolution with bias, the class token and positions."""
    oh, ow = op.out_hw
    tokens = oh * ow + 1
    weights = op.cout * op.cin * op.kernel**2
    return OpCounts(weights * oh * ow, tokens * op.cout, weights, weights + op.cout + (tokens + 1) * op.cout,
                    op.cin * op.h * op.w + tokens * op.cout)


def _linear_counts(op: OpSig) -> OpCounts:
    """A linear layer applied to ``h`` tokens (``cin`` -> ``cout``), with bias."""
    return OpCounts(op.cin * op.cout * op.h, 0, op.cin * op.cout, op.cin * op.cout + op.cout,
                    (op.cin + op.cout) * op.h)


def _softmax_core(n: int, d: int) -> tuple[int, int]:
    return 2 * n * n * d + 2 * n * n, n * n * (d - 1) + n * (n - 1) + n * (n - 1) * d


def _kernel_core(n: int, d: int) -> tuple[int, int]:
    return 2 * n * d * d + 2 * n * d, (n - 1) * d * d + (n - 1) * d + n * (d - 1) * d + n * (d - 1)


def _binary_core(n: int, d: int) -> tuple[int, int]:
    return n * d, _kernel_core(n, d)[1]


# kind -> (core counts (mults, adds) for n tokens of width d, and per element of q and k the
# feature map's (mults, adds)). A new attention kind is one row here and one in ATTENTIONS.
ATTENTION_COUNTS = {
    "softmax": (_softmax_core, (0, 0)),
    "linear": (_kernel_core, (1, 1)),       # elu(x) + 1: a comparison, then exp (worst case)
    "relu_linear": (_kernel_core, (0, 1)),  # relu(x): a comparison
    "binary": (_binary_core, (0, 1)),       # the sign code: a comparison
}


def attention_op_counts(kind: str, n_tokens: int, dim_per_head: int, heads: int) -> dict[str, int]:
    """Multiplies and adds of the attention core for one sample, projections excluded.

    With N tokens, D dims per head and H heads, counting a length-L dot product as L mults and
    L - 1 adds, exp and division as mults, and a comparison as an add:

    * softmax: q k^T is N^2 D mults and N^2 (D - 1) adds; exp and the normalizing division are
      N^2 mults each; the row sums are N (N - 1) adds; A v is N^2 D mults and N (N - 1) D adds.
      Per head: mults = 2 N^2 D + 2 N^2, adds = N^2 (D - 1) + N (N - 1) + N (N - 1) D. The
      1 / sqrt(D) scale (foldable into the q projection) and the max-subtraction of a stable
      softmax are not counted.
    * linear, the core: phi(k)^T v is N D^2 mults and (N - 1) D^2 adds; sum_n phi(k) is
      (N - 1) D adds; phi(q) kv is N D^2 mults and N (D - 1) D adds; the normalizer phi(q) . sum
      is N D mults and N (D - 1) adds; the division is N D mults. Per head: mults = 2 N D^2 +
      2 N D, adds = (N - 1) D^2 + (N - 1) D + N (D - 1) D + N (D - 1). The eps is not counted.
    * the feature map phi runs on the 2 N D entries of q and k: ``linear``'s elu(x) + 1 is a
      comparison and then an exp (x < 0) or an add (x >= 0); counted as the costlier branch,
      1 mult and 1 add per entry. ``relu_linear``'s relu(x) (EfficientViT) is one comparison,
      1 add per entry, and no exp: that is its whole difference from ``linear``.
    * binary: the same dataflow as linear, but every product has a {0, 1} operand and is a
      select, so the q/k-side MatMuls and the normalizer are additions only: mults = N D (the
      division), adds = the linear core's adds (the worst case, every code bit set; fewer set
      bits mean fewer adds) plus 1 comparison per entry of q and k for the sign code.

    All counts are multiplied by H.
    """
    if kind not in ATTENTION_COUNTS:
        raise ValueError(f"unknown attention {kind!r}; known: {sorted(ATTENTION_COUNTS)}")
    n, d, h = int(n_tokens), int(dim_per_head), int(heads)
    if min(n, d, h) < 1:
        raise ValueError(f"n_tokens, dim_per_head and heads must be >= 1, got {n}, {d}, {h}")
    core, (map_mults, map_adds) = ATTENTION_COUNTS[kind]
    mults, adds = core(n, d)
    entries = 2 * n * d
    return {"mults": h * (mults + map_mults * entries), "adds": h * (adds + map_adds * entries)}


def _attention_counts(op: OpSig) -> OpCounts:
    """The attention core: ``cin`` heads of width ``cout`` over ``h`` tokens, by kind (``op``)."""
    c = attention_op_counts(op.op, op.h, op.cout, op.cin)
    return OpCounts(c["mults"], c["adds"], 0, 0, 4 * op.cin * op.cout * op.h)


def _layernorm_counts(op: OpSig) -> OpCounts:
    n = op.cin * op.h
    return OpCounts(2 * n, 3 * n, 0, 2 * op.cin, 2 * n)


def _token_counts(op: OpSig) -> OpCounts:
    """Token selection: class-token scores (``groups`` heads of width ``kernel``) and the package
    token, a weighted average of the dropped tokens; ``cout`` patch tokens are kept."""
    dropped = max(op.h - 1 - op.cout, 0)
    scores = (op.h - 1) * op.groups * op.kernel
    return OpCounts(scores + op.cin * dropped, scores + op.cin * dropped, 0, 0,
                    op.cin * op.h + op.cin * (op.cout + 2))


def _add_counts(op: OpSig) -> OpCounts:
    n = op.cin * op.h * op.w
    return OpCounts(0, n, 0, 0, 3 * n)


def _classifier_counts(op: OpSig) -> OpCounts:
    """Average pooling over ``h x w`` (one token: none) and a linear classifier with bias."""
    pool = op.cin * op.h * op.w if op.h * op.w > 1 else 0
    return OpCounts(op.cin * op.cout, pool, op.cin * op.cout, op.cin * op.cout + op.cout,
                    op.cin * op.h * op.w + op.cout)


def _mbconv_counts(op: OpSig) -> OpCounts:
    """The sum of the block's ops."""
    parts = mbconv_ops(op)
    return OpCounts(*(sum(getattr(p.counts, f) for p in parts) for f in ("macs", "adds", "weights", "params", "io")))


def mbconv_ops(op: OpSig) -> list[OpSig]:
    """The ops of an ``mbconv`` block signature, as the op graph lists them."""
    bits = dict(wbits=op.wbits, abits=op.abits, op=op.op)
    ops = []
    if op.mid != op.cin:
        ops.append(OpSig("conv", op.cin, op.h, op.w, op.mid, act="relu6", act_signed=True, **bits))
    ops.append(OpSig("dwconv", op.mid, op.h, op.w, op.mid, op.kernel, op.stride, op.mid, act="relu6",
                     act_signed=op.act_signed, **bits))
    oh, ow = op.out_hw
    ops.append(OpSig("conv", op.mid, oh, ow, op.cout, act="none", act_signed=False, **bits))
    if op.stride == 1 and op.cin == op.cout:
        ops.append(OpSig("add", op.cout, oh, ow, op.cout))
    return ops


COUNTERS = {"conv": _conv_counts, "dwconv": _conv_counts, "patch": _patch_counts, "linear": _linear_counts,
            "attention": _attention_counts, "layernorm": _layernorm_counts, "tokens": _token_counts,
            "add": _add_counts, "classifier": _classifier_counts, "mbconv": _mbconv_counts}


# -- language-model ops (the lm space; field use in hwnas.spaces.lm.graph) ----------------------------
def _embedding_counts(op: OpSig) -> OpCounts:
    """A lookup of ``h`` tokens in a ``cin`` x ``cout`` table; its weights count unless tied to the
    head (``op="tied"``: the head's linear counts them)."""
    weights = 0 if op.op == "tied" else op.cin * op.cout
    return OpCounts(0, 0, weights, weights, op.h + op.cout * op.h)


def _rmsnorm_counts(op: OpSig) -> OpCounts:
    """x * rsqrt(mean(x^2) + eps) * weight: a square-and-accumulate and two multiplies per element."""
    n = op.cin * op.h
    return OpCounts(3 * n, 0, 0, op.cin, 2 * n)


def _rope_counts(op: OpSig) -> OpCounts:
    """x * cos + rotate_half(x) * sin on ``cin`` heads of width ``cout``: 2 mults and 1 add each."""
    n = op.cin * op.cout * op.h
    return OpCounts(2 * n, n, 0, 0, 2 * n)


def _kv_attention_counts(op: OpSig) -> OpCounts:
    """Causal softmax attention of ``h`` new tokens over ``w`` keys (the last ``h`` of which are the
    new tokens'), ``cin`` query heads of width ``cout`` sharing ``groups`` key-value heads.

    Query i attends ``w - h + i + 1`` keys: P = h (w - h) + h (h + 1) / 2 pairs per head. As for
    ``attention`` (:func:`attention_op_counts`), per head: q k^T is P D mults and P (D - 1) adds,
    exp and division P mults each, the row sums P - h adds, A v P D mults and (P - h) D adds.
    Read and written: q and the output (``cin`` x ``cout`` per token) and the cached keys and values
    (2 x ``groups`` x ``cout`` per key): the traffic that makes decoding memory-bound.
    """
    h, w, d, heads = op.h, op.w, op.cout, op.cin
    pairs = h * (w - h) + h * (h + 1) // 2
    mults = heads * (2 * pairs * d + 2 * pairs)
    adds = heads * (pairs * (d - 1) + (pairs - h) * (d + 1))
    return OpCounts(mults, adds, 0, 0, 2 * heads * d * h + 2 * op.groups * d * w)


def _swiglu_counts(op: OpSig) -> OpCounts:
    """silu(gate) * up over ``cout`` channels: silu = x / (1 + exp(-x)) is 2 mults and 1 add, then
    one multiply by up."""
    n = op.cout * op.h
    return OpCounts(3 * n, n, 0, 0, 3 * n)


COUNTERS.update({"embedding": _embedding_counts, "rmsnorm": _rmsnorm_counts, "rope": _rope_counts,
                 "kv_attention": _kv_attention_counts, "swiglu": _swiglu_counts})


def count(ops: Iterable[OpSig]) -> dict[str, float]:
    """Params, FLOPs (2 per MAC), MACs (and by operator type), BitOps and weight storage."""
    ops = list(ops)
    macs = sum(o.macs for o in ops)
    by_op = {op: sum(o.macs for o in ops if o.op == op) for op in ("mult", "shift", "adder")}
    return {
        "params": sum(o.params for o in ops),
        "macs": macs,
        "flops": 2 * macs,
        "bitops": sum(o.bitops for o in ops),
        "weight_kb": sum(o.weight_count * o.weight_storage_bits for o in ops) / 8 / 1024,
        "mult_macs": by_op["mult"],
        "shift_macs": by_op["shift"],
        "adder_macs": by_op["adder"],
    }
