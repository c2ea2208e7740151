"""The op graph of an LM subnet spec: the decode step (what per-token latency is priced from) and
the prefill of a prompt, in the order of :class:`~hwnas.spaces.lm.standalone.StandaloneLM`'s modules.

Field use (see :mod:`hwnas.ir` for the counts): every op runs on ``h`` new tokens (1 when
decoding); every op other than the layers' projections is float, bits 16 (what a float16
deployment stores and moves). ``embedding``: ``cin`` = vocabulary, ``cout`` = hidden; its weights
count unless the head shares them (``op="tied"``). ``linear``: the projections at the layer's
bits, the head in float; Llama's projections have no bias, which the ``linear`` kind counts
(``cout`` float32 values per layer, a few per mille of its weights) so that existing tables and
profilers price them. ``rope``: ``cin`` = query plus key heads of width ``cout``.
``kv_attention``: ``cin`` query heads of width ``cout`` over ``w`` keys (the cached ones and the
new), ``groups`` key-value heads. ``swiglu``: ``silu(gate) * up`` over ``cout`` channels.
``rmsnorm`` and ``add`` over ``cin``.

A decode step at context length C reads a KV cache of C - 1 tokens and appends one: its
attention runs over ``w = C`` keys. The cache is state, not an op output: :mod:`hwnas.footprint`
counts it (``STATE_ELEMENTS``) as alive during every op, so ``memory_kb`` is the weights, the KV
cache at the context length and the peak of the transient activations; :func:`kv_cache_bytes` is
the cache alone.
"""
from __future__ import annotations

from typing import Any

from hwnas.ir import OpSig
from hwnas.spaces.ops.group_quant import FLOAT


def _graph(spec: dict[str, Any], tokens: int, keys: int) -> list[OpSig]:
    d, hd, v, ab = spec["hidden"], spec["head_dim"], spec["vocab_size"], spec["abits"]
    f = dict(wbits=FLOAT, abits=FLOAT)  # float ops (the embedding and head weights, norms, attention)
    ops = [OpSig("embedding", v, tokens, 1, d, op="tied" if spec["tie_word_embeddings"] else "mult", **f)]
    for layer in spec["layers"]:
        heads, kv, mlp = layer["heads"], layer["kv_heads"], layer["mlp"]
        bits = dict(wbits=layer["wbits"], abits=ab)
        ops += [OpSig("rmsnorm", d, tokens, 1, d, **f),
                OpSig("linear", d, tokens, 1, heads * hd, **bits),
                OpSig("linear", d, tokens, 1, kv * hd, **bits),
                OpSig("linear", d, tokens, 1, kv * hd, **bits),
                OpSig("rope", heads + kv, tokens, 1, hd, **f),
                OpSig("kv_attention", heads, tokens, keys, hd, groups=kv, **f),
                OpSig("linear", heads * hd, tokens, 1, d, **bits),
                OpSig("add", d, tokens, 1, d, **f),
                OpSig("rmsnorm", d, tokens, 1, d, **f),
                OpSig("linear", d, tokens, 1, mlp, **bits),
                OpSig("linear", d, tokens, 1, mlp, **bits),
                OpSig("swiglu", mlp, tokens, 1, mlp, **f),
                OpSig("linear", mlp, tokens, 1, d, **bits),
                OpSig("add", d, tokens, 1, d, **f)]
    return ops + [OpSig("rmsnorm", d, tokens, 1, d, **f), OpSig("linear", d, tokens, 1, v, **f)]


def lm_op_graph(spec: dict[str, Any]) -> list[OpSig]:
    """The decode step: one new token at batch 1 over a KV cache at the spec's context length."""
    return _graph(spec, 1, int(spec["context_length"]))


def lm_prefill_graph(spec: dict[str, Any], prompt_length: int | None = None) -> list[OpSig]:
    """The prefill of a prompt of ``prompt_length`` tokens (default the spec's ``prompt_length``:
    what the ``prefill`` objective prices), causal attention among them, logits of every position,
    as :class:`StandaloneLM`'s forward computes them."""
    return _graph(spec, *(2 * [int(spec["prompt_length"] if prompt_length is None else prompt_length)]))


def prefill_unit(spec: dict[str, Any]) -> str:
    """What one prefill figure times (the ``prefill`` latency phase's words)."""
    return f"per {int(spec['prompt_length'])}-token prompt"


# What each op of one layer reads, as offsets from the layer's first op (its rmsnorm), the layer's
# input being offset -1: q, k, v read the norm; rope reads q and k; attention reads rope (q and k)
# and v; the first add reads o and the layer's input; the MLP's norm the add; gate and up that
# norm; swiglu gate and up; down swiglu; the second add down and the first add.
LAYER_READS = ((-1,), (0,), (0,), (0,), (1, 2), (4, 3), (5,), (6, -1), (7,), (8,), (8,), (9, 10), (11,), (12, 7))


def lm_op_inputs(spec: dict[str, Any], ops: list[OpSig]) -> list[tuple[int, ...]]:
    """What each op of :func:`lm_op_graph` (or the prefill graph) reads (the ``op_inputs`` hook)."""
    reads: list[tuple[int, ...]] = [(-1,)]
    per = len(LAYER_READS)
    for i in range(len(spec["layers"])):
        first = 1 + i * per
        reads += [tuple(first + r for r in offsets) for offsets in LAYER_READS]
    last = len(reads)
    reads += [(last - 1,), (last,)]
    if len(reads) != len(ops):
        raise ValueError(f"lm_op_inputs: {len(reads)} entries for {len(ops)} ops")
    return reads


def kv_cache_bytes(spec: dict[str, Any], context_length: int | None = None, batch_size: int = 1,
                   bytes_per_value: int = 4) -> int:
    """Bytes of the KV cache at ``context_length`` tokens (default the spec's): keys and values of
    every kept layer's key-value heads, float32 by default (what :class:`StandaloneLM` holds)."""
    tokens = int(spec["context_length"] if context_length is None else context_length)
    values = sum(2 * layer["kv_heads"] * spec["head_dim"] for layer in spec["layers"]) * tokens
    return values * batch_size * bytes_per_value
