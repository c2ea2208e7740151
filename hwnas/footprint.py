"""What a subnet needs in memory, from its op graph: ``memory_kb``, the objective and budget for
memory-bound devices (microcontrollers, edge accelerators with a small SRAM).

``memory_kb`` is the weight bytes plus the peak activation bytes of one inference at the device's
batch size, in KiB (1024 bytes). One place computes it, from the same op graph every other cost
comes from (:func:`hwnas.spaces.registry.op_graph`), so the search, the front and the export agree.

**Weights.** Each op's weights at its weight bit-width, bit-packed (a shift weight's sign and
exponent in at most 8 bits: :attr:`~hwnas.ir.OpSig.weight_storage_bits`), and its other
parameters (biases, batch-norm and layer-norm affine pairs, the class token and position
embedding) as float32: the parameters :attr:`~hwnas.ir.OpSig.params` counts, in bytes. For a float
subnet that is exactly the exported model's parameter bytes; batch-norm running statistics are
buffers that fold into the convolution and are not counted.

**Activations.** The graph runs op by op in its order. A tensor is alive from the op that writes it
to the last op that reads it; while op k runs, its inputs, its output and every tensor written
before k and read after it (a residual branch's input, held for its add; a transformer block's q
and k, held for token selection) are alive. The peak is the largest such sum over the ops, times
the batch size. Which earlier tensors each op reads is the space's to say (the registry's
``op_inputs`` hook); a space without the hook is a chain, each op reading the one before it.
Tensors an op makes and drops inside itself are not counted: a convolution's output before its
batch norm and activation (a deployment folds the norm into the convolution and applies the
activation in place), a quantized op's rounded copy of its input, a softmax attention's score
matrix (a fused kernel tiles it). Layout copies between ops (a transformer's head merge) are the
op output they copy, counted once.

**State kept between calls** is alive during every op: a language model's KV cache (the keys and
values of every cached token, :data:`STATE_ELEMENTS`), which a decode step reads in its attention
and grows by one token. It is counted in the activations at the graph's own context length (the
``w`` keys of each ``kv_attention`` op), as the standalone model holds it, in float32.

**Activations are counted in float32 (4 bytes), whatever the activation bit-width.** Why: in
hwnas a quantized op rounds its *input* (its fake quantizer sits at the op's input), so the tensor
held between two ops is the float output of the first; a residual branch's input is read both
rounded, by the branch's first op, and unrounded, by the add. Every model hwnas ships (the
exported safetensors / TorchScript / ONNX files, and the int8 export, whose stem, head and
residual adds stay float) holds its activations in float32, and that is what the measurement test
(``tests/test_memory.py``) checks, tensor by tensor, on real forward passes. Counting them at their
bit-widths would describe an integer runtime that requantizes every output to its reader's
precision, which hwnas does not produce and could not measure; bit-widths lower ``memory_kb``
through the weights. ``activation_kb`` (the activation part alone) is reported beside it.
"""
from __future__ import annotations

from itertools import accumulate
from typing import Callable, Sequence

from hwnas.ir import FLOAT_BITS, OpSig

ACTIVATION_BYTES = 4  # float32, see the module docstring

# Elements of one sample's output tensor, by op kind (field use as in hwnas.ir's counters).
OUTPUT_ELEMENTS: dict[str, Callable[[OpSig], int]] = {
    "conv": lambda o: o.cout * o.out_hw[0] * o.out_hw[1],
    "dwconv": lambda o: o.cout * o.out_hw[0] * o.out_hw[1],
    "mbconv": lambda o: o.cout * o.out_hw[0] * o.out_hw[1],
    "patch": lambda o: (o.out_hw[0] * o.out_hw[1] + 1) * o.cout,  # the patches and the class token
    "linear": lambda o: o.cout * o.h,
    "attention": lambda o: o.cin * o.cout * o.h,  # heads x head width x tokens
    "layernorm": lambda o: o.cin * o.h,
    "tokens": lambda o: o.cin * (o.cout + 2),  # class, kept and package tokens
    "add": lambda o: o.cin * o.h * o.w,
    "classifier": lambda o: o.cout,
    "embedding": lambda o: o.cout * o.h,
    "rmsnorm": lambda o: o.cin * o.h,
    "rope": lambda o: o.cin * o.cout * o.h,  # q and k, rotated
    "kv_attention": lambda o: o.cin * o.cout * o.h,  # heads x head width x new tokens (the cache is state)
    "swiglu": lambda o: o.cout * o.h,
}
# Elements of state an op keeps between calls, alive during every op of the graph.
STATE_ELEMENTS: dict[str, Callable[[OpSig], int]] = {
    "kv_attention": lambda o: 2 * o.groups * o.cout * o.w,  # keys and values of w tokens, groups kv heads
}
# Elements of the tensor an op reads, for the first op of a graph (the model's input).
INPUT_ELEMENTS: dict[str, Callable[[OpSig], int]] = {
    **{kind: (lambda o: o.cin * o.h * o.w) for kind in OUTPUT_ELEMENTS},
    "attention": lambda o: 3 * o.cin * o.cout * o.h,  # q, k and v
    "embedding": lambda o: o.h,  # token ids
}


