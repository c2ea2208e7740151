"""The standalone LM subnet an export is: its own weights only, a KV cache, greedy generation.

Built from :meth:`LMSpace.subnet_spec` alone. Its modules are registered in the order they run, one
module per op of the op graph (:mod:`hwnas.spaces.lm.graph`), so the profiler's hooks time each op
in place; :class:`DecodeStep` is the module whose one call is the costed decode step (one new
token over a KV cache of ``context_length - 1`` tokens), which :meth:`StandaloneLM.timed_call`
gives a measured device to time; :meth:`StandaloneLM.prefill_call` is the prefill of a prompt
(the ``prefill`` latency phase).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import nn

from hwnas.spaces.ops.layers import ResidualAdd
from hwnas.spaces.ops.lm_layers import KVAttention, LMHead, LMLinear, RMSNorm, Rotary, SwiGLU, TokenEmbedding
from hwnas.utils.generation import greedy_generate

Cache = list[tuple[torch.Tensor, torch.Tensor]]


class FixedLayer(nn.Module):
    """One kept decoder layer; its children are registered in the order they run."""

    def __init__(self, layer: dict[str, Any], spec: dict[str, Any]):
        super().__init__()
        d, hd, wb, ab = spec["hidden"], spec["head_dim"], layer["wbits"], spec["abits"]
        self.heads, self.kv_heads, self.head_dim = layer["heads"], layer["kv_heads"], hd
        self.input_norm = RMSNorm(d, spec["rms_norm_eps"])
        self.q_proj = LMLinear(d, self.heads * hd, wb, ab)
        self.k_proj = LMLinear(d, self.kv_heads * hd, wb, ab)
        self.v_proj = LMLinear(d, self.kv_heads * hd, wb, ab)
        self.rope = Rotary(hd, spec["rope_theta"])
        self.attn = KVAttention()
        self.o_proj = LMLinear(self.heads * hd, d, wb, ab)
        self.add1 = ResidualAdd()
        self.post_norm = RMSNorm(d, spec["rms_norm_eps"])
        self.gate_proj = LMLinear(d, layer["mlp"], wb, ab)
        self.up_proj = LMLinear(d, layer["mlp"], wb, ab)
        self.swiglu = SwiGLU()
        self.down_proj = LMLinear(layer["mlp"], d, wb, ab)
        self.add2 = ResidualAdd()

    def forward(self, x: torch.Tensor, start: int, past: tuple[torch.Tensor, torch.Tensor] | None):
        B, T, _ = x.shape
        h = self.input_norm(x)
        q = self.q_proj(h).view(B, T, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(h).view(B, T, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(h).view(B, T, self.kv_heads, self.head_dim).transpose(1, 2)
        q, k = self.rope(q, k, start)
        out, present = self.attn(q, k, v, past)
        x = self.add1(x, self.o_proj(out))
        h = self.post_norm(x)
        return self.add2(x, self.down_proj(self.swiglu(self.gate_proj(h), self.up_proj(h)))), present


class StandaloneLM(nn.Module):
    """A fixed LM subnet: ``forward(ids [B, T]) -> logits [B, T, V]``, :meth:`step` with a KV cache,
    greedy :meth:`generate`."""

    def __init__(self, spec: dict[str, Any], layers: Sequence[FixedLayer] | None = None):
        """``layers``: the kept layers already built (the supernet's extract), else fresh ones."""
        super().__init__()
        self.spec = spec
        d = spec["hidden"]
        self.embed = TokenEmbedding(spec["vocab_size"], d)
        if layers is None:
            layers = [FixedLayer(layer, spec) for layer in spec["layers"]]
        self.layers = nn.ModuleList(layers)
        self.norm = RMSNorm(d, spec["rms_norm_eps"])
        self.lm_head = LMHead(d, spec["vocab_size"], spec["tie_word_embeddings"])
        self.tokenizer = None  # text in and out of generate; set by load_exported (not a weight)

    def step(self, ids: torch.Tensor, past: Cache | None = None) -> tuple[torch.Tensor, Cache]:
        """Logits of the tokens ``ids`` following the cached ones, and the grown cache."""
        start = 0 if not past else int(past[0][0].shape[2])
        x = self.embed(ids)
        present: Cache = []
        for i, layer in enumerate(self.layers):
            x, kv = layer(x, start, past[i] if past else None)
            present.append(kv)
        return self.lm_head(self.norm(x), self.embed.weight), present

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.step(ids)[0]

    def timed_call(self, batch_size: int) -> Callable[[], torch.Tensor]:
        """What a measured device times for this model (see ``hwnas.hwmodels.local_cpu.deployed_call``):
        one decode step at the spec's context length, a new token per sequence."""
        step = DecodeStep(self, self.spec["context_length"], batch_size)
        ids = torch.zeros(batch_size, 1, dtype=torch.long, device=self.embed.weight.device)
        return lambda: step(ids)

    def prefill_call(self, batch_size: int) -> Callable[[], torch.Tensor]:
        """The prefill a measured device times for the ``prefill`` objective: the forward of a prompt
        of the spec's ``prompt_length`` tokens per sequence, no cache before it (the logits of every
        position, as its op graph :func:`~hwnas.spaces.lm.graph.lm_prefill_graph` prices)."""
        ids = torch.zeros(batch_size, int(self.spec["prompt_length"]), dtype=torch.long,
                          device=self.embed.weight.device)
        return lambda: self(ids)

    @torch.no_grad()
    def generate(self, prompt: str | torch.Tensor | Sequence[int], max_new_tokens: int,
                 use_cache: bool = True) -> torch.Tensor | str:
        """Greedy decoding: the prompt's token ids followed by ``max_new_tokens`` new ones
        (``[1, P + n]``); ``use_cache=False`` runs the whole prefix again for every token. A text
        prompt needs the model's ``tokenizer`` (an exported model carries the one its manifest
        names, see :func:`hwnas.load_exported`) and gives back the new text."""
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise ValueError("a text prompt needs the model's tokenizer (model.tokenizer); give token ids")
            ids = self.generate(self.tokenizer.encode(prompt), max_new_tokens, use_cache)
            return self.tokenizer.decode(ids[0, ids.shape[1] - int(max_new_tokens):].tolist())
        input_ids = prompt
        if not use_cache:
            return greedy_generate(self, input_ids, max_new_tokens)
        ids = torch.as_tensor(input_ids, dtype=torch.long, device=self.embed.weight.device).reshape(1, -1)
        past: Cache | None = None
        new = ids
        for _ in range(int(max_new_tokens)):
            logits, past = self.step(new, past)
            new = logits[:, -1:].argmax(-1)
            ids = torch.cat([ids, new], dim=1)
        return ids


class DecodeStep(nn.Module):
    """One decode step of ``model`` (a new token of each sequence of the batch) over a KV cache
    already holding ``context_length - 1`` tokens: what per-token decode latency is."""

    def __init__(self, model: StandaloneLM, context_length: int, batch_size: int = 1):
        super().__init__()
        self.model = model.eval()
        cached = max(int(context_length) - 1, 0)
        weight = model.embed.weight
        self.past: Cache = [(torch.zeros(batch_size, layer.kv_heads, cached, layer.head_dim, dtype=weight.dtype),
                             torch.zeros(batch_size, layer.kv_heads, cached, layer.head_dim, dtype=weight.dtype))
                            for layer in model.layers] if cached else []

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.step(ids, self.past or None)[0]

