"""The language-model space: a Llama-family decoder-only supernet (RMSNorm, rotary positions, SwiGLU
MLP, grouped-query attention), registered as ``lm``.

The hidden size, the head width and the vocabulary are fixed (the vocabulary is the data's, the
``num_classes`` the space is built with; the input is ``(context_length,)`` token ids). Searched:

* **depth**: which layers are kept (``l{j}.keep``, 1 or 0; a skipped layer is the identity), at
  least ``min_layers`` of them. ``depth: any`` keeps any subset, as LLaMA-NAS prunes a pretrained
  model's layers; ``depth: prefix`` keeps the first ``D``, as Once-for-All's elastic depth. Prefix is
  the default from scratch: a supernet trained on every skip pattern makes each layer serve every
  input stream, and its largest subnet lost 10 % perplexity to the same model trained alone,
  against 0.5 % with prefixes (``experiments/lm_supernet_settings.py``); a pretrained model's layers
  already tolerate being skipped, so ``any`` is the default from a checkpoint;
* per kept layer: the attention heads kept (``l{j}.heads``), the key-value heads kept
  (``l{j}.kv``), the MLP intermediate width (``l{j}.mlp``) and the weight bit-width (``l{j}.wbits``
  from {2, 3, 4, 8, 16}; 16 = float) under the per-group quantizer of
  :mod:`hwnas.spaces.ops.group_quant`;
* one global activation bit-width (``abits``, 8 or 16), per token. Global because W8A8 against
  W?A16 is a choice of kernel family for the whole model (SmoothQuant, Agile-Quant quantize every
  layer's activations or none): a model that switches per layer pays a quantize / dequantize
  between layers that no deployed runtime wants, and it would double the per-layer dimensions.

Heads are kept **by whole GQA group**: ``kv`` key-value heads are kept (the first ones) and, in each
kept group, the first ``heads / kv`` of its query heads. So the kept query heads still read the key
-value head they read in the full model (a pretrained pairing survives pruning), and a valid pair
has ``kv`` dividing ``heads`` and ``heads / kv`` at most the full model's group size. An encoding
that breaks this, keeps fewer than ``min_layers`` layers or (prefix depth) skips a layer before a
kept one, decodes to the nearest valid subnet (:meth:`LMSpace.canonical`: the key-value heads
nearest below that fit, then above; the earliest skipped layers kept again; under prefix depth the
first as many layers as were kept); :meth:`LMSpace.validate` refuses such an architecture given by
name.
"""
from __future__ import annotations

import itertools
import math
from typing import Any, Literal, Mapping

from pydantic import Field, ValidationInfo, field_validator, model_validator

from hwnas.errors import ArchError, HwnasError
from hwnas.spaces.dims import Arch, Dim, SearchSpace
from hwnas.spaces.lm.pretrained import DEFAULT_CONTEXT, LMInit, settle_lm_config
from hwnas.spaces.pretrained import scaled_choices
from hwnas.utils.models import StrictModel

LAYER_KEYS = ("keep", "heads", "kv", "mlp", "wbits")
DEFAULT_PROMPT = 32  # space.prompt_length left out: a short chat turn's prompt, at most the context


