"""The op graph of a subnet: every op it executes, with shapes, stride and bits.

An :class:`OpSig` is the unit a lookup table is keyed by. The graph is read from the subnet spec
(:meth:`hwnas.spaces.cnn.CNNSpace.subnet_spec`), the same description the supernet activates and
the exporter builds, so the costed network is the exported network.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from functools import cached_property
from typing import Any, Iterable

from hwnas.spaces.ops.quant import FLOAT_BITS

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


def _attention_counts(op: OpSig) -> OpCounts:
    """The attention core: ``cin`` heads of width ``cout`` over ``h`` tokens, by kind (``op``)."""
    from hwnas.spaces.ops.attention import count_attention_ops

    c = count_attention_ops(op.op, op.h, op.cout, op.cin)
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


def _conv_op(layer: dict[str, Any], cin_hw: tuple[int, int]) -> OpSig:
    kind = "dwconv" if layer["groups"] > 1 and layer["groups"] == layer["cin"] else "conv"
    return OpSig(kind, layer["cin"], cin_hw[0], cin_hw[1], layer["cout"], layer["kernel"], layer["stride"],
                 layer["groups"], layer["wbits"], layer["abits"], layer["act"], layer["act_signed"],
                 layer.get("op", "mult"))


def op_graph(spec: dict[str, Any]) -> list[OpSig]:
    """The ops of a subnet spec, in execution order (dispatched on the spec's space type)."""
    return GRAPH_BUILDERS[spec["type"]](spec)


def cnn_op_graph(spec: dict[str, Any]) -> list[OpSig]:
    """The ops of a CNN subnet spec, in execution order."""
    ops = [_conv_op(spec["stem"], tuple(spec["stem"]["in_shape"][1:]))]
    for block in spec["blocks"]:
        ops += cnn_block_ops(block)
    head = spec["head"]
    ops.append(_conv_op(head, tuple(head["in_shape"][1:])))
    c, h, w = spec["classifier"]["in_shape"]
    ops.append(OpSig("classifier", c, h, w, spec["classifier"]["num_classes"]))
    return ops


def cnn_block_ops(block: dict[str, Any]) -> list[OpSig]:
    """The ops of one block of a CNN subnet spec (``spec["blocks"][k]``), in execution order."""
    ops: list[OpSig] = []
    hw = tuple(block["in_shape"][1:])
    for name in ("expand", "depthwise", "project"):
        if name in block["layers"]:
            op = _conv_op(block["layers"][name], hw)
            ops.append(op)
            hw = op.out_hw
    if block["residual"]:
        last = ops[-1]
        ops.append(OpSig("add", last.cout, hw[0], hw[1], last.cout))
    return ops


def cnn_fixed_ops(spec: dict[str, Any]) -> list[OpSig]:
    """The ops of a CNN subnet spec outside its blocks: stem conv, head conv and classifier."""
    head, (c, h, w) = spec["head"], spec["classifier"]["in_shape"]
    return [_conv_op(spec["stem"], tuple(spec["stem"]["in_shape"][1:])),
            _conv_op(head, tuple(head["in_shape"][1:])),
            OpSig("classifier", c, h, w, spec["classifier"]["num_classes"])]


def mbconv_unit(block: dict[str, Any]) -> OpSig:
    """One block of a CNN subnet spec as a block-granularity ``mbconv`` signature."""
    c, h, w = block["in_shape"]
    dw, project = block["layers"]["depthwise"], block["layers"]["project"]
    return OpSig("mbconv", c, h, w, project["cout"], dw["kernel"], dw["stride"], 1, dw["wbits"],
                 dw["abits"], dw["act"], dw["act_signed"], dw.get("op", "mult"), mid=dw["cout"])


def vit_op_graph(spec: dict[str, Any]) -> list[OpSig]:
    """The ops of a ViT subnet spec, in execution order (the order of StandaloneViT's modules).

    Field use beyond the names: a linear op runs on ``h`` tokens; an attention op has ``cin``
    heads of width ``cout`` and its kind in ``op``; a token op keeps ``cout`` patch tokens and
    scores them with ``groups`` heads of width ``kernel``.
    """
    c, height, width = spec["input_shape"]
    d, p = spec["dim"], spec["patch_size"]
    ops = [OpSig("patch", c, height, width, d, kernel=p, stride=p)]
    for b in spec["blocks"]:
        n, inner, wb, ab = b["tokens"], b["heads"] * b["head_dim"], b["wbits"], b["abits"]
        ops += [OpSig("layernorm", d, n, 1, d),
                OpSig("linear", d, n, 1, 3 * inner, wbits=wb, abits=ab),
                OpSig("attention", b["heads"], n, 1, b["head_dim"], op=b["attn"]),
                OpSig("linear", inner, n, 1, d, wbits=wb, abits=ab),
                OpSig("add", d, n, 1, d)]
        if b["keep"] is not None:
            ops.append(OpSig("tokens", d, n, 1, b["keep"], kernel=b["head_dim"], groups=b["heads"]))
        n = b["out_tokens"]
        ops += [OpSig("layernorm", d, n, 1, d),
                OpSig("linear", d, n, 1, b["hidden"], wbits=wb, abits=ab, act="gelu"),
                OpSig("linear", b["hidden"], n, 1, d, wbits=wb, abits=ab),
                OpSig("add", d, n, 1, d)]
    ops += [OpSig("layernorm", d, spec["final_tokens"], 1, d),
            OpSig("classifier", d, 1, 1, spec["num_classes"])]
    return ops


GRAPH_BUILDERS = {"cnn": cnn_op_graph, "vit": vit_op_graph}


def block_graph(spec: dict[str, Any]) -> list[OpSig]:
    """A CNN subnet at block granularity, the unit of OFA-style lookup tables: the stem conv, one
    ``mbconv`` per block (see :class:`OpSig`), the head conv and the classifier (pooling and linear)."""
    if spec["type"] != "cnn":
        raise ValueError(f"block-granularity tables cover CNN spaces only, not {spec['type']!r}")
    units = [_conv_op(spec["stem"], tuple(spec["stem"]["in_shape"][1:]))]
    for block in spec["blocks"]:
        units.append(mbconv_unit(block))
    head = spec["head"]
    units.append(_conv_op(head, tuple(head["in_shape"][1:])))
    c, h, w = spec["classifier"]["in_shape"]
    units.append(OpSig("classifier", c, h, w, spec["classifier"]["num_classes"]))
    return units


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
