"""The op graph of a ViT subnet spec, in the order of :class:`StandaloneViT`'s modules."""
from __future__ import annotations

from typing import Any

from hwnas.ir import OpSig

LINEAR_OPS = {"uniform": "mult", "log2": "shift"}  # a block's weight quantizer -> its linears' operator type


def vit_op_graph(spec: dict[str, Any]) -> list[OpSig]:
    """The ops of a ViT subnet spec, in execution order (the order of StandaloneViT's modules).

    Field use beyond the names: a linear op runs on ``h`` tokens; an attention op has ``cin``
    heads of width ``cout`` and its kind in ``op``; a token op keeps ``cout`` patch tokens and
    scores them with ``groups`` heads of width ``kernel``. A block with log2 weights has shift
    linear layers (``op="shift"``): each weight is a signed power of two, so the cost and energy
    models price its MACs as shift-and-add (see :func:`hwnas.spaces.ops.shift.log2_quantize`).
    """
    c, height, width = spec["input_shape"]
    d, p = spec["dim"], spec["patch_size"]
    ops = [OpSig("patch", c, height, width, d, kernel=p, stride=p)]
    for b in spec["blocks"]:
        n, inner = b["tokens"], b["heads"] * b["head_dim"]
        lin = dict(wbits=b["wbits"], abits=b["abits"], op=LINEAR_OPS[b.get("wquant", "uniform")])
        ops += [OpSig("layernorm", d, n, 1, d),
                OpSig("linear", d, n, 1, 3 * inner, **lin),
                OpSig("attention", b["heads"], n, 1, b["head_dim"], op=b["attn"]),
                OpSig("linear", inner, n, 1, d, **lin),
                OpSig("add", d, n, 1, d)]
        if b["keep"] is not None:
            ops.append(OpSig("tokens", d, n, 1, b["keep"], kernel=b["head_dim"], groups=b["heads"]))
        n = b["out_tokens"]
        ops += [OpSig("layernorm", d, n, 1, d),
                OpSig("linear", d, n, 1, b["hidden"], act="gelu", **lin),
                OpSig("linear", b["hidden"], n, 1, d, **lin),
                OpSig("add", d, n, 1, d)]
    ops += [OpSig("layernorm", d, spec["final_tokens"], 1, d),
            OpSig("classifier", d, 1, 1, spec["num_classes"])]
    return ops


def vit_op_inputs(spec: dict[str, Any], ops: list[OpSig]) -> list[tuple[int, ...]]:
    """What each op of :func:`vit_op_graph` reads (the ``op_inputs`` hook): the op before it; a
    residual add also its branch's input (the blocks are pre-norm, so a branch starts at a layer
    norm, whose input the add adds back); token selection also the q and k of the attention before
    it (the qkv output, kept alive until then)."""
    reads: list[tuple[int, ...]] = []
    branch_input, attention_input = -1, -1
    for k, op in enumerate(ops):
        if op.kind == "layernorm":
            branch_input = k - 1
        elif op.kind == "attention":
            attention_input = k - 1
        extra = {"add": (branch_input,), "tokens": (attention_input,)}.get(op.kind, ())
        reads.append((k - 1, *extra))
    return reads