class LMSpaceConfig(StrictModel):
    type: Literal["lm"] = "lm"
    hidden_size: int = Field(64, gt=0, le=65536)
    num_layers: int = Field(4, gt=0, le=512, description="layers of the full model")
    min_layers: int | None = Field(None, gt=0, description="fewest layers kept; default: half, rounded up")
    depth: Literal["any", "prefix"] | None = Field(None, description="which layers may be skipped: any subset "
                                                   "(LLaMA-NAS) or only the last ones (prefix, Once-for-All); "
                                                   "default prefix from scratch, any from a pretrained init")
    heads: int = Field(4, gt=0, le=1024)
    kv_heads: int = Field(2, gt=0, le=1024)
    head_dim: int | None = Field(None, gt=0, le=1024, description="default hidden_size / heads")
    intermediate_size: int = Field(128, gt=0, le=1 << 20)
    head_choices: list[int] | None = Field(None, min_length=1, description="attention heads kept per layer")
    kv_head_choices: list[int] | None = Field(None, min_length=1, description="key-value heads kept per layer")
    mlp_choices: list[int] | None = Field(None, min_length=1, description="MLP intermediate widths per layer")
    weight_bits: list[Literal[2, 3, 4, 8, 16]] = Field([4, 8, 16], min_length=1)
    act_bits: list[Literal[8, 16]] = Field([16], min_length=1)
    group_size: int = Field(64, gt=0, le=65536, description="inputs per weight-quantizer scale")
    rope_theta: float = Field(10000.0, gt=0)
    rms_norm_eps: float = Field(1e-5, gt=0, lt=1)
    tie_word_embeddings: bool = True
    context_length: int = Field(DEFAULT_CONTEXT, gt=0, le=1 << 20,
                                description="tokens of the KV cache decode is costed at")
    prompt_length: int | None = Field(None, gt=0, le=1 << 20, description="tokens of the prompt whose prefill the "
                                      "prefill objective prices (null: 32, or context_length if shorter)")
    init: LMInit | None = Field(None, description="a pretrained Llama checkpoint the largest subnet starts as (keys "
                                "left out are taken from it): see hwnas.spaces.lm.pretrained")

    @model_validator(mode="before")
    @classmethod
    def _from_pretrained(cls, raw: Any) -> Any:
        return settle_lm_config(raw)

    @field_validator("prompt_length")
    @classmethod
    def _fits_the_context(cls, v: int | None, info: ValidationInfo) -> int | None:
        context = info.data.get("context_length")
        if v is not None and context is not None and v > context:
            raise ValueError(f"{v} exceeds context_length {context} (a prompt must fit the context)")
        return v

    @model_validator(mode="after")
    def _derive_and_check(self) -> "LMSpaceConfig":
        if self.heads % self.kv_heads:
            raise ValueError(f"kv_heads: {self.kv_heads} does not divide heads {self.heads}")
        self.head_dim = self.head_dim or self.hidden_size // self.heads
        if self.head_dim % 2:
            raise ValueError(f"head_dim: rotary positions need an even head width (got {self.head_dim})")
        group = self.heads // self.kv_heads
        if self.prompt_length is None:
            self.prompt_length = min(DEFAULT_PROMPT, self.context_length)
        self.min_layers = self.min_layers or math.ceil(self.num_layers / 2)
        self.depth = self.depth or ("prefix" if self.init is None else "any")
        if self.min_layers > self.num_layers:
            raise ValueError(f"min_layers: {self.min_layers} exceeds num_layers {self.num_layers}")
        self.head_choices = _choices("head_choices", self.head_choices, self.heads,
                                     sorted({self.kv_heads * r for r in scaled_choices(group)}))
        self.kv_head_choices = _choices("kv_head_choices", self.kv_head_choices, self.kv_heads, [self.kv_heads])
        self.mlp_choices = _choices("mlp_choices", self.mlp_choices, self.intermediate_size,
                                    scaled_choices(self.intermediate_size))
        for h in self.head_choices:
            if not any(fits(h, kv, group) for kv in self.kv_head_choices):
                raise ValueError(f"head_choices: {h} heads fit no kv_head_choices {self.kv_head_choices} (kv heads "
                                 f"must divide the heads kept, at most {group} heads per kv head)")
        for key in ("weight_bits", "act_bits"):
            if len(set(getattr(self, key))) != len(getattr(self, key)):
                raise ValueError(f"{key}: choices must be distinct")
        return self


def _choices(key: str, given: list[int] | None, full: int, default: list[int]) -> list[int]:
    choices = default if given is None else sorted(given)
    if len(set(choices)) != len(choices) or min(choices) < 1:
        raise ValueError(f"{key}: choices must be distinct positive integers")
    if max(choices) != full:
        raise ValueError(f"{key}: the largest choice must be the full model's {full} (got {choices})")
    return choices


def fits(heads: int, kv: int, group: int) -> bool:
    """Whether ``heads`` query heads over ``kv`` key-value heads can be kept by whole GQA groups."""
    return heads % kv == 0 and heads // kv <= group