def _elements(table: dict[str, Callable[[OpSig], int]], op: OpSig) -> int:
    try:
        return int(table[op.kind](op))
    except KeyError:
        raise ValueError(f"no activation size for op kind {op.kind!r}; known: {sorted(table)} "
                         "(add it to hwnas.footprint)") from None


def chain_inputs(n: int) -> list[tuple[int, ...]]:
    """Each op reads the output of the op before it; the first reads the model's input (-1)."""
    return [(k - 1,) for k in range(n)]


def activation_profile(ops: Sequence[OpSig], reads: Sequence[tuple[int, ...]] | None = None) -> list[int]:
    """Activation elements of one sample alive while each op runs (see the module docstring), the
    state of :data:`STATE_ELEMENTS` included.

    ``reads[k]`` holds the indices of the ops whose outputs op ``k`` reads, ``-1`` for the model's
    input; None is a chain (:func:`chain_inputs`). A tensor no op reads (the graph's output) is
    alive while its op runs.
    """
    ops = list(ops)
    if not ops:
        return []
    reads = chain_inputs(len(ops)) if reads is None else [tuple(r) for r in reads]
    if len(reads) != len(ops):
        raise ValueError(f"op_inputs gives {len(reads)} entries for {len(ops)} ops")
    size = [_elements(INPUT_ELEMENTS, ops[0]), *(_elements(OUTPUT_ELEMENTS, o) for o in ops)]  # tensor t at t + 1
    last = list(range(-1, len(ops)))  # the last op that reads tensor t (at t + 1); itself at first
    last[0] = 0  # the input is there when the first op starts
    for k, inputs in enumerate(reads):
        for t in inputs:
            if not -1 <= t < k:
                raise ValueError(f"op {k} ({ops[k].kind}) reads tensor {t}: an op reads the input (-1) or an "
                                 "earlier op's output")
            last[t + 1] = max(last[t + 1], k)
    change = [0] * (len(ops) + 1)
    for t in range(-1, len(ops)):
        change[max(t, 0)] += size[t + 1]
        change[last[t + 1] + 1] -= size[t + 1]
    state = sum(STATE_ELEMENTS[o.kind](o) for o in ops if o.kind in STATE_ELEMENTS)
    return [alive + state for alive in accumulate(change)][: len(ops)]


def weight_bits(ops: Sequence[OpSig]) -> int:
    """Bits of every parameter: weights at their storage bit-width, the rest in float32."""
    return sum(o.weight_count * o.weight_storage_bits + (o.params - o.weight_count) * FLOAT_BITS for o in ops)


def memory_kb(weight_bits_total, peak_elements, batch_size: int) -> dict:
    """``memory_kb`` (weights plus peak activations) and ``activation_kb`` from their parts, for
    numbers or numpy arrays of them: the one formula the per-arch and the vectorized paths share,
    so their figures are identical to the last bit."""
    activation = ACTIVATION_BYTES * batch_size * peak_elements
    return {"memory_kb": (weight_bits_total / 8 + activation) / 1024, "activation_kb": activation / 1024}


def subnet_memory(ops: Sequence[OpSig], reads: Sequence[tuple[int, ...]] | None, batch_size: int) -> dict[str, float]:
    """``memory_kb`` and ``activation_kb`` of a subnet's op graph at ``batch_size``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    return memory_kb(weight_bits(ops), max(activation_profile(ops, reads), default=0), batch_size)
