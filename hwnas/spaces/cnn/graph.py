"""The op graph of a CNN subnet spec, at op and at block granularity, and its block layout.

Every op here is read from :meth:`~hwnas.spaces.cnn.space.CNNSpace.subnet_spec`, the description
the supernet activates and the exporter builds, so the costed network is the exported network.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from hwnas.ir import OpSig
from hwnas.spaces.layout import BlockLayout


def _conv_op(layer: dict[str, Any], cin_hw: tuple[int, int]) -> OpSig:
    kind = "dwconv" if layer["groups"] > 1 and layer["groups"] == layer["cin"] else "conv"
    return OpSig(kind, layer["cin"], cin_hw[0], cin_hw[1], layer["cout"], layer["kernel"], layer["stride"],
                 layer["groups"], layer["wbits"], layer["abits"], layer["act"], layer["act_signed"],
                 layer.get("op", "mult"))


def cnn_op_graph(spec: dict[str, Any]) -> list[OpSig]:
    """The ops of a CNN subnet spec, in execution order."""
    stem, head, classifier = cnn_fixed_ops(spec)
    ops = [stem]
    for block in spec["blocks"]:
        ops += cnn_block_ops(block)
    return [*ops, head, classifier]


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


def cnn_op_inputs(spec: dict[str, Any], ops: list[OpSig]) -> list[tuple[int, ...]]:
    """What each op of :func:`cnn_op_graph` reads (the ``op_inputs`` hook): the op before it, and a
    residual add also the block's input, which stays alive through the block."""
    reads, k = [(-1,)], 0  # the stem reads the image; k: the op written last
    for block in spec["blocks"]:
        block_input = k
        for op in cnn_block_ops(block):
            k += 1
            reads.append((k - 1, block_input) if op.kind == "add" else (k - 1,))
    return [*reads, (k,), (k + 1,)]  # the head conv and the classifier


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


def cnn_block_graph(spec: dict[str, Any]) -> list[OpSig]:
    """A CNN subnet at block granularity, the unit of OFA-style lookup tables: the stem conv, one
    ``mbconv`` per block (see :class:`~hwnas.ir.OpSig`), the head conv and the classifier."""
    stem, head, classifier = cnn_fixed_ops(spec)
    return [stem, *(mbconv_unit(block) for block in spec["blocks"]), head, classifier]


def cnn_block_layout(space) -> BlockLayout:
    """The CNN space decomposes: the stem, head and classifier are fixed, and a block's ops depend
    only on its position (stage i, block j: input channels and size are fixed by the stage
    layout, see :meth:`CNNSpace.covering_archs`) and its own choices."""
    names = list(space.names)
    stages = space.config.stages
    keys = list(space.block_choices(0))  # every stage has these choices (see CNNSpace.block_layout)
    positions = [(i, j) for i, stage in enumerate(stages) for j in range(max(stage.depth))]
    depth_columns = np.array([names.index(f"s{i}.depth") for i in range(len(stages))])

    def position_ops(combo: tuple) -> list[tuple[list[OpSig], OpSig]]:
        values: dict[str, Any] = {}
        for i, stage in enumerate(stages):
            values[f"s{i}.depth"] = max(stage.depth)
            for j in range(max(stage.depth)):
                values.update({f"s{i}.b{j}.{k}": v for k, v in zip(keys, combo)})
        return [(cnn_block_ops(block), mbconv_unit(block)) for block in space.subnet_spec(values)["blocks"]]

    stem, head, classifier = cnn_fixed_ops(space.subnet_spec(space.largest()))
    return BlockLayout(
        choice_keys=tuple(keys), choices=tuple(tuple(v) for v in space.block_choices(0).values()),
        depth_columns=depth_columns,
        depth_values=tuple(np.array(space.dims[c].choices, dtype=np.int64) for c in depth_columns),
        position_group=np.array([i for i, _ in positions]), position_index=np.array([j for _, j in positions]),
        position_columns=np.array([[names.index(f"s{i}.b{j}.{k}") for k in keys] for i, j in positions],
                                  dtype=np.int64).reshape(len(positions), len(keys)),
        leading=(stem,), trailing=(head, classifier), position_ops=position_ops)