class LMSpace(SearchSpace):
    name = "lm"
    latency_unit = "per generated token"  # the op graph is one decode step (see graph.py); prefill is a phase

    def __init__(self, config: LMSpaceConfig, input_shape: tuple[int, ...], num_classes: int):
        self.config = config
        self.input_shape = tuple(int(s) for s in input_shape)
        self.num_classes = self.vocab_size = int(num_classes)
        if len(self.input_shape) != 1 or self.input_shape[0] > config.context_length:
            raise HwnasError(f"space.context_length: {config.context_length} is shorter than the data's sequences "
                             f"{self.input_shape}")
        if config.init is not None:
            config.init.check_vocabulary(self.vocab_size)
        self.group = config.heads // config.kv_heads
        dims = [Dim("abits", tuple(config.act_bits))]
        for j in range(config.num_layers):
            dims += [Dim(f"l{j}.keep", (0, 1)), Dim(f"l{j}.heads", tuple(config.head_choices)),
                     Dim(f"l{j}.kv", tuple(config.kv_head_choices)), Dim(f"l{j}.mlp", tuple(config.mlp_choices)),
                     Dim(f"l{j}.wbits", tuple(sorted(config.weight_bits)))]
        super().__init__(dims)

    # -- validity ---------------------------------------------------------------------------------
    def _kept(self, values: Mapping[str, Any]) -> list[int]:
        return [j for j in range(self.config.num_layers) if int(values[f"l{j}.keep"]) == 1]

    def inactive_dims(self, values) -> set[str]:
        return {f"l{j}.{k}" for j in range(self.config.num_layers) if int(values.get(f"l{j}.keep", 1)) == 0
                for k in LAYER_KEYS[1:]}

    def _repair(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The nearest valid values (see the module docstring)."""
        values = dict(values)
        if self.config.depth == "prefix":  # as many layers as the encoding keeps, the first ones
            count = max(len(self._kept(values)), self.config.min_layers)
            values.update({f"l{j}.keep": int(j < count) for j in range(self.config.num_layers)})
        short = self.config.min_layers - len(self._kept(values))
        for j in range(self.config.num_layers):
            if short <= 0:
                break
            if int(values[f"l{j}.keep"]) == 0:
                values[f"l{j}.keep"], short = 1, short - 1
        kv_choices = self.config.kv_head_choices
        for j in self._kept(values):
            heads, kv = int(values[f"l{j}.heads"]), int(values[f"l{j}.kv"])
            if not fits(heads, kv, self.group):
                ok = [k for k in kv_choices if fits(heads, k, self.group)]
                below = [k for k in ok if k <= kv]
                values[f"l{j}.kv"] = max(below) if below else min(ok)
        return values

    def canonical(self, values: Mapping[str, Any]) -> Arch:
        return super().canonical(self._repair(values))

    def validate(self, values: Mapping[str, Any]) -> Arch:
        arch = super().validate(values)
        kept = self._kept(values)
        if len(kept) < self.config.min_layers:
            raise ArchError(f"the architecture keeps {len(kept)} layers; space.min_layers is {self.config.min_layers}")
        if self.config.depth == "prefix" and kept != list(range(len(kept))):
            raise ArchError(f"the architecture keeps layers {kept}; space.depth is prefix: only the first layers "
                            f"can be kept (or set space.depth: any)")
        for j in kept:
            heads, kv = int(values[f"l{j}.heads"]), int(values[f"l{j}.kv"])
            if not fits(heads, kv, self.group):
                raise ArchError(f"l{j}: {heads} heads over {kv} kv heads cannot be kept by whole GQA groups (kv must "
                                f"divide heads, at most {self.group} heads per kv head)")
        return arch

    # -- subnets ----------------------------------------------------------------------------------
    def subnet_spec(self, arch: Arch | dict) -> dict[str, Any]:
        """The subnet: its kept layers (with their index in the full model) and everything fixed."""
        arch = self.validate(arch)
        cfg = self.config
        layers = [{"source": j, "heads": int(arch[f"l{j}.heads"]), "kv_heads": int(arch[f"l{j}.kv"]),
                   "mlp": int(arch[f"l{j}.mlp"]), "wbits": int(arch[f"l{j}.wbits"])} for j in self._kept(arch)]
        return {"type": "lm", "vocab_size": self.vocab_size, "hidden": cfg.hidden_size, "head_dim": cfg.head_dim,
                "group": self.group, "abits": int(arch["abits"]), "group_size": cfg.group_size,
                "rope_theta": cfg.rope_theta, "rms_norm_eps": cfg.rms_norm_eps,
                "tie_word_embeddings": cfg.tie_word_embeddings, "context_length": cfg.context_length,
                "prompt_length": cfg.prompt_length, "layers": layers}

    def covering_archs(self) -> list[Arch]:
        """Every layer alike, for each activation and weight bit-width, cycling through the valid
        (heads, kv heads) pairs and the MLP widths together: every distinct op of the space."""
        cfg = self.config
        pairs = [(h, kv) for h in cfg.head_choices for kv in cfg.kv_head_choices if fits(h, kv, self.group)]
        archs = []
        for abits, wbits in itertools.product(cfg.act_bits, cfg.weight_bits):
            for i in range(max(len(pairs), len(cfg.mlp_choices))):
                (heads, kv), mlp = pairs[i % len(pairs)], cfg.mlp_choices[i % len(cfg.mlp_choices)]
                values: dict[str, Any] = {"abits": abits}
                for j in range(cfg.num_layers):
                    values.update({f"l{j}.keep": 1, f"l{j}.heads": heads, f"l{j}.kv": kv, f"l{j}.mlp": mlp,
                                   f"l{j}.wbits": wbits})
                archs.append(self.validate(values))
        return list(dict.fromkeys(archs))

    def summary(self, arch: Arch) -> str:
        spec = self.subnet_spec(arch)
        layers = spec["layers"]

        def span(key: str) -> str:
            values = sorted({layer[key] for layer in layers})
            return str(values[0]) if len(values) == 1 else f"{values[0]}-{values[-1]}"
        return (f"L{len(layers)}/{self.config.num_layers} h{span('heads')} kv{span('kv_heads')} mlp{span('mlp')} "
                f"w{span('wbits')} a{spec['abits']}")

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "config": self.config.model_dump(), "input_shape": list(self.input_shape),
                "num_classes": self.num_classes}
