"""The op graph of a subnet: every op it executes, with shapes, stride and bits.

An :class:`OpSig` is the unit a lookup table is keyed by. The graph is read from the subnet spec
(:meth:`hwnas.spaces.cnn.CNNSpace.subnet_spec`), the same description the supernet activates and
the exporter builds, so the costed network is the exported network.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Iterable

from hwnas.spaces.ops.quant import FLOAT_BITS

OP_KINDS = ("conv", "dwconv", "add", "classifier")
OPTIONAL_FIELDS = ("op",)  # fields added after the first table format; their default applies


@dataclass(frozen=True)
class OpSig:
    """One op: kind, input shape (cin, h, w), output channels, kernel, stride, groups, bits."""

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

    @property
    def key(self) -> str:
        op = "" if self.op == "mult" else f"-{self.op}"
        return (f"{self.kind}{op}-in{self.cin}x{self.h}x{self.w}-out{self.cout}-k{self.kernel}-s{self.stride}"
                f"-g{self.groups}-w{self.wbits}a{self.abits}-{self.act}-{'s' if self.act_signed else 'u'}")

    @property
    def out_hw(self) -> tuple[int, int]:
        if self.kind in ("conv", "dwconv"):
            pad = self.kernel // 2
            return ((self.h + 2 * pad - self.kernel) // self.stride + 1,
                    (self.w + 2 * pad - self.kernel) // self.stride + 1)
        return self.h, self.w

    @property
    def macs(self) -> int:
        """Multiply-accumulates of one sample."""
        if self.kind in ("conv", "dwconv"):
            oh, ow = self.out_hw
            return self.cout * (self.cin // self.groups) * self.kernel**2 * oh * ow
        if self.kind == "classifier":
            return self.cin * self.cout
        return 0

    @property
    def adds(self) -> int:
        """Additions that are not part of a MAC (residual adds, average pooling)."""
        if self.kind == "add":
            return self.cin * self.h * self.w
        if self.kind == "classifier":
            return self.cin * self.h * self.w
        return 0

    @property
    def weight_count(self) -> int:
        if self.kind in ("conv", "dwconv"):
            return self.cout * (self.cin // self.groups) * self.kernel**2
        if self.kind == "classifier":
            return self.cin * self.cout
        return 0

    @property
    def weight_storage_bits(self) -> int:
        """Bits stored per weight: a shift weight's sign and exponent fit in at most 8."""
        return min(self.wbits, 8) if self.op == "shift" else self.wbits

    @property
    def params(self) -> int:
        """Weights plus the BN affine pair (conv) or the bias (classifier)."""
        if self.kind in ("conv", "dwconv"):
            return self.weight_count + 2 * self.cout
        if self.kind == "classifier":
            return self.weight_count + self.cout
        return 0

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


def _conv_op(layer: dict[str, Any], cin_hw: tuple[int, int]) -> OpSig:
    kind = "dwconv" if layer["groups"] > 1 and layer["groups"] == layer["cin"] else "conv"
    return OpSig(kind, layer["cin"], cin_hw[0], cin_hw[1], layer["cout"], layer["kernel"], layer["stride"],
                 layer["groups"], layer["wbits"], layer["abits"], layer["act"], layer["act_signed"],
                 layer.get("op", "mult"))


def op_graph(spec: dict[str, Any]) -> list[OpSig]:
    """The ops of a CNN subnet spec, in execution order."""
    ops = [_conv_op(spec["stem"], tuple(spec["stem"]["in_shape"][1:]))]
    for block in spec["blocks"]:
        hw = tuple(block["in_shape"][1:])
        for name in ("expand", "depthwise", "project"):
            if name in block["layers"]:
                op = _conv_op(block["layers"][name], hw)
                ops.append(op)
                hw = op.out_hw
        if block["residual"]:
            last = ops[-1]
            ops.append(OpSig("add", last.cout, hw[0], hw[1], last.cout))
    head = spec["head"]
    ops.append(_conv_op(head, tuple(head["in_shape"][1:])))
    c, h, w = spec["classifier"]["in_shape"]
    ops.append(OpSig("classifier", c, h, w, spec["classifier"]["num_classes"]))
    return ops


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
